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


async def _retained_scenario() -> tuple[list[str], list[str], list[str], int, int, list[str]]:
    """D1 retains its state while the platform listens; D2 connects later (its own downlink only);
    then a second platform client subscribes with a wildcard. Returns what D2 got, what the late
    platform client got, what D2 got on its own retained downlink, and how many topic matches
    D2's connection and one message of D1's cost the broker, and what the platform got of it."""
    accounts = [*ACCOUNTS, *(BrokerAccount(f"X{i}", "x" * 24, "device") for i in range(300))]
    broker, url = await embedded_broker.start(accounts)
    port = int(url.rsplit(":", 1)[1])
    matches = 0
    original = broker._matches

    def counting(topic: str, a_filter: str) -> bool:
        nonlocal matches
        matches += 1
        return bool(original(topic, a_filter))

    async def drain(client: aiomqtt.Client, into: list[str], seconds: float = 0.5) -> None:
        async def loop() -> None:
            async for m in client.messages:
                into.append(m.topic.value)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loop(), seconds)

    stray: list[str] = []
    late: list[str] = []
    own: list[str] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            plat = await stack.enter_async_context(aiomqtt.Client(
                "127.0.0.1", port, username="cityward-platform", password="p" * 24, identifier="platform"))
            await plat.subscribe("cityward/v1/+/state", qos=1)
            for i in range(300):  # many clients, each holding its own downlink filter
                x = await stack.enter_async_context(aiomqtt.Client(
                    "127.0.0.1", port, username=f"X{i}", password="x" * 24, identifier=f"X{i}"))
                await x.subscribe(f"cityward/v1/X{i}/cmd", qos=1)
                await x.publish(f"cityward/v1/X{i}/state", b"{}", qos=1, retain=True)
            async with aiomqtt.Client("127.0.0.1", port, username="D1", password="d" * 24, identifier="D1") as d1:
                await d1.publish("cityward/v1/D1/state", b"retained", qos=1, retain=True)
            await plat.publish("cityward/v1/D2/cmd", b"waiting", qos=1, retain=True)
            await asyncio.sleep(0.3)  # that message's broadcast is over
            broker._matches = counting
            d2 = await stack.enter_async_context(aiomqtt.Client(
                "127.0.0.1", port, username="D2", password="e" * 24, identifier="D2"))
            await drain(d2, stray)
            connect_matches = matches
            await d2.subscribe("cityward/v1/D2/cmd", qos=1)
            await drain(d2, own)
            plat2 = await stack.enter_async_context(aiomqtt.Client(
                "127.0.0.1", port, username="cityward-platform", password="p" * 24, identifier="platform-2"))
            await plat2.subscribe("cityward/v1/+/state", qos=1)
            await drain(plat2, late, 1.0)
            matches = 0
            async with aiomqtt.Client("127.0.0.1", port, username="D1", password="d" * 24, identifier="D1") as d1:
                await d1.publish("cityward/v1/D1/state", b"fresh", qos=1)
            heard: list[str] = []
            await drain(plat2, heard)
            message_matches = matches
    finally:
        await broker.shutdown()
    return stray, late, own, connect_matches, message_matches, heard


def test_retained_messages_go_only_to_their_subscribers() -> None:
    """A connecting client is not replayed the retained messages of other clients' filters (it was:
    past the ACL, and at a cost of filters times retained topic matches per connection, seconds of
    CPU per gateway reconnect in the demo city); its own and wildcard subscriptions still get them.
    A message is matched against the wildcard filters only, not against every client's filter."""
    stray, late, own, connect_matches, message_matches, heard = asyncio.run(_retained_scenario())
    assert stray == []
    assert own == ["cityward/v1/D2/cmd"]
    assert "cityward/v1/D1/state" in late and len(set(late)) == 301
    assert connect_matches < 50
    assert heard == ["cityward/v1/D1/state"] and message_matches < 20
