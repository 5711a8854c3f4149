from __future__ import annotations

import httpx
from api_support import Api, assert_problem, make_org, make_zone
from tests.helpers import announce

from cityward.services import catalog

HELLO = {"v": 1, "device_id": "CAM-9", "kind": "camera", "brand": "Quarrow", "model": "QC-1",
         "firmware_version": "1.0", "serial": "Q9", "at": "2026-11-25T12:00:00Z"}


def test_review_approve_and_reject(api: Api, admin: httpx.Client) -> None:
    make_zone(admin, "Harbor")
    make_org(admin, "Alpha Integration", "integrator")
    catalog.save_product(api.platform.uow, api.city, {"brand": "Quarrow", "model": "QC-1", "kind": "camera"})
    announce(api.platform, HELLO)
    announce(api.platform, {**HELLO, "device_id": "ROGUE-1"})
    pending = admin.get("/api/v1/discovered").json()
    assert sorted(d["device_id"] for d in pending) == ["CAM-9", "ROGUE-1"]

    with api.client(api.token("Alpha Integration", "admin")) as alpha:
        assert_problem(alpha.get("/api/v1/discovered"), 403)  # an unknown device is the city's to see
        assert_problem(alpha.post("/api/v1/discovered/CAM-9/approve", json={"zone": "Harbor"}), 403)
    assert_problem(admin.post("/api/v1/discovered/NOPE/approve", json={"zone": "Harbor"}), 404)
    assert_problem(admin.post("/api/v1/discovered/CAM-9/approve", json={"zone": ""}), 422)
    assert_problem(admin.post("/api/v1/discovered/CAM-9/approve", json={"zone": "Atlantis"}), 422)

    approved = admin.post("/api/v1/discovered/CAM-9/approve", json={"zone": "Harbor"})
    assert approved.status_code == 200, approved.text
    assert (approved.json()["id"], approved.json()["zone"]) == ("CAM-9", "Harbor")
    assert admin.get("/api/v1/devices/CAM-9").status_code == 200
    assert_problem(admin.post("/api/v1/discovered/CAM-9/approve", json={"zone": "Harbor"}), 409)

    rejected = admin.post("/api/v1/discovered/ROGUE-1/reject", json={"reason": "not ours"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert admin.get("/api/v1/discovered").json() == []
    assert {d["device_id"] for d in admin.get("/api/v1/discovered", params={"status": "all"}).json()} == {
        "CAM-9", "ROGUE-1"}
