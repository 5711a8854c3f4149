"""/api/v1/devices over HTTP: import (CSV, JSON, bad rows, partial, caps), list, show, export."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import httpx
import pytest
from api_support import Api, assert_problem, csv_text, device_ids, import_csv, make_org, make_zone, serve_with

HEADER = "id,kind,brand,model,firmware_version,zone"


@pytest.fixture
def zoned(admin: httpx.Client) -> httpx.Client:
    make_zone(admin, "Downtown")
    make_zone(admin, "Harbor")
    return admin


def test_import_csv_creates_then_updates(zoned: httpx.Client) -> None:
    body = csv_text(HEADER, "sl-1,streetlight,Acme,AL-100,1.0.0,Downtown",
                    "cam-1,camera,Vista,VC-9,2.1,Harbor")
    response = import_csv(zoned, body, source="first.csv")
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["created"], report["updated"], report["committed"]) == (2, 0, True)
    assert report["source"] == "first.csv" and len(report["sha256"]) == 64
    assert sorted(report["created_products"]) == ["Acme AL-100", "Vista VC-9"]

    again = import_csv(zoned, csv_text(HEADER, "sl-1,streetlight,Acme,AL-100,1.2.0,Downtown"))
    assert (again.json()["created"], again.json()["updated"]) == (0, 1)
    device = zoned.get("/api/v1/devices/sl-1").json()
    assert device["firmware_version"] == "1.2.0"
    assert device["zone"] == "Downtown" and device["manufacturer"] == "Acme"


def test_import_json_and_format_from_content_type(zoned: httpx.Client) -> None:
    rows = [{"id": "bin-1", "kind": "waste_bin", "brand": "Binco", "model": "B2",
             "firmware_version": "3", "zone": "Harbor", "tags": ["north", "pilot"],
             "latitude": 52.5, "longitude": 13.4}]
    response = zoned.post("/api/v1/devices/import", content=json.dumps(rows),
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1
    record = zoned.get("/api/v1/devices/bin-1").json()["record"]
    assert record["tags"] == ["north", "pilot"] and record["latitude"] == 52.5

    unknown = zoned.post("/api/v1/devices/import", content=b"x",
                         headers={"Content-Type": "application/octet-stream"})
    assert assert_problem(unknown, 422)["errors"][0]["field"] == "format"


def test_bad_rows_are_a_422_naming_row_and_field_and_change_nothing(zoned: httpx.Client) -> None:
    import_csv(zoned, csv_text(HEADER, "keep-1,camera,Vista,VC-9,1.0,Harbor"))
    body = csv_text(HEADER,
                    "keep-1,camera,Vista,VC-9,9.9,Harbor",     # row 2: fine on its own
                    "bad-1,toaster,Vista,VC-9,1.0,Harbor",     # row 3: unknown kind
                    "bad-2,camera,Vista,VC-9,1.0,Atlantis")    # row 4: zone does not exist
    problem = assert_problem(import_csv(zoned, body), 422)
    located = {(e["row"], e["field"]) for e in problem["errors"]}
    assert located == {(3, "kind"), (4, "zone")}
    assert "hint" in problem
    assert device_ids(zoned) == ["keep-1"]
    assert zoned.get("/api/v1/devices/keep-1").json()["firmware_version"] == "1.0"


def test_partial_imports_only_the_good_rows(zoned: httpx.Client) -> None:
    body = csv_text(HEADER, "ok-1,camera,Vista,VC-9,1.0,Harbor",
                    "bad-1,camera,Vista,VC-9,1.0,Atlantis", "ok-2,camera,Vista,VC-9,1.0,Harbor")
    response = import_csv(zoned, body, partial="true")
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["created"], report["rejected_rows"]) == (2, 1)
    assert [(p["row"], p["field"]) for p in report["problems"]] == [(3, "zone")]
    assert device_ids(zoned) == ["ok-1", "ok-2"]


def test_unknown_columns_are_refused_unless_ignored(zoned: httpx.Client) -> None:
    body = csv_text(HEADER + ",colour", "c-1,camera,Vista,VC-9,1.0,Harbor,red")
    problem = assert_problem(import_csv(zoned, body), 422)
    assert [(e["row"], e["field"]) for e in problem["errors"]] == [(1, "colour")]
    report = import_csv(zoned, body, ignore_unknown="true").json()
    assert report["ignored_columns"] == ["colour"] and report["created"] == 1


def test_non_utf8_body_is_422(zoned: httpx.Client) -> None:
    body = csv_text(HEADER) + "cam-1,camera,Caf\xe9,VC-9,1.0,Harbor\n".encode("latin-1")
    problem = assert_problem(import_csv(zoned, body), 422)
    assert "UTF-8" in problem["detail"]
    assert device_ids(zoned) == []


def test_empty_and_garbage_bodies_are_422(zoned: httpx.Client) -> None:
    assert_problem(import_csv(zoned, b""), 422)
    assert_problem(zoned.post("/api/v1/devices/import?format=json", content=b'{"id": 1}'), 422)
    assert_problem(zoned.post("/api/v1/devices/import?format=json", content=b"[{]"), 422)
    assert_problem(zoned.post("/api/v1/devices/import?format=xml", content=b"<a/>"), 422)


def test_an_upload_over_the_cap_is_413_and_imports_nothing(api: Api, zoned: httpx.Client) -> None:
    rows = [f"d-{i:04d},camera,Vista,VC-9,1.0,Harbor" for i in range(100)]
    big = csv_text(HEADER, *rows)
    assert len(big) > 2000
    with serve_with(api.platform, max_upload_bytes=2000) as url, httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {api.admin_token}"}
    ) as small:
        declared = assert_problem(import_csv(small, big), 413)  # refused on Content-Length
        assert declared["title"] == "Payload too large" and "2000" in declared["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for i in range(0, len(big), 500):
                yield big[i:i + 500]

        streamed = small.post("/api/v1/devices/import?format=csv", content=chunks())
        assert "content-length" not in streamed.request.headers
        assert assert_problem(streamed, 413)["title"] == "Payload too large"
        fits = import_csv(small, csv_text(HEADER, *rows[:3]))
        assert fits.status_code == 200, fits.text
    assert device_ids(zoned) == ["d-0000", "d-0001", "d-0002"]


def test_pagination_returns_every_device_exactly_once(zoned: httpx.Client) -> None:
    rows = [f"dev-{i:03d},{'camera' if i % 3 else 'streetlight'},Vista,VC-9,1.0,Harbor"
            for i in range(23)]
    assert import_csv(zoned, csv_text(HEADER, *reversed(rows))).status_code == 200
    every = [f"dev-{i:03d}" for i in range(23)]
    for limit in (1, 5, 23, 100):
        assert device_ids(zoned, limit=limit) == every
    first = zoned.get("/api/v1/devices", params={"limit": 5}).json()
    assert first["total"] == 23 and len(first["items"]) == 5 and first["next_after"] == "dev-004"
    cameras = device_ids(zoned, kind="camera", limit=4)
    assert cameras == [d for i, d in enumerate(every) if i % 3]


def test_filters(zoned: httpx.Client) -> None:
    make_zone(zoned, "Pier 9", parent="Harbor")
    body = csv_text(HEADER + ",tags", "a,camera,Vista,VC-9,1.0,Pier 9,cctv",
                    "b,camera,Vista,VC-9,2.0,Downtown,", "c,streetlight,Acme,AL-1,1.0,Harbor,")
    assert import_csv(zoned, body).status_code == 200
    assert device_ids(zoned, zone="Harbor") == ["a", "c"]  # includes the zones inside
    assert device_ids(zoned, zone="harbor") == device_ids(zoned, zone="HARBOR ") == ["a", "c"]  # any case
    assert device_ids(zoned, firmware="1.0", kind="camera") == ["a"]
    assert device_ids(zoned, tag="cctv") == ["a"]
    assert device_ids(zoned, brand="acme") == ["c"]
    assert device_ids(zoned, never_seen="true", id_prefix="b") == ["b"]
    assert device_ids(zoned, seen_after="2020-01-01T00:00:00Z") == []
    assert_problem(zoned.get("/api/v1/devices", params={"zone": "Atlantis"}), 404)
    assert_problem(zoned.get("/api/v1/devices", params={"seen_after": "yesterday"}), 422)


def test_unknown_device_is_a_404_problem(zoned: httpx.Client) -> None:
    problem = assert_problem(zoned.get("/api/v1/devices/no-such-device"), 404)
    assert problem["instance"] == "/api/v1/devices/no-such-device"
    assert "no-such-device" in problem["detail"]


def test_export_csv_round_trips_through_import(zoned: httpx.Client) -> None:
    zoned.post("/api/v1/orgs", json={"name": "Alpha Integration", "kind": "integrator"})
    header = HEADER + ",serial,mac,address,protocol,latitude,longitude,maintainer,installed_at,tags"
    body = csv_text(
        header,
        'cam-1,camera,Vista,VC-9,2.1,Harbor,=cmd|calc,AA-BB-CC-00-11-22,10.0.0.7:8080,http,'
        '52.52,13.405,Alpha Integration,2023-04-01,cctv;pilot',
        'sl-1,streetlight,"Acme, Inc.",AL-100,1.0.0,Downtown,"S ""7""",,,mqtt,,,,,',
    )
    assert import_csv(zoned, body).status_code == 200
    exported = zoned.get("/api/v1/devices/export", params={"format": "csv"})
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.headers["x-device-count"] == "2"
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["id"] for r in rows] == ["cam-1", "sl-1"]
    assert rows[0]["serial"] == "'=cmd|calc"  # neutralized for spreadsheets...

    report = import_csv(zoned, exported.content).json()
    assert (report["created"], report["updated"], report["unchanged"], report["rejected_rows"]) == (0, 0, 2, 0)
    again = zoned.get("/api/v1/devices/export", params={"format": "csv"})
    assert again.content == exported.content
    device = zoned.get("/api/v1/devices/cam-1").json()
    assert device["serial"] == "=cmd|calc"  # ...and restored on the way back in
    assert device["mac"] == "aa:bb:cc:00:11:22"
    assert device["responsible"]["maintain"] == "Alpha Integration"


def test_export_json_matches_the_device_records(zoned: httpx.Client) -> None:
    import_csv(zoned, csv_text(HEADER, "a,camera,Vista,VC-9,1.0,Harbor",
                               "b,camera,Vista,VC-9,1.0,Downtown"))
    exported = zoned.get("/api/v1/devices/export", params={"format": "json", "zone": "Harbor"})
    assert exported.status_code == 200
    assert exported.json() == [zoned.get("/api/v1/devices/a").json()["record"]]
    reimport = zoned.post("/api/v1/devices/import?format=json", content=exported.content)
    assert (reimport.json()["updated"], reimport.json()["unchanged"]) == (0, 1)
    assert_problem(zoned.get("/api/v1/devices/export", params={"zone": "Atlantis"}), 404)


def test_summary_counts_by_true_manufacturer(zoned: httpx.Client) -> None:
    import_csv(zoned, csv_text(HEADER, "a,camera,Vista,VC-9,1.0,Harbor",
                               "b,camera,Vista,VC-9,1.0,Harbor", "c,camera,Vista,VC-9,2.0,Harbor"))
    summary = zoned.get("/api/v1/devices/summary").json()
    assert summary["devices"] == 3
    assert [(r["model"], r["firmware_version"], r["devices"]) for r in summary["items"]] == [
        ("VC-9", "1.0", 2), ("VC-9", "2.0", 1)]


def test_put_and_delete_one_device(zoned: httpx.Client, api: Api) -> None:
    body = {"kind": "camera", "brand": "Vista", "model": "VC-9", "firmware_version": "2.1",
            "zone": "Harbor", "mac": "AA-BB-CC-DD-EE-01", "tags": ["gate"]}
    created = zoned.put("/api/v1/devices/cam-7", json=body)
    assert created.status_code == 200, created.text
    assert created.json()["mac"] == "aa:bb:cc:dd:ee:01"
    updated = zoned.put("/api/v1/devices/cam-7", json={**{k: body[k] for k in
                        ("kind", "brand", "model", "zone")}, "firmware_version": "2.2"})
    assert updated.json()["firmware_version"] == "2.2" and updated.json()["mac"] == "aa:bb:cc:dd:ee:01"
    bad = zoned.put("/api/v1/devices/cam-8", json={**body, "mac": "aa:bb:cc:dd:ee:01"})
    problem = assert_problem(bad, 422)
    assert problem["errors"][0]["field"] == "mac"
    assert_problem(zoned.put("/api/v1/devices/cam-9", json={**body, "protocol": "coap"}), 422)
    assert_problem(zoned.put("/api/v1/devices/cam-9", json={**body, "colour": "red"}), 422)
    log = zoned.get("/api/v1/auditlog", params={"action": "devices.updated"}).json()
    assert log["items"][0]["before"]["firmware_version"] == "2.1"
    assert zoned.delete("/api/v1/devices/cam-7").status_code == 204
    assert_problem(zoned.get("/api/v1/devices/cam-7"), 404)
    assert_problem(zoned.delete("/api/v1/devices/cam-7"), 404)


def test_put_device_duty(zoned: httpx.Client) -> None:
    make_org(zoned, "Keyholders", "integrator")
    import_csv(zoned, csv_text(HEADER, "sl-1,streetlight,Acme,AL-100,1.0.0,Downtown"))
    changed = zoned.put("/api/v1/devices/sl-1/duties/credentials", json={"org": "Keyholders"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["responsible"]["credentials"] == "Keyholders"
    assert_problem(zoned.put("/api/v1/devices/sl-1/duties/coffee", json={"org": "Keyholders"}), 422)
    assert_problem(zoned.put("/api/v1/devices/nope/duties/maintain", json={"org": None}), 404)
