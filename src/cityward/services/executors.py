"""Rollout executors' signs of life: each one writes when it last looked for work, in the database
every executor shares (`cityward serve`'s own, `cityward rollout run`, `cityward worker` on any
host), so a page can say when a started rollout waits for an executor that nobody runs.

Heartbeats are not audited: they change nothing anyone decided, and would flood the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update

from cityward.adapters.storage.models import ExecutorHeartbeatRow
from cityward.adapters.storage.uow import UnitOfWorkFactory

SILENT_AFTER = timedelta(seconds=30)  # no executor looked for work this long: say so
FORGET_AFTER = timedelta(days=1)  # heartbeats of executors long gone are dropped
RUN_HINT = ("run `cityward rollout run` on the server, or `cityward serve` without --no-executor "
            "(with PostgreSQL, `cityward worker` on any host)")


def beat(uow_factory: UnitOfWorkFactory, name: str) -> None:
    """`name` looked for work now."""
    with uow_factory(write=True) as uow:
        now = uow.clock()
        s = uow.session
        if not s.execute(update(ExecutorHeartbeatRow).where(ExecutorHeartbeatRow.name == name)
                         .values(seen_at=now)).rowcount:  # type: ignore[attr-defined]
            s.add(ExecutorHeartbeatRow(name=name[:100], seen_at=now))
            s.execute(delete(ExecutorHeartbeatRow).where(ExecutorHeartbeatRow.seen_at < now - FORGET_AFTER))
        uow.commit()


@dataclass(frozen=True)
class ExecutorWait:
    """Why a running rollout may be standing still: no executor looked for work lately."""

    last_seen: datetime | None  # the latest heartbeat of any executor; None: never one
    hint: str = RUN_HINT


def waiting(uow_factory: UnitOfWorkFactory) -> ExecutorWait | None:
    """None while some executor looked for work within SILENT_AFTER."""
    with uow_factory() as uow:
        latest = uow.session.scalar(select(func.max(ExecutorHeartbeatRow.seen_at)))
        now = uow.clock()
    if latest is not None and latest.tzinfo is None:  # SQLite hands back naive UTC
        latest = latest.replace(tzinfo=now.tzinfo)
    if latest is not None and now - latest <= SILENT_AFTER:
        return None
    return ExecutorWait(latest)
