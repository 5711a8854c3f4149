"""Reading and verifying the hash-chained audit log."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cityward.adapters.storage.models import AuditEventRow
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import require_city_admin
from cityward.domain.auditchain import AuditEvent, ChainReport, verify_chain
from cityward.domain.organizations import Caller


def _event(row: AuditEventRow) -> AuditEvent:
    return AuditEvent(row.seq, row.at, row.actor, row.org_id, row.action, row.target_type,
                      row.target_id, row.before, row.after, row.prev_hash, row.hash)


def verify_auditlog(uow_factory: UnitOfWorkFactory, caller: Caller) -> ChainReport:
    require_city_admin(caller, "verify the audit log")
    with uow_factory() as uow:
        return walk(uow.session)


def walk(session: Session) -> ChainReport:
    """The whole chain verified in sequence order, streamed (the log may hold millions of events)."""
    rows = session.scalars(select(AuditEventRow).order_by(AuditEventRow.seq).execution_options(yield_per=2000))

    def events() -> Iterator[AuditEvent]:
        for row in rows:
            yield _event(row)

    return verify_chain(events())


def list_events(
    uow_factory: UnitOfWorkFactory,
    caller: Caller,
    *,
    action: str | None = None,
    target: str | None = None,
    limit: int = 100,
    before_seq: int | None = None,
    action_prefix: str | None = None,
    actor: str | None = None,
    target_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AuditEvent]:
    """Newest first. The city sees every event; a partner sees the events of its own org.

    `action_prefix` matches every action starting so (e.g. "rollout."); `since` is inclusive and
    `until` exclusive. Give `target_type` with `target` where you can: the index is on the pair.
    """
    with uow_factory() as uow:
        q = select(AuditEventRow).order_by(AuditEventRow.seq.desc()).limit(min(max(limit, 1), 1000))
        if not caller.is_city:
            q = q.where(AuditEventRow.org_id == caller.org_id)
        if action:
            q = q.where(AuditEventRow.action == action)
        if action_prefix:
            q = q.where(AuditEventRow.action.startswith(action_prefix[:64], autoescape=True))
        if actor:
            q = q.where(AuditEventRow.actor == actor[:200])
        if target_type:
            q = q.where(AuditEventRow.target_type == target_type[:32])
        if target:
            q = q.where(AuditEventRow.target_id == target[:200])
        if since is not None:
            q = q.where(AuditEventRow.at >= since)
        if until is not None:
            q = q.where(AuditEventRow.at < until)
        if before_seq is not None:
            q = q.where(AuditEventRow.seq < before_seq)
        return [_event(r) for r in uow.session.scalars(q)]


def chain_contains(uow_factory: UnitOfWorkFactory, caller: Caller, event_hash: str) -> bool:
    """Whether an event with this hash (e.g. a head recorded elsewhere) is still in the log."""
    require_city_admin(caller, "verify the audit log")
    with uow_factory() as uow:
        return uow.session.scalar(
            select(AuditEventRow.seq).where(AuditEventRow.hash == event_hash.strip().lower())
        ) is not None


VERIFIED = "auditlog.verified"


@dataclass(frozen=True)
class Verification:
    """A verification of the whole chain as recorded in the chain itself: when, by whom, what it found."""

    seq: int
    at: datetime
    actor: str
    report: ChainReport
    anchor: dict[str, Any] | None = None  # the anchor check (services/auditanchors.py), when one was made


def verify_and_record(uow_factory: UnitOfWorkFactory, caller: Caller) -> ChainReport:
    """Verify the whole chain and append the result as an event, so that the slow walk (about half
    a minute per million events) is done on request and its last result read in one query."""
    report = verify_auditlog(uow_factory, caller)
    record_verification(uow_factory, caller, report)
    return report


def record_verification(uow_factory: UnitOfWorkFactory, caller: Caller, report: ChainReport,
                        anchor: dict[str, Any] | None = None) -> None:
    after: dict[str, Any] = {"ok": report.ok, "events": report.events, "head": report.head,
                             "first_broken": report.first_broken, "reason": report.reason}
    if anchor is not None:
        after["anchor"] = anchor
    with uow_factory(write=True) as uow:
        uow.record(caller, VERIFIED, "audit_log", "chain", after=after)
        uow.commit()


def last_verification(uow_factory: UnitOfWorkFactory, caller: Caller) -> Verification | None:
    """The latest recorded verification (None: never verified, or its record is unreadable)."""
    require_city_admin(caller, "verify the audit log")
    with uow_factory() as uow:
        row = uow.session.scalar(select(AuditEventRow).where(AuditEventRow.action == VERIFIED)
                                 .order_by(AuditEventRow.seq.desc()).limit(1))
        if row is None:
            return None
        report = _report(row.after)
        anchor = row.after.get("anchor") if report is not None else None
        return None if report is None else Verification(row.seq, row.at, row.actor, report,
                                                        anchor if isinstance(anchor, dict) else None)


def _report(after: Any) -> ChainReport | None:
    if not isinstance(after, dict):
        return None
    events, head, broken, reason = (after.get(k) for k in ("events", "head", "first_broken", "reason"))
    if (not isinstance(events, int) or not isinstance(head, str) or not isinstance(broken, int | None)
            or not isinstance(reason, str | None)):
        return None
    return ChainReport(events, head, broken, reason)
