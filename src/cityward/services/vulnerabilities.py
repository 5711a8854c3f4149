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
from datetime import date, datetime
from typing import Any

import polars as pl
from sqlalchemy import Text, cast, func, select, tuple_
from sqlalchemy.orm import Session

from cityward.adapters import vuln_polars as vp
from cityward.adapters.storage import vuln_frames
from cityward.adapters.storage.fleet_facts import with_responsibility
from cityward.adapters.storage.frames import read_frame
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
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import Action, DeviceScope, device_scope, require, require_device_details
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.domain.responsibility import DEVICE_COLUMN, Duty
from cityward.errors import NotFound

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
    require(caller, Action.INTEL)
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
    thousands of device matches, never read into Python). Counts only: a manufacturer sees them too."""
    scope = device_scope(caller)
    with uow_factory() as uow:
        s = uow.session
        q = (select(func.count(func.distinct(DeviceRow.id)), func.count(func.distinct(VulnMatchRow.cve)))
             .select_from(VulnMatchRow)
             .join(KevEntryRow, KevEntryRow.cve == VulnMatchRow.cve)
             .join(DeviceRow, vuln_frames.on_device())
             .where(scope_clause(s, scope)))
        devices, cves = s.execute(q).one()
    return int(devices or 0), int(cves or 0)


# --- advisories by risk (the dashboard's advisory pages) -----------------------------------------
# `advisories.list_advisories` reads every (device, CVE) pair of the advisories it lists into
# Python to count devices (bench world, 1M devices: 0.5 s for its one advisory on 109,512 devices).
# These reads count in SQL by (product, firmware) class instead — a device is in exactly one
# class, so the devices an advisory affects are the sum over the distinct classes its CVEs match —
# and page the advisories by primary key (0.06 s for that advisory, about 0.1 s for a page of 50).


ADVISORIES_PER_PAGE = 50


@dataclass(frozen=True)
class AdvisoryRisk:
    """One imported advisory with what makes it urgent, in the caller's scope."""

    id: int
    doc_id: str
    title: str
    publisher: str
    category: str
    revision: str
    updated_at: datetime | None
    cves: list[str]
    statements: int
    kev: bool  # one of its CVEs is in CISA KEV
    ransomware: bool  # … with known ransomware use
    cvss: float | None  # the highest the advisory states
    epss: float | None  # the highest of its CVEs
    devices: int  # affected devices in the caller's scope


@dataclass(frozen=True)
class AdvisoryPage:
    items: list[AdvisoryRisk]
    total: int  # advisories matching the filter
    next_before: int | None  # the advisory id the next page continues before


@dataclass(frozen=True)
class CveRisk:
    cve: str
    kev: bool
    ransomware: bool
    kev_due: date | None
    epss: float | None
    cvss: float | None  # the highest among its matches
    label: str | None  # the highest priority label among the affected devices; None: none in scope
    priority: float | None
    devices: int
    fixed_versions: list[str]  # as its matches name them (one per product line, often)


@dataclass(frozen=True)
class AffectedClass:
    """Devices of one product on one firmware that the advisory affects."""

    brand: str  # as sold
    model: str
    origin_brand: str  # the true manufacturer's (a relabel differs)
    origin_model: str
    relabel: bool
    firmware: str
    devices: int
    cves: list[str]
    label: str
    fixed_version: str | None


@dataclass(frozen=True)
class AdvisoryDetail:
    risk: AdvisoryRisk
    source: str
    url: str | None
    previous_revision: str | None
    change: dict[str, Any] | None
    unparsed: list[dict[str, Any]]
    cve_risks: list[CveRisk]  # most urgent first
    affected: list[AffectedClass]  # most devices first
    label: str | None  # the highest of all


def _feeds(s: Session, cves: list[str]) -> tuple[dict[str, tuple[bool, date | None]], dict[str, float]]:
    """KEV (ransomware use, due date) and EPSS of these CVEs."""
    kev: dict[str, tuple[bool, date | None]] = {}
    epss: dict[str, float] = {}
    for part in vuln_frames.chunks(cves):
        kev.update({c: (bool(r), d) for c, r, d in s.execute(
            select(KevEntryRow.cve, KevEntryRow.ransomware, KevEntryRow.due_date).where(KevEntryRow.cve.in_(part)))})
        epss.update({c: float(e) for c, e in s.execute(
            select(EpssScoreRow.cve, EpssScoreRow.epss).where(EpssScoreRow.cve.in_(part)))})
    return kev, epss


def _class_devices(s: Session, scope: DeviceScope, classes: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
    """Devices in scope per (product, running firmware) class, counted by the database along
    the devices(product_id, firmware_running) index: only the affected devices are read."""
    counts: dict[tuple[int, str], int] = {}
    for part in vuln_frames.chunks(sorted(classes)):
        counts.update({(pid, fw): int(n) for pid, fw, n in s.execute(
            select(DeviceRow.product_id, DeviceRow.firmware_running, func.count())
            .where(tuple_(DeviceRow.product_id, DeviceRow.firmware_running).in_(part), scope_clause(s, scope))
            .group_by(DeviceRow.product_id, DeviceRow.firmware_running))})
    return counts


def _risks(s: Session, scope: DeviceScope, rows: list[Any]) -> list[AdvisoryRisk]:
    """AdvisoryRisk of these advisory rows: a handful of grouped queries for the whole page."""
    ids = [r.id for r in rows]
    stated = {aid: (int(n), cvss) for aid, n, cvss in s.execute(
        select(AdvisoryEntryRow.advisory_id, func.count(), func.max(AdvisoryEntryRow.cvss))
        .where(AdvisoryEntryRow.advisory_id.in_(ids)).group_by(AdvisoryEntryRow.advisory_id))}
    cves = sorted({c for r in rows for c in r.cves})
    classes_of: dict[str, set[tuple[int, str]]] = {}
    for part in vuln_frames.chunks(cves):
        for cve, pid, fw in s.execute(select(VulnMatchRow.cve, VulnMatchRow.product_id, VulnMatchRow.firmware)
                                      .where(VulnMatchRow.cve.in_(part))):
            classes_of.setdefault(cve, set()).add((pid, fw))
    counts = _class_devices(s, scope, set().union(*classes_of.values()) if classes_of else set())
    kev, epss = _feeds(s, cves)
    out = []
    for r in rows:
        classes = set().union(*(classes_of.get(c, set()) for c in r.cves)) if r.cves else set()
        n, cvss = stated.get(r.id, (0, None))
        scores = [epss[c] for c in r.cves if c in epss]
        out.append(AdvisoryRisk(r.id, r.doc_id, r.title, r.publisher, r.category, r.revision, r.updated_at,
                                list(r.cves), n, any(c in kev for c in r.cves),
                                any(kev[c][0] for c in r.cves if c in kev), cvss, max(scores, default=None),
                                sum(counts.get(k, 0) for k in classes)))
    return out


def advisory_risks(uow_factory: UnitOfWorkFactory, caller: Caller, *, cve: str | None = None,
                   kev_only: bool = False, before: int | None = None, limit: int = ADVISORIES_PER_PAGE,
                   advisory_id: int | None = None) -> AdvisoryPage:
    """Imported advisories, newest first (by id: a page is a primary-key range, whatever the
    catalog's size), each with KEV, EPSS, CVSS and the devices it affects in the caller's scope;
    `cve`: those about this CVE; `kev_only`: those with a CVE in CISA KEV; `advisory_id`: that
    one alone (NotFound if there is none)."""
    scope = require_device_details(caller)
    with uow_factory() as uow:
        s = uow.session
        where: list[Any] = []
        if advisory_id is not None:
            where.append(AdvisoryRow.id == advisory_id)
        if cve:
            where.append(AdvisoryRow.id.in_(select(AdvisoryEntryRow.advisory_id).where(AdvisoryEntryRow.cve == cve))
                         | (AdvisoryRow.doc_id == cve))
        if kev_only:
            where.append(AdvisoryRow.id.in_(select(AdvisoryEntryRow.advisory_id)
                                            .join(KevEntryRow, KevEntryRow.cve == AdvisoryEntryRow.cve)))
        total = int(s.scalar(select(func.count()).select_from(AdvisoryRow).where(*where)) or 0)
        q = select(AdvisoryRow).where(*where).order_by(AdvisoryRow.id.desc()).limit(limit + 1)
        if before is not None:
            q = q.where(AdvisoryRow.id < before)
        rows = list(s.scalars(q))
        if advisory_id is not None and not rows:
            raise NotFound(f"advisory {advisory_id} not found")
        items = _risks(s, scope, rows[:limit])
    return AdvisoryPage(items, total, items[-1].id if len(rows) > limit else None)


def advisory_risk(uow_factory: UnitOfWorkFactory, caller: Caller, advisory_id: int) -> AdvisoryDetail:
    """One advisory: each CVE's priority (the highest label among the affected devices in scope,
    as `exposures` computes it per device), and the affected devices by product as sold, true
    origin and firmware. The affected devices are grouped by the database once — by class, zone
    criticality and reported exposure, whatever the number of CVEs — and prioritized per group
    and CVE: no per-device rows reach Python."""
    scope = require_device_details(caller)
    with uow_factory() as uow:
        s = uow.session
        row = s.get(AdvisoryRow, advisory_id)
        if row is None:
            raise NotFound(f"advisory {advisory_id} not found")
        risk = _risks(s, scope, [row])[0]
        cves = sorted(set(row.cves))
        fact_schema: dict[str, Any] = {
            "cve": pl.String, "product_id": pl.Int64, "firmware": pl.String, "cvss": pl.Float64,
            "exploited": pl.Boolean, "matched_at": pl.Datetime("us", "UTC"), "fixed_version": pl.String}
        facts = pl.concat([read_frame(s, select(VulnMatchRow.cve, VulnMatchRow.product_id, VulnMatchRow.firmware,
                                                VulnMatchRow.cvss, VulnMatchRow.exploited, VulnMatchRow.matched_at,
                                                VulnMatchRow.fixed_version).where(VulnMatchRow.cve.in_(part)),
                                      fact_schema)
                           for part in vuln_frames.chunks(cves)] or [pl.DataFrame(schema=fact_schema)])
        classes = sorted(facts.select("product_id", "firmware").unique().iter_rows())
        group_schema: dict[str, Any] = {"product_id": pl.Int64, "firmware": pl.String, "zone_criticality": pl.String,
                                        "remote": pl.String, "services": pl.String, "devices": pl.Int64}
        remote, services = cast(DeviceStateRow.remote_access, Text), cast(DeviceStateRow.services, Text)
        grouped = pl.concat([read_frame(s, select(DeviceRow.product_id, DeviceRow.firmware_running,
                                                  ZoneRow.criticality, remote, services, func.count())
                                        .join(ZoneRow, ZoneRow.id == DeviceRow.zone_id)
                                        .outerjoin(DeviceStateRow, DeviceStateRow.device_id == DeviceRow.id)
                                        .where(tuple_(DeviceRow.product_id, DeviceRow.firmware_running).in_(part),
                                               scope_clause(s, scope))
                                        .group_by(DeviceRow.product_id, DeviceRow.firmware_running,
                                                  ZoneRow.criticality, remote, services), group_schema)
                             for part in vuln_frames.chunks(classes)] or [pl.DataFrame(schema=group_schema)])
        kev, epss = _feeds(s, cves)
        products = {pid: (b, m, ob, om, status == "relabeled") for pid, b, m, ob, om, status in s.execute(
            select(ProductRow.id, ProductRow.brand, ProductRow.model, ProductRow.origin_brand, ProductRow.origin_model,
                   ProductRow.origin_status)
            .where(ProductRow.id.in_(grouped.get_column("product_id").unique().to_list())))}
    feeds = pl.DataFrame([(c, True, r, d) for c, (r, d) in kev.items()],
                         schema={"cve": pl.String, "kev": pl.Boolean, "ransomware": pl.Boolean, "kev_due": pl.Date},
                         orient="row")
    scores = pl.DataFrame(list(epss.items()), schema={"cve": pl.String, "epss": pl.Float64}, orient="row")
    frame = vp.device_priority(
        grouped.join(facts, on=["product_id", "firmware"])
        .join(feeds, on="cve", how="left").join(scores, on="cve", how="left")
        .with_columns(vp.exposed("remote", "services").alias("exposed")))
    by_cve = {r["cve"]: r for r in (
        frame.sort("priority", descending=True)
        .group_by("cve", maintain_order=True)
        .agg(pl.col("devices").sum(), pl.col("priority").max(), pl.col("label").first(),
             pl.col("cvss").max(), pl.col("fixed_version").drop_nulls().unique().sort())
        .iter_rows(named=True))}
    cve_risks = []
    for c in cves:
        hit = by_cve.get(c)
        ransomware, due = kev.get(c, (False, None))
        cve_risks.append(CveRisk(c, c in kev, ransomware, due, epss.get(c), hit["cvss"] if hit else None,
                                 hit["label"] if hit else None, hit["priority"] if hit else None,
                                 int(hit["devices"]) if hit else 0, list(hit["fixed_version"]) if hit else []))
    cve_risks.sort(key=lambda r: (-(r.priority or -1.0), -r.devices, r.cve))
    # A class's devices are counted once per CVE that matches it: any one CVE's count is the class's.
    per_class = (frame.group_by("product_id", "firmware", "cve").agg(pl.col("devices").sum(),
                                                                     pl.col("priority").max())
                 .sort("priority", descending=True)
                 .group_by("product_id", "firmware", maintain_order=True)
                 .agg(pl.col("devices").max(), pl.col("cve").sort(), pl.col("priority").max()))
    labels = frame.sort("priority", descending=True).group_by("product_id", "firmware", maintain_order=True).agg(
        pl.col("label").first(), pl.col("fixed_version").drop_nulls().first())
    affected = []
    for r in per_class.join(labels, on=["product_id", "firmware"]).iter_rows(named=True):
        b, m, ob, om, relabel = products[r["product_id"]]
        affected.append(AffectedClass(b, m, ob, om, relabel, r["firmware"], int(r["devices"]),
                                      list(r["cve"]), r["label"], r["fixed_version"]))
    affected.sort(key=lambda a: (-a.devices, a.origin_brand, a.origin_model, a.brand, a.model, a.firmware))
    top = next((r.label for r in cve_risks if r.label), None)
    return AdvisoryDetail(risk, row.source, row.url, row.previous_revision, row.change, list(row.unparsed),
                          cve_risks, affected, top)
