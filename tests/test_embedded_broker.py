"""The demo's embedded broker (amqtt) enforces the same accounts and topic rules as Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt

from cityward.adapters import embedded_broker
from cityward.adapters.mosquitto import BrokerAccount

ACCOUNTS = [BrokerAccount("cityward-platform", "p" * 24, "platform"), BrokerAccount("D1", "d" * 24, "device"),
            BrokerAccount("D2", "e" * 24, "device"), BrokerAccount("GW1", "g" * 24, "gateway", ("C1",))]


async def _scenario() -> tuple[list[tuple[str, bytes]], list[str], str]:
    broker, url = await embedded_broker.start(ACCOUNTS)
    port = int(url.rsplit(":", 1)[1])
    got: list[tuple[str, bytes]] = []
    refused: list[str] = []
    try:
        async with aiomqtt.Client("127.0.0.1", port, username="cityward-platform", password="p" * 24,
                                  identifier="platform") as plat:
            await plat.subscribe("cityward/v1/+/state", qos=1)
            async with aiomqtt.Client("127.0.0.1", port, username="D1", password="d" * 24, identifier="D1") as d1:
                await d1.publish("cityward/v1/D1/state", b"own", qos=1)
                await d1.publish("cityward/v1/D2/state", b"foreign", qos=1)
            async with aiomqtt.Client("127.0.0.1", port, username="GW1", password="g" * 24, identifier="GW1") as gw:
                await gw.publish("cityward/v1/C1/state", b"child", qos=1)
                await gw.publish("cityward/v1/D2/state", b"not a child", qos=1)

            async def receive() -> None:
                async for m in plat.messages:
                    assert isinstance(m.payload, bytes)
                    got.append((m.topic.value, m.payload))

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(receive(), 1.0)
        for user, password in (("D1", "wrong"), ("nobody", "x" * 24), ("C1", "")):
            try:
                async with aiomqtt.Client("127.0.0.1", port, username=user, password=password, identifier=user):
                    pass
            except aiomqtt.MqttError:
                refused.append(user)
    finally:
        await broker.shutdown()
    return got, refused, url


def test_accounts_and_topic_rules() -> None:
    got, refused, url = asyncio.run(_scenario())
    assert url.startswith("mqtt://127.0.0.1:")
    assert sorted(got) == [("cityward/v1/C1/state", b"child"), ("cityward/v1/D1/state", b"own")]
    assert refused == ["D1", "nobody", "C1"]
