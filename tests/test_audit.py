"""The fleet audit on both backends: findings with evidence and the responsible organization,
what changed since the last run, scores, and the caller's scope."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller, Role
from cityward.domain.policy.document import parse_policy
from cityward.errors import InvalidInput
from cityward.services import audit, configs, organizations, zones
from tests.conftest import caller_for
from tests.helpers import csv_bytes, device, import_csv, ingest

POLICY = b"""
name: test policy
prohibited_manufacturers: [Lumo]
rules:
  - id: CRED-001
    title: Default password
    rationale: r
    severity: critical
    condition: credential_state == 'default'
    controls: {nist_ir_8259a: [logical_access_to_interfaces]}
    remediation: rotate_credentials
  - id: SVC-001
    title: Telnet
    rationale: r
    severity: high
    scope: {zones: [north]}
    condition: "'telnet' in services"
    controls: {nist_ir_8259a: [device_configuration]}
    remediation: disable_services
  - id: ORIG-002
    title: Prohibited
    rationale: r
    severity: low
    condition: manufacturer_prohibited
    controls: {nist_ir_8259a: [device_identification]}
    remediation: replace_device
"""
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _report(platform: Platform, dev: str, seq: int, credential: str, services: list[str],
            config_hash: str | None = None) -> None:
    body = {"v": 1, "device_id": dev, "seq": seq, "boot_id": "b", "at": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "firmware_version": "1.2.3", "services": services, "credential": {"state": credential}}
    if config_hash:
        body["config_hash"] = config_hash

    ingest(platform, f"cityward/v1/{dev}/state", json.dumps(body).encode())


@pytest.fixture
def fleet(platform: Platform, city: Caller) -> Caller:
    zones.create_zone(platform.uow, city, "north", "high")
    zones.create_zone(platform.uow, city, "north-harbour", "medium", "north")
    zones.create_zone(platform.uow, city, "south", "low")
    organizations.create_org(platform.uow, city, "Acme Integrators", "integrator")
    organizations.create_org(platform.uow, city, "Bolt Systems", "integrator")
    zones.assign_duty(platform.uow, city, "north", "credentials", "Acme Integrators")
    zones.assign_duty(platform.uow, city, "north", "maintain", "Acme Integrators")
    zones.assign_duty(platform.uow, city, "south", "maintain", "Bolt Systems")
    rows = [device(1, zone="north-harbour"), device(2, zone="north"), device(3, zone="south"),
            device(4, zone="south", brand="Other", model="O1")]
    import_csv(platform, city, csv_bytes(rows), create_missing=True)
    _report(platform, "SL-00001", 1, "default", ["telnet"])
    _report(platform, "SL-00002", 1, "unique", ["ssh"])
    _report(platform, "SL-00003", 1, "default", ["telnet"])
    return city


def test_findings_evidence_responsibility_and_diff(platform: Platform, fleet: Caller) -> None:
    policy = parse_policy(POLICY, "p.yaml")
    first = audit.run_audit(platform.uow, fleet, policy, POLICY, NOW)
    got = {(f.device_id, f.rule_id): f for f in first.finding_list()}
    assert set(got) == {("SL-00001", "CRED-001"), ("SL-00003", "CRED-001"), ("SL-00001", "SVC-001"),
                        ("SL-00001", "ORIG-002"), ("SL-00002", "ORIG-002"), ("SL-00003", "ORIG-002")}
    # SVC-001 is scoped to north and the zones inside it: SL-00003 (south) has telnet but is out of scope.
    assert got[("SL-00001", "CRED-001")].evidence == {"credential_state": "default"}
    assert got[("SL-00001", "CRED-001")].responsible == "Acme Integrators"  # credentials duty, inherited
    assert got[("SL-00003", "CRED-001")].responsible is None  # nobody holds credentials in the south
    assert got[("SL-00001", "SVC-001")].responsible == "Acme Integrators"
    assert all(f.status == "new" for f in first.finding_list()) and first.devices == 4
    assert first.by_rule[0][0] == "CRED-001"  # critical first
    zones_score = {s.key: s for s in first.scores["zone"]}
    assert (zones_score["north"].devices, zones_score["north"].failing) == (1, 0)  # SL-00002: low only
    assert (zones_score["north-harbour"].failing, zones_score["south"].failing) == (1, 1)

    by_product = audit.failing_by_product(platform.uow, fleet, "CRED-001")  # what a rollout would target
    assert [(p.manufacturer, p.device_ids) for p in by_product] == [("Lumo", ["SL-00001", "SL-00003"])]

    _report(platform, "SL-00001", 2, "unique", ["telnet"])  # the password was rotated
    second = audit.run_audit(platform.uow, fleet, policy, POLICY, NOW + timedelta(hours=1))
    assert second.resolved_pairs() == [("SL-00001", "CRED-001")]
    assert {f.status for f in second.finding_list()} == {"persisting"} and second.findings.height == 5


def test_partners_audit_only_their_devices(platform: Platform, fleet: Caller) -> None:
    policy = parse_policy(POLICY, "p.yaml")
    acme = caller_for(platform, "Acme Integrators", Role.OPERATOR)
    report = audit.run_audit(platform.uow, acme, policy, POLICY, NOW)
    assert report.devices == 2 and {f.device_id for f in report.finding_list()} == {"SL-00001", "SL-00002"}
    # Its runs are its own: the city's next run is compared with the city's previous one, not Acme's.
    city_run = audit.run_audit(platform.uow, fleet, policy, POLICY, NOW)
    assert all(f.status == "new" for f in city_run.finding_list())


def test_empty_scope_and_bad_fail_on(platform: Platform, city: Caller) -> None:
    report = audit.run_audit(platform.uow, city, parse_policy(POLICY, "p.yaml"), POLICY, NOW)
    assert (report.devices, report.findings.height, report.score) == (0, 0, 100.0)
    with pytest.raises(Exception, match="--fail-on"):
        audit.parse_fail_on("catastrophic")


DRIFT = b"""
name: drift
rules:
  - id: CONF-001
    title: Configuration drift
    rationale: r
    severity: medium
    condition: config_drift
    controls: {nist_ir_8259a: [device_configuration]}
    remediation: apply_configuration
"""


def test_config_drift_is_measured_against_the_desired_configuration(platform: Platform, fleet: Caller) -> None:
    configs.set_desired(platform.uow, fleet, "north lights", {"zone": "north"}, {"dim_level": 60})
    digest = configs.config_hash({"dim_level": 60})
    _report(platform, "SL-00001", 2, "unique", [], config_hash=digest)  # north-harbour, inside north: as desired
    _report(platform, "SL-00002", 2, "unique", [], config_hash="0" * 64)  # north: drifted
    _report(platform, "SL-00003", 2, "unique", [], config_hash="0" * 64)  # south: nothing desired there
    report = audit.run_audit(platform.uow, fleet, parse_policy(DRIFT, "d.yaml"), DRIFT, NOW)
    found = report.finding_list()
    assert [(f.device_id, f.evidence) for f in found] == [("SL-00002", {"config_drift": True})]


def test_browsing_findings_by_severity_pages_through_every_rule_of_it(platform: Platform, city: Caller) -> None:
    """Two rules share a severity: pages of three, filtered by it, list exactly that severity's
    findings in (device, rule) order, as one walk per rule merged."""
    text = b"""
name: severities
rules:
  - {id: A-1, title: a, rationale: r, severity: low, condition: "kind == 'streetlight'",
     controls: {nist_ir_8259a: [device_identification]}, remediation: replace_device}
  - {id: B-1, title: b, rationale: r, severity: low, condition: "firmware_version == '2.0.0'",
     controls: {nist_ir_8259a: [device_identification]}, remediation: replace_device}
  - {id: C-1, title: c, rationale: r, severity: high, condition: "kind == 'streetlight'",
     controls: {nist_ir_8259a: [device_identification]}, remediation: replace_device}
"""
    import_csv(platform, city, csv_bytes(device(i, firmware_version="2.0.0" if i % 2 else "1.2.3") for i in range(7)),
               create_missing=True)
    audit.run_audit(platform.uow, city, parse_policy(text, "s.yaml"), text, NOW)
    expected = sorted([(f"SL-{i:05d}", "A-1") for i in range(7)] + [(f"SL-{i:05d}", "B-1") for i in range(1, 7, 2)])
    seen: list[tuple[str, str]] = []
    after = None
    while True:
        found = audit.browse_findings(platform.uow, city, audit.FindingsFilter(severity="low"), limit=3, after=after)
        seen += [(f.device_id, f.rule_id) for f in found.items]
        if found.next_after is None:
            break
        after = found.next_after
    assert seen == expected
    assert {r.rule_id: r.findings for r in found.by_rule} == {"A-1": 7, "B-1": 3}
    stale = audit.browse_findings(platform.uow, city, audit.FindingsFilter(), limit=3).next_after
    audit.run_audit(platform.uow, city, parse_policy(text, "s.yaml"), text, NOW)  # a new run: old links expire
    with pytest.raises(InvalidInput, match="earlier audit run"):
        audit.browse_findings(platform.uow, city, audit.FindingsFilter(), limit=3, after=stale)
