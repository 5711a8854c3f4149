"""Executors' heartbeats: when none looked for work for 30 s, a running rollout is said to wait for one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import ExecutorHeartbeatRow
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.services import executors
from cityward.services.rollout_executor import Executor, ExecutorOptions


def test_no_heartbeat_within_30_seconds_means_waiting(platform: Platform, city: Caller) -> None:
    now = [datetime(2026, 12, 7, 9, 0, tzinfo=UTC)]
    uow = UnitOfWorkFactory(platform.engine, clock=lambda: now[0])
    assert executors.waiting(uow) == executors.ExecutorWait(None)  # never one
    executors.beat(uow, "host-a-1")
    assert executors.waiting(uow) is None
    now[0] += timedelta(seconds=30)
    assert executors.waiting(uow) is None
    now[0] += timedelta(seconds=1)
    assert executors.waiting(uow) == executors.ExecutorWait(datetime(2026, 12, 7, 9, 0, tzinfo=UTC))
    executors.beat(uow, "host-b-2")  # another machine's worker counts as much
    assert executors.waiting(uow) is None
    now[0] += timedelta(days=2)
    executors.beat(uow, "host-c-3")  # long-gone executors are forgotten
    with uow() as w:
        assert w.session.scalars(select(ExecutorHeartbeatRow.name)).all() == ["host-c-3"]


def test_an_executor_looking_for_work_leaves_a_heartbeat(platform: Platform, city: Caller, tmp_path: Path) -> None:
    key = platform.settings.secret_key_bytes()
    executor = Executor(platform.uow, SecretBox(key), key,
                        ExecutorOptions(mqtt_url=None, firmware_store=tmp_path, name="probe"))
    assert executors.waiting(platform.uow) is not None
    assert executor.claim_all() == ([], set())  # nothing to do, but it looked
    assert executors.waiting(platform.uow) is None
