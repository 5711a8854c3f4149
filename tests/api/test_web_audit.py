"""The audit log page (search, pages, chain verification, scoping, escaping) and a device's history."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta

from api_support import Api, Browser, small_rollout
from sqlalchemy import delete, update

from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import AuditEventRow
from cityward.services import auditanchors, auditlog, inventory, organizations, rollouts, users

_ROW = re.compile(r'<tr id="event-(\d+)">.*?<td class="who">([^<]*)</td><td class="action">([^<]*)</td>', re.S)
_CHANGE = re.compile(r'<td class="action">([^<]*)</td>.*?<td class="before">(.*?)</td><td class="after">(.*?)</td>',
                     re.S)


def _rows(html: str) -> list[tuple[int, str, str]]:
    """(seq, actor, action) of every event row shown."""
    return [(int(seq), actor, action) for seq, actor, action in _ROW.findall(html)]


def _changes(html: str) -> list[tuple[str, str, str]]:
    """(action, before, after) of every event row, the JSON as text."""
    def text(cell: str) -> str:
        return re.sub(r"<[^>]+>", "", cell).replace("&#34;", '"')

    return [(action, text(before), text(after)) for action, before, after in _CHANGE.findall(html)]


def _partner(api: Api, org: str = "Alpha") -> tuple[str, str]:
    organizations.create_org(api.platform.uow, api.city, org, "integrator")
    password = secrets.token_urlsafe(16)
    users.create_user(api.platform.uow, api.city, f"{org.lower()}.tech", org, "operator", password=password)
    return f"{org.lower()}.tech", password


def _filler(api: Api, n: int, target: str = "x", after: object = None) -> None:
    with api.platform.uow(write=True) as uow:
        for i in range(n):
            uow.record(api.city, "test.filler", "thing", target if n == 1 else f"{target}-{i}", after=after)
        uow.commit()


def test_a_city_admin_verifies_the_chain_and_a_changed_event_is_named(api: Api, browser: Browser,
                                                                      anna: str) -> None:
    browser.sign_in("anna", anna)
    shown = browser.get("/audit-log")
    assert shown.status_code == 200 and 'aria-current="page">Audit log' in shown.text
    actions = {action for _seq, _actor, action in _rows(shown.text)}
    assert {"installation.initialized", "users.created", "users.signed_in"} <= actions
    assert "has not been verified" in shown.text and "Chain intact" not in shown.text
    head = auditlog.list_events(api.platform.uow, api.city, limit=1)[0]
    token = browser.form_token(shown.text)
    assert browser.post("/audit-log/verify", {"csrf_token": "forged"}).status_code == 403
    assert auditlog.last_verification(api.platform.uow, api.city) is None  # the forged form did nothing
    done = browser.post("/audit-log/verify", {"csrf_token": token})
    assert done.status_code == 303 and done.headers["location"] == "/audit-log"
    intact = browser.get("/audit-log").text
    assert f"Chain intact:</strong> {head.seq} events verified" in intact and head.hash in intact
    assert "by user:anna" in intact and _rows(intact)[0][2] == "auditlog.verified"  # the walk is itself on record

    with api.platform.uow(write=True) as uow:
        uow.session.execute(update(AuditEventRow).where(AuditEventRow.seq == 2).values(after={"name": "Evil"}))
        uow.commit()
    assert "Chain intact" in browser.get("/audit-log").text  # the last walk's result, until the next one
    assert browser.post("/audit-log/verify", {"csrf_token": token}).status_code == 303
    broken = browser.get("/audit-log").text
    status = broken.split('role="alert"', 1)[1].split("</div>", 1)[0]
    assert "Chain broken at event 2:" in status and "content was changed after it was written" in status
    assert "Chain intact" not in broken and 'href="/audit-log?before=3#event-2"' in status
    good = auditlog.list_events(api.platform.uow, api.city, before_seq=2)[0]
    assert good.hash in status  # the last head that still holds


def test_the_dashboards_verification_checks_the_latest_anchor(api: Api, browser: Browser, anna: str) -> None:
    browser.sign_in("anna", anna)
    token = browser.form_token(browser.get("/audit-log").text)
    assert browser.post("/audit-log/verify", {"csrf_token": token}).status_code == 303
    assert "No signed anchor yet" in browser.get("/audit-log").text
    settings = api.platform.settings
    made = auditanchors.anchor(api.platform.uow, api.city, auditanchors.signing_key(settings.secret_key_bytes()),
                               settings.audit_anchor_file, recipients=[],
                               box=SecretBox(settings.secret_key_bytes())).anchor
    assert browser.post("/audit-log/verify", {"csrf_token": token}).status_code == 303
    assert f"Matches its signed anchor of {made.fields()['at']} (event {made.seq})" in browser.get("/audit-log").text
    with api.platform.engine.begin() as conn:
        conn.execute(delete(AuditEventRow).where(AuditEventRow.seq >= made.seq))
    assert browser.post("/audit-log/verify", {"csrf_token": token}).status_code == 303
    shown = browser.get("/audit-log").text
    status = shown.split('role="alert"', 1)[1].split("</div>", 1)[0]
    assert "fails its anchor" in status and "cut off the tail" in status


def test_searching_by_action_actor_target_and_days_narrows_the_events(api: Api, browser: Browser,
                                                                       anna: str) -> None:
    organizations.create_org(api.platform.uow, api.city, "Alpha", "integrator")
    browser.sign_in("anna", anna)
    everything = _rows(browser.get("/audit-log").text)
    exact = _rows(browser.get("/audit-log", params={"action": "orgs.created"}).text)
    assert [a for _s, _w, a in exact] == ["orgs.created"] and len(everything) > 3
    family = _rows(browser.get("/audit-log", params={"action": "users."}).text)
    assert {a for _s, _w, a in family} == {"users.created", "users.signed_in"}
    assert [r for r in family] == [r for r in everything if r[2].startswith("users.")]
    starred = _rows(browser.get("/audit-log", params={"action": "Users*"}).text)
    assert starred == family
    by_anna = _rows(browser.get("/audit-log", params={"actor": "user:anna"}).text)
    assert by_anna and {w for _s, w, _a in by_anna} == {"user:anna"} and len(by_anna) < len(everything)
    target = browser.get("/audit-log", params={"target": "anna"}).text
    assert {a for _s, _w, a in _rows(target)} == {"users.created", "users.signed_in"}
    today = datetime.now(UTC).date()
    around = {"from": (today - timedelta(days=1)).isoformat(), "to": (today + timedelta(days=1)).isoformat()}
    assert _rows(browser.get("/audit-log", params=around).text) == everything
    later = browser.get("/audit-log", params={"from": (today + timedelta(days=2)).isoformat()})
    assert later.status_code == 200 and _rows(later.text) == [] and "No event matches" in later.text
    earlier = browser.get("/audit-log", params={"to": (today - timedelta(days=1)).isoformat()})
    assert _rows(earlier.text) == []


def test_pages_of_fifty_come_one_after_another_and_keep_the_search(api: Api, browser: Browser, anna: str) -> None:
    _filler(api, 70)
    browser.sign_in("anna", anna)
    newest = auditlog.list_events(api.platform.uow, api.city, limit=1)[0].seq
    seen: list[int] = []
    url: str | None = "/audit-log"
    pages = 0
    while url:
        shown = browser.get(url)
        rows = _rows(shown.text)
        assert len(rows) == (50 if pages == 0 else len(rows)) and ("Newest</a>" in shown.text) == (pages > 0)
        seen += [s for s, _w, _a in rows]
        found = re.search(r'href="([^"]+)" rel="next"', shown.text)
        url = found.group(1).replace("&amp;", "&") if found else None
        pages += 1
    assert seen == list(range(newest, 0, -1)) and pages == 2
    first = browser.get("/audit-log", params={"action": "test.filler"}).text
    older = re.search(r'href="([^"]+)" rel="next"', first)
    assert older and "action=test.filler" in older.group(1)
    rest = _rows(browser.get(older.group(1).replace("&amp;", "&")).text)
    assert len(_rows(first)) == 50 and len(rest) == 20 and {a for _s, _w, a in rest} == {"test.filler"}
    back = re.search(r'href="([^"]+)">Newest</a>', browser.get(older.group(1).replace("&amp;", "&")).text)
    assert back and back.group(1) == "/audit-log?action=test.filler"  # the same search, from the top


def test_bad_search_fields_give_a_400_page_with_the_form_naming_them(api: Api, browser: Browser,
                                                                      anna: str) -> None:
    browser.sign_in("anna", anna)
    bad_day = browser.get("/audit-log", params={"from": "2025-13-01", "action": "users."})
    assert bad_day.status_code == 400 and bad_day.headers["content-type"].startswith("text/html")
    problems = bad_day.text.split('id="problems"', 1)[1].split("</ul>", 1)[0]
    assert "from: &#39;2025-13-01&#39; is not a date" in problems and "to:" not in problems
    assert 'id="f-from" name="from" type="date" value="2025-13-01"' in bad_day.text  # the form, as typed
    assert 'value="users."' in bad_day.text and "Traceback" not in bad_day.text and _rows(bad_day.text) == []
    backwards = browser.get("/audit-log", params={"from": "2025-03-02", "to": "2025-03-01"})
    assert backwards.status_code == 400 and "to: 2025-03-01 is before the first day" in backwards.text
    for name, value in (("before", "abc"), ("before", "0"), ("before", "²"), ("action", "rollout created"),
                        ("actor", "a\x01b")):
        refused = browser.get("/audit-log", params={name: value})
        assert refused.status_code == 400 and f"<li>{name}: " in refused.text, (name, value)
    too_long = browser.get("/audit-log", params={"target": "x" * 201})
    assert too_long.status_code == 422 and too_long.headers["content-type"].startswith("text/html")


def test_a_partner_sees_only_its_own_events_and_no_verification(api: Api, browser: Browser) -> None:
    username, password = _partner(api)
    browser.sign_in(username, password)
    shown = browser.get("/audit-log")
    rows = _rows(shown.text)
    assert rows and {w for _s, w, _a in rows} == {"user:alpha.tech"}  # its own sign-in, not the city's work
    assert "orgs.created" not in shown.text and "users.created" not in shown.text
    assert "for the city's administrators" in shown.text and "Verify now" not in shown.text
    refused = browser.post("/audit-log/verify", {"csrf_token": browser.form_token(shown.text)})
    assert refused.status_code == 403 and "administrator" in refused.text
    assert auditlog.list_events(api.platform.uow, api.city, action=auditlog.VERIFIED) == []


def test_markup_and_secrets_in_events_are_never_rendered(api: Api, browser: Browser, anna: str) -> None:
    _filler(api, 1, target="<script>alert(1)</script>",
            after={"note": "<img src=x onerror=alert(2)>", "password": "hunter2-hunter2",
                   "nested": [{"api_token": "cw_abcdefgh12345678_" + "s" * 30}], "secret_rotated": True})
    browser.sign_in("anna", anna)
    shown = browser.get("/audit-log", params={"target": "<script>alert(1)</script>"})
    assert shown.status_code == 200 and [a for _s, _w, a in _rows(shown.text)] == ["test.filler"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text and "<script>alert" not in shown.text
    assert "&lt;img src=x onerror=alert(2)&gt;" in shown.text and "<img src=x" not in shown.text
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in shown.text  # the search box, as typed
    assert "hunter2" not in shown.text and "sssssssss" not in shown.text and "&lt;redacted&gt;" in shown.text
    assert "&#34;secret_rotated&#34;: true" in shown.text  # a flag about a secret is no secret


def test_a_device_page_shows_its_operations_and_the_events_about_it(api: Api, browser: Browser,
                                                                     anna: str) -> None:
    username, password = _partner(api)
    rid = small_rollout(api, 3)
    inventory.assign_device_duty(api.platform.uow, api.city, "SL-00001", "maintain", "Alpha")
    browser.sign_in("anna", anna)
    one = browser.get("/devices/SL-00001")
    history = one.text.split('id="history-title"', 1)[1]
    assert one.status_code == 200 and f'<a href="/rollouts/{rid}">reboot the north</a>' in history
    assert "<td>reboot</td><td>pending</td>" in history
    assert [a for _s, _w, a in _rows(history)] == ["devices.duty_assigned"] and "Alpha" in history
    other = browser.get("/devices/SL-00002").text.split('id="history-title"', 1)[1]
    assert f'href="/rollouts/{rid}"' in other and _rows(other) == [] and "No audit event names this device" in other
    snapshot = {"id": "SL-00003", "kind": "streetlight", "zone": "north", "brand": "Lumo", "model": "L100",
                "serial": "S3", "firmware_version": "1.2.3"}
    with api.platform.uow(write=True) as uow:
        uow.record(api.city, "devices.updated", "device", "SL-00003", before=snapshot,
                   after={**snapshot, "firmware_version": "1.3.0"})
        uow.commit()
    edited = _changes(browser.get("/devices/SL-00003").text)
    assert edited == [("devices.updated", '{"firmware_version": "1.2.3"}', '{"firmware_version": "1.3.0"}')]
    rollouts.abort(api.platform.uow, api.city, rid)
    aborted = browser.get("/devices/SL-00001").text
    assert "<td>cancelled</td>" in aborted and "rollout aborted" in aborted
    partner = Browser(api.url)
    try:
        partner.sign_in(username, password)
        theirs = partner.get("/devices/SL-00001")  # Alpha maintains it, but neither ran the rollout nor the duty
        assert theirs.status_code == 200 and "reboot the north" not in theirs.text
        assert "No rollout has included this device" in theirs.text and _rows(theirs.text) == []
    finally:
        partner.http.close()
