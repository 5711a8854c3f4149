"""Benchmark: bulk operations (rollouts) on the simulated city, through a real Mosquitto and real sockets.

    .venv/bin/python bench/rollout.py                  # 10,000 MQTT (config), 2,000 (firmware), 1,000 HTTP + Ansible
    .venv/bin/python bench/rollout.py --devices 300 --firmware-devices 200 --http-devices 100   # a quick run
    .venv/bin/python bench/rollout.py --skip-ansible   # without the Ansible comparison
    .venv/bin/python bench/rollout.py --pg postgresql://postgres@127.0.0.1:5432/postgres   # PostgreSQL

What runs, all real, on this one machine: cityward's database (a fresh SQLite file in a temporary
directory, or with --pg a fresh PostgreSQL database created on that admin connection and dropped
afterwards) holding the demo city's inventory; one `cityward mqtt provision` account per MQTT device
in a private Mosquitto started with the generated password file and ACL; the simulated city as a
separate process (`python -m cityward.sim run --time-scale 0.02`: every MQTT device on its own
connection, every HTTP device on its own loopback address); the installer's HTTP password handover
imported; the rollout executor (`services.rollout_executor.Executor`) driven in this process.

It measures, in one run:
(a) a `set_config` rollout to N MQTT devices: devices/s from `rollout start` to the last device result
    stored (goal: >= 500 devices/s);
(b) an `upgrade_firmware` rollout (signed by the simulated manufacturer) to M devices of one product in
    4 waves (a canary, then 10 %, 50 %, 100 %), with about 2 % of them devices the simulator makes fail
    or brick their upgrade: total duration, pauses (a paused wave is resumed, as an operator would, and
    counted), and a correctness check against the simulator's own counters;
(c) the orchestrator's CPU time per device action: this process's CPU time (every thread: executor,
    drivers, batch writer and, with SQLite, the database) during each rollout, divided by the commands
    it sent; the simulator and Mosquitto run in their own processes and are not counted;
(d) the same configuration change to K HTTP devices, once by cityward (a `set_config` rollout over
    HTTP) and once by Ansible (ansible-core, `ansible.builtin.uri`, forks=50, connection local, one
    POST of the protocol's `set_config` command per device with its admin password from the
    installer's handover): both durations and the ratio (goal: cityward >= 20 x faster). Between the
    two the devices are set back to another configuration (not timed), so both runs change every
    device; both are checked against the simulator (config hash, and each command id applied once).

Devices the simulator plays with the `offline` fault (they never come online) are left out of every
target; the firmware target's share of failing devices is chosen with --fw-failure-share. A
measurement, not a test: it asserts nothing; the checks are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import math
import os
import re
import resource
import select as selectors_
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pgtemp import Database  # bench/pgtemp.py
from procstat import status_kb  # bench/procstat.py: the script's folder is on sys.path
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import func, select  # noqa: E402

from cityward.adapters.mosquitto import BrokerAccount, write_broker_files  # noqa: E402
from cityward.adapters.secretbox import SecretBox  # noqa: E402
from cityward.adapters.storage.models import RolloutActionRow, RolloutRow  # noqa: E402
from cityward.bootstrap import Platform, bootstrap  # noqa: E402
from cityward.config import load_settings  # noqa: E402
from cityward.domain.organizations import Caller  # noqa: E402
from cityward.domain.rollouts import Control, Operation, WaveOptions  # noqa: E402
from cityward.services import configs, organizations, rollouts  # noqa: E402
from cityward.services.rollout_executor import Executor, ExecutorOptions  # noqa: E402
from cityward.services.rollouts import RolloutRequest, Target  # noqa: E402
from cityward.sim.city import COLUMNS, generate_city, iter_device_rows  # noqa: E402
from cityward.sim.device import build_device  # noqa: E402
from cityward.sim.profile import load_profile  # noqa: E402

GOAL_CONFIG_RATE = 500.0  # devices/s, set_config over MQTT
GOAL_ANSIBLE_RATIO = 20.0  # cityward at least 20 x faster than Ansible
FAULTY = ("upgrade_fails", "upgrade_bricks")  # what the firmware part injects
HEALTHY = (None, "slow", "flaky")  # devices that come online and upgrade fine (flaky links come back)
FW_VERSION = "99.0.0"
FW_IMAGE = b"cityward bench firmware image, signed by the simulated manufacturer\n" * 1024  # 69 KB
CONFIG = {"report_interval_s": 900, "log_level": "warning", "telemetry": True, "ntp_server": "ntp.aurelia.lan",
          "bench": "rollout.py"}
RESET = {**CONFIG, "log_level": "info", "report_interval_s": 300}
console = Console(width=140)


# --- the city: which devices, which faults ------------------------------------------------------


@dataclass
class CityPlan:
    size: int
    prefix: str
    rows: list[dict[str, str]]
    faults: dict[str, str | None]
    config_ids: list[str]
    fw_product: tuple[str, str]  # the true manufacturer's (brand, model)
    fw_ids: list[str]
    fw_injected: list[str]  # devices of fw_ids the simulator makes fail or brick their upgrade
    fw_natural_share: float  # the profile's share of failing upgrades on that product (incl. offline)
    http_ids: list[str]
    excluded_offline: int

    def row(self, device_id: str) -> dict[str, str]:
        return self._by_id[device_id]

    def __post_init__(self) -> None:
        self._by_id = {r["id"]: r for r in self.rows}


def _try_city(size: int, seed: int, prefix: str, args: argparse.Namespace) -> CityPlan | str:
    """The targets in a demo city of `size` devices, or what it lacks."""
    profile = load_profile()
    rows = list(iter_device_rows(generate_city(size, seed, profile), seed, id_prefix=prefix))
    anchor = datetime.now(UTC)
    faults = {r["id"]: build_device(r, seed=seed, profile=profile, anchor=anchor,
                                    base_id=r["id"][len(prefix):]).fault for r in rows}
    mqtt = [r for r in rows if r["protocol"] == "mqtt"]
    reachable = [r for r in mqtt if faults[r["id"]] != "offline"]
    http = [r["id"] for r in rows if r["protocol"] == "http" and faults[r["id"]] != "offline"]
    by_product = Counter(profile.root(r["brand"], r["model"]) for r in mqtt)
    product = by_product.most_common(1)[0][0]
    of_product = [r["id"] for r in mqtt if profile.root(r["brand"], r["model"]) == product]
    healthy = [d for d in of_product if faults[d] in HEALTHY]
    faulty = [d for d in of_product if faults[d] in FAULTY]
    injected = round(args.firmware_devices * args.fw_failure_share)
    lacking = []
    if len(reachable) < args.devices:
        lacking.append(f"{len(reachable)} of {args.devices} MQTT devices")
    if len(healthy) < args.firmware_devices - injected or len(faulty) < injected:
        lacking.append(f"{len(healthy)}/{len(faulty)} healthy/faulty {product[0]} {product[1]} devices")
    if len(http) < args.http_devices:
        lacking.append(f"{len(http)} of {args.http_devices} HTTP devices")
    if lacking:
        return ", ".join(lacking)
    natural = sum(1 for d in of_product if faults[d] in (*FAULTY, "offline")) / len(of_product)
    return CityPlan(size, prefix, rows, faults, [r["id"] for r in reachable[:args.devices]], product,
                    healthy[:args.firmware_devices - injected] + faulty[:injected], faulty[:injected], natural,
                    http[:args.http_devices], sum(1 for r in rows if faults[r["id"]] == "offline"))


def plan_city(args: argparse.Namespace, prefix: str) -> CityPlan:
    """The smallest demo city (growing by 10 %) that holds every target."""
    size = args.city_devices or max(200, math.ceil(args.devices / 0.70), math.ceil(args.firmware_devices / 0.22),
                                    math.ceil(args.http_devices / 0.20))
    for _ in range(30):
        found = _try_city(size, args.seed, prefix, args)
        if isinstance(found, CityPlan):
            return found
        if args.city_devices:
            raise SystemExit(f"--city-devices {size}: the city has only {found}")
        size = int(size * 1.1) + 50
    raise SystemExit(f"no city size found for the targets: {found}")


# --- infrastructure: database, broker, simulator ------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def mosquitto(work: Path, accounts: list[BrokerAccount], *, tuned: bool) -> Iterator[str]:
    """A private Mosquitto knowing only `accounts`; yields its mqtt:// URL."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_port()
    files = write_broker_files(work / "mosquitto", accounts, port=port, user="root" if os.geteuid() == 0 else None)
    if tuned:
        with files.config.open("a") as conf:
            # As bench/ingest_state.py: the executor's session absorbs a burst of results instead of
            # Mosquitto dropping what exceeds its default queue of 1,000 messages per client.
            conf.write("max_queued_messages 1000000\nmax_inflight_messages 1000\n")
    log = (work / "mosquitto.log").open("wb")
    proc = subprocess.Popen([binary, "-c", str(files.config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit(f"mosquitto exited: {(work / 'mosquitto.log').read_text()[-1000:]}") from None
                time.sleep(0.1)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        _stop(proc, grace=10)
        log.close()


def _stop(proc: subprocess.Popen[Any], *, grace: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after `grace` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class Sim:
    process: subprocess.Popen[str]
    control: str
    ready: str
    ready_s: float


@contextmanager
def simulator(plan: CityPlan, args: argparse.Namespace, mqtt_url: str, bundle: Path, handover: Path,
              work: Path) -> Iterator[Sim]:
    """The simulated city as its own process, until it prints READY (every device up)."""
    cmd = [sys.executable, "-m", "cityward.sim", "run", "--devices", str(plan.size), "--seed", str(args.seed),
           "--id-prefix", plan.prefix, "--mqtt-url", mqtt_url, "--credentials", str(bundle),
           "--handover", str(handover), "--time-scale", str(args.time_scale), "--state-interval", "3600",
           "--connect-concurrency", "200"]
    log = (work / "simulator.log").open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ,
                                                                                         "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        start, line = time.monotonic(), ""
        with console.status(f"simulated city: {plan.size:,} devices coming online…"):
            while time.monotonic() - start < 600:
                readable, _w, _x = selectors_.select([proc.stdout], [], [], 0.5)
                if readable:
                    line = proc.stdout.readline()
                    if line.startswith("READY") or not line:
                        break
                if proc.poll() is not None:
                    break
        if not line.startswith("READY"):
            raise SystemExit(f"the simulator did not come up: {line!r}\n{(work / 'simulator.log').read_text()[-2000:]}")
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        yield Sim(proc, fields["control"].rstrip("/"), line.strip(), time.monotonic() - start)
    finally:
        _stop(proc, grace=20)
        log.close()
        shutil.copyfile(work / "simulator.log", OUT / "rollout-simulator.log")


async def sim_views(sim: Sim, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The simulator's own record of each device (its control API); passwords dropped at once."""
    gate = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=sim.control, timeout=10, trust_env=False) as client:
        async def one(device_id: str) -> tuple[str, dict[str, Any]]:
            async with gate:
                for attempt in range(3):
                    try:
                        response = await client.get(f"/sim/devices/{device_id}")
                        break
                    except httpx.TimeoutException:
                        if attempt == 2:
                            raise
                        console.print(f"  [yellow]the simulator's control API did not answer for {device_id}; "
                                      "asking again[/]")
                response.raise_for_status()
                view = dict(response.json())
                view.pop("password", None)
                return device_id, view
        return dict(await asyncio.gather(*(one(d) for d in ids)))


# --- the platform ---------------------------------------------------------------------------------


@dataclass
class Bench:
    platform: Platform
    caller: Caller
    approver: Caller
    box: SecretBox
    work: Path
    plan: CityPlan
    args: argparse.Namespace
    mqtt_url: str = ""
    sim: Sim | None = None
    setup: dict[str, float] = field(default_factory=dict)

    @property
    def store(self) -> Path:
        return self.work / "firmware"

    def executor(self, name: str) -> Executor:
        return Executor(self.platform.uow, self.box, self.platform.settings.secret_key_bytes(),
                        ExecutorOptions(mqtt_url=self.mqtt_url, firmware_store=self.store, tick=self.args.tick,
                                        name=f"bench-{name}"))

    def create(self, req: RolloutRequest) -> tuple[int, int, float]:
        """Plan and store a rollout (approved by a second city user where a critical zone needs it):
        (id, devices planned, seconds)."""
        start = time.perf_counter()
        rid, summary = rollouts.create(self.platform.uow, self.caller, req, self.store)
        if summary.needs_approval:
            rollouts.approve(self.platform.uow, self.approver, rid)
        if summary.skipped:
            reasons = Counter(s.reason for s in summary.skipped)
            console.print(f"  [yellow]{len(summary.skipped)} skipped by the plan: {dict(reasons)}[/]")
        return rid, summary.devices, time.perf_counter() - start

    def actions(self, rid: int) -> dict[str, tuple[str, str | None, int, str | None, float]]:
        """device → (status, command id of its last attempt, attempts, detail, seconds from start to its result)."""
        with self.platform.uow() as uow:
            started = uow.session.scalar(select(RolloutRow.started_at).where(RolloutRow.id == rid))
            rows = uow.session.execute(select(
                RolloutActionRow.device_id, RolloutActionRow.status, RolloutActionRow.command_id,
                RolloutActionRow.attempts, RolloutActionRow.detail, RolloutActionRow.updated_at)
                .where(RolloutActionRow.rollout_id == rid)).all()
        assert started is not None
        return {d: (s, c, a, de, (at - started).total_seconds()) for d, s, c, a, de, at in rows}

    def span(self, rid: int) -> float:
        """Seconds from `rollout start` to the last device result stored (the database's own times)."""
        with self.platform.uow() as uow:
            started = uow.session.scalar(select(RolloutRow.started_at).where(RolloutRow.id == rid))
            last = uow.session.scalar(select(func.max(RolloutActionRow.updated_at)).where(
                RolloutActionRow.rollout_id == rid, RolloutActionRow.status != "skipped"))
        assert started is not None and last is not None
        return (last - started).total_seconds()

    def waves(self, rid: int) -> list[dict[str, Any]]:
        """Each wave: size, seconds from `rollout start` to its start and its end, verdict."""
        from cityward.adapters.storage.models import RolloutWaveRow

        with self.platform.uow() as uow:
            started = uow.session.scalar(select(RolloutRow.started_at).where(RolloutRow.id == rid))
            rows = uow.session.scalars(select(RolloutWaveRow).where(RolloutWaveRow.rollout_id == rid)
                                       .order_by(RolloutWaveRow.number)).all()
            assert started is not None
            return [{"wave": w.number, "size": w.size, "verdict": w.verdict,
                     "start_s": round((w.started_at - started).total_seconds(), 2) if w.started_at else None,
                     "end_s": round((w.finished_at - started).total_seconds(), 2) if w.finished_at else None}
                    for w in rows]

    def counts(self, rid: int) -> dict[str, int]:
        with self.platform.uow() as uow:
            return {s: n for s, n in uow.session.execute(
                select(RolloutActionRow.status, func.count()).where(RolloutActionRow.rollout_id == rid)
                .group_by(RolloutActionRow.status))}

    def control(self, rid: int) -> tuple[str, str | None]:
        with self.platform.uow() as uow:
            row = uow.session.execute(select(RolloutRow.control, RolloutRow.control_reason)
                                      .where(RolloutRow.id == rid)).one()
        return row[0], row[1]


def install(url: str, work: Path, plan: CityPlan, args: argparse.Namespace) -> Bench:
    from cityward.adapters.inventory_files import FileFormat
    from cityward.entrypoints.cli.demo import install_city
    from cityward.services import inventory, setup

    start = time.perf_counter()
    platform = bootstrap(load_settings(database_url=url, secret_key_file=work / "secret.key",
                                       firmware_dir=work / "firmware"))
    city = generate_city(plan.size, args.seed)
    setup.initialize(platform.uow, city.name, "local:bench")
    caller = organizations.local_operator(platform.uow, "bench")
    approver = organizations.local_operator(platform.uow, "bench-approver")  # a second city user
    install_city(platform, caller, city)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(plan.rows)
    inventory.import_devices(platform.uow, caller, io.BytesIO(buf.getvalue().encode()), "inventory.csv",
                             FileFormat.CSV)
    bench = Bench(platform, caller, approver, SecretBox(platform.settings.secret_key_bytes()), work, plan, args)
    bench.setup["install_import_s"] = time.perf_counter() - start
    return bench


def provision(bench: Bench) -> tuple[Path, list[BrokerAccount]]:
    from cityward.services import broker

    start = time.perf_counter()
    report = broker.provision(bench.platform.uow, bench.caller, bench.box, bench.work / "broker",
                              broker_url="mqtt://127.0.0.1:1883")
    bundle = json.loads(Path(report.files["bundle"]).read_text())
    platform_pw = broker.platform_password(bench.platform.uow, bench.box)
    assert platform_pw is not None
    accounts = [BrokerAccount("cityward-platform", platform_pw, "platform")]
    accounts += [BrokerAccount(d, v["password"], "device") for d, v in bundle["devices"].items()]
    bench.setup["provision_s"] = time.perf_counter() - start
    return Path(report.files["bundle"]), accounts


def add_release(bench: Bench) -> int:
    """Play the manufacturer: register its key, sign the image; the catalog verifies and stores it."""
    import base64

    from cryptography.hazmat.primitives import serialization

    from cityward.services import firmware
    from cityward.sim.keys import key_id, public_key, sign_firmware

    brand, model = bench.plan.fw_product
    kid = key_id(brand, bench.args.seed)
    raw = public_key(brand, bench.args.seed).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    firmware.register_key(bench.platform.uow, bench.caller, brand, kid, base64.b64encode(raw).decode())
    _sha, signature, _kid = sign_firmware(brand, model, FW_VERSION, FW_IMAGE, bench.args.seed)
    # How long the upgrade takes on this product, scaled like the simulator: a device silent for
    # longer (a bricked one) is given up on after this, not followed for the 15-minute default.
    from cityward.services import catalog
    catalog.save_product(bench.platform.uow, bench.caller, {
        "brand": brand, "model": model, "upgrade_minutes": str(bench.args.fw_upgrade_minutes)})
    return firmware.add_release(bench.platform.uow, bench.caller, bench.store, brand=brand, model=model,
                                version=FW_VERSION, image=FW_IMAGE, signature=signature, key_id=kid).id


# --- running one rollout --------------------------------------------------------------------------


@dataclass
class Run:
    rollout: int
    devices: int
    plan_s: float
    wall_s: float = 0.0  # start → the executor has nothing left to do
    span_s: float = 0.0  # start → last result stored (database times)
    cpu_s: float = 0.0
    sent: int = 0  # commands sent (every attempt, re-asks not counted)
    reasked: int = 0  # commands sent again under the same id to a device that went silent
    pauses: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    pause_reasons: list[str] = field(default_factory=list)
    waves: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.devices / self.span_s if self.span_s else 0.0

    @property
    def cpu_ms_per_action(self) -> float:
        return 1000 * self.cpu_s / max(self.sent, 1)

    def as_json(self) -> dict[str, Any]:
        return {"rollout": self.rollout, "devices": self.devices, "plan_s": round(self.plan_s, 3),
                "wall_s": round(self.wall_s, 3), "start_to_last_result_s": round(self.span_s, 3),
                "devices_per_s": round(self.rate, 1), "cpu_s": round(self.cpu_s, 3), "commands_sent": self.sent,
                "reasked_same_id": self.reasked,
                "cpu_ms_per_action": round(self.cpu_ms_per_action, 3),
                "cpu_share_of_a_core": round(self.cpu_s / self.wall_s, 3) if self.wall_s else None,
                "pauses": self.pauses,
                "pause_reasons": self.pause_reasons, "counts": self.counts,
                "waves": self.waves}


async def _drive(bench: Bench, run: Run, label: str, progress: Progress) -> None:
    executor = bench.executor(re.sub(r"\W+", "", label.split()[0]) or "run")
    task = progress.add_task(label, total=run.devices, tally="")
    async with executor.session():  # broker link and firmware server up before the clock starts
        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.to_thread(rollouts.start, bench.platform.uow, bench.caller, run.rollout)
        polled = 0.0
        while True:
            busy = await executor.tick()
            if run.rollout not in busy and not executor.inflight:
                control, reason = await asyncio.to_thread(bench.control, run.rollout)
                if control == Control.PAUSED:  # the operator looks at the failures and goes on
                    run.pauses += 1
                    run.pause_reasons.append(reason or "")
                    progress.console.print(f"  [yellow]{label}: paused ({reason}); resuming[/]")
                    await asyncio.to_thread(rollouts.resume, bench.platform.uow, bench.caller, run.rollout)
                    continue
                break
            if time.monotonic() - polled >= 1.0:
                polled = time.monotonic()
                c = await asyncio.to_thread(bench.counts, run.rollout)
                done = c.get("succeeded", 0) + c.get("failed", 0) + c.get("cancelled", 0)
                progress.update(task, completed=done, tally=" ".join(f"{k} {v:,}" for k, v in sorted(c.items())))
            await asyncio.sleep(executor.options.tick)
        run.wall_s, run.cpu_s = time.monotonic() - t0, time.process_time() - cpu0
        run.sent, run.reasked = executor.sent, executor.reasked
    run.counts = await asyncio.to_thread(bench.counts, run.rollout)
    run.span_s = await asyncio.to_thread(bench.span, run.rollout)
    run.waves = await asyncio.to_thread(bench.waves, run.rollout)
    progress.update(task, completed=run.devices,
                    tally=" ".join(f"{k} {v:,}" for k, v in sorted(run.counts.items())))


def execute(bench: Bench, req: RolloutRequest, label: str) -> Run:
    rid, devices, plan_s = bench.create(req)
    run = Run(rid, devices, plan_s)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[tally]}"), console=console,
                  refresh_per_second=4) as progress:
        asyncio.run(_drive(bench, run, label, progress))
    return run


def config_check(bench: Bench, rid: int, ids: list[str], digest: str) -> dict[str, Any]:
    """Every device the rollout says succeeded runs the configuration and applied that command once."""
    assert bench.sim is not None
    actions = bench.actions(rid)
    views = asyncio.run(sim_views(bench.sim, ids))
    bad_hash = [d for d in ids if actions[d][0] == "succeeded" and views[d]["config_hash"] != digest]
    not_once = [d for d in ids if actions[d][0] == "succeeded" and views[d]["applied"].get(actions[d][1]) != 1]
    twice = [d for d in ids if any(n != 1 for n in views[d]["applied"].values())]
    failed = {d: actions[d][3] for d in ids if actions[d][0] != "succeeded"}
    order = sorted(ids, key=lambda d: actions[d][4])
    last = order[-5:]
    times = [actions[d][4] for d in order]
    return {"devices": len(ids), "succeeded": len(ids) - len(failed), "not_succeeded": len(failed),
            "not_succeeded_details": dict(Counter((v or "")[:80] for v in failed.values()).most_common(5)),
            "config_hash_wrong": len(bad_hash), "command_not_applied_once": len(not_once),
            "any_command_applied_twice": len(twice),
            "result_at_s": {"p50": round(times[len(times) // 2], 2), "p90": round(times[int(len(times) * 0.9)], 2),
                            "p99": round(times[int(len(times) * 0.99)], 2), "max": round(times[-1], 2)},
            "last_results": [{"device": d, "at_s": round(actions[d][4], 2), "attempts": actions[d][2],
                              "fault": views[d]["fault"], "detail": (actions[d][3] or "")[:60]} for d in last],
            "ok": not bad_hash and not not_once and not twice and not failed}


# --- (a) configuration push over MQTT -------------------------------------------------------------


def part_config(bench: Bench) -> dict[str, Any]:
    ids = bench.plan.config_ids
    desired = configs.set_desired(bench.platform.uow, bench.caller, "bench: config push", {}, CONFIG)
    opts = WaveOptions(canary=bench.args.canary, percentages=(100,), concurrency=bench.args.concurrency,
                       timeout_s=bench.args.config_timeout, retries=1)
    req = RolloutRequest("bench: set_config over MQTT", Operation.SET_CONFIG, Target(device_ids=tuple(ids)), opts,
                         config=desired.name)
    run = execute(bench, req, f"(a) set_config → {len(ids):,} MQTT devices")
    check = config_check(bench, run.rollout, ids, desired.config_hash)
    console.print(f"  (a) {run.devices:,} devices in {run.span_s:.2f} s = [bold]{run.rate:,.0f} devices/s[/]; "
                  f"check: {'ok' if check['ok'] else check}")
    return {**run.as_json(), "check": check, "wave_plan": f"canary {opts.canary}, 100 %",
            "concurrency": opts.concurrency}


# --- (b) firmware in 4 waves ------------------------------------------------------------------------


def part_firmware(bench: Bench) -> dict[str, Any]:
    assert bench.sim is not None
    ids, injected = bench.plan.fw_ids, set(bench.plan.fw_injected)
    release = add_release(bench)
    canary = max(5, len(ids) // 100)
    opts = WaveOptions(canary=canary, percentages=(10, 50, 100), concurrency=bench.args.concurrency,
                       timeout_s=bench.args.fw_timeout, retries=0, failure_threshold=5, success_threshold=90)
    req = RolloutRequest("bench: firmware in waves", Operation.UPGRADE_FIRMWARE, Target(device_ids=tuple(ids)), opts,
                         release=release)
    run = execute(bench, req, f"(b) upgrade_firmware → {len(ids):,} devices, 4 waves")
    actions = bench.actions(run.rollout)
    views = asyncio.run(sim_views(bench.sim, ids))
    succeeded = [d for d in ids if actions[d][0] == "succeeded"]
    failed = [d for d in ids if actions[d][0] == "failed"]
    other = [d for d in ids if actions[d][0] not in ("succeeded", "failed")]
    check = {
        "devices": len(ids), "injected_faulty": len(injected),
        "injected_by_fault": dict(Counter(views[d]["fault"] for d in injected)),
        "succeeded": len(succeeded), "failed": len(failed), "other": len(other),
        "failed_share": round(len(failed) / len(ids), 4),
        "succeeded_without_new_firmware": sum(1 for d in succeeded if views[d]["firmware_version"] != FW_VERSION),
        "failed_healthy": sum(1 for d in failed if views[d]["fault"] is None),
        "failed_other_fault": sum(1 for d in failed if views[d]["fault"] not in (None, *FAULTY)),
        "faulty_not_failed": sum(1 for d in injected if actions[d][0] != "failed"),
        "any_command_applied_twice": sum(1 for d in ids if any(n != 1 for n in views[d]["applied"].values())),
        "retried": sum(1 for d in ids if actions[d][2] > 1),
        "unexpected": [{"device": d, "status": actions[d][0], "fault": views[d]["fault"],
                        "firmware": views[d]["firmware_version"], "detail": (actions[d][3] or "")[:120]}
                       for d in ids if (actions[d][0] == "failed") != (d in injected)][:10],
    }
    check["ok"] = not (check["succeeded_without_new_firmware"] or check["failed_healthy"]
                       or check["any_command_applied_twice"] or other)
    console.print(f"  (b) {run.devices:,} devices in {run.wall_s:.1f} s, {run.pauses} pause(s), "
                  f"{len(failed)} failed ({len(injected)} injected); check: {'ok' if check['ok'] else check}")
    return {**run.as_json(), "check": check, "wave_sizes": [w["size"] for w in run.waves], "timeout_s": opts.timeout_s,
            "product": " ".join(bench.plan.fw_product), "version": FW_VERSION,
            "profile_failure_share": round(bench.plan.fw_natural_share, 4)}


# --- (d) HTTP: cityward and Ansible -------------------------------------------------------------


def part_http(bench: Bench, handover: Path) -> dict[str, Any]:
    ids = bench.plan.http_ids
    out: dict[str, Any] = {"devices": len(ids)}
    opts = WaveOptions(canary=bench.args.canary, percentages=(100,), concurrency=bench.args.http_concurrency,
                       timeout_s=bench.args.config_timeout, retries=1)
    desired = configs.set_desired(bench.platform.uow, bench.caller, "bench: config over HTTP", {}, CONFIG)
    run = execute(bench, RolloutRequest("bench: set_config over HTTP", Operation.SET_CONFIG,
                                        Target(device_ids=tuple(ids)), opts, config=desired.name),
                  f"(d) cityward set_config → {len(ids):,} HTTP devices")
    check = config_check(bench, run.rollout, ids, desired.config_hash)
    out["cityward"] = {**run.as_json(), "check": check}
    console.print(f"  (d) cityward: {len(ids):,} HTTP devices in {run.span_s:.2f} s; check: "
                  f"{'ok' if check['ok'] else check}")
    if bench.args.skip_ansible:
        return out
    # Back to another configuration (not timed), so that Ansible changes every device too.
    reset = configs.set_desired(bench.platform.uow, bench.caller, "bench: reset", {}, RESET)
    back = execute(bench, RolloutRequest("bench: reset before Ansible", Operation.SET_CONFIG,
                                         Target(device_ids=tuple(ids)), opts, config=reset.name),
                   "    reset (not timed)")
    reset_check = config_check(bench, back.rollout, ids, reset.config_hash)
    out["reset_ok"] = reset_check["ok"]
    out["ansible"] = ansible(bench, ids, handover, desired.config_hash)
    if out["ansible"].get("seconds"):  # against cityward's plan + start → nothing left to do
        out["ratio"] = out["ansible"]["seconds"] / (run.plan_s + run.wall_s)
    return out


def _ansible_files(bench: Bench, ids: list[str], handover: Path, digest: str,
                   directory: Path) -> tuple[Path, Path, dict[str, str]]:
    """An inventory of the HTTP devices (address, admin password from the installer's handover, a
    command id each) and a playbook that POSTs the protocol's set_config command to each."""
    with handover.open(newline="") as fh:
        passwords = {r["device_id"]: r["password"] for r in csv.DictReader(fh)}
    command_ids = {d: str(uuid.uuid4()) for d in ids}
    hosts = {d: {"device_address": bench.plan.row(d)["address"], "admin_password": passwords[d],
                 "command_id": command_ids[d]} for d in ids}
    inventory = {"devices": {"hosts": hosts, "vars": {"ansible_connection": "local",
                                                      "ansible_python_interpreter": sys.executable}}}
    directory.mkdir(mode=0o700)
    inv_path = directory / "inventory.yml"
    fd = os.open(inv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds the admin passwords
    with os.fdopen(fd, "w") as fh:
        json.dump(inventory, fh)  # JSON is YAML
    now = datetime.now(UTC)
    command = {"v": 1, "command_id": "{{ command_id }}", "action": "set_config",
               "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
               "expires_at": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "params": {"config": CONFIG, "config_hash": digest}}
    playbook = [{"name": "cityward set_config over each device's HTTP API (docs/protocol.md §3)",
                 "hosts": "devices", "gather_facts": False,
                 "tasks": [{"name": "POST the set_config command", "ansible.builtin.uri": {
                     "url": "http://{{ device_address }}/cityward/v1/commands", "method": "POST",
                     "user": "admin", "password": "{{ admin_password }}", "force_basic_auth": True,
                     "body_format": "json", "body": command, "status_code": [200, 202], "use_proxy": False,
                     "timeout": 30}}]}]
    if bench.args.ansible_poll:  # follow each command to its terminal result, as cityward does
        auth = {"user": "admin", "password": "{{ admin_password }}", "force_basic_auth": True, "use_proxy": False}
        playbook[0]["tasks"].append({
            "name": "GET the command's result until it is terminal", "register": "result",
            "ansible.builtin.uri": {"url": "http://{{ device_address }}/cityward/v1/commands/{{ command_id }}",
                                    **auth, "timeout": 30},
            "until": "result.json.status in ['succeeded', 'failed', 'rejected']", "retries": 40, "delay": 0.25,
            "failed_when": "result.json.status != 'succeeded'"})
    play_path = directory / "set_config.yml"
    play_path.write_text(json.dumps(playbook, indent=1))
    return inv_path, play_path, command_ids


def ansible(bench: Bench, ids: list[str], handover: Path, digest: str) -> dict[str, Any]:
    binary = Path(sys.executable).parent / "ansible-playbook"
    if not binary.exists():
        return {"error": f"{binary} not found: .tools/bin/uv add --dev ansible-core (or uv sync)"}
    directory = bench.work / "ansible"
    inv, play, command_ids = _ansible_files(bench, ids, handover, digest, directory)
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_LOCAL_TEMP": str(directory / "local-tmp"),
           "ANSIBLE_REMOTE_TEMP": str(directory / "remote-tmp"), "ANSIBLE_HOME": str(directory / "home"),
           "ANSIBLE_FORKS": "50", "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_CONFIG": str(directory / "none.cfg"), "ANSIBLE_LOCALHOST_WARNING": "False"}
    log_path = OUT / "rollout-ansible.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    with log_path.open("w") as log, console.status(f"(d) Ansible: uri POST to {len(ids):,} HTTP devices, forks=50…"):
        proc = subprocess.run([str(binary), "-i", str(inv), "-f", "50", str(play)], cwd=directory, env=env,
                              stdout=log, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    text = log_path.read_text(errors="replace")
    recap = re.findall(r"^(\S+)\s+: ok=(\d+)\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)", text, re.M)
    tasks = 2 if bench.args.ansible_poll else 1
    ok_hosts = sum(1 for _h, ok, unreach, failed in recap if ok == str(tasks) and unreach == "0" and failed == "0")
    assert bench.sim is not None
    views = asyncio.run(sim_views(bench.sim, ids))
    check = {"hosts_ok": ok_hosts, "hosts_in_recap": len(recap),
             "config_hash_wrong": sum(1 for d in ids if views[d]["config_hash"] != digest),
             "command_not_applied_once": sum(1 for d in ids if views[d]["applied"].get(command_ids[d]) != 1),
             "any_command_applied_twice": sum(1 for d in ids if any(n != 1 for n in views[d]["applied"].values()))}
    check["ok"] = (ok_hosts == len(ids) and not check["config_hash_wrong"] and not check["command_not_applied_once"]
                   and not check["any_command_applied_twice"])
    fatal = next((line for line in text.splitlines() if line.startswith("fatal:")), None)
    console.print(f"  (d) Ansible: {len(ids):,} HTTP devices in {seconds:.1f} s (exit {proc.returncode}); check: "
                  f"{'ok' if check['ok'] else check}" + (f"\n      first failure: {fatal[:200]}" if fatal else ""))
    return {"seconds": round(seconds, 3), "exit": proc.returncode, "cpu_s": round(cpu, 3),
            "cpu_ms_per_device": round(1000 * cpu / len(ids), 3), "forks": 50, "check": check,
            "follows_results": bool(bench.args.ansible_poll),
            "log": str(log_path.relative_to(ROOT))}


# --- report ------------------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]NOT met[/]"


def _ok(ok: bool) -> str:
    return "[green]ok[/]" if ok else "[red]FAILED[/]"


def report(result: dict[str, Any]) -> None:
    table = Table(title=f"cityward rollout benchmark ({result['database']}, city of {result['city_devices']:,} "
                        f"devices, seed {result['seed']})")
    for name, justify in (("measure", "left"), ("value", "right"), ("goal", "right"), ("", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    s = result["setup"]
    table.add_row("setup: install + import / provision / simulator ready",
                  f"{s['install_import_s']:.1f} / {s['provision_s']:.1f} / {s['simulator_ready_s']:.1f} s", "", "")
    a = result.get("config")
    if a:
        table.add_row(f"(a) set_config over MQTT: {a['devices']:,} devices, start → last result",
                      f"{a['start_to_last_result_s']:.2f} s", "", f"plan {a['plan_s']:.2f} s, {a['wave_plan']}")
        table.add_row("(a) devices per second, end to end", f"{a['devices_per_s']:,.0f} /s",
                      f"≥ {GOAL_CONFIG_RATE:.0f} /s", _met(a["devices_per_s"] >= GOAL_CONFIG_RATE))
        c = a["check"]
        table.add_row("(a) check: config hash on every device, command applied once", f"{c['succeeded']:,} succeeded",
                      "", _ok(c["ok"]) + (f" {c['not_succeeded']} not succeeded" if c["not_succeeded"] else "")
                      + f"; {a['reasked_same_id']} re-asked (same id)")
    b = result.get("firmware")
    if b:
        c = b["check"]
        table.add_row(f"(b) upgrade_firmware {b['product']} → {b['version']}: {b['devices']:,} devices, "
                      f"waves {'/'.join(str(w) for w in b['wave_sizes'])}", f"{b['wall_s']:.1f} s", "",
                      f"start → last result {b['start_to_last_result_s']:.1f} s")
        table.add_row("(b) pauses (resumed by the script)", str(b["pauses"]), "", "")
        table.add_row("(b) injected failures (simulator faults) / failed",
                      f"{c['injected_faulty']} / {c['failed']} ({100 * c['failed_share']:.1f} %)", "≈ 2 %",
                      f"profile's own share on this product: {100 * b['profile_failure_share']:.1f} %")
        table.add_row("(b) check: new firmware on every success, failures only on faulty devices, no command "
                      "applied twice", f"{c['succeeded']:,} succeeded", "", _ok(c["ok"]))
    for key, label in (("config", "(a)"), ("firmware", "(b)")):
        r = result.get(key)
        if r:
            table.add_row(f"(c) CPU per device action, {label}: {r['cpu_s']:.2f} s / {r['commands_sent']:,} commands",
                          f"{r['cpu_ms_per_action']:.2f} ms", "",
                          f"{100 * r['cpu_share_of_a_core']:.0f} % of a core over {r['wall_s']:.1f} s")
    d = result.get("http")
    if d:
        cw = d["cityward"]
        table.add_row(f"(c) CPU per device action, (d) cityward over HTTP: {cw['cpu_s']:.2f} s / "
                      f"{cw['commands_sent']:,} commands", f"{cw['cpu_ms_per_action']:.2f} ms", "",
                      f"{100 * cw['cpu_share_of_a_core']:.0f} % of a core over {cw['wall_s']:.1f} s")
        table.add_row(f"(d) cityward set_config over HTTP, {d['devices']:,} devices: plan + start → done",
                      f"{cw['plan_s'] + cw['wall_s']:.2f} s", "",
                      _ok(cw["check"]["ok"]) + f" (start → last result {cw['start_to_last_result_s']:.2f} s)")
        an = d.get("ansible")
        if an and "seconds" in an:
            how = "POST, then GET until terminal" if an.get("follows_results") else "POST only"
            table.add_row(f"(d) Ansible, uri {how}, forks=50", f"{an['seconds']:.1f} s", "",
                          _ok(an["check"]["ok"]) + f" (CPU {an['cpu_ms_per_device']:.0f} ms/device)")
            table.add_row("(d) Ansible / cityward", f"{d['ratio']:.1f} x", f"≥ {GOAL_ANSIBLE_RATIO:.0f} x",
                          _met(d["ratio"] >= GOAL_ANSIBLE_RATIO))
        elif an:
            table.add_row("(d) Ansible", "not run", "", an.get("error", ""))
    table.add_row("peak memory: this process / simulator",
                  f"{result['peak_mb']['bench']:,} / {result['peak_mb']['simulator']:,} MB", "", "")
    console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=10_000, help="(a) MQTT devices of the configuration push")
    ap.add_argument("--firmware-devices", type=int, default=2_000, help="(b) devices of the firmware rollout")
    ap.add_argument("--http-devices", type=int, default=1_000, help="(d) HTTP devices, cityward and Ansible")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--skip-ansible", action="store_true", help="(d) without the Ansible half")
    ap.add_argument("--ansible-poll", action="store_true",
                    help="(d) Ansible also GETs each command's result until it is terminal (cityward always does)")
    ap.add_argument("--pg", help="a PostgreSQL admin URL (e.g. postgresql://postgres@127.0.0.1:5432/postgres): "
                                 "run on a fresh database created there (default: a temporary SQLite file)")
    ap.add_argument("--concurrency", type=int, default=1000, help="device actions in flight per rollout")
    ap.add_argument("--http-concurrency", type=int, default=1000,
                    help="device actions in flight per rollout over HTTP (the HTTP driver pools 200 connections)")
    ap.add_argument("--canary", type=int, default=10, help="canary wave of the configuration rollouts")
    ap.add_argument("--fw-failure-share", type=float, default=0.02,
                    help="share of the firmware target that the simulator makes fail or brick")
    ap.add_argument("--config-timeout", type=float, default=10.0, help="seconds per set_config attempt")
    ap.add_argument("--fw-timeout", type=float, default=20.0, help="seconds per firmware attempt")
    ap.add_argument("--fw-upgrade-minutes", type=float, default=0.1,
                    help="the firmware product's declared upgrade_minutes (0.1 = 6 s: 90 s x --time-scale 0.02, x 3)")
    ap.add_argument("--time-scale", type=float, default=0.02, help="the simulator's --time-scale")
    ap.add_argument("--tick", type=float, default=0.2, help="the executor's tick")
    ap.add_argument("--city-devices", type=int, help="size of the simulated city (default: just enough)")
    ap.add_argument("--stock-broker", action="store_true",
                    help="Mosquitto exactly as `cityward mqtt provision` configures it (default queue limits)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    console.print(f"cityward rollout benchmark: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
                  f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    prefix = f"rb{uuid.uuid4().hex[:6]}-"  # moves the HTTP devices off addresses another simulator may hold
    with console.status("choosing the devices…"):
        plan = plan_city(args, prefix)
    console.print(f"city of {plan.size:,} devices (seed {args.seed}): {len(plan.config_ids):,} MQTT targets, "
                  f"{len(plan.fw_ids):,} {' '.join(plan.fw_product)} devices ({len(plan.fw_injected)} faulty), "
                  f"{len(plan.http_ids):,} HTTP devices; {plan.excluded_offline} offline devices left out")
    shown = {**vars(args), "pg": re.sub(r"://([^:/@]+):.*@", r"://\1:***@", args.pg) if args.pg else None}
    result: dict[str, Any] = {"seed": args.seed, "city_devices": plan.size, "args": shown}
    with tempfile.TemporaryDirectory(prefix="cityward-bench-rollout-") as tmp:
        work = Path(tmp)
        database = Database(args.pg) if args.pg else None
        url = database.url if database else f"sqlite:///{work / 'cityward.db'}"
        result["database"] = "postgresql" if database else "sqlite"
        if database:
            database.__enter__()
        try:
            with console.status("installing the city and importing the inventory…"):
                bench = install(url, work, plan, args)
            with console.status("provisioning broker accounts…"):
                bundle, accounts = provision(bench)
            console.print(f"installed and imported in {bench.setup['install_import_s']:.1f} s; "
                          f"{len(accounts) - 1:,} broker accounts in {bench.setup['provision_s']:.1f} s")
            handover = work / "handover.csv"
            with mosquitto(work, accounts, tuned=not args.stock_broker) as mqtt_url, \
                    simulator(plan, args, mqtt_url, bundle, handover, work) as sim:
                bench.mqtt_url, bench.sim = mqtt_url, sim
                bench.setup["simulator_ready_s"] = sim.ready_s
                console.print(f"simulator ready in {sim.ready_s:.1f} s: {sim.ready.split(' control=')[0]}")
                from cityward.services import credentials
                with handover.open("rb") as fh:
                    credentials.import_handover(bench.platform.uow, bench.caller, bench.box, fh, "handover.csv")
                if args.devices:
                    result["config"] = part_config(bench)
                if args.firmware_devices:
                    result["firmware"] = part_firmware(bench)
                if args.http_devices:
                    result["http"] = part_http(bench, handover)
                result["peak_mb"] = {"bench": round(status_kb("VmHWM") / 1024),
                                     "simulator": round(status_kb("VmHWM", sim.process.pid) / 1024)}
            result["setup"] = {k: round(v, 2) for k, v in bench.setup.items()}
            bench.platform.close()
        finally:
            if database:
                database.__exit__(None, None, None)
    report(result)
    print(json.dumps(result, default=str))
    (OUT / "rollout-last.json").write_text(json.dumps(result, default=str, indent=1))


if __name__ == "__main__":
    main()
