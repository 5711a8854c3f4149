"""Crash safety: `cityward rollout run` is killed with SIGKILL again and again in the middle of a
rollout on the simulated city, then restarted. The rollout still finishes, no device is forgotten,
and the simulator's own counters show that no device applied the operation twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.domain.rollouts import Operation, WaveOptions
from cityward.services import rollouts
from cityward.services.rollouts import RolloutRequest, Target
from tests.conftest import caller_for
from tests.rollout_city import live_city

pytestmark = pytest.mark.parametrize("platform", ["postgresql"], indirect=True)
KILLS = 6


def test_executor_killed_repeatedly_applies_nothing_twice(platform: Platform, city: Caller, tmp_path: Path) -> None:
    with live_city(platform, city, tmp_path, devices=60) as live:
        targets = tuple(r["id"] for r in live.rows if r["protocol"] == "mqtt"
                        and live.sim.device(r["id"])["fault"] in ("none", None, "slow"))
        req = RolloutRequest("reboot all", Operation.REBOOT, Target(device_ids=targets),
                             WaveOptions(canary=2, percentages=(30, 60, 100), concurrency=3, timeout_s=3, retries=2,
                                         failure_threshold=100, success_threshold=0))
        rid, summary = rollouts.create(platform.uow, city, req, live.store)
        if summary.needs_approval:
            rollouts.approve(platform.uow, caller_for(platform, city.org_name), rid)
        rollouts.start(platform.uow, city, rid)
        env = {**os.environ, "CITYWARD_DATABASE_URL": platform.settings.database_url,
               "CITYWARD_SECRET_KEY_FILE": str(platform.settings.secret_key_file),
               "CITYWARD_MQTT_URL": live.mqtt_url, "CITYWARD_FIRMWARE_DIR": str(live.store)}
        cmd = [sys.executable, "-m", "cityward.entrypoints.cli.main", "rollout", "run", str(rid), "--lease-grace", "1"]
        rng = random.Random(5)
        kills = 0
        progress: list[int] = []  # devices done when each kill struck
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if kills < KILLS:
                # Kill mid-work: once this executor has finished something (start-up takes a
                # moment, longer on a busy machine), at a random instant soon after.
                before = rollouts.get(platform.uow, city, rid).done
                started = time.monotonic()
                while (rollouts.get(platform.uow, city, rid).done == before and proc.poll() is None
                       and time.monotonic() - started < 60):
                    time.sleep(0.1)
                time.sleep(rng.uniform(0.0, 0.8))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                    progress.append(rollouts.get(platform.uow, city, rid).done)
                proc.wait(10)
                continue
            _out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, err[-3000:]
            break
        assert kills == KILLS
        mid = [n for n in progress if 0 < n < len(targets)]
        assert len(mid) >= 3 and mid == sorted(mid), f"kills must strike mid-rollout: {progress}"
        view = rollouts.get(platform.uow, city, rid)
        assert view.status == "succeeded" and view.counts == {"succeeded": len(targets)}, view
        for device_id in targets:  # every device rebooted exactly once, whatever the kills did
            applied = live.sim.device(device_id)["applied"]
            assert sum(applied.values()) == 1, f"{device_id}: {applied}"
