"""Benchmark: N simulated devices publishing state through Mosquitto into PostgreSQL.

    .venv/bin/python bench/ingest_state.py              # 14,000 devices (10,000+ on MQTT), 5,000 msg/s, 60 s
    .venv/bin/python bench/ingest_state.py --devices 2000 --rate 2000 --seconds 20

What runs, all real: a fresh PostgreSQL database (created on --pg, dropped afterwards) holding the
demo city's inventory; `cityward mqtt provision` accounts (one per device) in a private Mosquitto
with the generated password file and ACL; the simulated city as a separate process (`python -m
cityward.sim run --rate R`), every device on its own connection; and cityward's connector
(MQTT link → ingestor → batched writes) in this process.

It prints: connect time of the devices, state messages published (by the simulator), received,
persisted and superseded (coalesced before writing) per second over the measured window, latency
receive → commit and device timestamp → commit (p50/p99), everything dropped (cityward's counters
and Mosquitto's own `$SYS` average of dropped messages over the last minute), and peak memory of
the platform and of the simulator.
A measurement, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from procstat import status_kb  # bench/procstat.py: the script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from cityward.adapters.mosquitto import BrokerAccount  # noqa: E402
from cityward.adapters.secretbox import SecretBox  # noqa: E402
from cityward.bootstrap import bootstrap  # noqa: E402
from cityward.config import load_settings  # noqa: E402
from cityward.services import broker, organizations, setup  # noqa: E402
from cityward.services.connectivity import ConnectOptions, Connector  # noqa: E402

GOAL_DEVICES, GOAL_RATE = 10_000, 5_000
OBSERVER_PASSWORD = secrets.token_urlsafe(24)  # the bench's own broker account, new every run


def _install(url: str, devices: int, seed: int, workdir: Path) -> tuple[Any, Any, dict[str, Any]]:
    from cityward.adapters.inventory_files import FileFormat
    from cityward.entrypoints.cli.demo import install_city
    from cityward.services import inventory
    from cityward.sim.city import generate_city, write_inventory_csv

    platform = bootstrap(load_settings(database_url=url, secret_key_file=workdir / "key"))
    city = generate_city(devices, seed)
    setup.initialize(platform.uow, city.name, "local:bench")
    caller = organizations.local_operator(platform.uow, "bench")
    install_city(platform, caller, city)
    csv_path = workdir / "inventory.csv"
    write_inventory_csv(city, csv_path, seed)
    with csv_path.open("rb") as fh:
        inventory.import_devices(platform.uow, caller, fh, "inventory.csv", FileFormat.CSV)
    box = SecretBox(platform.settings.secret_key_bytes())
    report = broker.provision(platform.uow, caller, box, workdir / "broker", broker_url="mqtt://127.0.0.1:1883")
    bundle = json.loads(Path(report.files["bundle"]).read_text())
    return platform, box, bundle


def _start_mosquitto(workdir: Path, bundle: dict[str, Any], platform_pw: str) -> tuple[subprocess.Popen[bytes], int]:
    from tests.brokers import free_port

    from cityward.adapters.mosquitto import write_broker_files

    accounts = [BrokerAccount("cityward-platform", platform_pw, "platform")]
    accounts += [BrokerAccount(d, v["password"], "device") for d, v in bundle["devices"].items()]
    accounts.append(BrokerAccount("bench-observer", OBSERVER_PASSWORD, "platform"))  # reads $SYS below
    port = free_port()
    files = write_broker_files(workdir / "mosquitto", accounts, port=port,
                               user="root" if os.geteuid() == 0 else None)
    with files.config.open("a") as conf:
        # Let the platform's session queue absorb bursts rather than drop (Mosquitto's default is 1000).
        conf.write("max_queued_messages 1000000\nmax_inflight_messages 1000\nsys_interval 1\n")
    with files.acl_file.open("a") as acl:
        acl.write("\nuser bench-observer\ntopic read $SYS/#\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(files.config)], stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "mosquitto.log", "wb"))  # noqa: SIM115
    for _ in range(100):
        try:
            import socket
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"mosquitto did not start; see {workdir / 'mosquitto.log'}")


async def _watch_drops(port: int, latest: dict[str, float]) -> None:
    """Mosquitto 2.0 publishes no total of dropped messages, only averages; keep the worst
    one-minute average seen during the run (connected before the load, so it is not starved)."""
    import aiomqtt
    async with aiomqtt.Client("127.0.0.1", port, username="bench-observer", password=OBSERVER_PASSWORD,
                              identifier=f"obs-{uuid.uuid4().hex[:6]}") as c:
        await c.subscribe("$SYS/broker/load/publish/dropped/1min")
        async for m in c.messages:
            value = float(bytes(m.payload).decode())
            latest["dropped_per_min"] = max(latest.get("dropped_per_min", 0.0), value)


async def _measure(platform: Any, box: Any, port: int, sim: subprocess.Popen[str], control: str,
                   warmup: float, seconds: float) -> dict[str, Any]:
    connector = Connector(platform.uow, box, ConnectOptions(mqtt_url=f"mqtt://127.0.0.1:{port}",
                                                            sweep_interval=3600, poll_interval=3600))
    stop = asyncio.Event()
    drops: dict[str, float] = {}
    watcher = asyncio.create_task(_watch_drops(port, drops))
    running = asyncio.create_task(connector.run(stop))
    await asyncio.wait_for(connector.connected.wait(), 30)
    await asyncio.sleep(warmup)
    async with httpx.AsyncClient() as http:
        async def published() -> int:
            r = await http.get(f"http://{control}/sim/stats")
            return int(r.json().get("messages_published", 0))
        s0, p0, t0 = connector.ingestor.stats, await published(), time.monotonic()
        a0 = (s0.received, s0.persisted, s0.superseded)
        connector.ingestor.stats.latency_ms.clear()
        connector.ingestor.stats.e2e_ms.clear()
        await asyncio.sleep(seconds)
        s1, p1, t1 = connector.ingestor.stats, await published(), time.monotonic()
    elapsed = t1 - t0
    stats = connector.stats()
    result = {
        "seconds": round(elapsed, 1),
        "published_per_s": round((p1 - p0) / elapsed),
        "received_per_s": round((s1.received - a0[0]) / elapsed),
        "persisted_per_s": round((s1.persisted - a0[1]) / elapsed),
        "superseded_per_s": round((s1.superseded - a0[2]) / elapsed),
        "latency_p50_ms": stats["latency_p50_ms"], "latency_p99_ms": stats["latency_p99_ms"],
        "e2e_p50_ms": stats["e2e_p50_ms"], "e2e_p99_ms": stats["e2e_p99_ms"],
        "rejected": stats["rejected"], "dropped": stats["dropped"], "batches": stats["batches"],
        "write_seconds": stats["write_seconds"],
        "mosquitto_dropped_per_min": drops.get("dropped_per_min"),
        "platform_peak_mb": round(status_kb("VmHWM") / 1024), "sim_peak_mb": round(status_kb("VmHWM", sim.pid) / 1024),
    }
    stop.set()
    await running
    watcher.cancel()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # About 72 % of the demo city's devices speak MQTT: 14,000 devices give over 10,000 on MQTT.
    ap.add_argument("--devices", type=int, default=14_000)
    ap.add_argument("--rate", type=float, default=GOAL_RATE, help="state messages per second, in total")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured window")
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()

    db = f"cityward_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    url = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{db}"
    mosquitto: subprocess.Popen[bytes] | None = None
    sim: subprocess.Popen[str] | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="cityward-bench-") as tmp:
            work = Path(tmp)
            t = time.monotonic()
            platform, box, bundle = _install(url, args.devices, args.seed, work)
            print(f"inventory and {len(bundle['devices']):,} broker accounts ready in {time.monotonic() - t:.1f} s",
                  flush=True)
            platform_pw = broker.platform_password(platform.uow, box)
            assert platform_pw is not None
            mosquitto, port = _start_mosquitto(work, bundle, platform_pw)
            bundle_path = work / "broker" / "device-credentials.json"
            t = time.monotonic()
            sim = subprocess.Popen(
                [sys.executable, "-m", "cityward.sim", "run", "--devices", str(args.devices), "--seed",
                 str(args.seed), "--mqtt-url", f"mqtt://127.0.0.1:{port}", "--credentials", str(bundle_path),
                 "--no-http", "--rate", str(args.rate), "--state-interval", "3600", "--connect-concurrency", "200"],
                stdout=subprocess.PIPE, stderr=open(work / "sim.log", "w"), text=True)  # noqa: SIM115
            assert sim.stdout is not None
            ready = sim.stdout.readline().strip()
            if not ready.startswith("READY"):
                raise SystemExit(f"simulator failed: {(work / 'sim.log').read_text()[-2000:]}")
            connect_s = time.monotonic() - t
            fields = dict(p.split("=", 1) for p in ready.split()[1:])
            print(f"{fields['mqtt']} MQTT devices connected in {connect_s:.1f} s ({ready})", flush=True)
            control = fields["control"].removeprefix("http://").rstrip("/")
            result = asyncio.run(_measure(platform, box, port, sim, control, args.warmup, args.seconds))
            result.update(devices=args.devices, mqtt_devices=int(fields["mqtt"]), rate_asked=args.rate,
                          connect_seconds=round(connect_s, 1))
            platform.close()
    finally:
        for proc in (sim, mosquitto):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(20)
        with psycopg.connect(args.pg, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"state ingestion: {result['mqtt_devices']:,} MQTT devices → Mosquitto → PostgreSQL")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("connect_seconds", "published_per_s", "received_per_s", "persisted_per_s", "superseded_per_s",
                "latency_p50_ms", "latency_p99_ms", "e2e_p50_ms", "e2e_p99_ms", "dropped", "mosquitto_dropped_per_min",
                "rejected", "platform_peak_mb", "sim_peak_mb"):
        table.add_row(key, str(result[key]))
    Console().print(table)
    goal = (result["mqtt_devices"] >= GOAL_DEVICES and result["persisted_per_s"] + result["superseded_per_s"]
            >= GOAL_RATE and not result["dropped"] and not result["mosquitto_dropped_per_min"])
    print(json.dumps(result))
    print(f"goal (10,000 devices, >= 5,000 state messages/s stored, nothing dropped): {'met' if goal else 'NOT met'}")


if __name__ == "__main__":
    main()
