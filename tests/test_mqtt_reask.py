"""A command whose result is lost (the device's link dropped as it answered) is asked again under
the same id and answered from the device's store, through a real Mosquitto with the ACL."""

from __future__ import annotations

import asyncio
import json
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from cityward.adapters.drivers.base import DriverError, Endpoint
from cityward.adapters.drivers.mqtt import RESULTS_ONLY, MqttDriver, MqttLink
from cityward.adapters.mosquitto import BrokerAccount
from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import DeviceCommandRow
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.domain.telemetry import Command
from cityward.services import zones
from cityward.services.connectivity import command_device
from tests.brokers import BrokerInfo, MqttProbe, private_mosquitto
from tests.helpers import csv_bytes, device, import_csv

PLATFORM_PW, DEVICE_PW = secrets.token_urlsafe(24), secrets.token_urlsafe(24)  # generated per run
DEVICE = "SL-00001"


class ForgetfulDevice:
    """Applies each command id once and answers repeats from its store, but its first answer to
    each command is lost (it never reaches the broker)."""

    def __init__(self, b: BrokerInfo) -> None:
        self.probe = MqttProbe(b, DEVICE, DEVICE_PW)
        self.received: list[str] = []
        self.applied: dict[str, dict[str, object]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ForgetfulDevice:
        assert not self.probe.connect().is_failure
        self.probe.subscribe(f"cityward/v1/{DEVICE}/cmd")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.probe.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.probe.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            command = json.loads(msg.payload)
            command_id = command["command_id"]
            self.received.append(command_id)
            if command_id not in self.applied:
                self.applied[command_id] = {"v": 1, "device_id": DEVICE, "command_id": command_id,
                                            "status": "succeeded", "at": _now(), "repeat": False}
                continue  # the answer is lost
            self.probe.publish(f"cityward/v1/{DEVICE}/result",
                               json.dumps({**self.applied[command_id], "repeat": True}).encode())


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _command(command_id: str, timeout: float) -> Command:
    now = datetime.now(UTC)
    return Command(command_id=command_id, action="reboot", issued_at=now, expires_at=now + timedelta(seconds=timeout))


async def _send(b: BrokerInfo, command: Command, *, timeout: float,
                reask_after: float | None) -> tuple[str, float, int]:
    async with MqttLink(f"mqtt://cityward-platform:{PLATFORM_PW}@{b.host}:{b.port}",
                        client_id="cityward-reask-test", subscriptions=RESULTS_ONLY) as link:
        driver = MqttDriver(link)
        pump = asyncio.create_task(link.run())
        try:
            t0 = time.monotonic()
            statuses = [r.status async for r in driver.send(Endpoint(DEVICE), command, timeout=timeout,
                                                            reask_after=reask_after)]
            return statuses[-1], time.monotonic() - t0, driver.reasked
        finally:
            pump.cancel()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerInfo]:
    with private_mosquitto(tmp_path, [BrokerAccount("cityward-platform", PLATFORM_PW, "platform"),
                                      BrokerAccount(DEVICE, DEVICE_PW, "device")]) as b:
        yield b


def test_a_lost_result_is_asked_for_again_and_applied_once(broker: BrokerInfo) -> None:
    with ForgetfulDevice(broker) as device:
        status, took, reasked = asyncio.run(_send(broker, _command("c-1", 20), timeout=20, reask_after=0.5))
    assert status == "succeeded" and reasked == 1
    assert took < 5, f"the re-ask should answer in about a second, took {took:.1f} s"
    assert device.received == ["c-1", "c-1"] and list(device.applied) == ["c-1"]


def test_without_reask_a_lost_result_is_a_timeout(broker: BrokerInfo) -> None:
    with ForgetfulDevice(broker) as device, pytest.raises(DriverError, match="did not finish"):
        asyncio.run(_send(broker, _command("c-2", 1.5), timeout=1.5, reask_after=None))
    assert device.received == ["c-2"]


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_a_lone_command_asks_a_silent_device_again(broker: BrokerInfo, platform: Platform, city: Caller) -> None:
    """`cityward devices command` (not only a rollout): the lost result is asked for under the same
    id and recorded as the device's success, not as a timeout."""
    zones.create_zone(platform.uow, city, "downtown", "high")
    import_csv(platform, city, csv_bytes([device(1, protocol="mqtt")], header=[
        "id", "kind", "brand", "model", "firmware_version", "zone", "serial", "mac", "protocol"]),
        create_missing=True)
    box = SecretBox(platform.settings.secret_key_bytes())
    url = f"mqtt://cityward-platform:{PLATFORM_PW}@{broker.host}:{broker.port}"
    with ForgetfulDevice(broker) as dev:
        result = asyncio.run(command_device(platform.uow, box, url, city, DEVICE, "reboot", {}, timeout=15))
    assert result.status == "succeeded" and len(dev.received) == 2 and len(dev.applied) == 1
    with platform.uow() as uow:
        assert uow.session.scalars(select(DeviceCommandRow.status)).one() == "succeeded"
