"""Hostile bodies over HTTP: nested JSON and YAML, a huge CSV field, a huge CVE description. Each is a
4xx problem naming the limit (domain/limits.py), never a 500, and nothing is stored."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import httpx
from api_support import CITY, Api, assert_problem

from cityward.domain import limits

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "advisories"


def upload(client: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return client.post("/api/v1/advisories/import", params={"name": name}, content=data,
                       headers={"Content-Type": "application/octet-stream"})


def test_nested_json_inventory_upload_is_a_422_naming_the_depth(admin: httpx.Client) -> None:
    response = admin.post("/api/v1/devices/import", content=b"[" * 50_000 + b"]" * 50_000,
                          headers={"Content-Type": "application/json"})  # took the server to 3 GB
    problem = assert_problem(response, 422)
    assert f"over the limit of nesting depth {limits.INVENTORY_JSON_DEPTH}" in problem["detail"]
    assert admin.get("/api/v1/devices").json()["items"] == []


def test_nested_json_body_of_any_endpoint_is_a_422_before_it_is_parsed(admin: httpx.Client) -> None:
    for path in ("/api/v1/zones", "/api/v1/policies/validate", "/api/v1/waivers"):
        nested = b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        problem = assert_problem(admin.post(path, content=nested, headers={"Content-Type": "application/json"}), 422)
        assert f"the request body: over the limit of nesting depth {limits.API_JSON_DEPTH}" in problem["detail"]
    bare = admin.build_request("POST", "/api/v1/zones", content=b"[" * 100_000)
    assert "content-type" not in bare.headers  # no media type: FastAPI parses it as JSON all the same
    assert "nesting depth 32" in assert_problem(admin.send(bare), 422)["detail"]
    cursor = base64.urlsafe_b64encode(b"[" * 40 + b"]" * 40).decode()
    assert "nesting depth 32" in assert_problem(admin.get("/api/v1/orgs", params={"after": cursor}), 422)["detail"]
    shallow = {"name": "Harbor", "x": [[[1]]]}  # within the limit: FastAPI's own validation answers
    assert_problem(admin.post("/api/v1/zones", json=shallow), 422)
    assert [z["name"] for z in admin.get("/api/v1/zones").json()["items"]] == []


def test_nested_yaml_to_validate_is_a_422_for_a_viewer_too(api: Api) -> None:
    with api.client(api.token(CITY, "viewer")) as viewer:
        for text in ("rules: " + "[" * 100_000, "- " * 5000 + "x"):  # was a 500 (RecursionError)
            problem = assert_problem(viewer.post("/api/v1/policies/validate", json={"yaml": text}), 422)
            assert f"policy: over the limit of nesting depth {limits.POLICY_YAML_DEPTH}" in problem["detail"]


def test_feed_with_a_huge_csv_field_is_a_422_naming_row_and_limit(admin: httpx.Client) -> None:
    epss = gzip.compress(b"cve,epss,percentile\nCVE-2024-0001,0.1,0.2\nCVE-2024-0002,\"" + b"9" * 200_000
                         + b'",0.5\n')
    problem = assert_problem(upload(admin, "epss.csv.gz", epss), 422)
    assert "epss.csv.gz: over the limit of 131,072 characters in one field (row 3)" in json.dumps(problem)
    assert admin.get("/api/v1/vulnerabilities").json() == []


def test_cve_record_with_a_huge_description_is_refused_and_not_stored(admin: httpx.Client) -> None:
    record = json.loads((FIXTURES / "cve5" / "CVE-2024-3400.json").read_text())
    record["containers"]["cna"]["descriptions"] = [{"lang": "en", "value": "A" * (2 * limits.ADVISORY_FIELD_BYTES)}]
    problem = assert_problem(upload(admin, "CVE-2024-3400.json", json.dumps(record).encode()), 422)
    assert "CVE-2024-3400.json: over the limit of 1,048,576 bytes in one string" in json.dumps(problem)
    assert admin.get("/api/v1/advisories").json() == []
