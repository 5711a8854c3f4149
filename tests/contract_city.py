"""The OpenAPI contract campaign: a seeded city behind the API, and schemathesis run against it.

A small city with something behind every API operation, for contract testing (schemathesis).

An empty database would let most generated requests end at a 404 or an empty list, and the
response schemas of the items would never be exercised. This seeds, over the API itself as an
operator would, one of each thing the API serves: organizations, zones with duties, products,
devices, a published policy, an audit with findings, a waiver, a discovered device, a rollout,
advisories with KEV, and tokens; then it returns a city admin token for the campaign.

`campaign` runs schemathesis's own command line (`st run`) against the server with every check
on and the settings in tests/api/schemathesis.toml, in a process of its own (so it does not share
the server's interpreter), and reads its JSON report. Shared by tests/api/test_contract.py (a
bounded run in CI) and bench/api_contract.py (a larger campaign).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.services import tokens
from tests.helpers import announce

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "advisories"
BASELINE = ROOT / "policies" / "baseline.yaml"
CONFIG = ROOT / "tests" / "api" / "schemathesis.toml"
PHASES = ("examples", "coverage", "fuzzing", "stateful")
CITY = "Springfield"

_DEVICES = """id,kind,brand,model,firmware_version,zone,serial,mac,tags,installed_at,protocol
CAM-1,camera,Hikvision,DS-2CD2026G2-IU/SL,V5.5.113 build 210317,Harbor,H1,02:00:00:00:00:01,north;fixed,2024-03-01,mqtt
CAM-2,camera,Hikvision,DS-2CD2026G2-IU/SL,V5.5.113 build 210317,Airport,H2,02:00:00:00:00:02,,,mqtt
CAM-3,camera,Hikvision,DS-2CD2026G2-IU/SL,V5.7.1 build 211009,Harbor,H3,02:00:00:00:00:03,,,mqtt
SL-1,streetlight,Lumo,L100,1.2.3,Harbor,S1,02:00:00:00:01:01,,,mqtt
SL-2,streetlight,Lumo,L100,1.2.3,Airport,S2,02:00:00:00:01:02,,,mqtt
"""



def _ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code < 300, f"{response.request.method} {response.request.url}: {response.text}"
    return response


@dataclass(frozen=True)
class Seeded:
    token: str  # a city admin token's secret, for every request of the campaign
    token_id: str  # its id, which the campaign must not revoke (tests/contract_hooks.py)


def seed(url: str, platform: Platform, city: Caller) -> Seeded:
    """Seed the city behind the server at `url`, through its API."""
    issued = tokens.create_token(platform.uow, city, CITY, "contract admin", "admin")
    admin = issued.secret
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as http:
        for zone in ("Harbor", "Airport"):
            _ok(http.post("/api/v1/zones", json={"name": zone, "criticality": "high"}))
        _ok(http.post("/api/v1/zones", json={"name": "Pier 9", "parent": "Harbor", "maintenance_window": {
            "cron": "0 2 * * *", "duration_minutes": 120, "timezone": "Europe/Paris"}}))
        _ok(http.post("/api/v1/orgs", json={"name": "Alpha Integration", "kind": "integrator",
                                             "contact_email": "ops@alpha.example"}))
        _ok(http.post("/api/v1/orgs", json={"name": "Hikvision", "kind": "manufacturer", "brand": "Hikvision"}))
        _ok(http.put("/api/v1/zones/Harbor/duties/maintain", json={"org": "Alpha Integration"}))
        _ok(http.post("/api/v1/products", json={"brand": "Lumo", "model": "L100", "kind": "streetlight",
                                                 "end_of_support": "2030-01-01", "min_firmware": "1.0.0"}))
        _ok(http.post("/api/v1/devices/import", params={"format": "csv", "create_missing": "true"},
                      content=_DEVICES.encode(), headers={"content-type": "text/csv"}))
        _ok(http.post("/api/v1/tokens", json={"org": "Alpha Integration", "name": "alpha viewer",
                                               "role": "viewer", "expires_in": "30d"}))
        revoked = _ok(http.post("/api/v1/tokens", json={"name": "short lived", "role": "operator"})).json()
        _ok(http.delete(f"/api/v1/tokens/{revoked['id']}"))
        _ok(http.post("/api/v1/policies", json={"yaml": BASELINE.read_text()}))
        _ok(http.post("/api/v1/audits"))
        expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
        _ok(http.post("/api/v1/waivers", json={"rule_id": "CRED-001", "selector": {"device": "CAM-2"},
                                                "reason": "replaced next month", "expires_at": expires}))
        _ok(http.post("/api/v1/rollouts", json={"name": "reboot the lights", "operation": "reboot",
                                                 "selector": {"kind": "streetlight"}}))
        for path in (FIXTURES / "csaf" / "hikvision-cve-2021-36260.json",
                     FIXTURES / "kev" / "known_exploited_vulnerabilities.csv"):
            _ok(http.post("/api/v1/advisories/import", params={"name": path.name}, content=path.read_bytes(),
                          headers={"content-type": "application/octet-stream"}))
    announce(platform, {"v": 1, "device_id": "CAM-9", "kind": "camera", "brand": "Hikvision",
                        "model": "DS-2CD2026G2-IU/SL", "firmware_version": "V5.7.1 build 211009",
                        "serial": "H9", "at": "2026-11-25T12:00:00Z"})
    return Seeded(admin, issued.view.id)


@dataclass
class Campaign:
    """What one schemathesis run did and found."""

    exit_code: int
    output: str  # st's own report, failures with their curl reproductions
    seconds: float
    requests: int | None  # HTTP requests the app received, when counted (RequestCounter)
    report: dict[str, Any] = field(default_factory=dict)  # st's JSON report

    @property
    def test_cases(self) -> int:
        return int(self.report.get("test_cases", {}).get("generated", 0))

    @property
    def failures(self) -> list[Any]:
        return list(self.report.get("failures", []))

    @property
    def errors(self) -> list[Any]:
        return list(self.report.get("errors", []))

    def phase(self, name: str) -> str:
        return str(self.report.get("phases", {}).get(name, {}).get("status"))


class RequestCounter:
    """An ASGI wrapper counting the HTTP requests its app receives: the campaign's size as the
    server saw it (schemathesis's "test cases" also count cases it never sent)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app, self.count = app, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.count += 1
        await self.app(scope, receive, send)


def campaign(url: str, seeded: Seeded, *, max_examples: int, seed: int, phases: Sequence[str] = PHASES,
             workers: int = 2, counter: RequestCounter | None = None, timeout: float = 3600) -> Campaign:
    """Run `st run` with every check against the API at `url`, as the seeded city admin."""
    with tempfile.TemporaryDirectory(prefix="cityward-contract-") as tmp:
        # Hypothesis keeps no state in the repository (tests/api/schemathesis.toml: no database).
        env = {**os.environ, "CITYWARD_CONTRACT_TOKEN_ID": seeded.token_id,
               "HYPOTHESIS_STORAGE_DIRECTORY": str(Path(tmp) / "hypothesis")}
        command = [
            str(Path(sys.executable).with_name("st")), "--config-file", str(CONFIG), "--no-color",
            "run", f"{url}/openapi.json", "--header", f"Authorization: Bearer {seeded.token}",
            "--checks", "all", "--max-examples", str(max_examples), "--seed", str(seed),
            "--workers", str(workers), "--phases", ",".join(phases), "--request-timeout", "60",
            "--report", "json", "--report-dir", tmp,
        ]
        start, before = time.perf_counter(), counter.count if counter else 0
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
        seconds = time.perf_counter() - start
        reports = sorted(Path(tmp).glob("json-*.json"))
        return Campaign(
            exit_code=done.returncode, output=done.stdout + done.stderr, seconds=seconds,
            requests=counter.count - before if counter else None,
            report=json.loads(reports[-1].read_text()) if reports else {},
        )
