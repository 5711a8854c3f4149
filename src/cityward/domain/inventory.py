"""The inventory file format (docs/inventory.md): columns, per-field rules, CSV cell safety.

Pure: a row comes in as a mapping of column → raw value and leaves as a `DeviceRecord` or a
list of problems naming the field. Storage-wide rules (duplicates, zones and organizations that
must exist, scope) are checked set-wise by the import service, not here.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from datetime import date
from typing import Any, NamedTuple

from cityward.domain.devices import DeviceKind, DeviceProtocol
from cityward.errors import Problem

REQUIRED = ("id", "kind", "brand", "model", "firmware_version", "zone")
OPTIONAL = (
    "serial", "mac", "hardware_version", "address", "protocol", "latitude", "longitude",
    "owner", "installer", "maintainer", "supplier", "installed_at", "tags",
)
COLUMNS = REQUIRED + OPTIONAL
ORG_COLUMNS = ("owner", "installer", "maintainer", "supplier")

MAX_TEXT = 128
MAX_TAGS = 32
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_TAG = re.compile(r"[\w.:-]{1,64}")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?([eE][+-]?\d+)?")
_KINDS = ", ".join(k.value for k in DeviceKind)
_CANONICAL_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}")


class DeviceRecord(NamedTuple):
    """One valid inventory row; optional fields are None when absent or empty.

    A NamedTuple rather than a frozen dataclass: a million of them are built per large import,
    and a frozen dataclass's __init__ costs several times more."""

    id: str
    kind: str
    brand: str
    model: str
    firmware_version: str
    zone: str
    serial: str | None = None
    mac: str | None = None
    hardware_version: str | None = None
    address: str | None = None
    protocol: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    owner: str | None = None
    installer: str | None = None
    maintainer: str | None = None
    supplier: str | None = None
    installed_at: date | None = None
    tags: tuple[str, ...] = ()


RECORD_FIELDS = DeviceRecord._fields
assert RECORD_FIELDS == COLUMNS


class _Bad(ValueError):
    """A field's value is wrong; the message says how, for a person fixing the file."""


def _text(value: Any, *, limit: int = MAX_TEXT) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Bad(f"expected text, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        return None
    if not text.isprintable() and _CONTROL.search(text):  # isprintable: the cheap common case
        raise _Bad("contains control characters")
    if len(text) > limit:
        raise _Bad(f"longer than {limit} characters")
    return text


def parse_id(value: Any) -> str | None:
    text = _text(value, limit=64)
    if text is not None and not _ID.fullmatch(text):
        raise _Bad(
            f"{text!r} is not a valid device id: use 1-64 letters, digits, '.', '_', ':' or '-',"
            " starting with a letter or digit"
        )
    return text


def parse_kind(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    kind = text.lower()
    if kind not in DeviceKind._value2member_map_:
        raise _Bad(f"unknown kind {text!r}; expected one of {_KINDS}")
    return kind


def parse_mac(value: Any) -> str | None:
    """Any common spelling (aa:bb.., AA-BB.., aabb.ccdd..) → lowercase colon-separated."""
    text = _text(value)
    if text is None:
        return None
    if _CANONICAL_MAC.fullmatch(text):
        return text
    digits = re.sub(r"[:\-.]", "", text).lower()
    if len(digits) != 12 or not all(c in "0123456789abcdef" for c in digits):
        raise _Bad(f"{text!r} is not a MAC address (12 hexadecimal digits)")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def parse_address(value: Any) -> str | None:
    """An IP address or host name, optionally with a port: 10.0.0.7, [fe80::1]:8443, cam-7:80."""
    text = _text(value, limit=260)
    if text is None:
        return None
    host, port = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _Bad(f"{text!r}: unclosed '[' in IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise _Bad(f"{text!r}: expected ':port' after ']'")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise _Bad(f"{text!r}: port must be 1-65535")
    if _IPV4.fullmatch(host):  # the common case, without ipaddress's ~17 µs per call
        return text
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if text.startswith("[") or ":" in host or not _HOST.fullmatch(host) or host.replace(".", "").isdigit():
            raise _Bad(f"{text!r} is not an IP address or host name") from None
    return text


def parse_protocol(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    proto = text.lower()
    if proto not in DeviceProtocol._value2member_map_:
        raise _Bad(f"unknown protocol {text!r}; expected mqtt or http")
    return proto


def _coordinate(value: Any, limit: float) -> float | None:
    if type(value) is str:  # the CSV case first: it is a million calls per large import
        text = value.strip()
        if not text:
            return None
        if not _NUMBER.fullmatch(text):
            raise _Bad(f"{value!r} is not a number")
        number = float(text)
    elif value is None:
        return None
    elif isinstance(value, bool):
        raise _Bad("expected a number, got true/false")
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise _Bad(f"{value!r} is not a number")
    if not math.isfinite(number) or not -limit <= number <= limit:
        raise _Bad(f"{value!r} is outside -{limit:g}..{limit:g}")
    return number


def parse_date(value: Any) -> date | None:
    text = _text(value)
    if text is None:
        return None
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise _Bad(f"{text!r} is not a date in ISO 8601 form (YYYY-MM-DD)") from None


def parse_tags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        items = value
    elif isinstance(value, str):
        items = value.split(";")
    else:
        raise _Bad(f"expected ';'-separated text or a list, got {type(value).__name__}")
    tags: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise _Bad(f"tag {item!r} is not text")
        tag = item.strip()
        if not tag:
            continue
        if not _TAG.fullmatch(tag):
            raise _Bad(f"tag {tag!r}: use 1-64 letters, digits, '_', '.', ':' or '-'")
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise _Bad(f"{len(tags)} tags; at most {MAX_TAGS}")
    return tuple(tags)


_PARSERS = {
    "id": parse_id,
    "kind": parse_kind,
    "brand": _text,
    "model": _text,
    "firmware_version": lambda v: _text(v, limit=64),
    "zone": _text,
    "serial": _text,
    "mac": parse_mac,
    "hardware_version": lambda v: _text(v, limit=64),
    "address": parse_address,
    "protocol": parse_protocol,
    "latitude": lambda v: _coordinate(v, 90),
    "longitude": lambda v: _coordinate(v, 180),
    "owner": _text,
    "installer": _text,
    "maintainer": _text,
    "supplier": _text,
    "installed_at": parse_date,
    "tags": parse_tags,
}


# Columns whose values repeat across a fleet (a few kinds, brands, zones, firmware versions):
# their parsed form is remembered, which halves the time of a million-row import.
_REPEATING = frozenset({"kind", "brand", "model", "firmware_version", "zone", "hardware_version",
                        "protocol", "owner", "installer", "maintainer", "supplier", "installed_at",
                        "tags"})
_MEMO_LIMIT = 4096
_memo: dict[str, dict[Any, tuple[Any, str | None]]] = {c: {} for c in _REPEATING}


def _remember(
    memo: dict[Any, tuple[Any, str | None]], parser: Any, value: str | None
) -> tuple[Any, str | None]:
    try:
        hit: tuple[Any, str | None] = (parser(value), None)
    except _Bad as exc:
        hit = (None, str(exc))
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[value] = hit
    return hit


# (column, parser, memo or None, required), in column order: parse_row's whole plan.
_PLAN = tuple((c, _PARSERS[c], _memo.get(c), c in REQUIRED) for c in COLUMNS)


def parse_row(raw: Mapping[str, Any], row: int) -> DeviceRecord | list[Problem]:
    """Validate one row with the same rules a single edit uses; every bad field is reported."""
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    get = raw.get
    for column, parser, memo, required in _PLAN:
        value = get(column)
        try:
            if memo is not None and (value is None or type(value) is str):
                hit = memo.get(value) or _remember(memo, parser, value)
                if hit[1] is not None:
                    raise _Bad(hit[1])
                values[column] = hit[0]
            else:  # lists (JSON tags) and numbers are not memoized
                values[column] = parser(value)
        except _Bad as exc:
            problems.append(Problem(str(exc), row=row, field=column))
            continue
        if required and values[column] is None:
            problems.append(Problem("required value is missing", row=row, field=column))
    if not problems and (values["latitude"] is None) != (values["longitude"] is None):
        missing = "longitude" if values["longitude"] is None else "latitude"
        problems.append(Problem("latitude and longitude go together", row=row, field=missing))
    if problems:
        return problems
    return DeviceRecord(**values)


def record_to_row(record: DeviceRecord) -> dict[str, Any]:
    """The export form of a record (JSON types): the inverse of `parse_row`."""
    row: dict[str, Any] = {}
    for column in COLUMNS:
        value = getattr(record, column)
        if column == "installed_at" and value is not None:
            value = value.isoformat()
        elif column == "tags":
            value = list(value)
        row[column] = value
    return row


# Cells a spreadsheet would run as a formula (OWASP CSV injection), plus the quote itself so
# that neutralizing stays reversible: import(export(x)) == x for every text x.
_FORMULA_START = frozenset("=+-@\t\r'")


def neutralize_cell(text: str) -> str:
    if text and text[0] in _FORMULA_START and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def restore_cell(text: str) -> str:
    if len(text) > 1 and text[0] == "'" and text[1] in _FORMULA_START and not _NUMBER.fullmatch(text[1:]):
        return text[1:]
    return text
