"""The fleet connection: MQTT ingestion, HTTP polling and the silence sweep, run together.

`cityward connect` runs this on its own; `cityward demo` runs it beside the API. One process is
enough for a city of tens of thousands of devices (see bench/ingest_state.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from cityward.adapters.drivers.base import DriverError, Endpoint
from cityward.adapters.drivers.http import HttpDriver
from cityward.adapters.drivers.mqtt import MqttDriver, MqttLink
from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import BrokerRouteRow, DeviceRow
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.organizations import Caller
from cityward.domain.rollouts import ROLLOUT_COMMAND_PREFIX
from cityward.domain.telemetry import SECRET_PARAMS, Message, Rejected, Result
from cityward.errors import InvalidInput, Problem
from cityward.services import broker, commands, credentials, ingestion, inventory
from cityward.services.ingestion import Ingestor

log = logging.getLogger("cityward.connect")


@dataclass(frozen=True)
class ConnectOptions:
    mqtt_url: str | None  # None: no MQTT (HTTP polling only)
    poll_interval: float = 60.0  # seconds between polls of each HTTP device
    silence: timedelta = timedelta(minutes=15)  # three state intervals of the protocol's default
    sweep_interval: float = 30.0
    http_concurrency: int = 100
    http_timeout: float = 5.0
    client_id: str = "cityward-platform"
    # A device that refused the stored password is not asked with it again for this long (a new
    # password on record is tried at once): one try an hour can never reach the lockout of
    # protocol §3 (five failures in a minute), which would shut out the people at the device too.
    refused_retry: float = 3600.0
    locked_retry: float = 120.0  # a device that answered 429 is left alone past its lock (a minute)


@dataclass
class PollStats:
    rounds: int = 0
    polled: int = 0
    failed: Counter[str] = field(default_factory=Counter)


class Connector:
    def __init__(self, uow: UnitOfWorkFactory, box: SecretBox, options: ConnectOptions) -> None:
        self.uow = uow
        self.box = box
        self.options = options
        self.ingestor = Ingestor(uow)
        self.http = HttpDriver(timeout=options.http_timeout, max_connections=options.http_concurrency)
        self.link: MqttLink | None = None
        self.mqtt: MqttDriver | None = None
        self.poll = PollStats()
        self.silenced = 0
        self.connected = asyncio.Event()
        self._routes: dict[str, str] = {}
        self.ingestor.routes = self._routes.get
        self._background: set[asyncio.Task[None]] = set()
        # device id → (the password it refused, or None when it was locked; monotonic time to retry)
        self._held: dict[str, tuple[str | None, float]] = {}

    @property
    def reconnects(self) -> int:
        """Times the broker link was lost and made again (by the link itself, see MqttLink)."""
        return self.link.reconnects if self.link is not None else 0

    def stats(self) -> dict[str, Any]:
        out = self.ingestor.stats.as_dict()
        if self.link is not None:
            out["dropped"] = {**out["dropped"], **({"broker_queue_full": self.link.dropped}
                                                   if self.link.dropped else {})}
        out["http"] = {"rounds": self.poll.rounds, "polled": self.poll.polled, "failed": dict(self.poll.failed)}
        out["silenced"] = self.silenced
        out["mqtt_reconnects"] = self.reconnects
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: the first broker connection must succeed (a wrong URL or password is an
        error to show); after that the link reconnects by itself with backoff (and renews its
        subscriptions) while the writer, the HTTP poller and the sweep go on."""
        writer = asyncio.create_task(self.ingestor.run(stop))
        tasks: list[asyncio.Task[None]] = []
        try:
            if self.options.mqtt_url:
                self._routes = await asyncio.to_thread(self._load_routes)
                self.ingestor.routes = self._routes.get
                url = await asyncio.to_thread(broker.platform_broker_url, self.uow, self.box, self.options.mqtt_url)
                link = await self._open_link(url)
                tasks.append(asyncio.create_task(link.run()))
            self.connected.set()
            tasks.append(asyncio.create_task(self._poll_loop(stop)))
            tasks.append(asyncio.create_task(self._sweep_loop(stop)))
            await stop.wait()
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            with contextlib.suppress(Exception):
                await writer
            if self.link is not None:
                await self.link.__aexit__(None, None, None)
            await self.http.__aexit__(None, None, None)

    async def _open_link(self, url: str) -> MqttLink:
        """One link for the connector's life: it reconnects by itself, so the command driver on it
        (and every command waiting on that driver) survives a broker restart."""
        link = MqttLink(url, client_id=self.options.client_id, on_message=self.ingestor.offer)
        await link.__aenter__()
        self.link = link
        self.mqtt = MqttDriver(link, reject=self.ingestor.reject, orphan=self._orphan)
        return link

    def _orphan(self, result: Result, rejected: Rejected) -> None:
        """A result for a command this process is not following: stored if the command is known
        and still open (sent by another process, e.g. `devices command`), else rejected. Results
        of rollout commands belong to the rollout executor that sent them: not ours to judge."""
        if result.command_id.startswith(ROLLOUT_COMMAND_PREFIX):
            return

        async def record() -> None:
            if not await asyncio.to_thread(commands.record_result, self.uow, result):
                self.ingestor.reject(rejected)
        task = asyncio.get_running_loop().create_task(record())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _load_routes(self) -> dict[str, str]:
        with self.uow() as uow:
            return {d: g for d, g in uow.session.execute(
                select(BrokerRouteRow.device_id, BrokerRouteRow.gateway_id)
                .where(BrokerRouteRow.gateway_id.is_not(None))) if g is not None}

    async def _sweep_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.options.sweep_interval)
            ids = await asyncio.to_thread(ingestion.sweep_silent, self.uow, self.options.silence)
            self.silenced += len(ids)

    async def _poll_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll_http_once()
            await asyncio.sleep(self.options.poll_interval)

    async def poll_http_once(self) -> None:
        """Read the state of every HTTP device the city holds credentials for.

        A device that answers 401 or 429 is alive (it answered) even though its state cannot be
        read; it is then held back (see `ConnectOptions.refused_retry`) instead of being asked
        again with a password it refuses."""
        targets = self._release(await asyncio.to_thread(self._http_targets))
        self.poll.rounds += 1
        gate = asyncio.Semaphore(self.options.http_concurrency)

        async def one(ep: Endpoint) -> None:
            async with gate:
                try:
                    state = await self.http.read_state(ep)
                except DriverError as exc:
                    self.poll.failed[exc.reason] += 1
                    if exc.reason in ("unreachable", "timeout"):
                        self.ingestor.offer_offline(ep.device_id, "poll")
                    elif exc.reason in ("auth", "locked"):
                        self.ingestor.offer_alive(ep.device_id)
                        wait = self.options.refused_retry if exc.reason == "auth" else self.options.locked_retry
                        self._held[ep.device_id] = (ep.password if exc.reason == "auth" else None,
                                                    time.monotonic() + wait)
                    return
            self._held.pop(ep.device_id, None)
            self.poll.polled += 1
            self.ingestor.offer_message(Message(ep.device_id, "state", state), transport="http", address=ep.address)

        outcomes = await asyncio.gather(*(one(ep) for ep in targets), return_exceptions=True)
        for ep, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, Exception):  # a bug, not a device problem: keep polling the others
                self.poll.failed["error"] += 1
                log.error("polling %s failed: %r", ep.device_id, outcome)

    def _release(self, targets: list[Endpoint]) -> list[Endpoint]:
        """The targets not held back: a held device comes back when its time is up or when the
        password on record is no longer the one it refused."""
        now = time.monotonic()
        out = []
        for ep in targets:
            held = self._held.get(ep.device_id)
            if held is not None:
                refused, until = held
                if now < until and (refused is None or refused == ep.password):
                    self.poll.failed["held_back"] += 1
                    continue
                del self._held[ep.device_id]
            out.append(ep)
        return out

    def _http_targets(self) -> list[Endpoint]:
        with self.uow() as uow:
            rows = uow.session.execute(select(DeviceRow.id, DeviceRow.address).where(
                DeviceRow.protocol == "http", DeviceRow.address.is_not(None))).all()
        passwords = credentials.load_secrets(self.uow, self.box, credentials.ADMIN)
        missing = sum(1 for d, _a in rows if d not in passwords)
        if missing:
            self.poll.failed["no_credentials"] = missing
        return [Endpoint(d, a, passwords[d]) for d, a in rows if d in passwords]


async def command_device(uow: UnitOfWorkFactory, box: SecretBox, mqtt_url: str, caller: Caller, device_id: str,
                         action: str, params: dict[str, Any], *, timeout: float = 60.0,
                         on_result: Callable[[Result], None] | None = None) -> Result:
    """One command to one device over the transport it speaks, outside a running connector.

    Secrets are never taken from the caller: `set_password` gets a generated password, stored
    (encrypted) once the device accepts it."""
    if any(k in params for k in SECRET_PARAMS):
        raise InvalidInput("secrets are not passed in; set_password generates a strong password itself",
                           [Problem("not accepted", field=k) for k in sorted(SECRET_PARAMS & params.keys())])
    if action == "set_password":
        params = {**params, "password": secrets.token_urlsafe(24)}
    view = await asyncio.to_thread(inventory.get_device, uow, caller, device_id)  # scoped: NotFound otherwise
    if view.protocol == "http":
        found = await asyncio.to_thread(credentials.load_secrets, uow, box, credentials.ADMIN, [view.id])
        async with HttpDriver() as http:
            return await commands.execute(uow, caller, http, view.id, action, params, timeout=timeout, box=box,
                                          endpoint=Endpoint(view.id, view.address, found.get(view.id)),
                                          on_result=on_result)
    url = await asyncio.to_thread(broker.platform_broker_url, uow, box, mqtt_url)
    async with MqttLink(url, client_id=f"cityward-cmd-{view.id}"[:64]) as link:
        runner = asyncio.create_task(link.run())
        try:
            return await commands.execute(uow, caller, MqttDriver(link), view.id, action, params, timeout=timeout,
                                          on_result=on_result, box=box)
        finally:
            runner.cancel()
