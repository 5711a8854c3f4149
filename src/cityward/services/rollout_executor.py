"""Carries out stored rollouts: advances waves, claims device actions, sends commands, records results.

Safe to kill at any moment. Every decision is written before it is acted on: an action is claimed
(status running, a command id, a lease) in one transaction before its command goes out, and a
result changes an action only while that action is still running under that command id. A
restarted executor finds running actions whose lease expired and sends the *same* command id
again: a device that applied it answers with its stored result instead of applying it twice.
Several executors (one per `cityward worker`) share the work through the database: claims use
`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one writer at a time anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from cityward.adapters.drivers.base import DriverError, Endpoint
from cityward.adapters.drivers.http import HttpDriver
from cityward.adapters.drivers.mqtt import RESULTS_ONLY, MqttDriver, MqttLink
from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import (
    DesiredConfigRow,
    DeviceRow,
    FirmwareReleaseRow,
    ProductRow,
    RolloutActionRow,
    RolloutRow,
    RolloutWaveRow,
)
from cityward.adapters.storage.uow import UnitOfWork, UnitOfWorkFactory
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.domain.products import product_key
from cityward.domain.rollouts import (
    DEVICE_ACTION,
    FIRMWARE_OPERATIONS,
    ROLLOUT_COMMAND_PREFIX,
    ActionStatus,
    Control,
    Operation,
    RolloutCommand,
    RolloutState,
    Verdict,
    WaveCounts,
    attempt_timeout,
    expected_seconds,
    follow_limit,
    transition,
    wave_verdict,
    window_open,
)
from cityward.domain.telemetry import Command, Result
from cityward.services import broker, city_ca, credentials, executors, firmware, firmware_guard, notifications
from cityward.services.firmware_downloads import DownloadServer, KnownGood, firmware_token
from cityward.services.rollouts import options_of, zone_windows

log = logging.getLogger("cityward.rollouts")
REASK_TIMEOUT = 5.0  # asking a silent device again about a command it may have taken
# The outcome of a command the device took (it answered `accepted` or `in_progress`) but never
# finished within its expected duration: failed, but never retried under a new command id, since
# the device may still be applying this one (a late result corrects the record).
LOST = "lost"
HEARTBEAT_EVERY = 5.0  # seconds between "still looking for work" marks (services/executors.py)
FIRMWARE_CHECK_EVERY = 30.0  # seconds between looks for failed upgrades on devices reporting the new version
_IN_CHUNK = 500  # ids per IN (...) list: well within SQLite's bound-parameter limit
_PER_DEVICE_PARAMS = (Operation.ROTATE_PASSWORD, Operation.RENEW_CERTIFICATE)  # the rest: one set per rollout
SYSTEM = Caller(actor="system:rollout-executor", org_id=0, org_name="cityward", org_kind=OrgKind.CITY,
                role=Role.ADMIN)


@dataclass(frozen=True)
class ExecutorOptions:
    mqtt_url: str | None
    firmware_store: Path
    listen: str = "127.0.0.1:0"  # the firmware download server devices fetch images from
    public_url: str | None = None  # the base URL devices are told (behind NAT, or listening on 0.0.0.0)
    tick: float = 0.5
    # How long past a command's own timeout its claim holds: after that, another executor (or
    # this one, restarted) takes the action over and sends the same command again.
    lease_grace: float = 30.0
    # A device silent this long is asked again under the same command id (doubling each time): a
    # result lost in a dropped link comes back in seconds, not after the whole timeout.
    reask_after: float | None = 4.0
    name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # Where the platform's own alerts to the city go (a firmware image changed on disk).
    alerts: notifications.AlertChannels = field(default_factory=notifications.AlertChannels)


@dataclass(frozen=True)
class Dispatch:
    action_id: int
    rollout_id: int
    device_id: str
    protocol: str
    address: str | None
    command_id: str
    action: str
    params: dict[str, Any]
    timeout: float
    secret: str | None  # the new password, or key and certificate (JSON), this attempt installs
    password: str | None = field(default=None, repr=False)  # the HTTP device's admin password now
    expected: float = 0.0  # seconds the device is expected to take (0: the attempt timeout)
    leased: float = 0.0  # the attempt timeout its claim's lease was computed with


async def _connect(url: str, client_id: str, attempts: int = 4) -> MqttLink:
    """The executor's broker link, retried with backoff: a busy broker is no reason to give up."""
    delay = 1.0
    for attempt in range(1, attempts + 1):
        try:
            return await MqttLink(url, client_id=client_id, subscriptions=RESULTS_ONLY).__aenter__()
        except DriverError as exc:
            if attempt == attempts:
                raise
            log.warning("rollout executor: %s; retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


@dataclass
class _Heard:
    """The last word a device said about the command being followed."""

    at: float | None = None  # time.monotonic() of it
    last: Result | None = None

    def hear(self, result: Result) -> None:
        self.at, self.last = time.monotonic(), result

    def describe(self) -> str:
        r = self.last
        if r is None:
            return "nothing"
        said = r.status + (f" {r.progress} %" if r.progress is not None else "") + (f" {r.detail}" if r.detail else "")
        return f"last said {said[:80]!r} {time.monotonic() - (self.at or 0):.0f} s ago"


def _timed_out(status: str, detail: str | None) -> bool:
    return status == "failed" and (detail or "").startswith("timeout")


def _silent(status: str, detail: str | None) -> bool:
    """No answer to this send (a timeout, or the device or link unreachable), as opposed to an
    answer: a device that took the command is still followed through these."""
    return status == "failed" and (detail or "").startswith(("timeout:", "unreachable:", "locked:"))


@dataclass(frozen=True)
class LateResult:
    """A device's terminal success for a rollout command, heard after nobody waited for it."""

    device_id: str
    command_id: str
    detail: str | None = None


def action_of(command_id: str) -> tuple[int, int] | None:
    """(rollout id, action id) of a rollout command id `rollout-{rollout}-{action}-{attempt}`."""
    parts = command_id[len(ROLLOUT_COMMAND_PREFIX):].split("-")
    if not command_id.startswith(ROLLOUT_COMMAND_PREFIX) or len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def correct_late_results(uow_factory: UnitOfWorkFactory, box: SecretBox, results: list[LateResult]) -> int:
    """The device's word outranks the record: an action recorded failed (or waiting for a retry)
    whose *same* command the device has now reported succeeded becomes succeeded, audited as
    `rollout.action_corrected`; the wave and rollout counts, derived from the actions, follow.
    A success for an earlier command id than the action's current one changes nothing (its
    current attempt decides). Returns how many actions were corrected."""
    wanted: dict[int, list[tuple[int, LateResult]]] = defaultdict(list)
    for late in results:
        found = action_of(late.command_id)
        if found is not None:
            wanted[found[1]].append((found[0], late))
    if not wanted:
        return 0
    corrected = 0
    with uow_factory(write=True) as uow:
        s = uow.session
        now = uow.clock()
        ids = sorted(wanted)
        actions: list[RolloutActionRow] = []
        for i in range(0, len(ids), _IN_CHUNK):
            q = select(RolloutActionRow).where(
                RolloutActionRow.id.in_(ids[i:i + _IN_CHUNK]),
                RolloutActionRow.status.in_((ActionStatus.FAILED.value, ActionStatus.PENDING.value)))
            actions += s.scalars(q.with_for_update() if uow.dialect == "postgresql" else q)
        operations: dict[int, str] = {}
        for rollout_id, operation in s.execute(select(RolloutRow.id, RolloutRow.operation).where(
                RolloutRow.id.in_({a.rollout_id for a in actions}))) if actions else ():
            operations[rollout_id] = operation
        passwords: dict[str, str] = {}
        for action in actions:
            match = [late for rollout_id, late in wanted[action.id]
                     if (action.rollout_id, action.device_id, action.command_id) == (rollout_id, late.device_id,
                                                                                     late.command_id)]
            if not match:
                continue
            late = match[0]
            before = {"status": action.status, "detail": action.detail}
            if action.secret is not None and operations.get(action.rollout_id) == Operation.ROTATE_PASSWORD:
                passwords[action.device_id] = box.open(action.device_id, f"rollout:{late.command_id}", action.secret)
            action.status = ActionStatus.SUCCEEDED.value
            action.detail = f"succeeded late (corrected): {late.detail or 'the device reported success'}"[:500]
            action.secret, action.lease_until, action.updated_at = None, None, now
            uow.record(SYSTEM, "rollout.action_corrected", "device", action.device_id, before=before, after={
                "rollout": action.rollout_id, "command_id": late.command_id, "status": action.status,
                "attempt": action.attempts, "detail": (late.detail or "")[:200]})
            corrected += 1
        if passwords:
            credentials.store_secrets(s, box, credentials.ADMIN, passwords, now)
        uow.commit()
    if corrected:
        log.info("corrected %d rollout actions recorded failed from the devices' late results", corrected)
    return corrected


def correct_from_reported_firmware(uow_factory: UnitOfWorkFactory, *, within: timedelta = timedelta(days=7)) -> int:
    """An upgrade recorded failed (or waiting for a retry) on a device that now reports the
    release's version — over HTTP, where a late result is not pushed, or whose result came while
    no executor listened — becomes succeeded, audited as `rollout.action_corrected`. Upgrade
    rollouts created within `within` are looked at; an action never sent is left alone."""
    corrected = 0
    with uow_factory(write=True) as uow:
        s = uow.session
        now = uow.clock()
        undone = (ActionStatus.FAILED.value, ActionStatus.PENDING.value)
        has_failed = exists().where(RolloutActionRow.rollout_id == RolloutRow.id,
                                    RolloutActionRow.status.in_(undone), RolloutActionRow.attempts > 0)
        found = s.execute(select(RolloutRow.id, RolloutRow.params).where(
            RolloutRow.operation == Operation.UPGRADE_FIRMWARE.value, RolloutRow.created_at >= now - within,
            has_failed)).all()
        for rollout_id, params in found:
            version = s.scalar(select(FirmwareReleaseRow.version).where(
                FirmwareReleaseRow.id == int(params["release"])))
            if version is None:
                continue
            q = (select(RolloutActionRow).join(DeviceRow, DeviceRow.id == RolloutActionRow.device_id).where(
                RolloutActionRow.rollout_id == rollout_id, RolloutActionRow.attempts > 0,
                RolloutActionRow.status.in_(undone), DeviceRow.firmware_running == version))
            for action in s.scalars(q.with_for_update(of=RolloutActionRow) if uow.dialect == "postgresql" else q):
                before = {"status": action.status, "detail": action.detail}
                action.status = ActionStatus.SUCCEEDED.value
                action.detail = f"succeeded late (corrected): the device reports firmware {version}"[:500]
                action.secret, action.lease_until, action.updated_at = None, None, now
                uow.record(SYSTEM, "rollout.action_corrected", "device", action.device_id, before=before, after={
                    "rollout": rollout_id, "command_id": action.command_id, "status": action.status,
                    "attempt": action.attempts, "detail": f"reports firmware {version}"})
                corrected += 1
        uow.commit()
    if corrected:
        log.info("corrected %d firmware upgrades recorded failed on devices that report the new version", corrected)
    return corrected


__all__ = ["Dispatch", "Executor", "ExecutorOptions", "LateResult", "correct_from_reported_firmware",
           "correct_late_results", "firmware_token"]


def _claim_timeout(row: RolloutRow) -> float:
    """The attempt timeout a claim's lease covers, known without the device's product: the
    rollout's own, or its operation's default (a product declaring longer renews the lease)."""
    op = Operation(row.operation)
    return attempt_timeout(options_of(row).timeout_s, expected_seconds(op))


def _upgrade_minutes(s: Session, device_ids: list[str]) -> dict[str, float]:
    """Each device's declared firmware upgrade duration: its product's `upgrade_minutes`, else
    that of the product it is a relabel of (its true manufacturer's)."""
    by_device: dict[str, int] = {}
    for i in range(0, len(device_ids), _IN_CHUNK):
        for device_id, product_id in s.execute(select(DeviceRow.id, DeviceRow.product_id).where(
                DeviceRow.id.in_(device_ids[i:i + _IN_CHUNK]))):
            by_device[device_id] = product_id
    products = {p.id: p for p in s.scalars(select(ProductRow).where(ProductRow.id.in_(set(by_device.values()))))}
    minutes: dict[int, float] = {}
    for pid, p in products.items():
        value = p.upgrade_minutes
        if value is None and p.origin_depth:
            bk, mk = product_key(p.origin_brand, p.origin_model)
            value = s.scalar(select(ProductRow.upgrade_minutes).where(ProductRow.brand_key == bk,
                                                                      ProductRow.model_key == mk))
        if value is not None:
            minutes[pid] = value
    return {d: minutes[pid] for d, pid in by_device.items() if pid in minutes}


class Executor:
    def __init__(self, uow_factory: UnitOfWorkFactory, box: SecretBox, secret_key: bytes,
                 options: ExecutorOptions) -> None:
        self.uow = uow_factory
        self.box = box
        self.key = secret_key
        self.options = options
        self.inflight: dict[int, asyncio.Task[None]] = {}
        self.base_url = ""
        self.sent = 0
        self.followed = 0  # follow-ups under the same command id of a device still working on it
        self.corrected = 0  # actions recorded failed that a late result turned into succeeded
        self.results: dict[str, int] = defaultdict(int)
        self._mqtt: MqttDriver | None = None
        self._http: HttpDriver | None = None
        self._verified: dict[int, dict[str, Any]] = {}
        self._ca: Any = None
        self._outcomes: asyncio.Queue[tuple[Dispatch, str, str | None, asyncio.Future[None]]] | None = None
        self._beat_at = -HEARTBEAT_EVERY
        self._late: dict[str, LateResult] = {}  # late successes to check against recorded failures
        # Firmware integrity (services/firmware_guard.py): stamps of stored images that hashed
        # right, images found changed (SHA-256 -> reason), alerts still to deliver.
        self.images = KnownGood()
        self.downloads: DownloadServer | None = None
        self._changed: dict[str, str] = {}
        self._reported: set[str] = set()
        self._refusing = threading.Lock()
        self._alerts: list[firmware_guard.Stopped] = []
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def reasked(self) -> int:
        """Commands sent again, under the same id, to a device that went silent."""
        return self._mqtt.reasked if self._mqtt is not None else 0

    # --- the loop ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Executor]:
        """The device links and the firmware server, for as long as this executor works."""
        async with contextlib.AsyncExitStack() as stack:
            await self._serve_firmware(stack)
            self._http = await stack.enter_async_context(HttpDriver(timeout=10.0))
            if self.options.mqtt_url:
                url = await asyncio.to_thread(broker.platform_broker_url, self.uow, self.box, self.options.mqtt_url)
                client_id = f"cityward-exec-{self.options.name}"[:64]
                link = await _connect(url, client_id)
                stack.push_async_exit(link.__aexit__)
                self._mqtt = MqttDriver(link, orphan=self._on_orphan)
                pump = asyncio.create_task(link.run())
                stack.callback(pump.cancel)
            self._outcomes = asyncio.Queue()
            writer = asyncio.create_task(self._write_outcomes())
            corrector = asyncio.create_task(self._correct_loop())
            try:
                yield self
            finally:
                writer.cancel()
                corrector.cancel()
                self._outcomes = None
                await self._settle_alerts()

    async def run(self, stop: asyncio.Event, *, until_done: set[int] | None = None) -> None:
        """The one-machine executor: work until `stop` is set, or until every rollout in
        `until_done` has nothing left to do."""
        async with self.session():
            try:
                while not stop.is_set():
                    busy = await self.tick()
                    if until_done is not None and not busy & until_done and not self.inflight:
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.options.tick)
            finally:
                for task in self.inflight.values():
                    task.cancel()  # their actions stay claimed; the lease brings them back
                await asyncio.gather(*self.inflight.values(), return_exceptions=True)

    async def tick(self) -> set[int]:
        """One round over the running rollouts; returns those with work still open."""
        claimed, busy = await asyncio.to_thread(self.claim_all)
        dispatches = await asyncio.to_thread(self.build_many, claimed) if claimed else []
        for d in dispatches:
            self.inflight[d.action_id] = asyncio.create_task(self._perform(d))
        self._schedule_alerts()
        return busy

    async def perform(self, action_id: int, command_id: str) -> None:
        """One claimed action, carried out here (a worker's job)."""
        d = await asyncio.to_thread(self.build, action_id, command_id)
        self._schedule_alerts()
        if d is not None:
            self.inflight[d.action_id] = asyncio.current_task()  # type: ignore[assignment]
            await self._perform(d)

    # --- claiming (one transaction per rollout) ------------------------------------------------------

    def claim_all(self) -> tuple[list[tuple[int, str]], set[int]]:
        """Claim what may start now in every running rollout: (action id, command id) pairs, each
        already marked running under a lease; and the rollouts that still have work."""
        if time.monotonic() - self._beat_at >= HEARTBEAT_EVERY:  # so pages know an executor is here
            executors.beat(self.uow, self.options.name)
            self._beat_at = time.monotonic()
        # Finished rollouts are not visited again: a running one with a wave still open, or an
        # aborted one with commands still out, is all that can have work.
        open_wave = exists().where(RolloutWaveRow.rollout_id == RolloutRow.id, RolloutWaveRow.finished_at.is_(None))
        still_out = exists().where(RolloutActionRow.rollout_id == RolloutRow.id,
                                   RolloutActionRow.status == ActionStatus.RUNNING)
        with self.uow() as uow:
            active = uow.session.execute(select(RolloutRow.id, RolloutRow.operation).where(or_(
                and_(RolloutRow.control == Control.RUNNING, open_wave),
                and_(RolloutRow.control == Control.ABORTED, still_out))).order_by(RolloutRow.id)).all()
        ids = [rid for rid, _op in active]
        if self._ca is None and any(op == Operation.RENEW_CERTIFICATE for _rid, op in active):
            # Its own write transaction, so not inside a claim (SQLite has one writer at a time).
            self._ca = city_ca.ensure(self.uow, self.box, SYSTEM)
        out: list[tuple[int, str]] = []
        busy: set[int] = set()
        for rid in ids:
            found, open_work = self._claim(rid)
            out += found
            if open_work:
                busy.add(rid)
        return out, busy

    def _claim(self, rollout_id: int) -> tuple[list[tuple[int, str]], bool]:
        with self.uow(write=True) as uow:
            s = uow.session
            row = s.scalar(select(RolloutRow).where(RolloutRow.id == rollout_id).with_for_update())
            if row is None:
                return [], False
            now = uow.clock()
            running = s.scalar(select(func.count()).select_from(RolloutActionRow).where(
                RolloutActionRow.rollout_id == rollout_id, RolloutActionRow.status == ActionStatus.RUNNING)) or 0
            if row.control == Control.ABORTED:  # running commands finish; nothing new starts
                expired = self._expired(s, uow, row, now)
                uow.commit()
                return expired, running > 0
            if row.control != Control.RUNNING:  # paused (or not started) since claim_all looked
                uow.commit()
                return [], running > 0
            wave = self._advance(s, uow, row, now)
            if wave is None or row.control != Control.RUNNING:
                uow.commit()
                return [], running > 0
            opts = options_of(row)
            dispatches = self._expired(s, uow, row, now)
            free = opts.concurrency - running
            if free > 0:
                windows = zone_windows(s)
                open_zones = [z for z, w in windows.items() if w is None or window_open(w, now)]
                q = (select(RolloutActionRow).join(DeviceRow, DeviceRow.id == RolloutActionRow.device_id)
                     .where(RolloutActionRow.rollout_id == rollout_id, RolloutActionRow.wave == wave,
                            RolloutActionRow.status == ActionStatus.PENDING, DeviceRow.zone_id.in_(open_zones))
                     .order_by(RolloutActionRow.id).limit(free))
                if uow.dialect == "postgresql":
                    q = q.with_for_update(skip_locked=True, of=RolloutActionRow)
                for action in s.scalars(q):
                    action.attempts += 1
                    action.command_id = f"{ROLLOUT_COMMAND_PREFIX}{rollout_id}-{action.id}-{action.attempts}"
                    fresh = self._fresh_secret(Operation(row.operation), action.device_id)
                    if fresh is not None:  # stored before it is sent, so a re-send carries the same
                        action.secret = self.box.seal(action.device_id, f"rollout:{action.command_id}", fresh)
                    dispatches.append(self._lease(row, action, now))
            uow.commit()
            return dispatches, True

    def _expired(self, s: Session, uow: UnitOfWork, row: RolloutRow, now: datetime) -> list[tuple[int, str]]:
        """Running actions nobody is following any more (their executor died): the same command again."""
        q = (select(RolloutActionRow).where(RolloutActionRow.rollout_id == row.id,
                                            RolloutActionRow.status == ActionStatus.RUNNING,
                                            RolloutActionRow.lease_until < now,
                                            RolloutActionRow.id.not_in(list(self.inflight) or [-1]))
             .order_by(RolloutActionRow.id))
        if uow.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        out = []
        for action in s.scalars(q):
            log.info("rollout %s: %s: resending %s (its executor stopped following it)", row.id, action.device_id,
                     action.command_id)
            out.append(self._lease(row, action, now))
        return out

    def _lease(self, row: RolloutRow, action: RolloutActionRow, now: datetime) -> tuple[int, str]:
        action.status = ActionStatus.RUNNING.value
        action.lease_until = now + timedelta(seconds=self._lease_seconds(_claim_timeout(row)))
        action.claimed_by = self.options.name
        action.updated_at = now
        assert action.command_id is not None
        return action.id, action.command_id

    def _lease_seconds(self, follow: float) -> float:
        """A claim holds while its command is followed for `follow` seconds, plus the last ask
        and the grace before another executor takes it over."""
        return follow + REASK_TIMEOUT + self.options.lease_grace

    def build(self, action_id: int, command_id: str) -> Dispatch | None:
        """The command for a claimed action, from the database (None if it is no longer running
        under this command id): any executor can carry out what another one claimed."""
        built = self.build_many([(action_id, command_id)])
        return built[0] if built else None

    def build_many(self, claims: list[tuple[int, str]]) -> list[Dispatch]:
        """`build` for many claims at once: a few set-wise reads, not a round of reads per device
        (at thousands of devices a second, per-row loads were most of the executor's CPU)."""
        wanted = dict(claims)
        out: list[Dispatch] = []
        with self.uow() as uow:
            s = uow.session
            ids = sorted(wanted)
            found: list[tuple[RolloutActionRow, str | None, str | None]] = []
            for i in range(0, len(ids), _IN_CHUNK):
                q = (select(RolloutActionRow, DeviceRow.protocol, DeviceRow.address)
                     .join(DeviceRow, DeviceRow.id == RolloutActionRow.device_id)
                     .where(RolloutActionRow.id.in_(ids[i:i + _IN_CHUNK]),
                            RolloutActionRow.status == ActionStatus.RUNNING))
                found += [(a, protocol, address) for a, protocol, address in s.execute(q)
                          if a.command_id == wanted[a.id]]
            rollouts = {r.id: r for r in s.scalars(select(RolloutRow).where(
                RolloutRow.id.in_({a.rollout_id for a, _p, _a in found})))}
            http = [a.device_id for a, protocol, _a in found if protocol == "http"]
            passwords = credentials.load_secrets(self.uow, self.box, credentials.ADMIN, http) if http else {}
            shared: dict[int, dict[str, Any]] = {}  # parameters that are the same for every device of a rollout
            firmware_devices = [a.device_id for a, _p, _a in found
                                if Operation(rollouts[a.rollout_id].operation) in FIRMWARE_OPERATIONS]
            minutes = _upgrade_minutes(s, firmware_devices) if firmware_devices else {}
            refused: dict[int, firmware.ReleaseRefused] = {}  # rollout -> why its firmware may not be offered
            broken: set[int] = set()
            for action, protocol, address in found:
                row = rollouts[action.rollout_id]
                if row.id in refused or row.id in broken:
                    continue
                op = Operation(row.operation)
                opts = options_of(row)
                expected = expected_seconds(op, minutes.get(action.device_id))
                command_id = wanted[action.id]
                try:  # one claim that cannot be built does not hold up the others
                    secret = (self.box.open(action.device_id, f"rollout:{command_id}", action.secret)
                              if action.secret is not None else None)
                    if op in _PER_DEVICE_PARAMS:
                        params = self._params(s, op, dict(row.params), secret)
                    else:
                        if row.id not in shared:
                            shared[row.id] = self._params(s, op, dict(row.params), None)
                        params = dict(shared[row.id])
                except firmware.ReleaseRefused as exc:
                    refused[row.id] = exc
                    continue
                except Exception:  # a bug, not the device's: its lease brings the action back
                    log.exception("rollout %s: %s: building %s failed", row.id, action.device_id, command_id)
                    if op not in _PER_DEVICE_PARAMS:
                        broken.add(row.id)  # the same for all its devices: said once
                    continue
                out.append(Dispatch(action.id, row.id, action.device_id, protocol or "mqtt", address, command_id,
                                    DEVICE_ACTION[op], params, attempt_timeout(opts.timeout_s, expected), secret,
                                    passwords.get(action.device_id), expected, _claim_timeout(row)))
        for why in {e.sha256: e for e in refused.values()}.values():
            self._refuse_image(why.sha256, why.reason, claimed=[a.id for a, _p, _a in found
                                                                if a.rollout_id in refused],
                               event=firmware_guard.ALERT_KIND if isinstance(why, firmware.ImageChanged)
                               else "firmware.release_refused")
        return out

    def _fresh_secret(self, op: Operation, device_id: str) -> str | None:
        """What an attempt installs on the device: a new password, or a new key and certificate
        from the city CA (JSON)."""
        if op is Operation.ROTATE_PASSWORD:
            return secrets.token_urlsafe(24)
        if op is Operation.RENEW_CERTIFICATE:
            assert self._ca is not None, "claim_all loads the city CA first"
            certificate, private_key = city_ca.issue(self._ca, device_id)
            return json.dumps({"certificate": certificate, "private_key": private_key})
        return None

    def _params(self, s: Session, op: Operation, stored: dict[str, Any], secret: str | None) -> dict[str, Any]:
        if op is Operation.UPGRADE_FIRMWARE:
            return self._firmware_params(s, int(stored["release"]))
        if op is Operation.SET_CONFIG:
            desired = s.get(DesiredConfigRow, int(stored["config"]))
            assert desired is not None
            return {"config": desired.config, "config_hash": desired.config_hash}
        if op is Operation.ROTATE_PASSWORD:
            return {"password": secret}
        if op is Operation.RENEW_CERTIFICATE:
            assert secret is not None
            issued: dict[str, Any] = json.loads(secret)
            return issued
        if op is Operation.QUARANTINE:
            return {"reason": stored.get("reason", "")}
        return {}

    def _firmware_params(self, s: Session, release_id: int) -> dict[str, Any]:
        # Verified again (hash and signature) by this executor each time it offers the image: a file
        # with the stamp it last hashed right with is not hashed again (firmware.FileStamp), any other
        # is, and one that changed is refused (firmware.ImageChanged, handled by build_many).
        known = self._verified.get(release_id)
        checked = firmware.verified_image(self.uow, self.options.firmware_store, release_id,
                                          unchanged=self.images.get(known["sha256"]) if known else None)
        view = checked.view
        self.images.set(view.sha256, checked.stamp)
        self._verified[release_id] = {
            "url": f"{self.base_url}/firmware/{firmware_token(self.key, view.sha256)}/{view.sha256}",
            "version": view.version, "size": view.size, "sha256": view.sha256, "signature": checked.signature,
            "key_id": view.key_id}
        return dict(self._verified[release_id])

    def _advance(self, s: Session, uow: UnitOfWork, row: RolloutRow, now: datetime) -> int | None:
        """The wave now being worked on, after closing finished waves; None when all are done.
        A wave past its failure threshold pauses or aborts the rollout here."""
        opts = options_of(row)
        counts: dict[int, dict[str, int]] = defaultdict(dict)
        for number, status, n in s.execute(select(RolloutActionRow.wave, RolloutActionRow.status, func.count())
                                           .where(RolloutActionRow.rollout_id == row.id)
                                           .group_by(RolloutActionRow.wave, RolloutActionRow.status)):
            counts[number][status] = n
        for wave in s.scalars(select(RolloutWaveRow).where(RolloutWaveRow.rollout_id == row.id)
                              .order_by(RolloutWaveRow.number)):
            c = counts.get(wave.number, {})
            wc = WaveCounts(size=sum(n for st, n in c.items() if st not in (ActionStatus.SKIPPED,
                                                                           ActionStatus.CANCELLED)),
                            succeeded=c.get(ActionStatus.SUCCEEDED, 0), failed=c.get(ActionStatus.FAILED, 0),
                            running=c.get(ActionStatus.RUNNING, 0), pending=c.get(ActionStatus.PENDING, 0))
            if wave.finished_at is not None:
                continue
            if wave.started_at is None:
                wave.started_at = now
            if wave.verdict == "resumed":  # an operator accepted its failures
                verdict = Verdict.WAIT if wc.pending or wc.running else Verdict.ADVANCE
            else:
                verdict = wave_verdict(wc, opts)
            if verdict is Verdict.WAIT:
                return wave.number
            if verdict is Verdict.ADVANCE:
                wave.finished_at = now
                wave.verdict = wave.verdict or Verdict.ADVANCE.value
                uow.record(SYSTEM, "rollout.wave_finished", "rollout", row.id, after={
                    "wave": wave.number, "succeeded": wc.succeeded, "failed": wc.failed, "size": wc.size})
                continue
            reason = (f"wave {wave.number}: {wc.failed} of {wc.size} failed, {wc.succeeded} succeeded "
                      f"(thresholds: {opts.failure_threshold} % failed"
                      + (f" or {opts.failure_count}" if opts.failure_count else "")
                      + f", {opts.success_threshold} % to succeed)")
            wave.verdict = verdict.value
            before = row.control
            # The same state machine as the operator's commands: a wave is open, so it is running.
            command = RolloutCommand.PAUSE if verdict is Verdict.PAUSE else RolloutCommand.ABORT
            row.control = transition(row.id, RolloutState.RUNNING, command).value
            if command is RolloutCommand.ABORT:
                wave.finished_at = now
                s.execute(update(RolloutActionRow).where(
                    RolloutActionRow.rollout_id == row.id, RolloutActionRow.status == ActionStatus.PENDING)
                    .values(status=ActionStatus.CANCELLED.value, detail="rollout aborted", updated_at=now))
            row.control_reason, row.updated_at = reason, now
            uow.record(SYSTEM, f"rollout.{command.past}", "rollout", row.id,
                       before={"control": before}, after={"control": row.control, "reason": reason})
            return None
        return None

    # --- one device ---------------------------------------------------------------------------------

    async def _perform(self, d: Dispatch) -> None:
        try:
            status, detail = await self._follow(d)
            if status == "auth" and d.secret is not None and d.action == "set_password":
                # A rotated HTTP password is in force the moment the device applies it: follow the
                # same command with the new one (the device answers from its stored result).
                now = datetime.now(UTC)
                command = Command(command_id=d.command_id, action=d.action, issued_at=now,
                                  expires_at=now + timedelta(seconds=d.timeout), params=d.params)
                status, detail = await self._send(d, command, d.secret)
            if status == "auth":
                status = "failed"
            self.results[status] += 1
            await self._record(d, status, detail)
        except Exception:  # a bug, not a device problem: the lease brings the action back
            log.exception("rollout %s: %s: unexpected error", d.rollout_id, d.device_id)
        finally:
            self.inflight.pop(d.action_id, None)

    async def _follow(self, d: Dispatch) -> tuple[str, str | None]:
        """Send the command and follow it under its one command id until the device answers a
        terminal result, or stops working on it.

        A device that has taken the command (it answered `accepted` or `in_progress`, now or to an
        earlier send of the same id) is still working while its last word is less than its
        expected duration old: past the attempt timeout it is asked again under the same id, never
        under a new one. One that never said a word is asked once more when the timeout ends (the
        command has expired by then, so a device that did not get it can never start it); still
        silent, it failed and may be retried under a new id. One that took it and then fell silent
        for longer than expected is LOST: failed, with no retry that could make it act twice."""
        expected = d.expected or d.timeout
        now = datetime.now(UTC)
        command = Command(command_id=d.command_id, action=d.action, issued_at=now,
                          expires_at=now + timedelta(seconds=d.timeout), params=d.params)
        self.sent += 1
        heard = _Heard()
        started = time.monotonic()
        limit = started + follow_limit(d.timeout, expected)
        if d.timeout > d.leased:  # the product declares a longer upgrade than the claim assumed
            await self._renew(d, d.timeout)
        status, detail = await self._send(d, command, d.password, heard=heard)
        if _timed_out(status, detail) and heard.at is None:
            # The device may have taken the command and be slow to say so: ask once more under
            # the same id (it answers from its stored result) before a retry with a new id
            # could make it act twice.
            status, detail = await self._send(d, command, d.password, timeout=min(d.timeout, REASK_TIMEOUT),
                                              heard=heard)
        while heard.at is not None and _silent(status, detail):
            now_m = time.monotonic()
            quiet = now_m - heard.at
            if quiet >= expected or now_m >= limit:
                why = (f"silent for {quiet:.0f} s, longer than the {expected:g} s it is expected to take"
                       if quiet >= expected else
                       f"still not finished after {now_m - started:.0f} s (at most {limit - started:.0f} s)")
                return LOST, (f"timeout: took command {d.command_id} ({heard.describe()}) but {why}; not "
                              "retried under a new command id while it may still apply this one")
            window = max(1.0, min(heard.at + expected, limit) - now_m)
            self.followed += 1
            log.info("rollout %s: %s: still working on %s (%s); asking again under the same id",
                     d.rollout_id, d.device_id, d.command_id, heard.describe())
            await self._renew(d, window)
            asked = time.monotonic()
            status, detail = await self._send(d, command, d.password, timeout=window, heard=heard)
            if _silent(status, detail) and time.monotonic() - asked < 1.0:
                # Unreachable at once (an HTTP device restarting into its new firmware, the
                # platform's own link down): it took the command, so wait and ask again.
                await asyncio.sleep(min(2.0, window))
        return status, detail

    async def _renew(self, d: Dispatch, follow: float) -> None:
        """Extend the claim while this executor still follows the command (one write, only for
        a device slower than its claim assumed): no other executor takes over a device at work."""
        seconds = self._lease_seconds(follow)

        def write() -> None:
            with self.uow(write=True) as uow:
                uow.session.execute(update(RolloutActionRow).where(
                    RolloutActionRow.id == d.action_id, RolloutActionRow.status == ActionStatus.RUNNING,
                    RolloutActionRow.command_id == d.command_id)
                    .values(lease_until=uow.clock() + timedelta(seconds=seconds)))
                uow.commit()
        await asyncio.to_thread(write)

    async def _send(self, d: Dispatch, command: Command, password: str | None,
                    timeout: float | None = None, heard: _Heard | None = None) -> tuple[str, str | None]:
        try:
            if d.protocol == "http":
                assert self._http is not None
                driver: Any = self._http
                endpoint = Endpoint(d.device_id, d.address, password)
            else:
                if self._mqtt is None:
                    return "failed", "no MQTT broker configured for this executor"
                driver, endpoint = self._mqtt, Endpoint(d.device_id)
            extra = {"reask_after": self.options.reask_after} if driver is self._mqtt else {}
            last = None
            async for result in driver.send(endpoint, command, timeout=timeout or d.timeout, **extra):
                last = result
                if heard is not None:
                    heard.hear(result)
            assert last is not None
            return last.status, last.detail
        except DriverError as exc:
            if exc.reason == "auth":
                return "auth", str(exc)
            return "failed", f"{exc.reason}: {exc}"[:500]

    def _finish(self, d: Dispatch, status: str, detail: str | None) -> None:
        self._finish_many([(d, status, detail)])

    def _finish_many(self, outcomes: list[tuple[Dispatch, str, str | None]]) -> None:
        """Results written in one transaction (each with its audit event): one commit and a few
        set-wise statements per batch, not per device, keep thousands of results a second within
        one database writer."""
        with self.uow(write=True) as uow:
            s = uow.session
            now = uow.clock()
            ids = sorted({d.action_id for d, _st, _de in outcomes})
            with s.no_autoflush:  # read everything first; the changes go out in one flush
                actions: dict[int, RolloutActionRow] = {}
                for i in range(0, len(ids), _IN_CHUNK):
                    actions.update((a.id, a) for a in s.scalars(select(RolloutActionRow).where(
                        RolloutActionRow.id.in_(ids[i:i + _IN_CHUNK]))))
                # Shared locks on the rollouts (PostgreSQL): an abort committing meanwhile cannot
                # leave a retried action pending in an aborted rollout.
                rows = {r.id: r for r in s.scalars(select(RolloutRow).where(
                    RolloutRow.id.in_({d.rollout_id for d, _st, _de in outcomes}))
                    .order_by(RolloutRow.id).with_for_update(read=True))}
                passwords: dict[str, str] = {}
                for d, status, detail in outcomes:
                    action, row = actions.get(d.action_id), rows.get(d.rollout_id)
                    if (action is None or row is None or action.status != ActionStatus.RUNNING
                            or action.command_id != d.command_id):
                        continue  # a result for an action already decided changes nothing
                    if status == "succeeded":
                        new = ActionStatus.SUCCEEDED
                    elif (status != LOST and action.attempts <= options_of(row).retries
                          and row.control != Control.ABORTED):
                        # Only after a terminal answer (or none at all to a command that has
                        # expired): a device still applying the last one never gets a new id.
                        new = ActionStatus.PENDING  # another attempt, with a new command id
                    else:
                        new = ActionStatus.FAILED
                    action.status, action.detail = new.value, (detail or status)[:500]
                    action.lease_until, action.updated_at = None, now
                    if new is ActionStatus.SUCCEEDED and d.secret is not None and d.action == "set_password":
                        passwords[d.device_id] = d.secret
                    if status != LOST:  # a lost command's late success still needs what it installed
                        action.secret = None  # a retry generates its own; a success is kept as the device's password
                    uow.record(SYSTEM, f"rollout.device_{new.value}", "device", d.device_id, after={
                        "rollout": d.rollout_id, "command_id": d.command_id, "attempt": action.attempts,
                        "result": status, "detail": (detail or "")[:200]})
            if passwords:
                credentials.store_secrets(s, self.box, credentials.ADMIN, passwords, now)
            uow.commit()

    async def _record(self, d: Dispatch, status: str, detail: str | None) -> None:
        """Hand a result to the batch writer and wait until it is stored."""
        changed = self._changed.get(str(d.params.get("sha256"))) if d.action == "upgrade_firmware" else None
        if changed is not None and status != "succeeded":  # its download was refused or cut off
            detail = f"{changed}; the device says: {detail or status}"
        if self._outcomes is None:  # no session (tests driving one action)
            await asyncio.to_thread(self._finish, d, status, detail)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._outcomes.put((d, status, detail, done))
        await done

    async def _write_outcomes(self) -> None:
        assert self._outcomes is not None
        while True:
            batch = [await self._outcomes.get()]
            while not self._outcomes.empty() and len(batch) < 500:
                batch.append(self._outcomes.get_nowait())
            try:
                await asyncio.to_thread(self._finish_many, [(d, st, de) for d, st, de, _f in batch])
            except Exception as exc:  # the database refused: those actions come back by their lease
                log.error("storing %d rollout results failed: %s", len(batch), exc)
                for *_rest, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for *_rest, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    # --- late results ---------------------------------------------------------------------------------

    def _on_orphan(self, result: Result, rejected: Any) -> None:
        """A result nobody here is waiting for: another executor's command, a repeat, or the late
        success of a command already recorded failed, which must correct that record."""
        log.debug("%s", rejected.detail)
        if (result.status == "succeeded" and result.command_id.startswith(ROLLOUT_COMMAND_PREFIX)
                and len(self._late) < 100_000):
            self._late[result.command_id] = LateResult(result.device_id, result.command_id, result.detail)

    async def _correct_loop(self) -> None:
        checked = -math.inf
        while True:
            await asyncio.sleep(1.0)
            if time.monotonic() - checked >= FIRMWARE_CHECK_EVERY:
                checked = time.monotonic()
                try:
                    self.corrected += await asyncio.to_thread(correct_from_reported_firmware, self.uow)
                except Exception as exc:  # the database refused: the next round tries again
                    log.error("correcting firmware upgrades from reported versions failed: %s", exc)
            if not self._late:
                continue
            batch, self._late = list(self._late.values()), {}
            try:
                self.corrected += await asyncio.to_thread(correct_late_results, self.uow, self.box, batch)
            except Exception as exc:  # the database refused: these results stay unused, logged
                log.error("correcting %d rollout actions from late results failed: %s", len(batch), exc)

    # --- firmware downloads and their integrity --------------------------------------------------

    async def _serve_firmware(self, stack: contextlib.AsyncExitStack) -> None:
        """Devices fetch images from the executor that told them the URL; every download is
        hashed as it is served (services/firmware_downloads.py)."""
        self.downloads = DownloadServer(self.options.firmware_store, self.key, self.images, self._image_changed)
        host, port = await self.downloads.start(self.options.listen)
        self.base_url = (self.options.public_url or f"http://{host}:{port}").rstrip("/")
        stack.push_async_callback(self.downloads.stop)

    def _image_changed(self, sha256: str, found: str) -> None:
        """The download server found a stored image changed (on the event loop): from now on this
        executor offers it to no one, and the rollouts offering it stop."""
        reason = f"{firmware.CHANGED_ON_DISK}: {found}"
        self._forget_image(sha256, reason)
        task = asyncio.create_task(asyncio.to_thread(self._refuse_image, sha256, reason))
        self._background.add(task)
        task.add_done_callback(self._refused_done)

    def _refused_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        self._schedule_alerts()

    def _forget_image(self, sha256: str, reason: str) -> None:
        self._changed[sha256] = reason
        self.images.drop(sha256)
        for release_id in [r for r, p in self._verified.items() if p["sha256"] == sha256]:
            del self._verified[release_id]

    def _refuse_image(self, sha256: str, reason: str, *, claimed: list[int] | None = None,
                      event: str = firmware_guard.ALERT_KIND) -> None:
        """Stop the rollouts offering an image that may not be offered (a worker thread); never
        raises: if the database refuses, the claims come back by their lease and this runs again."""
        self._forget_image(sha256, reason)
        with self._refusing:  # one at a time: many downloads can find the same change at once
            first = f"{sha256}\n{reason}" not in self._reported
            try:
                stopped = firmware_guard.stop_rollouts(self.uow, SYSTEM, sha256, reason, claimed=claimed or (),
                                                       report=first, event=event)
            except Exception:
                log.exception("firmware %s: stopping the rollouts offering it failed", sha256[:16])
                return
            self._reported.add(f"{sha256}\n{reason}")
        if stopped.rollouts or first:
            log.error("firmware %s: %s; rollouts aborted: %s (%d devices failed)", sha256[:16], reason,
                      ", ".join(f"#{r}" for r in stopped.rollouts) or "none", stopped.failed)
            self._alerts.append(stopped)

    def _schedule_alerts(self) -> None:
        if self._alerts:
            task = asyncio.create_task(self.deliver_alerts())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def deliver_alerts(self) -> list[notifications.Sent]:
        """Send the city the alerts due (a firmware image changed on disk); never raises."""
        due, self._alerts = self._alerts, []
        sent: list[notifications.Sent] = []
        for stopped in due:
            subject, text, payload = stopped.alert()
            try:
                sent += await notifications.alert_city(
                    self.uow, SYSTEM, self.box, self.options.alerts, kind=firmware_guard.ALERT_KIND,
                    subject=subject, text=text, payload=payload, about=f"{stopped.sha256}\n{stopped.reason}")
            except Exception:
                log.exception("firmware %s: alerting the city failed", stopped.sha256[:16])
        for s in sent:
            if not s.ok and not s.skipped:
                log.warning("firmware alert to %s (%s %s) not delivered: %s", s.organization, s.channel, s.target,
                            s.detail)
        return sent

    async def _settle_alerts(self, timeout: float = 60.0) -> None:
        """Stopping: the rollouts being stopped and the alerts being sent finish first."""
        for _ in range(3):  # a stop that finishes schedules its alert
            if not self._background:
                break
            _done, pending = await asyncio.wait(set(self._background), timeout=timeout)
            if pending:
                log.warning("%d firmware alerts still being delivered at exit", len(pending))
                return
