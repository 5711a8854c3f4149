"""Which devices each vulnerability affects, and what each responsible organization must do.

`match` is a set join (adapters/vuln_polars.py) over the whole fleet, or only over what a change
touches: given the CVEs of a newly imported advisory, it reads only those CVEs' entries and only the
devices of products whose identity (own or true origin) those entries name, and replaces only those
CVEs' matches. Matches are stored (`vuln_matches`) so the policy fact `known_exploited`, the API,
rollouts by advisory and the dashboard read them without matching again.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import polars as pl
from sqlalchemy import Text, cast, delete, func, select
from sqlalchemy.orm import Session

from cityward.adapters import vuln_polars as vp
from cityward.adapters.storage.fleet_facts import with_responsibility
from cityward.adapters.storage.frames import read_frame, write_frame
from cityward.adapters.storage.models import (
    AdvisoryEntryRow,
    AdvisoryRow,
    DeviceRow,
    DeviceStateRow,
    EpssScoreRow,
    KevEntryRow,
    OrganizationRow,
    ProductRow,
    VulnMatchRow,
    ZoneRow,
)
from cityward.adapters.storage.scoping import scope_clause
from cityward.adapters.storage.uow import UnitOfWork, UnitOfWorkFactory
from cityward.domain import advisory_versions as av
from cityward.domain.access import require_device_details
from cityward.domain.advisories import INSECURE_SERVICES, match_key, model_key
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.domain.products import VersionScheme
from cityward.domain.responsibility import DEVICE_COLUMN, Duty

SYSTEM = Caller(actor="system:vulnerability-matcher", org_id=0, org_name="cityward", org_kind=OrgKind.CITY,
                role=Role.ADMIN)
_CHUNK = 500


@dataclass(frozen=True)
class MatchSummary:
    cves: int  # CVEs re-matched (all when the whole fleet was)
    classes: int  # distinct (product, firmware) pairs examined
    devices: int  # devices affected by at least one of them
    matches: int  # (device, CVE) pairs
    by_label: dict[str, int]
    kev: int  # matches of CVEs in CISA KEV
    seconds: float


def _chunks(values: list[Any]) -> Iterable[list[Any]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i:i + _CHUNK]


def _entries(s: Session, cves: set[str] | None) -> pl.DataFrame:
    cols = (AdvisoryEntryRow.id, AdvisoryEntryRow.advisory_id, AdvisoryEntryRow.cve, AdvisoryEntryRow.vendor_key,
            AdvisoryEntryRow.product_key, AdvisoryEntryRow.model_pattern, AdvisoryEntryRow.status,
            cast(AdvisoryEntryRow.intervals, Text), AdvisoryEntryRow.scheme, AdvisoryEntryRow.fixed_version,
            AdvisoryEntryRow.remediation, AdvisoryEntryRow.cvss, AdvisoryEntryRow.exploited)
    schema: dict[str, Any] = {**vp.ENTRY_SCHEMA, "intervals": pl.String}
    if cves is None:
        frames = [read_frame(s, select(*cols), schema)]
    else:
        frames = [read_frame(s, select(*cols).where(AdvisoryEntryRow.cve.in_(part)), schema)
                  for part in _chunks(sorted(cves))] or [pl.DataFrame(schema=schema)]
    raw = pl.concat(frames)
    # JSON null (every version) and SQL NULL both mean no intervals.
    return raw.with_columns(pl.when(pl.col("intervals").is_in(["null"]) | pl.col("intervals").is_null())
                            .then(None).otherwise(pl.col("intervals")).str.json_decode(pl.List(vp.INTERVAL))
                            .alias("intervals"))


def _identities(s: Session, entries: pl.DataFrame) -> pl.DataFrame:
    """Each product's identities that some entry names: its own label, and its true origin's."""
    exact = set(entries.filter(pl.col("model_pattern").is_null()).select("vendor_key", "product_key").iter_rows())
    patterns = [(v, re.compile(p)) for v, p in entries.filter(pl.col("model_pattern").is_not_null())
                .select("vendor_key", "model_pattern").unique().iter_rows()]
    rows: list[tuple[int, str | None, str | None, str]] = []
    for pid, brand, model, obrand, omodel in s.execute(select(
            ProductRow.id, ProductRow.brand, ProductRow.model, ProductRow.origin_brand, ProductRow.origin_model)):
        own = (match_key(brand), model_key(model))
        origin = (match_key(obrand), model_key(omodel))
        for via, key in (("product", own), ("origin", origin)):
            if via == "origin" and origin == own:
                continue
            if key in exact or any(key[0] == v and rx.search(key[1] or "") for v, rx in patterns):
                rows.append((pid, key[0], key[1], via))
    return pl.DataFrame(rows, schema=vp.IDENTITY_SCHEMA, orient="row")


def _devices(s: Session, product_ids: list[int] | None) -> pl.DataFrame:
    """Devices of those products (all when None): firmware as reported, else as inventoried."""
    q = (select(DeviceRow.id, DeviceRow.product_id,
                func.coalesce(DeviceStateRow.firmware_version, DeviceRow.firmware_version),
                cast(DeviceStateRow.remote_access, Text), cast(DeviceStateRow.services, Text), ZoneRow.criticality)
         .join(ZoneRow, ZoneRow.id == DeviceRow.zone_id)
         .outerjoin(DeviceStateRow, DeviceStateRow.device_id == DeviceRow.id))
    schema = {"device_id": pl.String, "product_id": pl.Int64, "firmware": pl.String, "remote": pl.String,
              "services": pl.String, "zone_criticality": pl.String}
    if product_ids is None:
        raw = read_frame(s, q, schema)
    else:
        raw = pl.concat([read_frame(s, q.where(DeviceRow.product_id.in_(part)), schema)
                         for part in _chunks(product_ids)] or [pl.DataFrame(schema=schema)])
    remote = pl.col("remote").str.json_decode(pl.List(pl.String))
    services = pl.col("services").str.json_decode(pl.List(pl.String))
    exposed = ((remote.list.len() > 0).fill_null(False)
               | services.list.eval(pl.element().is_in(INSECURE_SERVICES)).list.any().fill_null(False))
    return raw.with_columns(exposed.alias("exposed")).select(list(vp.DEVICE_SCHEMA))


def _classes(devices: pl.DataFrame) -> pl.DataFrame:
    pairs = devices.select("product_id", "firmware").unique()
    firmware = pairs.get_column("firmware").unique().to_list()
    semver = {v: av.sort_key(v, VersionScheme.SEMVER) for v in firmware if v is not None}
    vendor = {v: av.sort_key(v, VersionScheme.VENDOR) for v in firmware if v is not None}
    return pairs.with_columns(
        pl.col("firmware").replace_strict(semver, default=None, return_dtype=pl.String).alias("semver_key"),
        pl.col("firmware").replace_strict(vendor, default=None, return_dtype=pl.String).alias("vendor_key_fw"))


def _feeds(s: Session) -> tuple[pl.DataFrame, pl.DataFrame]:
    kev = read_frame(s, select(KevEntryRow.cve, KevEntryRow.due_date, KevEntryRow.ransomware), vp.KEV_SCHEMA)
    epss = read_frame(s, select(EpssScoreRow.cve, EpssScoreRow.epss), vp.EPSS_SCHEMA)
    return kev, epss


def compute(uow: UnitOfWork, cves: set[str] | None) -> tuple[pl.DataFrame, int]:
    """The matches for `cves` (all CVEs when None), and how many classes were examined."""
    s = uow.session
    entries = _entries(s, cves)
    if entries.height == 0:
        return vp.empty_matches(), 0
    identities = _identities(s, entries)
    if identities.height == 0:
        return vp.empty_matches(), 0
    product_ids = None if cves is None else sorted(set(identities.get_column("product_id").to_list()))
    devices = _devices(s, product_ids)
    classes = _classes(devices)
    class_matches = vp.match_classes(classes, identities, entries)
    kev, epss = _feeds(s)
    return vp.device_matches(devices, class_matches, kev, epss, uow.clock()), classes.height


def match(uow_factory: UnitOfWorkFactory, *, cves: Iterable[str] | None = None,
          caller: Caller = SYSTEM) -> MatchSummary:
    """Re-match the fleet for `cves` (None: every CVE) and store the result in one transaction."""
    import time

    t0 = time.perf_counter()
    scope = None if cves is None else set(cves)
    with uow_factory(write=True) as uow:
        s = uow.session
        found, classes = compute(uow, scope)
        if scope is None:
            s.execute(delete(VulnMatchRow))
        else:
            for part in _chunks(sorted(scope)):
                s.execute(delete(VulnMatchRow).where(VulnMatchRow.cve.in_(part)))
        if found.height:
            write_frame(s, VulnMatchRow.__tablename__, found)
        labels = dict(Counter(found.get_column("label").to_list()))
        summary = MatchSummary(
            cves=len(scope) if scope is not None else found.get_column("cve").n_unique(), classes=classes,
            devices=found.get_column("device_id").n_unique(), matches=found.height, by_label=labels,
            kev=int(found.get_column("kev").sum()), seconds=round(time.perf_counter() - t0, 3))
        uow.record(caller, "vulnerabilities.matched", "fleet", "all" if scope is None else f"{len(scope)} CVEs",
                   after={**summary.__dict__, "cves_scope": sorted(scope)[:50] if scope else None})
        uow.commit()
    return summary


# --- reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exposure:
    """One CVE on one product and firmware, for one responsible organization: what it must do."""

    cve: str
    label: str
    priority: float
    kev: bool
    ransomware: bool
    epss: float | None
    cvss: float | None
    due: date
    product: str
    firmware: str
    devices: int
    organization: str | None  # who maintains them (the firmware duty), None: nobody holds it
    fixed_version: str | None
    remediation: str | None
    advisory: str
    via: str


def exposures(uow_factory: UnitOfWorkFactory, caller: Caller, *, cve: str | None = None,
              organization: str | None = None, kev_only: bool = False, label: str | None = None,
              limit: int = 200) -> list[Exposure]:
    """Matches in the caller's scope, grouped by CVE, product, firmware and maintaining
    organization, most urgent first."""
    scope = require_device_details(caller)
    with uow_factory() as uow:
        s = uow.session
        q = (select(VulnMatchRow.device_id, VulnMatchRow.cve, VulnMatchRow.label, VulnMatchRow.priority,
                    VulnMatchRow.kev, VulnMatchRow.ransomware, VulnMatchRow.epss, VulnMatchRow.cvss, VulnMatchRow.due,
                    VulnMatchRow.fixed_version, VulnMatchRow.remediation, VulnMatchRow.via,
                    AdvisoryRow.doc_id.label("advisory"), (ProductRow.brand + " " + ProductRow.model).label("product"),
                    func.coalesce(DeviceStateRow.firmware_version, DeviceRow.firmware_version).label("firmware"),
                    DeviceRow.zone_id.label("_zone_id"),
                    getattr(DeviceRow, DEVICE_COLUMN[Duty.MAINTAIN]).label("_override_maintain"))
             .join(DeviceRow, DeviceRow.id == VulnMatchRow.device_id)
             .join(ProductRow, ProductRow.id == DeviceRow.product_id)
             .join(AdvisoryRow, AdvisoryRow.id == VulnMatchRow.advisory_id)
             .outerjoin(DeviceStateRow, DeviceStateRow.device_id == DeviceRow.id)
             .where(scope_clause(s, scope)))
        if cve:
            q = q.where(VulnMatchRow.cve == cve)
        if kev_only:
            q = q.where(VulnMatchRow.kev.is_(True))
        if label:
            q = q.where(VulnMatchRow.label == label)
        schema = {"device_id": pl.String, "cve": pl.String, "label": pl.String, "priority": pl.Float64,
                  "kev": pl.Boolean, "ransomware": pl.Boolean, "epss": pl.Float64, "cvss": pl.Float64,
                  "due": pl.Date, "fixed_version": pl.String, "remediation": pl.String, "via": pl.String,
                  "advisory": pl.String, "product": pl.String, "firmware": pl.String, "_zone_id": pl.Int64,
                  "_override_maintain": pl.Int64}
        frame = with_responsibility(s, read_frame(s, q, schema), (Duty.MAINTAIN,))
        names = dict(s.execute(select(OrganizationRow.id, OrganizationRow.name)).all())
    if frame.height == 0:
        return []
    frame = frame.with_columns(pl.col("_resp_maintain").replace_strict(names, default=None, return_dtype=pl.String)
                               .alias("organization"))
    if organization:
        frame = frame.filter(pl.col("organization") == organization)
    grouped = (frame.group_by("cve", "product", "firmware", "organization")
               .agg(pl.len().alias("devices"), pl.col("priority").max(), pl.col("label").first(),
                    pl.col("kev").any(), pl.col("ransomware").any(), pl.col("epss").max(), pl.col("cvss").max(),
                    pl.col("due").min(), pl.col("fixed_version").drop_nulls().first(),
                    pl.col("remediation").drop_nulls().first(), pl.col("advisory").first(), pl.col("via").first())
               .sort(["priority", "devices", "cve"], descending=[True, True, False]).head(limit))
    return [Exposure(**{k: r[k] for k in Exposure.__dataclass_fields__}) for r in grouped.iter_rows(named=True)]
