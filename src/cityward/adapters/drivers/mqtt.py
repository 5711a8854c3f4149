"""The platform's MQTT side: one broker connection (aiomqtt) shared by ingestion and commands.

Everything from devices arrives on one subscription per channel and is dispatched: `result` to
the command waiters, the rest to whoever ingests state. aiomqtt/paho errors stop here and become
DriverError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiomqtt

from cityward.adapters.drivers.base import DriverError, Endpoint
from cityward.domain import telemetry
from cityward.domain.telemetry import Command, Message, Rejected, Result, State

log = logging.getLogger("cityward.mqtt")

SUBSCRIPTIONS = tuple(f"cityward/v1/+/{c}" for c in ("hello", "state", "status", "result"))
RESULTS_ONLY = ("cityward/v1/+/result",)  # a link that only sends commands (a rollout executor)


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


class MqttLink:
    """One connection as the platform account; dispatches what devices publish."""

    def __init__(self, url: str, *, client_id: str = "cityward-platform",
                 on_message: Callable[[str, bytes], None] | None = None, max_queued: int = 200_000,
                 subscriptions: tuple[str, ...] = SUBSCRIPTIONS) -> None:
        self.address = parse_broker_url(url)
        self.client_id = client_id
        self.on_message = on_message
        self.max_queued = max_queued
        self.subscriptions = subscriptions
        self._client: aiomqtt.Client | None = None
        self._result_sinks: list[Callable[[str, bytes], None]] = []
        self._state_waiters: dict[str, asyncio.Future[bytes]] = {}

    @property
    def dropped(self) -> int:
        return _CountingQueue.dropped

    async def __aenter__(self) -> MqttLink:
        a = self.address
        self._client = aiomqtt.Client(
            a.host, a.port, username=a.username, password=a.password, identifier=self.client_id,
            clean_session=True, keepalive=30, queue_type=_CountingQueue, max_queued_incoming_messages=self.max_queued,
            tls_params=aiomqtt.TLSParameters() if a.tls else None, logger=_CLIENT_LOG,
            timeout=30,  # a broker busy with a whole city can take more than the default 10 s to answer
        )
        # Hundreds of commands published at once are the point of a rollout, not a warning.
        self._client.pending_calls_threshold = 10_000
        try:
            await self._client.__aenter__()
            for topic in self.subscriptions:
                await self._client.subscribe(topic, qos=1)
        except aiomqtt.MqttError as exc:
            self._client = None
            raise DriverError("unreachable", f"cannot connect to the MQTT broker at {a.host}:{a.port} as "
                              f"{a.username or 'anonymous'}: {exc}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except aiomqtt.MqttError as err:
                log.debug("disconnect: %s", err)

    @property
    def client(self) -> aiomqtt.Client:
        if self._client is None:
            raise DriverError("unreachable", "not connected to the MQTT broker")
        return self._client

    async def run(self) -> None:
        """Dispatch messages until the connection ends (DriverError) or the task is cancelled."""
        try:
            async for message in self.client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
                topic = message.topic.value
                if topic.endswith("/result"):
                    for sink in self._result_sinks:
                        sink(topic, payload)
                    if not self._result_sinks and self.on_message:
                        self.on_message(topic, payload)
                    continue
                if topic.endswith("/state") and self._state_waiters:
                    device_id = topic.split("/")[2]
                    waiter = self._state_waiters.get(device_id)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(payload)
                if self.on_message:
                    self.on_message(topic, payload)
        except aiomqtt.MqttError as exc:
            raise DriverError("unreachable", f"lost the MQTT broker connection: {exc}") from exc

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        try:
            await self.client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            raise DriverError("unreachable", f"cannot publish to {topic}: {exc}") from exc

    async def retained_state(self, device_id: str, timeout: float) -> bytes:
        """The retained `state` of one device (a fresh subscription makes the broker resend it)."""
        topic = f"cityward/v1/{device_id}/state"
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._state_waiters[device_id] = fut
        try:
            await self.client.subscribe(topic, qos=1)
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise DriverError("timeout", f"{device_id} has no retained state on the broker") from None
        except aiomqtt.MqttError as exc:
            raise DriverError("unreachable", f"cannot subscribe to {topic}: {exc}") from exc
        finally:
            self._state_waiters.pop(device_id, None)
            with contextlib.suppress(aiomqtt.MqttError, DriverError):
                await self.client.unsubscribe(topic)


REASK_AFTER = 4.0  # seconds of silence before a command is sent again under the same id


class MqttDriver:
    """Commands over MQTT: publish on `cmd`, follow the device's `result` messages."""

    def __init__(self, link: MqttLink, *, reject: Callable[[Rejected], None] | None = None,
                 orphan: Callable[[Result, Rejected], None] | None = None, remember: int = 100_000) -> None:
        self.link = link
        self.reject = reject or (lambda r: log.warning("%s: %s", r.reason, r.detail))
        # Results nobody here waits for (a command sent by another process, a late answer): the
        # owner may still know the command (e.g. from the database); else they are rejected.
        self.orphan = orphan
        self._waiting: dict[str, tuple[str, asyncio.Queue[Result]]] = {}
        # Recently finished commands: a late or replayed result for them is recognised as such.
        self._finished: OrderedDict[str, str] = OrderedDict()
        self._remember = remember
        self.reasked = 0  # commands sent again to a silent device (see `send`)
        link._result_sinks.append(self.on_result_message)

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
        default (None turns it off)."""
        queue: asyncio.Queue[Result] = asyncio.Queue()
        self._waiting[command.command_id] = (device.device_id, queue)
        topic, payload = f"cityward/v1/{device.device_id}/cmd", telemetry.encode(command)
        now = time.monotonic()
        deadline = now + timeout
        interval = reask_after
        reask_at = now + interval if interval else math.inf
        try:
            await self.link.publish(topic, payload)
            while True:
                now = time.monotonic()
                left = deadline - now
                if left <= 0:
                    raise DriverError("timeout", f"{device.device_id} did not finish command "
                                      f"{command.command_id} within {timeout:g} s")
                if now >= reask_at and interval:
                    interval *= 2
                    reask_at = now + interval
                    self.reasked += 1
                    await self.link.publish(topic, payload)
                    continue
                try:
                    result = await asyncio.wait_for(queue.get(), min(left, reask_at - now))
                except TimeoutError:
                    continue
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
