"""The shipped baseline: it validates, covers every M2 topic, and each rule fails one hand-built
device and passes another (checked by the reference interpreter and the compiled audit alike)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cityward.adapters.policy_polars import compile_condition, fact_frame
from cityward.domain.policy.document import Policy, Remediation, parse_policy
from cityward.domain.policy.expr import facts_used
from cityward.domain.policy.reference import evaluate
from cityward.errors import InvalidInput
from cityward.services.policies import baseline_path

CLEAN: dict[str, Any] = {
    "id": "SL-1", "kind": "streetlight", "brand": "Vexlumen", "model": "VL-N200", "manufacturer": "Vexlumen",
    "origin_status": "original", "zone": "Old Town", "zone_criticality": "medium", "tags": [], "protocol": "mqtt",
    "firmware_version": "2.4.1", "min_firmware": "2.0.0", "firmware_below_minimum": False,
    "end_of_support_passed": False, "age": 400.0, "online": True, "last_seen_age": 0.01,
    "credential_state": "unique", "password_age": 30.0, "services": ["mqtt", "ssh"], "remote_access": ["vpn"],
    "cert_expires_in": 200.0, "quarantined": False, "config_drift": False, "manufacturer_prohibited": False,
    "known_exploited": False, "identity_mismatch": False, "firmware_signed": True,
}

# rule id → (what makes a clean device fail it, what a device that passes despite being close looks like)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "CRED-001": ({"credential_state": "default"}, {"credential_state": "weak"}),
    "CRED-002": ({"credential_state": "weak"}, {"credential_state": "unique"}),
    "CRED-003": ({"password_age": 400.0}, {"password_age": 365.0}),
    "CRED-004": ({"credential_state": "unknown"}, {"credential_state": "unknown", "online": False}),
    "CRED-005": ({"credential_state": "default"}, {"credential_state": "default", "remote_access": []}),
    "FW-001": ({"firmware_below_minimum": True}, {"firmware_below_minimum": None}),
    "FW-002": ({"known_exploited": True}, {"known_exploited": None}),
    "FW-003": ({"firmware_signed": False}, {"firmware_signed": None}),
    "FW-004": ({"firmware_below_minimum": True, "zone_criticality": "critical"}, {"firmware_below_minimum": True}),
    "SVC-001": ({"services": ["telnet"]}, {"services": ["ssh"]}),
    "SVC-002": ({"services": ["ftp", "ssh"]}, {"services": None}),
    "SVC-003": ({"services": ["http"]}, {"services": ["http", "https"]}),
    "SVC-004": ({"services": ["upnp"]}, {"services": ["mqtt"]}),
    "SVC-005": ({"services": ["upnp"], "zone_criticality": "critical"}, {"zone_criticality": "critical"}),
    "CERT-001": ({"cert_expires_in": -1.0}, {"cert_expires_in": 0.0}),
    "CERT-002": ({"cert_expires_in": 10.0}, {"cert_expires_in": 30.0}),
    "REM-001": ({"remote_access": ["vendor-cloud"]}, {"remote_access": ["vpn"]}),
    "REM-002": ({"kind": "traffic_controller", "remote_access": ["ssh-tunnel"]},
                {"kind": "traffic_controller", "remote_access": ["vpn"]}),
    "LIFE-001": ({"end_of_support_passed": True}, {"end_of_support_passed": False}),
    "LIFE-002": ({"end_of_support_passed": True, "zone_criticality": "high"}, {"end_of_support_passed": True}),
    "ORIG-001": ({"origin_status": "unknown"}, {"origin_status": "relabeled"}),
    "ORIG-002": ({"manufacturer_prohibited": True}, {"manufacturer_prohibited": False}),
    "ORIG-003": ({"identity_mismatch": True}, {"identity_mismatch": None}),
    "CONF-001": ({"config_drift": True}, {"config_drift": None}),
    "SEEN-001": ({"last_seen_age": 8.0}, {"last_seen_age": 6.9}),
    "SEEN-002": ({"online": None}, {"online": False}),
    "SEEN-003": ({"online": False, "zone_criticality": "critical"}, {"online": False}),
    "QUAR-001": ({"quarantined": True, "services": ["telnet"]}, {"quarantined": True}),
}


@pytest.fixture(scope="module")
def baseline() -> Policy:
    return parse_policy(baseline_path().read_bytes(), "baseline.yaml")


def test_baseline_is_valid_and_broad(baseline: Policy) -> None:
    assert len(baseline.rules) >= 25
    assert {r.id for r in baseline.rules} == set(CASES), "every rule has a failing and a passing device"
    assert {r.remediation for r in baseline.rules} >= {
        Remediation.ROTATE_CREDENTIALS, Remediation.UPGRADE_FIRMWARE, Remediation.DISABLE_SERVICES,
        Remediation.RENEW_CERTIFICATE, Remediation.RESTRICT_REMOTE_ACCESS, Remediation.REPLACE_DEVICE}
    used = set().union(*(facts_used(r.node) for r in baseline.rules))
    for topic in ("credential_state", "password_age", "firmware_below_minimum", "known_exploited", "services",
                  "cert_expires_in", "remote_access", "end_of_support_passed", "origin_status",
                  "manufacturer_prohibited", "firmware_signed", "config_drift", "last_seen_age"):
        assert topic in used, f"no baseline rule uses {topic}"
    assert all(r.controls for r in baseline.rules)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_each_rule_fails_one_device_and_passes_another(baseline: Policy, rule_id: str) -> None:
    rule = next(r for r in baseline.rules if r.id == rule_id)
    failing, passing = ({**CLEAN, **over} for over in CASES[rule_id])
    assert evaluate(rule.node, CLEAN) is not True, "the clean device must pass every rule"
    assert evaluate(rule.node, failing) is True
    assert evaluate(rule.node, passing) is not True
    compiled = fact_frame([CLEAN, failing, passing]).select(compile_condition(rule.node).alias("hit"))["hit"]
    assert [bool(v) for v in compiled.to_list()] == [False, True, False]


@pytest.mark.parametrize("text, needle", [
    (b"name: x\nrules: [", "not valid YAML at line"),
    (b"- just a list", "a mapping"),
    (b"name: x\nrules: []", "non-empty list of rules"),
    (b"name: x\nrules:\n  - id: A\n    title: t\n    rationale: r\n    severity: high\n"
     b"    condition: kind == 'toaster'\n    controls: {nist_ir_8259a: [software_update]}\n"
     b"    remediation: inspect\n", "would match nothing"),
    (b"name: x\nbogus: 1\nrules:\n  - id: A\n", "unknown key 'bogus'"),
    (b"name: x\nrules:\n" + b"  - id: A\n" * 1001, "at most 1000"),
    (b"x" * (1 << 21), "larger than"),
])
def test_bad_policies_are_refused_whole(text: bytes, needle: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_policy(text, "p.yaml")
    details = str(exc.value) + " ".join(f"{p.source} {p.field} {p.message}" for p in exc.value.problems)
    assert needle in details, details


def test_problems_name_rule_field_and_column(tmp_path: Path) -> None:
    text = (b"name: x\nrules:\n  - id: FW-9\n    title: t\n    rationale: r\n    severity: high\n"
            b"    condition: firmware_version > 3d\n    controls: {nist_ir_8259a: [software_update]}\n"
            b"    remediation: upgrade_firmware\n")
    with pytest.raises(InvalidInput) as exc:
        parse_policy(text, "p.yaml")
    [problem] = exc.value.problems
    assert problem.source == "p.yaml: rule FW-9" and problem.field == "condition" and "column 18" in problem.message
