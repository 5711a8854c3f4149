"""Findings and advisories on the dashboard, over a real socket: grouped, filtered and scoped; a
selection becomes a plan shown before anything is stored, and a rollout only once confirmed."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from pathlib import Path

import pytest
from api_support import Api, Browser
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import update
from tests.conftest import caller_for
from tests.helpers import HEADER, csv_bytes, device, import_csv

from cityward.adapters.storage.models import AdvisoryRow
from cityward.domain.firmware import signed_message
from cityward.services import (
    advisories,
    audit,
    catalog,
    firmware,
    organizations,
    policies,
    rollouts,
    users,
    vulnerabilities,
    zones,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "advisories"
CAMERA = ("Hikvision", "DS-2CD2026G2-IU/SL")
FIXED = "V5.7.1 build 211009"
KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"web remediation test key").digest())


def _fleet(api: Api, maintainer: str = "Alpha", devices: int = 6) -> None:
    """Reachable streetlights, three in the north (Alpha maintains them), the others in the south,
    audited by the city with the shipped baseline: each fails ORIG-001 and SEEN-002."""
    zones.create_zone(api.platform.uow, api.city, "north")
    zones.create_zone(api.platform.uow, api.city, "south")
    organizations.create_org(api.platform.uow, api.city, maintainer, "integrator")
    zones.assign_duty(api.platform.uow, api.city, "north", "maintain", maintainer)
    rows = [device(i, zone="north" if i < 3 else "south", protocol="mqtt") for i in range(devices)]
    import_csv(api.platform, api.city, csv_bytes(rows, [*HEADER, "protocol"]), create_missing=True)
    _audit(api, api.city)


def _audit(api: Api, caller: object) -> None:
    chosen = policies.policy_to_audit(api.platform.uow)
    audit.run_audit(api.platform.uow, caller, chosen.policy, chosen.text, version=chosen.version)  # type: ignore[arg-type]


def _user(api: Api, name: str, org: str, role: str) -> str:
    password = secrets.token_urlsafe(16)
    users.create_user(api.platform.uow, api.city, name, org, role, password=password)
    return password


def _listed(html: str) -> list[str]:
    return re.findall(r'href="/devices/(SL-\d+)"', html)


def test_findings_are_grouped_by_rule_filtered_and_shown_as_text(api: Api, browser: Browser, anna: str) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    _fleet(api, maintainer=hostile, devices=60)
    browser.sign_in("anna", anna)
    shown = browser.get("/findings")
    assert shown.status_code == 200 and 'aria-current="page">Findings' in shown.text
    rules = re.findall(r'<a href="/findings\?rule=([A-Z]+-\d+)">.*?</td>\s*<td>([^<]+)</td><td[^>]*>(\w+)</td>\s*'
                       r'<td class="num">(\d+)</td>', shown.text)
    assert rules == [("ORIG-001", "Unknown origin", "medium", "60"), ("SEEN-002", "Never reported", "low", "60")]
    assert "120 findings match" in shown.text
    seen, url = _listed(shown.text), re.search(r'href="([^"]+)" rel="next"', shown.text)
    assert len(seen) == 100 and url  # a page holds 100: the next one continues in (device, rule) order
    rest = browser.get(url.group(1).replace("&amp;", "&")).text
    assert seen + _listed(rest) == [f"SL-{i:05d}" for i in range(60) for _rule in (1, 2)] and 'rel="next"' not in rest
    north = browser.get("/findings", params={"zone": "north", "rule": "SEEN-002"})
    assert north.status_code == 200 and "3 findings match" in north.text
    assert sorted(set(_listed(north.text))) == ["SL-00000", "SL-00001", "SL-00002"]
    mine = browser.get("/findings", params={"org": hostile}).text  # who must act: ORIG-001 is the supplier's
    assert sorted(_listed(mine)) == ["SL-00000", "SL-00001", "SL-00002"] and "3 findings match" in mine
    assert "&lt;img src=x onerror=alert(1)&gt;" in mine and hostile not in mine
    assert "No finding matches" in browser.get("/findings", params={"severity": "critical"}).text
    for name, value in (("severity", "urgent"), ("zone", "<b>atlantis</b>"), ("rule", "NOPE-9"), ("org", "Nobody")):
        refused = browser.get("/findings", params={name: value})
        assert refused.status_code == 400 and f"field {name}:" in refused.text
        assert value.replace("<", "&lt;").replace(">", "&gt;") in refused.text and "<b>" not in refused.text


def test_selected_devices_are_planned_and_created_only_once_confirmed(
        api: Api, browser: Browser, anna: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _fleet(api)
    browser.sign_in("anna", anna)
    listed = browser.get("/findings", params={"rule": "SEEN-002"})
    assert 'action="/findings/plan"' in listed.text and 'value="rule">Plan remediation for every device' in listed.text
    form: dict[str, str | list[str]] = {
        "csrf_token": browser.form_token(listed.text), "device": ["SL-00001", "SL-00004"],
        "operation": "rotate_password", "rule": "SEEN-002", "target": "selected"}
    for path in ("/findings/plan", "/findings/create"):
        assert browser.post(path, {**form, "csrf_token": ""}).status_code == 403
    nothing = browser.post("/findings/plan", {**form, "device": []})
    assert nothing.status_code == 422 and "select at least one device" in nothing.text
    unknown = browser.post("/findings/plan", {**form, "operation": "self_destruct"})
    assert unknown.status_code == 422 and "&#39;self_destruct&#39; is not an operation this page plans" in unknown.text
    no_config = browser.post("/findings/plan", {**form, "operation": "set_config"})
    assert no_config.status_code == 422 and "needs the desired configuration" in no_config.text
    with monkeypatch.context() as patched:
        patched.setattr(rollouts, "MAX_EXPLICIT_DEVICES", 1)
        many = browser.post("/findings/plan", form)
        assert many.status_code == 422 and "2 devices selected: a rollout names at most 1 devices" in many.text

    planned = browser.post("/findings/plan", form)
    assert planned.status_code == 200, planned.text
    assert sorted(_listed(planned.text)) == ["SL-00001", "SL-00004"] and "Create the rollout" in planned.text
    assert "2 selected devices still failing SEEN-002" in planned.text
    assert rollouts.list_rollouts(api.platform.uow, api.city) == []  # a dry run stores nothing
    confirm = {"csrf_token": browser.form_token(planned.text),
               "device": re.findall(r'name="device" value="([^"]+)"', planned.text),
               **dict(re.findall(r'<input type="hidden" name="(operation|rule|target|config|reason|name)" '
                                 r'value="([^"]*)"', planned.text))}
    created = browser.post("/findings/create", confirm)
    assert created.status_code == 303 and created.headers["location"].startswith("/rollouts/")
    [made] = rollouts.list_rollouts(api.platform.uow, api.city)
    assert created.headers["location"] == f"/rollouts/{made.id}" and made.operation == "rotate_password"
    assert made.total == 2 and made.target == {"failing_rule": "SEEN-002", "devices": 2}
    whole = browser.post("/findings/plan", {**form, "device": [], "target": "rule", "operation": "reboot"})
    assert whole.status_code == 200 and "every device failing SEEN-002" in whole.text
    assert sorted(set(_listed(whole.text))) == [f"SL-{i:05d}" for i in range(6) if i not in (1, 4)]
    assert "in rollout" in whole.text  # the two already in the first rollout are skipped, with the reason


def test_partners_and_viewers_see_only_what_they_may_and_act_only_where_they_may(api: Api, browser: Browser) -> None:
    _fleet(api)
    advisory = _cameras(api)
    browser.sign_in("alpha.ops", _user(api, "alpha.ops", "Alpha", "operator"))
    assert "has not run an audit yet" in browser.get("/findings").text  # the city's run is the city's
    _audit(api, caller_for(api.platform, "Alpha"))
    mine = browser.get("/findings")
    assert sorted(set(_listed(mine.text))) == ["SL-00000", "SL-00001", "SL-00002"] and "6 findings match" in mine.text
    forged = browser.post("/findings/plan", {"csrf_token": browser.form_token(mine.text),
                                               "device": ["SL-00001", "SL-00004"], "operation": "reboot"})
    assert forged.status_code == 422 and "not yours to act on" in forged.text and "SL-00004" in forged.text
    assert "Create the rollout" not in forged.text and "SL-00004" not in browser.get("/findings?after=1").text
    theirs = browser.get(f"/advisories/{advisory}").text  # the cameras are in the east: not Alpha's
    assert '<dd id="affected">0</dd>' in theirs and "None of your devices" in theirs and "/plan" not in theirs

    viewer = Browser(api.url)
    try:
        viewer.sign_in("watcher", _user(api, "watcher", "Springfield", "viewer"))
        shown = viewer.get("/findings", params={"rule": "SEEN-002"})
        assert shown.status_code == 200 and "SL-00001" in shown.text
        assert "/findings/plan" not in shown.text and 'type="checkbox"' not in shown.text
        form: dict[str, str | list[str]] = {"csrf_token": viewer.form_token(shown.text), "device": ["SL-00001"],
                                            "operation": "reboot"}
        for path in ("/findings/plan", "/findings/create"):
            refused = viewer.post(path, form)
            assert refused.status_code == 403 and "viewer" in refused.text
        page = viewer.get(f"/advisories/{advisory}")
        assert page.status_code == 200 and "/plan" not in page.text and '<dd id="affected">3</dd>' in page.text
        refused = viewer.post(f"/advisories/{advisory}/plan", {"csrf_token": viewer.form_token(page.text)})
        assert refused.status_code == 403 and "viewer" in refused.text
    finally:
        viewer.http.close()
    assert rollouts.list_rollouts(api.platform.uow, api.city) == []


def _cameras(api: Api) -> int:
    """A Hikvision camera on the affected firmware, its relabel (Vantage Optics), a PTZ camera with
    no fixing image in the catalog and one on the fixed firmware, in the east; the CSAF fixtures and
    KEV imported. Returns the id of the Hikvision advisory."""
    zones.create_zone(api.platform.uow, api.city, "east")
    catalog.save_product(api.platform.uow, api.city, {"brand": CAMERA[0], "model": CAMERA[1], "kind": "camera"})
    catalog.save_product(api.platform.uow, api.city, {"brand": "Vantage Optics", "model": "VO-2026", "kind": "camera",
                                                      "origin_brand": CAMERA[0], "origin_model": CAMERA[1]})
    fleet = {"CAM-1": (*CAMERA, "V5.5.113 build 210317"), "CAM-2": (*CAMERA, FIXED),
             "CAM-3": ("Vantage Optics", "VO-2026", "V5.5.113 build 210317"),
             "PTZ-1": ("Hikvision", "DS-2DF8425IX(T3)", "V5.5.0 build 200101")}
    rows = [{**device(100 + i), "id": d, "brand": b, "model": m, "firmware_version": fw, "kind": "camera",
             "zone": "east", "serial": d, "protocol": "mqtt"} for i, (d, (b, m, fw)) in enumerate(fleet.items())]
    import_csv(api.platform, api.city, csv_bytes(rows, [*HEADER, "protocol"]), create_missing=True)
    for source in (FIXTURES / "csaf", FIXTURES / "kev" / "known_exploited_vulnerabilities.csv"):
        advisories.rematch(api.platform.uow, api.city,
                           advisories.import_advisories(api.platform.uow, api.city, str(source)))
    return next(a.id for a in advisories.list_advisories(api.platform.uow, api.city) if a.doc_id == "HSRC-202109-01")


def _pub() -> str:
    return base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def _publish_fix(api: Api) -> None:
    """The manufacturer's signed image of the fixed version, in the catalog."""
    firmware.register_key(api.platform.uow, api.city, CAMERA[0], "hik-web", _pub())
    image = b"fixed camera firmware\n" * 64
    signature = base64.b64encode(KEY.sign(signed_message(*CAMERA, FIXED, hashlib.sha256(image).hexdigest())))
    firmware.add_release(api.platform.uow, api.city, api.platform.settings.firmware_dir, brand=CAMERA[0],
                         model=CAMERA[1], version=FIXED, image=image, signature=signature.decode(), key_id="hik-web")


def test_advisories_show_priority_and_affected_devices_and_are_remediated_after_a_plan(
        api: Api, browser: Browser, anna: str) -> None:
    advisory = _cameras(api)
    _publish_fix(api)
    browser.sign_in("anna", anna)
    listed = browser.get("/advisories")
    assert listed.status_code == 200 and "3 advisories imported" in listed.text
    row = re.search(rf'<a href="/advisories/{advisory}">HSRC-202109-01</a>.*?</tr>', listed.text, re.S)
    assert row and 'class="label-critical">yes' in row.group(0) and '<td class="num">3</td>' in row.group(0)
    assert "HSRC-202109-01" in browser.get("/advisories", params={"cve": "cve-2021-36260"}).text
    assert "HSRC-202109-01" not in browser.get("/advisories", params={"cve": "CVE-2019-13939"}).text
    assert "HSRC-202109-01" in browser.get("/advisories", params={"kev": "yes"}).text
    bad = browser.get("/advisories", params={"cve": "36260"})
    assert bad.status_code == 400 and "cve:" in bad.text
    assert browser.get("/advisories/999999").status_code == 404

    shown = browser.get(f"/advisories/{advisory}")
    assert shown.status_code == 200 and "CVE-2021-36260" in shown.text and '<dd id="affected">3</dd>' in shown.text
    by_class = re.findall(r"<tr><td>([^<]+)</td>\s*<td>([^<]+?)(?: <span class=\"tag\">(relabel)</span>)?</td>\s*"
                          r"<td>([^<]+)</td><td class=\"num\">(\d+)</td>", shown.text)
    assert sorted(by_class) == [
        ("Hikvision DS-2CD2026G2-IU/SL", "Hikvision DS-2CD2026G2-IU/SL", "", "V5.5.113 build 210317", "1"),
        ("Hikvision DS-2DF8425IX(T3)", "Hikvision DS-2DF8425IX(T3)", "", "V5.5.0 build 200101", "1"),
        ("Vantage Optics VO-2026", "Hikvision DS-2CD2026G2-IU/SL", "relabel", "V5.5.113 build 210317", "1")]
    top = max(e.priority for e in vulnerabilities.exposures(api.platform.uow, api.city, cve="CVE-2021-36260"))
    assert f'<span class="label-critical">critical {top:.0f}</span>' in shown.text  # as exposures has it, per device
    assert "V5.5.800 build 210628, V5.7.1 build 211009" in shown.text  # fixed in, per product line

    token = browser.form_token(shown.text)
    assert f'action="/advisories/{advisory}/plan"' in shown.text
    assert browser.post(f"/advisories/{advisory}/plan", {"csrf_token": "forged"}).status_code == 403
    planned = browser.post(f"/advisories/{advisory}/plan", {"csrf_token": token})
    assert planned.status_code == 200, planned.text
    assert "Hikvision DS-2CD2026G2-IU/SL" in planned.text and f"<td>{FIXED}</td>" in planned.text
    assert "2 devices in 2 waves" in planned.text and "CAM-3" in planned.text  # the relabel is upgraded too
    assert "no firmware V5.5.800 build 210628 or later in the catalog" in planned.text  # the PTZ: no image
    assert rollouts.list_rollouts(api.platform.uow, api.city) == []
    created = browser.post(f"/advisories/{advisory}/create", {"csrf_token": token})
    [made] = rollouts.list_rollouts(api.platform.uow, api.city)
    assert created.status_code == 303 and created.headers["location"] == f"/rollouts/{made.id}"
    assert made.operation == "upgrade_firmware" and made.total == 2
    again = browser.post(f"/advisories/{advisory}/create", {"csrf_token": token})
    assert again.status_code == 422 and "no rollout was created" in again.text
    assert "all 2 matching devices are skipped" in again.text  # already in the first one
    assert len(rollouts.list_rollouts(api.platform.uow, api.city)) == 1

    hostile = "<img src=x onerror=alert(1)>"  # as an attacker would publish it
    with api.platform.uow(write=True) as uow:
        uow.session.execute(update(AdvisoryRow).values(title=hostile, url="javascript:alert(2)"))
        uow.commit()
    for page in (browser.get("/advisories").text, browser.get(f"/advisories/{advisory}").text):
        assert "&lt;img src=x onerror=alert(1)&gt;" in page and hostile not in page
        assert 'href="javascript:' not in page
    assert "javascript:alert(2)" in browser.get(f"/advisories/{advisory}").text  # shown, never a link
