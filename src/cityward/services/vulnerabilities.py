"""Which devices each vulnerability affects, and what each responsible organization must do.

`match` is a set join (adapters/vuln_polars.py) over the whole fleet, or only over what a change
touches: given the CVEs of a newly imported advisory, it reads only those CVEs' entries and only the
devices of products whose identity (own or true origin) those entries name, and replaces only those
CVEs' matches. Matches are stored (`vuln_matches`) so the policy fact `known_exploited`, the API,
rollouts by advisory and the dashboard read them without matching again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import polars as pl
from sqlalchemy import delete, func, select

from cityward.adapters.storage import vuln_frames
from cityward.adapters.storage.fleet_facts import with_responsibility
from cityward.adapters.storage.frames import read_frame, write_frame
from cityward.adapters.storage.models import (
    AdvisoryRow,
    DeviceRow,
    DeviceStateRow,
    OrganizationRow,
    ProductRow,
    VulnMatchRow,
)
from cityward.adapters.storage.scoping import scope_clause
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import require_device_details
from cityward.domain.organizations import Caller, OrgKind, Role
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


def match(uow_factory: UnitOfWorkFactory, *, cves: Iterable[str] | None = None,
          caller: Caller = SYSTEM) -> MatchSummary:
    """Re-match the fleet for `cves` (None: every CVE) and store the result in one transaction."""
    t0 = time.perf_counter()
    scope = None if cves is None else set(cves)
    with uow_factory(write=True) as uow:
        s = uow.session
        found, classes = vuln_frames.compute(s, scope, uow.clock())
        if scope is None:
            vuln_frames.replace_all_matches(s, uow.dialect, found)
        else:
            for part in vuln_frames.chunks(sorted(scope)):
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
               .sort(["priority", "devices", "cve", "product", "firmware"],
                     descending=[True, True, False, False, False], nulls_last=True).head(limit))
    return [Exposure(**{k: r[k] for k in Exposure.__dataclass_fields__}) for r in grouped.iter_rows(named=True)]
