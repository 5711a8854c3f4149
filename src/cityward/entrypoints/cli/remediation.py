"""The demo's remediation: after the audit, fix the worst findings in bulk, in waves, with live
progress, through the same services an operator uses; then audit again.

The demo plays the simulated city's manufacturers too: it registers their signing keys and uploads
signed images for the catalog's minimum versions (the simulator derives those keys from the seed,
so the images verify on the devices exactly as real signed firmware would).
"""

from __future__ import annotations

import asyncio
import base64
import time
from concurrent.futures import Future
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.domain.rollouts import Operation, WaveOptions
from cityward.entrypoints.cli.fleet import secret_box
from cityward.entrypoints.cli.livecity import LiveCity
from cityward.entrypoints.cli.progress import PLAIN_EVERY, Step, step
from cityward.entrypoints.cli.render import err, out
from cityward.services import audit, catalog, firmware, organizations, remediation, rollouts
from cityward.services.rollout_executor import Executor, ExecutorOptions
from cityward.services.rollouts import RolloutRequest, RolloutView, Target
from cityward.sim.advisories import ODM_ADVISORY

MAX_FIRMWARE_PRODUCTS = 5
DEMO_IMAGE = b"cityward demo firmware image\n" * 2048
# The demo's devices run at --time-scale 0.03 (livecity.py): an upgrade takes 90 x 0.03 = 2.7 s, a
# slow device's six times that with progress every 3 s. Declared so, a device that bricks is given
# up on after 9 s of silence, not after the 15 minutes a real product's upgrade may take.
DEMO_UPGRADE_MINUTES = "0.15"


def _publish_firmware(platform: Platform, caller: Caller, seed: int, brand: str, model: str, version: str) -> int:
    """Play the manufacturer: its key (once) and a signed image of `version`."""
    from cryptography.hazmat.primitives import serialization

    from cityward.sim.keys import key_id, public_key, sign_firmware

    kid = key_id(brand, seed)
    if kid not in {k.key_id for k in firmware.list_keys(platform.uow)}:
        raw = public_key(brand, seed).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        firmware.register_key(platform.uow, caller, brand, kid, base64.b64encode(raw).decode())
    existing = [r for r in firmware.list_releases(platform.uow)
                if (r.brand, r.model, r.version) == (brand, model, version)]
    if existing:
        return existing[0].id
    catalog.save_product(platform.uow, caller, {"brand": brand, "model": model,
                                                "upgrade_minutes": DEMO_UPGRADE_MINUTES})
    image = DEMO_IMAGE + f"{brand} {model} {version}\n".encode()
    _sha, signature, _kid = sign_firmware(brand, model, version, image, seed)
    return firmware.add_release(platform.uow, caller, platform.settings.firmware_dir, brand=brand, model=model,
                                version=version, image=image, signature=signature, key_id=kid,
                                notes="demo: the catalog's minimum version").id


def _start(platform: Platform, caller: Caller, approver: Caller, req: RolloutRequest) -> int | None:
    try:
        rid, summary = rollouts.create(platform.uow, caller, req, platform.settings.firmware_dir)
    except Exception as exc:
        err.print(f"[yellow]{req.name}: {exc}[/]")
        return None
    note = f" · approved by {approver.actor} (critical zones: {', '.join(summary.approval_zones)})" \
        if summary.needs_approval else ""
    if summary.needs_approval:
        rollouts.approve(platform.uow, approver, rid)
    rollouts.start(platform.uow, caller, rid)
    out.print(f"rollout {rid}: {req.name} — {summary.devices:,} devices in {len(summary.waves)} waves, "
              f"{len(summary.skipped):,} skipped{note}")
    return rid


def _remediate_advisory(platform: Platform, caller: Caller, approver: Caller,
                        seed: int) -> tuple[list[int], set[tuple[str, str]]]:
    """The known exploited advisory first: its manufacturer's fixed firmware, one rollout per
    affected product (the relabeled cameras get their ODM's image). Returns the rollouts and the
    (true) products they upgrade."""
    started: list[int] = []
    covered: set[tuple[str, str]] = set()
    for fix in remediation.fixes(platform.uow, caller, ODM_ADVISORY):
        if fix.fixed_version is None:
            continue
        _publish_firmware(platform, caller, seed, fix.brand, fix.model, fix.fixed_version)
        out.print(f"firmware {fix.product} {fix.fixed_version} (the fix of {ODM_ADVISORY}) signed by its "
                  f"manufacturer, verified and added")
    for fix in remediation.from_advisory(platform.uow, caller, ODM_ADVISORY, WaveOptions(
            canary=3, percentages=(30, 100), concurrency=150, timeout_s=20, retries=1, failure_threshold=25,
            success_threshold=70), platform.settings.firmware_dir, create=True):
        if fix.rollout is None:
            err.print(f"[yellow]{ODM_ADVISORY} on {fix.product}: {fix.problem}[/]")
            continue
        if fix.plan is not None and fix.plan.needs_approval:
            rollouts.approve(platform.uow, approver, fix.rollout)
        rollouts.start(platform.uow, caller, fix.rollout)
        out.print(f"rollout {fix.rollout}: {ODM_ADVISORY} (known exploited) on {fix.product} → {fix.release_version}"
                  f" — {len(fix.devices):,} devices, including the brands relabeling it")
        started.append(fix.rollout)
        covered.add((fix.brand, fix.model))
    return started, covered


def _panel(views: list[RolloutView]) -> Group:
    panels = []
    for v in views:
        bars = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                        TextColumn("{task.fields[tally]}"))
        for w in v.waves:
            done = sum(w.counts.get(s, 0) for s in ("succeeded", "failed", "cancelled"))
            tally = " ".join(f"{s} {w.counts[s]:,}" for s in ("succeeded", "failed", "running") if w.counts.get(s))
            bars.add_task(f"wave {w.number}", total=max(w.size, 1), completed=done, tally=tally)
        panels.append(Panel(bars, title=f"rollout {v.id}: {v.name} — {v.status}"))
    return Group(*panels)


def _summary(v: RolloutView) -> str:
    """One plain line per rollout: its status, its count and the wave it is in."""
    wave = next((w.number for w in v.waves if w.started_at is not None and w.finished_at is None), None)
    failed = v.counts.get("failed", 0)
    return (f"rollout {v.id}: {v.status} · {v.done:,} of {v.total:,} done"
            + (f", {failed:,} failed" if failed else "")
            + (f" · wave {wave} of {len(v.waves)}" if wave is not None else ""))


def _follow(platform: Platform, caller: Caller, ids: list[int], running: Future[Any]) -> None:
    """Progress until every rollout in `ids` is over: live panels on a terminal, a plain line per
    rollout whenever it moves (at most every 2 s) in a file; a paused one is shown and resumed (the
    demo's operator accepts the failures it stopped for)."""
    resumed: set[tuple[int, str | None]] = set()
    views = [rollouts.get(platform.uow, caller, r) for r in ids]
    deadline = time.monotonic() + 600
    live = Live(_panel(views), console=out, refresh_per_second=4) if out.is_terminal else None
    label = f"rollout{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))} in waves"
    shown: dict[int, str] = {}
    printed_at = 0.0
    with live if live is not None else step(label, out) as shown_as:
        while not running.done() and time.monotonic() < deadline:
            time.sleep(0.5)
            views = [rollouts.get(platform.uow, caller, r) for r in ids]
            if live is not None:
                live.update(_panel(views))
            elif time.monotonic() - printed_at >= PLAIN_EVERY:
                printed_at = time.monotonic()
                for v in views:
                    line = _summary(v)
                    if shown.get(v.id) != line:
                        shown[v.id] = line
                        if isinstance(shown_as, Step):
                            shown_as.say(line)
            for v in views:
                # Each wave can stop once at its own threshold: the operator resumes every stop.
                if v.status == "paused" and (v.id, v.control_reason) not in resumed:
                    out.print(f"[yellow]rollout {v.id} paused: {escape(v.control_reason or '')}[/] — the "
                              "operator reviews the failed devices and resumes", soft_wrap=not out.is_terminal)
                    rollouts.resume(platform.uow, caller, v.id)
                    resumed.add((v.id, v.control_reason))
            if all(v.status in ("succeeded", "finished with failures", "aborted") for v in views):
                return


def remediate(platform: Platform, caller: Caller, city_live: LiveCity, seed: int) -> list[RolloutView]:
    """Rotate default passwords, then upgrade outdated firmware, across the city in waves; a wave
    that crosses its failure threshold pauses, and the demo's operator resumes it."""
    approver = organizations.local_operator(platform.uow, "night-shift")  # a second city operator
    executor = Executor(platform.uow, secret_box(platform), platform.settings.secret_key_bytes(),
                        ExecutorOptions(mqtt_url=city_live.url, firmware_store=platform.settings.firmware_dir,
                                        tick=0.3, name="demo"))
    stop = asyncio.Event()
    running: Future[Any] = asyncio.run_coroutine_threadsafe(executor.run(stop), city_live.loop)
    done: list[int] = []
    try:
        rid = _start(platform, caller, approver, RolloutRequest(
            "rotate default passwords (CRED-001)", Operation.ROTATE_PASSWORD, Target(failing_rule="CRED-001"),
            WaveOptions(canary=5, percentages=(25, 100), concurrency=100, timeout_s=30, retries=1,
                        failure_threshold=20)))
        if rid is not None:
            _follow(platform, caller, [rid], running)
            done.append(rid)
        upgrades, covered = _remediate_advisory(platform, caller, approver, seed)
        outdated = [p for p in audit.failing_by_product(platform.uow, caller, "FW-001")
                    if p.min_firmware and (p.manufacturer, p.model) not in covered]
        for n, product in enumerate(outdated[:MAX_FIRMWARE_PRODUCTS]):
            brand, model, version, devices = product.manufacturer, product.model, str(product.min_firmware), \
                product.device_ids
            release = _publish_firmware(platform, caller, seed, brand, model, version)
            out.print(f"firmware {brand} {model} {version} signed by its manufacturer, verified and added "
                      f"({len(devices):,} devices below it)")
            strict = n == 0  # the first one stops at its second failure: upgrades in this city can fail
            rid = _start(platform, caller, approver, RolloutRequest(
                f"upgrade {brand} {model} to {version} (FW-001)", Operation.UPGRADE_FIRMWARE,
                Target(failing_rule="FW-001", device_ids=tuple(devices)),
                WaveOptions(canary=3, percentages=(100,), concurrency=150, timeout_s=15, retries=0,
                            failure_count=2 if strict else None, failure_threshold=100 if strict else 25,
                            success_threshold=0 if strict else 75),
                release=release))
            if rid is not None:
                upgrades.append(rid)
        if upgrades:
            _follow(platform, caller, upgrades, running)
            done += upgrades
    finally:
        city_live.loop.call_soon_threadsafe(stop.set)
        running.result(60)
    return [rollouts.get(platform.uow, caller, r) for r in done]
