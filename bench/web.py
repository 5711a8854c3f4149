"""Benchmark: dashboard page latency (issue 7) over a real socket.

    .venv/bin/python bench/web.py                                          # 100,000 devices, SQLite
    .venv/bin/python bench/web.py --devices 1000000 --pg postgresql://postgres@127.0.0.1:5432/postgres

The fleet, catalog and advisories come from bench/match.py's synthetic world (relabels, firmware
versions, advisory entries, KEV, EPSS; no SBOMs), loaded the same way; the fleet is then matched
(`vulnerabilities.match`) and audited with the baseline policy, as a city's would be. A city admin
user signs in over HTTP like a browser (CSRF token, session cookie), then each page is fetched
`--requests` times, one at a time, from a server in its own process (uvicorn, one worker):

- the overview (`/`): fleet counts, live state, latest audit and trend, KEV exposure, rollouts;
- a filtered device page (`/devices?kind=camera&online=yes`), first page with its total count;
- the same filter two pages deep (keyset: `after=` the last id of the previous page);
- one device's page (`/devices/<id>`), with its matched vulnerabilities and history;
- the findings of the latest audit (all, and the high-severity ones), the advisories (all, and
  those in KEV) with their affected devices, and the audit log's newest page.

The overview is also measured on a server whose snapshot is always stale (recounted behind every
request), and its first load (the fleet counted while the viewer waits) is reported apart.

It prints p50/p95/max per page and the goal (p95 < 300 ms, set for 1,000,000 devices on
PostgreSQL). A measurement, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import httpx
from pgtemp import Database  # bench/pgtemp.py: the script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "src"))

GOAL_P95_S = 0.300


def build(url: str, args: argparse.Namespace) -> tuple[str, str]:
    """Load the world, match it, audit it; a city admin user. (username, password)."""
    import match  # bench/match.py: the synthetic world and its loader
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cityward.bootstrap import bootstrap
    from cityward.config import load_settings
    from cityward.domain.policy.document import parse_policy
    from cityward.services import audit, organizations, setup, users, vulnerabilities

    world_args = argparse.Namespace(devices=args.devices, entries=args.entries, component_entries=0, packages=50,
                                    sbom_components=0, products=5000, vendors=300, in_catalog=0.25, seed=args.seed)
    columns = (TextColumn("  {task.description:40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        world = match.build_world(world_args, progress)
        match.load(url, world, progress)
    plat = bootstrap(load_settings(database_url=url, secret_key_file=OUT / "web-bench.secret"))
    try:
        setup.initialize(plat.uow, "Bench City", "local:bench", admin_user=None)
        city = organizations.local_operator(plat.uow, "bench")
        start = time.perf_counter()
        vulnerabilities.match(plat.uow)
        print(f"  matched in {time.perf_counter() - start:.1f} s", flush=True)
        baseline = ROOT / "policies" / "baseline.yaml"
        start = time.perf_counter()
        audit.run_audit(plat.uow, city, parse_policy(baseline.read_bytes(), baseline.name), baseline.read_bytes())
        print(f"  audited in {time.perf_counter() - start:.1f} s", flush=True)
        password = secrets.token_urlsafe(16)
        users.create_user(plat.uow, city, "bench.admin", "Bench City", "admin", password=password)
    finally:
        plat.close()
    return "bench.admin", password


def another_admin(url: str) -> tuple[str, str]:
    """A new city admin user in a database built earlier (`--db`)."""
    from cityward.bootstrap import bootstrap
    from cityward.config import load_settings
    from cityward.services import organizations, users

    plat = bootstrap(load_settings(database_url=url, secret_key_file=OUT / "web-bench.secret"))
    try:
        name, password = f"bench.{secrets.token_hex(4)}", secrets.token_urlsafe(16)
        users.create_user(plat.uow, organizations.local_operator(plat.uow, "bench"), name, "Bench City", "admin",
                          password=password)
    finally:
        plat.close()
    return name, password


def serve(url: str, port: int, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, **(extra or {}), "CITYWARD_DATABASE_URL": url,
           "CITYWARD_SECRET_KEY_FILE": str(OUT / "web-bench.secret"),
           "CITYWARD_WEB_SECURE_COOKIES": "false"}  # plain HTTP between the bench and its own server
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "cityward.entrypoints.api.app:app_factory",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start")


def sign_in(base: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60, headers={"Accept": "text/html"})
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, "no CSRF token on the sign-in page"
    done = client.post("/login", data={"username": username, "password": password, "csrf_token": token.group(1),
                                       "next": "/"})
    if done.status_code != 303:
        raise SystemExit(f"sign-in failed: {done.status_code}")
    return client


def timed(client: httpx.Client, path: str, n: int) -> dict[str, Any]:
    client.get(path)  # warm: templates compiled, caches filled, as for a user's second click
    times = []
    for _ in range(n):
        start = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - start)
        if answer.status_code != 200:
            raise SystemExit(f"{path}: {answer.status_code}")
    times.sort()
    return {"path": path, "n": n, "p50_s": statistics.median(times), "p95_s": times[int(0.95 * (n - 1))],
            "max_s": times[-1], "bytes": len(answer.content)}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--entries", type=int, default=20_000, help="advisory entries in the world")
    ap.add_argument("--requests", type=int, default=40, help="requests per page")
    ap.add_argument("--pg", metavar="URL", help="an admin connection: a fresh PostgreSQL database created there")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--keep", action="store_true", help="keep the PostgreSQL database and print its URL")
    ap.add_argument("--db", metavar="URL", help="a database an earlier --keep run built: measure again, no build")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    backend = "postgresql" if args.pg or (args.db or "").startswith("postgresql") else "sqlite"
    print(f"cityward web benchmark: {'the --db database' if args.db else f'{args.devices:,} devices'}, {backend}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="cityward-web-") as tmp:
        db: AbstractContextManager[Any] = (Database(args.pg, keep=args.keep) if args.pg and not args.db
                                           else nullcontext())
        with db as pg:
            url = args.db or (pg.url if pg is not None else f"sqlite:///{Path(tmp) / 'web.db'}")
            start = time.perf_counter()
            username, password = another_admin(url) if args.db else build(url, args)
            print(f"  built in {time.perf_counter() - start:.0f} s" + (f" (kept: --db {url})" if args.keep else ""),
                  flush=True)
            server = serve(url, args.port)
            try:
                client = sign_in(f"http://127.0.0.1:{args.port}", username, password)
                start = time.perf_counter()
                cold = client.get("/")  # the server's first overview: the fleet is counted while it waits
                cold_s = time.perf_counter() - start
                devices = int(re.search(r"may see: ([\d,]+) devices", cold.text).group(1)  # type: ignore[union-attr]
                              .replace(",", ""))
                counting = re.search(r"counting took ([\d.]+) s", cold.text)
                first = client.get("/devices", params={"kind": "camera", "online": "yes"})
                ids = re.findall(r'href="/devices/([^"]+)"', first.text)
                deeper = client.get(re.search(r'href="([^"]+)" rel="next"', first.text).group(1)  # type: ignore[union-attr]
                                    .replace("&amp;", "&"))
                deep = re.search(r'href="([^"]+)" rel="next"', deeper.text)
                pages = ["/", "/devices?kind=camera&online=yes",
                         deep.group(1).replace("&amp;", "&") if deep else "/devices?kind=camera&online=yes",
                         f"/devices/{ids[len(ids) // 2]}", "/findings", "/findings?severity=high", "/advisories",
                         "/advisories?kev=yes", "/audit-log"]
                results = [timed(client, p, args.requests) for p in pages]
            finally:
                server.terminate()
                server.wait(timeout=30)
            # The worst case for the overview: its snapshot is always stale (fresh after 0 s), so
            # every request is answered while the fleet is being recounted in the background.
            server = serve(url, args.port, {"CITYWARD_WEB_OVERVIEW_FRESH_S": "0"})
            try:
                client = sign_in(f"http://127.0.0.1:{args.port}", username, password)
                recounting = timed(client, "/", args.requests)
                recounting["path"] = "/ (always recounting behind it)"
                results.insert(1, recounting)
            finally:
                server.terminate()
                server.wait(timeout=30)
    print(f"  {devices:,} devices; the overview's first load (counts the fleet while the viewer waits): "
          f"{cold_s * 1000:,.0f} ms, of which counting {float(counting.group(1)) if counting else float('nan'):.1f} s")
    for r in results:
        verdict = "met" if r["p95_s"] < GOAL_P95_S else "NOT met"
        print(f"  {r['path'][:60]:60}  p50 {r['p50_s'] * 1000:7.1f} ms   p95 {r['p95_s'] * 1000:7.1f} ms   "
              f"max {r['max_s'] * 1000:7.1f} ms   ({r['bytes']:,} bytes)   p95 < 300 ms: {verdict}")
    line = {"devices": devices, "backend": backend, "requests": args.requests, "pages": results,
            "overview_first_load_s": cold_s,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(json.dumps(line))
    (OUT / f"web-last-{backend}.json").write_text(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
