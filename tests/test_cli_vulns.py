"""`cityward advisories …`, `vulns list` and `rollout plan --from-advisory` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import Cli

FIXTURES = Path(__file__).parent / "fixtures" / "advisories"


def test_vulnerability_story(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli("demo", "--once", "--no-live", "--devices", "300")  # imports the demo city's advisories too
    items = json.loads(cli("vulns", "list", "--kev", "--json").stdout)
    assert items and {i["cve"] for i in items} == {"CVE-2026-90001"} and all(i["kev"] for i in items)
    assert any(i["via"] == "origin" for i in items)  # relabeled cameras inherit their ODM's advisory
    shown = cli("vulns", "list").stdout
    assert "CVE-2026-90001" in shown and "most urgent first" in shown
    again = json.loads(cli("advisories", "import", str(FIXTURES / "csaf"), "--json").stdout)
    assert len(again["imported"]) == 3 and again["match"]["cves"] >= 2
    assert json.loads(cli("advisories", "import", str(FIXTURES / "csaf"), "--json").stdout)["unchanged"]
    assert "dry run" in cli("rollout", "plan", "--from-advisory", "QRW-SA-2026-001").stdout
    plan = json.loads(cli("rollout", "plan", "--from-advisory", "QRW-SA-2026-001", "--json").stdout)
    assert [f["product"] for f in plan] == ["Quarrow QC-410"]  # relabels planned as their ODM's product
    assert plan[0]["release"] is None and "cityward firmware add" in plan[0]["problem"]
    # The fixtures name Siemens and Palo Alto products the demo city does not have: said, not silent.
    imported = cli("advisories", "import", str(FIXTURES / "cve5"))
    assert "name nothing in your catalog" in imported.stderr and "cityward advisories unmatched" in imported.stderr
    missing = json.loads(cli("advisories", "unmatched", "--json").stdout)
    panos = next(u for u in missing["unmatched"] if u["product"] == "PAN-OS")
    assert panos["reason"] == "no catalog product is made or labeled by 'Palo Alto Networks'"
    assert "names no vendor" in " ".join(u["reason"] for u in missing["unmatched"]) or missing["unreadable"]
    assert "statements that name no catalog product" in cli("advisories", "unmatched").stdout
    cli("vendors", "alias", "Palo Alto Networks", "Palo Alto Networks Inc.", code=2)  # the same vendor
    cli("vendors", "alias", "PANW", "Quarrow")
    assert "PANW" in cli("vendors", "aliases").stdout
    assert "no alias 'nobody'" in cli("vendors", "unalias", "nobody", code=2).stderr

    broken = tmp_path / "broken.json"
    broken.write_text('{"document": ')
    proc = cli("advisories", "import", str(broken), code=2)
    assert "broken.json: malformed JSON at line 1" in proc.stderr
    cli("advisories", "import", str(tmp_path / "nowhere"), code=2)
    proc = cli("rollout", "plan", "--from-advisory", "NOPE-1", code=2)  # an unknown id
    assert "advisory 'NOPE-1' not found" in proc.stderr
    proc = cli("rollout", "plan", code=2)
    assert "--operation" in proc.stderr
