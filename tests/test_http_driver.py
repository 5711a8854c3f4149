"""The HTTP driver against hostile or broken devices on real sockets: every failure is a DriverError
with a reason, never a hang or a library exception."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from cityward.adapters.drivers.base import DriverError, Endpoint
from cityward.adapters.drivers.http import HttpDriver
from cityward.domain.telemetry import Command

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answer(status: int, body: bytes, *, length: int | None = None) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        n = len(body) if length is None else length
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: {n}\r\ncontent-type: application/json\r\n\r\n".encode()
                     + body)
        await writer.drain()
        writer.close()
    return handle


async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
    for _ in range(100):
        writer.write(b"{")
        await writer.drain()
        await asyncio.sleep(0.1)


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x00\xffnot http at all\r\n\r\n")
    await writer.drain()
    writer.close()


STATE = {"v": 1, "device_id": "SL-1", "seq": 1, "boot_id": "b", "at": "2026-11-25T12:00:00Z",
         "firmware_version": "1.0", "credential": {"state": "unique"}}


async def _run(handler: Handler, call: str) -> DriverError | object:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ep = Endpoint("SL-1", f"127.0.0.1:{port}", "pw")
    try:
        async with HttpDriver(timeout=1.0) as driver:
            if call == "state":
                return await driver.read_state(ep)
            if call == "info":
                return await driver.read_info(ep)
            now = datetime.now(UTC)
            cmd = Command(command_id="c1", action="reboot", issued_at=now, expires_at=now + timedelta(minutes=1))
            return [r async for r in driver.send(ep, cmd, timeout=2)]
    except DriverError as exc:
        return exc
    finally:
        server.close()


@pytest.mark.parametrize("handler, call, reason", [
    (hang, "state", "timeout"),
    (trickle, "state", "timeout"),
    (garbage, "state", "unreachable"),
    (answer(200, b"{broken"), "state", "protocol"),
    (answer(200, json.dumps({**STATE, "device_id": "SL-2"}).encode()), "state", "protocol"),
    (answer(200, b"[" * 70_000), "state", "protocol"),
    (answer(200, b"{}", length=10), "state", "unreachable"),
    (answer(401, b"{}"), "state", "auth"),
    (answer(429, b"{}"), "state", "locked"),
    (answer(500, b"{}"), "state", "refused"),
    (answer(200, b"{}"), "info", "protocol"),
    (answer(202, json.dumps({"v": 1, "device_id": "SL-1", "command_id": "other", "status": "accepted",
                             "at": "2026-11-25T12:00:00Z"}).encode()), "send", "protocol"),
])
def test_broken_devices_become_driver_errors(handler: Handler, call: str, reason: str) -> None:
    outcome = asyncio.run(_run(handler, call))
    assert isinstance(outcome, DriverError) and outcome.reason == reason, outcome


def test_a_good_answer_is_decoded() -> None:
    outcome = asyncio.run(_run(answer(200, json.dumps(STATE).encode()), "state"))
    assert not isinstance(outcome, DriverError) and outcome.seq == 1  # type: ignore[attr-defined]


def test_unreachable_address_and_missing_credentials() -> None:
    async def go() -> tuple[str, str]:
        async with HttpDriver(timeout=1.0) as driver:
            reasons = []
            for ep in (Endpoint("SL-1", "127.0.0.1:1", "pw"), Endpoint("SL-1", "127.0.0.1:1", None)):
                try:
                    await driver.read_state(ep)
                except DriverError as exc:
                    reasons.append(exc.reason)
            return reasons[0], reasons[1]
    assert asyncio.run(go()) == ("unreachable", "auth")


@pytest.mark.parametrize("address", ["fe80::1", "127.0.0.1:99999", "bad host:80", "[::1]:1"])
def test_unusable_addresses_are_driver_errors(address: str) -> None:
    async def go() -> str:
        async with HttpDriver(timeout=1.0) as driver:
            try:
                await driver.read_state(Endpoint("SL-1", address, "pw"))
            except DriverError as exc:
                return exc.reason
        return "no error"
    assert asyncio.run(go()) in ("config", "unreachable")


def test_queued_requests_wait_for_a_slot_without_losing_their_timeout() -> None:
    """Many devices at once: each request's timeout starts when it gets a connection, so a queue
    longer than the pool does not turn into timeouts."""

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.3)
        await answer(200, json.dumps(STATE).encode())(reader, writer)

    async def main() -> tuple[list[object], float]:
        server = await asyncio.start_server(slow, "127.0.0.1", 0)
        ep = Endpoint("SL-1", f"127.0.0.1:{server.sockets[0].getsockname()[1]}", "pw")
        try:
            async with HttpDriver(timeout=0.6, max_connections=2) as driver:
                t0 = asyncio.get_running_loop().time()
                got = await asyncio.gather(*(driver.read_state(ep) for _ in range(8)), return_exceptions=True)
                return got, asyncio.get_running_loop().time() - t0
        finally:
            server.close()

    got, took = asyncio.run(main())
    assert [type(g).__name__ for g in got] == ["State"] * 8
    assert took >= 1.1, f"two at a time, 0.3 s each: eight take four rounds, not {took:.2f} s"


def test_a_device_restarting_mid_command_is_followed_until_it_answers() -> None:
    """After an upgrade a device restarts: its API is gone for a while, then answers the result."""

    def reply(status: str) -> bytes:
        return json.dumps({"v": 1, "device_id": "SL-1", "command_id": "c1", "status": status,
                           "at": "2026-11-25T12:00:00Z"}).encode()

    async def main() -> list[str]:
        async def first_boot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await answer(202, reply("accepted"))(reader, writer)
            server.close()  # the device restarts right after accepting

        server = await asyncio.start_server(first_boot, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def reboot() -> asyncio.Server:
            await asyncio.sleep(1.0)
            return await asyncio.start_server(answer(200, reply("succeeded")), "127.0.0.1", port)

        back = asyncio.create_task(reboot())
        now = datetime.now(UTC)
        cmd = Command(command_id="c1", action="upgrade_firmware", issued_at=now, expires_at=now + timedelta(minutes=1))
        try:
            async with HttpDriver(timeout=0.5, poll_interval=0.1) as driver:
                return [r.status async for r in driver.send(Endpoint("SL-1", f"127.0.0.1:{port}", "pw"), cmd,
                                                            timeout=5)]
        finally:
            (await back).close()

    assert asyncio.run(main()) == ["accepted", "succeeded"]


def test_a_post_whose_answer_never_comes_is_sent_again_under_the_same_id() -> None:
    """The device took the command but its answer was lost (the request timed out): the same
    command id is POSTed again and the device answers from its store."""
    seen: list[str] = []

    async def forgetful(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        seen.append(json.loads(await reader.readexactly(length))["command_id"])
        if len(seen) == 1:
            await asyncio.sleep(3)  # applied, but the answer never leaves
            return
        body = json.dumps({"v": 1, "device_id": "SL-1", "command_id": "c1", "status": "succeeded",
                           "at": "2026-11-25T12:00:00Z", "repeat": True}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    async def main() -> tuple[list[str], int]:
        server = await asyncio.start_server(forgetful, "127.0.0.1", 0)
        ep = Endpoint("SL-1", f"127.0.0.1:{server.sockets[0].getsockname()[1]}", "pw")
        now = datetime.now(UTC)
        cmd = Command(command_id="c1", action="reboot", issued_at=now, expires_at=now + timedelta(minutes=1))
        try:
            async with HttpDriver(timeout=0.5, poll_interval=0.1) as driver:
                return [r.status async for r in driver.send(ep, cmd, timeout=5)], driver.reasked
        finally:
            server.close()

    statuses, reasked = asyncio.run(main())
    assert statuses == ["succeeded"] and reasked == 1 and seen == ["c1", "c1"]
