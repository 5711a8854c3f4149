"""`cityward demo`: the main story on the embedded defaults, told through the user's own paths."""

from __future__ import annotations

import tempfile
from contextlib import suppress
from datetime import timedelta
from pathlib import Path

from rich.columns import Columns
from rich.panel import Panel

from cityward.adapters.inventory_files import FileFormat
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.entrypoints.cli.context import _user
from cityward.entrypoints.cli.render import err, out, table
from cityward.errors import Conflict
from cityward.services import catalog, inventory, organizations, setup, tokens, zones
from cityward.services.overview import fleet_overview
from cityward.sim.city import DemoCity, generate_city, write_catalog_csv, write_inventory_csv


def run_demo(platform: Platform, devices: int, *, seed: int, serve: bool, port: int | None) -> None:
    city = generate_city(devices, seed)
    caller = _city_admin(platform, city)
    with out.status("setting up zones, partners and the product catalog…"):
        n_products = install_city(platform, caller, city)
    with tempfile.TemporaryDirectory(prefix="cityward-demo-") as tmp:
        inventory_file = Path(tmp) / "inventory.csv"
        write_inventory_csv(city, inventory_file, seed)
        with out.status(f"importing {devices:,} devices from the installers' inventory…"), \
                inventory_file.open("rb") as fh:
            report = inventory.import_devices(platform.uow, caller, fh, "inventory.csv", FileFormat.CSV)
    out.print(f"catalog: {n_products} products · inventory: {report.created:,} new, "
              f"{report.updated:,} updated, {report.unchanged:,} unchanged devices")
    show_overview(platform, caller)
    if serve:
        issued = tokens.create_token(platform.uow, caller, caller.org_name, "demo session",
                                     "admin", timedelta(days=1))
        out.print(Panel(f"API token for this demo (expires in 1 day):\n{issued.secret}",
                        title="try the API", expand=False))
        settings = platform.settings
        serve_api(platform, settings.api_host, port or settings.api_port)


def _city_admin(platform: Platform, city: DemoCity) -> Caller:
    if not organizations.is_initialized(platform.uow):
        inst = setup.initialize(platform.uow, city.name, f"local:{_user()}")
        platform.settings.secret_key_bytes()
        out.print(Panel(f"first admin token for {inst.city} (shown once):\n{inst.admin_token.secret}",
                        title="cityward initialized", expand=False))
    return organizations.local_operator(platform.uow, _user())


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


def serve_api(platform: Platform, host: str, port: int) -> None:
    import uvicorn

    from cityward.entrypoints.api.app import create_app

    err.print(f"serving the API on http://{host}:{port} (OpenAPI: /docs); Ctrl-C stops")
    uvicorn.run(create_app(platform), host=host, port=port, log_level="warning")
