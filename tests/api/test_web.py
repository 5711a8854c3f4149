"""The dashboard over a real socket: sign-in with CSRF, secure cookies, scoping, escaping, errors."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from api_support import Api, Browser, small_rollout
from tests.helpers import csv_bytes, device, import_csv

from cityward.domain import users as rules
from cityward.services import advisories, organizations, rollouts, users


def test_sign_in_sets_a_strict_session_cookie_and_shows_the_overview(api: Api, browser: Browser, anna: str) -> None:
    import_csv(api.platform, api.city, csv_bytes(device(i) for i in range(7)), create_missing=True)
    assert browser.get("/").status_code == 303  # not signed in: to the sign-in page
    signed = browser.sign_in("anna", anna)
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    session = next(c for c in browser.set_cookie if c.startswith("cw_session="))
    assert all(flag in session.lower() for flag in ("secure", "httponly", "samesite=strict", "path=/"))
    home = browser.get("/")
    assert home.status_code == 200 and "Overview" in home.text and ">7</span> devices" in home.text
    assert "default-src 'self'" in home.headers["content-security-policy"]
    assert home.headers["x-frame-options"] == "DENY" and home.headers["cache-control"] == "no-store"
    assert anna not in home.text and "cw_" not in home.text  # no secret is ever rendered
    css = browser.get("/static/cityward.css")
    assert css.status_code == 200 and "--accent" in css.text


def test_forms_without_the_right_csrf_token_are_refused(api: Api, browser: Browser, anna: str) -> None:
    stolen = browser.post("/login", {"username": "anna", "password": anna, "csrf_token": "guessed"})
    assert stolen.status_code == 403 and "sign in again" in stolen.text and "cw_session" not in browser.cookies
    browser.sign_in("anna", anna)
    assert browser.post("/logout", {"csrf_token": "not-this-one"}).status_code == 403
    assert browser.get("/").status_code == 200  # still signed in: the forged form did nothing
    token = browser.form_token(browser.get("/").text)
    out = browser.post("/logout", {"csrf_token": token})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert browser.get("/").status_code == 303


def test_wrong_passwords_lock_the_account_with_one_message(api: Api, browser: Browser, anna: str) -> None:
    texts = set()
    for _ in range(rules.FAILURES_BEFORE_LOCK):
        failed = browser.sign_in("anna", anna + "!")
        assert failed.status_code == 401
        texts.add(re.search(r'role="alert">([^<]+)<', failed.text).group(1))  # type: ignore[union-attr]
    locked = browser.sign_in("anna", anna)
    assert locked.status_code == 401 and "cw_session" not in browser.cookies
    unknown = browser.sign_in("nobody", anna)
    assert unknown.status_code == 401
    assert len(texts) == 1 and next(iter(texts)) in locked.text and next(iter(texts)) in unknown.text


def test_after_sign_in_only_this_site_is_a_destination(api: Api, browser: Browser, anna: str) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        assert browser.sign_in("anna", anna, target).headers["location"] == "/"
        browser.cookies.pop("cw_session", None)
    assert browser.sign_in("anna", anna, "/static/cityward.css").headers["location"] == "/static/cityward.css"


def test_what_a_user_typed_is_shown_as_text(api: Api, browser: Browser) -> None:
    page = browser.sign_in("<script>alert(1)</script>", "whatever-it-is-123")
    assert page.status_code == 401 and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>alert(1)" not in page.text


def test_a_partner_sees_only_its_own_devices(api: Api, browser: Browser) -> None:
    organizations.create_org(api.platform.uow, api.city, "Alpha", "integrator")
    import_csv(api.platform, api.city, csv_bytes(
        [device(i, maintainer="Alpha" if i < 2 else "") for i in range(6)]), create_missing=True)
    password = secrets.token_urlsafe(16)
    users.create_user(api.platform.uow, api.city, "alpha.tech", "Alpha", "operator", password=password)
    browser.sign_in("alpha.tech", password)
    home = browser.get("/")
    assert ">2</span> devices" in home.text and "Alpha" in home.text


def test_errors_are_pages_for_browsers_and_problems_for_the_api(api: Api, browser: Browser, anna: str) -> None:
    browser.sign_in("anna", anna)
    missing = browser.get("/no-such-page")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "Back to the overview" in missing.text and "Traceback" not in missing.text
    with api.client(api.admin_token) as client:
        problem = client.get("/api/v1/no-such-thing")
    assert problem.status_code == 404 and problem.headers["content-type"] == "application/problem+json"
    oversized = browser.post("/login", {"username": "anna", "password": "x" * 5000, "csrf_token": "t"})
    assert oversized.status_code == 422 and oversized.headers["content-type"].startswith("text/html")


def test_filter_devices_open_one_and_see_its_vulnerabilities(api: Api, browser: Browser, anna: str) -> None:
    rows = [device(i, kind="camera" if i % 2 else "streetlight") for i in range(9)]
    rows[3]["serial"] = "<script>alert('serial')</script>"
    import_csv(api.platform, api.city, csv_bytes(rows), create_missing=True)
    browser.sign_in("anna", anna)
    cameras = browser.get("/devices?kind=camera")
    assert cameras.status_code == 200 and "4 devices match" in cameras.text
    assert "SL-00001" in cameras.text and "SL-00002" not in cameras.text
    first = browser.get("/devices", params={"online": "never"})
    assert "9 devices match" in first.text
    one = browser.get("/devices/SL-00003")
    assert one.status_code == 200 and "Lumo L100" in one.text and "No matched vulnerability" in one.text
    assert "&lt;script&gt;alert(&#39;serial&#39;)&lt;/script&gt;" in one.text and "<script>alert" not in one.text
    assert "9 devices match" in browser.get("/devices?zone=DOWNTOWN").text  # the zone "downtown", any case
    missing = browser.get("/devices?zone=atlantis")
    assert missing.status_code == 400 and "atlantis" in missing.text and "does not exist" in missing.text
    assert browser.get("/devices?online=maybe").status_code == 422
    assert browser.get("/devices/NOPE-1").status_code == 404


def test_pages_come_one_after_another(api: Api, browser: Browser, anna: str) -> None:
    import_csv(api.platform, api.city, csv_bytes(device(i) for i in range(120)), create_missing=True)
    browser.sign_in("anna", anna)
    seen: list[str] = []
    url: str | None = "/devices"
    while url:
        shown = browser.get(url)
        seen += re.findall(r'href="/devices/(SL-\d+)"', shown.text)
        found = re.search(r'href="([^"]+)" rel="next"', shown.text)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 120


def test_a_partner_cannot_open_another_partners_device(api: Api, browser: Browser) -> None:
    for org in ("Alpha", "Beta"):
        organizations.create_org(api.platform.uow, api.city, org, "integrator")
    import_csv(api.platform, api.city, csv_bytes(
        [device(i, maintainer="Alpha" if i < 3 else "Beta") for i in range(6)]), create_missing=True)
    password = secrets.token_urlsafe(16)
    users.create_user(api.platform.uow, api.city, "beta.tech", "Beta", "operator", password=password)
    browser.sign_in("beta.tech", password)
    assert browser.get("/devices/SL-00004").status_code == 200
    refused = browser.get("/devices/SL-00001")  # Alpha's: as if it did not exist
    assert refused.status_code == 404 and "SL-00001" in refused.text and "Lumo" not in refused.text
    listed = browser.get("/devices").text
    assert "SL-00001" not in listed and "3 devices match" in listed


def test_a_device_page_lists_the_cves_its_firmware_has(api: Api, browser: Browser, anna: str) -> None:
    rows = [device(1, id="CAM-1", kind="camera", brand="Hikvision", model="DS-2CD2026G2-IU/SL",
                   firmware_version="V5.5.113 build 210317"),
            device(2, id="CAM-2", kind="camera", brand="Hikvision", model="DS-2CD2026G2-IU/SL",
                   firmware_version="V5.7.1 build 211009")]
    import_csv(api.platform, api.city, csv_bytes(rows), create_missing=True)
    fixtures = Path(__file__).resolve().parent.parent / "fixtures" / "advisories" / "csaf"
    advisories.rematch(api.platform.uow, api.city, advisories.import_advisories(api.platform.uow, api.city,
                                                                                 str(fixtures)))
    browser.sign_in("anna", anna)
    affected = browser.get("/devices/CAM-1").text
    assert "CVE-2021-36260" in affected and "HSRC-202109-01" in affected and "V5.7.1 build 211009" in affected
    assert "No matched vulnerability" in browser.get("/devices/CAM-2").text  # the fixed firmware


def test_a_rollout_page_updates_itself_and_its_controls_follow_the_role(api: Api, browser: Browser,
                                                                          anna: str) -> None:
    rid = small_rollout(api, 5)
    browser.sign_in("anna", anna)
    shown = browser.get(f"/rollouts/{rid}")
    assert shown.status_code == 200 and "reboot the north" in shown.text and 'data-refresh="/rollouts/' in shown.text
    assert "0 of 5" in shown.text and ">Start</button>" in shown.text
    token = browser.form_token(shown.text)
    assert browser.post(f"/rollouts/{rid}/start", {"csrf_token": "forged"}).status_code == 403
    assert browser.post(f"/rollouts/{rid}/start", {"csrf_token": token}).status_code == 303
    progress = browser.get(f"/rollouts/{rid}/progress")
    assert "<strong>running</strong>" in progress.text and ">Pause</button>" in progress.text
    assert "<html" not in progress.text  # a fragment, swapped in by static/live.js
    again = browser.post(f"/rollouts/{rid}/start", {"csrf_token": token})
    assert again.status_code == 409 and "cannot be started" in again.text
    assert browser.post(f"/rollouts/{rid}/explode", {"csrf_token": token}).status_code == 409
    assert browser.get("/static/live.js").status_code == 200
    assert "reboot the north" in browser.get("/rollouts").text


def test_viewers_are_offered_no_controls_and_refused_them(api: Api, browser: Browser) -> None:
    rid = small_rollout(api, 5)
    password = secrets.token_urlsafe(16)
    users.create_user(api.platform.uow, api.city, "watcher", "Springfield", "viewer", password=password)
    browser.sign_in("watcher", password)
    shown = browser.get(f"/rollouts/{rid}")
    assert shown.status_code == 200 and "<button type=\"submit\"" not in shown.text.split("Sign out")[1]
    refused = browser.post(f"/rollouts/{rid}/start", {"csrf_token": browser.form_token(shown.text)})
    assert refused.status_code == 403 and "viewer" in refused.text


def test_partners_acknowledge_the_policy_from_the_overview(api: Api, browser: Browser, anna: str) -> None:
    from cityward.services import policies

    for org in ("Alpha", "Beta"):
        organizations.create_org(api.platform.uow, api.city, org, "integrator")
    policies.publish(api.platform.uow, api.city, policies.baseline_path().read_bytes(), "baseline.yaml")
    password = secrets.token_urlsafe(16)
    users.create_user(api.platform.uow, api.city, "alpha.lead", "Alpha", "operator", password=password)
    partner = Browser(api.url)
    partner.sign_in("alpha.lead", password)
    home = partner.get("/").text
    assert "Acknowledge version 1 for Alpha" in home and "Beta" not in home  # its own status only
    assert partner.post("/policy/acknowledge", {"version": "1", "csrf_token": "forged"}).status_code == 403
    done = partner.post("/policy/acknowledge", {"version": "1", "csrf_token": partner.form_token(home)})
    assert done.status_code == 303
    again = partner.get("/").text
    assert "Acknowledge version" not in again and "by user:alpha.lead" in again
    partner.http.close()

    browser.sign_in("anna", anna)
    city_view = browser.get("/").text
    assert "1 of 2 partners acknowledged it" in city_view and "1 have not" in city_view
    assert city_view.index("Beta") < city_view.index("Alpha")  # who has not acknowledged comes first
    assert "Fleet counts as of" in city_view


def test_devices_failing_a_rule_in_the_latest_audit(api: Api, browser: Browser, anna: str) -> None:
    from datetime import UTC, datetime

    from cityward.adapters.storage.models import DeviceStateRow
    from cityward.domain.policy.document import parse_policy
    from cityward.services import audit, policies

    import_csv(api.platform, api.city, csv_bytes(device(i) for i in range(5)), create_missing=True)
    browser.sign_in("anna", anna)
    refused = browser.get("/devices?failing_rule=CRED-001")
    assert refused.status_code == 400 and "no audit has been run yet" in refused.text
    now = datetime.now(UTC)
    with api.platform.uow(write=True) as uow:
        uow.session.add(DeviceStateRow(device_id="SL-00003", online=True, status_at=now, last_seen=now,
                                       transport="mqtt", credential_state="default"))
        uow.commit()
    text = policies.baseline_path().read_bytes()
    audit.run_audit(api.platform.uow, api.city, parse_policy(text, "baseline.yaml"), text)
    failing = browser.get("/devices?failing_rule=CRED-001").text
    assert "1 devices match" in failing and "SL-00003" in failing and "SL-00001" not in failing


def test_a_finished_rollout_offers_no_controls_and_refuses_them_naming_its_state(api: Api, browser: Browser,
                                                                                 anna: str) -> None:
    from tests.rollout_support import finish_rollout

    rid = small_rollout(api, 2)
    rollouts.start(api.platform.uow, api.city, rid)
    finish_rollout(api.platform, rid, Path(api.platform.settings.firmware_dir))
    browser.sign_in("anna", anna)
    shown = browser.get(f"/rollouts/{rid}")
    assert "<strong>succeeded</strong>" in shown.text
    assert '<button type="submit"' not in shown.text.split("Sign out")[1]
    for verb, past in (("abort", "aborted"), ("pause", "paused"), ("resume", "resumed")):
        refused = browser.post(f"/rollouts/{rid}/{verb}", {"csrf_token": browser.form_token(shown.text)})
        assert refused.status_code == 409 and f"is succeeded: it cannot be {past}" in refused.text, refused.text
    assert rollouts.get(api.platform.uow, api.city, rid).status == "succeeded"
