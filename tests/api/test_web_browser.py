"""The dashboard in a real browser: Debian's Chromium driven by Playwright (no browser download).

Sign in with the keyboard, see the overview, filter the devices, open one with its vulnerabilities,
sign out; a partner's user is refused another partner's device. Screenshots of each page go to
`test-artifacts/` at the repository's root, to be looked at.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import Api, serve, small_rollout
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright
from tests.helpers import HEADER, csv_bytes, device, import_csv

from cityward.services import advisories, organizations, rollouts, users

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "advisories" / "csaf"
# Chromium's own background connections are refused on a closed network: keep it quiet.
FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium and chromium-driver "
                    "(`apt-get install chromium chromium-driver`; .ci/run does)", pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield browser
        browser.close()


def _shot(page: Page, name: str, backend: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}-{backend}.png"), full_page=True)


def _menu(page: Page, name: str) -> None:
    """Follow the main navigation's link (pages link to each other with the same words)."""
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()


def _sign_in(page: Page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_a_city_admin_and_a_partner_in_the_browser(api: Api, chromium: Browser) -> None:
    backend = api.platform.engine.dialect.name
    city = api.city
    for org in ("Alpha", "Beta"):
        organizations.create_org(api.platform.uow, city, org, "integrator")
    rows = [device(i, maintainer="Alpha" if i < 6 else "Beta") for i in range(12)]
    rows += [device(20, id="CAM-1", kind="camera", brand="Hikvision", model="DS-2CD2026G2-IU/SL",
                    firmware_version="V5.5.113 build 210317", maintainer="Alpha"),
             device(21, id="CAM-2", kind="camera", brand="Hikvision", model="DS-2CD2026G2-IU/SL",
                    firmware_version="V5.7.1 build 211009", maintainer="Beta")]
    rows[2]["serial"] = "<script>alert('x')</script>"
    import_csv(api.platform, city, csv_bytes(rows), create_missing=True)
    advisories.rematch(api.platform.uow, city, advisories.import_advisories(api.platform.uow, city, str(FIXTURES)))
    kev = FIXTURES.parent / "kev" / "known_exploited_vulnerabilities.json"
    advisories.import_advisories(api.platform.uow, city, str(kev))  # joined when read: no re-match needed
    admin_password, beta_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    users.create_user(api.platform.uow, city, "mayor", "Springfield", "admin", password=admin_password)
    users.create_user(api.platform.uow, city, "beta.tech", "Beta", "operator", password=beta_password)
    base = api.url.replace("127.0.0.1", "localhost")  # browsers keep Secure cookies on localhost

    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:  # an alert() would mean injected script ran
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)

    # Signing in with the keyboard alone.
    page.goto(f"{base}/devices")
    expect(page).to_have_url(f"{base}/login?next=/devices")
    _shot(page, "sign-in", backend)
    page.get_by_label("Username").focus()
    page.keyboard.type("mayor")
    page.keyboard.press("Tab")
    page.keyboard.type(admin_password)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Devices")).to_be_visible()
    assert any(c["name"] == "cw_session" and c["httpOnly"] and c["secure"] and c["sameSite"] == "Strict"
               for c in context.cookies())

    _menu(page, "Overview")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.get_by_role("img", name="Devices by kind")).to_be_visible()
    expect(page.locator("#kev")).to_have_text("1")  # CAM-1: CVE-2021-36260 is in CISA KEV
    expect(page.get_by_role("region", name="Fleet at a glance")).to_contain_text("14")
    _shot(page, "overview", backend)

    _menu(page, "Devices")
    page.get_by_label("Kind").fill("camera")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#count")).to_have_text("2 devices match.")
    _shot(page, "devices-filtered", backend)
    page.get_by_role("link", name="CAM-1").click()
    expect(page.get_by_role("heading", name="CAM-1")).to_be_visible()
    expect(page.get_by_role("cell", name="CVE-2021-36260")).to_be_visible()
    _shot(page, "device", backend)
    page.goto(f"{base}/devices/SL-00002")
    expect(page.get_by_text("<script>alert('x')</script>")).to_be_visible()  # shown as text, never run
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto(f"{base}/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()  # the session is over

    # A partner: its own devices only; another partner's device does not exist for it.
    _sign_in(page, base, "beta.tech", beta_password)
    expect(page.get_by_role("region", name="Fleet at a glance")).to_contain_text("7")
    page.goto(f"{base}/devices/SL-00001")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    _shot(page, "refused", backend)
    page.goto(f"{base}/devices")
    expect(page.locator("#count")).to_have_text("7 devices match.")
    expect(page.get_by_role("link", name="SL-00001")).to_have_count(0)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert dialogs == []  # no script injected through the data ever ran
    context.close()


def test_a_rollout_page_follows_the_rollout_without_reloading(api: Api, chromium: Browser) -> None:
    backend = api.platform.engine.dialect.name
    rid = small_rollout(api, 3)
    password = secrets.token_urlsafe(16)
    users.create_user(api.platform.uow, api.city, "operator", "Springfield", "operator", password=password)
    base = api.url.replace("127.0.0.1", "localhost")
    context = chromium.new_context()
    page = context.new_page()
    _sign_in(page, base, "operator", password)
    page.goto(f"{base}/rollouts/{rid}")
    expect(page.locator("#state")).to_contain_text("ready")
    page.evaluate("window.notReloaded = true")
    rollouts.start(api.platform.uow, api.city, rid)  # someone else starts it, elsewhere
    expect(page.locator("#state")).to_contain_text("running", timeout=10_000)
    expect(page.get_by_role("button", name="Pause")).to_be_visible()
    assert page.evaluate("window.notReloaded") is True  # updated in place by static/live.js
    _shot(page, "rollout", backend)
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#state")).to_contain_text("paused")
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    context.close()


@pytest.mark.parametrize("platform", ["postgresql"], indirect=True)
def test_start_and_watch_a_rollout_on_the_simulated_city(api: Api, chromium: Browser, tmp_path: Path) -> None:
    """The simulated city's devices over a private Mosquitto: an operator starts a reboot rollout
    from its page and watches its waves finish without reloading, carried out by the server's own
    executor (as `cityward serve` runs it) and nothing else."""
    from tests.rollout_city import live_city

    from cityward.domain.rollouts import Operation, WaveOptions
    from cityward.entrypoints.api.app import create_app
    from cityward.services.rollout_executor import ExecutorOptions

    with live_city(api.platform, api.city, tmp_path, devices=24) as live:
        chosen = tuple(r["id"] for r in live.rows if r["protocol"] == "mqtt"
                       and live.sim.device(r["id"])["fault"] in ("none", None))[:4]
        assert len(chosen) == 4, "the simulated city has too few healthy MQTT devices"
        rollouts.create(api.platform.uow, api.city, rollouts.RolloutRequest(
            "reboot four", Operation.REBOOT, rollouts.Target(device_ids=chosen),
            WaveOptions(canary=1, percentages=(100,), timeout_s=20)), live.store)
        password = secrets.token_urlsafe(16)
        users.create_user(api.platform.uow, api.city, "duty.officer", "Springfield", "operator", password=password)
        app = create_app(api.platform, executor=ExecutorOptions(mqtt_url=live.mqtt_url, firmware_store=live.store,
                                                                tick=0.2, name="browser"))
        with serve(app) as url:
            base = url.replace("127.0.0.1", "localhost")
            context = chromium.new_context()
            try:
                page = context.new_page()
                _sign_in(page, base, "duty.officer", password)
                _menu(page, "Rollouts")
                page.get_by_role("link", name="reboot four").click()
                approve = page.get_by_role("button", name="Approve")
                if approve.count():  # a critical zone: this officer is the second pair of eyes
                    approve.click()
                page.get_by_role("button", name="Start").click()
                page.evaluate("window.notReloaded = true")
                expect(page.locator("#state")).to_contain_text("succeeded", timeout=60_000)
                expect(page.locator("#done")).to_have_text("4 of 4")
                expect(page.locator("#executor-wait")).to_have_count(0)
                assert page.evaluate("window.notReloaded") is True  # followed by static/live.js, not reloads
                _shot(page, "rollout-live", api.platform.engine.dialect.name)
            finally:
                context.close()
        assert not app.state.executor.alive  # it stopped with the server
        for device_id in chosen:  # each device really rebooted, once
            assert sum(live.sim.device(device_id)["applied"].values()) == 1, live.sim.device(device_id)


def test_findings_to_a_rollout_then_an_advisory_and_the_audit_log(api: Api, chromium: Browser) -> None:
    """From the latest audit's findings, two ticked devices become a rollout once its plan was
    seen; an advisory shows who it affects; the audit log's chain is verified from its page."""
    from cityward.services import audit, policies

    backend = api.platform.engine.dialect.name
    rows = [device(i, protocol="mqtt") for i in range(8)]
    rows.append(device(20, id="CAM-1", kind="camera", brand="Hikvision", model="DS-2CD2026G2-IU/SL",
                       firmware_version="V5.5.113 build 210317", protocol="mqtt"))
    import_csv(api.platform, api.city, csv_bytes(rows, [*HEADER, "protocol"]), create_missing=True)
    advisories.rematch(api.platform.uow, api.city,
                       advisories.import_advisories(api.platform.uow, api.city, str(FIXTURES)))
    chosen = policies.policy_to_audit(api.platform.uow)
    audit.run_audit(api.platform.uow, api.city, chosen.policy, chosen.text, version=chosen.version)
    password = secrets.token_urlsafe(16)
    users.create_user(api.platform.uow, api.city, "sec.lead", "Springfield", "admin", password=password)
    base = api.url.replace("127.0.0.1", "localhost")
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        _sign_in(page, base, "sec.lead", password)
        _menu(page, "Findings")
        expect(page.get_by_role("heading", name="By rule")).to_be_visible()
        page.get_by_role("region", name="By rule").get_by_role("link").first.click()
        _shot(page, "findings", backend)
        boxes = page.get_by_role("checkbox")
        first, second = (boxes.nth(i).get_attribute("value") for i in range(2))
        boxes.nth(0).check()
        boxes.nth(1).check()
        page.get_by_label("Operation").select_option("reboot")
        page.get_by_role("button", name="Plan remediation for the selected devices").click()
        expect(page.get_by_role("heading", name="Plan remediation: reboot")).to_be_visible()
        expect(page.locator("main")).to_contain_text(str(first))
        expect(page.locator("main")).to_contain_text(str(second))
        assert rollouts.list_rollouts(api.platform.uow, api.city) == []  # a plan, nothing created yet
        _shot(page, "plan", backend)
        page.get_by_role("button", name="Create the rollout").click()
        expect(page).to_have_url(re.compile(rf"{re.escape(base)}/rollouts/\d+$"))
        expect(page.locator("#done")).to_have_text("0 of 2")

        _menu(page, "Advisories")
        expect(page.get_by_role("heading", name="Advisories")).to_be_visible()
        _shot(page, "advisories", backend)
        page.get_by_role("row").filter(has_text="Hikvision").first.get_by_role("link").first.click()
        expect(page.get_by_role("heading", name="Affected devices by model and firmware (1)")).to_be_visible()
        expect(page.locator("main")).to_contain_text("V5.5.113 build 210317")
        _shot(page, "advisory", backend)

        _menu(page, "Audit log")
        page.get_by_role("button", name="Verify now").click()
        expect(page.get_by_role("status")).to_contain_text("Chain intact")
        expect(page.locator("main")).to_contain_text("rollout.created")
        _shot(page, "audit-log", backend)
    finally:
        context.close()


def test_the_pages_fit_a_tablet(api: Api, chromium: Browser) -> None:
    """At 768 by 1024 pixels no page scrolls sideways (wide tables scroll inside themselves), and the main
    navigation stays reachable."""
    backend = api.platform.engine.dialect.name
    rows = [device(i, serial=f"SERIAL-{'X' * 40}-{i}") for i in range(30)]
    import_csv(api.platform, api.city, csv_bytes(rows), create_missing=True)
    password = secrets.token_urlsafe(16)
    users.create_user(api.platform.uow, api.city, "field.tablet", "Springfield", "operator", password=password)
    base = api.url.replace("127.0.0.1", "localhost")
    context = chromium.new_context(viewport={"width": 768, "height": 1024}, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        _sign_in(page, base, "field.tablet", password)
        for path, name in (("/", "overview"), ("/devices", "devices"), ("/findings", "findings"),
                           ("/advisories", "advisories"), ("/rollouts", "rollouts"), ("/audit-log", "audit-log"),
                           ("/devices/SL-00003", "device")):
            page.goto(f"{base}{path}")
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 768, f"{path} is {wide} px wide on a 768 px tablet"
            expect(page.get_by_role("navigation", name="Main")).to_be_visible()
            if name in ("overview", "devices", "audit-log"):
                _shot(page, f"tablet-{name}", backend)
    finally:
        context.close()


def test_the_api_docs_render_their_operations(api: Api, chromium: Browser) -> None:
    """/docs under the security headers: Swagger UI from this server lists the operations, and
    the browser reports no Content-Security-Policy violation."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.goto(f"{api.url}/docs")
        operations = page.locator(".opblock")
        expect(operations.first).to_be_visible(timeout=30_000)
        expect(page.locator(".opblock-summary-path", has_text="/api/v1/devices").first).to_be_visible()
        assert operations.count() >= 20
        page.locator(".opblock-summary", has_text="/healthz").first.click()  # an operation opens
        expect(page.get_by_role("button", name="Try it out")).to_be_visible()
        blocked = [m for m in console if "Content Security Policy" in m or m.startswith(("error", "pageerror"))]
        assert blocked == [], blocked
        _shot(page, "api-docs", api.platform.engine.dialect.name)
    finally:
        context.close()
