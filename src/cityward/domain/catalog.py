"""The product catalog file (docs/inventory.md, "Product catalog"): one product per row."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from cityward.domain.inventory import _Bad, _text, parse_date, parse_kind
from cityward.domain.products import VersionScheme
from cityward.errors import Problem

CATALOG_COLUMNS = ("brand", "model", "kind", "origin_brand", "origin_model", "end_of_support",
                   "min_firmware", "version_scheme", "upgrade_minutes", "platform")
CATALOG_REQUIRED = ("brand", "model")

_SEMVER = re.compile(r"v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
_DOTTED = re.compile(r"v?\d+(\.\d+)*")


def guess_scheme(version: str) -> VersionScheme:
    """A first guess for a product met only through a device's firmware string."""
    if _SEMVER.fullmatch(version) and version.count(".") == 2:
        return VersionScheme.SEMVER
    if _DOTTED.fullmatch(version):
        return VersionScheme.DOTTED
    return VersionScheme.VENDOR


@dataclass(frozen=True)
class CatalogRecord:
    brand: str
    model: str
    kind: str | None = None
    origin_brand: str | None = None  # set: this product is a relabel of origin_brand origin_model
    origin_model: str | None = None
    end_of_support: date | None = None
    min_firmware: str | None = None
    version_scheme: str | None = None
    upgrade_minutes: float | None = None  # how long a firmware upgrade takes on this product
    # The firmware platform the product runs ("ALEOS", "AXIS OS", "Niagara 4"): advisories about
    # the platform affect the product, with its firmware version read as the platform's.
    platform: str | None = None


def parse_catalog_row(raw: Mapping[str, Any], row: int) -> CatalogRecord | list[Problem]:
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    parsers: dict[str, Any] = {
        "brand": _text, "model": _text, "kind": parse_kind, "origin_brand": _text,
        "origin_model": _text, "end_of_support": parse_date,
        "min_firmware": lambda v: _text(v, limit=64), "version_scheme": _scheme,
        "upgrade_minutes": parse_upgrade_minutes, "platform": lambda v: _text(v, limit=64),
    }
    for column, parse in parsers.items():
        try:
            values[column] = parse(raw.get(column))
        except _Bad as exc:
            problems.append(Problem(str(exc), row=row, field=column))
            continue
        if column in CATALOG_REQUIRED and values[column] is None:
            problems.append(Problem("required value is missing", row=row, field=column))
    if not problems and (values["origin_brand"] is None) != (values["origin_model"] is None):
        problems.append(Problem("origin_brand and origin_model go together", row=row,
                                field="origin_model" if values["origin_model"] is None else "origin_brand"))
    return problems or CatalogRecord(**values)


def _scheme(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    if text.lower() not in VersionScheme._value2member_map_:
        raise _Bad(f"unknown version scheme {text!r}; expected one of {', '.join(VersionScheme)}")
    return text.lower()



MAX_UPGRADE_MINUTES = 1440.0  # a day: the longest attempt a rollout allows


def parse_upgrade_minutes(value: Any) -> float | None:
    """Minutes a firmware upgrade takes on the product (download, flash, reboot), fractions allowed:
    rollouts wait this long for it (docs/rollouts.md, "Attempts and timeouts")."""
    text = _text(value, limit=16)
    if text is None:
        return None
    try:
        minutes = float(text)
    except ValueError:
        raise _Bad(f"{text!r} is not a number of minutes") from None
    if not 0 < minutes <= MAX_UPGRADE_MINUTES:  # also refuses nan and inf
        raise _Bad(f"must be more than 0 and at most {MAX_UPGRADE_MINUTES:g} minutes, got {text}")
    return minutes
