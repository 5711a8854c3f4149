"""Every error is an RFC 9457 problem: bad JSON, wrong types, huge or hostile values, and bugs."""

from __future__ import annotations

import httpx
import pytest
from api_support import Api, assert_problem, serve

from cityward.entrypoints.api.app import create_app


def test_malformed_json_is_422_naming_the_body(admin: httpx.Client) -> None:
    response = admin.post("/api/v1/orgs", content=b'{"name": "X", "kind": ',
                          headers={"Content-Type": "application/json"})
    problem = assert_problem(response, 422)
    assert [e["field"] for e in problem["errors"]] == ["body"]
    assert "JSON" in problem["errors"][0]["message"]


@pytest.mark.parametrize("body", [[], "org", 7, None, {"name": ["X"], "kind": "integrator"},
                                  {"name": "X", "kind": 5}])
def test_wrong_types_are_422(admin: httpx.Client, body: object) -> None:
    assert_problem(admin.post("/api/v1/orgs", json=body), 422)
    assert [o["name"] for o in admin.get("/api/v1/orgs").json()["items"]] == ["Springfield"]


@pytest.mark.parametrize("params", [
    {"limit": 0}, {"limit": 1001}, {"limit": 10**30}, {"limit": "many"},
    {"kind": "x" * 5000}, {"after": "d" * 5000}, {"zone": "Harbor\x00"}, {"tag": "a\nb"},
    {"never_seen": "perhaps"}, {"seen_before": "9" * 50},
    {"seen_after": "0001-01-01T00:00:00+14:00"}, {"seen_before": "9999-12-31T23:00:00-14:00"},
])
def test_bad_query_values_are_422(admin: httpx.Client, params: dict[str, object]) -> None:
    problem = assert_problem(admin.get("/api/v1/devices", params=params), 422)
    assert [e["field"] for e in problem["errors"]] == list(params)
    assert "9" * 50 not in str(problem)  # the bad input is not echoed back


def test_hostile_path_values_are_4xx(admin: httpx.Client) -> None:
    assert_problem(admin.get("/api/v1/devices/a%00b"), 422)
    assert_problem(admin.get("/api/v1/devices/" + "a" * 5000), 422)
    assert_problem(admin.delete("/api/v1/tokens/x%00"), 422)
    assert_problem(admin.put("/api/v1/zones/Harb%00or/duties/maintain", json={"org": None}), 422)


def test_a_json_body_over_its_cap_is_413(admin: httpx.Client) -> None:
    huge = {"name": "X", "kind": "integrator", "brand": "b" * (2 << 20)}
    assert_problem(admin.post("/api/v1/orgs", json=huge), 413)


def test_unknown_routes_and_methods_are_problems(admin: httpx.Client) -> None:
    assert_problem(admin.get("/api/v1/nothing-here"), 404)
    response = admin.delete("/api/v1/orgs")
    assert_problem(response, 405)
    assert "GET" in response.headers["allow"]


def test_an_unexpected_error_is_a_500_problem_without_internals(api: Api) -> None:
    app = create_app(api.platform)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("password=hunter2 at /srv/secret.py")

    with serve(app) as url, httpx.Client(base_url=url) as client:
        response = client.get("/boom")
    problem = assert_problem(response, 500)
    assert "hunter2" not in response.text and "secret.py" not in response.text
    assert problem["title"] == "Internal error"
