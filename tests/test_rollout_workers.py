"""Scale-out: two `cityward worker` processes share a rollout through procrastinate on the real
PostgreSQL; one is killed with SIGKILL mid-rollout and the other finishes its work, with no device
acting twice (the simulator's counters) and none forgotten."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from cityward.adapters.storage.models import RolloutActionRow
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.domain.rollouts import Operation, WaveOptions
from cityward.services import rollouts
from cityward.services.rollouts import RolloutRequest, Target
from tests.conftest import caller_for
from tests.rollout_city import live_city
from tests.rollout_support import stop_workers

pytestmark = pytest.mark.parametrize("platform", ["postgresql"], indirect=True)


def _claimers(platform: Platform, rid: int) -> set[str]:
    with platform.uow() as uow:
        return {c for c in uow.session.scalars(select(RolloutActionRow.claimed_by).where(
            RolloutActionRow.rollout_id == rid)) if c}


def _wait(what: str, cond: object, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def test_two_workers_one_killed(platform: Platform, city: Caller, tmp_path: Path) -> None:
    with live_city(platform, city, tmp_path, devices=60) as live:
        targets = tuple(r["id"] for r in live.rows if r["protocol"] == "mqtt"
                        and live.sim.device(r["id"])["fault"] in ("none", None, "slow"))
        req = RolloutRequest("reboot", Operation.REBOOT, Target(device_ids=targets),
                             WaveOptions(canary=2, percentages=(50, 100), concurrency=3, timeout_s=3, retries=2,
                                         failure_threshold=100, success_threshold=0))
        rid, summary = rollouts.create(platform.uow, city, req, live.store)
        if summary.needs_approval:
            rollouts.approve(platform.uow, caller_for(platform, city.org_name), rid)
        env = {**os.environ, "CITYWARD_DATABASE_URL": platform.settings.database_url,
               "CITYWARD_SECRET_KEY_FILE": str(platform.settings.secret_key_file),
               "CITYWARD_MQTT_URL": live.mqtt_url, "CITYWARD_FIRMWARE_DIR": str(live.store)}
        logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("w1", "w2")}
        workers = {name: subprocess.Popen(
            [sys.executable, "-m", "cityward.entrypoints.cli.main", "worker", "--name", name, "--lease-grace", "1",
             "--concurrency", "10"], env=env, stdout=logs[name], stderr=subprocess.STDOUT, text=True)
            for name in ("w1", "w2")}
        try:
            rollouts.start(platform.uow, city, rid)
            # Kill w1 once it holds claims of its own (on a busy machine either worker may start first).
            _wait("w1 at work", lambda: "w1" in _claimers(platform, rid), 90)
            at_kill = rollouts.get(platform.uow, city, rid).done
            claimed_by_w1 = "w1" in _claimers(platform, rid)
            workers["w1"].send_signal(signal.SIGKILL)
            workers["w1"].wait(10)
            assert at_kill < len(targets), "the rollout finished before the kill: nothing was tested"
            _wait("the rollout to finish", lambda: rollouts.get(platform.uow, city, rid).status
                  in ("succeeded", "finished with failures"), 120)
        finally:
            stop_workers(workers, logs)
        assert workers["w2"].returncode == 0, (tmp_path / "w2.log").read_text()[-3000:]
        assert claimed_by_w1 and "w2" in _claimers(platform, rid), "both workers must have claimed work"
        view = rollouts.get(platform.uow, city, rid)
        assert view.status == "succeeded" and view.counts == {"succeeded": len(targets)}, view
        for device_id in targets:
            applied = live.sim.device(device_id)["applied"]
            assert sum(applied.values()) == 1, f"{device_id}: {applied}"
