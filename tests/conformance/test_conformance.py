"""The conformance devices (http_device.py and mqtt_device.py, written from docs/protocol.md alone)
against the platform: discovery, polling, ingestion, commands and a password change over real
sockets and a real Mosquitto, and the canonical
JSON hash computed by hand the way a C or JavaScript device would. If the document and the
platform drift apart, this fails."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from cityward.adapters.drivers.base import Endpoint
from cityward.adapters.drivers.http import HttpDriver
from cityward.adapters.mosquitto import BrokerAccount
from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import DeviceCommandRow, DeviceStateRow
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.errors import InvalidInput
from cityward.services import broker, configs, credentials, zones
from cityward.services.connectivity import ConnectOptions, Connector, command_device
from tests.brokers import private_mosquitto
from tests.conformance import http_device
from tests.conformance.http_device import HttpDevice, canonical_json
from tests.conformance.mqtt_device import MqttDevice
from tests.helpers import csv_bytes, device, eventually, import_csv

HERE = Path(__file__).parent
DEVICE = "SL-00001"


def test_the_device_imports_nothing_of_cityward() -> None:
    tree = ast.parse((HERE / "http_device.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] in ("cityward", "tests", "msgspec", "httpx")}, imported


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(config=st.dictionaries(st.text(max_size=6), json_values, min_size=1, max_size=5))
def test_the_hash_written_from_the_document_is_the_platforms(config: dict[str, Any]) -> None:
    """Keys by code point, \\u escapes in lowercase hex, surrogate pairs beyond the basic plane."""
    assert http_device.config_hash(config) == configs.config_hash(config)


def test_canonical_json_examples_from_the_document() -> None:
    # The worked example in docs/protocol.md, "Canonical JSON".
    example = {"name": "Zürich 😀", "b": [1, True, None], "a": {"z": -3, "tab": "\t"}}
    text = '{"a":{"tab":"\\t","z":-3},"b":[1,true,null],"name":"Z\\u00fcrich \\ud83d\\ude00"}'
    assert canonical_json(example) == text
    doc = (HERE.parents[1] / "docs" / "protocol.md").read_text()
    assert text in doc and http_device.config_hash(example) in doc


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
@pytest.mark.parametrize("bad, where", [({"dim": 0.5}, "config.dim"), ({"a": [1, 2**60]}, "config.a[1]")])
def test_a_configuration_a_device_cannot_hash_alike_is_refused(platform: Platform, city: Caller,
                                                               bad: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        configs.set_desired(platform.uow, city, "night", {"kind": "streetlight"}, bad)
    assert [p.field for p in caught.value.problems] == [where]


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_the_conformance_device_against_the_platform(platform: Platform, city: Caller) -> None:
    password = secrets.token_urlsafe(18)
    with HttpDevice(DEVICE, password) as dev:
        zones.create_zone(platform.uow, city, "downtown", "high")
        import_csv(platform, city, csv_bytes([device(1, protocol="http", address=dev.address)], header=[
            "id", "kind", "brand", "model", "firmware_version", "zone", "serial", "mac", "protocol", "address"]),
            create_missing=True)
        box = SecretBox(platform.settings.secret_key_bytes())
        credentials.import_handover(platform.uow, city, box, io.BytesIO(json.dumps({DEVICE: password}).encode()),
                                    "handover.json")

        async def scenario() -> None:
            async with HttpDriver(timeout=2) as http:  # §3 /info: the hello, no authentication
                hello = await http.read_info(Endpoint("?", dev.address))
                assert hello.device_id == DEVICE and hello.address == dev.address
            connector = Connector(platform.uow, box, ConnectOptions(mqtt_url=None))
            stop = asyncio.Event()
            writer = asyncio.create_task(connector.ingestor.run(stop))
            try:
                await connector.poll_http_once()
                await connector.ingestor.flush()
                assert connector.poll.polled == 1 and not connector.ingestor.stats.rejected
                reboot = await command_device(platform.uow, box, "mqtt://127.0.0.1:1", city, DEVICE, "reboot", {},
                                              timeout=10)
                assert reboot.status == "succeeded" and dev.boot_id == "boot-2"
                rotated = await command_device(platform.uow, box, "mqtt://127.0.0.1:1", city, DEVICE,
                                               "set_password", {}, timeout=10)
                assert rotated.status == "succeeded"
                await connector.poll_http_once()  # a new boot, seq from 1 again: accepted
                await connector.ingestor.flush()
                assert connector.poll.polled == 2 and not connector.poll.failed
            finally:
                stop.set()
                await writer
                await connector.http.__aexit__(None, None, None)

        asyncio.run(scenario())
        assert dev.applied_commands == 2 and dev.failed_logins <= 1
        with platform.uow() as uow:
            state = uow.session.get(DeviceStateRow, DEVICE)
            assert state is not None and state.boot_id == "boot-2" and state.credential_state == "unique"
            assert sorted(uow.session.scalars(select(DeviceCommandRow.status))) == ["succeeded", "succeeded"]


def test_the_mqtt_device_imports_nothing_of_cityward() -> None:
    tree = ast.parse((HERE / "mqtt_device.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] in ("cityward", "tests", "paho", "aiomqtt")}, imported


def _stored(platform: Platform) -> DeviceStateRow | None:
    with platform.uow() as uow:
        row = uow.session.get(DeviceStateRow, DEVICE)
        if row is not None:
            uow.session.expunge(row)
        return row


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_the_mqtt_conformance_device_against_the_platform(platform: Platform, city: Caller, tmp_path: Path) -> None:
    """Provisioned accounts, a private Mosquitto with the ACL, the connector: the device's hello,
    state and last will are taken, a state from the future is refused, another serial under its id
    is an identity mismatch, and a lone reboot command is followed across the new boot."""
    zones.create_zone(platform.uow, city, "downtown", "high")
    import_csv(platform, city, csv_bytes([device(1, protocol="mqtt")], header=[
        "id", "kind", "brand", "model", "firmware_version", "zone", "serial", "mac", "protocol"]),
        create_missing=True)
    box = SecretBox(platform.settings.secret_key_bytes())
    broker.provision(platform.uow, city, box, tmp_path / "provision", broker_url="mqtt://127.0.0.1:1883")
    bundle = json.loads((tmp_path / "provision" / "device-credentials.json").read_text())
    platform_pw = broker.platform_password(platform.uow, box)
    assert platform_pw is not None
    accounts = [BrokerAccount(DEVICE, bundle["devices"][DEVICE]["password"], "device"),
                BrokerAccount("cityward-platform", platform_pw, "platform")]
    with private_mosquitto(tmp_path, accounts) as b:
        dev = MqttDevice(b.host, b.port, DEVICE, bundle["devices"][DEVICE]["password"])

        async def scenario() -> None:
            connector = Connector(platform.uow, box, ConnectOptions(mqtt_url=b.url, sweep_interval=3600,
                                                                    poll_interval=3600))
            stop = asyncio.Event()
            running = asyncio.create_task(connector.run(stop))
            await asyncio.wait_for(connector.connected.wait(), 10)
            stats = connector.ingestor.stats
            try:
                await asyncio.to_thread(dev.connect)
                await eventually(lambda: (s := _stored(platform)) is not None and s.online and s.seq == 1,
                                 "hello, status and state taken")
                await asyncio.to_thread(dev.publish, "state", dev.state(ahead=timedelta(days=1), boot_id="evil",
                                                                        firmware_version="6.6.6"))
                await eventually(lambda: stats.rejected.get("future") == 1, "the future state refused")
                await asyncio.to_thread(dev.publish, "state", dev.state())
                await eventually(lambda: (s := _stored(platform)) is not None and s.seq == 3, "genuine state")
                await asyncio.to_thread(dev.publish, "hello", dev.hello(serial="CLONE-9"))
                await eventually(lambda: stats.identity_changes == 1, "identity mismatch recorded")
                result = await command_device(platform.uow, box, b.url, city, DEVICE, "reboot", {}, timeout=15)
                assert result.status == "succeeded"
                await eventually(lambda: (s := _stored(platform)) is not None and s.boot_id == "boot-2",
                                 "the new boot's state")
                assert (_stored(platform) or DeviceStateRow()).firmware_version == "1.2.3"
                await asyncio.to_thread(dev.close)  # the broker publishes the last will
                await eventually(lambda: (s := _stored(platform)) is not None and not s.online, "offline by will")
            finally:
                stop.set()
                await running

        try:
            asyncio.run(scenario())
        finally:
            dev.close()
    assert dev.applied_commands == 1
