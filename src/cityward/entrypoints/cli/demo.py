"""`cityward demo`: the main story on the embedded defaults, told through the user's own paths."""

from __future__ import annotations

import os
import tempfile
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.columns import Columns
from rich.panel import Panel

from cityward.adapters.inventory_files import FileFormat
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.entrypoints.cli.audit import show_report
from cityward.entrypoints.cli.context import _user
from cityward.entrypoints.cli.livecity import LiveCity
from cityward.entrypoints.cli.progress import step
from cityward.entrypoints.cli.remediation import remediate
from cityward.entrypoints.cli.render import err, out, table
from cityward.entrypoints.reports import html
from cityward.errors import Conflict
from cityward.services import (
    advisories,
    catalog,
    inventory,
    organizations,
    setup,
    tokens,
    users,
    vulnerabilities,
    zones,
)
from cityward.services.audit import AuditReport, run_audit, trend
from cityward.services.overview import fleet_overview, live_overview
from cityward.services.policies import policy_to_audit
from cityward.sim.advisories import write_advisories
from cityward.sim.city import DemoCity, generate_city, write_catalog_csv, write_inventory_csv
from cityward.sim.profile import load_profile

FILE_WIDTH = 200  # columns of the demo's output in a file or pipe: its widest table fits unwrapped


def run_demo(platform: Platform, devices: int, *, seed: int, serve: bool, port: int | None,
             live: bool = True) -> None:
    if not out.is_terminal and "COLUMNS" not in os.environ:
        # Rich lays a file out 80 columns wide: tables would fold ids and CVE numbers in two.
        out.width = FILE_WIDTH
    city = generate_city(devices, seed)
    caller = _city_admin(platform, city)
    with step("setting up zones, partners and the product catalog", out):
        n_products = install_city(platform, caller, city)
    with tempfile.TemporaryDirectory(prefix="cityward-demo-") as tmp:
        inventory_file = Path(tmp) / "inventory.csv"
        write_inventory_csv(city, inventory_file, seed)
        with step(f"importing {devices:,} devices from the installers' inventory", out), \
                inventory_file.open("rb") as fh:
            report = inventory.import_devices(platform.uow, caller, fh, "inventory.csv", FileFormat.CSV)
    out.print(f"catalog: {n_products} products · inventory: {report.created:,} new, "
              f"{report.updated:,} updated, {report.unchanged:,} unchanged devices")
    show_overview(platform, caller)
    with tempfile.TemporaryDirectory(prefix="cityward-live-") as work:
        city_live = LiveCity(platform, caller, devices, seed, Path(work)) if live else None
        try:
            if city_live is not None:
                bring_online(platform, caller, city_live, devices)
            assess_vulnerabilities(platform, caller, city, Path(work) / "advisories")
            before = audit_posture(platform, caller)
            if city_live is not None:
                remediate_and_reaudit(platform, caller, city_live, seed, before)
            show_dashboard_sign_in(platform, caller, port, serving=serve)
            if serve:
                issued = tokens.create_token(platform.uow, caller, caller.org_name, "demo session",
                                             "admin", timedelta(days=1))
                out.print(Panel(f"API token for this demo (expires in 1 day):\n{issued.secret}",
                                title="try the API", expand=False))
                settings = platform.settings
                serve_api(platform, settings.api_host, port or settings.api_port,
                          mqtt_url=city_live.url if city_live is not None else None)
        finally:
            if city_live is not None:
                with step("stopping the simulated city", out):
                    city_live.stop()


def bring_online(platform: Platform, caller: Caller, city_live: LiveCity, devices: int) -> None:
    with step("bringing the city's devices online", out) as status:
        city_live.start(status.update)
    with step("devices reporting their state", out, total=city_live.up) as bar:
        city_live.settle(progress=bar.count)
    show_live(platform, caller, city_live.stats())


def assess_vulnerabilities(platform: Platform, caller: Caller, city: DemoCity, folder: Path) -> None:
    """The manufacturers' advisories, the KEV catalog and EPSS scores for the city's products,
    imported and matched through true origin; the most urgent exposure first."""
    out.rule("vulnerability intelligence")
    write_advisories(city.profile or load_profile(), folder)
    with step("importing advisories, KEV and EPSS, and matching the fleet", out):
        report = advisories.import_advisories(platform.uow, caller, str(folder))
        summary = advisories.rematch(platform.uow, caller, report)
    if summary is None:  # the city's advisories were imported before, unchanged
        summary = vulnerabilities.match(platform.uow, caller=caller)
    out.print(f"imported {len(report.imported)} advisories and CVE records, {report.kev or 0} KEV entry, "
              f"{report.epss or 0} EPSS scores: {summary.matches:,} affected (device, CVE) pairs on "
              f"{summary.devices:,} devices, {summary.kev:,} of them known exploited")
    items = vulnerabilities.exposures(platform.uow, caller, limit=8)
    out.print(table("most urgent exposure (what each maintainer must do)", [
        "priority", "CVE", "KEV", "product", "firmware", "devices", "maintainer", "fix"], (
        (f"{e.label} {e.priority:.0f}", e.cve, "yes" if e.kev else "",
         e.product + (" (its ODM's flaw)" if e.via == "origin" else ""), e.firmware, f"{e.devices:,}",
         e.organization or "-", e.fixed_version or "") for e in items)))


def audit_posture(platform: Platform, caller: Caller, *, show: bool = True) -> AuditReport:
    """The policy in force (the baseline at first) over the city: top failing rules, worst zones,
    who has most to do."""
    chosen = policy_to_audit(platform.uow)
    with step(f"auditing the fleet against {chosen.policy.name}", out):
        report = run_audit(platform.uow, caller, chosen.policy, chosen.text, version=chosen.version)
    if show:
        show_report(report, top=8)
    target = Path(f"audit-{report.run_id}.html")
    target.write_text(html.render(report, trend(platform.uow, caller, report.policy), caller.org_name),
                      encoding="utf-8")
    out.print(f"HTML report: {target.resolve()}")
    return report


def remediate_and_reaudit(platform: Platform, caller: Caller, city_live: LiveCity, seed: int,
                          before: AuditReport) -> None:
    """Fix the worst findings in bulk (waves, live progress), let the devices report, audit again."""
    out.rule("remediation in bulk")
    views = remediate(platform, caller, city_live, seed)
    out.print(table("rollouts", ["id", "rollout", "status", "succeeded", "failed", "skipped"], (
        (str(v.id), v.name, v.status, f"{v.counts.get('succeeded', 0):,}", f"{v.counts.get('failed', 0):,}",
         f"{v.skipped:,}") for v in views)))
    with step("waiting for the changed devices to report their new state", out) as bar:
        city_live.settle_changes([v.id for v in views], progress=bar.count)
    after = audit_posture(platform, caller, show=False)
    rules = ("CRED-001", "FW-001", "FW-002")
    count = {r.run_id: {rid: n for rid, _t, _s, n in r.by_rule} for r in (before, after)}
    out.print(table("posture before and after", ["", "before", "after"], [
        ("score", f"{before.score}", f"{after.score}"),
        ("findings", f"{before.findings.height:,}", f"{after.findings.height:,}"),
        *((f"{rule} devices", f"{count[before.run_id].get(rule, 0):,}", f"{count[after.run_id].get(rule, 0):,}")
          for rule in rules),
        ("resolved since the first audit", "", f"{after.resolved.height:,}"),
    ]))


def show_live(platform: Platform, caller: Caller, stats: dict[str, Any]) -> None:
    lv = live_overview(platform.uow, caller)
    out.print(Panel(
        f"online [bold green]{lv.online:,}[/] · offline [bold red]{lv.offline:,}[/] · never reported "
        f"[bold]{lv.never_reported:,}[/] · {stats.get('received', 0):,} messages, "
        f"{sum(stats.get('rejected', {}).values()):,} rejected, {sum(stats.get('dropped', {}).values()):,} dropped",
        title="live devices", expand=False))
    out.print(Columns([
        table("credentials reported", ["state", "devices"], ((k, f"{n:,}") for k, n in lv.credential_states)),
        table("insecure services on", ["service", "devices"], ((k, f"{n:,}") for k, n in lv.insecure_services)),
        table("exposure", ["", "devices"], [
            ("remote access channel", f"{lv.remote_access:,}"), ("certificate expired", f"{lv.cert_expired:,}"),
            ("certificate expires < 30 d", f"{lv.cert_expiring_30d:,}"), ("quarantined", f"{lv.quarantined:,}"),
            *((f"offline: {k}", f"{n:,}") for k, n in lv.offline_reasons)]),
    ]))


def _city_admin(platform: Platform, city: DemoCity) -> Caller:
    if not organizations.is_initialized(platform.uow):
        # No dashboard user here: the demo's own one gets a fresh password at the end of each run.
        inst = setup.initialize(platform.uow, city.name, f"local:{_user()}", admin_user=None)
        platform.settings.secret_key_bytes()
        out.print(Panel(f"first admin token for {inst.city} (shown once):\n{inst.admin_token.secret}",
                        title="cityward initialized", expand=False))
    return organizations.local_operator(platform.uow, _user())


DEMO_USER = "demo"


def show_dashboard_sign_in(platform: Platform, caller: Caller, port: int | None, *, serving: bool) -> None:
    """The demo's last word: where the dashboard is and a sign-in for it. The `demo` user (a city
    admin the demo owns) gets a new generated password on every run, shown this once; users made
    with `cityward users create` are never touched."""
    mine = next((u for u in users.list_users(platform.uow, caller) if u.username == DEMO_USER), None)
    if mine is None:
        issued = users.create_user(platform.uow, caller, DEMO_USER, caller.org_name, "admin")
    elif mine.org == caller.org_name and mine.role == "admin" and not mine.disabled:
        issued = users.set_password(platform.uow, caller, DEMO_USER)
    else:  # someone made a "demo" user of their own: leave it alone
        out.print(f"[yellow]a user called {DEMO_USER!r} exists and is not the demo's city admin: no sign-in "
                  "printed; use `cityward users create` for one of your own[/]")
        return
    settings = platform.settings
    address = f"http://{browser_host(settings.api_host)}:{port or settings.api_port}/"
    where = f"dashboard: {address}" if serving else f"dashboard: run `cityward serve`, then open {address}"
    out.print(Panel(f"{where}\nsign in as [bold]{DEMO_USER}[/] / [bold]{issued.password}[/]  "
                    f"(a new password each run, shown once)", title="see it in the browser", expand=False))


def install_city(platform: Platform, caller: Caller, city: DemoCity) -> int:
    """Zones, partners, zone duties and the product catalog of a simulated city, through the
    same services an operator uses; skips what exists already. Returns the catalog's size."""
    existing_zones = {z.name for z in zones.list_zones(platform.uow, caller)}
    for name, criticality, parent in city.zones:
        if name not in existing_zones:
            zones.create_zone(platform.uow, caller, name, criticality, parent)
    for name, kind, brand in city.orgs:
        with suppress(Conflict):
            organizations.create_org(platform.uow, caller, name, kind, brand=brand)
    current = {z.name: z.responsibilities for z in zones.list_zones(platform.uow, caller)}
    for zone, duty, org in city.zone_duties:
        if current.get(zone, {}).get(duty) != org:
            zones.assign_duty(platform.uow, caller, zone, duty, org)
    with tempfile.TemporaryDirectory(prefix="cityward-catalog-") as tmp:
        catalog_file = Path(tmp) / "catalog.csv"
        write_catalog_csv(city, catalog_file)
        with catalog_file.open("rb") as fh:
            return catalog.import_catalog(platform.uow, caller, fh, "catalog.csv", FileFormat.CSV)


def show_overview(platform: Platform, caller: Caller) -> None:
    ov = fleet_overview(platform.uow, caller)
    out.print(Panel(
        f"[bold]{ov.devices:,}[/] devices · relabeled (OEM/ODM) [bold]{ov.relabeled_share:.0%}[/] · "
        f"unknown origin [bold]{ov.unknown_origin:,}[/] · past end of support "
        f"[bold red]{ov.past_end_of_support:,}[/]",
        title="fleet", expand=False))
    out.print(Columns([
        table("by kind", ["kind", "devices"], ((k, f"{n:,}") for k, n in ov.by_kind)),
        table("by zone", ["zone", "devices"], ((k, f"{n:,}") for k, n in ov.by_zone)),
        table("by true manufacturer", ["manufacturer", "devices"],
              ((k, f"{n:,}") for k, n in ov.by_manufacturer)),
    ]))


def browser_host(host: str) -> str:
    """The host to put in the address printed for a browser: loopback and wildcard binds as
    `localhost` (browsers keep Secure cookies there), IPv6 literals in brackets."""
    if host in ("127.0.0.1", "::1", "0.0.0.0", "::", ""):  # noqa: S104 - compared, not bound
        return "localhost"
    return f"[{host}]" if ":" in host else host


def serve_api(platform: Platform, host: str, port: int, *, executor: bool = True,
              mqtt_url: str | None = None) -> None:
    """The API and the dashboard; with `executor`, started rollouts are carried out in this process
    too (over the broker at `mqtt_url`; None: HTTP devices only)."""
    import uvicorn

    from cityward.entrypoints.api.app import create_app
    from cityward.entrypoints.background import executor_options

    shown = browser_host(host)
    err.print(f"dashboard: http://{shown}:{port}/  ·  API: http://{shown}:{port}/api/v1 (OpenAPI: /docs); "
              f"Ctrl-C stops")
    if executor:
        err.print("rollouts started here are carried out here (the one-machine executor"
                  + (f", devices over {redact_url(mqtt_url)}" if mqtt_url else ", HTTP devices only")
                  + "); `--no-executor` when `cityward worker` processes do the work")
    else:
        err.print("no executor in this process: started rollouts wait for `cityward worker` or `cityward rollout run`")
    options = executor_options(platform.settings, mqtt_url=mqtt_url) if executor else None
    every_h = platform.settings.audit_anchor_every_h
    if every_h:
        err.print(f"the audit log is anchored every {every_h:g} h when it changed, into "
                  f"{platform.settings.audit_anchor_file} (CITYWARD_AUDIT_ANCHOR_EVERY_H=0: never)")
    uvicorn.run(create_app(platform, executor=options, anchor_every_s=every_h * 3600 or None), host=host, port=port,
                log_level="warning")


def redact_url(url: str) -> str:
    """A broker URL fit to print: without its password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=f"{parts.username}:***@{parts.hostname}"
                          + (f":{parts.port}" if parts.port else "")).geturl()
