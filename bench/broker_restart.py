"""Benchmark: a broker restart in the middle of a firmware rollout on the simulated city.

    .venv/bin/python bench/broker_restart.py                       # 2,000 devices, one-machine executor, SQLite
    .venv/bin/python bench/broker_restart.py --firmware-devices 300 # a quick run
    .venv/bin/python bench/broker_restart.py --pg postgresql://postgres@127.0.0.1:5432/postgres --workers 2

What runs, all real, on this one machine (as bench/rollout.py, whose city, platform and simulator
set-up it reuses): the demo city's inventory in a fresh database; a private Mosquitto with one
provisioned account per MQTT device (`persistence false`, as `cityward mqtt provision` writes
it); the simulated city as its own process; an `upgrade_firmware` rollout to N healthy devices of
one product, carried out by the one-machine executor in this process or, with --workers, by that
many `cityward worker` processes (PostgreSQL only). Once --kill-at of the devices are done the
broker is killed with SIGKILL and started again on the same port and files --down seconds later.

It prints, from the database and the simulator's own counters: devices succeeded and failed (and
why), devices that applied the upgrade more than once (under any command ids), devices recorded
failed although they run the new firmware, the time from `rollout start` to the last result, the
platform's reconnections and the commands it asked again. A measurement, not a test: it asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rollout as rb  # bench/rollout.py: the city, the platform, the simulator (the script's folder is on sys.path)
from pgtemp import Database  # bench/pgtemp.py

from cityward.adapters.mosquitto import BrokerAccount, write_broker_files
from cityward.domain.rollouts import Operation, WaveOptions
from cityward.services import credentials, rollouts
from cityward.services.rollouts import RolloutRequest, Target

console = rb.console


@dataclass
class Broker:
    """A private Mosquitto that can be killed and started again on the same port and files."""

    config: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([binary, "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"mosquitto exited: {self.log.read_text()[-1000:]}") from None
                time.sleep(0.02)
        raise SystemExit("mosquitto did not listen within 4 s")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextmanager
def mosquitto(work: Path, accounts: list[BrokerAccount]) -> Iterator[Broker]:
    port = rb._free_port()
    files = write_broker_files(work / "mosquitto", accounts, port=port, user="root" if os.geteuid() == 0 else None)
    with files.config.open("a") as conf:  # as bench/rollout.py: room for a burst of results
        conf.write("max_queued_messages 1000000\nmax_inflight_messages 1000\n")
    broker = Broker(files.config, port, work / "mosquitto.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@dataclass
class Strike:
    at_s: float = 0.0  # seconds from `rollout start` to the kill
    done_at_kill: int = 0
    down_s: float = 0.0  # kill → the restarted broker accepts connections


async def _strike(bench: rb.Bench, rid: int, broker: Broker, args: argparse.Namespace, total: int, t0: float,
                  strike: Strike) -> None:
    if args.kill_at > 1:  # the same rollout without a restart, for comparison
        return
    while True:
        c = await asyncio.to_thread(bench.counts, rid)
        done = c.get("succeeded", 0) + c.get("failed", 0)
        if done >= args.kill_at * total:
            break
        await asyncio.sleep(0.1)
    strike.at_s, strike.done_at_kill = time.monotonic() - t0, done
    killed = time.monotonic()
    broker.kill()
    console.print(f"  [red]kill -9 mosquitto[/] at {strike.at_s:.1f} s ({done:,} of {total:,} done); "
                  f"back in {args.down:g} s")
    await asyncio.sleep(args.down)
    await asyncio.to_thread(broker.start)
    strike.down_s = time.monotonic() - killed


def _finished(bench: rb.Bench, rid: int) -> bool:
    return rollouts.get(bench.platform.uow, bench.caller, rid).status in ("succeeded", "finished with failures",
                                                                          "paused", "aborted")


async def _one_machine(bench: rb.Bench, rid: int, broker: Broker, args: argparse.Namespace,
                       total: int) -> tuple[float, Strike, dict[str, int]]:
    executor = bench.executor("restart")
    strike = Strike()
    async with executor.session():
        t0 = time.monotonic()
        await asyncio.to_thread(rollouts.start, bench.platform.uow, bench.caller, rid)
        striking = asyncio.create_task(_strike(bench, rid, broker, args, total, t0, strike))
        while True:
            busy = await executor.tick()
            if rid not in busy and not executor.inflight and striking.done():
                break
            await asyncio.sleep(executor.options.tick)
        wall = time.monotonic() - t0
        await striking
        # getattr: the script also measures the code from before links reconnected (for comparison).
        link = {"reconnects": getattr(executor, "reconnects", 0), "reasked_silent": executor.reasked,
                "reasked_after_reconnect": getattr(executor._mqtt, "reasked_after_reconnect", 0),
                "left_claimed_link_down": getattr(executor, "left_claimed", 0), "commands_sent": executor.sent}
    return wall, strike, link


async def _workers(bench: rb.Bench, rid: int, broker: Broker, args: argparse.Namespace, total: int,
                   url: str) -> tuple[float, Strike, dict[str, int]]:
    env = {**os.environ, "CITYWARD_DATABASE_URL": url, "CITYWARD_SECRET_KEY_FILE": str(bench.work / "secret.key"),
           "CITYWARD_MQTT_URL": broker.url, "CITYWARD_FIRMWARE_DIR": str(bench.store),
           "PYTHONPATH": str(rb.ROOT / "src")}
    logs = {f"w{i}": (bench.work / f"w{i}.log").open("w") for i in range(1, args.workers + 1)}
    procs = {name: subprocess.Popen([sys.executable, "-m", "cityward.entrypoints.cli.main", "worker", "--name", name,
                                     "--concurrency", str(args.worker_concurrency)], env=env, stdout=log,
                                    stderr=subprocess.STDOUT) for name, log in logs.items()}
    strike = Strike()
    try:
        await asyncio.sleep(3)  # the workers' start-up (imports, links) is not the rollout's time
        t0 = time.monotonic()
        await asyncio.to_thread(rollouts.start, bench.platform.uow, bench.caller, rid)
        striking = asyncio.create_task(_strike(bench, rid, broker, args, total, t0, strike))
        while not (striking.done() and await asyncio.to_thread(_finished, bench, rid)):
            if time.monotonic() - t0 > args.limit:
                console.print("[red]the rollout did not finish within --limit[/]")
                break
            await asyncio.sleep(0.5)
        wall = time.monotonic() - t0
        await striking
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs.values():
            log.close()
    text = "\n".join((bench.work / f"{name}.log").read_text(errors="replace") for name in logs)
    link = {"reconnects": text.count("reconnected to"), "left_claimed_link_down": text.count("stays claimed")}
    return wall, strike, link


def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"br{uuid.uuid4().hex[:6]}-"
    plan_args = argparse.Namespace(**{**vars(args), "devices": 0, "http_devices": 0})
    with console.status("choosing the devices…"):
        plan = rb.plan_city(plan_args, prefix)
    ids = plan.fw_ids
    console.print(f"city of {plan.size:,} devices (seed {args.seed}): {len(ids):,} {' '.join(plan.fw_product)} "
                  f"devices ({len(plan.fw_injected)} faulty)")
    result: dict[str, Any] = {"devices": len(ids), "city_devices": plan.size, "seed": args.seed,
                              "executor": f"{args.workers} workers" if args.workers else "one machine",
                              "down_s": args.down, "kill_at": args.kill_at}
    with tempfile.TemporaryDirectory(prefix="cityward-bench-restart-") as tmp:
        work = Path(tmp)
        database = Database(args.pg) if args.pg else None
        url = database.url if database else f"sqlite:///{work / 'cityward.db'}"
        result["database"] = "postgresql" if database else "sqlite"
        if database:
            database.__enter__()
        try:
            with console.status("installing the city, importing, provisioning…"):
                bench = rb.install(url, work, plan, plan_args)
                bundle, accounts = rb.provision(bench)
            handover = work / "handover.csv"
            with mosquitto(work, accounts) as broker, \
                    rb.simulator(plan, plan_args, broker.url, bundle, handover, work) as sim:
                bench.mqtt_url, bench.sim = broker.url, sim
                with handover.open("rb") as fh:
                    credentials.import_handover(bench.platform.uow, bench.caller, bench.box, fh, "handover.csv")
                release = rb.add_release(bench)
                opts = WaveOptions(canary=max(5, len(ids) // 100), percentages=(100,), concurrency=args.concurrency,
                                   timeout_s=args.fw_timeout, retries=0, failure_threshold=100, success_threshold=0)
                rid, _n, _plan_s = bench.create(RolloutRequest(
                    "bench: firmware through a broker restart", Operation.UPGRADE_FIRMWARE,
                    Target(device_ids=tuple(ids)), opts, release=release))
                if args.workers:
                    wall, strike, link = asyncio.run(_workers(bench, rid, broker, args, len(ids), url))
                else:
                    wall, strike, link = asyncio.run(_one_machine(bench, rid, broker, args, len(ids)))
                actions = bench.actions(rid)
                views = asyncio.run(rb.sim_views(sim, ids))
            bench.platform.close()
        finally:
            if database:
                database.__exit__(None, None, None)
    injected = set(plan.fw_injected)
    status = {d: actions[d][0] for d in ids}
    applied_twice = [d for d in ids if sum(views[d]["applied"].values()) > 1]
    failed = [d for d in ids if status[d] == "failed"]
    result.update({
        "succeeded": sum(1 for d in ids if status[d] == "succeeded"),
        "failed": len(failed),
        "failed_healthy": sum(1 for d in failed if d not in injected),
        "failed_by_fault": dict(Counter(str(views[d]["fault"]) for d in failed)),
        "other": dict(Counter(s for s in status.values() if s not in ("succeeded", "failed"))),
        "failed_details": dict(Counter(re.sub(r"\S+/cmd", "…/cmd", (actions[d][3] or ""))[:90]
                                       for d in failed).most_common(5)),
        "applied_twice": len(applied_twice),
        "recorded_failed_with_new_firmware": sum(1 for d in failed if views[d]["firmware_version"] == rb.FW_VERSION),
        "succeeded_without_new_firmware": sum(1 for d in ids if status[d] == "succeeded"
                                              and views[d]["firmware_version"] != rb.FW_VERSION),
        "attempts_above_1": sum(1 for d in ids if actions[d][2] > 1),
        "start_to_done_s": round(wall, 2), "kill_at_s": round(strike.at_s, 2), "done_at_kill": strike.done_at_kill,
        "broker_down_s": round(strike.down_s, 2), "link": link,
    })
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--firmware-devices", type=int, default=2_000, help="devices of the firmware rollout")
    ap.add_argument("--fw-failure-share", type=float, default=0.0,
                    help="share of the target the simulator makes fail or brick their upgrade (default: none)")
    ap.add_argument("--down", type=float, default=2.0, help="seconds between the kill and the broker's restart")
    ap.add_argument("--kill-at", type=float, default=0.3,
                    help="share of the devices done when the broker is killed (above 1: never, for comparison)")
    ap.add_argument("--workers", type=int, default=0, help="carry it out with this many `cityward worker` "
                                                           "processes (needs --pg); 0: the one-machine executor")
    ap.add_argument("--worker-concurrency", type=int, default=500, help="jobs at once per worker")
    ap.add_argument("--pg", help="a PostgreSQL admin URL: run on a fresh database created there (default: SQLite)")
    ap.add_argument("--concurrency", type=int, default=1000, help="device actions in flight")
    ap.add_argument("--fw-timeout", type=float, default=60.0,
                    help="seconds per firmware attempt (at 20 s, as bench/rollout.py, the simulator's slow devices "
                         "time out on a busy machine without any restart: issue 15 point 2)")
    ap.add_argument("--fw-upgrade-minutes", type=float, default=0.1,
                    help="the firmware product's declared upgrade_minutes (as bench/rollout.py)")
    ap.add_argument("--time-scale", type=float, default=0.02, help="the simulator's --time-scale")
    ap.add_argument("--tick", type=float, default=0.2, help="the executor's tick")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--city-devices", type=int, help="size of the simulated city (default: just enough)")
    ap.add_argument("--limit", type=float, default=600.0, help="give up after this many seconds (workers)")
    args = ap.parse_args()
    if args.workers and not args.pg:
        ap.error("--workers needs --pg (the workers share the work through PostgreSQL)")
    rb.OUT.mkdir(parents=True, exist_ok=True)
    console.print(f"cityward broker-restart benchmark: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
                  f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    result = run(args)
    r = result
    console.print(f"[bold]{r['devices']:,} devices[/] ({r['executor']}, {r['database']}), broker killed at "
                  f"{r['kill_at_s']:.1f} s with {r['done_at_kill']:,} done, down {r['broker_down_s']:.1f} s: "
                  f"[bold]{r['succeeded']:,} succeeded, {r['failed']:,} failed "
                  f"({r['failed_healthy']} of them healthy), {r['applied_twice']} applied twice[/], "
                  f"{r['recorded_failed_with_new_firmware']} recorded failed with the new firmware; "
                  f"start → done {r['start_to_done_s']:.1f} s; link: {r['link']}")
    if r["failed_details"]:
        console.print(f"  failures: {r['failed_details']}")
    print(json.dumps(result, default=str))
    (rb.OUT / "broker-restart-last.json").write_text(json.dumps(result, default=str, indent=1))


if __name__ == "__main__":
    main()
