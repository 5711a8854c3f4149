"""HTTP transport (protocol §3) and the sim-only control API, served by ONE uvicorn server.

Each HTTP device listens on its own loopback address (127.x.y.z:8080; Linux routes all of
127.0.0.0/8 to `lo`), so the platform reaches it exactly as it would reach a real device. One
server owns all the pre-bound sockets and a single Starlette app finds the device from the local
address of the connection (`scope["server"]`): thousands of devices cost one event loop, not
thousands of servers. Where such an address cannot be bound (macOS, BSD) the device falls back to
127.0.0.1 on a port of its own and reports that address.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    from cityward.sim.runner import Agent, Sim

MAX_JSON = 64 * 1024
LOCK_FAILURES = 5
LOCK_WINDOW = 60.0
LOCK_SECONDS = 60.0


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(body), status, headers=headers, media_type="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"v": 1, "error": message}, status, headers)


def bind_device_socket(host: str, port: int) -> tuple[socket.socket, str]:
    """A listening socket on host:port, or on 127.0.0.1 with a free port when that fails."""
    for addr in ((host, port), ("127.0.0.1", 0)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(64)
        except OSError:
            sock.close()
            if addr[1] == 0:
                raise
            continue
        sock.setblocking(False)
        bound_host, bound_port = sock.getsockname()[:2]
        return sock, f"{bound_host}:{bound_port}"
    raise OSError("unreachable")  # pragma: no cover


def split_hostport(text: str, default_port: int = 8080) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    return host, int(port)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the runner owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpFront:
    """The uvicorn server for every HTTP device plus the control API."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.sockets: list[socket.socket] = []
        self.by_address: dict[str, Agent] = {}
        self.index: dict[str, int] = {}  # device id -> position of its socket (and uvicorn server)
        self.control_address = ""
        self.server: _Server | None = None
        self.task: asyncio.Task[None] | None = None

    def bind(self, agents: list[Agent], control: str) -> None:
        for agent in agents:
            host, port = split_hostport(agent.device.address or "127.0.0.1:0")
            sock, actual = bind_device_socket(host, port)
            agent.device.address = actual
            self.index[agent.device.id] = len(self.sockets)
            self.sockets.append(sock)
            self.by_address[actual] = agent
        host, port = split_hostport(control, 0)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot bind the control API on {control}: {exc.strerror or exc}") from None
        sock.listen(64)
        sock.setblocking(False)
        bound_host, bound_port = sock.getsockname()[:2]
        self.control_address = f"{bound_host}:{bound_port}"
        self.sockets.append(sock)

    async def start(self) -> None:
        config = uvicorn.Config(build_app(self), log_level="warning", access_log=False, lifespan="off",
                                timeout_keep_alive=5, server_header=False)
        self.server = _Server(config)
        self.task = asyncio.create_task(self.server.serve(sockets=self.sockets))
        while not self.server.started:
            if self.task.done():
                self.task.result()
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)

    def close_device(self, device_id: str) -> None:
        """Stop listening for one device (a bricked device never answers again)."""
        i = self.index.get(device_id)
        if self.server is not None and i is not None and i < len(self.server.servers):
            self.server.servers[i].close()

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 10)


def _local(request: Request) -> str:
    server = request.scope.get("server")
    return f"{server[0]}:{server[1]}" if server else ""


def build_app(front: HttpFront) -> Starlette:
    sim = front.sim

    def device(request: Request, *, authenticate: bool = True) -> Agent | Response:
        agent = front.by_address.get(_local(request))
        if agent is None or agent.device.bricked:
            return _error(404, "no such device here")
        sim.stats["http_requests"] += 1
        if not authenticate:  # protocol §3: identity (`/info`) is public, for discovery
            return agent
        now = time.monotonic()
        if agent.locked_until > now:
            return _error(429, "locked after repeated authentication failures",
                          {"Retry-After": str(int(agent.locked_until - now) + 1)})
        user, password = "", ""
        header = request.headers.get("authorization", "")
        if header[:6].lower() == "basic ":
            with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                user, _sep, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        if user == "admin" and agent.device.check_password(password):
            return agent
        agent.auth_failures = [t for t in agent.auth_failures if now - t < LOCK_WINDOW] + [now]
        sim.stats["http_auth_failures"] += 1
        if len(agent.auth_failures) >= LOCK_FAILURES:
            agent.locked_until = now + LOCK_SECONDS
            agent.auth_failures = []
        return _error(401, "authentication required", {"WWW-Authenticate": 'Basic realm="cityward"'})

    async def body(request: Request, limit: int) -> bytes | Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return _error(413, f"body over {limit} bytes") if length.isdigit() else _error(400, "bad length")
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                return _error(413, f"body over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def info(request: Request) -> Response:
        agent = device(request, authenticate=False)
        return agent if isinstance(agent, Response) else _json(agent.device.hello(sim.now()))

    async def state(request: Request) -> Response:
        agent = device(request)
        return agent if isinstance(agent, Response) else _json(agent.device.state(sim.now()))

    async def config(request: Request) -> Response:
        agent = device(request)
        if isinstance(agent, Response):
            return agent
        return _json({"v": 1, "config": agent.device.config, "config_hash": agent.device.config_hash})

    async def certificates(request: Request) -> Response:
        agent = device(request)
        if isinstance(agent, Response):
            return agent
        return _json({"v": 1, "certificates": [c.as_json() for c in agent.device.certificates]})

    async def commands(request: Request) -> Response:
        agent = device(request)
        if isinstance(agent, Response):
            return agent
        raw = await body(request, MAX_JSON)
        if isinstance(raw, Response):
            return raw
        try:
            payload: Any = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return _error(400, "malformed JSON")
        reply = await agent.submit(payload)
        if isinstance(reply, str):
            return _error(400, reply)
        return _json(reply.result, 200 if reply.repeat else 202)

    async def command(request: Request) -> Response:
        agent = device(request)
        if isinstance(agent, Response):
            return agent
        result = agent.device.latest(request.path_params["command_id"])
        return _json(result) if result is not None else _error(404, "unknown command_id")

    async def firmware(request: Request) -> Response:
        agent = device(request)
        if isinstance(agent, Response):
            return agent
        command_id = request.path_params["command_id"]
        if agent.device.latest(command_id) is None:
            return _error(404, "unknown command_id")
        waiting = agent.awaiting_image.get(command_id)
        if waiting is None:
            return _error(400, "this command is not waiting for an image")
        image_future, declared = waiting
        raw = await body(request, declared)
        if isinstance(raw, Response):
            return raw
        if image_future.done():
            return _error(400, "this command is not waiting for an image")
        checked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        image_future.set_result((raw, checked))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(checked), 30)
        return _json(agent.device.latest(command_id))

    # --- the sim-only control API -------------------------------------------------------------

    def control_only(request: Request) -> Response | None:
        return None if _local(request) == front.control_address else _error(404, "not found")

    async def ready(request: Request) -> Response:
        if (denied := control_only(request)) is not None:
            return denied
        return _json({"ready": sim.ready.is_set(), "up": sim.up_count, "expected": sim.expected},
                     200 if sim.ready.is_set() else 503)

    async def stats(request: Request) -> Response:
        if (denied := control_only(request)) is not None:
            return denied
        return _json(sim.stats_snapshot())

    async def device_view(request: Request) -> Response:
        if (denied := control_only(request)) is not None:
            return denied
        agent = sim.agents.get(request.path_params["device_id"])
        if agent is None:
            return _error(404, "no such device")
        return _json(agent.view())

    routes = [
        Route("/cityward/v1/info", info), Route("/cityward/v1/state", state),
        Route("/cityward/v1/config", config), Route("/cityward/v1/certificates", certificates),
        Route("/cityward/v1/commands", commands, methods=["POST"]),
        Route("/cityward/v1/commands/{command_id}", command),
        Route("/cityward/v1/firmware/{command_id}", firmware, methods=["PUT"]),
        Route("/sim/ready", ready), Route("/sim/stats", stats), Route("/sim/devices/{device_id}", device_view),
    ]
    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return _error(status, "method not allowed" if status == 405 else "not found")

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


__all__ = ["HttpFront", "bind_device_socket", "split_hostport"]
