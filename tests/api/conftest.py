"""The API over a real socket: uvicorn in a thread on 127.0.0.1, httpx as the client.

Every test gets a fresh server around the `platform` fixture, so it runs on SQLite and on
PostgreSQL like the service tests; tokens are issued through the services, as an operator would.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest
from api_support import CITY, Api, Browser, Swappable, serve

from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.entrypoints.api.app import create_app
from cityward.services import tokens, users


@pytest.fixture(scope="session")
def server() -> Iterator[tuple[Swappable, str]]:
    """One real server for the session (starting uvicorn per test costs ~0.3 s)."""
    front = Swappable()
    with serve(front) as url:
        yield front, url


@pytest.fixture
def api(server: tuple[Swappable, str], platform: Platform, city: Caller) -> Iterator[Api]:
    """A fresh app for this test's platform behind the session's server."""
    front, url = server
    admin = tokens.create_token(platform.uow, city, CITY, "test admin", "admin").secret
    with front.installed(create_app(platform)):
        yield Api(url, platform, city, admin)


@pytest.fixture
def admin(api: Api) -> Iterator[httpx.Client]:
    """A client acting as the city's admin token."""
    with api.client(api.admin_token) as client:
        yield client


@pytest.fixture
def browser(api: Api) -> Iterator[Browser]:
    b = Browser(api.url)
    yield b
    b.http.close()


@pytest.fixture
def anna(api: Api) -> str:
    password = secrets.token_urlsafe(16)
    users.create_user(api.platform.uow, api.city, "anna", "Springfield", "admin", password=password)
    return password
