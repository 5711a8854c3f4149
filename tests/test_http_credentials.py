"""The city keeps its HTTP devices: a single `set_password` leaves the new password stored and in
use, a refused password is not tried again and again into the lockout, and a device that answers
401 or 429 is alive. Played against the conformance device (tests/conformance/http_device.py),
which follows docs/protocol.md §3, over real sockets."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import AuditEventRow, DeviceCommandRow, DeviceStateRow
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.services import credentials, zones
from cityward.services.connectivity import ConnectOptions, Connector, command_device
from tests.conformance.http_device import HttpDevice
from tests.helpers import csv_bytes, device, import_csv

pytestmark = pytest.mark.parametrize("platform", ["sqlite"], indirect=True)

DEVICE = "SL-00001"
HEADER = ["id", "kind", "brand", "model", "firmware_version", "zone", "serial", "mac", "protocol", "address"]


def _enrol(platform: Platform, city: Caller, dev: HttpDevice, password: str) -> SecretBox:
    zones.create_zone(platform.uow, city, "downtown", "high")
    import_csv(platform, city, csv_bytes([device(1, protocol="http", address=dev.address)], header=HEADER),
               create_missing=True)
    box = SecretBox(platform.settings.secret_key_bytes())
    credentials.import_handover(platform.uow, city, box, io.BytesIO(json.dumps({DEVICE: password}).encode()),
                               "handover.json")
    return box


def _stored_password(platform: Platform, box: SecretBox) -> str | None:
    return credentials.load_secrets(platform.uow, box, credentials.ADMIN, [DEVICE]).get(DEVICE)


@pytest.mark.parametrize("apply_delay", [0.0, 0.5])
def test_a_single_set_password_keeps_the_device(platform: Platform, city: Caller, apply_delay: float) -> None:
    """The device applies the password right after its 202 (or half a second later): the platform
    follows with the new password, stores it, and the device is polled with it afterwards."""
    old = secrets.token_urlsafe(18)
    with HttpDevice(DEVICE, old, apply_delay=apply_delay) as dev:
        box = _enrol(platform, city, dev, old)
        result = asyncio.run(command_device(platform.uow, box, "mqtt://127.0.0.1:1", city, DEVICE,
                                            "set_password", {}, timeout=10))
        assert result.status == "succeeded", result
        assert dev.password != old and _stored_password(platform, box) == dev.password
        assert dev.failed_logins <= 1, "one 401 (the old password after the change) at most"
        with platform.uow() as uow:
            row = uow.session.scalars(select(DeviceCommandRow)).one()
            assert row.status == "succeeded"
            events = [e.action for e in uow.session.scalars(select(AuditEventRow))]
            assert "credentials.rotated" in events

        connector = Connector(platform.uow, box, ConnectOptions(mqtt_url=None))
        asyncio.run(_poll(connector, rounds=1))
        assert connector.poll.polled == 1 and not connector.poll.failed


def test_a_device_that_refuses_the_new_password_keeps_the_old_one(platform: Platform, city: Caller) -> None:
    """A device that takes some other password than the one sent: neither works, so the command
    is recorded as failed naming why, the old password stays on record and the platform stops
    after one try of each (no lockout)."""
    old = secrets.token_urlsafe(18)
    with HttpDevice(DEVICE, old) as dev:
        box = _enrol(platform, city, dev, old)
        original = dev._apply

        def liar(command_id: str, action: str, params: dict[str, object]) -> None:
            original(command_id, action, {**params, "password": old + "-but-not-the-one-sent"})
        dev._apply = liar  # type: ignore[method-assign]
        result = asyncio.run(command_device(platform.uow, box, "mqtt://127.0.0.1:1", city, DEVICE,
                                            "set_password", {}, timeout=10))
        assert result.status == "failed" and "refused both" in (result.detail or ""), result
        assert _stored_password(platform, box) == old
        assert dev.failed_logins <= 3
        with platform.uow() as uow:
            assert uow.session.scalars(select(DeviceCommandRow.status)).one() == "failed"


async def _poll(connector: Connector, rounds: int) -> None:
    stop = asyncio.Event()
    writer = asyncio.create_task(connector.ingestor.run(stop))
    try:
        for _ in range(rounds):
            await connector.poll_http_once()
        await connector.ingestor.flush()
    finally:
        stop.set()
        await writer
        await connector.http.__aexit__(None, None, None)


def test_a_refused_password_is_not_tried_into_the_lockout(platform: Platform, city: Caller) -> None:
    """The stored password is wrong: the poller tries it once, then leaves the device alone until
    the password on record changes, so the device never locks the people who know the right one."""
    right = secrets.token_urlsafe(18)
    with HttpDevice(DEVICE, right) as dev:
        box = _enrol(platform, city, dev, "wrong-" + right)
        connector = Connector(platform.uow, box, ConnectOptions(mqtt_url=None, poll_interval=0.01))

        async def scenario() -> None:
            for _ in range(8):
                await connector.poll_http_once()
            assert dev.failed_logins == 1 and dev.locked_until == 0.0
            assert connector.poll.failed["auth"] == 1 and connector.poll.failed["held_back"] == 7
            # A new password on record is tried at the next round.
            await asyncio.to_thread(credentials.import_handover, platform.uow, city, box,
                                    io.BytesIO(json.dumps({DEVICE: right}).encode()), "handover2.json")
            await connector.poll_http_once()
            assert connector.poll.polled == 1

        asyncio.run(_within(connector, scenario()))


async def _within(connector: Connector, scenario: Coroutine[Any, Any, None]) -> None:
    stop = asyncio.Event()
    writer = asyncio.create_task(connector.ingestor.run(stop))
    try:
        await scenario
        await connector.ingestor.flush()
    finally:
        stop.set()
        await writer
        await connector.http.__aexit__(None, None, None)


def test_a_401_or_429_is_a_sign_of_life(platform: Platform, city: Caller) -> None:
    """A device that answers, even to refuse, is online: a silence sweep does not take it offline
    and a device marked offline comes back."""
    right = secrets.token_urlsafe(18)
    with HttpDevice(DEVICE, right) as dev:
        box = _enrol(platform, city, dev, right)
        connector = Connector(platform.uow, box, ConnectOptions(mqtt_url=None))
        asyncio.run(_poll(connector, rounds=1))  # a first good poll: the device has a state row
        with platform.uow(write=True) as uow:
            row = uow.session.get(DeviceStateRow, DEVICE)
            assert row is not None
            row.online, row.offline_reason = False, "silence"
            row.last_seen = row.last_seen - timedelta(hours=1)
            uow.commit()
        for locked in (False, True):
            dev.password = "changed-behind-the-city's-back"
            if locked:
                dev.locked_until = 1e12
            connector = Connector(platform.uow, box, ConnectOptions(mqtt_url=None))
            asyncio.run(_poll(connector, rounds=1))
            assert connector.poll.failed["locked" if locked else "auth"] == 1
            with platform.uow() as uow:
                row = uow.session.get(DeviceStateRow, DEVICE)
                assert row is not None and row.online, f"{'429' if locked else '401'} must count as alive"
                assert row.offline_reason is None
            with platform.uow(write=True) as uow:
                row = uow.session.get(DeviceStateRow, DEVICE)
                assert row is not None
                row.online, row.offline_reason = False, "silence"
                uow.commit()


