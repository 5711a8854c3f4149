"""Talking to the devices: `connect`, `mqtt provision`, `credentials import`, `discover`, `devices command`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.live import Live
from rich.progress import Progress
from rich.text import Text

from cityward.domain.limits import API_JSON, check_json
from cityward.entrypoints.cli import devices
from cityward.entrypoints.cli.context import CTX
from cityward.entrypoints.cli.devices import parse_age
from cityward.entrypoints.cli.render import err, out, print_json, styled, table
from cityward.errors import InvalidInput, Problem

if TYPE_CHECKING:
    from cityward.adapters.secretbox import SecretBox
    from cityward.bootstrap import Platform
    from cityward.services import discovery
    from cityward.services.connectivity import ConnectOptions

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

mqtt_app = typer.Typer(help="The MQTT broker: per-device accounts and access control.", no_args_is_help=True)
credentials_app = typer.Typer(help="Device credentials, stored encrypted.", no_args_is_help=True)
discover_app = typer.Typer(help="Devices not in the inventory: probe, review, approve or reject.")


def secret_box(platform: Platform) -> SecretBox:
    from cityward.adapters.secretbox import SecretBox

    return SecretBox(platform.settings.secret_key_bytes())


# --- connect ------------------------------------------------------------------------------------

def stats_table(stats: dict[str, Any], counts: dict[str, int]) -> Any:
    rows: list[tuple[str, str | Text]]
    rows = [("devices online", f"{counts['online']:,}"), ("devices offline", f"{counts['offline']:,}"),
            ("messages received", f"{stats['received']:,}"), ("persisted", f"{stats['persisted']:,}"),
            ("superseded before writing", f"{stats['superseded']:,}"), ("stale (replays)", f"{stats['stale']:,}"),
            ("discovered (pending approval)", f"{stats['discovered']:,}"),
            ("HTTP polls", f"{stats['http']['polled']:,}"),
            ("latency p50 / p99", f"{stats['latency_p50_ms']} / {stats['latency_p99_ms']} ms")]
    rows += [(f"rejected: {k}", f"{v:,}") for k, v in sorted(stats["rejected"].items())]
    rows += [(f"dropped: {k}", styled(f"{v:,}", "red")) for k, v in sorted(stats["dropped"].items())]
    rows += [(f"HTTP failed: {k}", f"{v:,}") for k, v in sorted(stats["http"]["failed"].items())]
    return table("fleet connection", ["", ""], rows)


async def run_connector(platform: Platform, options: ConnectOptions, *, duration: float | None,
                        live: bool) -> dict[str, Any]:
    from cityward.services import ingestion
    from cityward.services.connectivity import Connector  # aiomqtt and httpx load only when needed

    connector = Connector(platform.uow, secret_box(platform), options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    running = asyncio.create_task(connector.run(stop))
    started = time.monotonic()

    async def tick() -> None:
        while not stop.is_set():
            if duration is not None and time.monotonic() - started >= duration:
                stop.set()
                break
            await asyncio.sleep(0.5)

    ticker = asyncio.create_task(tick())
    if live:
        with Live(console=err, refresh_per_second=2) as view:
            while not running.done() and not stop.is_set():
                counts = await asyncio.to_thread(ingestion.connectivity, platform.uow)
                view.update(stats_table(connector.stats(), counts))
                await asyncio.wait({running, ticker}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.wait({running, ticker}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    await running
    ticker.cancel()
    return connector.stats()


def connect(
    mqtt_url: Annotated[str | None, typer.Option(help="Broker URL (default CITYWARD_MQTT_URL).")] = None,
    no_mqtt: Annotated[bool, typer.Option("--no-mqtt", help="Poll HTTP devices only.")] = False,
    poll_interval: Annotated[float, typer.Option(help="Seconds between HTTP polls.", min=1)] = 60.0,
    silence: Annotated[str, typer.Option(help="Offline after this long without a word, e.g. 15m.")] = "15m",
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.", min=0)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Connect to the fleet: ingest MQTT state, poll HTTP devices, mark silent devices offline."""
    from cityward.services import ingestion
    from cityward.services.connectivity import ConnectOptions

    CTX.require_platform("connect to the fleet")
    platform = CTX.platform
    options = ConnectOptions(mqtt_url=None if no_mqtt else (mqtt_url or platform.settings.mqtt_url),
                             poll_interval=poll_interval, silence=parse_age(silence))
    stats = asyncio.run(run_connector(platform, options, duration=duration,
                                      live=sys.stderr.isatty() and not json_out))
    if json_out:
        print_json(stats)
    else:
        out.print(stats_table(stats, ingestion.connectivity(platform.uow)))


# --- mqtt provision -----------------------------------------------------------------------------

@mqtt_app.command("provision")
def provision(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for passwd, acl, mosquitto.conf and the bundle.")],
    broker_url: Annotated[str | None, typer.Option(help="Broker URL written into the device bundle.")] = None,
    port: Annotated[int, typer.Option(help="Listener port in the generated mosquitto.conf.", min=1, max=65535)] = 1883,
    gateways: Annotated[bool, typer.Option("--gateways", help="Devices behind their zone's MQTT gateways.")] = False,
    rotate: Annotated[bool, typer.Option("--rotate", help="New passwords for every account.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Per-device broker accounts, a Mosquitto password file and an ACL (own topics only)."""
    from cityward.services import broker

    platform = CTX.platform
    report = broker.provision(platform.uow, CTX.caller, secret_box(platform), out_dir,
                              broker_url=broker_url or platform.settings.mqtt_url, port=port,
                              via_gateways=gateways, rotate=rotate)
    if json_out:
        print_json(report)
        return
    out.print(table("broker accounts", ["", ""], [
        ("devices with their own account", f"{report.devices:,}"), ("gateways", f"{report.gateways:,}"),
        ("devices behind gateways", f"{report.behind_gateways:,}"), ("new passwords", f"{report.new_passwords:,}"),
        ("skipped", f"{len(report.skipped):,}"), *report.files.items()]))
    for device_id, why in report.skipped[:10]:
        err.print(f"[yellow]skipped[/] {device_id}: {why}")
    err.print("the bundle holds every device password: hand it to the installer and delete your copy")
    err.print("start the broker with: mosquitto -c " + str(report.files.get("config", "mosquitto.conf")) +
              " (its passwd must be readable by the account Mosquitto runs as; when provisioned by root, "
              "it was given to the mosquitto user)")


# --- credentials ----------------------------------------------------------------------------------

@credentials_app.command("reveal")
def reveal(device_id: Annotated[str, typer.Argument(help="The device.")]) -> None:
    """Print a device's admin password once, for a person who must log in by hand (audited)."""
    from cityward.services import credentials

    secret = credentials.reveal(CTX.platform.uow, secret_box(CTX.platform), CTX.caller, device_id)
    err.print(f"admin password of {device_id} (this reveal is in the audit log):")
    print(secret)


@credentials_app.command("import")
def import_credentials(
    file: Annotated[Path, typer.Argument(help="Handover file: CSV device_id,password or JSON {id: password}.")],
) -> None:
    """Store the installer's HTTP admin passwords, encrypted (nothing is stored if one row is bad)."""
    from cityward.services import credentials

    platform = CTX.platform
    try:
        stream = file.open("rb")
    except OSError as exc:
        raise InvalidInput(f"cannot read {file}: {exc.strerror}") from None
    with stream:
        n = credentials.import_handover(platform.uow, CTX.caller, secret_box(platform), stream, str(file))
    out.print(f"stored admin credentials of {n:,} devices (encrypted)")


# --- discover -------------------------------------------------------------------------------------

@discover_app.callback(invoke_without_command=True)
def discover(
    ctx: typer.Context,
    http_range: Annotated[str | None, typer.Option("--http-range", help="Addresses to probe: A-B or a CIDR.")] = None,
    port: Annotated[int, typer.Option(help="HTTP port of the devices.", min=1, max=65535)] = 8080,
    concurrency: Annotated[int, typer.Option(help="Probes at once.", min=1, max=1000)] = 100,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each address.", min=0.1)] = 2.0,
    json_out: JsonOpt = False,
) -> None:
    """Probe an address range for cityward devices; unknown ones wait for approval."""
    from cityward.services import discovery

    if ctx.invoked_subcommand is not None:
        return
    if http_range is None:
        raise InvalidInput("give --http-range A-B to probe, or a subcommand: pending, approve, reject",
                           [Problem("required", field="--http-range")])
    addresses = discovery.parse_range(http_range)
    platform = CTX.platform

    async def probe() -> discovery.ProbeReport:
        with Progress(console=err, transient=True, disable=json_out or not err.is_terminal) as bar:
            task = bar.add_task(f"probing {len(addresses):,} addresses", total=len(addresses))
            return await discovery.probe_http(platform.uow, CTX.caller, addresses, port, timeout=timeout,
                                              concurrency=concurrency, progress=lambda: bar.advance(task))

    report = asyncio.run(probe())
    if json_out:
        print_json(report)
        return
    out.print(table(f"probed {report.addresses:,} addresses", ["", ""], [
        ("answered", report.answered), ("already in the inventory", len(report.known)),
        ("new, pending approval", len(report.discovered)),
        *((f"failed: {k}", v) for k, v in report.failures.items())]))
    if report.discovered:
        out.print("review them with [bold]cityward discover pending[/]")


@discover_app.command("pending")
def pending(
    status: Annotated[str, typer.Option(help="pending, approved, rejected or all.")] = "pending",
    json_out: JsonOpt = False,
) -> None:
    """Devices that announced themselves but are not in the inventory."""
    from cityward.services import discovery

    items = discovery.list_discovered(CTX.platform.uow, CTX.caller, None if status == "all" else status)
    if json_out:
        print_json(items)
        return
    out.print(table(f"{len(items)} discovered devices ({status})",
                    ["id", "status", "via", "address", "kind", "brand / model", "serial", "firmware", "first seen"],
                    ((d.device_id, d.status, d.source, d.address, d.kind, f"{d.brand} {d.model}", d.serial,
                      d.firmware_version, d.first_seen.strftime("%Y-%m-%d %H:%M")) for d in items)))


@discover_app.command("approve")
def approve(
    device_id: str,
    zone: Annotated[str, typer.Option(help="Zone the device is installed in.")],
) -> None:
    """Enter a discovered device into the inventory (same checks and audit as any device)."""
    from cityward.services import discovery

    view = discovery.approve(CTX.platform.uow, CTX.caller, device_id, zone)
    out.print(f"{view.id} approved: {view.brand} {view.model} in {view.zone}")


@discover_app.command("reject")
def reject(device_id: str, reason: Annotated[str, typer.Option(help="Why it is not ours.")]) -> None:
    """Refuse a discovered device; it stays refused if it announces itself again."""
    from cityward.services import discovery

    discovery.reject(CTX.platform.uow, CTX.caller, device_id, reason)
    out.print(f"{device_id} rejected")


# --- devices command ------------------------------------------------------------------------------

def _params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--param {pair!r} must be key=value")
        check_json(value.encode(), API_JSON, f"--param {key}")  # too deep is refused, not taken as text
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


@devices.app.command("command")
def device_command(
    device_id: str,
    action: Annotated[str, typer.Argument(help="reboot, quarantine, release, set_config, ...")],
    param: Annotated[list[str] | None, typer.Option("--param", help="key=value (JSON values allowed).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the result.", min=1)] = 60.0,
    mqtt_url: Annotated[str | None, typer.Option(help="Broker URL (default CITYWARD_MQTT_URL).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Send one command to one device and follow it to its result (audited)."""
    from cityward.services.connectivity import command_device

    platform = CTX.platform
    show = (lambda r: err.print(f"{r.status} {r.progress if r.progress is not None else ''} {r.detail or ''}")) \
        if not json_out else None
    result = asyncio.run(command_device(platform.uow, secret_box(platform), mqtt_url or platform.settings.mqtt_url,
                                        CTX.caller, device_id, action, _params(param or []), timeout=timeout,
                                        on_result=show))
    if json_out:
        print_json({f: getattr(result, f) for f in result.__struct_fields__})
    else:
        out.print(f"{device_id} {action}: [bold]{result.status}[/] {result.detail or ''}")
    if result.status != "succeeded":
        raise typer.Exit(1)
