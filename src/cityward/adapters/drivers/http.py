"""The platform's HTTP side (httpx): each device's own small REST API (docs/protocol.md §3).

A device that hangs, answers garbage or answers too much is cut off by timeouts and a size cap and
becomes a DriverError with a reason; httpx errors never escape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import replace

import httpx

from cityward.adapters.drivers.base import DriverError, Endpoint
from cityward.domain import telemetry
from cityward.domain.telemetry import Command, Hello, Message, Rejected, Result, State

MAX_ANSWER_BYTES = telemetry.MAX_PAYLOAD_BYTES
BASE = "/cityward/v1"


class HttpDriver:
    def __init__(self, *, timeout: float = 5.0, poll_interval: float = 0.25, max_connections: int = 200) -> None:
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.reasked = 0  # commands POSTed again, under the same id, after a POST timed out
        # Requests wait here, not in httpx's pool: the pool rescans its whole queue on every
        # connection change, which at a thousand devices queued for 200 connections took a core
        # and let the queued requests time out. A device's timeout starts when its turn comes.
        self._slots = asyncio.Semaphore(max_connections)
        # No keep-alive: a fleet is thousands of hosts each asked a few times, so an idle
        # connection is seldom reused, and every idle one is checked on each request.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=0))

    async def __aenter__(self) -> HttpDriver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def _call(self, method: str, device: Endpoint, path: str, *, auth: bool = True,
                    body: bytes | None = None, content_type: str = "application/json") -> tuple[int, bytes]:
        if not device.address:
            raise DriverError("config", f"{device.device_id} has no address to reach it over HTTP")
        if auth and device.password is None:
            raise DriverError("auth", f"no admin credentials stored for {device.device_id} "
                              "(import the installer's handover with `cityward credentials import`)")
        url = f"http://{_host(device.address)}{BASE}{path}"
        basic = httpx.BasicAuth("admin", device.password) if auth and device.password is not None else None
        try:
            headers = {"content-type": content_type} if body else None
            async with (self._slots, asyncio.timeout(self.timeout),
                        self._client.stream(method, url, auth=basic, content=body, headers=headers) as resp):
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.aiter_raw():
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        raise DriverError("protocol", f"{device.device_id} answered more than "
                                          f"{MAX_ANSWER_BYTES} bytes to {method} {path}")
                    chunks.append(chunk)
                return resp.status_code, b"".join(chunks)
        except TimeoutError:
            raise DriverError("timeout", f"{device.device_id} at {device.address} did not answer {method} {path} "
                              f"within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise DriverError("unreachable", f"{device.device_id} at {device.address}: {exc!s} "
                              f"({type(exc).__name__})") from exc
        except DriverError:
            raise
        except Exception as exc:  # e.g. httpx.InvalidURL, a port out of range: the address is unusable
            raise DriverError("config", f"{device.device_id}: cannot use address {device.address!r}: "
                              f"{type(exc).__name__}: {exc}") from exc

    def _check(self, device: Endpoint, status: int, path: str) -> None:
        if status == 401:
            raise DriverError("auth", f"{device.device_id} refused the stored admin password")
        if status == 429:
            raise DriverError("locked", f"{device.device_id} locked its API after failed logins; retry in a minute")
        if status >= 400:
            raise DriverError("refused", f"{device.device_id} answered {status} to {path}")

    def _decode(self, device: Endpoint, channel: str, payload: bytes) -> Message:
        decoded = telemetry.decode_payload(device.device_id, channel, payload)
        if isinstance(decoded, Rejected):
            raise DriverError("protocol", f"{device.device_id} answered a bad {channel}: {decoded.detail}")
        return decoded

    async def read_info(self, device: Endpoint) -> Hello:
        """Identity, without credentials: what discovery asks an unknown address."""
        status, payload = await self._call("GET", device, "/info", auth=False)
        self._check(device, status, "/info")
        claimed = telemetry.claimed_device_id(payload)
        if claimed is None:
            raise DriverError("protocol", f"{device.address} answered /info without a device_id in a JSON object")
        body = self._decode(Endpoint(claimed, device.address), "hello", payload).payload
        assert isinstance(body, Hello)
        return body

    async def read_state(self, device: Endpoint) -> State:
        status, payload = await self._call("GET", device, "/state")
        self._check(device, status, "/state")
        body = self._decode(device, "state", payload).payload
        assert isinstance(body, State)
        return body

    async def push_firmware(self, device: Endpoint, command_id: str, image: bytes) -> Result:
        status, payload = await self._call("PUT", device, f"/firmware/{command_id}", body=image,
                                           content_type="application/octet-stream")
        self._check(device, status, "/firmware")
        return self._result(device, payload, command_id)

    def _result(self, device: Endpoint, payload: bytes, command_id: str) -> Result:
        body = self._decode(device, "result", payload).payload
        assert isinstance(body, Result)
        if body.command_id != command_id:
            raise DriverError("protocol", f"{device.device_id} answered command {command_id} with the result "
                              f"of {body.command_id}")
        return body

    async def send(self, device: Endpoint, command: Command, *, timeout: float = 60.0) -> AsyncGenerator[Result, None]:
        """POST the command, then poll its result until terminal; a retry re-POSTs the same id.

        A POST that times out is sent again under the same id (the device may have taken it and
        lost its answer; it answers a repeat from its store). After `set_password` the device's
        password is the new one the moment it applies it: a 401 with the old password is followed
        by one try with the new one, and a 401 with both ends the command (no polling into the
        lockout of protocol §3)."""
        deadline = time.monotonic() + timeout
        new_password = command.params.get("password") if command.action == "set_password" else None
        auth = _Auth(device, new_password if isinstance(new_password, str) else None)
        body = telemetry.encode(command)
        while True:
            try:
                status, payload = await self._authed("POST", auth, "/commands", body)
                break
            except DriverError as exc:
                if exc.reason != "timeout" or time.monotonic() + self.timeout > deadline:
                    raise
                self.reasked += 1
                await asyncio.sleep(self.poll_interval)
        auth.check(self, status, "/commands")
        result = self._result(device, payload, command.command_id)
        yield result
        last = result
        while not last.terminal:
            if time.monotonic() > deadline:
                raise DriverError("timeout", f"{device.device_id} did not finish command {command.command_id} "
                                  f"within {timeout:g} s")
            await asyncio.sleep(self.poll_interval)
            try:
                status, payload = await self._authed("GET", auth, f"/commands/{command.command_id}")
            except DriverError as exc:
                if exc.reason in ("unreachable", "timeout"):
                    continue  # it took the command and went quiet: restarting after an upgrade, say
                raise
            auth.check(self, status, "/commands")
            result = self._result(device, payload, command.command_id)
            if (result.status, result.progress) != (last.status, last.progress):
                yield result
            last = result

    async def _authed(self, method: str, auth: _Auth, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One call; a 401 switches to the command's new password once, if it brings one."""
        status, payload = await self._call(method, auth.endpoint, path, body=body)
        if status == 401 and auth.switch():
            status, payload = await self._call(method, auth.endpoint, path, body=body)
        return status, payload

class _Auth:
    """The password a command is followed with: the stored one, then (after a 401) the new one a
    `set_password` command installs, never back and forth."""

    def __init__(self, endpoint: Endpoint, new_password: str | None) -> None:
        self.endpoint = endpoint
        self._next = new_password if new_password != endpoint.password else None
        self.switched = False

    def switch(self) -> bool:
        if self._next is None:
            return False
        self.endpoint = replace(self.endpoint, password=self._next)
        self._next, self.switched = None, True
        return True

    def check(self, driver: HttpDriver, status: int, path: str) -> None:
        if status == 401 and self.switched:
            raise DriverError("auth", f"{self.endpoint.device_id} refused both its stored admin password and "
                              "the new one the command sets")
        driver._check(self.endpoint, status, path)


def _host(address: str) -> str:
    """A bare IPv6 address needs brackets in a URL (`fe80::1` → `[fe80::1]`)."""
    if address.count(":") > 1 and not address.startswith("["):
        return f"[{address}]"
    return address
