"""/api/v1/tokens: a secret is shown once, never listed, and revoking it locks it out."""

from __future__ import annotations

import httpx
from api_support import CITY, Api, assert_problem, make_org


def test_create_list_revoke(api: Api, admin: httpx.Client) -> None:
    make_org(admin, "Alpha Integration", "integrator")
    created = admin.post("/api/v1/tokens", json={"org": "Alpha Integration", "name": "laptop",
                                                 "role": "operator", "expires_in_days": 30})
    assert created.status_code == 201, created.text
    issued = created.json()
    secret = issued["secret"]
    assert secret.startswith("cw_") and issued["org"] == "Alpha Integration"
    assert issued["expires_at"] is not None and issued["revoked_at"] is None

    listing = admin.get("/api/v1/tokens")
    assert listing.status_code == 200
    assert secret not in listing.text and secret.split("_", 2)[2] not in listing.text
    items = listing.json()["items"]
    assert all("secret" not in t for t in items)
    assert {t["name"] for t in items} == {"first admin", "test admin", "laptop"}

    with api.client(secret) as alpha:
        assert alpha.get("/api/v1/devices").status_code == 200
        revoked = admin.delete(f"/api/v1/tokens/{issued['id']}")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        assert_problem(alpha.get("/api/v1/devices"), 401)
    assert admin.delete(f"/api/v1/tokens/{issued['id']}").status_code == 200  # idempotent
    assert_problem(admin.delete("/api/v1/tokens/nosuchtoken"), 404)


def test_a_partner_admin_manages_only_its_own_tokens(api: Api, admin: httpx.Client) -> None:
    make_org(admin, "Alpha Integration", "integrator")
    make_org(admin, "Beta Systems", "integrator")
    beta_token = admin.post("/api/v1/tokens", json={"org": "Beta Systems", "name": "b"}).json()
    with api.client(api.token("Alpha Integration", "admin", "alpha admin")) as alpha:
        own = alpha.post("/api/v1/tokens", json={"name": "ci"})  # defaults to its own org
        assert own.status_code == 201 and own.json()["org"] == "Alpha Integration"
        assert {t["org"] for t in alpha.get("/api/v1/tokens").json()["items"]} == {
            "Alpha Integration"}
        assert_problem(alpha.post("/api/v1/tokens", json={"org": "Beta Systems", "name": "x"}),
                       403)
        assert_problem(alpha.delete(f"/api/v1/tokens/{beta_token['id']}"), 404)
    with api.client(api.token("Alpha Integration", "operator")) as operator:
        assert_problem(operator.post("/api/v1/tokens", json={"name": "more"}), 403)


def test_bad_token_requests(admin: httpx.Client) -> None:
    assert_problem(admin.post("/api/v1/tokens", json={"name": "x", "role": "god"}), 422)
    assert_problem(admin.post("/api/v1/tokens", json={"name": "x", "expires_in_days": 0}), 422)
    assert_problem(admin.post("/api/v1/tokens", json={"org": "Nobody", "name": "x"}), 404)
    assert_problem(admin.post("/api/v1/tokens", json={"org": CITY}), 422)


def test_tokens_expire_by_default_and_never_only_for_the_city_admin(api: Api, admin: httpx.Client) -> None:
    from datetime import UTC, datetime, timedelta

    make_org(admin, "Alpha Integration", "integrator")
    plain = admin.post("/api/v1/tokens", json={"name": "plain"}).json()
    expires = datetime.fromisoformat(plain["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=1)
    assert plain["expired"] is False
    short = admin.post("/api/v1/tokens", json={"name": "ci", "expires_in": "12h"}).json()
    assert abs(datetime.fromisoformat(short["expires_at"]) - (datetime.now(UTC) + timedelta(hours=12))) < timedelta(
        minutes=1)
    forever = admin.post("/api/v1/tokens", json={"org": "Alpha Integration", "name": "forever", "no_expiry": True})
    assert forever.status_code == 201 and forever.json()["expires_at"] is None
    with api.client(api.token("Alpha Integration", "admin", "alpha admin")) as alpha:
        assert "never expires" in assert_problem(
            alpha.post("/api/v1/tokens", json={"name": "forever", "no_expiry": True}), 403)["detail"]
        assert "at most 365 days" in assert_problem(
            alpha.post("/api/v1/tokens", json={"name": "long", "expires_in_days": 400}), 422)["detail"]
    assert_problem(admin.post("/api/v1/tokens", json={"name": "x", "expires_in": "soon"}), 422)
    assert_problem(admin.post("/api/v1/tokens", json={"name": "x", "expires_in": "1d", "expires_in_days": 1}), 422)
    assert_problem(admin.post("/api/v1/tokens", json={"name": "x", "expires_in": "1d", "no_expiry": True}), 422)
