from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from api_support import Api, assert_problem, csv_text, import_csv, make_org, make_zone

SMALL = """
name: api policy
rules:
  - id: SEEN-002
    title: Never reported
    rationale: r
    severity: medium
    condition: online is null
    controls: {nist_ir_8259a: [cybersecurity_state_awareness]}
    remediation: inspect
"""


def test_policy_audit_and_waiver_flow(api: Api, admin: httpx.Client) -> None:
    make_zone(admin, "Harbor")
    make_org(admin, "Alpha Integration", "integrator")
    admin.put("/api/v1/zones/Harbor/duties/maintain", json={"org": "Alpha Integration"})
    body = csv_text("id,kind,brand,model,firmware_version,zone", "SL-1,streetlight,Lumo,L1,1.0,Harbor",
                    "SL-2,streetlight,Lumo,L1,1.0,Harbor")
    assert import_csv(admin, body, create_missing="true").status_code == 200

    bad = admin.post("/api/v1/policies/validate", json={"yaml": SMALL.replace("online is null", "online >")})
    problem = assert_problem(bad, 422)
    assert "SEEN-002" in str(problem) and "column" in str(problem)
    assert admin.post("/api/v1/policies/validate", json={"yaml": SMALL}).json()["rules"] == 1
    assert_problem(admin.get("/api/v1/policies/in-force"), 404)

    # With nothing published, an audit uses the shipped baseline.
    run = admin.post("/api/v1/audits")
    assert run.status_code == 201 and run.json()["policy"] == "cityward baseline" and run.json()["devices"] == 2

    published = admin.post("/api/v1/policies", json={"yaml": SMALL})
    assert published.status_code == 201 and published.json()["version"] == 1
    assert published.json()["not_acknowledged"] == ["Alpha Integration"]
    assert_problem(admin.post("/api/v1/policies", json={"yaml": SMALL}), 409)
    with api.client(api.token("Alpha Integration", "operator")) as alpha:
        assert_problem(alpha.post("/api/v1/policies", json={"yaml": SMALL + "\n#x"}), 403)
        assert alpha.post("/api/v1/policies/1/ack").json()["not_acknowledged"] == []
        assert_problem(alpha.post("/api/v1/policies/9/ack"), 404)
        waiver = alpha.post("/api/v1/waivers", json={
            "rule_id": "SEEN-002", "selector": {"device": "SL-1"}, "reason": "being replaced",
            "expires_at": (datetime.now(UTC) + timedelta(days=10)).isoformat()})
        assert waiver.status_code == 201, waiver.text
        assert_problem(alpha.post(f"/api/v1/waivers/{waiver.json()['id']}/approve"), 403)
        alpha_run = alpha.post("/api/v1/audits").json()
        assert alpha_run["devices"] == 2 and alpha_run["policy_version"] == 1
        assert [r["id"] for r in alpha.get("/api/v1/audits").json()] == [alpha_run["id"]]  # its own runs only
        assert_problem(alpha.get(f"/api/v1/audits/{run.json()['id']}"), 404)  # not the city's
    assert_problem(admin.post("/api/v1/waivers", json={
        "rule_id": "SEEN-002", "selector": {"device": "SL-1", "zone": "Harbor"}, "reason": "x",
        "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()}), 422)
    approved = admin.post(f"/api/v1/waivers/{waiver.json()['id']}/approve")
    assert approved.status_code == 200 and approved.json()["status"] == "approved"

    city_run = admin.post("/api/v1/audits").json()
    findings = admin.get(f"/api/v1/audits/{city_run['id']}/findings", params={"rule": "SEEN-002"}).json()
    assert {(f["device_id"], f["waiver"]) for f in findings} == {("SL-1", waiver.json()["id"]), ("SL-2", None)}
    page = admin.get(f"/api/v1/audits/{city_run['id']}/findings", params={"limit": 1}).json()
    rest = admin.get(f"/api/v1/audits/{city_run['id']}/findings", params={"after": page[0]["id"]}).json()
    assert len(page) == 1 and len(rest) == 1
    detail = admin.get(f"/api/v1/audits/{city_run['id']}").json()
    assert detail["summary"]["by_rule"] == {"SEEN-002": 2}
