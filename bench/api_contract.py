"""Benchmark: a large schemathesis campaign against the API's OpenAPI contract (issue 15).

    .venv/bin/python bench/api_contract.py                                  # SQLite and PostgreSQL
    .venv/bin/python bench/api_contract.py --backends sqlite --max-examples 500 --seed 7
    .venv/bin/python bench/api_contract.py --pg postgresql://postgres@127.0.0.1:5432/postgres

For each backend: a fresh database (a SQLite file in bench/out/, or a PostgreSQL database created
through `--pg` and dropped afterwards), `cityward init`'s setup through the services, uvicorn on a
free loopback port serving `create_app`, and the seeded city of tests/contract_city.py (zones with
duties, partners, products, devices, a policy and an audit, a waiver, a rollout, advisories and
KEV, tokens, a discovered device). Then `st run` with every check and every phase (examples,
coverage, fuzzing, stateful) as the city's admin, `--max-examples` per operation: the campaign
tests/api/test_contract.py runs small in CI (without the coverage phase).

It prints, per backend, the requests sent, test cases generated, unique failures and errors, the
status of each phase and the time; with failures, schemathesis's own report of them (each with a
curl line reproducing it). A measurement, not a test: it exits 0 whatever it finds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pgtemp import Database  # bench/pgtemp.py: the script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "tests" / "api")]


def run_backend(url: str, args: argparse.Namespace, workdir: Path) -> None:
    from api_support import serve  # tests/api/api_support.py: uvicorn in a thread on a free port
    from tests.contract_city import PHASES, RequestCounter, campaign, seed

    from cityward.bootstrap import bootstrap
    from cityward.config import load_settings
    from cityward.entrypoints.api.app import create_app
    from cityward.services import organizations, setup

    platform = bootstrap(load_settings(database_url=url, secret_key_file=workdir / "contract.secret",
                                       firmware_dir=workdir / "firmware"))
    try:
        setup.initialize(platform.uow, "Springfield", "local:bench", admin_user=None)
        city = organizations.local_operator(platform.uow, "bench")
        counter = RequestCounter(create_app(platform))
        with serve(counter) as base:
            start = time.perf_counter()
            seeded = seed(base, platform, city)
            print(f"  seeded in {time.perf_counter() - start:.1f} s; st run --max-examples {args.max_examples} "
                  f"--seed {args.seed} --workers {args.workers} --phases {args.phases or ','.join(PHASES)}", flush=True)
            run = campaign(base, seeded, max_examples=args.max_examples, seed=args.seed,
                           phases=args.phases.split(",") if args.phases else PHASES, workers=args.workers,
                           counter=counter)
    finally:
        platform.close()
    phases = ", ".join(f"{name} {run.phase(name)}" for name in PHASES)
    print(f"  requests sent: {run.requests or 0:,}   test cases: {run.test_cases:,}   "
          f"unique failures: {len(run.failures)}   errors: {len(run.errors)}   "
          f"exit {run.exit_code}   {run.seconds:.0f} s", flush=True)
    print(f"  phases: {phases}", flush=True)
    if run.failures or run.errors or run.exit_code:
        print(run.output[-args.show:], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="admin connection where a throw-away database is created")
    parser.add_argument("--max-examples", type=int, default=200, help="per operation and phase")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--phases", default="", help="comma-separated; default: all four")
    parser.add_argument("--show", type=int, default=30_000, help="characters of st's report shown on failures")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for backend in args.backends.split(","):
        print(f"{backend}:", flush=True)
        workdir = OUT / f"contract-{backend}-{int(time.time())}"
        workdir.mkdir()
        if backend == "sqlite":
            run_backend(f"sqlite:///{workdir / 'cityward.db'}", args, workdir)
        else:
            with Database(args.pg) as db:
                run_backend(db.url, args, workdir)


if __name__ == "__main__":
    main()
