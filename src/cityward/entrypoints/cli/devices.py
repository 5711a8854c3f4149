"""`cityward devices …`: import, export, list, show, summary."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, BinaryIO

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from cityward.adapters.inventory_files import FileFormat
from cityward.entrypoints.cli.context import CTX
from cityward.entrypoints.cli.render import err, out, print_json, styled, table
from cityward.errors import InvalidInput
from cityward.services import inventory
from cityward.services.inventory import DeviceFilter

app = typer.Typer(help="The device inventory: import, export, list and inspect devices.",
                  no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
FormatOpt = Annotated[str | None, typer.Option("--format", "-f", help="csv or json (default: from the file name).")]


def parse_age(text: str) -> timedelta:
    """'30d', '12h', '45m' → a duration."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise InvalidInput(f"{text!r} is not a duration; use e.g. 30d, 12h or 45m")
    return timedelta(**{units[text[-1]]: int(text[:-1])})


def _filter(kind: str | None, zone: str | None, brand: str | None, manufacturer: str | None,
            firmware: str | None, org: str | None, tag: str | None,
            not_seen_for: str | None, never_seen: bool, online: bool | None = None,
            failing_rule: str | None = None) -> DeviceFilter:
    before = datetime.now(UTC) - parse_age(not_seen_for) if not_seen_for else None
    return DeviceFilter(kind=kind, zone=zone, brand=brand, manufacturer=manufacturer,
                        firmware=firmware, org=org, tag=tag, seen_before=before,
                        never_seen=never_seen, online=online, failing_rule=failing_rule)


KindOpt = Annotated[str | None, typer.Option(help="Device kind, e.g. streetlight, camera.")]
ZoneOpt = Annotated[str | None, typer.Option(help="Zone name (includes the zones inside it).")]
BrandOpt = Annotated[str | None, typer.Option(help="Brand as labeled.")]
MfrOpt = Annotated[str | None, typer.Option("--manufacturer", help="True manufacturer, through relabels.")]
FwOpt = Annotated[str | None, typer.Option("--firmware", help="Exact firmware version.")]
OrgOpt = Annotated[str | None, typer.Option("--org", help="Organization responsible for any duty.")]
TagOpt = Annotated[str | None, typer.Option(help="Devices carrying this tag.")]
SeenOpt = Annotated[str | None, typer.Option("--not-seen-for", help="Not seen for this long, e.g. 7d.")]
NeverOpt = Annotated[bool, typer.Option("--never-seen", help="Devices that never reported.")]
OnlineOpt = Annotated[bool | None, typer.Option("--online/--offline",
                                                help="Devices reporting now / that went offline.")]


@app.command("import")
def import_(
    file: Annotated[str, typer.Argument(help="CSV or JSON inventory file, or - for standard input.")],
    fmt: FormatOpt = None,
    partial: Annotated[bool, typer.Option("--partial", help="Import the good rows, report the bad.")] = False,
    create_missing: Annotated[bool, typer.Option(
        "--create-missing", help="Create the zones the file names (never organizations: `orgs add`).")] = False,
    ignore_unknown: Annotated[bool, typer.Option(
        "--ignore-unknown", help="Skip columns cityward does not know.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Upsert devices by id; all-or-nothing unless --partial. Bad rows: `row N, field F: problem`."""
    if file == "-":
        if not fmt:
            raise InvalidInput("reading standard input needs --format csv|json")
        stream: BinaryIO = sys.stdin.buffer
        size = None
    else:
        path = Path(file)
        if not path.is_file():
            raise InvalidInput(f"{file}: no such file")
        stream = path.open("rb")
        size = path.stat().st_size
    file_format = FileFormat.from_name(file, fmt)
    plat, caller = CTX.platform, CTX.caller
    with Progress(TextColumn("importing {task.description}"), BarColumn(), DownloadColumn(),
                  TextColumn("{task.fields[rows]:,} rows"), TimeElapsedColumn(),
                  console=err, transient=True, disable=json_out) as bar:
        task = bar.add_task(file, total=size, rows=0)
        try:
            report = inventory.import_devices(
                plat.uow, caller, stream, file, file_format, partial=partial,
                create_missing=create_missing, ignore_unknown=ignore_unknown,
                progress=lambda rows, done: bar.update(task, completed=done, rows=rows),
            )
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
    if json_out:
        print_json(report)
        return
    out.print(f"[green]imported[/] {report.imported:,} devices from {file} "
              f"({report.created:,} new, {report.updated:,} updated, {report.unchanged:,} unchanged)")
    for label, names in (("products added with unknown origin", report.created_products),
                         ("zones created", report.created_zones),
                         ("columns ignored", report.ignored_columns)):
        if names:
            out.print(f"{label}: {', '.join(names)}")
    if report.problems:
        err.print(f"[yellow]{report.rejected_rows:,} rows were skipped:[/]")
        err.print(table("", ["row", "field", "problem"],
                        ((p.row, p.field, p.message) for p in report.problems)))
        if report.more_problems:
            err.print(f"… and {report.more_problems:,} more problems not listed")


@app.command("export")
def export(
    file: Annotated[str, typer.Argument(help="Output file, or - for standard output.")] = "-",
    fmt: FormatOpt = None,
    kind: KindOpt = None, zone: ZoneOpt = None, brand: BrandOpt = None,
    manufacturer: MfrOpt = None, firmware: FwOpt = None, org: OrgOpt = None, tag: TagOpt = None,
) -> None:
    """Write the devices in your scope in the inventory format (re-importable as is)."""
    file_format = FileFormat.from_name(file, fmt or ("csv" if file == "-" else None))
    flt = _filter(kind, zone, brand, manufacturer, firmware, org, tag, None, False)
    plat, caller = CTX.platform, CTX.caller
    if file == "-":
        inventory.export_devices(plat.uow, caller, sys.stdout, file_format, flt)
        return
    tmp = Path(file + ".partial")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            count = inventory.export_devices(plat.uow, caller, fh, file_format, flt)
        tmp.replace(file)  # never leave a half-written export under the real name
    finally:
        tmp.unlink(missing_ok=True)
    err.print(f"exported {count:,} devices to {file}")


@app.command("list")
def list_(
    kind: KindOpt = None, zone: ZoneOpt = None, brand: BrandOpt = None,
    manufacturer: MfrOpt = None, firmware: FwOpt = None, org: OrgOpt = None, tag: TagOpt = None,
    not_seen_for: SeenOpt = None, never_seen: NeverOpt = False, online: OnlineOpt = None,
    failing_rule: Annotated[str | None, typer.Option(
        "--failing-rule", help="Devices failing this rule in your latest audit, e.g. CRED-001.")] = None,
    limit: Annotated[int, typer.Option(help="Devices per page (1-1000).")] = 50,
    after: Annotated[str | None, typer.Option(help="Start after this device id (next page).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Devices in your scope, filtered; prints the cursor for the next page."""
    flt = _filter(kind, zone, brand, manufacturer, firmware, org, tag, not_seen_for, never_seen, online, failing_rule)
    page = inventory.list_devices(CTX.platform.uow, CTX.caller, flt, limit=limit, after=after)
    if json_out:
        print_json({"items": [d.record | {"manufacturer": d.manufacturer, "responsible": d.responsible,
                                          "last_seen": d.last_seen, "online": d.online} for d in page.items],
                    "total": page.total, "next_after": page.next_after})
        return
    title = f"{page.total:,} devices" if page.total is not None else f"devices after {after}"
    out.print(table(title, ["id", "kind", "brand / model", "true manufacturer",
                            "firmware", "zone", "maintainer", "online", "last seen"], (
        (d.id, d.kind, f"{d.brand} {d.model}",
         d.manufacturer + ("" if d.origin_status != "relabeled" else " (relabel)"),
         d.firmware_version, d.zone, d.responsible.get("maintain"),
         {True: styled("online", "green"), False: styled("offline", "red"), None: "—"}[d.online],
         d.last_seen.strftime("%Y-%m-%d %H:%M") if d.last_seen else "never")
        for d in page.items)))
    if page.next_after:
        out.print(f"[dim]next page: --after {page.next_after}[/]")


@app.command("show")
def show(device_id: str, json_out: JsonOpt = False) -> None:
    """One device: identity, origin, responsibilities, state."""
    d = inventory.get_device(CTX.platform.uow, CTX.caller, device_id)
    if json_out:
        print_json(d)
        return
    rows = [(k, v) for k, v in d.record.items() if k != "tags"]
    rows += [("tags", ", ".join(d.record["tags"])),
             ("true manufacturer", f"{d.manufacturer} {d.origin_model} ({d.origin_status})"),
             ("end of support", d.end_of_support), ("credential state", d.credential_state),
             ("online", {True: "yes", False: "no", None: "never reported"}[d.online]),
             ("last seen", d.last_seen or "never")]
    rows += [(f"responsible: {duty}", org or "—") for duty, org in d.responsible.items()]
    out.print(table(f"device {d.id}", ["field", "value"], rows))


@app.command("summary")
def summary(
    kind: KindOpt = None, zone: ZoneOpt = None, manufacturer: MfrOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Device counts by true manufacturer, model and firmware (what a manufacturer may see)."""
    rows = inventory.summarize_devices(
        CTX.platform.uow, CTX.caller,
        _filter(kind, zone, None, manufacturer, None, None, None, None, False))
    if json_out:
        print_json(rows)
        return
    out.print(table("devices by model and firmware",
                    ["true manufacturer", "brand", "model", "firmware", "devices"],
                    ((r.manufacturer, r.brand, r.model, r.firmware_version, f"{r.devices:,}")
                     for r in rows)))


@app.command("assign")
def assign(
    device_id: str,
    duty: Annotated[str, typer.Option(help="supply, install, maintain, credentials or remote_access.")],
    org: Annotated[str | None, typer.Option(help="Responsible organization; omit to fall back to the zone's.")] = None,
) -> None:
    """Override, for one device, who holds a duty (city admin)."""
    d = inventory.assign_device_duty(CTX.platform.uow, CTX.caller, device_id, duty, org)
    out.print(f"{d.id}: {duty} → {d.responsible.get(duty.lower()) or 'nobody'}")
