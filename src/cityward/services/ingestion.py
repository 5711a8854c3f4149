"""Live state ingestion: device messages in, latest facts and history out, in batches.

Messages are decoded as they arrive and coalesced per device (the newest state, status and hello
of each device win), then written by one background writer in batches. Coalescing is what makes
a slow database safe: while a batch is being written, a device that reports ten times takes one
slot, so the backlog is bounded by the number of devices, not by the traffic, and nothing that
matters is lost (superseded messages are counted as such). Anything that is refused or dropped is
counted by reason and logged once per burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import OperationalError

from cityward.adapters.storage import states as store
from cityward.adapters.storage.states import Batch, HelloSeen, StateUpdate, StatusUpdate
from cityward.adapters.storage.uow import UnitOfWorkFactory, utcnow
from cityward.domain import telemetry
from cityward.domain.organizations import Caller
from cityward.domain.telemetry import Hello, Message, Rejected, Result, State, Status
from cityward.errors import StorageUnavailable
from cityward.services.organizations import system_caller

log = logging.getLogger("cityward.ingest")

Clock = Callable[[], datetime]


@dataclass
class IngestStats:
    received: int = 0
    persisted: int = 0
    superseded: int = 0  # replaced by a newer message of the same device before it was written
    stale: int = 0  # not newer than what was stored (retained copies, replays)
    discovered: int = 0
    identity_changes: int = 0  # known devices announcing another brand, serial or MAC
    batches: int = 0
    write_retries: int = 0  # batches kept and retried while the database was unavailable
    write_seconds: float = 0.0
    rejected: Counter[str] = field(default_factory=Counter)  # refused input, by reason
    dropped: Counter[str] = field(default_factory=Counter)  # accepted input we could not keep
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=50_000))  # receive → commit
    e2e_ms: deque[float] = field(default_factory=lambda: deque(maxlen=50_000))  # device's `at` → commit

    def as_dict(self) -> dict[str, Any]:
        def pick(samples: deque[float], q: float) -> float | None:
            ordered = sorted(samples)
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else None

        return {"received": self.received, "persisted": self.persisted, "superseded": self.superseded,
                "stale": self.stale, "discovered": self.discovered,
                "identity_changes": self.identity_changes, "batches": self.batches,
                "write_retries": self.write_retries,
                "write_seconds": round(self.write_seconds, 3), "rejected": dict(self.rejected),
                "dropped": dict(self.dropped), "latency_p50_ms": pick(self.latency_ms, 0.5),
                "latency_p99_ms": pick(self.latency_ms, 0.99), "e2e_p50_ms": pick(self.e2e_ms, 0.5),
                "e2e_p99_ms": pick(self.e2e_ms, 0.99)}


class _BurstLog:
    """One log line per reason per interval, with how many were suppressed in between."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def __call__(self, reason: str, detail: str) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -1e9) >= self.interval:
            held = self._held.pop(reason, 0)
            log.warning("rejected device message (%s): %s%s", reason, detail,
                        f" (+{held} more since the last report)" if held else "")
            self._last[reason] = now
        else:
            self._held[reason] += 1


class Ingestor:
    """Takes decoded device messages from any transport and keeps the database up to date."""

    def __init__(self, uow: UnitOfWorkFactory, *, clock: Clock = utcnow, max_batch: int = 5000,
                 max_delay: float = 0.2, max_pending: int = 250_000,
                 routes: Callable[[str], str | None] | None = None) -> None:
        self.uow = uow
        self.clock = clock
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_pending = max_pending
        self.routes = routes  # device id → gateway id it is reached through, if any
        self.stats = IngestStats()
        self._pending = Batch()
        self._received: dict[str, float] = {}  # device id → monotonic time its oldest pending msg came
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._burst = _BurstLog()
        self._system: Caller | None = None

    # --- intake (called from the transport's loop; never blocks, never raises on device input) ---

    def offer(self, topic: str, payload: bytes) -> None:
        """One MQTT message as received."""
        self.stats.received += 1
        decoded = telemetry.decode(topic, payload)
        if isinstance(decoded, Rejected):
            self.reject(decoded)
            return
        self.offer_message(decoded)

    def offer_message(self, msg: Message, *, transport: str = "mqtt", address: str | None = None) -> None:
        body = msg.payload
        now = self.clock()
        if isinstance(body, Result):
            # Results belong to whoever sent the command (MqttDriver); one reaching ingestion has
            # no command waiting for it here.
            self.reject(Rejected("unknown_command", f"result for {body.command_id} with no command waiting",
                                 msg.device_id))
            return
        if telemetry.ahead_of(body.at, now):
            # Ordering across boots trusts the device's clock: a message from the future would
            # outrank every genuine one until its date (protocol: "Clocks").
            self.reject(Rejected("future", f"{msg.channel} dated {body.at.isoformat()}, more than "
                                 f"{telemetry.MAX_CLOCK_SKEW.total_seconds() / 60:g} min ahead of the platform's "
                                 "clock", msg.device_id))
            return
        pending = self._pending
        if msg.device_id not in self._received and len(self._received) >= self.max_pending:
            self.stats.dropped["backlog_full"] += 1
            self._burst("backlog_full", f"{len(self._received)} devices waiting to be written")
            return
        via = self.routes(msg.device_id) if self.routes else None
        if isinstance(body, State):
            if pending.states.pop(msg.device_id, None) is not None:
                self.stats.superseded += 1
            pending.states[msg.device_id] = StateUpdate(body, transport, now, via)
        elif isinstance(body, Status):
            if pending.statuses.pop(msg.device_id, None) is not None:
                self.stats.superseded += 1
            reason = None if body.status == "online" else "will"
            pending.statuses[msg.device_id] = StatusUpdate(body.status == "online", body.at, now, reason)
        elif isinstance(body, Hello):
            if pending.hellos.pop(msg.device_id, None) is not None:
                self.stats.superseded += 1
            pending.hellos[msg.device_id] = HelloSeen(body, transport, now, address)
        self._received.setdefault(msg.device_id, time.monotonic())
        if len(pending) >= self.max_batch:
            self._wake.set()

    def offer_offline(self, device_id: str, reason: str) -> None:
        """A transport learned that a device is unreachable (an HTTP poll failed, say)."""
        now = self.clock()
        self._pending.statuses[device_id] = StatusUpdate(False, now, now, reason)
        self._received.setdefault(device_id, time.monotonic())

    def offer_alive(self, device_id: str) -> None:
        """A transport heard from a device without reading its facts (an HTTP 401 or 429): it is
        reachable, so it is online and not silent."""
        now = self.clock()
        self._pending.statuses[device_id] = StatusUpdate(True, now, now, None)
        self._received.setdefault(device_id, time.monotonic())

    def reject(self, rejected: Rejected) -> None:
        self.stats.rejected[rejected.reason] += 1
        self._burst(rejected.reason, rejected.detail)

    # --- the writer ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Write batches until `stop` is set, then write what is left."""
        stop = stop or asyncio.Event()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.max_delay)
            self._wake.clear()
            if len(self._pending):
                await self._write_pending()
            else:
                self._drained.set()
            if stop.is_set():
                if len(self._pending):
                    await self._write_pending()
                return

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything offered so far is written (for tests and orderly shutdown)."""
        deadline = time.monotonic() + timeout
        while len(self._pending) and time.monotonic() < deadline:
            self._drained.clear()
            self._wake.set()
            await asyncio.wait_for(self._drained.wait(), max(0.01, deadline - time.monotonic()))

    async def _write_pending(self) -> None:
        batch, self._pending = self._pending, Batch()
        received, self._received = self._received, {}
        delay = 0.5
        while True:
            started = time.monotonic()
            try:
                outcome = await asyncio.to_thread(self._persist, batch)
                break
            except (StorageUnavailable, OperationalError) as exc:
                # Keep the batch: newer messages that arrived meanwhile replace its entries.
                self.stats.write_retries += 1
                log.warning("database unavailable, batch of %d kept for retry: %s", len(batch), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                self._merge_back(batch, received)
                batch, self._pending = self._pending, Batch()
                received, self._received = self._received, {}
            except Exception:
                # A batch the database refuses for another reason (a bug, a constraint) must not
                # stop ingestion: it is dropped, counted and logged with its traceback.
                self.stats.dropped["write_failed"] += len(batch)
                log.exception("a batch of %d device messages could not be written and was dropped", len(batch))
                self._drained.set()
                return
        done = time.monotonic()
        self.stats.batches += 1
        self.stats.write_seconds += done - started
        self.stats.persisted += outcome.persisted
        self.stats.stale += outcome.stale
        self.stats.discovered += len(outcome.discovered)
        self.stats.identity_changes += len(outcome.identity_changes)
        for device_id, diff in outcome.identity_changes:
            log.warning("%s announced another identity than the inventory's: %s", device_id, ", ".join(
                f"{f} {d['inventory']!r} → {d['announced']!r}" for f, d in sorted(diff.items())))
        lat = self.stats.latency_ms
        for t0 in received.values():
            lat.append((done - t0) * 1000)
        wall = time.time()
        e2e = self.stats.e2e_ms
        for u in batch.states.values():
            e2e.append((wall - u.state.at.timestamp()) * 1000)
        for device_id in outcome.unknown - set(batch.hellos):
            self.reject(Rejected("unknown_device", f"{device_id} is not in the inventory (announce it with "
                                 "hello to be discovered)", device_id))
        self._drained.set()

    def _merge_back(self, batch: Batch, received: dict[str, float]) -> None:
        # Entries that arrived while the write failed are newer: they win.
        self._pending.states = {**batch.states, **self._pending.states}
        self._pending.statuses = {**batch.statuses, **self._pending.statuses}
        self._pending.hellos = {**batch.hellos, **self._pending.hellos}
        for k, t0 in received.items():
            self._received[k] = min(t0, self._received.get(k, t0))

    def _persist(self, batch: Batch) -> store.BatchOutcome:
        with self.uow(write=True) as uow:
            outcome = store.write_batch(uow.conn, batch, self.clock())
            if outcome.discovered or outcome.identity_changes:
                caller = self._system or system_caller(uow.session, "ingest")
                self._system = caller
                for device_id, diff in outcome.identity_changes:
                    uow.record(caller, "device.identity_mismatch", "device", device_id,
                               before={f: d["inventory"] for f, d in diff.items()},
                               after={f: d["announced"] for f, d in diff.items()})
                for device_id in outcome.discovered:
                    hello = batch.hellos[device_id]
                    uow.record(caller, "discovery.announced", "device", device_id,
                               after={"source": hello.source, "address": hello.address or hello.hello.address,
                                      "brand": hello.hello.brand, "model": hello.hello.model,
                                      "serial": hello.hello.serial, "mac": hello.hello.mac})
            uow.commit()
        return outcome


def sweep_silent(uow: UnitOfWorkFactory, silence: timedelta, clock: Clock = utcnow) -> list[str]:
    """Mark devices offline that have been silent for `silence` (default: three state intervals)."""
    with uow(write=True) as w:
        ids = store.mark_silent(w.conn, clock(), silence)
        w.commit()
    return ids


def connectivity(uow: UnitOfWorkFactory) -> dict[str, int]:
    with uow() as r:
        return store.connectivity_counts(r.conn)
