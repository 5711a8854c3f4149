"""The simulated city at run time: devices on MQTT (direct or behind gateways) and HTTP, their
timing and faults, and the sim-only control API.

Everything runs in one asyncio loop: one aiomqtt client per MQTT connection, one uvicorn server
for every HTTP device, one scheduler for periodic state and one for `--rate`. Device facts and
command decisions live in `device.py`; this module only adds time and transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import heapq
import json
import logging
import os
import random
import resource
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import httpx
import msgspec

from cityward.sim.city import generate_city, iter_device_rows
from cityward.sim.device import MAX_IMAGE, Device, Job, Reply, build_device
from cityward.sim.http import MAX_JSON, HttpFront
from cityward.sim.profile import Profile

TOPIC = "cityward/v1/{}/{}"
PUSH_TIMEOUT = 600.0  # seconds an upgrade with url "push" waits for its image
DOWNLOADS_AT_ONCE = 100  # firmware downloads in flight across the whole simulated city
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
log = logging.getLogger("cityward.sim")


class SimError(Exception):
    """A problem the user can fix (bad option, unreadable file, unreachable broker): one line."""


@dataclass
class Options:
    profile: Profile
    devices: int
    seed: int = 7
    mqtt_url: str | None = None  # None: the bundle's broker, else mqtt://127.0.0.1:1883
    credentials: Path | None = None
    mode: str = "direct"  # or "gateway"
    http: bool = True
    state_interval: float | None = None  # None: the profile's
    rate: float = 0.0
    time_scale: float = 1.0
    handover: Path | None = None
    control: str = "127.0.0.1:0"
    only: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    id_prefix: str = ""
    connect_concurrency: int = 100
    announce: Callable[[str], None] = field(default=print)


@dataclass(frozen=True)
class Bundle:
    broker: str | None
    devices: dict[str, tuple[str, str]]
    gateways: dict[str, tuple[str, str, list[str]]]


def load_bundle(path: Path) -> Bundle:
    """Read a protocol §5 credentials bundle."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SimError(f"{path}: cannot read the credentials bundle: {exc.strerror or exc}") from None
    except ValueError:
        raise SimError(f"{path}: the credentials bundle is not valid JSON") from None
    if not isinstance(data, dict) or data.get("v") != 1:
        raise SimError(f"{path}: not a v1 credentials bundle")
    try:
        devices = {k: (str(v["username"]), str(v["password"])) for k, v in (data.get("devices") or {}).items()}
        gateways = {k: (str(v["username"]), str(v["password"]), [str(c) for c in v.get("children", [])])
                    for k, v in (data.get("gateways") or {}).items()}
    except (KeyError, TypeError, AttributeError):
        raise SimError(f"{path}: every device and gateway needs a username and a password") from None
    broker = data.get("broker")
    return Bundle(broker if isinstance(broker, str) else None, devices, gateways)


def parse_mqtt_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise SimError(f"--mqtt-url {url}: expected mqtt://host:port")
    try:
        return parts.hostname, parts.port or 1883
    except ValueError:
        raise SimError(f"--mqtt-url {url}: bad port") from None


class Agent:
    """One device at run time: its transport, its running commands, its HTTP lockout."""

    def __init__(self, sim: Sim, device: Device, ordinal: int) -> None:
        self.sim = sim
        self.device = device
        self.ordinal = ordinal
        self.link: MqttLink | None = None
        self.online = False
        self.up = False  # has been online at least once
        self.detached = False  # a gateway child that dropped off its gateway
        self.held: list[object] = []  # commands its gateway holds while it is detached
        self.outbox: list[dict[str, Any]] = []  # results produced while it could not talk
        # why it can never come up besides its own `offline` fault: "no broker account" (a bundle
        # without credentials for it) or "gateway offline" (behind a gateway that never comes up)
        self.unreachable = ""
        self.awaiting_image: dict[str, tuple[asyncio.Future[tuple[bytes, asyncio.Future[None]]], int]] = {}
        self.auth_failures: list[float] = []
        self.locked_until = 0.0

    # --- output ------------------------------------------------------------------------------

    def publish(self, suffix: str, payload: dict[str, Any], retain: bool = False) -> None:
        if self.link is not None and (self.online or suffix == "status"):
            self.link.send(TOPIC.format(self.device.id, suffix), _encode(payload), retain)

    def emit(self, result: dict[str, Any]) -> None:
        """Send a command result (MQTT); HTTP devices only store it for GET /commands/{id}.

        A result produced while the device cannot talk (restarting, link down) is sent when it is back.
        """
        if self.device.transport != "mqtt":
            return
        if self.online and self.link is not None and self.link.connected:
            self.publish("result", result)
        elif len(self.outbox) < 64:
            self.outbox.append(result)

    def publish_state(self) -> None:
        if self.device.transport == "mqtt" and self.online:
            self.publish("state", self.device.state(self.sim.now()), retain=True)

    def announce(self) -> None:
        """What a device says on (re)connect or restart: hello, status online, state."""
        now = self.sim.now()
        self.online = True
        if self.device.transport == "mqtt":
            self.publish("hello", self.device.hello(now))
            self.publish("status", self.device.status(True, now), retain=True)
            self.publish("state", self.device.state(now), retain=True)
            outbox, self.outbox = self.outbox, []
            for result in outbox:
                self.publish("result", result)
        if not self.up:
            self.up = True
            self.sim.mark_up()

    # --- commands ----------------------------------------------------------------------------

    def delay(self, seconds: float) -> float:
        factor = self.sim.profile.timing.slow_factor if self.device.fault == "slow" else 1.0
        return seconds * self.sim.options.time_scale * factor

    async def submit(self, payload: object) -> Reply | str:
        self.sim.stats["commands_received"] += 1
        if self.device.fault == "slow":
            await asyncio.sleep(self.delay(self.sim.profile.timing.command_delay))
        reply = self.device.receive(payload, self.sim.now())
        if isinstance(reply, str):
            self.sim.stats[f"dropped: {reply}"] += 1
            return reply
        if reply.repeat:
            self.sim.stats["commands_repeated"] += 1
        self.emit(reply.result)
        if reply.job is not None:
            self.sim.spawn(self.run(reply.job))
        return reply

    async def handle(self, payload: object) -> None:
        await self.submit(payload)

    async def run(self, job: Job) -> None:
        timing, device = self.sim.profile.timing, self.device
        if job.action == "upgrade_firmware":
            await self.upgrade(job)
            return
        if job.action in ("reboot", "rollback_firmware") and (
                job.action == "reboot" or device.previous_firmware is not None):
            await asyncio.sleep(self.delay(timing.command_delay))
            self.emit(device.record(job.command_id, "in_progress", self.sim.now(), progress=50, detail="rebooting"))
            self.set_offline_for_restart()
            await asyncio.sleep(self.delay(timing.reboot))
            if self.sim.stopping:
                return
            result = device.apply(job, self.sim.now())
            self.come_back()
            self.emit(result)
            return
        await asyncio.sleep(self.delay(timing.command_delay))
        self.emit(device.apply(job, self.sim.now()))
        self.publish_state()

    def set_offline_for_restart(self) -> None:
        """A restarting device stops talking (its connection stays up: the sim keeps the session)."""
        self.online = False

    def come_back(self) -> None:
        if self.link is not None and self.link.connected and not self.detached:
            self.announce()
        elif self.device.transport == "http":
            self.online = True

    async def upgrade(self, job: Job) -> None:
        timing, device, now = self.sim.profile.timing, self.device, self.sim.now
        duration = self.delay(timing.upgrade_duration)
        cid, params = job.command_id, job.params
        self.emit(device.record(cid, "in_progress", now(), progress=0, detail="downloading"))
        checked: asyncio.Future[None] | None = None
        if params["url"] == "push":
            future: asyncio.Future[tuple[bytes, asyncio.Future[None]]] = asyncio.get_running_loop().create_future()
            self.awaiting_image[cid] = (future, int(params["size"]))
            try:
                image, checked = await asyncio.wait_for(future, PUSH_TIMEOUT)
            except TimeoutError:
                self.emit(device.record(cid, "failed", now(), detail="no image received"))
                return
            finally:
                self.awaiting_image.pop(cid, None)
        else:
            try:
                image = await self.sim.download(params["url"], int(params["size"]))
            except (httpx.HTTPError, ValueError) as exc:
                # One line: a result's detail has no newlines (docs/protocol.md), and
                # httpx's messages span several.
                said = " ".join(str(exc).split())
                self.emit(device.record(cid, "failed", now(), detail=f"download failed: {said}"[:200]))
                return
        try:
            await asyncio.sleep(duration * 0.1)
            self.emit(device.record(cid, "in_progress", now(), progress=30, detail="verifying"))
            problem = device.verify_image(job, image)
            if problem is not None:
                self.emit(device.record(cid, "rejected", now(), detail=problem))
                return
            self.emit(device.record(cid, "in_progress", now(), progress=40, detail="installing"))
        finally:
            if checked is not None and not checked.done():
                checked.set_result(None)
        for pct in (55, 70, 85):
            await asyncio.sleep(duration * 0.2)
            self.emit(device.record(cid, "in_progress", now(), progress=pct, detail="installing"))
        await asyncio.sleep(duration * 0.2)
        if device.fault == "upgrade_fails":
            self.emit(device.record(cid, "failed", now(), detail="install failed: flash write error"))
            return
        if device.fault == "upgrade_bricks":
            self.brick()
            return
        self.emit(device.record(cid, "in_progress", now(), progress=95, detail="rebooting"))
        self.set_offline_for_restart()
        await asyncio.sleep(self.delay(timing.reboot))
        result = device.install_firmware(job, now())
        self.come_back()
        self.emit(result)

    def brick(self) -> None:
        """The device dies mid-upgrade and never comes back: no terminal result, no more traffic."""
        self.device.bricked = True
        self.sim.stats["bricked"] += 1
        if self.link is not None:
            self.link.drop_device(self)
        self.online = False
        self.sim.http_front.close_device(self.device.id)

    def view(self) -> dict[str, Any]:
        d = self.device
        return {
            "device_id": d.id, "kind": d.kind, "transport": d.transport, "address": d.address,
            "online": self.online, "bricked": d.bricked, "quarantined": d.quarantined, "fault": d.fault,
            "firmware_version": d.firmware_version, "previous_firmware": d.previous_firmware,
            "applied_commands": d.applied_commands, "applied": dict(d.applied_by_id),
            "commands": list(d.results),  # every command id it answered (its last RESULTS_KEPT), oldest first
            "unreachable": self.unreachable,
            "credential_state": d.credential_state, "password": d.password, "boot_id": d.boot_id,
            "seq": d.seq, "config_hash": d.config_hash, "key_id": d.key_id,
            "certificates": [c.as_json() for c in d.certificates],
        }


class MqttLink:
    """One broker connection: a device's own (direct), or a gateway's for itself and its children."""

    def __init__(self, sim: Sim, client_id: str, username: str | None, password: str | None,
                 own: Agent | None, children: list[Agent]) -> None:
        self.sim = sim
        self.client_id = client_id
        self.username = username
        self.password = password
        self.own = own
        self.children = children
        self.agents = {a.device.id: a for a in ([own] if own else []) + children}
        for agent in self.agents.values():
            agent.link = self
        self.client: aiomqtt.Client | None = None
        self.connected = False
        self.dark = False  # its own device is bricked: never reconnect
        self.down_for = 0.0  # a flaky device's next outage, set when its link is cut

    def send(self, topic: str, payload: bytes, retain: bool) -> None:
        if self.client is not None and self.connected:
            self.client._client.publish(topic, payload, qos=1, retain=retain)
            self.sim.stats["messages_published"] += 1

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a power cut would: the broker sends the will."""
        client = self.client
        if client is not None:
            sock = client._client.socket()
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def drop_device(self, agent: Agent) -> None:
        if agent is self.own:
            self.dark = True
            self.abort()
        else:  # a child dies behind its gateway: the gateway reports it offline
            agent.publish("status", agent.device.status(False, self.sim.now()), retain=True)
            agent.online = False

    async def run(self) -> None:
        sim, backoff = self.sim, 1.0
        rng = random.Random(f"link/{sim.options.seed}/{self.client_id}")  # noqa: S311 - jitter
        while not sim.stopping and not self.dark:
            will = aiomqtt.Will(TOPIC.format(self.client_id, "status"),
                                _encode({"v": 1, "status": "offline", "at": _rfc(sim.now())}), 1, True)
            client = aiomqtt.Client(sim.host, sim.port, identifier=self.client_id, username=self.username,
                                    password=self.password, clean_session=False, keepalive=60, will=will,
                                    timeout=30)
            try:
                async with sim.connect_gate:
                    if sim.stopping:
                        return
                    await client.__aenter__()
            except aiomqtt.MqttError as exc:
                sim.stats["connect_failures"] += 1
                if not sim.last_connect_error:  # one line, so a wrong bundle or broker is diagnosable
                    log.warning("broker refused %s: %s (retrying with backoff)", self.client_id, exc)
                sim.last_connect_error = str(exc)
                await asyncio.sleep(backoff * (0.5 + rng.random()))
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            self.client, self.connected = client, True
            sim.stats["connects"] += 1
            flaky: asyncio.Task[None] | None = None
            try:
                await client.subscribe([(TOPIC.format(i, "cmd"), 1) for i in self.agents])
                for agent in self.agents.values():
                    if agent.device.fault != "offline" and not agent.device.bricked and not agent.detached:
                        agent.announce()
                flaky = self._start_flaky(rng)
                async for message in client.messages:
                    self._dispatch(message)
            except aiomqtt.MqttError:
                pass
            finally:
                self.connected = False
                for agent in self.agents.values():
                    agent.online = False
                if flaky is not None:
                    flaky.cancel()
                dropped_for, self.down_for = self.down_for, 0.0
                self.client = None
                if not sim.stopping:  # when stopping, the process exit closes the socket (the will fires)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.__aexit__(None, None, None), 5)
            if not sim.stopping and not self.dark:
                sim.stats["reconnects"] += 1
                await asyncio.sleep(dropped_for or backoff * (0.5 + rng.random()))

    def _start_flaky(self, rng: random.Random) -> asyncio.Task[None] | None:
        flaky = [a for a in self.agents.values() if a.device.fault == "flaky"]
        if not flaky:
            return None
        timing, scale = self.sim.profile.timing, self.sim.options.time_scale

        async def cycle() -> None:
            while True:
                await asyncio.sleep(rng.uniform(*timing.flaky_up) * scale)
                down = rng.uniform(*timing.flaky_down) * scale
                victim = rng.choice(flaky)
                self.sim.stats["flaky_drops"] += 1
                if victim is self.own:
                    self.down_for = down
                    self.abort()
                    return
                victim.publish("status", victim.device.status(False, self.sim.now()), retain=True)
                victim.online, victim.detached = False, True
                await asyncio.sleep(down)
                victim.detached = False
                if self.connected and not victim.device.bricked:
                    victim.announce()
                    held, victim.held = victim.held, []
                    for payload in held:
                        self.sim.spawn(victim.handle(payload))

        return self.sim.spawn(cycle())

    def _dispatch(self, message: aiomqtt.Message) -> None:
        parts = message.topic.value.split("/")
        agent = self.agents.get(parts[2]) if len(parts) == 4 and parts[3] == "cmd" else None
        if agent is None or agent.device.bricked:
            self.sim.stats["dropped: not reachable"] += 1
            return
        raw = message.payload
        if not isinstance(raw, bytes | bytearray) or len(raw) > MAX_JSON:
            self.sim.stats["dropped: over 64 KiB"] += 1
            return
        try:
            payload = _decode(raw)
        except msgspec.DecodeError:
            self.sim.stats["dropped: malformed JSON"] += 1
            return
        if agent.detached:  # the gateway keeps it until the child is back, as the broker would
            agent.held.append(payload)
            return
        self.sim.spawn(agent.handle(payload))


def _rfc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Sim:
    """The whole simulated city in one event loop."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.profile = options.profile
        self.stats: Counter[str] = Counter()
        self.agents: dict[str, Agent] = {}
        self.links: list[MqttLink] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False
        self.ready = asyncio.Event()
        self.stop_event = asyncio.Event()
        self.up_count = 0
        self.expected = 0
        self.host, self.port = "127.0.0.1", 1883
        self.connect_gate = asyncio.Semaphore(max(1, options.connect_concurrency))
        self.http_front = HttpFront(self)
        self.http_client: httpx.AsyncClient | None = None
        # Every simulated device downloads through this one process: a thousand at once wait here,
        # not in httpx's pool (which rescans its queue on every change and would take the core).
        self.download_slots = asyncio.Semaphore(DOWNLOADS_AT_ONCE)
        self.last_connect_error = ""
        self.started = time.monotonic()
        self.ready_after: float | None = None

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats["internal errors"] += 1
            log.error("simulator task failed", exc_info=task.exception())

    def mark_up(self) -> None:
        self.up_count += 1
        if self.up_count >= self.expected and not self.ready.is_set():
            self.ready_after = time.monotonic() - self.started
            self.ready.set()

    async def download(self, url: str, size: int) -> bytes:
        assert self.http_client is not None
        async with self.download_slots, self.http_client.stream("GET", url) as response:
            response.raise_for_status()
            chunks, total = [], 0
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > min(size, MAX_IMAGE) + 1:
                    break  # over the announced size: the size check rejects it
                chunks.append(chunk)
            return b"".join(chunks)

    # --- building the city -------------------------------------------------------------------

    def build(self) -> None:
        o = self.options
        anchor = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        city = generate_city(o.devices, o.seed, o.profile)
        prefix = o.id_prefix
        for i, row in enumerate(iter_device_rows(city, o.seed, id_prefix=prefix)):
            base = row["id"][len(prefix):]
            if o.only is not None and row["id"] not in o.only and base not in o.only:
                continue
            if o.kinds is not None and row["kind"] not in o.kinds:
                continue
            if row["protocol"] == "http" and not o.http:
                continue
            device = build_device(row, seed=o.seed, profile=o.profile, anchor=anchor, base_id=base)
            self.agents[device.id] = Agent(self, device, i)
        if o.only is not None:
            missing = sorted(o.only - set(self.agents) - {a[len(prefix):] for a in self.agents})
            if missing:
                raise SimError(f"--only: no such device in this city: {', '.join(missing[:5])}")

    def plan_links(self, bundle: Bundle | None) -> None:
        o = self.options
        mqtt = [a for a in self.agents.values() if a.device.transport == "mqtt"]
        taken: set[str] = set()
        if o.mode == "gateway":
            if bundle is None or not bundle.gateways:
                raise SimError("--mode gateway needs --credentials with a bundle that lists gateways")
            for gw_id, (user, password, children) in bundle.gateways.items():
                own = self.agents.get(gw_id)
                kids = [self.agents[c] for c in children
                        if c in self.agents and self.agents[c].device.transport == "mqtt" and c not in taken]
                taken.update([gw_id, *(k.device.id for k in kids)])
                if own is not None and own.device.fault == "offline":
                    for kid in kids:  # behind a gateway that never comes up
                        kid.unreachable = "gateway offline"
                    continue
                own_link = own if own is not None and own.device.transport == "mqtt" else None
                if own_link is None and not kids:
                    continue
                self.links.append(MqttLink(self, gw_id, user, password, own_link, kids))
        for agent in mqtt:
            if agent.device.id in taken or agent.device.fault == "offline":
                continue
            if bundle is None:  # anonymous broker: username = device id, no password
                self.links.append(MqttLink(self, agent.device.id, agent.device.id, None, agent, []))
            elif agent.device.id in bundle.devices:
                user, password = bundle.devices[agent.device.id]
                self.links.append(MqttLink(self, agent.device.id, user, password, agent, []))
            else:  # the installer loaded no credentials on it: it cannot reach the broker
                agent.unreachable = "no broker account"
        self.expected = sum(1 for a in self.agents.values() if a.device.fault != "offline" and not a.unreachable)

    # --- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        o = self.options
        _raise_fd_limit()
        bundle = load_bundle(o.credentials) if o.credentials is not None else None
        self.host, self.port = parse_mqtt_url(o.mqtt_url or (bundle.broker if bundle and bundle.broker else None)
                                              or "mqtt://127.0.0.1:1883")
        self.build()
        self.plan_links(bundle)
        http_agents = [a for a in self.agents.values()
                       if a.device.transport == "http" and a.device.fault != "offline"]
        if self.links:
            await self._check_broker()
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_error)
        # Plain handlers, not loop.add_signal_handler: under load the loop's wakeup pipe can be full
        # and asyncio then loses the signal; a Python handler always runs in this (the loop's) thread.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _n, _f: loop.call_soon_threadsafe(self._on_signal))
        try:
            self.http_front.bind(http_agents, o.control)
        except OSError as exc:
            raise SimError(str(exc)) from None
        self.http_client = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0), follow_redirects=True,
            limits=httpx.Limits(max_connections=DOWNLOADS_AT_ONCE, max_keepalive_connections=DOWNLOADS_AT_ONCE))
        try:
            await self.http_front.start()
            if o.handover is not None:
                write_handover(o.handover, [a.device for a in self.agents.values() if a.device.transport == "http"])
            for agent in http_agents:
                agent.announce()
            if self.expected == 0:
                self.ready.set()
            for link in self.links:
                self.spawn(link.run())
            self.spawn(self._periodic_state())
            ready = asyncio.create_task(self.ready.wait())
            stop = asyncio.create_task(self.stop_event.wait())
            await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
            if self.ready.is_set() and not self.stop_event.is_set():
                if o.rate > 0:  # the benchmark load starts once the fleet is up
                    self.spawn(self._rate())
                mqtt_up = sum(1 for a in self.agents.values() if a.up and a.device.transport == "mqtt")
                http_up = sum(1 for a in self.agents.values() if a.up and a.device.transport == "http")
                o.announce(f"READY devices={len(self.agents)} mqtt={mqtt_up} http={http_up} "
                           f"control=http://{self.http_front.control_address}")
            await stop
            ready.cancel()
        finally:
            await self.shutdown()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Socket callbacks racing a connection we cut on purpose (flaky, brick, stop) are expected."""
        exc = context.get("exception")
        if isinstance(exc, OSError | KeyError | ValueError | aiomqtt.MqttError):
            self.stats["loop: socket callback after close"] += 1
            return
        loop.default_exception_handler(context)

    def _on_signal(self) -> None:
        if self.stop_event.is_set():  # a second signal: stop now
            os._exit(130)
        self.stop_event.set()

    async def _check_broker(self) -> None:
        try:
            _reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 5)
        except (OSError, TimeoutError) as exc:
            raise SimError(f"cannot reach the MQTT broker at {self.host}:{self.port}: "
                           f"{getattr(exc, 'strerror', None) or exc or 'timeout'}") from None
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def shutdown(self) -> None:
        """Stop publishing, then cut every broker connection without DISCONNECT so wills fire."""
        self.stopping = True
        for link in self.links:
            link.connected = False
            link.abort()
        await asyncio.sleep(0.05)
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 10)
        await self.http_front.stop()
        if self.http_client is not None:
            await self.http_client.aclose()

    async def _periodic_state(self) -> None:
        interval = self.options.state_interval or self.profile.timing.state_interval
        agents = [a for a in self.agents.values() if a.device.transport == "mqtt"]
        start = time.monotonic()
        # spread the fleet over the interval (golden-ratio phases) so messages do not come in bursts
        heap = [(start + interval * ((a.ordinal * 0.6180339887) % 1.0), n) for n, a in enumerate(agents)]
        heapq.heapify(heap)
        tick = min(1.0, interval / 4)
        while heap:
            await asyncio.sleep(tick)
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                due, n = heapq.heappop(heap)
                agents[n].publish_state()
                heapq.heappush(heap, (max(due + interval, now), n))

    async def _rate(self) -> None:
        """`--rate N`: N state messages per second in total, round-robin over the online devices."""
        rate, tick = self.options.rate, 0.02
        agents = [a for a in self.agents.values() if a.device.transport == "mqtt"]
        budget, last, i = 0.0, time.monotonic(), 0
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            budget = min(budget + rate * (now - last), rate)  # at most a second's worth of backlog
            last = now
            misses = 0
            while budget >= 1 and misses < len(agents):
                agent = agents[i % len(agents)]
                i += 1
                if agent.online:
                    agent.publish_state()
                    self.stats["rate_messages"] += 1
                    budget -= 1
                    misses = 0
                else:
                    misses += 1

    def stats_snapshot(self) -> dict[str, Any]:
        agents = self.agents.values()
        online = sum(1 for a in agents if a.online)
        out: dict[str, Any] = {
            "devices": len(self.agents), "expected_up": self.expected, "up": self.up_count,
            "online": online, "offline": len(self.agents) - online,
            "bricked": sum(1 for a in agents if a.device.bricked),
            "mqtt": sum(1 for a in agents if a.device.transport == "mqtt"),
            "http": sum(1 for a in agents if a.device.transport == "http"),
            "links": len(self.links), "connections": sum(1 for link in self.links if link.connected),
            "unreachable": dict(Counter(a.unreachable for a in agents if a.unreachable)),
            "last_connect_error": self.last_connect_error,
            "commands_applied": sum(a.device.applied_commands for a in agents),
            "ready_after_s": round(self.ready_after, 3) if self.ready_after is not None else None,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        for key in ("messages_published", "commands_received", "commands_repeated", "connects",
                    "connect_failures", "reconnects", "flaky_drops", "http_requests", "http_auth_failures",
                    "rate_messages"):
            out[key] = self.stats[key]
        out["dropped"] = {k[len("dropped: "):]: v for k, v in self.stats.items() if k.startswith("dropped: ")}
        return out


def write_handover(path: Path, devices: list[Device]) -> None:
    """Protocol §6: `device_id,password` of the HTTP devices' current admin passwords, mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["device_id", "password"])
        writer.writerows([d.id, d.password] for d in devices)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_sim(options: Options) -> None:
    """Run until SIGTERM/SIGINT; SimError for problems the user can fix."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="sim: %(message)s")
    logging.getLogger("mqtt").setLevel(logging.CRITICAL)
    asyncio.run(Sim(options).run())


__all__ = ["Agent", "Bundle", "MqttLink", "Options", "Sim", "SimError", "load_bundle", "run_sim", "write_handover"]
