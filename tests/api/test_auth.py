"""Bearer-token authentication: everything under /api/v1 needs a live token; /healthz does not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from api_support import CITY, Api, assert_problem

from cityward.adapters.storage.models import TokenRow
from cityward.services import tokens

PROTECTED = ["/api/v1/devices", "/api/v1/devices/summary", "/api/v1/products", "/api/v1/zones",
             "/api/v1/orgs", "/api/v1/tokens", "/api/v1/auditlog", "/api/v1/auditlog/verify"]


def _assert_unauthorized(response: httpx.Response) -> None:
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_every_endpoint_refuses_a_request_without_a_token(api: Api) -> None:
    with api.client() as anonymous:
        for path in PROTECTED:
            _assert_unauthorized(anonymous.get(path))
        _assert_unauthorized(anonymous.post("/api/v1/orgs", json={"name": "X", "kind": "integrator"}))
        _assert_unauthorized(anonymous.post("/api/v1/devices/import?format=csv", content=b"id\n"))
        # Another scheme is no bearer token either.
        _assert_unauthorized(anonymous.get("/api/v1/devices", headers={"Authorization": "Basic eDp5"}))


@pytest.mark.parametrize("bad", ["nonsense", "cw_", "cw_abc_def", "cw_" + "x" * 5000])
def test_a_malformed_or_unknown_token_is_refused(api: Api, bad: str) -> None:
    with api.client(bad) as client:
        response = client.get("/api/v1/devices")
    _assert_unauthorized(response)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_a_wrong_secret_for_a_real_token_id_is_refused(api: Api) -> None:
    token_id = api.admin_token.split("_")[1]
    with api.client(f"cw_{token_id}_{'A' * 43}") as client:
        _assert_unauthorized(client.get("/api/v1/devices"))


def test_a_revoked_token_is_refused(api: Api) -> None:
    secret = api.token(CITY, "viewer")
    with api.client(secret) as client:
        assert client.get("/api/v1/zones").status_code == 200
        token_id = secret.split("_")[1]
        tokens.revoke_token(api.platform.uow, api.city, token_id)
        _assert_unauthorized(client.get("/api/v1/zones"))


def test_an_expired_token_is_refused_saying_so(api: Api) -> None:
    issued = tokens.create_token(api.platform.uow, api.city, CITY, "short", "viewer",
                                 timedelta(days=1))
    lapsed = datetime.now(UTC) - timedelta(seconds=1)
    with api.client(issued.secret) as client:
        assert client.get("/api/v1/zones").status_code == 200
        with api.platform.uow(write=True) as uow:
            uow.session.get_one(TokenRow, issued.view.id).expires_at = lapsed
            uow.commit()
        refused = client.get("/api/v1/zones")
        _assert_unauthorized(refused)
        body = refused.json()
        assert body["detail"] == f"token expired on {lapsed:%Y-%m-%d %H:%M} UTC"
        assert body["title"] == "Token expired" and "tokens create" in body["hint"]
        listed = next(t for t in tokens.list_tokens(api.platform.uow, api.city) if t.id == issued.view.id)
        assert listed.expired
