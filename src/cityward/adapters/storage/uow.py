"""Unit of work: one transaction, its ORM session, and the audit events written inside it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from cityward.adapters.storage.models import AuditEventRow
from cityward.domain.auditchain import GENESIS, event_hash
from cityward.domain.organizations import Caller
from cityward.errors import Conflict, InvalidInput, StorageUnavailable

# Any constant works: it only has to be the same for every cityward process on one database.
_AUDIT_LOCK_KEY = 0x63697479  # "city"

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UnitOfWork:
    """`with uow_factory(write=True) as uow: ...; uow.commit()`; leaving without commit rolls back."""

    def __init__(self, engine: Engine, *, write: bool, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.write = write
        self.clock = clock
        self._committed = False

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def __enter__(self) -> UnitOfWork:
        try:
            conn = self.engine.connect()
        except OperationalError as exc:
            raise StorageUnavailable(
                f"cannot reach the database: {exc.orig}",
                hint="check CITYWARD_DATABASE_URL and that the server is running",
            ) from exc
        self.conn: Connection = conn.execution_options(cityward_write=self.write)
        self._tx = self.conn.begin()
        self.session = Session(bind=self.conn, join_transaction_mode="rollback_only")
        self._head: tuple[int, str] | None = None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._committed and self._tx.is_active:
                self._tx.rollback()
        finally:
            self.session.close()
            self.conn.close()
        # Backstop for values the services did not bound (PostgreSQL is stricter than SQLite).
        if isinstance(exc, DataError):
            raise InvalidInput("a value is not acceptable to the database (too long, out of range, "
                               "or containing NUL)") from exc
        if isinstance(exc, IntegrityError):
            raise Conflict("the change conflicts with stored data") from exc

    def commit(self) -> None:
        try:
            self.session.flush()
            self._tx.commit()
        except IntegrityError as exc:
            self._tx.rollback()
            # The constraint's name and key values stay in the server log, not in the answer.
            raise Conflict("the change conflicts with stored data (a name or key already in use)") from exc
        self._committed = True

    def record(
        self,
        caller: Caller,
        action: str,
        target_type: str,
        target_id: str | int,
        before: Any = None,
        after: Any = None,
    ) -> None:
        """Append a hash-chained audit event inside this transaction."""
        assert self.write, "audit events are written only by a writing unit of work"
        seq, prev = self._chain_head()
        at = self.clock()
        seq += 1
        digest = event_hash(
            prev, seq, at, caller.actor, caller.org_id, action, target_type, str(target_id),
            before, after,
        )
        self.session.add(
            AuditEventRow(
                seq=seq, at=at, actor=caller.actor, org_id=caller.org_id, action=action,
                target_type=target_type, target_id=str(target_id), before=before, after=after,
                prev_hash=prev, hash=digest,
            )
        )
        self._head = (seq, digest)

    def _chain_head(self) -> tuple[int, str]:
        if self._head is None:
            if self.dialect == "postgresql":
                # Serialize appenders across processes; released at commit or rollback.
                self.conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _AUDIT_LOCK_KEY})
            last = self.session.execute(
                select(AuditEventRow.seq, AuditEventRow.hash).order_by(AuditEventRow.seq.desc()).limit(1)
            ).first()
            self._head = (last[0], last[1]) if last else (0, GENESIS)
        return self._head


class UnitOfWorkFactory:
    def __init__(self, engine: Engine, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock

    def __call__(self, *, write: bool = False) -> UnitOfWork:
        return UnitOfWork(self.engine, write=write, clock=self.clock)
