"""/api/v1/zones: create with a maintenance window, assign duties, list."""

from __future__ import annotations

import httpx
from api_support import Api, assert_problem, make_org, make_zone


def test_create_zone_with_parent_and_window(admin: httpx.Client) -> None:
    make_zone(admin, "Harbor", criticality="high")
    zone = make_zone(admin, "Pier 9", parent="Harbor", criticality="critical",
                     maintenance_window={"cron": "0 2 * * 0", "duration_minutes": 120,
                                         "timezone": "Europe/Berlin"})
    assert (zone["parent"], zone["criticality"]) == ("Harbor", "critical")
    assert zone["maintenance_window"] == {"cron": "0 2 * * 0", "duration_minutes": 120,
                                          "timezone": "Europe/Berlin"}
    listed = admin.get("/api/v1/zones").json()
    assert [z["name"] for z in listed["items"]] == ["Harbor", "Pier 9"]
    assert listed["total"] == 2 and listed["next_after"] is None


def test_bad_zones(admin: httpx.Client) -> None:
    make_zone(admin, "Harbor")
    problem = assert_problem(admin.post("/api/v1/zones", json={"name": "Harbor"}), 409)
    assert "Harbor" in problem["detail"]
    assert_problem(admin.post("/api/v1/zones", json={"name": "X", "parent": "Nowhere"}), 404)
    assert_problem(admin.post("/api/v1/zones", json={"name": "X", "criticality": "meh"}), 422)
    window = {"cron": "daily", "duration_minutes": 0, "timezone": "Mars/Olympus"}
    problem = assert_problem(admin.post("/api/v1/zones", json={"name": "X",
                                                               "maintenance_window": window}), 422)
    assert {e["field"] for e in problem["errors"]} == {"cron", "duration_minutes", "timezone"}
    problem = assert_problem(admin.post("/api/v1/zones", json={
        "name": "X", "maintenance_window": {"cron": "0 2 * * 0", "duration_minutes": "long"}}), 422)
    assert [e["field"] for e in problem["errors"]] == ["maintenance_window.duration_minutes"]
    assert [z["name"] for z in admin.get("/api/v1/zones").json()["items"]] == ["Harbor"]


def test_assign_and_unassign_a_duty(admin: httpx.Client) -> None:
    make_zone(admin, "Harbor")
    make_org(admin, "Alpha Integration", "integrator")
    zone = admin.put("/api/v1/zones/Harbor/duties/maintain", json={"org": "Alpha Integration"})
    assert zone.status_code == 200, zone.text
    assert zone.json()["responsibilities"] == {"maintain": "Alpha Integration"}
    cleared = admin.put("/api/v1/zones/Harbor/duties/maintain", json={"org": None}).json()
    assert cleared["responsibilities"] == {}
    assert_problem(admin.put("/api/v1/zones/Harbor/duties/cleaning", json={"org": None}), 422)
    assert_problem(admin.put("/api/v1/zones/Nowhere/duties/maintain", json={"org": None}), 404)
    assert_problem(admin.put("/api/v1/zones/Harbor/duties/maintain", json={"org": "Nobody"}), 404)
    assert_problem(admin.put("/api/v1/zones/Harbor/duties/maintain", json={}), 422)


def test_only_the_city_admin_manages_zones(api: Api, admin: httpx.Client) -> None:
    make_zone(admin, "Harbor")
    make_org(admin, "Alpha Integration", "integrator")
    with api.client(api.token("Alpha Integration", "admin")) as alpha:
        assert_problem(alpha.post("/api/v1/zones", json={"name": "Mine"}), 403)
        assert_problem(alpha.put("/api/v1/zones/Harbor/duties/maintain",
                                 json={"org": "Alpha Integration"}), 403)
        zones = alpha.get("/api/v1/zones").json()["items"]
    assert [z["name"] for z in zones] == ["Harbor"]  # partners see the zone tree
