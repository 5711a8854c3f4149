"""Shared responsibility over HTTP: each token sees and changes only its part of the fleet.

The rules live in the services; these tests prove the API hands every request's own caller to
them, for each kind of partner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from api_support import Api, assert_problem, csv_text, device_ids, import_csv, make_org, make_zone

HEADER = "id,kind,brand,model,firmware_version,zone,maintainer"
ALPHA, BETA = "Alpha Integration", "Beta Systems"


@dataclass
class City:
    api: Api
    admin: httpx.Client


@pytest.fixture
def fleet(api: Api, admin: httpx.Client) -> City:
    """Two integrators maintaining two devices each; Acme's lamps also sold relabeled."""
    make_zone(admin, "Downtown")
    make_org(admin, ALPHA, "integrator")
    make_org(admin, BETA, "integrator")
    make_org(admin, "Acme", "manufacturer", brand="Acme")
    make_org(admin, "Vista", "manufacturer")
    for product in ({"brand": "Acme", "model": "AL-100", "kind": "streetlight"},
                    {"brand": "Brightway", "model": "SL-1", "origin_brand": "Acme",
                     "origin_model": "AL-100"}):
        response = admin.post("/api/v1/products", json=product)
        assert response.status_code == 200, response.text
    relabel = response.json()
    assert (relabel["origin_status"], relabel["manufacturer"]) == ("relabeled", "Acme")
    assert relabel["chain"] == ["Brightway SL-1", "Acme AL-100"]
    body = csv_text(HEADER,
                    f"sl-a1,streetlight,Acme,AL-100,1.0.0,Downtown,{ALPHA}",
                    f"sl-a2,streetlight,Brightway,SL-1,1.0.0,Downtown,{ALPHA}",
                    f"cam-b1,camera,Vista,VC-9,2.1,Downtown,{BETA}",
                    f"sl-b2,streetlight,Brightway,SL-1,1.1.0,Downtown,{BETA}")
    assert import_csv(admin, body).status_code == 200
    return City(api, admin)


def test_an_integrator_sees_only_the_devices_it_maintains(fleet: City) -> None:
    with fleet.api.client(fleet.api.token(ALPHA)) as alpha:
        assert device_ids(alpha) == ["sl-a1", "sl-a2"]
        assert alpha.get("/api/v1/devices").json()["total"] == 2
        assert alpha.get("/api/v1/devices/sl-a1").status_code == 200
        assert_problem(alpha.get("/api/v1/devices/cam-b1"), 404)  # no hint that it exists
        exported = alpha.get("/api/v1/devices/export").text
        assert "sl-a1" in exported and "cam-b1" not in exported
        assert alpha.get("/api/v1/devices/summary").json()["devices"] == 2
    with fleet.api.client(fleet.api.token(BETA)) as beta:
        assert device_ids(beta) == ["cam-b1", "sl-b2"]


def test_an_integrator_cannot_import_over_another_integrators_device(fleet: City) -> None:
    with fleet.api.client(fleet.api.token(ALPHA)) as alpha:
        own = import_csv(alpha, csv_text(HEADER, f"sl-a1,streetlight,Acme,AL-100,1.1.0,Downtown,{ALPHA}"))
        assert own.status_code == 200, own.text  # its own device: allowed

        grab = csv_text(HEADER, f"sl-a2,streetlight,Brightway,SL-1,1.1.0,Downtown,{ALPHA}",
                        f"cam-b1,camera,Vista,VC-9,6.6.6,Downtown,{ALPHA}")
        problem = assert_problem(import_csv(alpha, grab), 422)
        assert [(e["row"], e["field"]) for e in problem["errors"]] == [(3, "id")]
        assert "responsibility" in problem["errors"][0]["message"]

        unclaimed = csv_text(HEADER, "new-1,camera,Vista,VC-9,1.0,Downtown,")
        problem = assert_problem(import_csv(alpha, unclaimed), 422)
        assert (problem["errors"][0]["row"], problem["errors"][0]["field"]) == (2, "installer")

    untouched = fleet.admin.get("/api/v1/devices/cam-b1").json()
    assert untouched["firmware_version"] == "2.1"
    assert untouched["responsible"]["maintain"] == BETA
    # All-or-nothing: the good row in the refused file did not land either.
    assert fleet.admin.get("/api/v1/devices/sl-a2").json()["firmware_version"] == "1.0.0"


def test_a_viewer_token_cannot_import(fleet: City) -> None:
    with fleet.api.client(fleet.api.token(ALPHA, "viewer")) as viewer:
        assert device_ids(viewer) == ["sl-a1", "sl-a2"]  # reading is fine
        body = csv_text(HEADER, f"sl-a1,streetlight,Acme,AL-100,9.9.9,Downtown,{ALPHA}")
        assert_problem(import_csv(viewer, body), 403)
    assert fleet.admin.get("/api/v1/devices/sl-a1").json()["firmware_version"] == "1.0.0"


def test_only_the_city_admin_may_create_missing_references(fleet: City) -> None:
    body = csv_text(HEADER, f"sl-a9,streetlight,Acme,AL-100,1.0.0,Uptown,{ALPHA}")
    with fleet.api.client(fleet.api.token(ALPHA)) as alpha:
        assert_problem(import_csv(alpha, body, create_missing="true"), 403)
    report = import_csv(fleet.admin, body, create_missing="true").json()
    assert report["created_zones"] == ["Uptown"]


def test_a_manufacturer_sees_counts_of_its_products_through_relabels(fleet: City) -> None:
    with fleet.api.client(fleet.api.token("Acme", "viewer")) as acme:
        assert_problem(acme.get("/api/v1/devices"), 403)
        assert_problem(acme.get("/api/v1/devices/sl-a1"), 403)
        assert_problem(acme.get("/api/v1/devices/export"), 403)
        summary = acme.get("/api/v1/devices/summary").json()
    rows = {(r["brand"], r["model"], r["firmware_version"]): r["devices"] for r in summary["items"]}
    assert rows == {("Acme", "AL-100", "1.0.0"): 1, ("Brightway", "SL-1", "1.0.0"): 1,
                    ("Brightway", "SL-1", "1.1.0"): 1}
    assert {r["manufacturer"] for r in summary["items"]} == {"Acme"}
    assert summary["devices"] == 3
    with fleet.api.client(fleet.api.token("Vista", "viewer")) as vista:
        assert vista.get("/api/v1/devices/summary").json()["devices"] == 1


def test_zone_duty_extends_an_integrators_scope(fleet: City) -> None:
    make_zone(fleet.admin, "Harbor")
    import_csv(fleet.admin, csv_text(HEADER, "h-1,camera,Vista,VC-9,1.0,Harbor,"))
    with fleet.api.client(fleet.api.token(BETA)) as beta:
        assert "h-1" not in device_ids(beta)
        response = fleet.admin.put("/api/v1/zones/Harbor/duties/maintain", json={"org": BETA})
        assert response.status_code == 200, response.text
        assert device_ids(beta) == ["cam-b1", "h-1", "sl-b2"]
        fleet.admin.put("/api/v1/zones/Harbor/duties/maintain", json={"org": None})
        assert "h-1" not in device_ids(beta)


def test_scope_edges_waivers_decommissioning_and_audits(fleet: City) -> None:
    """The edges README's "Who sees what" decides: a partner's waiver is for one device it holds a
    duty for; only the city decommissions a device; a viewer never starts an audit (it stores a run)."""
    make_org(fleet.admin, "Dist", "distributor")
    supplied = csv_text("id,kind,brand,model,firmware_version,zone,supplier", "d-1,camera,Vista,VC-9,1.0,Downtown,Dist")
    assert import_csv(fleet.admin, supplied).status_code == 200
    soon = (datetime.now(UTC) + timedelta(days=10)).isoformat()

    def waiver(selector: dict[str, str]) -> dict[str, object]:
        return {"rule_id": "CRED-001", "selector": selector, "reason": "replaced soon", "expires_at": soon}

    with fleet.api.client(fleet.api.token(ALPHA)) as alpha:
        assert_problem(alpha.post("/api/v1/waivers", json=waiver({"device": "cam-b1"})), 404)  # Beta's device
        assert_problem(alpha.post("/api/v1/waivers", json=waiver({"zone": "Downtown"})), 403)  # Beta's too
        assert_problem(alpha.post("/api/v1/waivers", json=waiver({"kind": "camera"})), 403)
        own = alpha.post("/api/v1/waivers", json=waiver({"device": "sl-a1"}))
        assert own.status_code == 201, own.text
        assert_problem(alpha.delete("/api/v1/devices/sl-a1"), 403)  # maintaining is not decommissioning
    with fleet.api.client(fleet.api.token("Dist")) as dist:
        assert dist.get("/api/v1/devices/d-1").status_code == 200  # it sees what it supplied
        assert_problem(dist.post("/api/v1/waivers", json=waiver({"device": "d-1"})), 403)
        assert_problem(dist.delete("/api/v1/devices/d-1"), 403)
    assert [w["selector"] for w in fleet.admin.get("/api/v1/waivers").json()] == [{"device": "sl-a1"}]
    assert fleet.admin.get("/api/v1/devices/d-1").status_code == 200
    assert fleet.admin.delete("/api/v1/devices/d-1").status_code == 204  # the city decides

    with fleet.api.client(fleet.api.token(ALPHA, "viewer")) as viewer:
        assert_problem(viewer.post("/api/v1/audits"), 403)
        assert viewer.get("/api/v1/audits").json() == []  # nothing was stored
    with fleet.api.client(fleet.api.token(ALPHA)) as alpha:
        assert alpha.post("/api/v1/audits").status_code == 201
