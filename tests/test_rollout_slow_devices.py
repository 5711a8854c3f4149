"""Slow devices get one command id per attempt of work: the simulator's `slow` profile (every
device answers and progresses six times slower than its product's upgrade) against attempt
timeouts of a few seconds, through a real Mosquitto.

A device that keeps reporting progress past its attempt timeout is asked again under the same
command id, applies the upgrade once and is recorded succeeded; one that falls silent for longer
than its declared upgrade duration is recorded failed without a retry under a new id, and its late
success corrects the record (`rollout.action_corrected`). The simulator's own counters give the
command ids each device answered and how often it applied each."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.domain.rollouts import Operation, WaveOptions
from cityward.services import auditlog, catalog, inventory, rollouts
from cityward.services.rollout_executor import Executor
from cityward.services.rollouts import RolloutRequest, Target
from cityward.sim.profile import DEFAULT_PROFILE
from tests.conftest import caller_for
from tests.rollout_city import LiveCity, live_city

pytestmark = pytest.mark.parametrize("platform", ["postgresql"], indirect=True)
VERSION = "88.0.1"


def _all_slow(tmp_path: Path) -> Path:
    """The default city with every device slow: at the tests' --time-scale 0.02 an upgrade takes
    60 * 0.02 * 6 = 7.2 s plus a 1 s reboot, reporting progress every 1.4 s or so."""
    data = yaml.safe_load(Path(DEFAULT_PROFILE).read_text())
    data["faults"] = {"offline": 0, "flaky": 0, "slow": 1.0, "upgrade_fails": 0, "upgrade_bricks": 0}
    data["timing"].update(upgrade_duration=60, reboot=8, command_delay=0.5, slow_factor=6)
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _go(live: LiveCity, req: RolloutRequest) -> int:
    rid, summary = rollouts.create(live.platform.uow, live.city, req, live.store)
    if summary.needs_approval:
        rollouts.approve(live.platform.uow, caller_for(live.platform, live.city.org_name), rid)
    rollouts.start(live.platform.uow, live.city, rid)
    return rid


def _products(live: LiveCity, protocol: str = "mqtt") -> list[tuple[tuple[str, str], list[str]]]:
    """Devices of one protocol by their true manufacturer's product, the largest groups first."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in live.rows:
        if r["protocol"] == protocol:
            v = inventory.get_device(live.platform.uow, live.city, r["id"])
            groups[(v.manufacturer, v.origin_model)].append(r["id"])
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def _counters(live: LiveCity, rid: int, devices: list[str]) -> dict[str, tuple[int, int]]:
    """Per device: (command ids of this rollout it answered, times it applied one)."""
    out = {}
    for d in devices:
        truth = live.sim.device(d)
        mine = [c for c in truth["commands"] if c.startswith(f"rollout-{rid}-")]
        out[d] = (len(mine), sum(n for c, n in truth["applied"].items() if c.startswith(f"rollout-{rid}-")))
    return out


def _run_until(executor: Executor, done: object, limit: float) -> None:
    """Run the executor until `done()` is true (it keeps listening for late results meanwhile)."""
    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(executor.run(stop))
        deadline = time.monotonic() + limit
        try:
            while not await asyncio.to_thread(done):  # type: ignore[arg-type]
                assert time.monotonic() < deadline, "the rollouts did not settle in time"
                assert not task.done(), task
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await task
    asyncio.run(main())


def test_slow_devices_get_one_command_id_and_late_results_correct_the_record(
        platform: Platform, city: Caller, tmp_path: Path) -> None:
    with live_city(platform, city, tmp_path, extra=("--profile", str(_all_slow(tmp_path)))) as live:
        (working_product, working), (lost_product, lost) = _products(live)[:2]
        camera_product, cameras = _products(live, "http")[0]  # Orvanta OR-CAM4 cameras, polled over HTTP
        assert camera_product not in (working_product, lost_product)
        working, lost, cameras = working[:4], lost[:3], cameras[:3]
        # The declared upgrade of the second product is far shorter than its slow devices take.
        catalog.save_product(platform.uow, city, {"brand": lost_product[0], "model": lost_product[1],
                                                  "upgrade_minutes": "0.01"})
        releases = {p: live.release(p[0], p[1], VERSION, f"image of {p}".encode() * 3000)
                    for p in (working_product, lost_product, camera_product)}
        # 1. A 3 s attempt timeout, two retries allowed: a device still reporting progress is
        #    asked again under the same id, never sent the upgrade again under a new one.
        rid_working = _go(live, RolloutRequest(
            "slow", Operation.UPGRADE_FIRMWARE, Target(device_ids=tuple(working)),
            WaveOptions(canary=0, percentages=(100,), concurrency=4, timeout_s=3, retries=2),
            release=releases[working_product].id))
        rid_cameras = _go(live, RolloutRequest(
            "cameras", Operation.UPGRADE_FIRMWARE, Target(device_ids=tuple(cameras)),
            WaveOptions(canary=0, percentages=(100,), concurrency=4, timeout_s=3, retries=2),
            release=releases[camera_product].id))
        # 2. Silent (1.4 s between progress reports) for longer than its declared 0.6 s upgrade:
        #    failed at its 2 s timeout, not retried under a new id, corrected by its late success.
        rid_lost = _go(live, RolloutRequest(
            "lost", Operation.UPGRADE_FIRMWARE, Target(device_ids=tuple(lost)),
            WaveOptions(canary=0, percentages=(100,), concurrency=3, timeout_s=2, retries=2,
                        failure_threshold=100, success_threshold=0),
            release=releases[lost_product].id))
        executor = live.executor()
        seen_failed: set[str] = set()
        decided_at: list[float] = []

        def settled() -> bool:
            """Every action succeeded, or all decided and 15 s given to late results."""
            statuses = {a.device_id: a.status for rid in (rid_working, rid_cameras, rid_lost)
                        for a in rollouts.actions(platform.uow, city, rid)}
            seen_failed.update(d for d in lost if statuses[d] == "failed")
            if all(s == "succeeded" for s in statuses.values()):
                return True
            if any(s in ("pending", "running") for s in statuses.values()):
                return False
            decided_at.append(time.monotonic())
            return decided_at[-1] - decided_at[0] > 15

        _run_until(executor, settled, limit=90)

        counters = {**_counters(live, rid_working, working), **_counters(live, rid_cameras, cameras),
                    **_counters(live, rid_lost, lost)}
        print("slow devices (command ids, applications):", counters)
        for d in working + cameras + lost:
            truth = live.sim.device(d)
            assert truth["fault"] == "slow" and truth["firmware_version"] == VERSION, truth
            assert counters[d] == (1, 1), f"{d}: (command ids, applications) = {counters[d]}"
        assert executor.followed >= len(working), "the slow devices were followed past their timeout"
        # The lost ones were recorded failed first, then corrected by their own late result.
        assert seen_failed == set(lost), seen_failed
        assert executor.corrected == len(lost)
        events = [e for e in auditlog.list_events(platform.uow, city, action="rollout.action_corrected")
                  if e.target_id in lost]
        assert len(events) == len(lost), events
        assert all(e.before["status"] == "failed" and e.after["status"] == "succeeded" for e in events)
        for rid, devices in ((rid_working, working), (rid_cameras, cameras), (rid_lost, lost)):
            view = rollouts.get(platform.uow, city, rid)
            assert view.counts.get("failed", 0) == 0 and view.counts["succeeded"] == len(devices), view
