"""Vendor aliases the city keeps, and the advisory statements that name no catalog product.

A security product must not miss silently: every stored statement that cannot reach a device of
the catalog is listed with what it names and the nearest catalog products, so a person can add
the alias (or the product) that makes it match. Accepting an alias re-matches only the CVEs of the
statements under that vendor name.
"""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select

from cityward.adapters.storage import vuln_frames
from cityward.adapters.storage.models import AdvisoryEntryRow, AdvisoryRow, ProductRow, VendorAliasRow
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import Action, require
from cityward.domain.advisories import model_key
from cityward.domain.model_names import model_variants
from cityward.domain.organizations import Caller
from cityward.domain.vendors import DEFAULT_ALIASES, alias_map, canonical_vendor, vendor_key
from cityward.errors import Conflict, InvalidInput, NotFound
from cityward.services import vulnerabilities

MAX_NAME = 200


@dataclass(frozen=True)
class AliasView:
    alias: str
    vendor: str
    source: str  # "shipped" (domain.vendors.DEFAULT_ALIASES) or "city"
    created_by: str | None = None


def list_aliases(uow_factory: UnitOfWorkFactory, caller: Caller) -> list[AliasView]:
    require(caller, Action.SEE_VULNS)
    shipped = [AliasView(a, v, "shipped") for a, v in DEFAULT_ALIASES]
    with uow_factory() as uow:
        city = [AliasView(r.alias, r.vendor, "city", r.created_by)
                for r in uow.session.scalars(select(VendorAliasRow).order_by(VendorAliasRow.alias_key))]
    return sorted(city + shipped, key=lambda a: (vendor_key(a.vendor) or "", a.alias.casefold()))


def _name(value: str, what: str) -> tuple[str, str]:
    text = " ".join(value.split())
    if not text or len(text) > MAX_NAME or any(ord(c) < 32 for c in value):
        raise InvalidInput(f"{what} must be 1 to {MAX_NAME} printable characters")
    key = vendor_key(text)
    if key is None:
        raise InvalidInput(f"{what} {text!r} names no vendor (it folds to nothing, or to 'n/a')")
    return text, key


def add_alias(uow_factory: UnitOfWorkFactory, caller: Caller, alias: str, vendor: str) -> AliasView:
    """`alias` (as advisories or the inventory write it) means `vendor`; the fleet is re-matched for
    the CVEs of every statement under that name."""
    require(caller, Action.INTEL)
    alias, alias_key = _name(alias, "alias")
    vendor, target = _name(vendor, "vendor")
    if alias_key == target:
        raise InvalidInput(f"{alias!r} and {vendor!r} are already the same vendor to the matcher",
                           hint="vendor names compare without legal forms, case or accents")
    with uow_factory(write=True) as uow:
        s = uow.session
        existing = s.scalar(select(VendorAliasRow).where(VendorAliasRow.alias_key == alias_key))
        if existing is not None:
            raise Conflict(f"{alias!r} is already an alias of {existing.vendor!r}",
                           hint=f"remove it first: cityward vendors unalias {existing.alias!r}")
        if alias_map([*vuln_frames.stored_aliases(s), (alias, vendor)]).get(target) == alias_key:
            raise Conflict(f"{vendor!r} is itself an alias of {alias!r}: the two would point at each other")
        s.add(VendorAliasRow(alias=alias, alias_key=alias_key, vendor=vendor, vendor_key=target,
                             created_at=datetime.now(UTC), created_by=caller.actor))
        uow.record(caller, "vendor_alias.added", "vendor_alias", alias_key, after={"alias": alias, "vendor": vendor})
        cves = _cves_under(s, {alias_key, target})
        uow.commit()
    if cves:
        vulnerabilities.match(uow_factory, cves=cves, caller=caller)
    return AliasView(alias, vendor, "city", caller.actor)


def remove_alias(uow_factory: UnitOfWorkFactory, caller: Caller, alias: str) -> None:
    require(caller, Action.INTEL)
    alias, alias_key = _name(alias, "alias")
    with uow_factory(write=True) as uow:
        s = uow.session
        row = s.scalar(select(VendorAliasRow).where(VendorAliasRow.alias_key == alias_key))
        if row is None:
            shipped = any(vendor_key(a) == alias_key for a, _v in DEFAULT_ALIASES)
            raise NotFound(f"no alias {alias!r} the city added" + (" (it is a shipped one)" if shipped else ""))
        s.execute(delete(VendorAliasRow).where(VendorAliasRow.id == row.id))
        uow.record(caller, "vendor_alias.removed", "vendor_alias", alias_key,
                   before={"alias": row.alias, "vendor": row.vendor})
        cves = _cves_under(s, {alias_key, row.vendor_key})
        uow.commit()
    if cves:
        vulnerabilities.match(uow_factory, cves=cves, caller=caller)


def _cves_under(s: Any, keys: set[str]) -> set[str]:
    return set(s.scalars(select(AdvisoryEntryRow.cve).where(AdvisoryEntryRow.vendor_key.in_(keys)).distinct()))


@dataclass
class Unmatched:
    """Statements naming one (vendor, product) that no catalog product answers to."""

    vendor: str | None
    product: str | None
    statements: int = 0
    cves: set[str] = field(default_factory=set)
    advisories: set[str] = field(default_factory=set)
    reason: str = ""
    suggestions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Unreadable:
    advisory: str
    message: str
    where: str | None


@dataclass(frozen=True)
class UnmatchedReport:
    unmatched: list[Unmatched]
    unreadable: list[Unreadable]

    @property
    def statements(self) -> int:
        return sum(u.statements for u in self.unmatched)


def unmatched(uow_factory: UnitOfWorkFactory, caller: Caller, *, limit: int | None = None, offset: int = 0,
              advisory: str | None = None) -> UnmatchedReport:
    """Every stored statement about a device (vendor and product, not a package) that names no
    catalog product, grouped by what it names, with the nearest catalog names; and every statement
    an import could not read."""
    require(caller, Action.INTEL)  # it reads the whole catalog and every advisory
    with uow_factory() as uow:
        s = uow.session
        aliases = alias_map(vuln_frames.stored_aliases(s))
        catalog: dict[str, set[str]] = defaultdict(set)  # vendor key → model keys it goes by
        brands: dict[str, str] = {}
        for brand, model, obrand, omodel, platform in s.execute(select(
                ProductRow.brand, ProductRow.model, ProductRow.origin_brand, ProductRow.origin_model,
                ProductRow.platform)):
            for b, m in ((brand, model), (obrand, omodel)):
                key = canonical_vendor(vendor_key(b), aliases) if b else None
                if key and m:
                    catalog[key].update(k for k in model_variants(b, m) if k)
                    brands.setdefault(key, b)
            if platform and (key := canonical_vendor(vendor_key(brand), aliases)):
                catalog[key].add(model_key(platform) or "")  # the platform the product runs
        docs: dict[int, str] = {i: d for i, d in s.execute(select(AdvisoryRow.id, AdvisoryRow.doc_id))}
        groups: dict[tuple[str | None, str | None], Unmatched] = {}
        compiled: dict[str, re.Pattern[str]] = {}
        for aid, cve, vendor, product, stored_key, pattern, purl in s.execute(select(
                AdvisoryEntryRow.advisory_id, AdvisoryEntryRow.cve, AdvisoryEntryRow.vendor, AdvisoryEntryRow.product,
                AdvisoryEntryRow.vendor_key, AdvisoryEntryRow.model_pattern, AdvisoryEntryRow.purl_key)):
            if purl is not None or (vendor is None and product is None):
                continue  # a package statement: it meets devices through SBOMs, not the catalog
            key = canonical_vendor(stored_key, aliases)
            models = catalog.get(key or "", set())
            if pattern is not None:
                rx = compiled.setdefault(pattern, re.compile(pattern))
                if any(rx.search(m) for m in models):
                    continue
            elif (model_key(product) or "") in models:
                continue
            if advisory is not None and docs.get(aid) != advisory:
                continue
            u = groups.setdefault((vendor, product), Unmatched(vendor, product))
            u.statements += 1
            u.cves.add(cve)
            u.advisories.add(docs.get(aid, str(aid)))
        unreadable = [Unreadable(doc_id, str(p.get("message", "")), p.get("field"))
                      for doc_id, problems in s.execute(select(AdvisoryRow.doc_id, AdvisoryRow.unparsed))
                      for p in (problems or []) if isinstance(p, dict)
                      if advisory is None or doc_id == advisory]
    out = sorted(groups.values(), key=lambda u: (-len(u.cves), u.vendor or "", u.product or ""))
    page = out[offset:offset + limit] if limit else out[offset:]
    for u in page:
        _explain(u, catalog, brands, aliases)
    return UnmatchedReport(page, unreadable)


def _explain(u: Unmatched, catalog: dict[str, set[str]], brands: dict[str, str], aliases: dict[str, str]) -> None:
    """Why it matched nothing, and the nearest catalog names (never applied by themselves)."""
    key = canonical_vendor(vendor_key(u.vendor), aliases) if u.vendor else None
    product = model_key(u.product) or ""
    if key is None:
        u.reason = "names no vendor"
        owners = [brands[k] for k, models in catalog.items() if product and product in models]
        u.suggestions = [f"the catalog has {product!r} under {b}" for b in owners[:3]]
        return
    if key in catalog:
        u.reason = f"vendor {brands[key]!r} has no product {u.product!r}"
        near = difflib.get_close_matches(product, sorted(catalog[key]), n=3, cutoff=0.6)
        u.suggestions = [f"nearest catalog models: {', '.join(near)}"] if near else []
        return
    u.reason = f"no catalog product is made or labeled by {u.vendor!r}"
    owners = [k for k, models in catalog.items() if product and product in models]
    near = owners or difflib.get_close_matches(key, sorted(catalog), n=3, cutoff=0.75)
    u.suggestions = [f"accept alias? cityward vendors alias {u.vendor!r} {brands[k]!r}" for k in near[:3]]
