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


def test_unmatched_statement_is_listed_and_an_alias_accepted_over_the_api_matches_it(
        api: Api, admin: httpx.Client) -> None:
    """Issue 16 point 7: a statement naming the vendor by another name is listed with a suggestion;
    accepting the alias over the API re-matches the fleet and is audited."""
    import json

    _fleet(admin)
    doc = json.loads((FIXTURES / "csaf" / "hikvision-cve-2021-36260.json").read_text())
    for branch in doc["product_tree"]["branches"]:
        if branch["category"] == "vendor":
            branch["name"] = "HKV Video Corp."
    assert _upload(admin, Path("hkv.json"), json.dumps(doc).encode()).status_code == 200
    report = admin.get("/api/v1/advisories/unmatched", params={"advisory": "HSRC-202109-01"})
    assert report.status_code == 200, report.text
    entry = next(u for u in report.json()["unmatched"] if u["product"] == "DS-2CD2026G2-IU/SL")
    assert entry["vendor"] == "HKV Video Corp." and "CVE-2021-36260" in entry["cves"]
    assert any("'Hikvision'" in s for s in entry["suggestions"])
    assert admin.get("/api/v1/advisories/unmatched", params={"advisory": "OTHER"}).json()["unmatched"] == []
    with api.client(api.token("Alpha Integration", "operator")) as alpha:
        assert_problem(alpha.get("/api/v1/advisories/unmatched"), 403)
        assert_problem(alpha.post("/api/v1/vendors/aliases", json={"alias": "HKV", "vendor": "Hikvision"}), 403)

    assert_problem(admin.post("/api/v1/vendors/aliases", json={"alias": " ", "vendor": "Hikvision"}), 422)
    added = admin.post("/api/v1/vendors/aliases", json={"alias": "HKV Video Corp.", "vendor": "Hikvision"})
    assert added.status_code == 201, added.text
    assert_problem(admin.post("/api/v1/vendors/aliases", json={"alias": "HKV Video", "vendor": "Dahua"}), 409)
    vulns = admin.get("/api/v1/vulnerabilities", params={"cve": "CVE-2021-36260"}).json()
    assert sum(v["devices"] for v in vulns) == 2
    assert not any(u["product"] == "DS-2CD2026G2-IU/SL"
                   for u in admin.get("/api/v1/advisories/unmatched").json()["unmatched"])
    events = admin.get("/api/v1/auditlog").json()
    assert "vendor_alias.added" in str(events)
    assert admin.delete("/api/v1/vendors/aliases/HKV Video Corp.").status_code == 204
    assert_problem(admin.delete("/api/v1/vendors/aliases/HKV Video Corp."), 404)
