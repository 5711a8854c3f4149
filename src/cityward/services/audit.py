"""The compliance audit: a policy evaluated over the fleet (or the caller's part of it), stored as a
run with findings that name who must act, compared with the previous run of the same policy.

Each rule is one vectorized filter over the fact table; findings are written in bulk.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl
from sqlalchemy import false, func, select, union_all
from sqlalchemy.orm import Session

from cityward.adapters.policy_polars import compile_condition
from cityward.adapters.storage.fleet_facts import load_facts
from cityward.adapters.storage.frames import read_frame, write_frame
from cityward.adapters.storage.models import (
    AuditFindingRow,
    AuditRunRow,
    DeviceRow,
    OrganizationRow,
    PolicyVersionRow,
    ProductRow,
    WaiverRow,
    ZoneRow,
)
from cityward.adapters.storage.scoping import scope_clause, zone_tree
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import Action, Reach, require, require_device_details
from cityward.domain.names import name_key
from cityward.domain.organizations import Caller
from cityward.domain.policy.document import Policy, Remediation, Rule, Severity, parse_policy
from cityward.domain.policy.expr import facts_used
from cityward.domain.responsibility import Duty, zone_chain
from cityward.errors import InvalidInput, NotFound, PreconditionFailed, Problem
from cityward.services.policies import active_waivers, baseline_path, unacknowledged

# Who acts on a finding: the holder of the duty its remediation belongs to.
DUTY_OF: dict[Remediation, Duty] = {
    Remediation.ROTATE_CREDENTIALS: Duty.CREDENTIALS,
    Remediation.RESTRICT_REMOTE_ACCESS: Duty.REMOTE_ACCESS,
    Remediation.VERIFY_ORIGIN: Duty.SUPPLY,
}
SCORE_DIMENSIONS = {"zone": "zone", "kind": "kind", "manufacturer": "manufacturer",
                    "responsible": f"_resp_{Duty.MAINTAIN.value}"}


@dataclass(frozen=True)
class Finding:
    device_id: str
    rule_id: str
    title: str
    severity: str
    evidence: dict[str, Any]
    responsible: str | None
    status: str  # new or persisting
    waiver: int | None = None  # covered by this approved waiver: shown, but not counted in scores

    @property
    def waived(self) -> bool:
        return self.waiver is not None


@dataclass(frozen=True)
class Score:
    key: str
    devices: int
    failing: int  # devices with a finding of medium severity or worse

    @property
    def score(self) -> float:
        return round(100.0 * (self.devices - self.failing) / self.devices, 1) if self.devices else 100.0


FINDING_SCHEMA = pl.Schema({"device_id": pl.String, "rule_id": pl.String, "title": pl.String,
                            "severity": pl.String, "evidence": pl.String, "responsible": pl.String,
                            "status": pl.String, "waiver_id": pl.Int64})
PAIR_SCHEMA = pl.Schema({"device_id": pl.String, "rule_id": pl.String})


@dataclass
class AuditReport:
    """One run's outcome. Findings stay a frame (FINDING_SCHEMA, evidence as JSON text): a city
    audit has millions, and only what is shown becomes Python objects (`finding_list`)."""

    run_id: int
    policy: str
    at: datetime
    devices: int
    findings: pl.DataFrame
    resolved: pl.DataFrame  # PAIR_SCHEMA: failing last time, passing now
    by_rule: list[tuple[str, str, str, int]]  # rule id, title, severity, devices failing
    scores: dict[str, list[Score]] = field(default_factory=dict)
    version: int | None = None  # the published policy version audited
    not_acknowledged: list[str] = field(default_factory=list)
    overall: Score = Score("all", 0, 0)  # the whole audited fleet, computed with the per-group scores

    @property
    def score(self) -> float:
        return self.overall.score

    def count(self, status: str) -> int:
        return self.findings.filter(pl.col("status") == status).height

    @property
    def waived(self) -> int:
        return self.findings.filter(pl.col("waiver_id").is_not_null()).height

    def finding_list(self, limit: int | None = None) -> list[Finding]:
        """Findings as objects, most severe first, then by rule and device."""
        order = {s.value: -s.rank for s in Severity}
        frame = self.findings.sort(pl.col("severity").replace_strict(order, return_dtype=pl.Int64),
                                   "rule_id", "device_id")
        if limit is not None:
            frame = frame.head(limit)
        return [Finding(r["device_id"], r["rule_id"], r["title"], r["severity"], json.loads(r["evidence"]),
                        r["responsible"], r["status"], r["waiver_id"]) for r in frame.iter_rows(named=True)]

    def resolved_pairs(self, limit: int | None = None) -> list[tuple[str, str]]:
        frame = self.resolved if limit is None else self.resolved.head(limit)
        return [(d, r) for d, r in frame.iter_rows()]

    def fails_at(self, threshold: Severity) -> bool:
        """An unwaived finding of `threshold` severity or worse (`--fail-on`)."""
        worse = [s.value for s in Severity if s.rank >= threshold.rank]
        return self.findings.filter(pl.col("waiver_id").is_null() & pl.col("severity").is_in(worse)).height > 0


def _scope_expr(rule: Rule, zones_inside: dict[str, set[str]]) -> pl.Expr:
    expr = pl.lit(True)
    s = rule.scope
    if s.zones:
        names = set().union(*(zones_inside.get(name_key(z), {z}) for z in s.zones))
        expr = expr & pl.col("zone").is_in(sorted(names))
    if s.kinds:
        expr = expr & pl.col("kind").is_in(list(s.kinds))
    if s.products:
        expr = expr & pl.col("_product").str.to_lowercase().is_in([p.lower() for p in s.products])
    if s.tags:
        expr = expr & pl.col("tags").list.eval(pl.element().is_in(list(s.tags))).list.any().fill_null(False)
    return expr


def _zones_inside(uow_session: Session) -> dict[str, set[str]]:
    """A zone's name_key → the stored names of the zones inside it (itself included): a policy or a
    waiver may name a zone in any case (domain.names)."""
    parents = zone_tree(uow_session)
    names = dict(uow_session.execute(select(ZoneRow.id, ZoneRow.name)).all())
    inside: dict[str, set[str]] = {name_key(n): set() for n in names.values()}
    for zid in parents:
        for ancestor in zone_chain(zid, parents):
            inside[name_key(names[ancestor])].add(names[zid])
    return inside


def evaluate(policy: Policy, facts: pl.DataFrame, zones_inside: dict[str, set[str]]) -> pl.DataFrame:
    """One row per (device, rule) that fails: device_id, rule_id, severity, evidence (JSON text),
    responsible_org_id."""
    # One lazy query per rule, collected together: polars filters each rule and keeps only the
    # finding's columns, instead of copying every fact column of every matching row 27 times.
    lazy = facts.lazy()
    parts = []
    for rule in policy.rules:
        used = sorted(facts_used(rule.node))
        duty = DUTY_OF.get(rule.remediation, Duty.MAINTAIN)
        hit = lazy.filter((_scope_expr(rule, zones_inside) & compile_condition(rule.node)).fill_null(False))
        parts.append(hit.select(
            pl.col("id").alias("device_id"), pl.lit(rule.id).alias("rule_id"),
            pl.lit(rule.severity.value).alias("severity"),
            pl.struct([pl.col(c) for c in used]).struct.json_encode().alias("evidence"),
            pl.col(f"_resp_{duty.value}").alias("responsible_org_id"),
        ))
    empty = pl.DataFrame(schema={"device_id": pl.String, "rule_id": pl.String, "severity": pl.String,
                                 "evidence": pl.String, "responsible_org_id": pl.Int64})
    if not parts:
        return empty
    return pl.concat(parts).collect().cast(empty.schema)


def apply_waivers(findings: pl.DataFrame, facts: pl.DataFrame, waivers: list[WaiverRow],
                  zones_inside: dict[str, set[str]]) -> pl.DataFrame:
    """`waiver_id`: the first approved, unexpired waiver covering each finding (else null)."""
    if not waivers or findings.height == 0:
        return findings.with_columns(pl.lit(None, dtype=pl.Int64).alias("waiver_id"))
    joined = findings.join(facts.select(pl.col("id").alias("device_id"), "zone", "kind", "_product", "tags"),
                           on="device_id", how="left")
    waiver = pl.lit(None, dtype=pl.Int64)
    for w in sorted(waivers, key=lambda w: w.id, reverse=True):  # the oldest matching waiver wins
        key, value = next(iter(w.selector.items()))
        match = {
            "device": pl.col("device_id") == value,
            "zone": pl.col("zone").is_in(sorted(zones_inside.get(name_key(value), {value}))),
            "kind": pl.col("kind") == value,
            "product": pl.col("_product").str.to_lowercase() == value.lower(),
            "tag": pl.col("tags").list.contains(value).fill_null(False),
        }[key]
        waiver = pl.when((pl.col("rule_id") == w.rule_id) & match).then(pl.lit(w.id)).otherwise(waiver)
    return joined.with_columns(waiver.alias("waiver_id")).select(*findings.columns, "waiver_id")


def run_audit(uow_factory: UnitOfWorkFactory, caller: Caller, policy: Policy, policy_text: bytes,
              now: datetime | None = None, version: int | None = None) -> AuditReport:
    require(caller, Action.AUDIT)  # a run and its findings are stored: never a viewer's
    scope = require_device_details(caller)
    now = now or datetime.now(UTC)
    # The previous run's findings (millions at city scale) are read on a second connection while
    # this one loads the facts: the two reads overlap instead of adding up. A finished run never
    # changes, so reading it outside this transaction is safe.
    with ThreadPoolExecutor(1, thread_name_prefix="audit-previous") as pool, uow_factory(write=True) as uow:
        earlier = pool.submit(_previous_findings, uow_factory, caller, policy.name)
        s = uow.session
        facts = load_facts(s, scope, now, policy.prohibited_manufacturers)
        inside = _zones_inside(s)
        findings = apply_waivers(evaluate(policy, facts, inside), facts, active_waivers(s, now), inside)
        before = earlier.result()
        run = AuditRunRow(policy_name=policy.name, policy_sha256=hashlib.sha256(policy_text).hexdigest(),
                          scope_org_id=caller.org_id, started_at=now, finished_at=now, run_by=caller.actor,
                          devices=facts.height, findings=findings.height, new=0, resolved=0, summary={},
                          policy_version=version)
        s.add(run)
        s.flush()
        # The diff is two joins on (device, rule): a finding keeps the run it first appeared in.
        stored = findings.join(before, on=["device_id", "rule_id"], how="left").with_columns(
            pl.lit(run.id, dtype=pl.Int64).alias("run_id"), pl.col("first_seen_run").fill_null(run.id))
        stored = stored.sort("device_id", "rule_id")  # the index's order: appends, no page splits
        write_frame(s, AuditFindingRow.__tablename__, stored.select(
            "run_id", "device_id", "rule_id", "severity", "evidence", "responsible_org_id", "first_seen_run",
            "waiver_id"))
        resolved = before.join(findings, on=["device_id", "rule_id"], how="anti").select(*PAIR_SCHEMA) \
            .sort("device_id", "rule_id")
        run.new = stored.filter(pl.col("first_seen_run") == run.id).height
        run.resolved = resolved.height
        org_names = dict(s.execute(select(OrganizationRow.id, OrganizationRow.name)).all())
        titles = {r.id: r for r in policy.rules}
        report = AuditReport(
            run_id=run.id, policy=policy.name, at=now, devices=facts.height,
            findings=stored.select(
                "device_id", "rule_id",
                pl.col("rule_id").replace_strict({k: r.title for k, r in titles.items()}, return_dtype=pl.String)
                .alias("title"),
                "severity", "evidence",
                pl.col("responsible_org_id").replace_strict(org_names, default=None, return_dtype=pl.String)
                .alias("responsible"),
                pl.when(pl.col("first_seen_run") == run.id).then(pl.lit("new")).otherwise(pl.lit("persisting"))
                .alias("status"),
                "waiver_id").cast(FINDING_SCHEMA),
            resolved=resolved, version=version,
            by_rule=sorted(((rid, titles[rid].title, titles[rid].severity.value, n)
                            for rid, n in findings.group_by("rule_id").len().iter_rows()),
                           key=lambda t: (-Severity(t[2]).rank, -t[3], t[0])),
        )
        unwaived = findings.filter(pl.col("waiver_id").is_null())
        report.overall, report.scores = _scores(facts, unwaived, org_names)
        by_severity = dict(unwaived.group_by("severity").len().iter_rows())
        run.finished_at = datetime.now(UTC)
        run.summary = {"score": report.score, "by_rule": {r[0]: r[3] for r in report.by_rule},
                       "by_severity": {sev.value: by_severity.get(sev.value, 0) for sev in Severity},
                       "scores": {dim: [[x.key, x.devices, x.failing, x.score] for x in items]
                                  for dim, items in report.scores.items()}}
        uow.record(caller, "audit.run", "policy", policy.name, after={
            "run": run.id, "policy_sha256": run.policy_sha256, "devices": run.devices, "findings": run.findings,
            "new": run.new, "resolved": run.resolved})
        uow.commit()
    if version is not None:
        report.not_acknowledged = unacknowledged(uow_factory, version)
    return report


def latest_run_id(session: Session, caller: Caller, policy_name: str | None = None) -> int | None:
    """The caller's organization's most recent audit run (of one policy, or of any)."""
    q = select(func.max(AuditRunRow.id)).where(AuditRunRow.scope_org_id == caller.org_id)
    if policy_name is not None:
        q = q.where(AuditRunRow.policy_name == policy_name)
    return session.scalar(q)


def failing_devices(session: Session, caller: Caller, rule_id: str) -> Any:
    """The ids of the devices failing `rule_id` (not waived) in the caller's latest audit, as a
    subquery for `DeviceRow.id.in_(...)`. Refused before any audit (PreconditionFailed); a rule
    the audited policy does not have is NotFound, not an empty list."""
    latest = latest_run_id(session, caller)
    run = session.get(AuditRunRow, latest) if latest is not None else None
    if run is None:
        raise PreconditionFailed("no audit has been run yet: run `cityward audit run` first",
                                 hint="cityward audit run")
    rules = _rules_of(session, run)  # empty when the policy's text is not stored: then every id is taken
    if rules and rule_id not in rules and rule_id not in run.summary.get("by_rule", {}):
        raise NotFound(f"the policy of audit run {run.id} has no rule {rule_id!r}",
                       hint="the rules are listed in `cityward audit run`'s report and in the policy file")
    return select(AuditFindingRow.device_id).where(
        AuditFindingRow.run_id == latest, AuditFindingRow.rule_id == rule_id, AuditFindingRow.waiver_id.is_(None))


@dataclass(frozen=True)
class ProductFindings:
    manufacturer: str  # the true manufacturer's brand and model, and the labelled product's minimum
    model: str
    min_firmware: str | None
    device_ids: list[str]


def failing_by_product(uow_factory: UnitOfWorkFactory, caller: Caller, rule_id: str) -> list[ProductFindings]:
    """Devices with an unwaived finding of `rule_id` in the caller's latest run, grouped by true
    product (most devices first): what a remediation rollout per product would target."""
    require_device_details(caller)
    with uow_factory() as uow:
        s = uow.session
        rows = s.execute(
            select(ProductRow.origin_brand, ProductRow.origin_model, ProductRow.min_firmware, DeviceRow.id)
            .join(DeviceRow, DeviceRow.product_id == ProductRow.id)
            .join(AuditFindingRow, AuditFindingRow.device_id == DeviceRow.id)
            .where(AuditFindingRow.run_id == latest_run_id(s, caller), AuditFindingRow.rule_id == rule_id,
                   AuditFindingRow.waiver_id.is_(None))).all()
    grouped: dict[tuple[str, str, str | None], list[str]] = {}
    for brand, model, minimum, device_id in rows:
        grouped.setdefault((brand, model, minimum), []).append(device_id)
    ranked = sorted(grouped.items(), key=lambda kv: (-len(kv[1]), kv[0][0], kv[0][1], kv[0][2] or ""))
    return [ProductFindings(b, m, v, sorted(ids)) for (b, m, v), ids in ranked]


def _previous_findings(uow_factory: UnitOfWorkFactory, caller: Caller, policy_name: str) -> pl.DataFrame:
    """(device_id, rule_id, first_seen_run) of the caller's last run of this policy (or none)."""
    with uow_factory() as uow:
        s = uow.session
        previous = latest_run_id(s, caller, policy_name)
        return read_frame(s, select(AuditFindingRow.device_id, AuditFindingRow.rule_id,
                                    AuditFindingRow.first_seen_run)
                          .where(AuditFindingRow.run_id == (previous or 0)),
                          {**PAIR_SCHEMA, "first_seen_run": pl.Int64})


def _scores(facts: pl.DataFrame, findings: pl.DataFrame,
            org_names: dict[int, str]) -> tuple[Score, dict[str, list[Score]]]:
    """The share of devices without an (unwaived) finding of medium severity or worse: for the
    whole fleet and per zone, kind, true manufacturer and responsible organization."""
    serious = [s.value for s in Severity if s.rank >= Severity.MEDIUM.rank]
    failing_ids = findings.filter(pl.col("severity").is_in(serious)).select("device_id").unique()
    marked = facts.with_columns(pl.col("id").is_in(failing_ids["device_id"].implode()).alias("_failing"))
    out: dict[str, list[Score]] = {}
    for dim, column in SCORE_DIMENSIONS.items():
        grouped = marked.group_by(column).agg(pl.len().alias("devices"), pl.col("_failing").sum().alias("failing"))
        items = []
        for key, devices, failing in grouped.iter_rows():
            label = org_names.get(key, "—") if dim == "responsible" else (key if key is not None else "—")
            items.append(Score(str(label), int(devices), int(failing)))
        out[dim] = sorted(items, key=lambda x: (x.score, -x.devices, x.key))
    return Score("all", marked.height, int(marked["_failing"].sum())), out


def parse_fail_on(value: str | None) -> Severity | None:
    if value is None:
        return None
    try:
        return Severity(value)
    except ValueError:
        raise InvalidInput(f"--fail-on must be one of {', '.join(s.value for s in Severity)}") from None


@dataclass(frozen=True)
class TrendPoint:
    run_id: int
    at: datetime
    score: float
    findings: int
    new: int
    resolved: int


def trend(uow_factory: UnitOfWorkFactory, caller: Caller, policy_name: str, limit: int = 30) -> list[TrendPoint]:
    """Past runs of a policy in the caller's view, oldest first: the posture over time."""
    with uow_factory() as uow:
        rows = uow.session.execute(
            select(AuditRunRow).where(AuditRunRow.policy_name == policy_name,
                                      AuditRunRow.scope_org_id == caller.org_id)
            .order_by(AuditRunRow.id.desc()).limit(limit)).scalars().all()
        return [TrendPoint(r.id, r.finished_at, float(r.summary.get("score", 0.0)), r.findings, r.new, r.resolved)
                for r in reversed(rows)]


@dataclass(frozen=True)
class RunView:
    id: int
    policy: str
    policy_version: int | None
    at: datetime
    run_by: str
    devices: int
    findings: int
    new: int
    resolved: int
    score: float


def _visible_runs(caller: Caller) -> Any:
    q = select(AuditRunRow)
    return q if caller.is_city else q.where(AuditRunRow.scope_org_id == caller.org_id)


def _run_view(r: AuditRunRow) -> RunView:
    return RunView(r.id, r.policy_name, r.policy_version, r.finished_at, r.run_by, r.devices, r.findings, r.new,
                   r.resolved, float(r.summary.get("score", 0.0)))


def list_runs(uow_factory: UnitOfWorkFactory, caller: Caller, limit: int = 50) -> list[RunView]:
    """Audit runs the caller may see: its organization's own; the city sees every run."""
    require_device_details(caller)
    with uow_factory() as uow:
        rows = uow.session.scalars(_visible_runs(caller).order_by(AuditRunRow.id.desc()).limit(limit))
        return [_run_view(r) for r in rows]


def get_run(uow_factory: UnitOfWorkFactory, caller: Caller, run_id: int) -> tuple[RunView, dict[str, Any]]:
    require_device_details(caller)
    with uow_factory() as uow:
        row = uow.session.scalar(_visible_runs(caller).where(AuditRunRow.id == run_id))
        if row is None:
            raise NotFound(f"audit run {run_id} not found")
        return _run_view(row), dict(row.summary)


@dataclass(frozen=True)
class FindingView:
    id: int
    device_id: str
    rule_id: str
    severity: str
    evidence: dict[str, Any]
    responsible: str | None
    status: str
    waiver: int | None


def list_findings(uow_factory: UnitOfWorkFactory, caller: Caller, run_id: int, *, rule: str | None = None,
                  severity: str | None = None, limit: int = 100, after: int | None = None) -> list[FindingView]:
    get_run(uow_factory, caller, run_id)  # visibility
    with uow_factory() as uow:
        q = (select(AuditFindingRow, OrganizationRow.name)
             .outerjoin(OrganizationRow, OrganizationRow.id == AuditFindingRow.responsible_org_id)
             .where(AuditFindingRow.run_id == run_id).order_by(AuditFindingRow.id).limit(limit))
        if rule:
            q = q.where(AuditFindingRow.rule_id == rule)
        if severity:
            q = q.where(AuditFindingRow.severity == severity)
        if after is not None:
            q = q.where(AuditFindingRow.id > after)
        return [FindingView(f.id, f.device_id, f.rule_id, f.severity, f.evidence, org,
                            "new" if f.first_seen_run == run_id else "persisting", f.waiver_id)
                for f, org in uow.session.execute(q)]


# --- browsing the latest run (the dashboard's findings page) -----------------------------------


@dataclass(frozen=True)
class RuleInfo:
    """A rule as the policy a run evaluated states it."""

    title: str
    severity: str
    remediation: str


@dataclass(frozen=True)
class RuleCount:
    rule_id: str
    title: str | None  # None: the run's policy text is not stored (a file given to `audit run --policy`)
    severity: str
    remediation: str | None
    findings: int  # waived ones included (they are listed, marked)


@dataclass(frozen=True)
class FindingRow:
    id: int
    device_id: str
    rule_id: str
    severity: str
    zone: str
    responsible: str | None  # the organization that must act on it
    evidence: dict[str, Any]
    status: str  # new or persisting
    waiver: int | None


@dataclass(frozen=True)
class FindingsFilter:
    rule: str | None = None
    zone: str | None = None  # includes the zones inside it
    org: str | None = None  # the responsible organization's name
    severity: str | None = None


@dataclass(frozen=True)
class FindingsPage:
    run: RunView | None  # None: the caller's organization has not run an audit yet
    by_rule: list[RuleCount]  # under the zone, org and severity filters (not the rule one), worst first
    items: list[FindingRow]  # one page, in (device, rule) order
    next_after: int | None  # the finding id the next page continues after

    @property
    def total(self) -> int:
        return sum(r.findings for r in self.by_rule)


_POLICY_RULES: dict[str, dict[str, RuleInfo]] = {}  # by policy SHA-256: a text never changes


def _rules_of(s: Session, run: AuditRunRow) -> dict[str, RuleInfo]:
    """The rules of the policy a run evaluated: its published version, or the shipped baseline
    when the hashes agree; parsed once per policy text. Empty when the text is not stored (a file
    given to `audit run --policy`): remembered too, so no page load hashes the baseline again."""
    if run.policy_sha256 in _POLICY_RULES:
        return _POLICY_RULES[run.policy_sha256]
    text: bytes | None = None
    if run.policy_version is not None:
        stored = s.get(PolicyVersionRow, run.policy_version)
        text = stored.text.encode("utf-8") if stored is not None else None
    else:
        try:
            baseline = baseline_path().read_bytes()
        except OSError:
            baseline = b""
        text = baseline if hashlib.sha256(baseline).hexdigest() == run.policy_sha256 else None
    rules: dict[str, RuleInfo] = {}
    if text is not None and hashlib.sha256(text).hexdigest() == run.policy_sha256:
        rules = {r.id: RuleInfo(r.title, r.severity.value, r.remediation.value)
                 for r in parse_policy(text, f"policy of audit run {run.id}").rules}
    if len(_POLICY_RULES) < 32:
        _POLICY_RULES[run.policy_sha256] = rules
    return rules


def browse_findings(uow_factory: UnitOfWorkFactory, caller: Caller, flt: FindingsFilter, *, limit: int = 100,
                    after: int | None = None) -> FindingsPage:
    """The findings of the caller's organization's latest run — the run `failing_rule` rollouts
    act on — counted per rule and paged (keyset, in the run's (device, rule) order) by the
    database: a city run holds millions. Devices outside the caller's scope today are left out.

    A filter naming nothing that exists raises InvalidInput whose problems name the field."""
    scope = require_device_details(caller)
    with uow_factory() as uow:
        s = uow.session
        run_id = latest_run_id(s, caller)
        run = s.get(AuditRunRow, run_id) if run_id is not None else None
        if run is None:
            return FindingsPage(None, [], [], None)
        rules = _rules_of(s, run)
        counted = dict(run.summary.get("by_rule", {}))
        problems: list[Problem] = []
        if flt.severity and flt.severity not in {v.value for v in Severity}:
            problems.append(Problem(f"{flt.severity!r} is not one of {', '.join(v.value for v in Severity)}",
                                    field="severity"))
        if flt.rule and flt.rule not in counted and flt.rule not in rules:
            problems.append(Problem(f"audit run {run.id} has no rule {flt.rule!r}", field="rule"))
        org_id = None
        if flt.org:
            org_id = s.scalar(select(OrganizationRow.id).where(OrganizationRow.name_key == name_key(flt.org)))
            if org_id is None:
                problems.append(Problem(f"no organization is called {flt.org!r}", field="org"))
        inside: list[int] = []
        if flt.zone:
            zone_id = s.scalar(select(ZoneRow.id).where(ZoneRow.name_key == name_key(flt.zone)))
            if zone_id is None:
                problems.append(Problem(f"no zone is called {flt.zone!r}", field="zone"))
            else:
                parents = zone_tree(s)
                inside = [z for z in parents if zone_id in zone_chain(z, parents)]
        if problems:
            raise InvalidInput("; ".join(str(p) for p in problems), problems)
        where: list[Any] = [AuditFindingRow.run_id == run.id]
        if flt.severity:
            where.append(AuditFindingRow.severity == flt.severity)
        if org_id is not None:
            where.append(AuditFindingRow.responsible_org_id == org_id)
        if inside:
            where.append(DeviceRow.zone_id.in_(inside))
        if scope.reach is not Reach.ALL:
            where.append(scope_clause(s, scope))
        by_device = bool(inside) or scope.reach is not Reach.ALL
        if by_device or org_id is not None or not all(r in rules for r in counted):
            q = select(AuditFindingRow.rule_id, AuditFindingRow.severity, func.count()).where(*where)
            if by_device:
                q = q.join(DeviceRow, DeviceRow.id == AuditFindingRow.device_id)
            found = s.execute(q.group_by(AuditFindingRow.rule_id, AuditFindingRow.severity)).all()
            pairs = [(rid, sev, int(n)) for rid, sev, n in found]
        else:  # the whole run as the caller sees it: the counts the run stored (a rule has one severity)
            pairs = [(rid, rules[rid].severity, int(n)) for rid, n in counted.items()
                     if flt.severity in (None, rules[rid].severity)]
        order = {v.value: v.rank for v in Severity}
        by_rule = sorted((RuleCount(rid, rules[rid].title if rid in rules else None, sev,
                                    rules[rid].remediation if rid in rules else None, n) for rid, sev, n in pairs),
                         key=lambda r: (-order.get(r.severity, -1), -r.findings, r.rule_id))
        page_where = list(where)
        cursor = s.get(AuditFindingRow, after) if after is not None else None
        if after is not None and (cursor is None or cursor.run_id != run.id):
            raise InvalidInput("this page link belongs to an earlier audit run: start again from the first page",
                               [Problem(f"finding {after} is not in audit run {run.id}", field="after")])
        if cursor is not None:
            d, r = cursor.device_id, cursor.rule_id
            page_where += [AuditFindingRow.device_id >= d, (AuditFindingRow.device_id > d)
                           | (AuditFindingRow.rule_id > r)]
        if flt.rule:
            page_where.append(AuditFindingRow.rule_id == flt.rule)
        elif flt.severity:  # one short walk of ix_audit_findings_run_rule_device per rule of that severity
            page_where.append(AuditFindingRow.id.in_(
                _first_of_each_rule(page_where, [rid for rid, _sev, n in pairs if n], by_device, limit + 1)))
        q_items = (select(AuditFindingRow, ZoneRow.name, OrganizationRow.name)
                   .join(DeviceRow, DeviceRow.id == AuditFindingRow.device_id)
                   .join(ZoneRow, ZoneRow.id == DeviceRow.zone_id)
                   .outerjoin(OrganizationRow, OrganizationRow.id == AuditFindingRow.responsible_org_id)
                   .where(*page_where)
                   .order_by(AuditFindingRow.device_id, AuditFindingRow.rule_id).limit(limit + 1))
        rows = s.execute(q_items).all()
        items = [FindingRow(f.id, f.device_id, f.rule_id, f.severity, zone, org, dict(f.evidence or {}),
                            "new" if f.first_seen_run == run.id else "persisting", f.waiver_id)
                 for f, zone, org in rows[:limit]]
        return FindingsPage(_run_view(run), by_rule, items, items[-1].id if len(rows) > limit else None)


def _first_of_each_rule(where: list[Any], rule_ids: list[str], by_device: bool, n: int) -> Any:
    """The ids of the first `n` findings (device order) of each rule, as one UNION ALL: the page
    is among them. Filtering a run by severity in device order otherwise reads every finding of
    the run when the severity is rare."""
    if not rule_ids:
        return select(AuditFindingRow.id).where(false())
    parts = []
    for rule_id in rule_ids:
        q = select(AuditFindingRow.id).where(*where, AuditFindingRow.rule_id == rule_id)
        if by_device:
            q = q.join(DeviceRow, DeviceRow.id == AuditFindingRow.device_id)
        first = q.order_by(AuditFindingRow.device_id).limit(n).subquery()
        parts.append(select(first.c.id))
    return union_all(*parts)

