"""Rollouts: plan (a dry run), create, approve, start, pause, resume, abort, and their status.

Everything a rollout will do is decided here, before any device hears of it: which devices, in
which wave, which are skipped and why, which maintenance windows apply, whether approval is needed.
The executor (services/rollout_executor.py) only carries out what is stored.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import exists, func, insert, select, text, update
from sqlalchemy.orm import Session

from cityward.adapters.storage import vuln_frames
from cityward.adapters.storage.models import (
    AdvisoryEntryRow,
    AdvisoryRow,
    DesiredConfigRow,
    DeviceRow,
    DeviceSecretRow,
    DeviceStateRow,
    FirmwareReleaseRow,
    ProductRow,
    RolloutActionRow,
    RolloutRow,
    RolloutWaveRow,
    VulnMatchRow,
    ZoneRow,
)
from cityward.adapters.storage.scoping import responsible_clause, scope_clause, zone_tree
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import Action, require, require_device_details, require_device_write
from cityward.domain.organizations import Caller, Role
from cityward.domain.products import product_key
from cityward.domain.responsibility import Duty, zone_chain
from cityward.domain.rollouts import (
    ALLOWED_IN_QUARANTINE,
    ActionStatus,
    Control,
    FailureAction,
    Operation,
    PlanSummary,
    Reachability,
    RolloutCommand,
    RolloutState,
    Skip,
    WaveOptions,
    cannot_succeed,
    estimate,
    is_recent,
    next_opening,
    plan_waves,
    rollout_state,
    transition,
    window_problems,
)
from cityward.domain.zones import Criticality, MaintenanceWindow
from cityward.errors import InvalidInput, NotFound, PermissionDenied, Problem
from cityward.services import credentials, firmware
from cityward.services.audit import failing_devices
from cityward.services.configs import selector_filter
from cityward.services.inventory import DeviceFilter, apply_filter
from cityward.services.rollout_reachability import reachability

# Which duty a partner must hold on a device to run this operation on it.
DUTY_FOR: dict[Operation, Duty] = {Operation.ROTATE_PASSWORD: Duty.CREDENTIALS}
MAX_EXPLICIT_DEVICES = 100_000


@dataclass(frozen=True)
class Target:
    """How devices are chosen: `devices list` filters, the devices failing a rule in the latest
    audit, the devices an advisory (its id, or a CVE id) affects, or named devices (e.g. selected on
    the findings page). They combine with AND."""

    selector: DeviceFilter = field(default_factory=DeviceFilter)
    failing_rule: str | None = None
    device_ids: tuple[str, ...] = ()
    advisory: str | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: (v.isoformat() if isinstance(v, datetime) else v)
                               for k, v in asdict(self.selector).items() if v not in (None, False)}
        if self.failing_rule:
            out["failing_rule"] = self.failing_rule
        if self.advisory:
            out["advisory"] = self.advisory
        if self.device_ids:
            out["devices"] = len(self.device_ids)
        return out


@dataclass(frozen=True)
class RolloutRequest:
    name: str
    operation: Operation
    target: Target
    options: WaveOptions = field(default_factory=WaveOptions)
    release: int | None = None  # upgrade_firmware: the firmware catalog entry
    config: str | None = None  # set_config: the desired configuration's name
    reason: str | None = None  # quarantine


@dataclass(frozen=True)
class _Candidate:
    id: str
    zone_id: int
    zone: str
    criticality: str
    origin: tuple[str, str]  # true manufacturer's (brand_key, model_key)
    firmware: str
    protocol: str | None
    address: str | None
    quarantined: bool
    config_hash: str | None


def parse_operation(value: str) -> Operation:
    try:
        return Operation(value)
    except ValueError:
        raise InvalidInput(f"unknown operation {value!r}", [Problem(
            f"one of {', '.join(o.value for o in Operation)}", field="operation")]) from None


def _params(s: Session, req: RolloutRequest, store: Path, uow_factory: UnitOfWorkFactory) -> dict[str, Any]:
    op = req.operation
    if op is Operation.UPGRADE_FIRMWARE:
        if req.release is None:
            raise InvalidInput("a firmware upgrade needs --release (see cityward firmware list)")
        firmware.verified_image(uow_factory, store, req.release)  # hash and signature, again
        return {"release": req.release}
    if op is Operation.SET_CONFIG:
        if not req.config:
            raise InvalidInput("a configuration rollout needs --config (see cityward config list)")
        row = s.scalar(select(DesiredConfigRow).where(DesiredConfigRow.name == req.config))
        if row is None:
            raise NotFound(f"desired configuration {req.config!r} not found")
        return {"config": row.id}
    if op is Operation.QUARANTINE:
        return {"reason": (req.reason or "quarantined by rollout")[:200]}
    return {}


def _candidates(s: Session, caller: Caller, req: RolloutRequest) -> list[_Candidate]:
    scope = require_device_details(caller)
    q = (select(DeviceRow.id, DeviceRow.zone_id, ZoneRow.name, ZoneRow.criticality, ProductRow.origin_brand_key,
                ProductRow.origin_model, DeviceRow.firmware_version, DeviceStateRow.firmware_version,
                DeviceRow.protocol, DeviceRow.address, DeviceStateRow.quarantined, DeviceStateRow.config_hash)
         .join(ProductRow, ProductRow.id == DeviceRow.product_id)
         .join(ZoneRow, ZoneRow.id == DeviceRow.zone_id)
         .outerjoin(DeviceStateRow, DeviceStateRow.device_id == DeviceRow.id)
         .where(scope_clause(s, scope)))
    if not caller.is_city:  # a partner acts only where it holds the duty this work belongs to
        q = q.where(responsible_clause(s, caller.org_id, frozenset({DUTY_FOR.get(req.operation, Duty.MAINTAIN)})))
    q = apply_filter(s, q, req.target.selector, caller)
    if req.target.failing_rule:
        q = q.where(DeviceRow.id.in_(failing_devices(s, caller, req.target.failing_rule)))
    if req.target.advisory:
        cves = advisory_cves(s, req.target.advisory)
        q = q.where(exists().where(vuln_frames.on_device(), VulnMatchRow.cve.in_(cves)))
    rows = s.execute(q).all()
    found = [_Candidate(r[0], r[1], r[2], r[3], (r[4], product_key("", r[5])[1]), r[7] or r[6], r[8], r[9],
                        bool(r[10]), r[11]) for r in rows]
    if req.target.device_ids:
        wanted = set(req.target.device_ids)
        found = [c for c in found if c.id in wanted]
        missing = sorted(wanted - {c.id for c in found})
        if missing:
            raise InvalidInput(
                f"{len(missing)} of the named devices are not yours to act on or do not exist",
                [Problem("not found, or not a device you are responsible for", field=f"device {d}")
                 for d in missing[:20]], more=max(0, len(missing) - 20))
    return found


def advisory_cves(s: Session, advisory: str) -> list[str]:
    """The CVEs an advisory id (CSAF tracking id or CVE record) or a CVE id stands for."""
    found = [c for (cves,) in s.execute(select(AdvisoryRow.cves).where(AdvisoryRow.doc_id == advisory))
             for c in cves]
    if not found and s.scalar(select(AdvisoryEntryRow.id).where(AdvisoryEntryRow.cve == advisory).limit(1)):
        found = [advisory]
    if not found:
        raise NotFound(f"advisory {advisory!r} not found",
                       hint="import it with `cityward advisories import`; `cityward vulns list` shows what affects "
                       "the fleet")
    return sorted(set(found))


def zone_windows(s: Session) -> dict[int, MaintenanceWindow | None]:
    """Each zone's window: its own, else the nearest one up the zone tree."""
    parents = zone_tree(s)
    own = {zid: MaintenanceWindow(**mw) for zid, mw in s.execute(select(ZoneRow.id, ZoneRow.maintenance_window))
           if mw}
    return {z: next((own[a] for a in zone_chain(z, parents) if a in own), None) for z in parents}


def _skips(s: Session, req: RolloutRequest, params: dict[str, Any], cands: list[_Candidate],
           box_has_admin: set[str], reach: dict[str, Reachability]) -> dict[str, str]:
    """Devices left out of the plan, each with its reason: those the plan must not touch, then
    those that cannot succeed now (offline, unreachable last time and silent since, without the
    action), so a canary is not spent on a device that was already gone."""
    reasons: dict[str, str] = {}
    ids = [c.id for c in cands]
    busy: dict[str, int] = {}
    for i in range(0, len(ids), 900):
        busy.update(s.execute(
            select(RolloutActionRow.device_id, RolloutActionRow.rollout_id)
            .join(RolloutRow, RolloutRow.id == RolloutActionRow.rollout_id)
            .where(RolloutActionRow.device_id.in_(ids[i:i + 900]),
                   RolloutActionRow.status.in_([ActionStatus.PENDING, ActionStatus.RUNNING]),
                   RolloutRow.control != Control.ABORTED)).all())
    release = (s.get(FirmwareReleaseRow, params["release"]) if "release" in params else None)
    desired = (s.get(DesiredConfigRow, params["config"]) if "config" in params else None)
    for c in cands:
        if c.id in busy:
            reasons[c.id] = f"in rollout {busy[c.id]} already (one rollout per device at a time)"
        elif c.protocol not in ("mqtt", "http") or (c.protocol == "http" and not c.address):
            reasons[c.id] = "no way to reach it (protocol or address missing in the inventory)"
        elif c.protocol == "http" and c.id not in box_has_admin:
            reasons[c.id] = "no admin password on record for an HTTP device"
        elif c.quarantined and req.operation not in ALLOWED_IN_QUARANTINE:
            reasons[c.id] = "quarantined"
        elif release is not None and c.origin != (release.brand_key, release.model_key):
            reasons[c.id] = f"the firmware is for {release.brand} {release.model}, not this product"
        elif release is not None and c.firmware == release.version:
            reasons[c.id] = f"already on {release.version}"
        elif desired is not None and c.config_hash == desired.config_hash:
            reasons[c.id] = "already in the desired configuration"
        elif req.operation is Operation.RELEASE and not c.quarantined:
            reasons[c.id] = "not quarantined"
        elif (why := cannot_succeed(req.operation, reach[c.id])) is not None:
            reasons[c.id] = why
    return reasons


@dataclass
class Plan:
    summary: PlanSummary
    params: dict[str, Any]
    zone_of: dict[str, int]


def _plan(s: Session, uow_factory: UnitOfWorkFactory, caller: Caller, req: RolloutRequest, store: Path,
          now: datetime) -> Plan:
    require_device_write(caller, Action.ROLLOUT)
    problems = req.options.problems()
    if not req.name.strip() or len(req.name) > 200:
        problems.append(Problem("must be 1 to 200 characters", field="name"))
    if problems:
        raise InvalidInput("the rollout's options are not valid", problems)
    params = _params(s, req, store, uow_factory)
    if req.operation is Operation.SET_CONFIG and req.target == Target():
        # No target given: the devices the desired configuration is for.
        desired = s.get(DesiredConfigRow, params["config"])
        assert desired is not None
        req = replace(req, target=Target(selector=selector_filter(desired.selector)))
    cands = _candidates(s, caller, req)
    if not cands:
        raise InvalidInput("no devices match the target", hint="check the filters with cityward devices list")
    http_ids = [c.id for c in cands if c.protocol == "http"]
    with_admin: set[str] = set()
    for i in range(0, len(http_ids), 900):
        with_admin.update(s.scalars(select(DeviceSecretRow.device_id).where(
            DeviceSecretRow.purpose == credentials.ADMIN, DeviceSecretRow.device_id.in_(http_ids[i:i + 900]))))
    reach = reachability(s, [c.id for c in cands], req.operation)
    reasons = _skips(s, req, params, cands, with_admin, reach)
    chosen = [c for c in cands if c.id not in reasons]
    skipped = [Skip(d, r) for d, r in sorted(reasons.items())]
    if not chosen:
        by_reason: dict[str, int] = defaultdict(int)
        for sk in skipped:
            by_reason[sk.reason] += 1
        raise InvalidInput(f"no device is left to roll out to: all {len(cands)} matching devices are skipped",
                           [Problem(f"{r}: {n:,} device{'s' if n != 1 else ''}") for r, n in sorted(by_reason.items())])
    windows = zone_windows(s)
    notes: dict[str, str] = {}
    for zone_id, zone in sorted({(c.zone_id, c.zone) for c in chosen}, key=lambda t: t[1]):
        window = windows.get(zone_id)
        if window is None:
            notes[zone] = "no window: any time"
            continue
        if bad := window_problems(window, now):
            raise InvalidInput(f"zone {zone}: its maintenance window never opens", bad)
        opening = next_opening(window, now)
        notes[zone] = (f"{window.cron} for {window.duration_minutes} min ({window.timezone}): "
                       + ("open now" if opening == now else f"opens {opening:%Y-%m-%d %H:%M} UTC"))
    critical = sorted({c.zone for c in chosen if c.criticality == Criticality.CRITICAL})
    recent = [c.id for c in chosen if is_recent(reach[c.id], now)]
    waves = plan_waves([c.id for c in chosen], {c.id: c.zone for c in chosen}, req.options, recent)
    summary = PlanSummary(waves=waves, skipped=skipped, windows=notes, needs_approval=bool(critical),
                          approval_zones=critical, estimated=estimate(waves, req.operation, req.options))
    return Plan(summary, params, {c.id: c.zone_id for c in chosen})


def plan(uow_factory: UnitOfWorkFactory, caller: Caller, req: RolloutRequest, store: Path,
         now: datetime | None = None) -> PlanSummary:
    """The dry run: nothing is stored, nothing is sent."""
    with uow_factory() as uow:
        return _plan(uow.session, uow_factory, caller, req, store, now or uow.clock()).summary


def create(uow_factory: UnitOfWorkFactory, caller: Caller, req: RolloutRequest, store: Path) -> tuple[int, PlanSummary]:
    """Store the plan: the rollout, its waves and one action per device (skipped ones too, with
    their reason). Planning happens again inside the write, so two rollouts created at once can
    never both claim a device."""
    with uow_factory(write=True) as uow:
        s = uow.session
        if uow.dialect == "postgresql":  # serialize creators (SQLite's writer lock already does)
            s.execute(text("SELECT pg_advisory_xact_lock(7470001)"))
        now = uow.clock()
        p = _plan(s, uow_factory, caller, req, store, now)
        control = Control.AWAITING_APPROVAL if p.summary.needs_approval else Control.READY
        row = RolloutRow(name=req.name.strip(), operation=req.operation.value, params=p.params,
                         target=req.target.describe(), options=_options_json(req.options), control=control.value,
                         org_id=caller.org_id, needs_approval=p.summary.needs_approval, created_by=caller.actor,
                         created_at=now, updated_at=now)
        s.add(row)
        s.flush()
        s.add_all(RolloutWaveRow(rollout_id=row.id, number=n, size=len(w)) for n, w in enumerate(p.summary.waves, 1))
        actions = [{"rollout_id": row.id, "device_id": d, "wave": n, "status": ActionStatus.PENDING.value,
                    "attempts": 0, "updated_at": now} for n, w in enumerate(p.summary.waves, 1) for d in w]
        actions += [{"rollout_id": row.id, "device_id": sk.device_id, "wave": 0, "status": ActionStatus.SKIPPED.value,
                     "attempts": 0, "detail": sk.reason[:500], "updated_at": now} for sk in p.summary.skipped]
        for i in range(0, len(actions), 5000):
            s.execute(insert(RolloutActionRow), actions[i:i + 5000])
        uow.record(caller, "rollout.created", "rollout", row.id, after={
            "name": row.name, "operation": row.operation, "params": p.params, "target": row.target,
            "devices": p.summary.devices, "skipped": len(p.summary.skipped), "waves": [len(w) for w in p.summary.waves],
            "needs_approval": p.summary.needs_approval, "options": row.options})
        rollout_id = row.id
        uow.commit()
    return rollout_id, p.summary


def _options_json(o: WaveOptions) -> dict[str, Any]:
    d = asdict(o)
    d["percentages"] = list(o.percentages)
    d["on_failure"] = o.on_failure.value
    return d


def options_of(row: RolloutRow) -> WaveOptions:
    d = dict(row.options)
    return WaveOptions(**{**d, "percentages": tuple(d["percentages"]), "on_failure": FailureAction(d["on_failure"])})


# --- control -------------------------------------------------------------------------------------


def _visible(s: Session, caller: Caller, rollout_id: int, *, lock: bool = False) -> RolloutRow:
    require_device_details(caller)
    q = select(RolloutRow).where(RolloutRow.id == rollout_id)
    if not caller.is_city:
        q = q.where(RolloutRow.org_id == caller.org_id)
    if lock:
        q = q.with_for_update()
    row = s.scalar(q)
    if row is None:
        raise NotFound(f"rollout {rollout_id} not found")
    return row


def _state(s: Session, row: RolloutRow) -> RolloutState:
    """The rollout's derived state, read inside the caller's transaction (its row locked)."""
    counts: dict[str, int] = {status: n for status, n in s.execute(
        select(RolloutActionRow.status, func.count()).where(RolloutActionRow.rollout_id == row.id)
        .group_by(RolloutActionRow.status))}
    waves_open = s.scalar(select(exists().where(RolloutWaveRow.rollout_id == row.id,
                                                RolloutWaveRow.finished_at.is_(None)))) or False
    return rollout_state(Control(row.control), counts, waves_open=bool(waves_open))


def _command(uow_factory: UnitOfWorkFactory, caller: Caller, rollout_id: int, command: RolloutCommand,
             reason: str | None = None) -> None:
    """Every operator command goes through the domain's state machine, with the rollout's row
    locked: a command the current state does not allow is refused (RolloutStateConflict) and
    changes nothing; an allowed one sets the control state and is audited in the same
    transaction."""
    require_device_write(caller, Action.APPROVE_ROLLOUT if command is RolloutCommand.APPROVE else Action.CONTROL)
    with uow_factory(write=True) as uow:
        s = uow.session
        row = _visible(s, caller, rollout_id, lock=True)
        if command is RolloutCommand.APPROVE and row.created_by == caller.actor:
            raise PermissionDenied(f"rollout {rollout_id} was created by you: another user must approve it")
        state = _state(s, row)
        to = transition(rollout_id, state, command)
        now = uow.clock()
        before = row.control
        row.control, row.updated_at = to.value, now
        after: dict[str, Any] = {"control": to.value}
        if command is RolloutCommand.APPROVE:
            row.approved_by, row.approved_at = caller.actor, now
            after["approved_by"] = caller.actor
        else:
            row.control_reason = reason
            after["reason"] = reason
        if to is Control.RUNNING and row.started_at is None:
            row.started_at = now
        if command is RolloutCommand.RESUME:
            # Resuming accepts the failures that paused the wave: it finishes and the next one starts.
            s.execute(update(RolloutWaveRow).where(
                RolloutWaveRow.rollout_id == rollout_id, RolloutWaveRow.verdict == "pause")
                .values(verdict="resumed"))
        if to is Control.ABORTED:
            s.execute(update(RolloutActionRow).where(
                RolloutActionRow.rollout_id == rollout_id, RolloutActionRow.status == ActionStatus.PENDING)
                .values(status=ActionStatus.CANCELLED.value, detail="rollout aborted", updated_at=now))
        uow.record(caller, f"rollout.{command.past}", "rollout", rollout_id,
                   before={"control": before, "state": state.value}, after=after)
        uow.commit()


def approve(uow_factory: UnitOfWorkFactory, caller: Caller, rollout_id: int) -> None:
    """Critical zones need a second pair of eyes: a city operator or admin who did not create it."""
    if not caller.is_city or caller.role is Role.VIEWER:
        raise PermissionDenied("only a city operator or administrator may approve a rollout")
    require(caller, Action.APPROVE_ROLLOUT)
    _command(uow_factory, caller, rollout_id, RolloutCommand.APPROVE)


def start(uow_factory: UnitOfWorkFactory, caller: Caller, rollout_id: int) -> None:
    _command(uow_factory, caller, rollout_id, RolloutCommand.START)


def pause(uow_factory: UnitOfWorkFactory, caller: Caller, rollout_id: int, reason: str | None = None) -> None:
    _command(uow_factory, caller, rollout_id, RolloutCommand.PAUSE, reason or "by operator")


def resume(uow_factory: UnitOfWorkFactory, caller: Caller, rollout_id: int) -> None:
    _command(uow_factory, caller, rollout_id, RolloutCommand.RESUME)


def abort(uow_factory: UnitOfWorkFactory, caller: Caller, rollout_id: int, reason: str | None = None) -> None:
    _command(uow_factory, caller, rollout_id, RolloutCommand.ABORT, reason or "by operator")


# --- status --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WaveView:
    number: int
    size: int
    counts: dict[str, int]
    started_at: datetime | None
    finished_at: datetime | None
    verdict: str | None


@dataclass(frozen=True)
class RolloutView:
    id: int
    name: str
    operation: str
    params: dict[str, Any]
    target: dict[str, Any]
    options: dict[str, Any]
    control: str
    control_reason: str | None
    status: str  # derived
    counts: dict[str, int]
    waves: list[WaveView]
    skipped: int
    needs_approval: bool
    created_by: str
    approved_by: str | None
    created_at: datetime
    started_at: datetime | None

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in (ActionStatus.SUCCEEDED, ActionStatus.FAILED,
                                                   ActionStatus.CANCELLED))

    @property
    def total(self) -> int:
        return sum(n for s, n in self.counts.items() if s != ActionStatus.SKIPPED)


def _view(s: Session, row: RolloutRow) -> RolloutView:
    per_wave: dict[int, dict[str, int]] = defaultdict(dict)
    for wave, status, n in s.execute(select(RolloutActionRow.wave, RolloutActionRow.status, func.count())
                                     .where(RolloutActionRow.rollout_id == row.id)
                                     .group_by(RolloutActionRow.wave, RolloutActionRow.status)):
        per_wave[wave][status] = n
    totals: dict[str, int] = defaultdict(int)
    for counts in per_wave.values():
        for st, n in counts.items():
            totals[st] += n
    waves = [WaveView(w.number, w.size, dict(per_wave.get(w.number, {})), w.started_at, w.finished_at, w.verdict)
             for w in s.scalars(select(RolloutWaveRow).where(RolloutWaveRow.rollout_id == row.id)
                                .order_by(RolloutWaveRow.number))]
    return RolloutView(row.id, row.name, row.operation, dict(row.params), dict(row.target), dict(row.options),
                       row.control, row.control_reason,
                       rollout_state(Control(row.control), totals,
                                     waves_open=any(w.finished_at is None for w in waves)).value, dict(totals),
                       waves, totals.get(ActionStatus.SKIPPED, 0), row.needs_approval, row.created_by,
                       row.approved_by, row.created_at, row.started_at)


def get(uow_factory: UnitOfWorkFactory, caller: Caller, rollout_id: int) -> RolloutView:
    with uow_factory() as uow:
        return _view(uow.session, _visible(uow.session, caller, rollout_id))


def list_rollouts(uow_factory: UnitOfWorkFactory, caller: Caller, limit: int = 50) -> list[RolloutView]:
    require_device_details(caller)
    with uow_factory() as uow:
        q = select(RolloutRow).order_by(RolloutRow.id.desc()).limit(limit)
        if not caller.is_city:
            q = q.where(RolloutRow.org_id == caller.org_id)
        return [_view(uow.session, r) for r in uow.session.scalars(q)]


@dataclass(frozen=True)
class ActionView:
    device_id: str
    wave: int
    status: str
    attempts: int
    detail: str | None


def actions(uow_factory: UnitOfWorkFactory, caller: Caller, rollout_id: int, *, status: str | None = None,
            limit: int = 200) -> list[ActionView]:
    with uow_factory() as uow:
        _visible(uow.session, caller, rollout_id)
        q = (select(RolloutActionRow).where(RolloutActionRow.rollout_id == rollout_id)
             .order_by(RolloutActionRow.wave, RolloutActionRow.device_id).limit(limit))
        if status:
            q = q.where(RolloutActionRow.status == status)
        return [ActionView(a.device_id, a.wave, a.status, a.attempts, a.detail) for a in uow.session.scalars(q)]



@dataclass(frozen=True)
class DeviceActionView:
    rollout_id: int
    rollout: str  # the rollout's name
    operation: str
    status: str
    attempts: int
    updated_at: datetime
    detail: str | None  # why it was skipped, or the device's error


def device_history(uow_factory: UnitOfWorkFactory, caller: Caller, device_id: str,
                   limit: int = 50) -> list[DeviceActionView]:
    """What rollouts did (or will do) to one device, newest first: every rollout for the city, a
    partner's own rollouts for a partner. One lookup by device (ix_rollout_actions_device_status)."""
    require_device_details(caller)
    with uow_factory() as uow:
        q = (select(RolloutActionRow.rollout_id, RolloutRow.name, RolloutRow.operation, RolloutActionRow.status,
                    RolloutActionRow.attempts, RolloutActionRow.updated_at, RolloutActionRow.detail)
             .join(RolloutRow, RolloutRow.id == RolloutActionRow.rollout_id)
             .where(RolloutActionRow.device_id == device_id)
             .order_by(RolloutActionRow.updated_at.desc(), RolloutActionRow.id.desc())
             .limit(min(max(limit, 1), 500)))
        if not caller.is_city:
            q = q.where(RolloutRow.org_id == caller.org_id)
        return [DeviceActionView(*r) for r in uow.session.execute(q)]
