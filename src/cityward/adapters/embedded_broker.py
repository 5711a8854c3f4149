"""The demo's in-process MQTT broker (amqtt), locked down like the Mosquitto that provisioning writes.

Used only when CITYWARD_MQTT_URL is unset, so that `cityward demo` needs nothing installed. It
listens on loopback only, accepts only the provisioned accounts (the auth plugin below: amqtt's own
file plugin wants argon2 hashes, which would take minutes to compute for a city's devices), and
applies the protocol's topic rules with amqtt's ACL plugin.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from cityward.adapters.mosquitto import DOWNLINK_TOPIC, PLATFORM_USERNAME, TOPIC_ROOT, UPLINK_TOPICS, BrokerAccount


class AccountAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """Username/password against the provisioned accounts, compared in constant time."""

    @dataclass
    class Config:
        accounts: dict[str, str] = field(default_factory=dict)

    async def authenticate(self, *, session: Session) -> bool | None:
        accounts: dict[str, str] = self.config.accounts
        expected = accounts.get(session.username or "")
        given = session.password or ""
        return expected is not None and hmac.compare_digest(expected.encode(), given.encode())


class CityBroker(Broker):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt 0.12's broker with its two scans over every topic filter replaced by lookups.

    A city's gateways hold thousands of filters (one per child's downlink) and its devices retain
    thousands of states. amqtt matched every message against every filter (formatting a debug
    line for each miss), and on every connection replayed retained messages for *every* filter any
    client holds, to the connecting client, matching each filter against each retained message.
    That was seconds of CPU per gateway reconnect, and most of the demo's process: rollouts and the
    audits after them waited behind it. It also handed a client retained messages of filters it
    never subscribed to, past the ACL. Here a message goes to the filters equal to its topic plus
    the wildcard ones that match, and a client gets the retained messages of its own filters only.
    The methods replaced are amqtt's private ones (0.12.1, pinned in uv.lock); the embedded broker's
    tests pin the behaviour."""

    async def _run_broadcast(self, running_tasks: deque[asyncio.Task[Any]]) -> None:
        broadcast = await self._broadcast_queue.get()
        topic = broadcast["topic"]
        # A list, made before the first await: a client subscribing meanwhile cannot break the loop.
        filters = [f for f in self._subscriptions if ("+" in f or "#" in f) and self._matches(topic, f)]
        if topic in self._subscriptions:
            filters.append(topic)
        for k_filter in filters:
            for target_session, sub_qos in list(self._subscriptions.get(k_filter, ())):
                qos = broadcast.get("qos", sub_qos)
                if not await self._topic_filtering(target_session, topic=topic, action=Action.RECEIVE):
                    continue
                connected = target_session.transitions.state == "connected"
                # MQTT 3.1.2.4: kept for a disconnected persistent session at QoS 1 or 2
                if (not connected and not target_session.clean_session and qos in (QOS_1, QOS_2)
                        and not target_session.is_anonymous):
                    await self._retain_broadcast_message(broadcast, qos, target_session)
                    continue
                handler = self._get_handler(target_session) if connected else None
                if handler:
                    running_tasks.append(asyncio.ensure_future(
                        handler.mqtt_publish(topic, broadcast["data"], qos, retain=False)))

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Session) -> None:
        topic_filter, qos = subscription
        holders = self._subscriptions.get(topic_filter, ())
        if not any(s.client_id == session.client_id for s, _q in holders):
            return
        if "+" in topic_filter or "#" in topic_filter:
            matching = [m for t, m in self._retained_messages.items() if self._matches(t, topic_filter)]
        else:
            exact = self._retained_messages.get(topic_filter)
            matching = [] if exact is None else [exact]
        handler = self._get_handler(session)
        if handler is None or not matching:
            return
        await asyncio.wait([asyncio.ensure_future(handler.mqtt_publish(
            m.topic, m.data, min(qos, m.qos or qos), retain=True)) for m in matching])


def _acl(accounts: list[BrokerAccount]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    publish: dict[str, list[str]] = {}
    subscribe: dict[str, list[str]] = {}
    for a in accounts:
        if a.role == "platform":
            publish[a.username] = [f"{TOPIC_ROOT}/+/{DOWNLINK_TOPIC}"]
            subscribe[a.username] = [f"{TOPIC_ROOT}/+/{c}" for c in UPLINK_TOPICS]
            continue
        ids = [a.username, *a.children]
        publish[a.username] = [f"{TOPIC_ROOT}/{i}/{c}" for i in ids for c in UPLINK_TOPICS]
        subscribe[a.username] = [f"{TOPIC_ROOT}/{i}/{DOWNLINK_TOPIC}" for i in ids]
    return publish, subscribe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def broker_config(accounts: list[BrokerAccount], port: int) -> dict[str, Any]:
    publish, subscribe = _acl(accounts)
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 0}},
        "plugins": {
            f"{__name__}.AccountAuthPlugin": {"accounts": {a.username: a.password for a in accounts}},
            "amqtt.plugins.topic_checking.TopicAccessControlListPlugin": {"publish_acl": publish, "acl": subscribe},
        },
    }


async def start(accounts: list[BrokerAccount]) -> tuple[Broker, str]:
    """Start the broker on a free loopback port; returns it and its URL (without credentials)."""
    if not any(a.username == PLATFORM_USERNAME for a in accounts):
        raise ValueError("the platform account is missing")
    port = free_port()
    for noisy in ("amqtt", "transitions"):  # per-connection chatter would bury the demo's output
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    with warnings.catch_warnings():
        # amqtt 0.12's ACL plugin reads subscribe rules only from `acl` and warns that it is deprecated.
        warnings.filterwarnings("ignore", "The 'acl' option is deprecated", DeprecationWarning)
        broker = CityBroker(broker_config(accounts, port))
        await broker.start()
    return broker, f"mqtt://127.0.0.1:{port}"
