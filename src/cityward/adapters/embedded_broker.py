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
from dataclasses import dataclass, field
from typing import Any

from amqtt.broker import Broker
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
    """amqtt 0.12's broker with retained messages delivered only where they belong.

    On every connection amqtt replays retained messages for *every* topic filter any client holds,
    to the connecting client, by matching each filter against every retained message: a city's
    gateways hold thousands of filters and its devices retain thousands of states, so each
    (re)connect cost seconds of CPU in the demo's process (the second audit waited behind it), and
    a client could be handed retained messages of filters it never subscribed to (past the ACL).
    Here a client gets the retained messages of its own filters only, an exact filter by one
    lookup and a wildcard one by a scan."""

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
