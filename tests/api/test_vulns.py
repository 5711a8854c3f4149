"""Vulnerability intelligence over the API: uploads checked like the CLI's, matches scoped to the
caller, refusals as problems naming the document."""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx
from api_support import Api, assert_problem, csv_text, import_csv, make_org, make_zone

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "advisories"


def _fleet(admin: httpx.Client) -> None:
    make_zone(admin, "Harbor")
    make_zone(admin, "Airport")
    make_org(admin, "Alpha Integration", "integrator")
    admin.put("/api/v1/zones/Harbor/duties/maintain", json={"org": "Alpha Integration"})
    body = csv_text("id,kind,brand,model,firmware_version,zone",
                    "CAM-1,camera,Hikvision,DS-2CD2026G2-IU/SL,V5.5.113 build 210317,Harbor",
                    "CAM-2,camera,Hikvision,DS-2CD2026G2-IU/SL,V5.5.113 build 210317,Airport",
                    "CAM-3,camera,Hikvision,DS-2CD2026G2-IU/SL,V5.7.1 build 211009,Harbor")
    assert import_csv(admin, body, create_missing="true").status_code == 200


def _upload(client: httpx.Client, path: Path, data: bytes | None = None) -> httpx.Response:
    return client.post("/api/v1/advisories/import", params={"name": path.name},
                       content=data if data is not None else path.read_bytes(),
                       headers={"content-type": "application/octet-stream"})


def test_upload_match_and_scoped_lists(api: Api, admin: httpx.Client) -> None:
    _fleet(admin)
    csaf = FIXTURES / "csaf" / "hikvision-cve-2021-36260.json"
    done = _upload(admin, csaf)
    assert done.status_code == 200, done.text
    assert done.json()["imported"][0]["id"] == "HSRC-202109-01" and done.json()["match"]["matches"] == 2
    kev = FIXTURES / "kev" / "known_exploited_vulnerabilities.csv"
    assert _upload(admin, kev, gzip.compress(kev.read_bytes())).json()["kev"] == 5  # gzip is read too
    listed = admin.get("/api/v1/advisories").json()
    assert listed[0]["doc_id"] == "HSRC-202109-01" and listed[0]["devices_affected"] == 2
    assert admin.get(f"/api/v1/advisories/{listed[0]['id']}").json()["cves"] == ["CVE-2021-36260"]
    assert_problem(admin.get("/api/v1/advisories/999999"), 404)
    vulns = admin.get("/api/v1/vulnerabilities", params={"kev": "true"}).json()
    assert sorted((v["organization"] or "", v["devices"], v["label"]) for v in vulns) == [
        ("", 1, "critical"), ("Alpha Integration", 1, "critical")]  # by maintainer; the Airport has none
    with api.client(api.token("Alpha Integration", "operator")) as alpha:
        mine = alpha.get("/api/v1/vulnerabilities").json()
        assert sum(v["devices"] for v in mine) == 1 and mine[0]["organization"] == "Alpha Integration"
        assert_problem(_upload(alpha, csaf), 403)  # partners read, the city imports
        assert_problem(alpha.post("/api/v1/advisories/match"), 403)
    assert admin.post("/api/v1/advisories/match").json()["matches"] == 2


def test_bad_uploads_are_problems_naming_the_document(api: Api, admin: httpx.Client) -> None:
    broken = _upload(admin, Path("broken.json"), b'{"document": ')
    assert "broken.json: malformed JSON at line 1" in str(assert_problem(broken, 422))
    unknown = _upload(admin, Path("other.json"), b'{"hello": "world"}')
    assert "does not recognize" in str(assert_problem(unknown, 422))
    bad_label = admin.get("/api/v1/vulnerabilities", params={"label": "<script>"})
    assert_problem(bad_label, 422)
    assert admin.get("/api/v1/advisories").json() == []
