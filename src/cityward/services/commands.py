"""Sending one command to one device and following it to its end, durably.

The command row is written before anything is sent and its id is reused on every retry, so a
device applies it at most once; once a terminal result is stored, later results change nothing.
Bulk rollouts build on this.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import msgspec
from sqlalchemy import select, update

from cityward.adapters.drivers.base import DeviceDriver, DriverError, Endpoint
from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import DeviceCommandRow, DeviceRow
from cityward.adapters.storage.scoping import responsible_clause
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain import telemetry
from cityward.domain.access import Action, require_device_write
from cityward.domain.organizations import Caller
from cityward.domain.responsibility import Duty
from cityward.domain.telemetry import ACTIONS, Command, Result
from cityward.errors import InvalidInput, PermissionDenied, Problem
from cityward.services import credentials, inventory

# The duty a partner must hold for a device to send it each command (as for rollouts).
DUTY_FOR = {"set_password": Duty.CREDENTIALS, "install_certificate": Duty.CREDENTIALS}


def prepare(uow_factory: UnitOfWorkFactory, caller: Caller, device_id: str, action: str, params: dict[str, Any],
            *, ttl: timedelta = timedelta(minutes=30)) -> tuple[Command, inventory.DeviceView]:
    """Check the caller may act on the device, store the command (pending) and audit it."""
    if action not in ACTIONS:
        raise InvalidInput(f"unknown action {action!r}", [Problem(f"one of {', '.join(sorted(ACTIONS))}",
                                                                  field="action")])
    require_device_write(caller, Action.COMMAND)
    device = inventory.get_device(uow_factory, caller, device_id)  # NotFound outside the caller's scope
    with uow_factory(write=True) as uow:
        duty = DUTY_FOR.get(action, Duty.MAINTAIN)
        if not caller.is_city and uow.session.scalar(select(DeviceRow.id).where(
                DeviceRow.id == device.id, responsible_clause(uow.session, caller.org_id, frozenset({duty})))) is None:
            raise PermissionDenied(f"{caller.org_name} does not hold the {duty} duty for device {device.id}",
                                   hint=f"a partner sends {action} only to devices it holds the {duty} duty for")
        now = uow.clock()
        command = Command(command_id=str(uuid.uuid4()), action=action, issued_at=now, expires_at=now + ttl,
                          params=params)
        uow.session.add(DeviceCommandRow(
            command_id=command.command_id, device_id=device.id, action=action,
            params=telemetry.redacted(params), status="pending", issued_by=caller.actor, issued_at=now,
            expires_at=command.expires_at, updated_at=now))
        uow.record(caller, "devices.command", "device", device.id,
                   after={"command_id": command.command_id, "action": action, "params": telemetry.redacted(params)})
        uow.commit()
    return command, device


def record_result(uow_factory: UnitOfWorkFactory, result: Result) -> bool:
    """Store a result unless the command already ended; True if it changed anything."""
    terminal = sorted(telemetry.TERMINAL)
    with uow_factory(write=True) as uow:
        changed = uow.conn.execute(
            update(DeviceCommandRow)
            .where(DeviceCommandRow.command_id == result.command_id, DeviceCommandRow.status.not_in(terminal))
            .values(status=result.status, progress=result.progress, detail=result.detail, updated_at=uow.clock())
        ).rowcount
        uow.commit()
    return bool(changed)


async def execute(uow_factory: UnitOfWorkFactory, caller: Caller, driver: DeviceDriver, device_id: str,
                  action: str, params: dict[str, Any], *, endpoint: Endpoint | None = None, timeout: float = 60.0,
                  on_result: Callable[[Result], None] | None = None, box: SecretBox | None = None) -> Result:
    """Send and follow to a terminal result (stored); a driver failure is stored as `failed`.

    The command expires on the device when the platform stops waiting, so a device that comes
    back later cannot apply a command recorded as failed. A password the device accepted is
    stored (encrypted) at once, or the city would lose access to the device: over HTTP the new
    password is first tried on the device itself (`GET /state`), and it is kept whenever the
    device takes it, even when the command's own result was lost."""
    command, device = await asyncio.to_thread(prepare, uow_factory, caller, device_id, action, params,
                                              ttl=timedelta(seconds=timeout))
    target = endpoint or Endpoint(device.id, device.address)
    rotating = action == "set_password" and box is not None
    probe = rotating and device.protocol == "http" and target.address is not None
    last: Result | None = None
    refused = False  # the device refused both the old and the new password: no need to ask again
    try:
        async for result in driver.send(target, command, timeout=timeout):
            last = result
            if probe and result.terminal:
                break  # recorded below, once the new password is tried
            await asyncio.to_thread(record_result, uow_factory, result)
            if on_result:
                on_result(result)
    except DriverError as exc:
        last = Result(v=1, device_id=device.id, command_id=command.command_id, status="failed",
                      at=command.issued_at, detail=f"{exc.reason}: {exc}"[:500])
        refused = exc.reason == "auth"
        if not probe:
            await asyncio.to_thread(record_result, uow_factory, last)
    assert last is not None
    if not rotating:
        return last
    assert box is not None
    password = str(params["password"])
    keep = last.status == "succeeded"
    if probe:
        # A rejected command was not applied and a refused login already tried the new password:
        # asking again would only count towards the device's lockout.
        taken = (False if refused or last.status == "rejected"
                 else await _device_takes(driver, replace(target, password=password)))
        keep = taken if taken is not None else keep
        last = _confirmed(last, taken)
        await asyncio.to_thread(record_result, uow_factory, last)
        if on_result:
            on_result(last)
    if keep:
        await asyncio.to_thread(_keep_password, uow_factory, caller, box, device.id, password, command.command_id)
    return last


async def _device_takes(driver: DeviceDriver, endpoint: Endpoint) -> bool | None:
    """Whether the device lets the platform in with this password (None: it could not tell)."""
    try:
        await driver.read_state(endpoint)
    except DriverError as exc:
        return False if exc.reason == "auth" else None
    return True


def _confirmed(result: Result, taken: bool | None) -> Result:
    """The result to record once the new password was tried on the device."""
    if result.status == "succeeded" and taken is False:
        return msgspec.structs.replace(result, status="failed",
                                       detail="the device reported success but refuses the new password; "
                                       "the previous one is kept")
    if result.status != "succeeded" and taken:
        detail = f"{result.detail or result.status}; the device accepts the new password, which is stored"
        return msgspec.structs.replace(result, detail=detail[-500:])
    return result


def _keep_password(uow_factory: UnitOfWorkFactory, caller: Caller, box: SecretBox, device_id: str, password: str,
                   command_id: str) -> None:
    with uow_factory(write=True) as uow:
        credentials.store_secrets(uow.session, box, credentials.ADMIN, {device_id: password}, uow.clock())
        uow.record(caller, "credentials.rotated", "device", device_id,
                   after={"purpose": credentials.ADMIN, "command_id": command_id})
        uow.commit()
