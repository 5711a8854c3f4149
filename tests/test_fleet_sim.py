"""The platform against the simulated city, end to end over real sockets.

Provisioned accounts in a private Mosquitto (so the ACL is the generated one), the simulator as a
separate process, the connector ingesting MQTT and polling HTTP with the installer's handover,
commands over both drivers (a retry with the same command id is not applied twice, as the
simulator's own counters show), a tampered firmware image refused, discovery of devices missing
from the inventory, and last wills when the city goes dark.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cityward.adapters.drivers.base import Endpoint
from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import DeviceStateRow
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.domain.telemetry import Command
from cityward.entrypoints.cli.demo import install_city
from cityward.services import commands, credentials, discovery, inventory
from cityward.services.connectivity import ConnectOptions, Connector
from cityward.sim.city import generate_city, iter_device_rows
from cityward.sim.keys import sign_firmware
from tests.brokers import private_mosquitto
from tests.helpers import eventually
from tests.rollout_city import import_rows, provision_accounts
from tests.sim.helpers import RunningSim, simulator, unique_prefix

pytestmark = pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
SEED = 11
DEVICES = 80


def _states(platform: Platform) -> dict[str, DeviceStateRow]:
    with platform.uow() as uow:
        rows = {r.device_id: r for r in uow.session.scalars(select(DeviceStateRow))}
        uow.session.expunge_all()
        return rows


def _command(action: str, params: dict[str, Any] | None = None) -> Command:
    now = datetime.now(UTC)
    return Command(command_id=str(uuid.uuid4()), action=action, issued_at=now,
                   expires_at=now + timedelta(minutes=5), params=params or {})


async def _scenario(platform: Platform, city: Caller, sim: RunningSim, box: SecretBox, url: str,
                    inventory_rows: list[dict[str, str]], missing: list[dict[str, str]]) -> None:
    connector = Connector(platform.uow, box, ConnectOptions(mqtt_url=url, poll_interval=3600, sweep_interval=3600))
    stop = asyncio.Event()
    running = asyncio.create_task(connector.run(stop))
    try:
        await asyncio.wait_for(connector.connected.wait(), 10)
        mqtt_ids = {r["id"] for r in inventory_rows if r["protocol"] != "http"}
        http_rows = [r for r in inventory_rows if r["protocol"] == "http"]
        await connector.poll_http_once()
        expected_mqtt = int(sim.ready["mqtt"])
        await eventually(lambda: len(set(_states(platform)) & mqtt_ids) >= expected_mqtt - 2,
                         "MQTT devices reported", 20)
        states = _states(platform)
        assert connector.ingestor.stats.rejected.get("foreign", 0) == 0
        polled = [r["id"] for r in http_rows if r["id"] in states]
        assert polled and all(states[d].transport == "http" for d in polled)
        some = next(iter(set(states) & mqtt_ids))
        truth = sim.device(some)
        assert states[some].firmware_version == truth["firmware_version"]
        assert {s.credential_state for s in states.values()} <= {"default", "weak", "unique"}

        # MQTT: a command, then a retry of the same command id: applied once.
        assert connector.mqtt is not None
        target = next(d for d in sorted(set(states) & mqtt_ids)
                      if sim.device(d)["fault"] in ("none", None) and states[d].online)
        result = await commands.execute(platform.uow, city, connector.mqtt, target, "reboot", {}, timeout=15)
        assert result.status == "succeeded", result
        cmd = _command("quarantine", {"reason": "test"})
        first = [r async for r in connector.mqtt.send(Endpoint(target), cmd, timeout=15)]
        again = [r async for r in connector.mqtt.send(Endpoint(target), cmd, timeout=15)]
        assert first[-1].status == "succeeded" and again[-1].repeat and again[-1].status == "succeeded"
        counters = sim.device(target)
        assert counters["applied"][cmd.command_id] == 1 and counters["quarantined"]
        assert counters["applied_commands"] == 2  # the reboot and the quarantine, nothing twice

        # HTTP: a tampered image is refused before anything is installed.
        passwords = credentials.load_secrets(platform.uow, box, credentials.ADMIN)
        device = next(r for r in http_rows if r["id"] in polled and sim.device(r["id"])["fault"] in ("none", None))
        ep = Endpoint(device["id"], device["address"], passwords[device["id"]])
        view = inventory.get_device(platform.uow, city, device["id"])
        image = b"firmware image " * 1000
        sha, signature, key_id = sign_firmware(view.manufacturer, view.origin_model, "99.0.0", image, SEED)
        upgrade = _command("upgrade_firmware", {"url": "push", "version": "99.0.0", "size": len(image),
                                                "sha256": sha, "signature": signature, "key_id": key_id})
        stream = connector.http.send(ep, upgrade, timeout=5)
        accepted = await anext(stream)  # the device now waits for the pushed image
        await stream.aclose()
        assert accepted.status in ("accepted", "in_progress")
        refused = await connector.http.push_firmware(ep, upgrade.command_id, image[:-1] + b"!")
        assert (refused.status, refused.detail) == ("rejected", "hash mismatch")
        assert sim.device(device["id"])["firmware_version"] != "99.0.0"
        assert hashlib.sha256(image).hexdigest() == sha

        # Discovery: HTTP devices that answer but are not in the inventory wait for approval.
        hosts = sorted(r["address"].split(":")[0] for r in missing)
        report = await discovery.probe_http(platform.uow, city, hosts, 8080, driver=connector.http)
        assert sorted(report.discovered) == sorted(r["id"] for r in missing)
        assert {p.device_id for p in discovery.list_discovered(platform.uow, city)} == {r["id"] for r in missing}
    finally:
        stop.set()
        await running


def test_platform_and_simulated_city(platform: Platform, city: Caller, tmp_path: Path) -> None:
    prefix = unique_prefix()
    demo = generate_city(DEVICES, SEED)
    install_city(platform, city, demo)
    rows = list(iter_device_rows(demo, SEED, id_prefix=prefix))
    http = [r for r in rows if r["protocol"] == "http"]
    assert len(http) >= 4, "the seed must give a few HTTP devices"
    missing = http[-2:]  # installed in the street, never entered into the inventory
    kept = [r for r in rows if r not in missing]
    import_rows(platform, city, kept)
    box = SecretBox(platform.settings.secret_key_bytes())
    bundle_file, bundle, accounts = provision_accounts(platform, city, box, tmp_path / "prov")
    assert "platform" not in bundle  # the platform's account is never handed to installers
    handover = tmp_path / "handover.csv"
    with private_mosquitto(tmp_path, accounts) as b, simulator(
            "--devices", str(DEVICES), "--seed", str(SEED), "--id-prefix", prefix, "--mqtt-url", b.url,
            "--credentials", bundle_file, "--handover", str(handover), "--state-interval", "2",
            "--time-scale", "0.05") as sim:
        with handover.open("rb") as fh:
            # The handover lists every HTTP device the installer set up, including the two the
            # inventory lacks: the file is refused as a whole, then imported without them.
            text = fh.read().decode()
        good = "\n".join(line for line in text.splitlines() if not any(m["id"] in line for m in missing))
        credentials.import_handover(platform.uow, city, box, io.BytesIO(good.encode()), "handover.csv")
        asyncio.run(_scenario(platform, city, sim, box, b.url, kept, missing))
        sim.process.kill()  # the whole city loses power: the broker publishes every last will
        sim.process.wait(10)

        async def wills() -> None:
            connector = Connector(platform.uow, box, ConnectOptions(mqtt_url=b.url, poll_interval=3600,
                                                                    sweep_interval=3600))
            stop = asyncio.Event()
            running = asyncio.create_task(connector.run(stop))
            mqtt_ids = {r["id"] for r in kept if r["protocol"] != "http"}
            try:
                await eventually(lambda: sum(1 for d, s in _states(platform).items()
                                         if d in mqtt_ids and not s.online) >= int(sim.ready["mqtt"]) - 2,
                             "last wills", 20)
            finally:
                stop.set()
                await running

        asyncio.run(wills())
    offline = [s for s in _states(platform).values() if not s.online and s.transport == "mqtt"]
    assert offline and all(s.offline_reason == "will" for s in offline)
