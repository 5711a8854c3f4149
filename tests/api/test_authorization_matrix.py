"""Every operation of the API, and every dashboard route, for every role of every organization kind.

The expected answer comes from README's "Who sees what" table: a role the table does not allow gets
403 and changes nothing (the audit log does not move); an allowed one is never refused for its role
(its answer may still be 404 outside its scope, 409 or 422 for the state the world is in). The
operations are read from the app itself, so a new endpoint without a row here fails the test.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from authz_support import (
    DEVICE_HEADER,
    DEVICE_ROW,
    POLICY,
    Member,
    World,
    allowed,
    audit_events,
    build_world,
    readme_rules,
)
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from cityward.bootstrap import Platform
from cityward.domain.access import RULES, Action
from cityward.domain.organizations import Caller, OrgKind
from cityward.entrypoints.api.app import create_app
from cityward.services import users

Request = tuple[str, str, dict[str, Any]]  # method, URL, httpx keyword arguments
Build = Callable[[World, Member], Request]


@dataclass(frozen=True)
class Op:
    action: Action  # its README row
    build: Build


def _future() -> str:
    return (datetime.now(UTC) + timedelta(days=5)).isoformat()


def _fixed(method: str, url: str, **kw: Any) -> Build:
    return lambda _w, _m: (method, url, kw)


_ROLLOUT = {"name": "matrix reboot", "operation": "reboot", "devices": ["d1"], "options": {"canary": 0, "waves": [100]}}
_DEVICE = dict(zip(DEVICE_HEADER.split(","), DEVICE_ROW.split(","), strict=True))

READ_DEVICES = Action.SEE_DEVICES
READ_COUNTS = Action.SEE_COUNTS
READ_SHARED = Action.SEE_SHARED
READ_OWN = Action.SEE_OWN
READ_WORK = Action.SEE_WORK
READ_VULNS = Action.SEE_VULNS
IMPORT = Action.IMPORT_DEVICES
DELETE = Action.DELETE_DEVICE
DUTIES = Action.DUTIES
CATALOG = Action.CATALOG
TOKENS = Action.TOKENS
DISCOVERY = Action.DISCOVERY
PUBLISH = Action.PUBLISH
ACK = Action.ACKNOWLEDGE
AUDIT = Action.AUDIT
WAIVER = Action.WAIVER
DECIDE_WAIVER = Action.DECIDE_WAIVER
ROLLOUT = Action.ROLLOUT
CONTROL = Action.CONTROL
APPROVE_ROLLOUT = Action.APPROVE_ROLLOUT
INTEL = Action.INTEL

API: dict[tuple[str, str], Op] = {
    ("GET", "/api/v1/devices"): Op(READ_DEVICES, _fixed("GET", "/api/v1/devices")),
    ("GET", "/api/v1/devices/summary"): Op(READ_COUNTS, _fixed("GET", "/api/v1/devices/summary")),
    ("GET", "/api/v1/devices/export"): Op(READ_DEVICES, _fixed("GET", "/api/v1/devices/export")),
    ("POST", "/api/v1/devices/import"): Op(IMPORT, _fixed(
        "POST", "/api/v1/devices/import?format=csv", content=f"{DEVICE_HEADER}\n{DEVICE_ROW}\n".encode())),
    ("GET", "/api/v1/devices/{device_id}"): Op(READ_DEVICES, _fixed("GET", "/api/v1/devices/d1")),
    ("PUT", "/api/v1/devices/{device_id}"): Op(IMPORT, _fixed("PUT", "/api/v1/devices/d1", json={
        k: v for k, v in _DEVICE.items() if k != "id"})),
    ("DELETE", "/api/v1/devices/{device_id}"): Op(DELETE, lambda _w, m: (
        "DELETE", f"/api/v1/devices/{m.spare_device}", {})),
    ("PUT", "/api/v1/devices/{device_id}/duties/{duty}"): Op(DUTIES, _fixed(
        "PUT", "/api/v1/devices/d1/duties/maintain", json={"org": "Alpha"})),
    ("GET", "/api/v1/products"): Op(READ_SHARED, _fixed("GET", "/api/v1/products")),
    ("POST", "/api/v1/products"): Op(CATALOG, _fixed("POST", "/api/v1/products", json={
        "brand": "Acme", "model": "AL-100", "kind": "streetlight"})),
    ("GET", "/api/v1/products/{product_id}"): Op(READ_SHARED, _fixed("GET", "/api/v1/products/1")),
    ("GET", "/api/v1/zones"): Op(READ_SHARED, _fixed("GET", "/api/v1/zones")),
    ("POST", "/api/v1/zones"): Op(DUTIES, lambda _w, m: ("POST", "/api/v1/zones", {"json": {"name": f"z-{m.slug}"}})),
    ("PUT", "/api/v1/zones/{name}/duties/{duty}"): Op(DUTIES, _fixed(
        "PUT", "/api/v1/zones/Downtown/duties/maintain", json={"org": None})),
    ("GET", "/api/v1/orgs"): Op(READ_SHARED, _fixed("GET", "/api/v1/orgs")),
    ("POST", "/api/v1/orgs"): Op(DUTIES, lambda _w, m: ("POST", "/api/v1/orgs", {
        "json": {"name": f"O-{m.slug}", "kind": "integrator"}})),
    ("GET", "/api/v1/tokens"): Op(READ_OWN, _fixed("GET", "/api/v1/tokens")),
    ("POST", "/api/v1/tokens"): Op(TOKENS, _fixed("POST", "/api/v1/tokens", json={"name": "more", "role": "viewer"})),
    ("DELETE", "/api/v1/tokens/{token_id}"): Op(TOKENS, lambda _w, m: (
        "DELETE", f"/api/v1/tokens/{m.spare_token}", {})),
    ("GET", "/api/v1/auditlog"): Op(READ_OWN, _fixed("GET", "/api/v1/auditlog")),
    ("GET", "/api/v1/auditlog/verify"): Op(Action.VERIFY_LOG, _fixed("GET", "/api/v1/auditlog/verify")),
    ("GET", "/api/v1/discovered"): Op(Action.SEE_DISCOVERED, _fixed("GET", "/api/v1/discovered")),
    ("POST", "/api/v1/discovered/{device_id}/approve"): Op(DISCOVERY, _fixed(
        "POST", "/api/v1/discovered/new-1/approve", json={"zone": "Downtown"})),
    ("POST", "/api/v1/discovered/{device_id}/reject"): Op(DISCOVERY, _fixed(
        "POST", "/api/v1/discovered/new-1/reject", json={"reason": "not ours"})),
    ("POST", "/api/v1/policies/validate"): Op(READ_SHARED, _fixed("POST", "/api/v1/policies/validate",
                                                                   json={"yaml": POLICY})),
    ("POST", "/api/v1/policies"): Op(PUBLISH, lambda _w, m: ("POST", "/api/v1/policies", {
        "json": {"yaml": f"{POLICY}# {m.slug}\n"}})),
    ("GET", "/api/v1/policies/in-force"): Op(READ_SHARED, _fixed("GET", "/api/v1/policies/in-force")),
    ("POST", "/api/v1/policies/{version}/ack"): Op(ACK, _fixed("POST", "/api/v1/policies/1/ack")),
    ("POST", "/api/v1/audits"): Op(AUDIT, _fixed("POST", "/api/v1/audits")),
    ("GET", "/api/v1/audits"): Op(READ_WORK, _fixed("GET", "/api/v1/audits")),
    ("GET", "/api/v1/audits/{run_id}"): Op(READ_WORK, lambda w, _m: ("GET", f"/api/v1/audits/{w.audit_run_id}", {})),
    ("GET", "/api/v1/audits/{run_id}/findings"): Op(READ_WORK, lambda w, _m: (
        "GET", f"/api/v1/audits/{w.audit_run_id}/findings", {})),
    ("GET", "/api/v1/waivers"): Op(READ_OWN, _fixed("GET", "/api/v1/waivers")),
    ("POST", "/api/v1/waivers"): Op(WAIVER, lambda _w, _m: ("POST", "/api/v1/waivers", {"json": {
        "rule_id": "SEEN-002", "selector": {"device": "d1"}, "reason": "replaced soon", "expires_at": _future()}})),
    ("POST", "/api/v1/waivers/{waiver_id}/approve"): Op(DECIDE_WAIVER, lambda w, _m: (
        "POST", f"/api/v1/waivers/{w.waiver_id}/approve", {})),
    ("POST", "/api/v1/waivers/{waiver_id}/reject"): Op(DECIDE_WAIVER, lambda w, _m: (
        "POST", f"/api/v1/waivers/{w.waiver_id}/reject", {})),
    ("GET", "/api/v1/firmware"): Op(READ_SHARED, _fixed("GET", "/api/v1/firmware")),
    ("POST", "/api/v1/rollouts/plan"): Op(ROLLOUT, _fixed("POST", "/api/v1/rollouts/plan", json=_ROLLOUT)),
    ("POST", "/api/v1/rollouts"): Op(ROLLOUT, _fixed("POST", "/api/v1/rollouts", json=_ROLLOUT)),
    ("GET", "/api/v1/rollouts"): Op(READ_WORK, _fixed("GET", "/api/v1/rollouts")),
    ("GET", "/api/v1/rollouts/{rollout_id}"): Op(READ_WORK, lambda w, _m: (
        "GET", f"/api/v1/rollouts/{w.rollout_id}", {})),
    ("GET", "/api/v1/rollouts/{rollout_id}/devices"): Op(READ_WORK, lambda w, _m: (
        "GET", f"/api/v1/rollouts/{w.rollout_id}/devices", {})),
    ("GET", "/api/v1/advisories"): Op(READ_VULNS, _fixed("GET", "/api/v1/advisories")),
    ("GET", "/api/v1/advisories/{advisory_id}"): Op(READ_VULNS, _fixed("GET", "/api/v1/advisories/1")),
    ("POST", "/api/v1/advisories/import"): Op(INTEL, _fixed(
        "POST", "/api/v1/advisories/import?name=epss.csv",
        content=b"cve,epss,percentile\nCVE-2026-0001,0.5,0.9\n")),
    ("POST", "/api/v1/advisories/match"): Op(INTEL, _fixed("POST", "/api/v1/advisories/match")),
    ("GET", "/api/v1/advisories/unmatched"): Op(INTEL, _fixed("GET", "/api/v1/advisories/unmatched")),
    ("POST", "/api/v1/vendors/aliases"): Op(INTEL, _fixed("POST", "/api/v1/vendors/aliases", json={
        "alias": "Axis Communications AB", "vendor": "Axis"})),
    ("DELETE", "/api/v1/vendors/aliases/{alias}"): Op(INTEL, _fixed("DELETE", "/api/v1/vendors/aliases/Nobody")),
    ("GET", "/api/v1/vulnerabilities"): Op(READ_VULNS, _fixed("GET", "/api/v1/vulnerabilities")),
}
# Five operations of the spec (one per command), each its own rule.
VERBS = {"approve": APPROVE_ROLLOUT, "start": CONTROL, "pause": CONTROL, "resume": CONTROL, "abort": CONTROL}
PUBLIC = {("GET", "/healthz")}


def spec_operations(app: FastAPI) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item}


def _requests(world: World) -> Iterator[tuple[Action, Member, Request]]:
    """(action, member, request) for every operation and every member; the verbs expanded."""
    for member in world.members:
        for (method, path), op in API.items():
            yield op.action, member, op.build(world, member)
        for verb, action in VERBS.items():
            target = world.city_rollout_id if verb == "approve" else world.rollout_id
            yield action, member, ("POST", f"/api/v1/rollouts/{target}/{verb}", {"json": {}})


def _verdict(status: int, allowed_here: bool) -> str | None:
    """Why this answer breaks the table (None: it keeps it)."""
    if status == 401 or status >= 500:
        return f"answered {status}"
    if allowed_here and status == 403:
        return "refused (403) although the table allows it"
    if not allowed_here and status != 403:
        return f"answered {status} although the table refuses it"
    return None


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_every_api_operation_keeps_the_readme_table(platform: Platform, city: Caller) -> None:
    rules = readme_rules()
    app = create_app(platform)
    listed = {*API, *PUBLIC, *(("POST", f"/api/v1/rollouts/{{rollout_id}}/{verb}") for verb in VERBS)}
    assert spec_operations(app) == listed, "every operation of the OpenAPI spec needs a rule here"
    assert {op.action.value for op in API.values()} | {a.value for a in VERBS.values()} <= set(rules)
    world = build_world(platform, city, sign_ins=False)
    broken: list[str] = []
    pairs = 0
    tally: Counter[str] = Counter()
    started = time.perf_counter()
    with TestClient(app, raise_server_exceptions=False) as http:
        for action, member, (method, url, kw) in _requests(world):
            ok = allowed(rules, action.value, member.kind, member.role)
            before = audit_events(platform) if not ok else 0
            response = http.request(method, url, headers={"Authorization": f"Bearer {member.token}"}, **kw)
            pairs += 1
            tally[("refused" if not ok else "done" if response.status_code < 300 else "allowed, not done")] += 1
            why = _verdict(response.status_code, ok)
            if why is None and not ok and audit_events(platform) != before:
                why = "refused, but the audit log moved"
            if why:
                broken.append(f"{member.slug:24} {method} {url}: {why} [{action}] {response.text[:160]}")
    elapsed = time.perf_counter() - started
    print(f"\n{pairs} role x operation requests over the API in {elapsed:.1f} s: {dict(tally)}")
    assert not broken, f"{len(broken)} of {pairs} answers break README's table:\n" + "\n".join(broken)
    assert pairs == len(world.members) * (len(API) + len(VERBS))


def test_the_readme_table_is_the_rules_the_services_enforce() -> None:
    """README's "Who sees what" and domain/access.py's RULES say the same, cell by cell."""
    documented = readme_rules()
    assert list(documented) == [a.value for a in RULES], "the same actions, in the same order"
    for action, row in RULES.items():
        assert documented[action.value] == {k: row.get(k) for k in OrgKind}, action.value


# --- the dashboard ---------------------------------------------------------------------------------

_FINDINGS_FORM = {"operation": "reboot", "device": ["d1"], "target": "selected", "name": "web reboot"}
WEB: dict[tuple[str, str], Op] = {
    ("GET", "/"): Op(READ_WORK, _fixed("GET", "/")),  # the overview shows the latest audit and rollouts
    ("POST", "/policy/acknowledge"): Op(ACK, _fixed("POST", "/policy/acknowledge", data={"version": "1"})),
    ("GET", "/devices"): Op(READ_DEVICES, _fixed("GET", "/devices")),
    ("GET", "/devices/{device_id}"): Op(READ_DEVICES, _fixed("GET", "/devices/d1")),
    ("GET", "/rollouts"): Op(READ_WORK, _fixed("GET", "/rollouts")),
    ("GET", "/rollouts/{rollout_id}"): Op(READ_WORK, lambda w, _m: ("GET", f"/rollouts/{w.rollout_id}", {})),
    ("GET", "/rollouts/{rollout_id}/progress"): Op(READ_WORK, lambda w, _m: (
        "GET", f"/rollouts/{w.rollout_id}/progress", {})),
    ("GET", "/findings"): Op(READ_WORK, _fixed("GET", "/findings")),
    ("POST", "/findings/plan"): Op(ROLLOUT, _fixed("POST", "/findings/plan", data=_FINDINGS_FORM)),
    ("POST", "/findings/create"): Op(ROLLOUT, _fixed("POST", "/findings/create", data=_FINDINGS_FORM)),
    ("GET", "/advisories"): Op(READ_VULNS, _fixed("GET", "/advisories")),
    ("GET", "/advisories/{advisory_id}"): Op(READ_VULNS, _fixed("GET", "/advisories/1")),
    ("POST", "/advisories/{advisory_id}/plan"): Op(ROLLOUT, _fixed("POST", "/advisories/1/plan", data={})),
    ("POST", "/advisories/{advisory_id}/create"): Op(ROLLOUT, _fixed("POST", "/advisories/1/create", data={})),
    ("GET", "/audit-log"): Op(READ_OWN, _fixed("GET", "/audit-log")),
    ("POST", "/audit-log/verify"): Op(Action.VERIFY_LOG, _fixed("POST", "/audit-log/verify", data={})),
}
# Signing in and out is for everyone with a session; the API's pages are not the dashboard's.
WEB_OPEN = {("GET", "/login"), ("POST", "/login"), ("POST", "/logout"), ("GET", "/docs"), ("GET", "/docs/init.js")}


def web_routes(app: FastAPI) -> set[tuple[str, str]]:
    """The dashboard's routes: those the OpenAPI spec leaves out, read from the app's routers."""
    def walk(routes: list[Any]) -> Iterator[APIRoute]:
        for route in routes:
            if isinstance(route, APIRoute):
                yield route
            elif hasattr(route, "original_router"):  # FastAPI's included routers
                yield from walk(route.original_router.routes)
    return {(m, r.path) for r in walk(app.router.routes) if not r.include_in_schema for m in r.methods or ()}


@pytest.fixture
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """21 users sign in here: argon2id at its lowest cost (the real parameters cost ~1 s a hash on
    a busy 2-core runner); what is checked is who may do what once signed in, not the hash."""
    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
@pytest.mark.usefixtures("cheap_passwords")
def test_every_dashboard_route_keeps_the_readme_table(platform: Platform, city: Caller) -> None:
    rules = readme_rules()
    app = create_app(platform)
    assert web_routes(app) == {*WEB, *WEB_OPEN, ("POST", "/rollouts/{rollout_id}/{verb}")}, \
        "every dashboard route needs a rule here"
    world = build_world(platform, city)
    broken: list[str] = []
    pairs = 0
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as http:
        for member in world.members:
            signed = users.sign_in(platform.uow, member.username, member.password)
            requests = [(op.action, op.build(world, member)) for op in WEB.values()]
            for verb, action in VERBS.items():
                target = world.city_rollout_id if verb == "approve" else world.rollout_id
                requests.append((action, ("POST", f"/rollouts/{target}/{verb}", {"data": {}})))
            for action, (method, url, kw) in requests:
                if method == "POST":
                    kw = {"data": {**kw.get("data", {}), "csrf_token": signed.csrf_token}}
                ok = allowed(rules, action.value, member.kind, member.role)
                before = audit_events(platform) if not ok else 0
                http.cookies.clear()
                http.cookies.set("cw_session", signed.session)
                response = http.request(method, url, headers={"Accept": "text/html"}, **kw)
                pairs += 1
                why = _verdict(response.status_code, ok)
                if why is None and not ok and audit_events(platform) != before:
                    why = "refused, but the audit log moved"
                if why:
                    broken.append(f"{member.slug:24} {method} {url}: {why} [{action.value}]")
    print(f"\n{pairs} role x dashboard-route requests")
    assert not broken, f"{len(broken)} of {pairs} dashboard answers break README's table:\n" + "\n".join(broken)
