"""The broker dies (`kill -9`) in the middle of a rollout and is back on the same port 2 s later
(`persistence false`: every session, subscription and queued command lost). The platform's links
reconnect by themselves and ask again, under the same command ids, for what was in flight: every
healthy device succeeds, none applies anything twice (the simulator's own counters), and no
action is failed for the platform's own lost connection. The same for `cityward worker`
processes, and for the connector: ingestion goes on, and a command it follows is answered.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from cityward.adapters.drivers.base import DriverError
from cityward.adapters.drivers.mqtt import RESULTS_ONLY, Backoff, MqttLink
from cityward.adapters.mosquitto import BrokerAccount
from cityward.adapters.storage.models import DeviceStateRow, RolloutActionRow
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.domain.rollouts import Operation, WaveOptions
from cityward.services import commands, rollouts
from cityward.services.connectivity import ConnectOptions, Connector
from cityward.services.rollouts import RolloutRequest, Target
from tests.brokers import BrokerOutage, private_mosquitto
from tests.conftest import caller_for
from tests.rollout_city import LiveCity, live_city
from tests.rollout_support import stop_workers

HEALTHY = ("none", None, "slow", "flaky")
DOWN_S = 2.0  # the broker's outage, as in the issue (2.2 s measured there)
# Reboots take about a second at this scale: the rollout is still going when the broker dies.
SCALE = ("--time-scale", "0.1")


def _targets(live: LiveCity) -> tuple[str, ...]:
    return tuple(r["id"] for r in live.rows if r["protocol"] == "mqtt" and live.sim.device(r["id"])["fault"] in HEALTHY)


def _reboot(live: LiveCity, targets: tuple[str, ...], concurrency: int) -> int:
    """A reboot of every target in one wave. No retries: any failure is final, and a retry under a
    new id would make a device act twice; the timeout leaves room for the devices' own reconnects."""
    req = RolloutRequest("reboot", Operation.REBOOT, Target(device_ids=targets),
                         WaveOptions(canary=1, percentages=(100,), concurrency=concurrency, timeout_s=20, retries=0,
                                     failure_threshold=100, success_threshold=0))
    rid, summary = rollouts.create(live.platform.uow, live.city, req, live.store)
    if summary.needs_approval:
        rollouts.approve(live.platform.uow, caller_for(live.platform, live.city.org_name), rid)
    return rid


def _done(live: LiveCity, rid: int) -> int:
    return rollouts.get(live.platform.uow, live.city, rid).done


def _check(live: LiveCity, rid: int, targets: tuple[str, ...]) -> None:
    view = rollouts.get(live.platform.uow, live.city, rid)
    details = {a.device_id: a.detail for a in rollouts.actions(live.platform.uow, live.city, rid)
               if a.status != "succeeded"}
    assert view.status == "succeeded" and view.counts == {"succeeded": len(targets)}, (view.counts, details)
    with live.platform.uow() as uow:
        attempts = set(uow.session.scalars(select(RolloutActionRow.attempts).where(RolloutActionRow.rollout_id == rid)))
    assert attempts == {1}, "one command id per device: nothing was retried under a new id"
    twice = {d: a for d in targets if sum((a := live.sim.device(d)["applied"]).values()) != 1}
    assert not twice, f"devices that did not reboot exactly once: {twice}"


def _states(platform: Platform, ids: tuple[str, ...]) -> dict[str, tuple[str | None, int | None]]:
    """(boot id, seq) of each device's last ingested state."""
    with platform.uow() as uow:
        rows = uow.session.execute(select(DeviceStateRow.device_id, DeviceStateRow.boot_id, DeviceStateRow.seq)
                                   .where(DeviceStateRow.device_id.in_(ids))).all()
    return {d: (b, s) for d, b, s in rows}


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_the_executor_and_the_connector_ride_out_a_broker_restart(platform: Platform, city: Caller,
                                                                  tmp_path: Path) -> None:
    """The one-machine executor carries the rollout through the restart; beside it the connector
    ingests every device's state again after the restart, and a command it was following when
    the broker died (to a device outside the rollout) is answered and applied once."""
    with live_city(platform, city, tmp_path, devices=120, extra=SCALE) as live, \
            BrokerOutage(live.broker) as outage:  # type: ignore[arg-type]
        healthy = _targets(live)
        lone, targets = healthy[0], healthy[1:]  # `lone` gets the connector's command, not the rollout's
        assert len(targets) >= 80
        rid = _reboot(live, targets, concurrency=25)
        executor = live.executor()
        connector = Connector(platform.uow, live.box, ConnectOptions(mqtt_url=live.mqtt_url, sweep_interval=3600,
                                                                     poll_interval=3600))
        at_kill: list[int] = []

        async def strike() -> tuple[str, list[str]]:
            assert connector.mqtt is not None
            while (done := await asyncio.to_thread(_done, live, rid)) < len(targets) // 4:
                await asyncio.sleep(0.1)
            at_kill.append(done)
            # A reboot takes the device about a second at this scale: the broker dies meanwhile.
            command = asyncio.create_task(commands.execute(platform.uow, city, connector.mqtt, lone, "reboot", {},
                                                           timeout=30))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(outage.strike, DOWN_S)
            restarted = await asyncio.to_thread(_states, platform, healthy)
            result = await asyncio.wait_for(command, 60)
            # The devices publish their state every 2 s: every one is ingested again.
            stale, deadline = list(healthy), time.monotonic() + 60
            while stale and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
                now = await asyncio.to_thread(_states, platform, healthy)
                stale = [d for d in healthy if now.get(d) == restarted.get(d)]
            return result.status, stale

        async def main() -> tuple[str, list[str]]:
            stop = asyncio.Event()
            connecting = asyncio.create_task(connector.run(stop))
            try:
                await asyncio.wait_for(connector.connected.wait(), 10)
                deadline = time.monotonic() + 30
                while (len(await asyncio.to_thread(_states, platform, healthy)) < len(healthy)
                       and time.monotonic() < deadline):
                    await asyncio.sleep(0.2)
                await asyncio.to_thread(rollouts.start, live.platform.uow, live.city, rid)
                striking = asyncio.create_task(strike())
                await asyncio.wait_for(executor.run(asyncio.Event(), until_done={rid}), 120)
                return await striking
            finally:
                stop.set()
                await connecting

        status, stale = asyncio.run(main())
        assert at_kill and at_kill[0] < len(targets) - 25, "the rollout was nearly done at the kill: nothing tested"
        assert executor.reconnects == 1 and executor.left_claimed == 0
        _check(live, rid, targets)
        # The connector: its own link reconnected once, its command was answered, ingestion goes on.
        assert status == "succeeded" and connector.stats()["mqtt_reconnects"] == 1
        applied = live.sim.device(lone)["applied"]
        assert sum(applied.values()) == 1, applied
        assert not stale, f"no state ingested after the restart from {stale}"


@pytest.mark.parametrize("platform", ["postgresql"], indirect=True)
def test_workers_ride_out_a_broker_restart(platform: Platform, city: Caller, tmp_path: Path) -> None:
    with live_city(platform, city, tmp_path, devices=100, extra=SCALE) as live, \
            BrokerOutage(live.broker) as outage:  # type: ignore[arg-type]
        targets = _targets(live)
        rid = _reboot(live, targets, concurrency=20)
        env = {**os.environ, "CITYWARD_DATABASE_URL": platform.settings.database_url,
               "CITYWARD_SECRET_KEY_FILE": str(platform.settings.secret_key_file),
               "CITYWARD_MQTT_URL": live.mqtt_url, "CITYWARD_FIRMWARE_DIR": str(live.store)}
        logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("w1", "w2")}
        workers = {name: subprocess.Popen(
            [sys.executable, "-m", "cityward.entrypoints.cli.main", "worker", "--name", name, "--concurrency", "15"],
            env=env, stdout=logs[name], stderr=subprocess.STDOUT, text=True) for name in ("w1", "w2")}
        try:
            rollouts.start(platform.uow, city, rid)
            deadline = time.monotonic() + 90
            while _done(live, rid) < len(targets) // 4 and time.monotonic() < deadline:
                time.sleep(0.1)
            at_kill = _done(live, rid)
            outage.strike(DOWN_S)
            while (rollouts.get(platform.uow, city, rid).status not in ("succeeded", "finished with failures")
                   and time.monotonic() < deadline + 60):
                time.sleep(0.3)
        finally:
            stop_workers(workers, logs)
        assert at_kill < len(targets) - 20, "the rollout was nearly done at the kill: nothing tested"
        _check(live, rid, targets)
        log_text = "\n".join((tmp_path / f"{n}.log").read_text() for n in workers)
        assert log_text.count("reconnected to") == 2, log_text[-3000:]  # each worker's link, once


def test_publishing_waits_for_the_link_within_its_bound(tmp_path: Path) -> None:
    """While the broker is down a publish waits for the link instead of failing; one that cannot
    wait long enough says it was the platform's link (reason `link`), never the device."""
    password = "p" * 24
    with private_mosquitto(tmp_path, [BrokerAccount("cityward-platform", password, "platform")]) as b, \
            BrokerOutage(b) as outage:
        async def scenario() -> tuple[float, str, int]:
            async with MqttLink(f"mqtt://cityward-platform:{password}@{b.host}:{b.port}", client_id="cw-link-test",
                                subscriptions=RESULTS_ONLY, backoff=Backoff(first=0.2, cap=1.0)) as link:
                pump = asyncio.create_task(link.run())
                try:
                    restart = asyncio.create_task(asyncio.to_thread(outage.strike, 1.5))
                    while link.connected:
                        await asyncio.sleep(0.01)
                    t0 = time.monotonic()
                    await link.publish("cityward/v1/X/cmd", b"{}", wait=15)  # waits for the restart
                    waited = time.monotonic() - t0
                    await restart
                    os.kill(outage.pid, signal.SIGKILL)  # down for good now
                    while link.connected:
                        await asyncio.sleep(0.01)
                    try:
                        await link.publish("cityward/v1/X/cmd", b"{}", wait=0.5)
                        reason = "published"
                    except DriverError as exc:
                        reason = exc.reason
                    return waited, reason, link.reconnects
                finally:
                    pump.cancel()

        waited, reason, reconnects = asyncio.run(scenario())
    assert 0.5 < waited < 10 and reconnects == 1
    assert reason == "link"


@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=0.01, max_value=5),
       st.floats(min_value=1, max_value=120), st.integers())
def test_backoff_is_capped_exponential_and_jittered(attempt: int, first: float, cap: float, seed: int) -> None:
    backoff, rng = Backoff(first=first, cap=cap), random.Random(seed)
    step = min(cap, first * 2.0 ** min(attempt, 32))
    delay = backoff.delay(attempt, rng)
    assert step / 2 <= delay <= step <= cap
    assert backoff.delay(attempt + 1, rng) >= step / 2  # the next step is never shorter
