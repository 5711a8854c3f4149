"""The API keeps its own OpenAPI contract, on both backends.

Schemathesis (`st run`, every check on: status codes, response schemas, content types, headers,
negative and positive data, auth, methods and Allow, use after free, resource availability) is run
over a real socket against a seeded city, as the city's admin, for a bounded number of examples per
operation, fuzzing then the stateful phase (sequences through the links it infers). It must find
nothing. bench/api_contract.py runs the same campaign larger, with the coverage phase.

The rules it enforced when added (issue 15): timestamps carry their time zone (SQLite hands them
back naive), every status an operation answers is in the document, a 405 names every method of
the resource; the smaller tests below pin those, so a failure says which rule broke.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from typing import Any

import httpx
from api_support import Api, assert_problem
from tests.contract_city import campaign, seed

# Examples per operation: enough to reach every operation with good and bad data (about 300
# requests), few enough for CI (a few seconds per backend on 2 cores). The bench runs hundreds.
MAX_EXAMPLES = 4
SEED = int(os.environ.get("CITYWARD_CONTRACT_SEED", "15"))


def test_schemathesis_finds_nothing(api: Api) -> None:
    seeded = seed(api.url, api.platform, api.city)
    run = campaign(api.url, seeded, max_examples=MAX_EXAMPLES, seed=SEED,
                   phases=("examples", "fuzzing", "stateful"))
    summary = run.output[-20_000:]
    assert run.exit_code == 0 and not run.failures and not run.errors, summary
    assert run.report["operations"]["tested"] == run.report["operations"]["total"] >= 50, summary
    assert run.phase("fuzzing") == "success" and run.phase("stateful") == "success", summary
    assert run.test_cases >= 200, summary


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def _timestamps(value: Any, key: str = "") -> list[tuple[str, str]]:
    """Every (key, value) of a JSON document whose key names a time."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _timestamps(v, k)]
    if isinstance(value, list):
        return [t for v in value for t in _timestamps(v, key)]
    if isinstance(value, str) and (key.endswith("_at") or key in ("at", "first_seen", "last_seen")):
        return [(key, value)]
    return []


def test_every_timestamp_carries_its_time_zone(api: Api, admin: httpx.Client) -> None:
    seed(api.url, api.platform, api.city)
    run = admin.post("/api/v1/audits").json()
    bodies = [admin.get(f"/api/v1/{path}").json() for path in (
        "orgs", "tokens", "auditlog", "audits", "waivers", "rollouts", "discovered", "advisories")]
    bodies += [run, admin.get(f"/api/v1/audits/{run['id']}").json()]
    found = _timestamps(bodies)
    keys = {k for k, _ in found}
    assert {"created_at", "expires_at", "revoked_at", "at", "first_seen", "updated_at"} <= keys, keys
    naive = [(k, v) for k, v in found if not _RFC3339.fullmatch(v)]
    assert not naive, naive
    assert all(datetime.fromisoformat(v).utcoffset() is not None for _, v in found)


def test_a_date_time_without_a_time_zone_is_refused(admin: httpx.Client) -> None:
    for value in ("0.5", "1700000000", "2026-01-01", "2026-01-01T00:00:00", "0001-01-01T00:00:00+14:00"):
        problem = assert_problem(admin.get("/api/v1/devices", params={"seen_after": value}), 422)
        assert [e["field"] for e in problem["errors"]] == ["seen_after"], value
        assert "RFC 3339" in problem["errors"][0]["message"] or "out of range" in problem["errors"][0]["message"]
    assert admin.get("/api/v1/devices", params={"seen_after": "2026-01-01T00:00:00+01:00"}).status_code == 200


def test_every_problem_status_is_documented(api: Api) -> None:
    with api.client() as anonymous:
        spec = anonymous.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if path == "/healthz":
                continue
            documented = set(operation["responses"])
            assert {"401", "403", "404", "409", "422", "503"} <= documented, (method, path, documented)
            if "requestBody" in operation:
                assert {"400", "413"} <= documented, (method, path, documented)
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(response["content"]) == ["application/problem+json"], (method, path, status)


def test_an_unreadable_body_is_a_documented_400(admin: httpx.Client) -> None:
    response = admin.post("/api/v1/orgs", content=b"\xff\xfe{", headers={"Content-Type": "application/json"})
    assert assert_problem(response, 400)["title"] == "Bad request"


_ALLOWED = [
    ("OPTIONS", "/api/v1/orgs", "GET, HEAD, POST"),
    ("DELETE", "/api/v1/orgs", "GET, HEAD, POST"),
    ("OPTIONS", "/api/v1/advisories/match", "POST"),
    ("OPTIONS", "/api/v1/devices/summary", "GET, HEAD"),
    ("OPTIONS", "/api/v1/devices/CAM-1", "DELETE, GET, HEAD, PUT"),
    ("GET", "/api/v1/rollouts/plan", "POST"),  # was a 422: "plan" is not a rollout id
    ("POST", "/api/v1/rollouts/1/devices", "GET, HEAD"),  # was a 422: "devices" is not a command
]


def test_a_405_names_every_method_of_the_resource(admin: httpx.Client) -> None:
    for method, path, allowed in _ALLOWED:
        response = admin.request(method, path)
        assert response.status_code == 405, (method, path, response.text)
        assert_problem(response, 405)
        assert response.headers["allow"] == allowed, (method, path)
