"""Discovery: devices that announce themselves, or answer a probe, wait here until a person decides.

A pending device is untrusted: it is not in the inventory, so no rollout, command or audit run can
target it. Approval enters it into the inventory through the normal device path (same checks,
same audit); rejection keeps the record so that a repeated announcement stays rejected.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from cityward.adapters.drivers.base import DriverError, Endpoint
from cityward.adapters.drivers.http import HttpDriver
from cityward.adapters.storage import states as store
from cityward.adapters.storage.models import DeviceRow, DiscoveredDeviceRow
from cityward.adapters.storage.states import Batch, HelloSeen
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import Action, require, require_city_operator
from cityward.domain.organizations import Caller
from cityward.errors import Conflict, InvalidInput, NotFound, Problem
from cityward.services import inventory

MAX_PROBE_ADDRESSES = 65_536
STATUSES = ("pending", "approved", "rejected")


@dataclass(frozen=True)
class DiscoveredView:
    device_id: str
    status: str
    source: str
    address: str | None
    kind: str | None
    brand: str | None
    model: str | None
    serial: str | None
    mac: str | None
    firmware_version: str | None
    first_seen: datetime
    last_seen: datetime
    announcements: int
    decided_by: str | None
    reason: str | None


def _view(r: DiscoveredDeviceRow) -> DiscoveredView:
    h: dict[str, Any] = r.hello or {}
    return DiscoveredView(r.device_id, r.status, r.source, r.address, h.get("kind"), h.get("brand"), h.get("model"),
                          h.get("serial"), h.get("mac"), h.get("firmware_version"), r.first_seen, r.last_seen,
                          r.announcements, r.decided_by, r.reason)


def list_discovered(uow_factory: UnitOfWorkFactory, caller: Caller, status: str | None = "pending",
                    limit: int = 500) -> list[DiscoveredView]:
    require(caller, Action.SEE_DISCOVERED)  # an unknown device has no responsible partner yet: the city's
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
    with uow_factory() as uow:
        q = select(DiscoveredDeviceRow).order_by(DiscoveredDeviceRow.first_seen, DiscoveredDeviceRow.device_id)
        if status:
            q = q.where(DiscoveredDeviceRow.status == status)
        return [_view(r) for r in uow.session.scalars(q.limit(limit))]


def approve(uow_factory: UnitOfWorkFactory, caller: Caller, device_id: str, zone: str,
            extra: dict[str, Any] | None = None) -> inventory.DeviceView:
    """Enter a pending device into the inventory with the facts it announced, in `zone`."""
    require_city_operator(caller, "approve a discovered device")
    with uow_factory() as uow:
        row = uow.session.get(DiscoveredDeviceRow, device_id)
        if row is None:
            raise NotFound(f"no discovered device {device_id!r}")
        if row.status != "pending":
            raise Conflict(f"{device_id} was already {row.status}")
        if uow.session.get(DeviceRow, device_id) is not None:
            # Approval must never let a device rewrite an inventory record with what it claims.
            raise Conflict(f"{device_id} is already in the inventory",
                           hint=f"reject the announcement: cityward discover reject {device_id} --reason ...")
        h = dict(row.hello)
        source, address = row.source, row.address
    record = {"id": device_id, "kind": h.get("kind"), "brand": h.get("brand"), "model": h.get("model"),
              "firmware_version": h.get("firmware_version"), "serial": h.get("serial"), "mac": h.get("mac"),
              "hardware_version": h.get("hardware_version"), "zone": zone, "protocol": source,
              "address": address, **(extra or {})}
    record = {k: v for k, v in record.items() if v not in (None, "")}
    view = inventory.save_device(uow_factory, caller, record)  # same checks and audit as any device edit
    with uow_factory(write=True) as uow:
        row = uow.session.get(DiscoveredDeviceRow, device_id)
        assert row is not None
        row.status, row.decided_by, row.decided_at = "approved", caller.actor, uow.clock()
        uow.record(caller, "discovery.approved", "device", device_id, after={"zone": zone})
        uow.commit()
    return view


def reject(uow_factory: UnitOfWorkFactory, caller: Caller, device_id: str, reason: str) -> DiscoveredView:
    require_city_operator(caller, "reject a discovered device")
    if not reason.strip() or len(reason) > 500:
        raise InvalidInput("a reason of 1-500 characters is required",
                           [Problem("required, at most 500 characters", field="reason")])
    with uow_factory(write=True) as uow:
        row = uow.session.get(DiscoveredDeviceRow, device_id)
        if row is None:
            raise NotFound(f"no discovered device {device_id!r}")
        if row.status != "pending":
            raise Conflict(f"{device_id} was already {row.status}")
        row.status, row.decided_by, row.decided_at, row.reason = "rejected", caller.actor, uow.clock(), reason
        uow.record(caller, "discovery.rejected", "device", device_id, after={"reason": reason})
        uow.commit()
        return _view(row)


def parse_range(text: str) -> list[str]:
    """`A-B` (inclusive) or a CIDR block, IPv4 or IPv6, at most MAX_PROBE_ADDRESSES addresses."""
    try:
        if "/" in text:
            net = ipaddress.ip_network(text.strip(), strict=False)
            if net.num_addresses > MAX_PROBE_ADDRESSES:
                raise InvalidInput(f"range {text} has {net.num_addresses} addresses; at most {MAX_PROBE_ADDRESSES}")
            hosts = list(net.hosts()) or [net.network_address]
            return [str(a) for a in hosts]
        first_text, _, last_text = text.partition("-")
        first = ipaddress.ip_address(first_text.strip())
        last = ipaddress.ip_address(last_text.strip()) if last_text else first
    except ValueError as exc:
        raise InvalidInput(f"--http-range {text!r}: {exc}", hint="write it as 127.0.3.1-127.0.3.40 or 10.0.0.0/24")\
            from None
    if first.version != last.version or int(last) < int(first):
        raise InvalidInput(f"--http-range {text!r}: the end must be an address of the same family after the start")
    count = int(last) - int(first) + 1
    if count > MAX_PROBE_ADDRESSES:
        raise InvalidInput(f"--http-range {text!r} has {count} addresses; at most {MAX_PROBE_ADDRESSES}")
    return [str(ipaddress.ip_address(int(first) + i)) for i in range(count)]


@dataclass
class ProbeReport:
    addresses: int = 0
    answered: int = 0
    known: list[str] = field(default_factory=list)
    discovered: list[str] = field(default_factory=list)  # new pending devices
    failures: dict[str, int] = field(default_factory=dict)  # reason → count (silence is not counted)


async def probe_http(uow_factory: UnitOfWorkFactory, caller: Caller, addresses: list[str], port: int, *,
                     timeout: float = 2.0, concurrency: int = 100, progress: Any = None,
                     driver: HttpDriver | None = None) -> ProbeReport:
    """Ask each address for its identity (`GET /cityward/v1/info`); unknown devices become pending."""
    require_city_operator(caller, "probe the network for devices")
    if driver is None:
        async with HttpDriver(timeout=timeout, max_connections=concurrency) as own:
            return await probe_http(uow_factory, caller, addresses, port, concurrency=concurrency,
                                    progress=progress, driver=own)
    report = ProbeReport(addresses=len(addresses))
    gate = asyncio.Semaphore(concurrency)
    batch = Batch()

    async def one(host: str) -> None:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        async with gate:
            try:
                hello = await driver.read_info(Endpoint("?", address))
            except DriverError as exc:
                if exc.reason not in ("unreachable", "timeout"):
                    report.failures[exc.reason] = report.failures.get(exc.reason, 0) + 1
                return
            finally:
                if progress is not None:
                    progress()
        report.answered += 1
        batch.hellos[hello.device_id] = HelloSeen(hello, "http", datetime.now(UTC), address)

    await asyncio.gather(*(one(a) for a in addresses))
    with uow_factory(write=True) as uow:
        outcome = store.write_batch(uow.conn, batch, uow.clock())
        report.known = sorted(set(batch.hellos) - outcome.unknown)
        report.discovered = outcome.discovered
        for device_id in outcome.discovered:
            uow.record(caller, "discovery.announced", "device", device_id,
                       after={"source": "http", "address": batch.hellos[device_id].address})
        uow.record(caller, "discovery.probed", "network", f"{addresses[0]}..{addresses[-1]}:{port}" if addresses
                   else "-", after={"addresses": report.addresses, "answered": report.answered,
                                    "new": len(report.discovered)})
        uow.commit()
    return report
