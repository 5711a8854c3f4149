"""Benchmark: import a simulated city's inventory (CSV) into SQLite and PostgreSQL.

    .venv/bin/python bench/import_devices.py                      # 1,000,000 rows (+ 200,000)
    .venv/bin/python bench/import_devices.py --rows 100000 --small 20000 --backends sqlite

For each backend and each size it creates a fresh database (a SQLite file under bench/out/, or a
PostgreSQL database it creates on --pg and drops afterwards), sets the city up through the
services (city, organizations, zones, duties, catalog), then imports the file with
`cityward.services.inventory.import_devices` in a fresh child process, and imports it again
(every row an update). Each import runs in its own process so its memory is measured alone:
"RSS before" is the child's resident set just before the import (interpreter, SQLAlchemy,
engine), "peak" is the child's high-water mark (VmHWM) after it, and "growth" the difference,
which is what the import itself needed. The database server's own memory is not included.

`--cprofile` runs the imports under cProfile and prints where the time goes (slower).
A measurement, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from procstat import status_kb  # bench/procstat.py: the script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "src"))

from cityward.sim.city import (  # noqa: E402
    DemoCity,
    generate_city,
    write_inventory_csv,
)

GOAL_SECONDS = 60.0  # 1,000,000 rows into PostgreSQL (the target)


# --- helpers shared by parent and child ------------------------------------------------------


def _platform(url: str) -> Any:
    from cityward.bootstrap import bootstrap
    from cityward.config import load_settings

    return bootstrap(load_settings(database_url=url, secret_key_file=OUT / "bench.secret"))


# --- child: one import, measured alone --------------------------------------------------------


def child(url: str, path: Path, profile: Path | None) -> None:
    from cityward.adapters.inventory_files import FileFormat
    from cityward.services import inventory, organizations

    plat = _platform(url)
    caller = organizations.local_operator(plat.uow, "bench")
    rss_before = status_kb("VmRSS")
    hwm_before = status_kb("VmHWM")
    samples: list[int] = []

    def progress(rows: int, _bytes: int) -> None:
        samples.append(status_kb("VmRSS"))

    def run() -> Any:
        with path.open("rb") as f:
            return inventory.import_devices(plat.uow, caller, f, path.name, FileFormat.CSV,
                                            progress=progress)

    start = time.perf_counter()
    if profile is not None:
        import cProfile

        prof = cProfile.Profile()
        report = prof.runcall(run)
        prof.dump_stats(str(profile))
    else:
        report = run()
    seconds = time.perf_counter() - start
    plat.close()
    cut = len(samples) // 4  # RSS in the import's second quarter vs its last: flat or growing?
    print(json.dumps({
        "seconds": seconds, "rows": report.rows_read, "created": report.created,
        "updated": report.updated, "rejected": report.rejected_rows,
        "rss_before_kb": rss_before, "hwm_before_kb": hwm_before,
        "hwm_after_kb": status_kb("VmHWM"),
        "rss_q2_kb": max(samples[cut: 2 * cut] or [0]), "rss_q4_kb": max(samples[3 * cut:] or [0]),
    }))


# --- parent ------------------------------------------------------------------------------------


def ensure_csv(city: DemoCity, rows: int, seed: int) -> Path:
    path = OUT / f"devices-{rows}-seed{seed}.csv"
    if path.exists():
        print(f"  using {path.relative_to(ROOT)} ({path.stat().st_size / 1e6:.0f} MB)")
        return path
    start = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    n = write_inventory_csv(city, tmp, seed=seed)
    tmp.rename(path)
    print(f"  generated {n:,} rows → {path.relative_to(ROOT)} "
          f"({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.1f} s")
    return path


def install(url: str, city: DemoCity) -> float:
    """A fresh installation with the demo city's partners, zones and catalog; returns seconds."""
    from cityward.entrypoints.cli.demo import install_city
    from cityward.services import organizations, setup

    start = time.perf_counter()
    plat = _platform(url)
    setup.initialize(plat.uow, city.name, "local:bench")
    install_city(plat, organizations.local_operator(plat.uow, "bench"), city)
    plat.close()
    return time.perf_counter() - start


def device_count(url: str) -> int:
    from sqlalchemy import func, select

    from cityward.adapters.storage.models import DeviceRow

    plat = _platform(url)
    with plat.uow() as uow:
        n = uow.session.scalar(select(func.count()).select_from(DeviceRow)) or 0
    plat.close()
    return int(n)


def run_child(url: str, path: Path, profile: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--url", url, "--file", str(path)]
    if profile is not None:
        cmd += ["--profile-out", str(profile)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"the import failed (exit {done.returncode}); see above")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


class Database:
    """A fresh database per measurement: a SQLite file, or a PostgreSQL database dropped after."""

    def __init__(self, backend: str, rows: int, pg_admin: str) -> None:
        self.backend, self.pg_admin = backend, pg_admin
        if backend == "sqlite":
            self.file = OUT / f"bench-{rows}.db"
            self.url = f"sqlite:///{self.file}"
        else:
            self.name = f"cityward_bench_{uuid.uuid4().hex[:8]}"
            base = pg_admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
            self.url = f"{base}/{self.name}"

    def __enter__(self) -> Database:
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.file}{suffix}").unlink(missing_ok=True)
        else:
            with psycopg.connect(self.pg_admin, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc: object) -> None:
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.file}{suffix}").unlink(missing_ok=True)
        else:
            with psycopg.connect(self.pg_admin, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def _curve(r: dict[str, Any]) -> str:
    if not r["rss_q2_kb"] or not r["rss_q4_kb"]:
        return "n/a"
    return f"{_mb(r['rss_q2_kb'])} → {_mb(r['rss_q4_kb'])}"


def _mb(kb: int) -> str:
    return f"{kb / 1024:,.0f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows in the big file")
    ap.add_argument("--small", type=int, default=200_000,
                    help="rows in the second file, to compare memory (0: skip)")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--pg", default=os.environ.get(
        "CITYWARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="an admin connection used to create and drop the benchmark database")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-reimport", action="store_true", help="skip the all-updates re-import")
    ap.add_argument("--cprofile", action="store_true",
                    help="profile the imports (bench/out/profile-*.pstats; times are inflated)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args.url, args.file, args.profile_out)
        return

    sizes = sorted({n for n in (args.small, args.rows) if n > 0})
    print(f"cityward import benchmark: {', '.join(f'{n:,}' for n in sizes)} rows, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    files = {}
    for n in sizes:
        city = generate_city(n, seed=args.seed)
        files[n] = (city, ensure_csv(city, n, args.seed))
    results: list[tuple[str, int, str, dict[str, Any]]] = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        for n in sizes:
            city, path = files[n]
            with Database(backend, n, args.pg) as db:
                setup_s = install(db.url, city)
                print(f"  {backend:10} {n:>9,} setup     {setup_s:7.1f} s (city, partners, zones,"
                      f" catalog)", flush=True)
                runs = ["import"] + ([] if args.no_reimport else ["re-import"])
                for label in runs:
                    prof = (OUT / f"profile-{backend}-{n}-{label}.pstats") if args.cprofile else None
                    r = run_child(db.url, path, prof)
                    stored = device_count(db.url)
                    r["stored"] = stored
                    results.append((backend, n, label, r))
                    print(f"  {backend:10} {n:>9,} {label:9} {r['seconds']:7.1f} s "
                          f"{r['rows'] / r['seconds']:>9,.0f} rows/s  growth "
                          f"{_mb(r['hwm_after_kb'] - r['rss_before_kb'])}  "
                          f"({stored:,} devices stored)", flush=True)
                    if prof is not None:
                        import pstats

                        pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(25)

    print()
    head = ("| backend | rows | run | seconds | rows/s | RSS before | peak RSS | growth "
            "| RSS mid → end |\n|---|---:|---|---:|---:|---:|---:|---:|---:|")
    print(head)
    for backend, n, label, r in results:
        print(f"| {backend} | {n:,} | {label} | {r['seconds']:.1f} | "
              f"{r['rows'] / r['seconds']:,.0f} | {_mb(r['rss_before_kb'])} | "
              f"{_mb(r['hwm_after_kb'])} | {_mb(r['hwm_after_kb'] - r['rss_before_kb'])} | "
              f"{_curve(r)} |")
    for backend, n, label, r in results:
        if backend == "postgresql" and n >= 1_000_000 and label == "import":
            verdict = "meets" if r["seconds"] <= GOAL_SECONDS else "MISSES"
            print(f"\n{verdict} the goal: {n:,} rows into PostgreSQL in {r['seconds']:.1f} s "
                  f"(goal ≤ {GOAL_SECONDS:.0f} s)")


if __name__ == "__main__":
    main()
