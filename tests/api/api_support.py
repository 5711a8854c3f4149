"""Helpers for the API tests: a real uvicorn server in a thread, and small request helpers."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.entrypoints.api.app import create_app
from cityward.services import tokens

CITY = "Springfield"


@contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Run `app` on a free loopback port until the block ends; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            access_log=False, lifespan="auto")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        assert not thread.is_alive(), "uvicorn did not stop"


class Swappable:
    """An ASGI app that forwards to whichever app the current test installed.

    Lets one uvicorn server serve the whole session while every test still gets its own
    `create_app(platform)` (the platform fixture is per test and per backend).
    """

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the per-test apps own nothing that needs one
            return
        assert self.app is not None, "no app installed for this test"
        await self.app(scope, receive, send)

    @contextmanager
    def installed(self, app: ASGIApp) -> Iterator[None]:
        self.app = app
        try:
            yield
        finally:
            self.app = None


@dataclass
class Api:
    """A running server and an admin token of the city."""

    url: str
    platform: Platform
    city: Caller
    admin_token: str

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def token(self, org: str, role: str = "operator", name: str | None = None) -> str:
        issued = tokens.create_token(self.platform.uow, self.city, org, name or f"{org} {role}",
                                     role)
        return issued.secret


@contextmanager
def serve_with(platform: Platform, **settings: Any) -> Iterator[str]:
    """A server for `platform` with some settings changed (e.g. a small upload cap)."""
    changed = dataclasses.replace(platform, settings=platform.settings.model_copy(update=settings))
    with serve(create_app(changed)) as url:
        yield url


def make_org(client: httpx.Client, name: str, kind: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/api/v1/orgs", json={"name": name, "kind": kind, **extra})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def make_zone(client: httpx.Client, name: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/api/v1/zones", json={"name": name, **extra})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def csv_text(header: str, *rows: str) -> bytes:
    return ("\n".join((header, *rows)) + "\n").encode()


def import_csv(client: httpx.Client, body: bytes, **params: Any) -> httpx.Response:
    return client.post("/api/v1/devices/import", params={"format": "csv", **params}, content=body)


def device_ids(client: httpx.Client, **params: Any) -> list[str]:
    """Every device id the client may see, following the cursor."""
    ids: list[str] = []
    after: str | None = None
    while True:
        query = {**params, **({"after": after} if after else {})}
        response = client.get("/api/v1/devices", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        ids += [d["id"] for d in page["items"]]
        after = page["next_after"]
        if after is None:
            return ids


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with `status`; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:cityward:problem:")
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body  # type: ignore[no-any-return]



def small_rollout(api: Api, devices: int) -> int:
    """A reboot rollout of `devices` devices in a new zone "north", created (not started) by the city."""
    from pathlib import Path

    from tests.helpers import HEADER, csv_bytes, device
    from tests.helpers import import_csv as import_rows

    from cityward.domain.rollouts import Operation, WaveOptions
    from cityward.services import rollouts, zones
    from cityward.services.inventory import DeviceFilter

    zones.create_zone(api.platform.uow, api.city, "north")
    import_rows(api.platform, api.city, csv_bytes([device(i, zone="north", protocol="mqtt")
                                                   for i in range(1, devices + 1)], [*HEADER, "protocol"]),
                create_missing=True)
    rid, _plan = rollouts.create(api.platform.uow, api.city, rollouts.RolloutRequest(
        "reboot the north", Operation.REBOOT, rollouts.Target(DeviceFilter(zone="north")),
        WaveOptions(canary=1, percentages=(100,))), Path(api.platform.settings.firmware_dir))
    return rid


class Browser:
    """An httpx client that keeps cookies itself: httpx would not send back a Secure cookie over the
    test's plain-HTTP loopback, while browsers do for localhost."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30, headers={"Accept": "text/html"})
        self.cookies: dict[str, str] = {}
        self.set_cookie: list[str] = []

    def _keep(self, response: httpx.Response) -> httpx.Response:
        self.set_cookie = response.headers.get_list("set-cookie")
        for header in self.set_cookie:
            for name, morsel in SimpleCookie(header).items():
                if morsel["max-age"] == "0" or morsel.value in ("", '""'):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response

    def get(self, path: str, **kw: object) -> httpx.Response:
        return self._keep(self.http.get(path, headers=self._header(), **kw))  # type: ignore[arg-type]

    def post(self, path: str, data: dict[str, str] | dict[str, str | list[str]], **kw: object) -> httpx.Response:
        """A form post; a list value is a repeated field (ticked checkboxes), as a browser sends it."""
        return self._keep(self.http.post(path, data=data, headers=self._header(), **kw))  # type: ignore[arg-type]

    def _header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    def form_token(self, html: str) -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert found, html
        return found.group(1)

    def sign_in(self, username: str, password: str, next_page: str = "/") -> httpx.Response:
        form = self.get(f"/login?next={next_page}")
        return self.post("/login", {"username": username, "password": password, "next": next_page,
                                    "csrf_token": self.form_token(form.text)})
