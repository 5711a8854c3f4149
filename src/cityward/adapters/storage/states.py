"""Set-wise writes of reported device state: one batch of messages, a handful of statements.

Per batch: which ids are in the inventory (one SELECT), what is stored for them (one SELECT),
then one multi-row upsert, one history insert and the rare inventory firmware update. Nothing
here loops a statement per message.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cityward.adapters.storage.models import (
    BrokerRouteRow,
    DeviceHistoryRow,
    DeviceRow,
    DeviceStateRow,
    DiscoveredDeviceRow,
    ProductRow,
)
from cityward.domain import telemetry
from cityward.domain.telemetry import Hello, State

_CHUNK = 900  # ids per IN (...) list: under SQLite's bound-parameter limit with room to spare


@dataclass(frozen=True, slots=True)
class StateUpdate:
    state: State
    transport: str  # mqtt or http
    received_at: datetime
    via_gateway: str | None = None


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    online: bool
    at: datetime  # when the device (or its broker, for a will) says it happened
    received_at: datetime
    reason: str | None = None  # why offline: will, gateway, poll


@dataclass(frozen=True, slots=True)
class HelloSeen:
    hello: Hello
    source: str  # mqtt or http
    received_at: datetime
    address: str | None = None


@dataclass
class Batch:
    """The latest of each kind of message per device, coalesced while the last batch was written."""

    states: dict[str, StateUpdate] = field(default_factory=dict)
    statuses: dict[str, StatusUpdate] = field(default_factory=dict)
    hellos: dict[str, HelloSeen] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.states) + len(self.statuses) + len(self.hellos)

    def device_ids(self) -> set[str]:
        return self.states.keys() | self.statuses.keys() | self.hellos.keys()


@dataclass
class BatchOutcome:
    persisted: int = 0  # state and status messages stored
    stale: int = 0  # older than what was stored (replays, retained copies)
    unknown: set[str] = field(default_factory=set)  # ids not in the inventory
    discovered: list[str] = field(default_factory=list)  # ids announced for the first time
    history: int = 0
    children_unreachable: int = 0
    # known devices whose hello names another brand, serial or MAC than the inventory:
    # (device id, {field: {"inventory": …, "announced": …}}), each new mismatch once
    identity_changes: list[tuple[str, dict[str, dict[str, str]]]] = field(default_factory=list)


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC): compare like with like."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _jsonable(value: Any) -> Any:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) and value.tzinfo else (
        value.replace(tzinfo=UTC).isoformat() if isinstance(value, datetime) else value)


def _upsert(conn: Connection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


def known_devices(conn: Connection, ids: Iterable[str]) -> set[str]:
    ordered = sorted(ids)
    known: set[str] = set()
    for part in _chunks(ordered):
        known.update(conn.scalars(select(DeviceRow.id).where(DeviceRow.id.in_(part))))
    return known


_STORED = (DeviceStateRow.device_id, DeviceStateRow.online, DeviceStateRow.boot_id, DeviceStateRow.seq,
           DeviceStateRow.reported_at, DeviceStateRow.firmware_version, DeviceStateRow.credential_state,
           DeviceStateRow.services, DeviceStateRow.remote_access, DeviceStateRow.quarantined,
           DeviceStateRow.config_hash, DeviceStateRow.cert_expires_at, DeviceStateRow.status_at)


_TIMES = ("reported_at", "cert_expires_at", "status_at")


def _stored(conn: Connection, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for part in _chunks(ids):
        for row in conn.execute(select(*_STORED).where(DeviceStateRow.device_id.in_(part))):
            values = dict(row._mapping)
            for k in _TIMES:
                values[k] = _jsonable(values[k])
            out[row.device_id] = values
    return out


def _state_values(u: StateUpdate) -> dict[str, Any]:
    s = u.state
    expiry = telemetry.earliest_expiry(s.certificates)
    return {
        "device_id": s.device_id, "online": True, "offline_reason": None, "last_seen": u.received_at,
        "transport": u.transport, "via_gateway": u.via_gateway, "boot_id": s.boot_id, "seq": s.seq,
        "reported_at": s.at, "firmware_version": s.firmware_version, "hardware_version": s.hardware_version,
        "uptime_s": s.uptime_s, "services": sorted(s.services), "remote_access": sorted(s.remote_access),
        "credential_state": s.credential.state, "password_changed_at": s.credential.changed_at,
        "certificates": [{"subject": c.subject, "issuer": c.issuer, "serial": c.serial,
                          "not_after": _jsonable(c.not_after)} for c in s.certificates],
        "cert_expires_at": expiry, "config_hash": s.config_hash, "quarantined": s.quarantined,
        "applied_commands": s.applied_commands,
    }


_STATE_COLUMNS = tuple(c.name for c in DeviceStateRow.__table__.columns if c.name not in ("device_id",))


def write_batch(conn: Connection, batch: Batch, now: datetime) -> BatchOutcome:
    """Store one coalesced batch inside the caller's transaction."""
    out = BatchOutcome()
    known = known_devices(conn, batch.device_ids())
    out.unknown = batch.device_ids() - known
    _discover(conn, [h for i, h in batch.hellos.items() if i not in known], now, out)
    history: list[dict[str, Any]] = []
    _identity(conn, [h for i, h in batch.hellos.items() if i in known], now, out, history)

    stored = _stored(conn, sorted(known & (batch.states.keys() | batch.statuses.keys())))
    rows: dict[str, dict[str, Any]] = {}
    firmware: list[dict[str, Any]] = []
    for device_id, u in batch.states.items():
        if device_id not in known:
            continue
        old = stored.get(device_id)
        s = u.state
        if old and not telemetry.is_newer(old["boot_id"], old["seq"], _utc(_parse(old["reported_at"])),
                                          s.boot_id, s.seq, s.at, now):
            out.stale += 1
            if u.transport == "http":
                # An answered poll is a sign of life even when the device's facts did not move
                # (a replay or a retained copy over MQTT is not).
                change: dict[str, Any] = {"last_seen": u.received_at}
                if not old["online"]:
                    change.update(online=True, offline_reason=None, status_at=now)
                    history.append({"device_id": device_id, "at": now, "fact": "online", "old": False,
                                    "new": True})
                rows[device_id] = {**_keep(device_id), **change}
            continue
        values = _state_values(u)
        values["status_at"] = s.at if not old or not old["online"] else _parse(old["status_at"])
        rows[device_id] = values
        new_facts = {k: _jsonable(values[k]) for k in telemetry.TRACKED_FACTS}
        for fact, before, after in telemetry.changes(old, new_facts):
            history.append({"device_id": device_id, "at": now, "fact": fact, "old": before, "new": after})
            if fact == "firmware_version":
                firmware.append({"b_id": device_id, "b_fw": after})
        out.persisted += 1

    offline: list[str] = []
    for device_id, st in batch.statuses.items():
        old = stored.get(device_id)
        if device_id not in known or (old is None and device_id not in rows):
            continue  # nothing reported yet: the state message that follows creates the row
        current = rows.get(device_id, old)
        assert current is not None
        last_change = _utc(_parse(current.get("status_at")))
        # A last will is composed when the device connects, so its `at` is old by nature: an
        # offline status counts on arrival. An online status older than the last change is a
        # retained copy (say of a device that went silent since) and does not resurrect it.
        if st.online and last_change is not None and st.at < last_change:
            out.stale += 1
            continue
        out.persisted += 1
        was_online = bool(current["online"])
        if was_online != st.online:
            history.append({"device_id": device_id, "at": now, "fact": "online", "old": was_online,
                            "new": st.online})
        change = {"online": st.online, "offline_reason": None if st.online else st.reason,
                  "status_at": (st.at if st.online else st.received_at) if was_online != st.online else None,
                  "last_seen": st.received_at}
        if change["status_at"] is None:
            del change["status_at"]  # unchanged
        if device_id in rows:
            rows[device_id].update(change)
        else:
            rows[device_id] = {**_keep(device_id), **change}
        if not st.online:
            offline.append(device_id)

    _upsert_rows(conn, rows, now)
    if offline:
        out.children_unreachable = _children_unreachable(conn, sorted(offline), now, history)
    if history:
        conn.execute(insert(DeviceHistoryRow), history)
        out.history = len(history)
    if firmware:
        conn.execute(update(DeviceRow).where(DeviceRow.id == bindparam("b_id"))
                     .values(firmware_version=bindparam("b_fw"), firmware_running=bindparam("b_fw"),
                             updated_at=now), firmware)
    return out


def _parse(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _keep(device_id: str) -> dict[str, Any]:
    """Marker for a row whose reported facts stay: only the named columns are written."""
    return {"device_id": device_id, "_partial": True}


def _upsert_rows(conn: Connection, rows: dict[str, dict[str, Any]], now: datetime) -> None:
    full = [r for r in rows.values() if not r.get("_partial")]
    partial = [r for r in rows.values() if r.get("_partial")]
    if full:
        ins = _upsert(conn)(DeviceStateRow)
        stmt = ins.on_conflict_do_update(
            index_elements=[DeviceStateRow.device_id],
            set_={c: getattr(ins.excluded, c) for c in _STATE_COLUMNS},
        )
        conn.execute(stmt, [_complete(r, now) for r in full])
    # Rows that only move last_seen / online: group by the set of columns they change.
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in partial:
        cols = tuple(sorted(k for k in r if k not in ("device_id", "_partial")))
        groups.setdefault(cols, []).append(r)
    for cols, group in groups.items():
        stmt = update(DeviceStateRow).where(DeviceStateRow.device_id == bindparam("b_device_id")).values(
            {c: bindparam(f"b_{c}") for c in cols})
        conn.execute(stmt, [{"b_device_id": r["device_id"], **{f"b_{c}": r.get(c) for c in cols}}
                            for r in group])


def _complete(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    row.setdefault("status_at", now)
    return row


def _children_unreachable(conn: Connection, gateways: list[str], now: datetime,
                          history: list[dict[str, Any]]) -> int:
    """A gateway that went offline takes the devices behind it with it."""
    children: list[str] = []
    for part in _chunks(gateways):
        children.extend(conn.scalars(
            select(DeviceStateRow.device_id)
            .join(BrokerRouteRow, BrokerRouteRow.device_id == DeviceStateRow.device_id)
            .where(BrokerRouteRow.gateway_id.in_(part), DeviceStateRow.online.is_(True))))
    if not children:
        return 0
    for part in _chunks(children):
        conn.execute(update(DeviceStateRow).where(DeviceStateRow.device_id.in_(part))
                     .values(online=False, offline_reason="gateway", status_at=now))
    history.extend({"device_id": c, "at": now, "fact": "online", "old": True, "new": False} for c in children)
    return len(children)


def _discover(conn: Connection, hellos: list[HelloSeen], now: datetime, out: BatchOutcome) -> None:
    if not hellos:
        return
    ids = sorted(h.hello.device_id for h in hellos)
    existing: set[str] = set()
    for part in _chunks(ids):
        existing.update(conn.scalars(select(DiscoveredDeviceRow.device_id)
                                     .where(DiscoveredDeviceRow.device_id.in_(part))))
    fresh = [h for h in hellos if h.hello.device_id not in existing]
    seen = [h for h in hellos if h.hello.device_id in existing]
    if fresh:
        # A probe and the ingestor may announce the same device at once: the first one wins.
        conn.execute(_upsert(conn)(DiscoveredDeviceRow).on_conflict_do_nothing(), [{
            "device_id": h.hello.device_id, "status": "pending", "source": h.source,
            "address": h.address or h.hello.address, "hello": _hello_json(h.hello), "first_seen": now,
            "last_seen": h.received_at, "announcements": 1,
        } for h in fresh])
        out.discovered = [h.hello.device_id for h in fresh]
    if seen:
        conn.execute(
            update(DiscoveredDeviceRow).where(DiscoveredDeviceRow.device_id == bindparam("b_id")).values(
                hello=bindparam("b_hello"), last_seen=bindparam("b_seen"),
                announcements=DiscoveredDeviceRow.announcements + 1),
            [{"b_id": h.hello.device_id, "b_hello": _hello_json(h.hello), "b_seen": h.received_at} for h in seen])


def _identity(conn: Connection, hellos: list[HelloSeen], now: datetime, out: BatchOutcome,
              history: list[dict[str, Any]]) -> None:
    """A known device announcing another brand, serial or MAC: swapped hardware, a cloned id or a
    misrecorded inventory, for a person to look at (rule ORIG-003 reads the last one). Recorded as
    an `identity` history fact once per new announcement (a device says hello on every connect),
    and once more, with nothing differing, when it announces the inventory's identity again."""
    if not hellos:
        return
    by_id = {h.hello.device_id: h.hello for h in hellos}
    found: dict[str, dict[str, dict[str, str]]] = {}
    for part in _chunks(sorted(by_id)):
        for device_id, serial, mac, brand in conn.execute(
                select(DeviceRow.id, DeviceRow.serial, DeviceRow.mac, ProductRow.brand)
                .join(ProductRow, ProductRow.id == DeviceRow.product_id).where(DeviceRow.id.in_(part))):
            found[device_id] = telemetry.identity_differences(by_id[device_id], brand=brand, serial=serial, mac=mac)
    last: dict[str, Any] = {}
    for part in _chunks(sorted(found)):
        for device_id, new in conn.execute(
                select(DeviceHistoryRow.device_id, DeviceHistoryRow.new)
                .where(DeviceHistoryRow.device_id.in_(part), DeviceHistoryRow.fact == "identity")
                .order_by(DeviceHistoryRow.id)):
            last[device_id] = new
    for device_id, diff in sorted(found.items()):
        announced = {f: d["announced"] for f, d in diff.items()}
        if last.get(device_id, {}) == announced:  # unchanged (or never differed)
            continue
        history.append({"device_id": device_id, "at": now, "fact": "identity",
                        "old": {f: d["inventory"] for f, d in diff.items()} or last.get(device_id),
                        "new": announced})
        if diff:
            out.identity_changes.append((device_id, diff))


def _hello_json(hello: Hello) -> dict[str, Any]:
    return {f: _jsonable(getattr(hello, f)) for f in hello.__struct_fields__}


def mark_silent(conn: Connection, now: datetime, silence: timedelta) -> list[str]:
    """Devices that said nothing for `silence` go offline (their last will may never arrive)."""
    cutoff = now - silence
    # One statement, so a state committed meanwhile cannot be overwritten with "offline".
    ids = list(conn.scalars(
        update(DeviceStateRow)
        .where(DeviceStateRow.online.is_(True), DeviceStateRow.last_seen < cutoff)
        .values(online=False, offline_reason="silence", status_at=now)
        .returning(DeviceStateRow.device_id)))
    if ids:
        conn.execute(insert(DeviceHistoryRow), [
            {"device_id": i, "at": now, "fact": "online", "old": True, "new": False} for i in ids])
    return ids


def connectivity_counts(conn: Connection) -> dict[str, int]:
    """online / offline counts over devices that ever reported."""
    rows = conn.execute(select(DeviceStateRow.online, func.count()).group_by(DeviceStateRow.online))
    counts = {"online": 0, "offline": 0}
    for online, n in rows:
        counts["online" if online else "offline"] += n
    return counts
