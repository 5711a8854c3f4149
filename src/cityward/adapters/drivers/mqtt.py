"""The platform's MQTT side: one broker connection (aiomqtt) shared by ingestion and commands.

Everything from devices arrives on one subscription per channel and is dispatched: `result` to
the command waiters, the rest to whoever ingests state. aiomqtt/paho errors stop here and become
DriverError.

The link outlives its connection. A broker that restarts, or a network that drops, must not end a
rollout or the ingestion of a city: `MqttLink.run` connects again with capped, jittered
exponential backoff and renews every subscription, publishing waits for the link instead of
failing, and every command still waiting for its result is asked again under its same command id
once the link is back (the broker of a restart has lost whatever was queued; a device answers a
command id it knows from its store, protocol §1). Only when the platform's own link stays down
past what a caller allowed is the error `DriverError("link", ...)`, which says "not the device":
a rollout never records that as a device's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
import msgspec
import paho.mqtt.client as paho

from cityward.adapters.drivers.base import DriverError, Endpoint
from cityward.domain import telemetry
from cityward.domain.telemetry import Command, Message, Rejected, Result, State

log = logging.getLogger("cityward.mqtt")

SUBSCRIPTIONS = tuple(f"cityward/v1/+/{c}" for c in ("hello", "state", "status", "result"))
RESULTS_ONLY = ("cityward/v1/+/result",)  # a link that only sends commands (a rollout executor)
LINK_WAIT = 30.0  # seconds a publish or subscribe waits for a lost link when the caller names no bound
# After a reconnect the devices are coming back too, each with its own backoff (a whole city after a
# broker restart): for this long, a command's wait also leaves out the device's silence until its
# first word (see `_Wait`), and a silent device is asked again sooner.
SETTLE_AFTER_RECONNECT = 60.0
# paho's codes for "no connection (any more)": the link is going, not the call that is wrong.
_LINK_CODES = frozenset({paho.MQTT_ERR_NO_CONN, paho.MQTT_ERR_CONN_LOST})


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool


def parse_broker_url(url: str) -> BrokerAddress:
    """mqtt://[user[:password]@]host[:port] (mqtts:// for TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise DriverError("config", f"broker URL {_safe(url)!r} is not mqtt://host:port or mqtts://host:port")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise DriverError("config", f"broker URL {_safe(url)!r} has a bad port") from None
    return BrokerAddress(parts.hostname, port, unquote(parts.username) if parts.username else None,
                         unquote(parts.password) if parts.password else None, parts.scheme == "mqtts")


def _safe(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


@dataclass(frozen=True)
class Backoff:
    """Delays between reconnection attempts: doubling from `first` up to `cap`, each drawn from
    the upper half of its step ("equal jitter"), so the platform's links (executor, workers,
    connector) do not come back to a restarted broker in lockstep, nor wait long for a short
    outage."""

    first: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        step = min(self.cap, self.first * 2.0 ** min(attempt, 32))
        return step / 2 + rng.random() * step / 2


class _CountingQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt discards a message when its queue is full and only logs it; count it too."""

    dropped = 0

    def put_nowait(self, item: aiomqtt.Message) -> None:
        try:
            super().put_nowait(item)
        except asyncio.QueueFull:
            type(self).dropped += 1
            raise


_CLIENT_LOG = logging.getLogger("cityward.mqtt.client")


def _is_link_error(exc: aiomqtt.MqttError) -> bool:
    """The connection is gone or going (paho says so, or the broker stopped acknowledging)."""
    if isinstance(exc, aiomqtt.MqttCodeError):
        return exc.rc in _LINK_CODES
    return "timed out" in str(exc)


class MqttLink:
    """One connection as the platform account; dispatches what devices publish, and keeps itself
    connected (see the module's docstring) while `run` runs."""

    def __init__(self, url: str, *, client_id: str = "cityward-platform",
                 on_message: Callable[[str, bytes], None] | None = None, max_queued: int = 200_000,
                 subscriptions: tuple[str, ...] = SUBSCRIPTIONS, backoff: Backoff | None = None) -> None:
        self.address = parse_broker_url(url)
        self.client_id = client_id
        self.on_message = on_message
        self.max_queued = max_queued
        self.subscriptions = subscriptions
        self.backoff = backoff or Backoff()
        self._client: aiomqtt.Client | None = None
        self._result_sinks: list[Callable[[str, bytes], None]] = []
        self._reconnect_sinks: list[Callable[[], None]] = []
        self._state_waiters: dict[str, asyncio.Future[bytes]] = {}
        self._extra: set[str] = set()  # subscriptions of `retained_state`, renewed on a reconnect
        self._up = asyncio.Event()  # connected and subscribed
        self._lost = asyncio.Event()  # this connection's end (a new one per connection)
        self._closed = False
        self._rng = random.Random()  # noqa: S311 - jitter, not a secret
        self.reconnects = 0  # connections made again after one was lost
        self.generation = 0  # connections made so far: a waiter that published on an older one asks again
        self._down_total = 0.0
        self._down_since: float | None = None
        self._back_at: float | None = None  # when the link last came back (None: never lost)

    @property
    def dropped(self) -> int:
        return _CountingQueue.dropped

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def downtime(self) -> float:
        """Seconds this link has been without a connection since it first connected (the
        current outage included): a waiter compares two readings to know how much of its wait
        the platform itself could not listen."""
        current = time.monotonic() - self._down_since if self._down_since is not None else 0.0
        return self._down_total + current

    def settling(self) -> bool:
        """Whether the link came back within SETTLE_AFTER_RECONNECT: devices may still be
        reconnecting, so a silent one is not yet a sign of trouble."""
        return self._back_at is not None and time.monotonic() - self._back_at < SETTLE_AFTER_RECONNECT

    def on_reconnect(self, sink: Callable[[], None]) -> None:
        """Call `sink` each time the link is back (connected and subscribed again)."""
        self._reconnect_sinks.append(sink)

    async def __aenter__(self) -> MqttLink:
        """The first connection: it must succeed (a wrong URL or password is an error to show)."""
        await self._connect()
        return self

    async def _connect(self) -> None:
        a = self.address
        client = aiomqtt.Client(
            a.host, a.port, username=a.username, password=a.password, identifier=self.client_id,
            clean_session=True, keepalive=30, queue_type=_CountingQueue, max_queued_incoming_messages=self.max_queued,
            tls_params=aiomqtt.TLSParameters() if a.tls else None, logger=_CLIENT_LOG,
            timeout=30,  # a broker busy with a whole city can take more than the default 10 s to answer
        )
        # Hundreds of commands published at once are the point of a rollout, not a warning.
        client.pending_calls_threshold = 10_000
        entered = False
        try:
            await client.__aenter__()
            entered = True
            for topic in (*self.subscriptions, *sorted(self._extra)):
                await client.subscribe(topic, qos=1)
        except aiomqtt.MqttError as exc:
            if entered:
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.__aexit__(None, None, None)
            raise DriverError("unreachable", f"cannot connect to the MQTT broker at {a.host}:{a.port} as "
                              f"{a.username or 'anonymous'}: {exc}") from exc
        self._client, self._lost = client, asyncio.Event()
        self.generation += 1
        self._up.set()

    async def __aexit__(self, *exc: object) -> None:
        self._closed = True
        self._up.clear()
        self._lost.set()
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except aiomqtt.MqttError as err:
                log.debug("disconnect: %s", err)

    @property
    def client(self) -> aiomqtt.Client:
        if self._client is None or not self._up.is_set():
            raise DriverError("link", "not connected to the MQTT broker")
        return self._client

    async def run(self) -> None:
        """Dispatch messages until the task is cancelled or the link closed; a lost connection
        is made again (with backoff, subscriptions renewed) meanwhile."""
        while not self._closed:
            client = self._client
            if client is None:
                raise DriverError("link", "the MQTT link was never connected")
            try:
                async for message in client.messages:
                    self._dispatch(message)
            except aiomqtt.MqttError as exc:
                if self._closed:
                    return
                await self._lose(client, exc)
            await self._reconnect()

    def _dispatch(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        topic = message.topic.value
        if topic.endswith("/result"):
            for sink in self._result_sinks:
                sink(topic, payload)
            if not self._result_sinks and self.on_message:
                self.on_message(topic, payload)
            return
        if topic.endswith("/state") and self._state_waiters:
            device_id = topic.split("/")[2]
            waiter = self._state_waiters.get(device_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(payload)
        if self.on_message:
            self.on_message(topic, payload)

    async def _lose(self, client: aiomqtt.Client, exc: aiomqtt.MqttError) -> None:
        self._up.clear()
        self._lost.set()  # calls in flight on this connection give up on it and wait for the next
        self._down_since = time.monotonic()
        a = self.address
        log.warning("MQTT link %s lost the broker at %s:%d (%s); reconnecting with backoff", self.client_id,
                    a.host, a.port, exc.__cause__ or exc)
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)

    async def _reconnect(self) -> None:
        a = self.address
        attempt = 0
        while not self._closed:
            delay = self.backoff.delay(attempt, self._rng)
            attempt += 1
            await asyncio.sleep(delay)
            if self._closed:
                return
            try:
                await self._connect()
            except DriverError as exc:
                # The first failures at INFO, then one line every 10 attempts: a broker down for an
                # hour says so without filling the log.
                level = logging.WARNING if attempt % 10 == 0 else logging.INFO
                log.log(level, "MQTT link %s: reconnection attempt %d failed: %s", self.client_id, attempt, exc)
                continue
            since, self._down_since = self._down_since, None
            outage = time.monotonic() - since if since is not None else 0.0
            self._down_total += outage
            self._back_at = time.monotonic()
            self.reconnects += 1
            log.warning("MQTT link %s reconnected to %s:%d after %.1f s (%d attempts), %d subscriptions renewed",
                        self.client_id, a.host, a.port, outage, attempt, len(self.subscriptions) + len(self._extra))
            for sink in self._reconnect_sinks:
                sink()
            return

    async def _wait_up(self, deadline: float, what: str) -> tuple[aiomqtt.Client, asyncio.Event]:
        while not self._up.is_set():
            if self._closed:
                raise DriverError("link", f"cannot {what}: the MQTT link is closed")
            left = deadline - time.monotonic()
            if left <= 0:
                a = self.address
                raise DriverError("link", f"cannot {what}: the platform's link to the MQTT broker at "
                                  f"{a.host}:{a.port} is down")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), min(left, 1.0))
        assert self._client is not None
        return self._client, self._lost

    async def _call(self, what: str, op: Callable[[aiomqtt.Client], Awaitable[Any]], wait: float | None) -> None:
        """Run `op` on the current connection; if the connection drops first, run it again on the
        next one. Waits at most `wait` seconds (LINK_WAIT when None) in all."""
        deadline = time.monotonic() + (LINK_WAIT if wait is None else wait)
        while True:
            client, lost = await self._wait_up(deadline, what)
            call = asyncio.ensure_future(op(client))
            ended = asyncio.ensure_future(lost.wait())
            try:
                done, _pending = await asyncio.wait({call, ended}, timeout=max(deadline - time.monotonic(), 0.0),
                                                    return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
                if not call.done():
                    call.cancel()
                    call.add_done_callback(lambda f: f.cancelled() or f.exception())
            if call in done and not call.cancelled():
                exc = call.exception()
                if exc is None:
                    return
                if not isinstance(exc, aiomqtt.MqttError):
                    raise exc
                if not _is_link_error(exc):
                    raise DriverError("unreachable", f"cannot {what}: {exc}") from exc
                # The connection is going: `run` notices, and the call goes out on the next one.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), min(1.0, max(deadline - time.monotonic(), 0.0)))
                continue
            if lost.is_set():
                continue
            raise DriverError("link", f"cannot {what}: the MQTT broker did not acknowledge within "
                              f"{LINK_WAIT if wait is None else wait:g} s")

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                      wait: float | None = None) -> None:
        """Publish; while the link is down, wait for it (at most `wait` seconds, LINK_WAIT when None)."""
        await self._call(f"publish to {topic}",
                         lambda c: c.publish(topic, payload, qos=qos, retain=retain), wait)

    async def retained_state(self, device_id: str, timeout: float) -> bytes:
        """The retained `state` of one device (a fresh subscription makes the broker resend it)."""
        topic = f"cityward/v1/{device_id}/state"
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._state_waiters[device_id] = fut
        self._extra.add(topic)
        deadline = time.monotonic() + timeout
        try:
            await self._call(f"subscribe to {topic}", lambda c: c.subscribe(topic, qos=1), timeout)
            return await asyncio.wait_for(fut, max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            raise DriverError("timeout", f"{device_id} has no retained state on the broker") from None
        finally:
            self._state_waiters.pop(device_id, None)
            self._extra.discard(topic)
            if self.connected:
                with contextlib.suppress(DriverError):
                    await self._call(f"unsubscribe from {topic}", lambda c: c.unsubscribe(topic), 5.0)


REASK_AFTER = 4.0  # seconds of silence before a command is sent again under the same id
# After the platform's link is back, devices are reconnecting too (after a broker restart, each
# with its own backoff): ask sooner at first (1 s, 2 s, 4 s … up to REASK_AFTER's rhythm), so a
# device back a moment after the platform is not left waiting for a long interval.
REASK_AFTER_RECONNECT = 1.0


class MqttDriver:
    """Commands over MQTT: publish on `cmd`, follow the device's `result` messages."""

    def __init__(self, link: MqttLink, *, reject: Callable[[Rejected], None] | None = None,
                 orphan: Callable[[Result, Rejected], None] | None = None, remember: int = 100_000) -> None:
        self.link = link
        self.reject = reject or (lambda r: log.warning("%s: %s", r.reason, r.detail))
        # Results nobody here waits for (a command sent by another process, a late answer): the
        # owner may still know the command (e.g. from the database); else they are rejected.
        self.orphan = orphan
        self._waiting: dict[str, tuple[str, asyncio.Queue[Result | None]]] = {}
        # Recently finished commands: a late or replayed result for them is recognised as such.
        self._finished: OrderedDict[str, str] = OrderedDict()
        self._remember = remember
        self.reasked = 0  # commands sent again to a silent device (see `send`)
        self.reasked_after_reconnect = 0  # commands sent again because the platform's link came back
        link._result_sinks.append(self.on_result_message)
        link.on_reconnect(self._link_back)

    def on_result_message(self, topic: str, payload: bytes) -> None:
        decoded = telemetry.decode(topic, payload)
        if isinstance(decoded, Rejected):
            self.reject(decoded)
            return
        body = decoded.payload
        assert isinstance(body, Result)
        self.on_result(decoded, body)

    def on_result(self, msg: Message, result: Result) -> None:
        waiting = self._waiting.get(result.command_id)
        if waiting is None:
            reason = "replayed_result" if result.command_id in self._finished else "unknown_command"
            rejected = Rejected(reason, f"result {result.status} for command {result.command_id} from "
                                f"{msg.device_id}, which is not waiting for one", msg.device_id)
            if self.orphan is not None:
                self.orphan(result, rejected)
            else:
                self.reject(rejected)
            return
        device_id, queue = waiting
        if device_id != msg.device_id:
            self.reject(Rejected("foreign", f"{msg.device_id} answered command {result.command_id} sent to "
                                 f"{device_id}", msg.device_id))
            return
        queue.put_nowait(result)

    async def read_state(self, device: Endpoint, timeout: float = 5.0) -> State:
        payload = await self.link.retained_state(device.device_id, timeout)
        decoded = telemetry.decode_payload(device.device_id, "state", payload)
        if isinstance(decoded, Rejected):
            raise DriverError("protocol", f"{device.device_id}: {decoded.detail}")
        assert isinstance(decoded.payload, State)
        return decoded.payload

    async def send(self, device: Endpoint, command: Command, *, timeout: float = 60.0,
                   reask_after: float | None = REASK_AFTER) -> AsyncGenerator[Result, None]:
        """Publish the command and yield its results until a terminal one (or raise on timeout).

        With `reask_after`, a device silent for that long is sent the same command again, then
        after twice as long, and so on: a result lost when a device's link dropped comes back
        from its store of results (protocol §1), not after the whole timeout. The same command
        id is never applied twice, so asking again is always safe; every sender re-asks by
        default (None turns it off).

        The platform's own outages do not count against the device (see `_Wait`): publishing
        waits for the link, and once it is back the command is asked again at once under its
        id (always, even with `reask_after` None: the restarted broker has lost it, or the
        answer). A link still down when the wait ends raises DriverError("link"), not
        "timeout": nothing is known about the device."""
        queue: asyncio.Queue[Result | None] = asyncio.Queue()
        self._waiting[command.command_id] = (device.device_id, queue)
        topic = f"cityward/v1/{device.device_id}/cmd"
        link = self.link
        wait = _Wait(link, timeout)

        async def publish() -> int:
            """Publish (waiting for the link as long as the deadline allows); the connection used.
            The command's `expires_at` moves with the deadline, as the protocol has it: it is
            when the platform stops waiting (a device that knows the id answers from its store
            whatever the copy says)."""
            while True:
                late = wait.extension()
                payload = telemetry.encode(command if not late else msgspec.structs.replace(
                    command, expires_at=command.expires_at + timedelta(seconds=math.ceil(late))))
                try:
                    await link.publish(topic, payload, wait=max(wait.deadline() - time.monotonic(), 0.0))
                except DriverError as exc:
                    if exc.reason != "link":
                        raise
                    if wait.deadline() > time.monotonic():
                        continue  # an outage moves the deadline while it lasts: wait on
                    # The wait is over: the caller says whether for the device (the link is up,
                    # a busy broker only acknowledged late) or for the link (still down).
                return link.generation

        interval = reask_after
        if interval and link.settling():  # the device may be reconnecting still: ask sooner
            interval = min(interval, REASK_AFTER_RECONNECT)
        reask_at = wait.started + interval if interval else math.inf
        try:
            sent_on = await publish()
            while True:
                now = time.monotonic()
                left = wait.deadline() - now
                if left <= 0:
                    if not link.connected:
                        raise DriverError("link", f"lost the MQTT broker while following command "
                                          f"{command.command_id} to {device.device_id}; still down")
                    raise DriverError("timeout", f"{device.device_id} did not finish command "
                                      f"{command.command_id} within {timeout:g} s")
                if now >= reask_at and interval:
                    interval *= 2
                    reask_at = now + interval
                    self.reasked += 1
                    sent_on = await publish()
                    continue
                try:
                    result = await asyncio.wait_for(queue.get(), min(left, reask_at - now))
                except TimeoutError:
                    continue
                if result is None:  # the link is back
                    wait.link_back()
                    if link.generation != sent_on:  # what went out before may be lost with the broker
                        self.reasked_after_reconnect += 1
                        interval = min(reask_after, REASK_AFTER_RECONNECT) if reask_after else None
                        reask_at = time.monotonic() + interval if interval else math.inf
                        sent_on = await publish()
                    continue
                wait.heard()
                if interval:
                    reask_at = time.monotonic() + interval  # silence counts from the last word
                yield result
                if result.terminal:
                    return
        finally:
            self._waiting.pop(command.command_id, None)
            self._finished[command.command_id] = device.device_id
            while len(self._finished) > self._remember:
                self._finished.popitem(last=False)

    def _link_back(self) -> None:
        """Wake every waiting command: it is asked again on the new connection (see `send`)."""
        for _device_id, queue in self._waiting.values():
            queue.put_nowait(None)


class _Wait:
    """How long one command is waited for: its timeout, plus the time the platform could not
    hear the device because of its own link (up to one more timeout, so a broker that never
    comes back still ends the wait).

    That time is the outage itself, and after it the silence until the device's first word:
    after a broker restart every device reconnects with its own backoff, and a command lost with
    the broker (or sent, in the minute after, to a device not back yet) reaches the device only
    when it is back. A device that bricked during the outage is still found, by the extended
    deadline."""

    def __init__(self, link: MqttLink, timeout: float) -> None:
        self.link, self.timeout = link, timeout
        self.started = time.monotonic()
        self._down_before = link.downtime()
        self._quiet = 0.0  # closed spans from a reconnect to the device's next word
        # Sent while the devices are still coming back from the link's outage: the silence
        # before this device's first word does not count either.
        self._quiet_since: float | None = self.started if link.settling() else None

    def extension(self) -> float:
        quiet = self._quiet + (time.monotonic() - self._quiet_since if self._quiet_since is not None else 0.0)
        return min(self.link.downtime() - self._down_before + quiet, self.timeout)

    def deadline(self) -> float:
        return self.started + self.timeout + self.extension()

    def link_back(self) -> None:
        if self._quiet_since is None:
            self._quiet_since = time.monotonic()

    def heard(self) -> None:
        if self._quiet_since is not None:
            self._quiet += time.monotonic() - self._quiet_since
            self._quiet_since = None
