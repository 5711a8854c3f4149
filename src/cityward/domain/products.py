"""The product catalog's provenance: who really makes a relabeled (OEM/ODM) product."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from cityward.domain.names import name_key
from cityward.errors import InvalidInput, Problem


class VersionScheme(StrEnum):
    """How a product's firmware versions compare (used by policies and advisories)."""

    SEMVER = "semver"
    DOTTED = "dotted"  # dotted integers of any length: 1.2.10.4
    VENDOR = "vendor"  # vendor strings such as "V5.5.0 build 170725"


class OriginStatus(StrEnum):
    UNKNOWN = "unknown"  # nobody has declared who makes it: the baseline policy flags this
    ORIGINAL = "original"  # the labeled brand is the manufacturer
    RELABELED = "relabeled"  # sold under this brand, made by `relabel_of`'s manufacturer


@dataclass(frozen=True)
class CatalogEntry:
    brand: str
    model: str
    relabel_of: int | None
    origin_status: OriginStatus


@dataclass(frozen=True)
class Origin:
    """The end of a product's relabel chain."""

    brand: str
    model: str
    chain: tuple[int, ...]  # product ids from the product itself to its true origin

    @property
    def relabeled(self) -> bool:
        return len(self.chain) > 1


def product_key(brand: str, model: str) -> tuple[str, str]:
    """Catalog identity: brand and model compared by `name_key` (case, width and spacing aside)."""
    return name_key(brand), name_key(model)


def resolve_origins(catalog: Mapping[int, CatalogEntry]) -> dict[int, Origin]:
    """Follow every relabel chain to its end; a cycle is a catalog error, named by product."""
    origins: dict[int, Origin] = {}
    for pid in catalog:
        chain = [pid]
        current = catalog[pid]
        while current.relabel_of is not None:
            nxt = current.relabel_of
            if nxt in chain:
                names = " → ".join(f"{catalog[p].brand} {catalog[p].model}" for p in [*chain, nxt])
                raise InvalidInput(
                    "relabel chain loops back on itself",
                    [Problem(names, field="relabel_of")],
                )
            if nxt not in catalog:
                raise InvalidInput(f"product {pid} is a relabel of missing product {nxt}")
            chain.append(nxt)
            current = catalog[nxt]
        origins[pid] = Origin(brand=current.brand, model=current.model, chain=tuple(chain))
    return origins
