"""Rollouts over the API: a dry run stores nothing, create, approval by another user, control,
progress per wave, refusals as problems, and partners scoped to the devices they maintain."""

from __future__ import annotations

import httpx
from api_support import Api, assert_problem, csv_text, import_csv, make_org, make_zone, small_rollout


def _fleet(admin: httpx.Client) -> None:
    make_zone(admin, "Harbor")
    make_zone(admin, "Hospital", criticality="critical")
    make_org(admin, "Alpha Integration", "integrator")
    admin.put("/api/v1/zones/Harbor/duties/maintain", json={"org": "Alpha Integration"})
    body = csv_text("id,kind,brand,model,firmware_version,zone,protocol",
                    "SL-1,streetlight,Lumo,L1,1.0,Harbor,mqtt", "SL-2,streetlight,Lumo,L1,1.0,Harbor,mqtt",
                    "SL-3,streetlight,Lumo,L1,1.0,Hospital,mqtt", "SL-4,streetlight,Lumo,L1,1.0,Harbor,")
    assert import_csv(admin, body, create_missing="true").status_code == 200


def test_rollout_flow(api: Api, admin: httpx.Client) -> None:
    _fleet(admin)
    body = {"name": "reboot harbor", "operation": "reboot", "selector": {"zone": "Harbor"},
            "options": {"canary": 1, "waves": [100], "concurrency": 2}}
    plan = admin.post("/api/v1/rollouts/plan", json=body)
    assert plan.status_code == 200, plan.text
    assert plan.json()["rollout"] is None and plan.json()["waves"] == [["SL-1"], ["SL-2"]]
    assert plan.json()["skipped"][0]["device_id"] == "SL-4"
    assert admin.get("/api/v1/rollouts").json() == []  # the dry run stored nothing

    created = admin.post("/api/v1/rollouts", json=body)
    assert created.status_code == 201
    rid = created.json()["rollout"]
    started = admin.post(f"/api/v1/rollouts/{rid}/start")
    assert started.status_code == 200 and started.json()["status"] == "running"
    assert [w["size"] for w in started.json()["waves"]] == [1, 1]
    paused = admin.post(f"/api/v1/rollouts/{rid}/pause", json={"reason": "storm tonight"})
    assert paused.json()["status"] == "paused" and paused.json()["control_reason"] == "storm tonight"
    assert_problem(admin.post(f"/api/v1/rollouts/{rid}/start"), 409)
    assert admin.post(f"/api/v1/rollouts/{rid}/abort").json()["status"] == "aborted"
    devices = admin.get(f"/api/v1/rollouts/{rid}/devices", params={"status": "cancelled"}).json()
    assert {d["device_id"] for d in devices} == {"SL-1", "SL-2"}


def test_approval_refusals_and_scope(api: Api, admin: httpx.Client) -> None:
    _fleet(admin)
    hospital = {"name": "h", "operation": "reboot", "devices": ["SL-3"]}
    rid = admin.post("/api/v1/rollouts", json=hospital).json()["rollout"]
    assert admin.get(f"/api/v1/rollouts/{rid}").json()["status"] == "awaiting_approval"
    assert_problem(admin.post(f"/api/v1/rollouts/{rid}/approve"), 403)  # its creator
    other = api.client(api.token(api.city.org_name, "operator", "second pair of eyes"))
    assert other.post(f"/api/v1/rollouts/{rid}/approve").json()["status"] == "ready"

    assert_problem(admin.post("/api/v1/rollouts/plan", json={"name": "x", "operation": "reboot",
                                                             "selector": {"zone": "Nowhere"}}), 404)
    problem = assert_problem(admin.post("/api/v1/rollouts/plan", json={
        "name": "x", "operation": "reboot", "devices": ["SL-4"]}), 422)
    assert "skipped" in problem["detail"]
    assert_problem(admin.post("/api/v1/rollouts/plan", json={"name": "x", "operation": "explode"}), 422)
    assert_problem(admin.post("/api/v1/rollouts/plan", json={
        "name": "x", "operation": "upgrade_firmware", "release": 99}), 404)

    alpha = api.client(api.token("Alpha Integration", "operator"))
    mine = alpha.post("/api/v1/rollouts/plan", json={"name": "a", "operation": "reboot"})
    assert mine.status_code == 200 and sorted(d for w in mine.json()["waves"] for d in w) == ["SL-1", "SL-2"]
    assert_problem(alpha.post("/api/v1/rollouts/plan", json={"name": "a", "operation": "reboot",
                                                             "devices": ["SL-3"]}), 422)
    assert_problem(alpha.get(f"/api/v1/rollouts/{rid}"), 404)  # the city's rollout is not visible


def test_a_finished_rollout_answers_409_naming_its_state(api: Api, admin: httpx.Client) -> None:
    """Issue 14: abort on a succeeded rollout was accepted and rewrote it to "aborted"."""
    from pathlib import Path

    from tests.rollout_support import finish_rollout

    rid = small_rollout(api, 2)
    assert admin.post(f"/api/v1/rollouts/{rid}/start").status_code == 200
    finish_rollout(api.platform, rid, Path(api.platform.settings.firmware_dir))
    before = admin.get(f"/api/v1/rollouts/{rid}").json()
    assert before["status"] == "succeeded"
    for verb in ("pause", "resume", "abort", "start", "approve"):
        problem = assert_problem(admin.post(f"/api/v1/rollouts/{rid}/{verb}"), 409)
        assert problem["type"] == "urn:cityward:problem:rollout-state-conflict"
        assert (problem["state"], problem["command"], problem["rollout"]) == ("succeeded", verb, rid)
        assert "is succeeded" in problem["detail"] and problem["hint"]
    assert admin.get(f"/api/v1/rollouts/{rid}").json() == before
