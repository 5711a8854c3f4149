"""Vulnerability intelligence end to end on both backends: real-world advisories (tests/fixtures/
advisories, sources in its README) imported, validated, normalized and matched to a fleet that
holds the affected products, a relabel of one of them, fixed and not-affected versions."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import socket
import threading
import zipfile
from datetime import date
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import func, select

from cityward.adapters import notify
from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage import vuln_frames
from cityward.adapters.storage.models import (
    AdvisoryEntryRow,
    AdvisoryRow,
    AuditEventRow,
    DeviceRow,
    KevEntryRow,
    VulnMatchRow,
)
from cityward.bootstrap import Platform
from cityward.domain import limits
from cityward.domain.firmware import signed_message
from cityward.domain.organizations import Caller, Role
from cityward.domain.policy.document import parse_policy
from cityward.domain.rollouts import Operation, WaveOptions
from cityward.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from cityward.services import (
    advisories,
    audit,
    auditlog,
    catalog,
    firmware,
    notifications,
    organizations,
    remediation,
    rollouts,
    sboms,
    vendors,
    vulnerabilities,
    zones,
)
from cityward.services.rollouts import RolloutRequest, Target
from tests.conftest import caller_for
from tests.helpers import HEADER, csv_bytes, device, import_csv, webhook_server

FIXTURES = Path(__file__).parent / "fixtures" / "advisories"
BASELINE = Path(__file__).resolve().parent.parent / "policies" / "baseline.yaml"
HIKVISION_CVE = "CVE-2021-36260"
SIEMENS_CVE = "CVE-2019-13939"
PANOS_CVE = "CVE-2024-3400"
DEVICES = {  # id: (brand, model, firmware)
    "CAM-1": ("Hikvision", "DS-2CD2026G2-IU/SL", "V5.5.113 build 210317"),  # affected
    "CAM-2": ("Hikvision", "DS-2CD2026G2-IU/SL", "V5.7.1 build 211009"),  # the fixed version
    "CAM-3": ("Vantage Optics", "VO-2026", "V5.5.113 build 210317"),  # a relabel of the affected model
    "PTZ-1": ("Hikvision", "DS-2DF8425IX(T3)", "V5.5.0 build 200101"),  # before V5.5.800 build 210628
    "PTZ-2": ("Hikvision", "DS-2DF8425IX(T3)", "V5.5.800 build 210628"),  # fixed
    "BAC-1": ("Siemens", "Desigo PXC00-E.D", "V5.0"),  # >= V2.3 < V6.0.327
    "BAC-2": ("Siemens", "Desigo PXC00-E.D", "V2.1"),  # known_not_affected < V2.3
    "BAC-3": ("Siemens", "Desigo PXC00-E.D", "V6.0.327"),  # fixed
    "FW-1": ("Palo Alto Networks", "PAN-OS", "10.2.8"),  # affected (CVE 5 record with `changes`)
    "FW-2": ("Palo Alto Networks", "PAN-OS", "10.2.9-h1"),  # the change to unaffected
}
EXPECTED = {("CAM-1", HIKVISION_CVE), ("CAM-3", HIKVISION_CVE), ("PTZ-1", HIKVISION_CVE), ("BAC-1", SIEMENS_CVE),
            ("FW-1", PANOS_CVE)}


@pytest.fixture
def fleet(platform: Platform, city: Caller) -> Caller:
    organizations.create_org(platform.uow, city, "Alpha", "integrator")
    zones.create_zone(platform.uow, city, "north")
    zones.create_zone(platform.uow, city, "south")
    zones.assign_duty(platform.uow, city, "north", "maintain", "Alpha")
    catalog.save_product(platform.uow, city, {"brand": "Hikvision", "model": "DS-2CD2026G2-IU/SL", "kind": "camera"})
    catalog.save_product(platform.uow, city, {"brand": "Vantage Optics", "model": "VO-2026", "kind": "camera",
                                              "origin_brand": "Hikvision", "origin_model": "DS-2CD2026G2-IU/SL"})
    rows = [{**device(i), "id": d, "brand": b, "model": m, "firmware_version": fw, "kind": "camera",
             "zone": "north" if d.startswith("CAM") else "south", "serial": d, "mac": f"02:00:00:00:00:{i:02x}",
             "protocol": "mqtt"} for i, (d, (b, m, fw)) in enumerate(DEVICES.items(), start=1)]
    import_csv(platform, city, csv_bytes(rows, [*HEADER, "protocol"]))
    return city


def _matches(platform: Platform) -> set[tuple[str, str]]:
    with platform.uow() as uow:
        return set(uow.session.execute(select(DeviceRow.id, VulnMatchRow.cve)  # type: ignore[arg-type]
                                       .join(DeviceRow, vuln_frames.on_device())).all())


def _stored(platform: Platform) -> dict[tuple[str, str], VulnMatchRow]:
    """Each affected (device, CVE) with the stored match of its (product, firmware) class."""
    with platform.uow() as uow:
        return {(d, m.cve): m for d, m in uow.session.execute(
            select(DeviceRow.id, VulnMatchRow).join(DeviceRow, vuln_frames.on_device())).all()}


def _import(platform: Platform, caller: Caller, source: Path | str, **kw: object) -> advisories.ImportReport:
    report = advisories.import_advisories(platform.uow, caller, str(source), **kw)  # type: ignore[arg-type]
    advisories.rematch(platform.uow, caller, report)
    return report


def _counts(platform: Platform) -> tuple[int, int, int]:
    with platform.uow() as uow:
        s = uow.session
        return (s.scalar(select(func.count()).select_from(AdvisoryRow)) or 0,
                s.scalar(select(func.count()).select_from(AdvisoryEntryRow)) or 0,
                s.scalar(select(func.count()).select_from(AuditEventRow)) or 0)


def test_advisories_match_through_origin_ranges_and_precedence(platform: Platform, fleet: Caller,
                                                               tmp_path: Path) -> None:
    report = _import(platform, fleet, FIXTURES / "csaf")
    assert {a["id"] for a in report.imported} >= {"HSRC-202109-01"} and len(report.imported) == 3
    cve_dir = tmp_path / "cve5"
    cve_dir.mkdir()
    shutil.copy(FIXTURES / "cve5" / "CVE-2024-3400.json", cve_dir)
    shutil.copy(FIXTURES / "cve5" / "CVE-2021-36260.json", cve_dir)  # vendor and product "n/a": reported
    report = _import(platform, fleet, cve_dir)
    assert any("no vendor and product" in p.message for p in report.unparsed)
    assert _matches(platform) == EXPECTED
    rows = {d: m for (d, _cve), m in _stored(platform).items()}
    assert rows["CAM-3"].via == "origin" and rows["CAM-1"].via == "product"  # the relabel inherits
    assert rows["CAM-1"].fixed_version == "V5.7.1 build 211009" and rows["CAM-1"].remediation == "vendor_fix"
    assert rows["CAM-1"].cvss == 9.8


def _exploited(platform: Platform, caller: Caller) -> set[str]:
    """Devices the baseline policy's FW-002 (known exploited vulnerability) finds."""
    report = audit.run_audit(platform.uow, caller, parse_policy(BASELINE.read_bytes(), BASELINE.name),
                             BASELINE.read_bytes())
    return {f.device_id for f in report.finding_list() if f.rule_id == "FW-002"}


def test_kev_and_epss_set_priority_and_the_known_exploited_rule(platform: Platform, fleet: Caller) -> None:
    _import(platform, fleet, FIXTURES / "csaf")
    assert _exploited(platform, fleet) == set()  # unknown until the KEV catalog is in
    _import(platform, fleet, FIXTURES / "kev" / "known_exploited_vulnerabilities.json")
    _import(platform, fleet, FIXTURES / "epss" / "epss_scores-excerpt.csv.gz")
    with platform.uow() as uow:
        kev_due = uow.session.scalar(select(KevEntryRow.due_date).where(KevEntryRow.cve == HIKVISION_CVE))
    exposed = {(e.cve, e.product): e for e in vulnerabilities.exposures(platform.uow, fleet)}
    cam = exposed[(HIKVISION_CVE, "Hikvision DS-2CD2026G2-IU/SL")]
    assert cam.kev and cam.label == "critical" and cam.due == kev_due and cam.epss is not None
    bac = exposed[(SIEMENS_CVE, "Siemens Desigo PXC00-E.D")]
    assert not bac.kev and bac.priority < cam.priority and bac.due > date(2026, 1, 1)
    assert _exploited(platform, fleet) == {"CAM-1", "CAM-3", "PTZ-1"}
    assert vulnerabilities.known_exploited_exposure(platform.uow, fleet) == (3, 1)  # the overview's count
    assert vulnerabilities.known_exploited_exposure(platform.uow, caller_for(platform, "Alpha")) == (2, 1)
    items = vulnerabilities.exposures(platform.uow, fleet, kev_only=True)
    assert {(e.cve, e.product) for e in items} >= {(HIKVISION_CVE, "Vantage Optics VO-2026")}
    owners = {e.product: e.organization for e in items}
    assert all(e.kev for e in items) and owners["Vantage Optics VO-2026"] == "Alpha"  # the cameras: Alpha's zone
    assert owners["Hikvision DS-2DF8425IX(T3)"] is None  # nobody maintains the south: shown, not hidden


def test_reimport_is_idempotent_and_a_newer_revision_replaces(platform: Platform, fleet: Caller,
                                                              tmp_path: Path) -> None:
    _import(platform, fleet, FIXTURES / "csaf")
    counts = _counts(platform)
    again = _import(platform, fleet, FIXTURES / "csaf")
    assert len(again.unchanged) == 3 and not again.imported and not again.replaced
    assert _counts(platform)[:2] == counts[:2]
    doc = json.loads((FIXTURES / "csaf" / "hikvision-cve-2021-36260.json").read_text())
    tracking = doc["document"]["tracking"]
    tracking["version"] = "2"
    tracking["current_release_date"] = "2030-01-01T00:00:00.000Z"
    tracking["revision_history"].append({"date": "2030-01-01T00:00:00.000Z", "number": "2",
                                         "summary": "PTZ cameras removed"})
    status = doc["vulnerabilities"][0]["product_status"]
    status["known_affected"] = [p for p in status["known_affected"] if p != "CSAFPID-0005"]
    newer = tmp_path / "hikvision-v2.json"
    newer.write_text(json.dumps(doc))
    report = _import(platform, fleet, newer)
    assert report.replaced and report.replaced[0]["change"]["removed"] >= 1
    assert ("PTZ-1", HIKVISION_CVE) not in _matches(platform)  # re-matched: the PTZ statement is gone
    assert ("CAM-1", HIKVISION_CVE) in _matches(platform)
    older = _import(platform, fleet, FIXTURES / "csaf" / "hikvision-cve-2021-36260.json")
    assert older.older and ("PTZ-1", HIKVISION_CVE) not in _matches(platform)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("case", ["malformed", "schema", "traversal", "bomb", "kev_row", "epss_value", "unknown"])
def test_bad_input_is_refused_by_name_and_nothing_is_stored(platform: Platform, fleet: Caller, tmp_path: Path,
                                                           case: str) -> None:
    good = (FIXTURES / "csaf" / "hikvision-cve-2021-36260.json").read_bytes()
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a-good.json").write_bytes(good)
    expect = ""
    if case == "malformed":
        (folder / "b-broken.json").write_text('{"document": {"csaf_version": "2.0", ')
        expect = "b-broken.json: malformed JSON at line 1"
    elif case == "schema":
        doc = json.loads(good)
        del doc["document"]["title"]
        (folder / "b-invalid.json").write_text(json.dumps(doc))
        expect = "b-invalid.json"
    elif case == "traversal":
        _zip(folder / "b.zip", {"../../etc/evil.json": good})
        expect = "path traversal"
    elif case == "bomb":
        _zip(folder / "b.zip", {"huge.json": b" " * 80_000_000})
        expect = "b.zip:huge.json"
    elif case == "kev_row":
        kev = json.loads((FIXTURES / "kev" / "known_exploited_vulnerabilities.json").read_text())
        kev["vulnerabilities"][2]["dateAdded"] = "last tuesday"
        (folder / "b-kev.json").write_text(json.dumps(kev))
        expect = "row 3, field dateAdded"
    elif case == "epss_value":
        (folder / "b-epss.csv").write_text("#model_version:v2025.03.14,score_date:2026-11-20T00:00:00+0000\n"
                                           "cve,epss,percentile\nCVE-2021-36260,1.7,0.99\n")
        expect = "row 3, field epss"
    else:
        (folder / "b-other.json").write_text('{"hello": "world"}')
        expect = "b-other.json: a JSON document cityward does not recognize"
    before = _counts(platform)
    with pytest.raises(InvalidInput) as caught:
        advisories.import_advisories(platform.uow, fleet, str(folder))
    text = str(caught.value) + " " + " ".join(str(p) for p in caught.value.problems)
    assert expect in text, text
    assert _counts(platform) == before  # nothing stored, not even the good document, nor an audit event
    report = advisories.import_advisories(platform.uow, fleet, str(folder), skip_refused=True)
    assert len(report.refused) == 1 and len(report.imported) + (report.kev or 0) >= 1


def test_long_text_is_stored_cut_with_a_marker_on_every_backend(platform: Platform, fleet: Caller,
                                                                 tmp_path: Path) -> None:
    record = json.loads((FIXTURES / "cve5" / "CVE-2024-3400.json").read_text())
    cna = record["containers"]["cna"]
    cna["title"] = "T" * 5000  # under the 1 MiB refusal limit, over the 500-character column
    cna["affected"][0]["vendor"] = "V" * 300  # String(200): PostgreSQL refused it, SQLite kept it whole
    (tmp_path / "long.json").write_text(json.dumps(record))
    advisories.import_advisories(platform.uow, fleet, str(tmp_path / "long.json"))
    with platform.uow() as uow:
        title = uow.session.scalar(select(AdvisoryRow.title))
        vendors = set(uow.session.scalars(select(AdvisoryEntryRow.vendor)))
    assert title is not None and len(title) == 500 and title.endswith(limits.TRUNCATED)
    assert "V" * (200 - len(limits.TRUNCATED)) + limits.TRUNCATED in vendors
    assert all(len(v) <= 200 for v in vendors if v)


def test_only_city_operators_import(platform: Platform, fleet: Caller) -> None:
    with pytest.raises(PermissionDenied):
        advisories.import_advisories(platform.uow, caller_for(platform, "Alpha", Role.ADMIN), str(FIXTURES / "csaf"))


def test_one_new_advisory_rematches_only_its_cves(platform: Platform, fleet: Caller) -> None:
    _import(platform, fleet, FIXTURES / "csaf")
    summary = vulnerabilities.match(platform.uow, cves={SIEMENS_CVE})
    assert summary.matches == 1 and summary.classes <= 3  # only the Desigo devices were read
    assert _matches(platform) == EXPECTED - {("FW-1", PANOS_CVE)}


def _matched_at(platform: Platform) -> dict[tuple[int, str, str], object]:
    with platform.uow() as uow:
        return {(m.product_id, m.firmware, m.cve): m.matched_at for m in uow.session.scalars(select(VulnMatchRow))}


def test_rematching_writes_only_what_changed_and_due_dates_do_not_slide(platform: Platform, fleet: Caller,
                                                                        tmp_path: Path) -> None:
    _import(platform, fleet, FIXTURES / "csaf")
    first = _matched_at(platform)
    again = vulnerabilities.match(platform.uow)
    assert (again.inserted, again.updated, again.deleted) == (0, 0, 0) and _matched_at(platform) == first
    # KEV is joined when matches are read: importing the catalog re-matches nothing, yet shows at once.
    kev = advisories.import_advisories(platform.uow, fleet,
                                       str(FIXTURES / "kev" / "known_exploited_vulnerabilities.json"))
    assert advisories.rematch(platform.uow, fleet, kev) is None
    assert all(e.kev for e in vulnerabilities.exposures(platform.uow, fleet, cve=HIKVISION_CVE))
    # A newer revision that rescores the CVE changes the stored rows, not when they were first matched.
    doc = json.loads((FIXTURES / "csaf" / "hikvision-cve-2021-36260.json").read_text())
    tracking = doc["document"]["tracking"]
    tracking["version"] = "2"
    tracking["current_release_date"] = "2030-01-01T00:00:00.000Z"
    tracking["revision_history"].append({"date": "2030-01-01T00:00:00.000Z", "number": "2", "summary": "rescored"})
    for score in doc["vulnerabilities"][0]["scores"]:
        score["cvss_v3"].update(baseScore=7.2, baseSeverity="HIGH", privilegesRequired="HIGH",
                                vectorString="CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H")
    newer = tmp_path / "hikvision-v2.json"
    newer.write_text(json.dumps(doc))
    rescored = advisories.rematch(platform.uow, fleet, advisories.import_advisories(platform.uow, fleet, str(newer)))
    hikvision = {k for k in first if k[2] == HIKVISION_CVE}
    assert rescored is not None and hikvision
    assert (rescored.inserted, rescored.updated, rescored.deleted) == (0, len(hikvision), 0)
    assert _matched_at(platform) == first  # affected since the first match: that is when the clock started
    assert {m.cvss for (_d, cve), m in _stored(platform).items() if cve == HIKVISION_CVE} == {7.2}


def test_a_bulk_rewrite_stores_what_row_by_row_stores(platform: Platform, fleet: Caller) -> None:
    """Large differences empty the scope and write it anew (on SQLite with the CVE index rebuilt):
    the same rows, and first-match times kept."""
    _import(platform, fleet, FIXTURES / "csaf")
    first, rows = _matched_at(platform), set(_matches(platform))
    for scope in (None, {HIKVISION_CVE}):
        with platform.uow(write=True) as uow:
            found, _classes = vuln_frames.compute(uow.session, scope, uow.clock())
            outcome = vuln_frames.store(uow.session, found, scope, bulk_from=0)
            uow.commit()
        assert (outcome.inserted, outcome.updated, outcome.deleted) == (0, 0, 0) and outcome.unchanged
        assert _matched_at(platform) == first and _matches(platform) == rows
    assert vulnerabilities.exposures(platform.uow, fleet, cve=SIEMENS_CVE)  # read through the rebuilt index


def test_matches_follow_the_firmware_a_device_runs(platform: Platform, fleet: Caller) -> None:
    """An upgraded device leaves its old firmware's matches at once, without re-matching; a device
    moved onto an affected firmware another device already runs joins its matches."""
    _import(platform, fleet, FIXTURES / "csaf")
    assert ("CAM-1", HIKVISION_CVE) in _matches(platform)
    rows = [{**device(i), "id": d, "brand": b, "model": m, "firmware_version": fw, "kind": "camera",
             "zone": "north" if d.startswith("CAM") else "south", "serial": d, "mac": f"02:00:00:00:00:{i:02x}",
             "protocol": "mqtt"} for i, (d, (b, m, fw)) in enumerate(DEVICES.items(), start=1)]
    rows[0]["firmware_version"] = DEVICES["CAM-2"][2]  # CAM-1 upgraded to the fixed version
    rows[1]["firmware_version"] = DEVICES["CAM-1"][2]  # CAM-2 rolled back onto the affected one
    import_csv(platform, fleet, csv_bytes(rows, [*HEADER, "protocol"]))
    found = _matches(platform)
    assert ("CAM-1", HIKVISION_CVE) not in found and ("CAM-2", HIKVISION_CVE) in found


def test_an_integrator_sees_only_its_devices(platform: Platform, fleet: Caller) -> None:
    _import(platform, fleet, FIXTURES / "csaf")
    alpha = vulnerabilities.exposures(platform.uow, caller_for(platform, "Alpha"))
    assert alpha and all(e.organization == "Alpha" for e in alpha)
    assert {e.cve for e in alpha} == {HIKVISION_CVE}  # the Siemens controllers are not Alpha's


def test_an_archive_of_cve_records(platform: Platform, fleet: Caller, tmp_path: Path) -> None:
    archive = _zip(tmp_path / "records.zip", {f"cves/{p.name}": p.read_bytes()
                                              for p in (FIXTURES / "cve5").glob("*.json")})
    report = _import(platform, fleet, archive)
    assert {a["id"] for a in report.imported} == {p.stem for p in (FIXTURES / "cve5").glob("*.json")}
    assert ("FW-1", PANOS_CVE) in _matches(platform) and ("FW-2", PANOS_CVE) not in _matches(platform)


def test_an_advisory_becomes_one_firmware_rollout_per_product(platform: Platform, fleet: Caller,
                                                              tmp_path: Path) -> None:
    _import(platform, fleet, FIXTURES / "csaf")
    store = tmp_path / "firmware"
    firmware.register_key(platform.uow, fleet, "Hikvision", "hik-1", _pub(KEY))
    for version in ("V5.7.1 build 211009", "V5.5.0 build 190101"):  # the fix, and an older image
        image = f"Hikvision DS-2CD2026G2-IU/SL {version}\n".encode() * 50
        firmware.add_release(platform.uow, fleet, store, brand="Hikvision", model="DS-2CD2026G2-IU/SL",
                             version=version, image=image, signature=_sign("Hikvision", "DS-2CD2026G2-IU/SL",
                                                                           version, image), key_id="hik-1")
    planned = {f.product: f for f in remediation.from_advisory(platform.uow, fleet, "HSRC-202109-01", WaveOptions(
        canary=1, percentages=(100,)), store, create=False)}
    cams = planned["Hikvision DS-2CD2026G2-IU/SL"]
    assert cams.devices == ("CAM-1", "CAM-3") and cams.release_version == "V5.7.1 build 211009"  # CAM-3: relabel
    assert cams.plan is not None and cams.plan.devices == 2 and cams.rollout is None
    ptz = planned["Hikvision DS-2DF8425IX(T3)"]
    assert ptz.release is None and "no firmware V5.5.800 build 210628 or later" in (ptz.problem or "")
    created = remediation.from_advisory(platform.uow, fleet, "HSRC-202109-01", WaveOptions(), store, create=True)
    rid = next(f.rollout for f in created if f.rollout)
    assert rid is not None and rollouts.get(platform.uow, fleet, rid).target["advisory"] == "HSRC-202109-01"
    by_target = rollouts.plan(platform.uow, fleet, RolloutRequest(
        "reboot what the CVE affects", Operation.REBOOT, Target(advisory=SIEMENS_CVE)), store)
    assert [d for w in by_target.waves for d in w] == ["BAC-1"]
    with pytest.raises(NotFound, match="advisory 'NOPE-1' not found"):
        rollouts.plan(platform.uow, fleet, RolloutRequest("x", Operation.REBOOT, Target(advisory="NOPE-1")), store)


KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"hikvision test key").digest())


def _pub(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def _sign(brand: str, model: str, version: str, image: bytes) -> str:
    return base64.b64encode(KEY.sign(signed_message(brand, model, version, hashlib.sha256(image).hexdigest()))).decode()


def _component_record(cve: str, package: str, less_than: str) -> dict[str, object]:
    """A CVE JSON 5 record about an open-source component (its versions as the CNA lists them)."""
    return {"dataType": "CVE_RECORD", "dataVersion": "5.1",
            "cveMetadata": {"cveId": cve, "assignerShortName": "mitre", "state": "PUBLISHED",
                            "datePublished": "2023-01-01T00:00:00Z", "dateUpdated": "2023-01-01T00:00:00Z"},
            "containers": {"cna": {"title": f"{package} flaw", "affected": [{
                "vendor": "n/a", "product": package, "packageURL": f"pkg:generic/{package}",
                "defaultStatus": "unaffected",
                "versions": [{"version": "0", "lessThan": less_than, "status": "affected", "versionType": "custom"}]}],
                "metrics": [{"cvssV3_1": {"version": "3.1", "baseScore": 7.5,
                                          "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"}}]}}}


def test_sbom_components_meet_component_advisories_and_the_sbom_vex(platform: Platform, fleet: Caller,
                                                                    tmp_path: Path) -> None:
    store = tmp_path / "firmware"
    firmware.register_key(platform.uow, fleet, "Hikvision", "hik-1", _pub(KEY))
    version = "V5.7.1 build 211009"  # what CAM-2 runs
    image = b"camera image " * 100
    release = firmware.add_release(platform.uow, fleet, store, brand="Hikvision", model="DS-2CD2026G2-IU/SL",
                                   version=version, image=image, key_id="hik-1",
                                   signature=_sign("Hikvision", "DS-2CD2026G2-IU/SL", version, image))
    records = tmp_path / "records"
    records.mkdir()
    for cve, package, below in (("CVE-2022-48174", "busybox", "1.36.0"), ("CVE-2022-22707", "lighttpd", "1.4.64"),
                                ("CVE-2099-00001", "openssl", "1.0.0")):  # the last one: too old to matter
        (records / f"{cve}.json").write_text(json.dumps(_component_record(cve, package, below)))
    _import(platform, fleet, records)
    assert not {m for m in _matches(platform) if m[1].startswith("CVE-2022")}  # no SBOM yet: no component match
    result = sboms.import_sbom(platform.uow, fleet, FIXTURES / "sbom" / "camera-firmware-1.5.json", release.id)
    assert result.components == 3 and result.vex_not_affected == 1
    assert set(result.cves) == {"CVE-2022-48174", "CVE-2022-22707", "CVE-2099-00001"}
    vulnerabilities.match(platform.uow, cves=set(result.cves))
    found = {m for m in _matches(platform) if m[1] in result.cves}
    # busybox 1.34.1 < 1.36.0 on the image CAM-2 runs; lighttpd cleared by the SBOM's own VEX; openssl too new.
    assert found == {("CAM-2", "CVE-2022-48174")}
    with platform.uow() as uow:
        via = uow.session.scalar(select(VulnMatchRow.via).join(DeviceRow, vuln_frames.on_device())
                                 .where(DeviceRow.id == "CAM-2"))
    assert via == "component"
    with pytest.raises(InvalidInput, match=r"camera\.json"):
        bad = tmp_path / "camera.json"
        bad.write_text('{"bomFormat": "CycloneDX", "specVersion": "1.5", "components": [{"type": "library"}]}')
        sboms.import_sbom(platform.uow, fleet, bad, release.id)
    with pytest.raises(PermissionDenied):
        sboms.import_sbom(platform.uow, caller_for(platform, "Alpha", Role.ADMIN),
                          FIXTURES / "sbom" / "camera-firmware-1.4.xml", release.id)


class _Inbox:
    """A webhook receiver (real socket) and an SMTP server (aiosmtpd) for the notification test."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.mails: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # aiosmtpd handler
        self.mails.append((list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 OK"


def test_maintainers_and_manufacturers_are_notified_once(platform: Platform, fleet: Caller) -> None:
    _import(platform, fleet, FIXTURES / "csaf")
    _import(platform, fleet, FIXTURES / "kev" / "known_exploited_vulnerabilities.csv")
    organizations.create_org(platform.uow, fleet, "Hikvision Digital", "manufacturer", brand="Hikvision")
    box = SecretBox(platform.settings.secret_key_bytes())
    inbox = _Inbox()
    web = webhook_server(inbox.posts)
    smtp = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    smtp.start()
    try:
        url = f"http://127.0.0.1:{web.server_address[1]}/cityward"
        with pytest.raises(PermissionDenied):
            notifications.set_contact(platform.uow, caller_for(platform, "Alpha", Role.OPERATOR), box, "Alpha",
                                      webhook_url=url)
        contact, secret = notifications.set_contact(platform.uow, fleet, box, "Alpha", webhook_url=url,
                                                    email="soc@alpha.example")
        assert secret and contact.has_secret
        notifications.set_contact(platform.uow, fleet, box, "Hikvision Digital", email="psirt@hikvision.example")
        settings = notify.SmtpSettings("127.0.0.1", smtp.port, "cityward@city.example", starttls=False, timeout=5)
        sent = notifications.send(platform.uow, fleet, box, settings, allow_private=True)
        assert {(s.organization, s.channel, s.ok) for s in sent} == {
            ("Alpha", "webhook", True), ("Alpha", "email", True), ("Hikvision Digital", "email", True)}
        headers, body = inbox.posts[0]
        assert notify.verify(secret, headers[notify.SIGNATURE_HEADER], body)
        payload = json.loads(body)
        assert {i["cve"] for i in payload["items"]} == {HIKVISION_CVE} and all(i["kev"] for i in payload["items"])
        assert {i["product"] for i in payload["items"]} == {"Hikvision DS-2CD2026G2-IU/SL", "Vantage Optics VO-2026"}
        maker = next(m for to, m in inbox.mails if to == ["psirt@hikvision.example"]).decode()
        # Its units, by its own model, including the relabel sold under another brand.
        assert "3 deployed Hikvision Digital units" in maker and "2 x DS-2CD2026G2-IU/SL" in maker
        assert secret not in json.dumps([str(e) for e in auditlog.list_events(platform.uow, fleet, limit=1000)])
        again = notifications.send(platform.uow, fleet, box, settings, allow_private=True)
        assert all(s.skipped for s in again) and len(inbox.posts) == 1 and len(inbox.mails) == 2
    finally:
        smtp.stop()
        web.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(folder: Path) -> ThreadingHTTPServer:
    """A CSAF provider's web site: `folder` over HTTP on 127.0.0.1 (a real socket)."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def _provider(root: Path, base: str, *, tamper: bool = False, foreign: bool = False) -> None:
    csaf_dir = root / ".well-known" / "csaf" / "white" / "2021"
    csaf_dir.mkdir(parents=True)
    hik = (FIXTURES / "csaf" / "hikvision-cve-2021-36260.json").read_bytes()
    sie = (FIXTURES / "csaf" / "siemens-style.json").read_bytes()
    (csaf_dir / "hik.json").write_bytes(hik + (b" " if tamper else b""))  # whitespace: still valid JSON
    (csaf_dir / "hik.json.sha256").write_text(f"{hashlib.sha256(hik).hexdigest()}  hik.json\n")
    (csaf_dir / "sie.json").write_bytes(sie)
    (csaf_dir / "sie.json.sha512").write_text(f"{hashlib.sha512(sie).hexdigest()}  sie.json\n")
    (root / ".well-known" / "csaf" / "white" / "index.txt").write_text("2021/hik.json\n")
    elsewhere = "http://localhost:9/evil.json" if foreign else f"{base}/.well-known/csaf/white/2021/sie.json"
    (root / ".well-known" / "csaf" / "feed-tlp-white.json").write_text(json.dumps(
        {"feed": {"id": "white", "title": "TLP:WHITE", "entry": [{"id": "sie", "content": {"src": elsewhere}}]}}))
    (root / ".well-known" / "csaf" / "provider-metadata.json").write_text(json.dumps({
        "canonical_url": f"{base}/.well-known/csaf/provider-metadata.json", "metadata_version": "2.0",
        "role": "csaf_trusted_provider", "list_on_CSAF_aggregators": True, "mirror_on_CSAF_aggregators": True,
        "publisher": {"category": "vendor", "name": "Test provider", "namespace": base},
        "distributions": [{"directory_url": f"{base}/.well-known/csaf/white/"},
                          {"rolie": {"feeds": [{"summary": "white", "tlp_label": "WHITE",
                                                "url": f"{base}/.well-known/csaf/feed-tlp-white.json"}]}}]}))


@pytest.mark.parametrize("case", ["good", "tampered", "foreign"])
def test_a_providers_metadata_brings_its_documents_checked(platform: Platform, fleet: Caller, tmp_path: Path,
                                                          case: str) -> None:
    server = _serve(tmp_path)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        _provider(tmp_path, base, tamper=case == "tampered", foreign=case == "foreign")
        url = f"{base}/.well-known/csaf/provider-metadata.json"
        if case == "good":
            report = _import(platform, fleet, url)
            assert len(report.imported) == 2 and "HSRC-202109-01" in {a["id"] for a in report.imported}
            assert EXPECTED - {("FW-1", PANOS_CVE)} == _matches(platform)
            return
        before = _counts(platform)
        with pytest.raises(InvalidInput) as caught:
            advisories.import_advisories(platform.uow, fleet, url)
        text = " ".join(str(p) for p in caught.value.problems)
        assert ("hik.json: its .sha256 says" if case == "tampered" else "outside the provider's domain") in text
        assert _counts(platform) == before
    finally:
        server.shutdown()


def test_an_image_hash_names_the_firmware_whatever_its_version_text(platform: Platform, fleet: Caller,
                                                                    tmp_path: Path) -> None:
    """A CSAF product identified only by its image's SHA-256 reaches the devices whose true product
    runs the catalog release with that image (the relabel too), and no other version."""
    store = tmp_path / "firmware"
    firmware.register_key(platform.uow, fleet, "Hikvision", "hik-1", _pub(KEY))
    version = DEVICES["CAM-1"][2]
    image = b"the affected camera image " * 64
    firmware.add_release(platform.uow, fleet, store, brand="Hikvision", model="DS-2CD2026G2-IU/SL", version=version,
                         image=image, key_id="hik-1",
                         signature=_sign("Hikvision", "DS-2CD2026G2-IU/SL", version, image))
    doc = json.loads((FIXTURES / "csaf" / "hikvision-cve-2021-36260.json").read_text())
    doc["document"]["tracking"]["id"] = "HSRC-HASH-TEST"
    doc["product_tree"].setdefault("full_product_names", []).append({
        "name": "Hikvision camera firmware image digicap.dav", "product_id": "CSAFPID-IMAGE",
        "product_identification_helper": {"hashes": [{"filename": "digicap.dav", "file_hashes": [
            {"algorithm": "sha256", "value": hashlib.sha256(image).hexdigest().upper()}]}]}})
    doc["vulnerabilities"] = [{"cve": "CVE-2021-36261", "notes": doc["vulnerabilities"][0].get("notes", []),
                               "product_status": {"known_affected": ["CSAFPID-IMAGE"]}}]
    path = tmp_path / "image-hash.json"
    path.write_text(json.dumps(doc))
    _import(platform, fleet, path)
    found = {d for d, cve in _matches(platform) if cve == "CVE-2021-36261"}
    assert found == {"CAM-1", "CAM-3"}  # CAM-2 runs another image of the same model
    assert {m.via for (d, cve), m in _stored(platform).items() if cve == "CVE-2021-36261"} == {"hash"}


def test_statements_naming_no_catalog_product_are_listed_and_an_alias_makes_them_match(
        platform: Platform, fleet: Caller, tmp_path: Path) -> None:
    """Issue 16: a vendor written in a way the catalog does not know matched nothing, silently.
    It is listed with the catalog vendor that has the product; accepting the alias re-matches it,
    audited; removing it undoes that."""
    doc = json.loads((FIXTURES / "csaf" / "hikvision-cve-2021-36260.json").read_text())
    for branch in doc["product_tree"]["branches"]:
        if branch["category"] == "vendor":
            branch["name"] = "HKV Video Corp."
    (tmp_path / "hkv.json").write_text(json.dumps(doc))
    _import(platform, fleet, tmp_path / "hkv.json")
    assert not {d for d, c in _matches(platform) if c == HIKVISION_CVE}
    report = vendors.unmatched(platform.uow, fleet)
    entry = next(u for u in report.unmatched if u.product == "DS-2CD2026G2-IU/SL")
    assert entry.vendor == "HKV Video Corp." and HIKVISION_CVE in entry.cves
    assert "no catalog product is made or labeled by 'HKV Video Corp.'" in entry.reason
    assert any("cityward vendors alias 'HKV Video Corp.' 'Hikvision'" in s for s in entry.suggestions)

    with pytest.raises(InvalidInput):
        vendors.add_alias(platform.uow, fleet, "HKV Video", "HKV Video Corp.")  # the same vendor already
    vendors.add_alias(platform.uow, fleet, "HKV Video Corp.", "Hikvision")
    assert {d for d, c in _matches(platform) if c == HIKVISION_CVE} == {"CAM-1", "CAM-3", "PTZ-1"}
    assert not any(u.product == "DS-2CD2026G2-IU/SL" for u in vendors.unmatched(platform.uow, fleet).unmatched)
    with pytest.raises(Conflict):
        vendors.add_alias(platform.uow, fleet, "hkv video", "Dahua")
    assert ("HKV Video Corp.", "Hikvision", "city") in {
        (a.alias, a.vendor, a.source) for a in vendors.list_aliases(platform.uow, fleet)}
    vendors.remove_alias(platform.uow, fleet, "HKV Video")
    assert not {d for d, c in _matches(platform) if c == HIKVISION_CVE}
    actions = [e.action for e in auditlog.list_events(platform.uow, fleet, limit=100)]
    assert "vendor_alias.added" in actions and "vendor_alias.removed" in actions
    viewer = caller_for(platform, "Alpha")
    with pytest.raises(PermissionDenied):
        vendors.add_alias(platform.uow, viewer, "HKV", "Hikvision")


def test_an_advisory_about_a_platform_affects_the_products_that_declare_it(
        platform: Platform, fleet: Caller, tmp_path: Path) -> None:
    """Issue 16 point 4: a record names the firmware platform ("ALEOS", "AXIS OS"), not the models
    that run it. A catalog product that declares the platform is matched by it, with its firmware
    version read as the platform's; one that does not is not."""
    doc = json.loads((FIXTURES / "csaf" / "hikvision-cve-2021-36260.json").read_text())
    doc["document"]["tracking"]["id"] = "HSRC-PLATFORM-TEST"
    for vuln in doc["vulnerabilities"]:
        vuln["cve"] = "CVE-2021-36299"
    for vendor in doc["product_tree"]["branches"]:  # only the one product, named by its platform
        vendor["branches"] = [p for p in vendor["branches"] if p["name"] == "DS-2CD2026G2-IU/SL"]
        vendor["branches"][0]["name"] = "HikOS"
        kept = {v["product"]["product_id"] for v in vendor["branches"][0]["branches"]}
        for v in vendor["branches"][0]["branches"]:
            v["product"].pop("product_identification_helper", None)  # no CPE naming the model
    doc["product_tree"].pop("product_groups", None)
    for vuln in doc["vulnerabilities"]:
        vuln["product_status"] = {k: [i for i in v if i in kept] for k, v in vuln["product_status"].items()}
        vuln["product_status"] = {k: v for k, v in vuln["product_status"].items() if v}
        for key in ("remediations", "scores", "threats", "flags"):
            vuln.pop(key, None)
    (tmp_path / "platform.json").write_text(json.dumps(doc))
    _import(platform, fleet, tmp_path / "platform.json")
    assert not {d for d, c in _matches(platform) if c == "CVE-2021-36299"}
    assert any(u.product == "HikOS" for u in vendors.unmatched(platform.uow, fleet).unmatched)

    catalog.save_product(platform.uow, fleet, {"brand": "Hikvision", "model": "DS-2CD2026G2-IU/SL",
                                               "platform": "HikOS"})
    vulnerabilities.match(platform.uow)
    # CAM-3 is another brand's relabel of this camera: it runs its origin's platform.
    assert {d for d, c in _matches(platform) if c == "CVE-2021-36299"} == {"CAM-1", "CAM-3"}
    vias = {m.via for (d, cve), m in _stored(platform).items() if d == "CAM-1" and cve == "CVE-2021-36299"}
    assert vias == {"platform"}
    assert not any(u.product == "HikOS" for u in vendors.unmatched(platform.uow, fleet).unmatched)
