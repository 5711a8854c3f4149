"""Reading and verifying the hash-chained audit log."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select

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
        rows = uow.session.scalars(
            select(AuditEventRow).order_by(AuditEventRow.seq).execution_options(yield_per=2000)
        )

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
) -> list[AuditEvent]:
    """Newest first. The city sees every event; a partner sees the events of its own org."""
    with uow_factory() as uow:
        q = select(AuditEventRow).order_by(AuditEventRow.seq.desc()).limit(min(max(limit, 1), 1000))
        if not caller.is_city:
            q = q.where(AuditEventRow.org_id == caller.org_id)
        if action:
            q = q.where(AuditEventRow.action == action)
        if target:
            q = q.where(AuditEventRow.target_id == target[:200])
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
