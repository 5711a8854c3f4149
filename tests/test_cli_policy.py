"""`cityward policy validate|facts|controls` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import Cli


def test_policy_commands(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    baseline = Path(__file__).resolve().parent.parent / "policies" / "baseline.yaml"
    assert "valid" in cli("policy", "validate", str(baseline)).stdout
    coverage = json.loads(cli("policy", "controls", "--json").stdout)
    assert set(coverage) == {"etsi_en_303_645", "nist_ir_8259a", "iec_62443_4_2"}
    assert "5.1-1" in coverage["etsi_en_303_645"]["covered"] and coverage["nist_ir_8259a"]["not_covered"] == []
    facts = {f["name"]: f for f in json.loads(cli("policy", "facts", "--json").stdout)}
    assert facts["firmware_version"]["type"] == "version" and "default" in facts["credential_state"]["values"]

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nrules:\n  - id: SVC-9\n    title: t\n    rationale: r\n    severity: high\n"
                   "    condition: \"'telnet' in services and\"\n"
                   "    controls: {nist_ir_8259a: [device_configuration]}\n"
                   "    remediation: disable_services\n")
    proc = cli("policy", "validate", str(bad), code=2)
    assert "rule SVC-9" in proc.stderr and "column" in proc.stderr
    cli("policy", "validate", str(tmp_path / "missing.yaml"), code=2)


def test_audit_run_story(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli("demo", "--once", "--no-live", "--devices", "300")
    first = json.loads(cli("audit", "run", "--format", "json").stdout)
    assert first["devices"] == 300 and first["findings"] and first["by_rule"]
    assert {f["status"] for f in first["findings"]} == {"persisting"}  # the demo audited the city already
    rules = {r[0] for r in first["by_rule"]}
    assert "SEEN-002" in rules  # nothing reported: every device "never reported"
    never = json.loads(cli("devices", "list", "--failing-rule", "SEEN-002", "--limit", "1000", "--json").stdout)
    assert never["total"] == 300 and len(never["items"]) == 300
    few = min(rules, key=lambda rule: sum(1 for f in first["findings"] if f["rule_id"] == rule))
    failing = json.loads(cli("devices", "list", "--failing-rule", few, "--limit", "1000", "--json").stdout)
    assert sorted(d["id"] for d in failing["items"]) == sorted(
        f["device_id"] for f in first["findings"] if f["rule_id"] == few), few
    report = tmp_path / "audit.json"
    proc = cli("audit", "run", "--format", "json", "--out", str(report), "--fail-on", "high", code=1)
    assert "report written" in proc.stderr
    second = json.loads(report.read_text())
    assert {f["status"] for f in second["findings"]} == {"persisting"} and second["resolved"] == []
    assert "top failing rules" in cli("audit", "run").stdout
    page = tmp_path / "audit.html"
    assert "HTML report written" in cli("audit", "run", "--format", "html", "--out", str(page)).stderr
    text = page.read_text()
    assert "<svg" in text and "http" not in text and text.count("<circle") == 5  # the demo's run and four here
    cli("audit", "run", "--fail-on", "catastrophic", code=2)
    cli("audit", "run", "--format", "pdf", code=2)


def test_publication_acknowledgement_and_waiver_story(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli("demo", "--once", "--no-live", "--devices", "200")
    baseline = Path(__file__).resolve().parent.parent / "policies" / "baseline.yaml"
    cli("policy", "status", code=2)  # nothing published yet: says how to publish
    assert "version 1" in cli("policy", "publish", str(baseline)).stdout
    status = json.loads(cli("policy", "status", "--json").stdout)
    assert status["version"] == 1 and "Tessellate Integration" in status["not_acknowledged"]
    partner = json.loads(cli("tokens", "create", "ops", "--org", "Tessellate Integration", "--role", "operator",
                             "--json").stdout)["token"]
    cli("policy", "ack", token=partner)
    assert "Tessellate Integration" not in json.loads(cli("policy", "status", "--json").stdout)["not_acknowledged"]

    cli("waivers", "request", "SEEN-002", "--zone", "Harbour", "--reason", "commissioning", "--expires", "30d")
    cli("waivers", "approve", "1", code=1)  # the requester may not approve
    second = json.loads(cli("tokens", "create", "second admin", "--role", "admin", "--json").stdout)["token"]
    cli("waivers", "approve", "1", token=second)
    report = json.loads(cli("audit", "run", "--format", "json").stdout)
    assert report["policy_version"] == 1 and "Tessellate Integration" not in report["not_acknowledged"]
    waived = [f for f in report["findings"] if f["waiver"] == 1]
    assert waived and all(f["rule_id"] == "SEEN-002" for f in waived)
    cli("waivers", "request", "SEEN-002", "--reason", "x", "--expires", "30d", code=2)  # no selector
