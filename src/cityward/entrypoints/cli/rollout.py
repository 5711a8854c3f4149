"""`cityward firmware …` and `cityward rollout …`: the firmware catalog and bulk operations."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from cityward.domain.firmware import MAX_IMAGE_BYTES
from cityward.domain.limits import DOCUMENT_JSON, MAX_SBOM_BYTES, load_json
from cityward.domain.rollouts import FailureAction, WaveOptions
from cityward.entrypoints.cli.context import CTX
from cityward.entrypoints.cli.devices import (
    BrandOpt,
    FwOpt,
    JsonOpt,
    KindOpt,
    MfrOpt,
    OrgOpt,
    TagOpt,
    ZoneOpt,
)
from cityward.entrypoints.cli.fleet import secret_box
from cityward.entrypoints.cli.render import err, out, print_json, table
from cityward.errors import InvalidInput, PreconditionFailed
from cityward.services import firmware, remediation, rollouts
from cityward.services.inventory import DeviceFilter
from cityward.services.rollouts import RolloutRequest, RolloutView, Target

firmware_app = typer.Typer(help="The firmware catalog: manufacturers' keys and verified images.", no_args_is_help=True)
key_app = typer.Typer(help="Manufacturers' firmware-signing keys.", no_args_is_help=True)
firmware_app.add_typer(key_app, name="key")
app = typer.Typer(help="Bulk operations in waves: plan, create, approve, start, watch, pause, resume, abort.",
                  no_args_is_help=True)


# --- firmware ------------------------------------------------------------------------------------


@key_app.command("add")
def key_add(
    manufacturer: Annotated[str, typer.Argument(help="The manufacturer (true origin brand) that signs.")],
    key_id: Annotated[str, typer.Argument(help="The key's id, as devices know it (key_id in the protocol).")],
    public_key: Annotated[Path, typer.Argument(help="PEM public key file, or a file with 32 bytes in base64.")],
) -> None:
    """Register a manufacturer's Ed25519 firmware-signing public key."""
    try:
        text = public_key.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {public_key}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{public_key}: not a text file (a PEM public key, or 32 bytes in base64)") from None
    firmware.register_key(CTX.platform.uow, CTX.caller, manufacturer, key_id, text)
    out.print(f"registered firmware key {key_id} for {manufacturer}")


@key_app.command("list")
def key_list(json_out: JsonOpt = False) -> None:
    """Registered firmware-signing keys."""
    items = firmware.list_keys(CTX.platform.uow)
    if json_out:
        print_json(items)
        return
    out.print(table("firmware keys", ["key id", "manufacturer", "public key (base64)", "added by", "revoked"], (
        (k.key_id, k.manufacturer, k.public_key, k.added_by, "yes" if k.revoked else "") for k in items)))


@firmware_app.command("add")
def firmware_add(
    image: Annotated[Path, typer.Argument(help="The firmware image file.")],
    brand: Annotated[str, typer.Option(help="The true manufacturer's brand (who signed it).")],
    model: Annotated[str, typer.Option(help="The true manufacturer's model.")],
    version: Annotated[str, typer.Option(help="The version the image installs.")],
    signature: Annotated[str, typer.Option(help="Base64 Ed25519 signature, or @FILE to read it.")],
    key_id: Annotated[str, typer.Option("--key-id", help="The registered key that signed it.")],
    notes: Annotated[str | None, typer.Option(help="Release notes.")] = None,
    sbom: Annotated[Path | None, typer.Option(help="CycloneDX SBOM (JSON) of the image.")] = None,
) -> None:
    """Verify (hash and signature, as a device will) and add an image to the catalog."""
    data = _read(image, MAX_IMAGE_BYTES)
    sig = signature
    if signature.startswith("@"):
        sig = _read(Path(signature[1:]), 4096).decode("utf-8", "replace").strip()
    doc = None
    if sbom is not None:
        doc = load_json(_read(sbom, MAX_SBOM_BYTES), DOCUMENT_JSON, str(sbom))
        if not isinstance(doc, dict):
            raise InvalidInput(f"{sbom}: an SBOM is a JSON object")
    view = firmware.add_release(CTX.platform.uow, CTX.caller, CTX.platform.settings.firmware_dir, brand=brand,
                                model=model, version=version, image=data, signature=sig, key_id=key_id, notes=notes,
                                sbom=doc, source=str(image))
    out.print(f"firmware release {view.id}: {view.brand} {view.model} {view.version} "
              f"({view.size:,} bytes, sha256 {view.sha256[:16]}…) verified and added")


def _read(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise InvalidInput(f"{path}: {size:,} bytes is over the limit of {limit:,}")
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None


@firmware_app.command("list")
def firmware_list(json_out: JsonOpt = False) -> None:
    """The verified firmware images rollouts may use."""
    items = firmware.list_releases(CTX.platform.uow)
    if json_out:
        print_json(items)
        return
    out.print(table("firmware catalog", ["id", "product", "version", "size", "sha256", "key", "SBOM"], (
        (str(r.id), f"{r.brand} {r.model}", r.version, f"{r.size:,}", r.sha256[:16] + "…", r.key_id,
         "yes" if r.has_sbom else "") for r in items)))


# --- rollouts ------------------------------------------------------------------------------------

OperationOpt = Annotated[str, typer.Option(
    "--operation", "-o", help="upgrade_firmware, rollback_firmware, set_config, rotate_password, reboot, "
    "quarantine or release. Required, unless --from-advisory.")]


def _request(name: str, operation: str, kind: str | None, zone: str | None, brand: str | None,
             manufacturer: str | None, fw: str | None, org: str | None, tag: str | None, failing_rule: str | None,
             advisory: str | None, devices: str | None, release: int | None, config: str | None, reason: str | None,
             canary: int,
             waves: str, concurrency: int, timeout: float | None, retries: int, success_threshold: int,
             failure_threshold: int, failure_count: int | None, on_failure: str) -> RolloutRequest:
    try:
        pcts = tuple(int(p) for p in waves.split(","))
    except ValueError:
        raise InvalidInput("--waves takes growing percentages, e.g. 10,50,100") from None
    try:
        failure = FailureAction(on_failure)
    except ValueError:
        raise InvalidInput("--on-failure must be pause or abort") from None
    ids: tuple[str, ...] = ()
    if devices:
        ids = tuple(sorted({d.strip() for d in devices.split(",") if d.strip()}))
        if len(ids) > rollouts.MAX_EXPLICIT_DEVICES:
            raise InvalidInput(f"--devices names more than {rollouts.MAX_EXPLICIT_DEVICES:,} devices; use a filter")
    selector = DeviceFilter(kind=kind, zone=zone, brand=brand, manufacturer=manufacturer, firmware=fw, org=org,
                            tag=tag)
    options = WaveOptions(canary=canary, percentages=pcts, concurrency=concurrency, timeout_s=timeout,
                          retries=retries, success_threshold=success_threshold, failure_threshold=failure_threshold,
                          failure_count=failure_count, on_failure=failure)
    return RolloutRequest(name=name, operation=rollouts.parse_operation(operation),
                          target=Target(selector, failing_rule, ids, advisory), options=options, release=release,
                          config=config, reason=reason)


@app.command("plan", help="What a rollout would do, as a dry run: waves, skips and why, windows, approval, "
             "estimated duration. Nothing is stored or sent.")
@app.command("create", help="The same plan, stored (it does not start): cityward rollout start.")
def plan(
    ctx: typer.Context,
    operation: OperationOpt = "",
    name: Annotated[str, typer.Option(help="What this rollout is for.")] = "rollout",
    kind: KindOpt = None, zone: ZoneOpt = None, brand: BrandOpt = None, manufacturer: MfrOpt = None,
    fw: FwOpt = None, org: OrgOpt = None, tag: TagOpt = None,
    failing_rule: Annotated[str | None, typer.Option(help="Devices failing this rule in the latest audit.")] = None,
    advisory: Annotated[str | None, typer.Option(help="Devices this advisory (or CVE id) affects.")] = None,
    from_advisory: Annotated[str | None, typer.Option(
        help="Remediate an advisory: one upgrade_firmware rollout per affected product, to the catalog's "
             "firmware at or above the advisory's fixed version.")] = None,
    devices: Annotated[str | None, typer.Option(help="Only these device ids (comma-separated).")] = None,
    release: Annotated[int | None, typer.Option(help="Firmware release id (upgrade_firmware).")] = None,
    config: Annotated[str | None, typer.Option(help="Desired configuration name (set_config).")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (quarantine).")] = None,
    canary: Annotated[int, typer.Option(help="Devices in the first wave.")] = 1,
    waves: Annotated[str, typer.Option(help="Cumulative % after each later wave.")] = "10,50,100",
    concurrency: Annotated[int, typer.Option(help="Device actions at once.")] = 50,
    timeout: Annotated[float | None, typer.Option(help=(
        "Seconds per attempt (default: the operation's expected duration; firmware: the product's "
        "upgrade_minutes, else 15 min). A device that reports progress is followed past it."))] = None,
    retries: Annotated[int, typer.Option(help="Extra attempts after a failure.")] = 1,
    success_threshold: Annotated[int, typer.Option(help="% of a wave that must succeed to go on.")] = 90,
    failure_threshold: Annotated[int, typer.Option(help="% of a wave failed that stops the rollout.")] = 10,
    failure_count: Annotated[int | None, typer.Option(help="Failures in a wave that stop the rollout.")] = None,
    on_failure: Annotated[str, typer.Option(help="pause or abort when a threshold is crossed.")] = "pause",
    json_out: JsonOpt = False,
) -> None:
    create = ctx.info_name == "create"
    if from_advisory:
        if operation not in ("", "upgrade_firmware"):
            raise InvalidInput("--from-advisory plans firmware upgrades; leave out --operation")
        operation = "upgrade_firmware"
    elif not operation:
        raise InvalidInput("--operation (-o) is required, or --from-advisory ID")
    req = _request(name, operation, kind, zone, brand, manufacturer, fw, org, tag, failing_rule, advisory, devices,
                   release, config, reason, canary, waves, concurrency, timeout, retries, success_threshold,
                   failure_threshold, failure_count, on_failure)
    store = CTX.platform.settings.firmware_dir
    if from_advisory:
        _from_advisory(from_advisory, req.options, store, create=create, json_out=json_out)
        return
    if create:
        rollout_id, summary = rollouts.create(CTX.platform.uow, CTX.caller, req, store)
    else:
        rollout_id, summary = None, rollouts.plan(CTX.platform.uow, CTX.caller, req, store)
    if json_out:
        print_json({"rollout": rollout_id, "waves": summary.waves, "skipped": summary.skipped,
                    "windows": summary.windows, "needs_approval": summary.needs_approval,
                    "approval_zones": summary.approval_zones, "estimated_s": summary.estimated.total_seconds()})
        return
    out.print(table(f"plan: {req.operation.value} on {summary.devices:,} devices", ["wave", "devices", "first"],
                    ((str(n), f"{len(w):,}", ", ".join(w[:3]) + (" …" if len(w) > 3 else ""))
                     for n, w in enumerate(summary.waves, 1))))
    if summary.skipped:
        reasons: dict[str, int] = {}
        for sk in summary.skipped:
            reasons[sk.reason] = reasons.get(sk.reason, 0) + 1
        out.print(table(f"skipped: {len(summary.skipped):,}", ["reason", "devices"],
                        ((r, f"{n:,}") for r, n in sorted(reasons.items(), key=lambda t: -t[1]))))
    out.print(table("maintenance windows", ["zone", "window"], sorted(summary.windows.items())))
    out.print(f"estimated duration: {summary.estimated}" + (
        f" · [yellow]needs approval[/] (critical zones: {', '.join(summary.approval_zones)})"
        if summary.needs_approval else ""))
    if rollout_id is not None:
        out.print(f"[bold]rollout {rollout_id} created[/]: "
                  + ("another city user must approve it (cityward rollout approve)" if summary.needs_approval
                     else f"start it with cityward rollout start {rollout_id}"))
    else:
        out.print("dry run: nothing stored, nothing sent (cityward rollout create … stores it)")


def _from_advisory(advisory: str, options: WaveOptions, store: Path, *, create: bool, json_out: bool) -> None:
    done = remediation.from_advisory(CTX.platform.uow, CTX.caller, advisory, options, store, create=create)
    if json_out:
        print_json([{**{k: v for k, v in dataclasses.asdict(f).items() if k != "plan"},
                     "planned_devices": f.plan.devices if f.plan else 0} for f in done])
        return
    out.print(table(f"remediation of {advisory}: one firmware rollout per product", [
        "true product", "devices", "fixed in", "catalog firmware", "rollout", ""], (
        (f.product, f"{len(f.devices):,}", f.fixed_version or "?", f.release_version or "—",
         str(f.rollout) if f.rollout else ("planned" if f.plan else ""),
         (f"{f.plan.devices:,} in {len(f.plan.waves)} waves" + (", needs approval" if f.plan.needs_approval else "")
          if f.plan else f.problem or "")) for f in done)))
    if not create:
        out.print("dry run: nothing stored, nothing sent (cityward rollout create --from-advisory … stores them)")


RolloutArg = Annotated[int, typer.Argument(help="Rollout id.", min=1, max=2**31 - 1)]
ReasonOpt = Annotated[str | None, typer.Option(help="Why (kept in the audit log).")]


@app.command("approve")
def approve(rollout_id: RolloutArg) -> None:
    """Approve a rollout that touches a critical zone (not its creator)."""
    rollouts.approve(CTX.platform.uow, CTX.caller, rollout_id)
    out.print(f"rollout {rollout_id} approved")


@app.command("start")
def start(rollout_id: RolloutArg) -> None:
    """Let the executor start the rollout's waves."""
    from cityward.services import executors

    rollouts.start(CTX.platform.uow, CTX.caller, rollout_id)
    out.print(f"rollout {rollout_id} started: an executor carries it out (cityward serve's own, cityward rollout "
              "run, or cityward worker)")
    if executors.waiting(CTX.platform.uow) is not None:
        err.print(f"[yellow]no executor has looked for work in the last {executors.SILENT_AFTER.seconds} s[/]: "
                  f"{executors.RUN_HINT}", highlight=False)


@app.command("pause")
def pause(rollout_id: RolloutArg, reason: ReasonOpt = None) -> None:
    """Start nothing new; commands already out finish."""
    rollouts.pause(CTX.platform.uow, CTX.caller, rollout_id, reason)
    out.print(f"rollout {rollout_id} paused")


@app.command("resume")
def resume(rollout_id: RolloutArg) -> None:
    """Go on (a wave paused for failures is accepted as it is)."""
    rollouts.resume(CTX.platform.uow, CTX.caller, rollout_id)
    out.print(f"rollout {rollout_id} resumed")


@app.command("abort")
def abort(rollout_id: RolloutArg, reason: ReasonOpt = None) -> None:
    """Stop for good: devices not yet started are cancelled."""
    rollouts.abort(CTX.platform.uow, CTX.caller, rollout_id, reason)
    out.print(f"rollout {rollout_id} aborted")


@app.command("list")
def list_(json_out: JsonOpt = False) -> None:
    """Rollouts you may see, newest first."""
    items = rollouts.list_rollouts(CTX.platform.uow, CTX.caller)
    if json_out:
        print_json(items)
        return
    out.print(table("rollouts", ["id", "name", "operation", "status", "done", "failed", "created by"], (
        (str(r.id), r.name, r.operation, r.status, f"{r.done:,}/{r.total:,}", f"{r.counts.get('failed', 0):,}",
         r.created_by) for r in items)))


@app.command("status")
def status(rollout_id: RolloutArg, json_out: JsonOpt = False,
           failed: Annotated[bool, typer.Option("--failed", help="List the failed devices.")] = False) -> None:
    """Where a rollout stands: per wave, per status."""
    view = rollouts.get(CTX.platform.uow, CTX.caller, rollout_id)
    if json_out:
        print_json({"rollout": view, "failed": rollouts.actions(CTX.platform.uow, CTX.caller, rollout_id,
                                                                 status="failed") if failed else []})
        return
    out.print(_status_table(view))
    if failed:
        out.print(table("failed devices", ["device", "wave", "attempts", "detail"], (
            (a.device_id, str(a.wave), str(a.attempts), a.detail or "")
            for a in rollouts.actions(CTX.platform.uow, CTX.caller, rollout_id, status="failed"))))


def _status_table(view: RolloutView) -> Table:
    t = Table(title=f"rollout {view.id}: {view.name} ({view.operation}) — {view.status}"
              + (f" · {view.control_reason}" if view.control_reason and view.status in ("paused", "aborted")
                 else ""))
    for col in ("wave", "size", "succeeded", "failed", "running", "pending", "cancelled", "verdict"):
        t.add_column(col, justify="left" if col in ("wave", "verdict") else "right")
    for w in view.waves:
        t.add_row(str(w.number), f"{w.size:,}", *(f"{w.counts.get(s, 0):,}" for s in
                                                  ("succeeded", "failed", "running", "pending", "cancelled")),
                  w.verdict or ("running" if w.started_at and not w.finished_at else ""))
    return t


def _progress(view: RolloutView) -> Any:
    bars = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                    TextColumn("{task.fields[tally]}"))
    for w in view.waves:
        done = sum(w.counts.get(s, 0) for s in ("succeeded", "failed", "cancelled"))
        tally = " ".join(f"{s} {w.counts[s]:,}" for s in ("succeeded", "failed", "running", "pending", "cancelled")
                         if w.counts.get(s))
        bars.add_task(f"wave {w.number}", total=max(w.size, 1), completed=done, tally=tally)
    return Panel(bars, title=f"rollout {view.id}: {view.name} — {view.status}"
                 + (f" ({view.control_reason})" if view.status in ("paused", "aborted") and view.control_reason
                    else ""))


@app.command("watch")
def watch(rollout_id: RolloutArg,
          interval: Annotated[float, typer.Option(help="Seconds between refreshes.", min=0.2)] = 1.0) -> None:
    """Live progress bars per wave until the rollout finishes, is paused or aborted (Ctrl-C leaves)."""
    uow = CTX.platform.uow
    view = rollouts.get(uow, CTX.caller, rollout_id)
    with Live(_progress(view), console=err if not out.is_terminal else out, refresh_per_second=4) as live:
        while view.status in ("running", "aborting", "ready", "awaiting_approval"):
            time.sleep(interval)
            view = rollouts.get(uow, CTX.caller, rollout_id)
            live.update(_progress(view))
    out.print(_status_table(view))


@app.command("run")
def run(
    rollout_ids: Annotated[list[int] | None, typer.Argument(help="Run until these rollouts have nothing left "
                                                                 "to do (default: keep running).")] = None,
    mqtt_url: Annotated[str | None, typer.Option(help="Broker URL (default CITYWARD_MQTT_URL).")] = None,
    no_mqtt: Annotated[bool, typer.Option("--no-mqtt", help="HTTP devices only.")] = False,
    lease_grace: Annotated[float, typer.Option(
        help="Seconds past a command's timeout before a stopped executor's claim is taken over.", min=0)] = 30.0,
) -> None:
    """Carry out started rollouts in this process (the one-machine executor)."""
    from cityward.services.rollout_executor import Executor, ExecutorOptions

    CTX.require_platform("carry out rollouts")
    platform = CTX.platform
    settings = platform.settings
    from cityward.entrypoints.background import alert_channels

    options = ExecutorOptions(mqtt_url=None if no_mqtt else (mqtt_url or settings.mqtt_url),
                              firmware_store=settings.firmware_dir, listen=settings.firmware_listen,
                              public_url=settings.firmware_url, lease_grace=lease_grace,
                              alerts=alert_channels(settings))
    if rollout_ids:
        _require_work(platform, rollout_ids)
    executor = Executor(platform.uow, secret_box(platform), settings.secret_key_bytes(), options)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await executor.run(stop, until_done=set(rollout_ids) if rollout_ids else None)

    with err.status("executing rollouts… (Ctrl-C stops; started commands are resumed next time)"):
        asyncio.run(main())
    out.print(f"sent {executor.sent:,} commands: " + ", ".join(f"{k} {v:,}" for k, v in
                                                               sorted(executor.results.items()))
              + (f"; the broker link reconnected {executor.reconnects:,} times" if executor.reconnects else "")
              + (f"; {executor.left_claimed:,} left claimed while the broker was unreachable (resumed under the "
                 "same command ids by the next executor)" if executor.left_claimed else ""))
    for rid in rollout_ids or []:
        out.print(_status_table(rollouts.get(platform.uow, CTX.caller, rid)))



def _require_work(platform: Any, rollout_ids: list[int]) -> None:
    """Say at once which named rollouts this executor cannot move (paused, not started, finished)
    rather than return with nothing said. A paused or finished one is a fact to report (its status
    follows); refused (exit 1) only when none can move and one was never started."""
    from cityward.domain.rollouts import RolloutState, next_step

    movable = {RolloutState.RUNNING.value, RolloutState.ABORTING.value}
    unstarted = {RolloutState.READY.value, RolloutState.AWAITING_APPROVAL.value}
    idle = [(v.id, v.status) for v in (rollouts.get(platform.uow, CTX.caller, rid) for rid in rollout_ids)
            if v.status not in movable]
    notes = "; ".join(f"rollout {rid} is {status} ({next_step(RolloutState(status))})" for rid, status in idle)
    if len(idle) == len(rollout_ids) and any(status in unstarted for _rid, status in idle):
        raise PreconditionFailed(f"nothing to carry out: {notes}")
    if idle:
        err.print(f"[yellow]note:[/] nothing to carry out for {notes}")


def worker(
    concurrency: Annotated[int, typer.Option(help="Device actions this worker carries out at once.", min=1)] = 50,
    name: Annotated[str | None, typer.Option(help="This worker's name in logs and claims.")] = None,
    mqtt_url: Annotated[str | None, typer.Option(help="Broker URL (default CITYWARD_MQTT_URL).")] = None,
    lease_grace: Annotated[float, typer.Option(
        help="Seconds past a command's timeout before a dead worker's claim is taken over.", min=0)] = 30.0,
) -> None:
    """A scale-out worker: carries out rollouts with the others, through the PostgreSQL job queue."""
    from cityward.entrypoints.worker import build_app, run_worker
    from cityward.services.rollout_executor import Executor, ExecutorOptions

    CTX.require_platform("run a worker")
    platform = CTX.platform
    settings = platform.settings
    if not settings.database_url.startswith("postgresql"):
        raise InvalidInput("cityward worker needs PostgreSQL (CITYWARD_DATABASE_URL=postgresql://…); "
                           "on one machine with SQLite, cityward rollout run carries rollouts out")
    from cityward.entrypoints.background import alert_channels

    options = ExecutorOptions(mqtt_url=mqtt_url or settings.mqtt_url, firmware_store=settings.firmware_dir,
                              listen=settings.firmware_listen, public_url=settings.firmware_url,
                              lease_grace=lease_grace, alerts=alert_channels(settings))
    if name:
        options = dataclasses.replace(options, name=name)
    executor = Executor(platform.uow, secret_box(platform), settings.secret_key_bytes(), options)
    err.print(f"worker {options.name}: carrying out rollouts (Ctrl-C stops; claimed work is taken over)")
    asyncio.run(run_worker(build_app(settings.database_url), executor, concurrency=concurrency,
                           name=options.name))


config_app = typer.Typer(help="Desired configuration per selector, and drift from it.", no_args_is_help=True)


@config_app.command("set")
def config_set(
    name: Annotated[str, typer.Argument(help="A name for this desired configuration.")],
    file: Annotated[Path, typer.Option("--file", help="The configuration, a JSON object.")],
    kind: KindOpt = None, zone: ZoneOpt = None, brand: BrandOpt = None, manufacturer: MfrOpt = None,
    fw: FwOpt = None, tag: TagOpt = None,
) -> None:
    """Set (or replace) what the selected devices should run; apply it with a set_config rollout."""
    from cityward.services import configs

    config = load_json(_read(file, configs.MAX_CONFIG_BYTES), DOCUMENT_JSON, str(file))
    selector = {k: v for k, v in (("kind", kind), ("zone", zone), ("brand", brand), ("manufacturer", manufacturer),
                                  ("firmware", fw), ("tag", tag)) if v}
    view = configs.set_desired(CTX.platform.uow, CTX.caller, name, selector, config)
    out.print(f"desired configuration {view.name} ({view.config_hash[:12]}…) for "
              + (", ".join(f"{k}={v}" for k, v in view.selector.items()) or "every device"))


@config_app.command("list")
def config_list(json_out: JsonOpt = False) -> None:
    """Desired configurations."""
    from cityward.services import configs

    items = configs.list_desired(CTX.platform.uow)
    if json_out:
        print_json(items)
        return
    out.print(table("desired configurations", ["name", "selector", "hash", "set by"], (
        (d.name, ", ".join(f"{k}={v}" for k, v in d.selector.items()) or "all", d.config_hash[:12] + "…",
         d.created_by) for d in items)))


@config_app.command("drift")
def config_drift(name: str, json_out: JsonOpt = False) -> None:
    """Devices whose reported configuration differs from the desired one."""
    from cityward.services import configs

    total, drifted = configs.drift(CTX.platform.uow, CTX.caller, name)
    if json_out:
        print_json({"devices": total, "drifted": drifted})
        return
    out.print(table(f"{name}: {len(drifted):,} of {total:,} devices drifted", ["device", "zone", "reported hash"], (
        (d.device_id, d.zone, (d.reported_hash or "never reported")[:12]) for d in drifted[:200])))
    if drifted:
        out.print(f"apply it: cityward rollout create -o set_config --config {name}")
