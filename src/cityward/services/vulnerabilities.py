"""Which devices each vulnerability affects, and what each responsible organization must do.

`match` is a set join (adapters/vuln_polars.py) over the whole fleet, or only over what a change
touches: given the CVEs of a newly imported advisory, it reads only those CVEs' entries and only the
(product, firmware) classes of products whose identity (own or true origin) those entries name, and
writes only the matches of those CVEs that changed. Matches are stored per class (`vuln_matches`)
and joined to devices by their running firmware when read, so the API, rollouts by advisory,
notifications and the dashboard do not match again, and a device that upgrades leaves its old
firmware's matches at once. A class no device ran at the last match (a first upgrade to a new
version) is matched at the next `advisories match`; the policy fact `known_exploited` never waits.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import polars as pl
from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from cityward.adapters import vuln_polars as vp
from cityward.adapters.storage import vuln_frames
from cityward.adapters.storage.fleet_facts import with_responsibility
from cityward.adapters.storage.frames import read_frame
from cityward.adapters.storage.models import (
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
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import DeviceScope, require_device_details
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.domain.responsibility import DEVICE_COLUMN, Duty

SYSTEM = Caller(actor="system:vulnerability-matcher", org_id=0, org_name="cityward", org_kind=OrgKind.CITY,
                role=Role.ADMIN)
_CHUNK = 500


@dataclass(frozen=True)
class MatchSummary:
    cves: int  # CVEs re-matched (all when the whole fleet was)
    classes: int  # distinct (product, firmware) pairs examined
    affected_classes: int  # (product, firmware, CVE) matches stored for them
    devices: int  # devices affected by at least one of those CVEs
    matches: int  # (device, CVE) pairs
    kev: int  # of which the CVE is in CISA KEV
    inserted: int  # stored matches written: new,
    updated: int  # changed,
    deleted: int  # and no longer true
    seconds: float


def match(uow_factory: UnitOfWorkFactory, *, cves: Iterable[str] | None = None,
          caller: Caller = SYSTEM) -> MatchSummary:
    """Re-match the fleet for `cves` (None: every CVE) and store the difference in one transaction."""
    t0 = time.perf_counter()
    scope = None if cves is None else set(cves)
    with uow_factory(write=True) as uow:
        s = uow.session
        found, classes = vuln_frames.compute(s, scope, uow.clock())
        outcome = vuln_frames.store(s, found, scope)
        per_class = found.join(classes.select("product_id", "firmware", "devices"), on=["product_id", "firmware"])
        in_kev = set(s.scalars(select(KevEntryRow.cve)))
        summary = MatchSummary(
            cves=len(scope) if scope is not None else found.get_column("cve").n_unique(), classes=classes.height,
            affected_classes=found.height,
            devices=int(per_class.unique(["product_id", "firmware"]).get_column("devices").sum()),
            matches=int(per_class.get_column("devices").sum()),
            kev=int(per_class.filter(pl.col("cve").is_in(sorted(in_kev))).get_column("devices").sum()),
            inserted=outcome.inserted, updated=outcome.updated, deleted=outcome.deleted,
            seconds=round(time.perf_counter() - t0, 3))
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


_MATCH_SCHEMA: dict[str, Any] = {
    "cve": pl.String, "exploited": pl.Boolean, "kev": pl.Boolean, "kev_due": pl.Date,
    "matched_at": pl.Datetime("us", "UTC"), "ransomware": pl.Boolean, "epss": pl.Float64, "cvss": pl.Float64,
    "fixed_version": pl.String, "remediation": pl.String, "via": pl.String, "advisory": pl.String,
    "remote": pl.String, "services": pl.String, "zone_criticality": pl.String}


def _device_matches(s: Session, scope: DeviceScope, extra: dict[str, tuple[Any, Any]], *where: Any) -> pl.DataFrame:
    """Stored matches joined to the devices in scope, with KEV, EPSS and each device's priority,
    label and due date (adapters/vuln_polars.device_priority); `extra`: more columns by name."""
    q = (select(VulnMatchRow.cve, VulnMatchRow.exploited, KevEntryRow.cve.is_not(None), KevEntryRow.due_date,
                VulnMatchRow.matched_at, KevEntryRow.ransomware, EpssScoreRow.epss, VulnMatchRow.cvss,
                VulnMatchRow.fixed_version, VulnMatchRow.remediation, VulnMatchRow.via, AdvisoryRow.doc_id,
                cast(DeviceStateRow.remote_access, Text), cast(DeviceStateRow.services, Text), ZoneRow.criticality,
                *(column for column, _type in extra.values()))
         .join(DeviceRow, vuln_frames.on_device())
         .join(ProductRow, ProductRow.id == DeviceRow.product_id)
         .join(ZoneRow, ZoneRow.id == DeviceRow.zone_id)
         .join(AdvisoryRow, AdvisoryRow.id == VulnMatchRow.advisory_id)
         .outerjoin(DeviceStateRow, DeviceStateRow.device_id == DeviceRow.id)
         .outerjoin(KevEntryRow, KevEntryRow.cve == VulnMatchRow.cve)
         .outerjoin(EpssScoreRow, EpssScoreRow.cve == VulnMatchRow.cve)
         .where(scope_clause(s, scope), *where))
    schema = {**_MATCH_SCHEMA, **{name: dtype for name, (_column, dtype) in extra.items()}}
    raw = read_frame(s, q, schema)
    return vp.device_priority(raw.with_columns(vp.exposed("remote", "services").alias("exposed")))


def exposures(uow_factory: UnitOfWorkFactory, caller: Caller, *, cve: str | None = None,
              organization: str | None = None, kev_only: bool = False, label: str | None = None,
              limit: int = 200) -> list[Exposure]:
    """Matches in the caller's scope, grouped by CVE, product, firmware and maintaining
    organization, most urgent first."""
    scope = require_device_details(caller)
    with uow_factory() as uow:
        s = uow.session
        where = [c for c, wanted in ((VulnMatchRow.cve == cve, cve), (KevEntryRow.cve.is_not(None), kev_only))
                 if wanted]
        frame = _device_matches(s, scope, {
            "product": ((ProductRow.brand + " " + ProductRow.model), pl.String),
            "firmware": (VulnMatchRow.firmware, pl.String), "_zone_id": (DeviceRow.zone_id, pl.Int64),
            "_override_maintain": (getattr(DeviceRow, DEVICE_COLUMN[Duty.MAINTAIN]), pl.Int64)}, *where)
        if label:
            frame = frame.filter(pl.col("label") == label)
        frame = with_responsibility(s, frame, (Duty.MAINTAIN,))
        names = dict(s.execute(select(OrganizationRow.id, OrganizationRow.name)).all())
    if frame.height == 0:
        return []
    frame = frame.with_columns(pl.col("_resp_maintain").replace_strict(names, default=None, return_dtype=pl.String)
                               .alias("organization"))
    if organization:
        frame = frame.filter(pl.col("organization") == organization)
    grouped = (frame.sort("priority", descending=True)  # so a group's label is its highest priority's
               .group_by("cve", "product", "firmware", "organization", maintain_order=True)
               .agg(pl.len().alias("devices"), pl.col("priority").max(), pl.col("label").first(),
                    pl.col("kev").any(), pl.col("ransomware").any(), pl.col("epss").max(), pl.col("cvss").max(),
                    pl.col("due").min(), pl.col("fixed_version").drop_nulls().first(),
                    pl.col("remediation").drop_nulls().first(), pl.col("advisory").first(), pl.col("via").first())
               .sort(["priority", "devices", "cve", "product", "firmware"],
                     descending=[True, True, False, False, False], nulls_last=True).head(limit))
    return [Exposure(**{k: r[k] for k in Exposure.__dataclass_fields__}) for r in grouped.iter_rows(named=True)]


@dataclass(frozen=True)
class DeviceVulnerability:
    """One CVE affecting one device, with its priority for that device."""

    cve: str
    label: str
    priority: float
    kev: bool
    epss: float | None
    cvss: float | None
    due: date
    advisory: str
    fixed_version: str | None
    remediation: str | None
    via: str


def device_vulnerabilities(uow_factory: UnitOfWorkFactory, caller: Caller, device_id: str) -> list[DeviceVulnerability]:
    """The stored matches of one device (in the caller's scope), most urgent first."""
    scope = require_device_details(caller)
    with uow_factory() as uow:
        frame = _device_matches(uow.session, scope, {}, DeviceRow.id == device_id)
    frame = frame.sort(["priority", "cve"], descending=[True, False])
    return [DeviceVulnerability(**{k: r[k] for k in DeviceVulnerability.__dataclass_fields__})
            for r in frame.iter_rows(named=True)]


def known_exploited_exposure(uow_factory: UnitOfWorkFactory, caller: Caller) -> tuple[int, int]:
    """(devices, CVEs): devices in the caller's scope whose firmware has a CVE in CISA KEV, counted
    by the database (the overview asks on every load; at a million devices that is hundreds of
    thousands of device matches, never read into Python)."""
    scope = require_device_details(caller)
    with uow_factory() as uow:
        s = uow.session
        q = (select(func.count(func.distinct(DeviceRow.id)), func.count(func.distinct(VulnMatchRow.cve)))
             .select_from(VulnMatchRow)
             .join(KevEntryRow, KevEntryRow.cve == VulnMatchRow.cve)
             .join(DeviceRow, vuln_frames.on_device())
             .where(scope_clause(s, scope)))
        devices, cves = s.execute(q).one()
    return int(devices or 0), int(cves or 0)
