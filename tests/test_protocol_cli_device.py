"""A device written from docs/protocol.md alone: played here by the mosquitto_pub/mosquitto_sub
command-line clients, against the platform's provisioning, private Mosquitto, ingestion and
command path. If this passes, another program can be a cityward device.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cityward.adapters.drivers.base import Endpoint
from cityward.adapters.mosquitto import BrokerAccount
from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import DeviceCommandRow, DeviceStateRow
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.services import broker, commands, zones
from cityward.services.connectivity import ConnectOptions, Connector
from tests.brokers import BrokerInfo, private_mosquitto
from tests.helpers import csv_bytes, device, eventually, import_csv

pytestmark = pytest.mark.parametrize("platform", ["sqlite"], indirect=True)

DEVICE = "SL-00001"
OTHER = "SL-00002"


def _clients() -> tuple[str, str]:
    pub, sub = shutil.which("mosquitto_pub"), shutil.which("mosquitto_sub")
    if not pub or not sub:
        pytest.fail("mosquitto_pub/mosquitto_sub are required: apt-get install mosquitto-clients (.ci/run does)",
                    pytrace=False)
    return pub, sub


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CliDevice:
    """The device side, speaking only through mosquitto_pub / mosquitto_sub processes."""

    def __init__(self, b: BrokerInfo, device_id: str, password: str) -> None:
        self.pub, self.sub = _clients()
        self.b, self.id, self.password = b, device_id, password
        self.applied: dict[str, dict[str, Any]] = {}  # command id → stored terminal result
        self.applied_count = 0

    def _auth(self, client_id: str) -> list[str]:
        return ["-h", self.b.host, "-p", str(self.b.port), "-u", self.id, "-P", self.password, "-i", client_id,
                "-q", "1", "-V", "mqttv311"]

    async def publish(self, channel: str, body: dict[str, Any], *, retain: bool = False,
                      as_device: str | None = None) -> None:
        topic = f"cityward/v1/{as_device or self.id}/{channel}"
        args = [*self._auth(f"{self.id}-pub"), "-t", topic, "-m", json.dumps(body)] + (["-r"] if retain else [])
        proc = await asyncio.create_subprocess_exec(self.pub, *args, stderr=asyncio.subprocess.PIPE)
        _out, err = await proc.communicate()
        assert proc.returncode == 0, f"mosquitto_pub {topic}: {err.decode()}"

    async def listen(self) -> asyncio.subprocess.Process:
        """mosquitto_sub on the device's cmd topic, holding the last will (status offline)."""
        will = json.dumps({"v": 1, "status": "offline", "at": now()})
        proc = await asyncio.create_subprocess_exec(
            self.sub, *self._auth(self.id), "-c", "-t", f"cityward/v1/{self.id}/cmd", "--will-topic",
            f"cityward/v1/{self.id}/status", "--will-payload", will, "--will-qos", "1", "--will-retain",
            "-k", "5", stdout=asyncio.subprocess.PIPE)
        await asyncio.sleep(0.3)
        return proc

    def state(self, seq: int, firmware: str = "1.2.3") -> dict[str, Any]:
        return {"v": 1, "device_id": self.id, "seq": seq, "boot_id": "boot-1", "at": now(),
                "firmware_version": firmware, "uptime_s": 30, "services": ["mqtt", "telnet"],
                "remote_access": [], "credential": {"state": "default", "changed_at": None},
                "certificates": [], "config_hash": None, "quarantined": False,
                "applied_commands": self.applied_count}

    async def answer(self, command: dict[str, Any]) -> None:
        """Protocol §1: apply a command id at most once; a repeat gets the stored result."""
        cid = command["command_id"]
        if cid in self.applied:
            await self.publish("result", {**self.applied[cid], "repeat": True, "at": now()})
            return
        await self.publish("result", {"v": 1, "device_id": self.id, "command_id": cid, "status": "accepted",
                                      "at": now()})
        self.applied_count += 1
        done = {"v": 1, "device_id": self.id, "command_id": cid, "status": "succeeded", "progress": 100,
                "detail": "rebooted", "at": now(), "repeat": False}
        self.applied[cid] = done
        await self.publish("result", done)


def _state(platform: Platform, device_id: str) -> DeviceStateRow | None:
    with platform.uow() as uow:
        row = uow.session.get(DeviceStateRow, device_id)
        if row is not None:
            uow.session.expunge(row)
        return row


async def _scenario(platform: Platform, city: Caller, b: BrokerInfo, bundle: dict[str, Any], box: SecretBox) -> None:
    dev = CliDevice(b, DEVICE, bundle["devices"][DEVICE]["password"])
    connector = Connector(platform.uow, box, ConnectOptions(mqtt_url=b.url, sweep_interval=3600, poll_interval=3600))
    stop = asyncio.Event()
    running = asyncio.create_task(connector.run(stop))
    await asyncio.wait_for(connector.connected.wait(), 10)
    try:
        listener = await dev.listen()
        await dev.publish("status", {"v": 1, "status": "online", "at": now()}, retain=True)
        await dev.publish("hello", {"v": 1, "device_id": DEVICE, "kind": "streetlight", "brand": "Lumo",
                                    "model": "L100", "firmware_version": "1.2.3", "protocols": ["mqtt"],
                                    "actions": ["reboot"], "at": now()})
        await dev.publish("state", dev.state(1), retain=True)
        await eventually(lambda: (s := _state(platform, DEVICE)) is not None and s.online and s.seq == 1,
                         "state stored")

        # The ACL: publishing for another device is dropped by the broker; the platform sees nothing.
        await dev.publish("state", {**dev.state(1), "device_id": OTHER}, as_device=OTHER)
        # And a payload that claims another id on the device's own topic is refused by the platform.
        await dev.publish("state", {**dev.state(2), "device_id": OTHER})
        await eventually(lambda: connector.ingestor.stats.rejected.get("foreign") == 1, "foreign payload counted")
        assert _state(platform, OTHER) is None

        # A command: the platform publishes on cmd, the device answers on result.
        async def device_side() -> dict[str, Any]:
            assert listener.stdout is not None
            line = await asyncio.wait_for(listener.stdout.readline(), 10)
            command: dict[str, Any] = json.loads(line)
            await dev.answer(command)
            return command

        answering = asyncio.create_task(device_side())
        assert connector.mqtt is not None
        result = await commands.execute(platform.uow, city, connector.mqtt, DEVICE, "reboot", {}, timeout=10)
        command = await answering
        assert command["action"] == "reboot" and command["v"] == 1 and result.status == "succeeded"
        with platform.uow() as uow:
            row = uow.session.scalars(select(DeviceCommandRow)).one()
            assert (row.command_id, row.status, row.progress) == (command["command_id"], "succeeded", 100)

        # A retry of the same command id is answered with the stored result and not applied again; the
        # platform, no longer waiting, counts that late answer as a replay and changes nothing.
        await dev.answer(command)
        await eventually(lambda: connector.ingestor.stats.rejected.get("replayed_result") == 1, "replay counted")
        assert dev.applied_count == 1

        # The driver reads the retained state back.
        read = await connector.mqtt.read_state(Endpoint(DEVICE), timeout=5)
        assert read.seq == 1 and read.firmware_version == "1.2.3"

        # Last will: the device's connection dies, the broker publishes status offline.
        listener.kill()
        await listener.wait()
        await eventually(lambda: (s := _state(platform, DEVICE)) is not None and not s.online, "offline by will", 20)
        assert _state(platform, DEVICE).offline_reason == "will"  # type: ignore[union-attr]
    finally:
        stop.set()
        await running


def test_device_played_by_mosquitto_clients(platform: Platform, city: Caller, tmp_path: Path) -> None:
    zones.create_zone(platform.uow, city, "downtown", "high")
    import_csv(platform, city, csv_bytes([device(1, protocol="mqtt"), device(2, protocol="mqtt")],
                                         header=["id", "kind", "brand", "model", "firmware_version", "zone",
                                                 "serial", "mac", "protocol"]), create_missing=True)
    box = SecretBox(platform.settings.secret_key_bytes())
    report = broker.provision(platform.uow, city, box, tmp_path / "provision", broker_url="mqtt://127.0.0.1:1883")
    assert (report.devices, report.new_passwords) == (2, 3)
    bundle = json.loads((tmp_path / "provision" / "device-credentials.json").read_text())
    assert (tmp_path / "provision" / "device-credentials.json").stat().st_mode & 0o077 == 0
    accounts = [BrokerAccount(d, v["password"], "device") for d, v in bundle["devices"].items()]
    platform_pw = broker.platform_password(platform.uow, box)
    assert platform_pw is not None and platform_pw not in json.dumps(bundle)
    accounts.append(BrokerAccount("cityward-platform", platform_pw, "platform"))
    with private_mosquitto(tmp_path, accounts) as b:
        asyncio.run(_scenario(platform, city, b, bundle, box))


def test_connector_survives_a_broker_restart(platform: Platform, city: Caller, tmp_path: Path) -> None:
    """The broker dies and comes back: the connector reconnects by itself and ingests again."""
    import os
    import signal
    import subprocess
    import time

    from tests.brokers import mosquitto_binary

    zones.create_zone(platform.uow, city, "downtown", "high")
    import_csv(platform, city, csv_bytes([device(1, protocol="mqtt")], header=[
        "id", "kind", "brand", "model", "firmware_version", "zone", "serial", "mac", "protocol"]),
        create_missing=True)
    box = SecretBox(platform.settings.secret_key_bytes())
    broker.provision(platform.uow, city, box, tmp_path / "provision", broker_url="mqtt://127.0.0.1:1")
    bundle = json.loads((tmp_path / "provision" / "device-credentials.json").read_text())
    platform_pw = broker.platform_password(platform.uow, box)
    assert platform_pw is not None
    accounts = [BrokerAccount(DEVICE, bundle["devices"][DEVICE]["password"], "device"),
                BrokerAccount("cityward-platform", platform_pw, "platform")]
    with private_mosquitto(tmp_path, accounts) as b:
        async def scenario() -> int:
            connector = Connector(platform.uow, box, ConnectOptions(mqtt_url=b.url, sweep_interval=3600,
                                                                    poll_interval=3600))
            stop = asyncio.Event()
            running = asyncio.create_task(connector.run(stop))
            await asyncio.wait_for(connector.connected.wait(), 10)
            dev = CliDevice(b, DEVICE, bundle["devices"][DEVICE]["password"])
            os.kill(b.pid, signal.SIGKILL)
            await asyncio.sleep(0.5)
            restarted = subprocess.Popen([mosquitto_binary(), "-c", str(b.files.config)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 20
                while connector.reconnects == 0 and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                assert connector.reconnects >= 1, "the connector did not reconnect"
                await dev.publish("state", dev.state(3))
                await eventually(lambda: (s := _state(platform, DEVICE)) is not None and s.seq == 3,
                                 "state after restart")
                return connector.reconnects
            finally:
                stop.set()
                await running
                restarted.terminate()
                restarted.wait(10)

        assert asyncio.run(scenario()) >= 1
