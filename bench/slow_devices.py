"""Benchmark: slow devices and attempt timeouts — command ids and applications per device.

    .venv/bin/python bench/slow_devices.py                      # 60 devices, all slow, SQLite
    .venv/bin/python bench/slow_devices.py --devices 120 --timeout 3 --lost-minutes 0.01 --per-device

What runs, all real: a fresh SQLite platform in a temporary directory holding the demo city's
inventory; a private Mosquitto with one provisioned account per device; the simulated city as a
separate process (`--time-scale 0.02`) with a profile in which **every** device has the `slow`
fault (every duration x `--slow-factor`: an upgrade of `--upgrade-duration` 60 s takes
60 x 0.02 x 6 = 7.2 s plus a 1 s reboot, reporting progress every 1.4 s); the rollout executor in
this process. The city, broker and simulator are the rollout tests' (`tests/rollout_city.py`).

Two kinds of rollout, one `upgrade_firmware` per true product, all at once:
- "working": the devices (MQTT, and HTTP polled) of every product but one, `--timeout` seconds per attempt (shorter
  than the devices take) and `--retries` retries: a device that keeps reporting progress must be
  asked again under the same command id and end succeeded, having applied the upgrade once;
- "lost": the devices of the largest MQTT-only product, whose catalog entry declares an upgrade of
  `--lost-minutes` (far shorter than the 1.4 s between its progress reports), `--lost-timeout`
  per attempt: recorded failed when it falls silent, never sent a new command id, and corrected
  to succeeded by its own late result.

Printed, per device and in total: the command ids of its rollout the device answered and how many
times it applied one (the simulator's own counters), what was recorded first and at the end. A
measurement, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.conftest import caller_for  # noqa: E402
from tests.rollout_city import LiveCity, live_city  # noqa: E402

from cityward.bootstrap import bootstrap  # noqa: E402
from cityward.config import load_settings  # noqa: E402
from cityward.domain.rollouts import Operation, WaveOptions  # noqa: E402
from cityward.services import catalog, inventory, organizations, rollouts, setup  # noqa: E402
from cityward.services.rollouts import RolloutRequest, Target  # noqa: E402
from cityward.sim.profile import DEFAULT_PROFILE  # noqa: E402

VERSION = "88.0.1"


def slow_profile(path: Path, args: argparse.Namespace) -> Path:
    data = yaml.safe_load(DEFAULT_PROFILE.read_text())
    data["faults"] = {"offline": 0, "flaky": 0, "slow": 1.0, "upgrade_fails": 0, "upgrade_bricks": 0}
    data["timing"].update(upgrade_duration=args.upgrade_duration, reboot=8, command_delay=0.5,
                          slow_factor=args.slow_factor)
    path.write_text(yaml.safe_dump(data))
    return path


def products(live: LiveCity) -> list[tuple[tuple[str, str], list[str]]]:
    """Every reachable device (MQTT, or HTTP polled) by its true manufacturer's product."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in live.rows:
        if r["protocol"] in ("mqtt", "http"):
            v = inventory.get_device(live.platform.uow, live.city, r["id"])
            groups[(v.manufacturer, v.origin_model)].append(r["id"])
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def start(live: LiveCity, name: str, devices: list[str], release: int, timeout: float, retries: int) -> int:
    rid, plan = rollouts.create(live.platform.uow, live.city, RolloutRequest(
        name, Operation.UPGRADE_FIRMWARE, Target(device_ids=tuple(devices)),
        WaveOptions(canary=0, percentages=(100,), concurrency=max(1, len(devices)), timeout_s=timeout,
                    retries=retries, failure_threshold=100, success_threshold=0), release=release), live.store)
    if plan.needs_approval:  # a critical zone: another city user approves
        rollouts.approve(live.platform.uow, caller_for(live.platform, live.city.org_name), rid)
    rollouts.start(live.platform.uow, live.city, rid)
    return rid


def statuses(live: LiveCity, rids: list[int]) -> dict[str, str]:
    return {a.device_id: a.status for rid in rids for a in rollouts.actions(live.platform.uow, live.city, rid)}


def run(live: LiveCity, rids: list[int], late_wait: float, limit: float) -> tuple[dict[str, str], float, Any]:
    """Run the executor until every action is decided and `late_wait` seconds more have passed
    without a change (late results); the first decided status of each device is kept."""
    executor = live.executor("bench-slow")
    first: dict[str, str] = {}

    async def main() -> float:
        stop = asyncio.Event()
        started = time.monotonic()
        task = asyncio.create_task(executor.run(stop))
        last_change, seen = time.monotonic(), None
        try:
            while time.monotonic() - started < limit:
                await asyncio.sleep(0.5)
                now = await asyncio.to_thread(statuses, live, rids)
                for d, s in now.items():
                    if s in ("succeeded", "failed"):
                        first.setdefault(d, s)
                if now != seen:
                    seen, last_change = now, time.monotonic()
                if all(s == "succeeded" for s in now.values()):
                    break
                if (not any(s in ("pending", "running") for s in now.values())
                        and time.monotonic() - last_change > late_wait):
                    break
            return time.monotonic() - started
        finally:
            stop.set()
            await task

    elapsed = asyncio.run(main())
    return first, elapsed, executor


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=60, help="size of the simulated city (its MQTT devices are used)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--timeout", type=float, default=3.0, help="seconds per attempt of the 'working' rollouts")
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--lost-minutes", type=float, default=0.01,
                    help="upgrade_minutes the catalog declares for the 'lost' product")
    ap.add_argument("--lost-timeout", type=float, default=2.0, help="seconds per attempt of the 'lost' rollout")
    ap.add_argument("--upgrade-duration", type=float, default=60.0, help="the profile's upgrade_duration (s)")
    ap.add_argument("--slow-factor", type=float, default=6.0)
    ap.add_argument("--late-wait", type=float, default=15.0, help="seconds to wait for late results")
    ap.add_argument("--per-device", action="store_true", help="a line per device as well")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="cityward-slow-") as tmp:
        work = Path(tmp)
        platform = bootstrap(load_settings(database_url=f"sqlite:///{work / 'cityward.db'}",
                                           secret_key_file=work / "key"))
        setup.initialize(platform.uow, "Port Aurelia", "local:bench", admin_user=None)
        city = organizations.local_operator(platform.uow, "bench")
        profile = slow_profile(work / "slow.yaml", args)
        with live_city(platform, city, work, devices=args.devices, seed=args.seed,
                       extra=("--profile", str(profile))) as live:
            groups = products(live)
            protocol = {r["id"]: r["protocol"] for r in live.rows}
            # "lost": the largest product with MQTT devices only (a late result is pushed over MQTT;
            # over HTTP it is seen in the device's polled state, and no connector polls here).
            lost_product, lost = next(g for g in groups if all(protocol[d] == "mqtt" for d in g[1]))
            working_groups = [g for g in groups if g[0] != lost_product]
            catalog.save_product(platform.uow, city, {"brand": lost_product[0], "model": lost_product[1],
                                                      "upgrade_minutes": str(args.lost_minutes)})
            kinds: dict[int, str] = {}
            devices: dict[int, list[str]] = {}
            for product, ids in [(lost_product, lost), *working_groups]:
                release = live.release(product[0], product[1], VERSION, f"image of {product}".encode() * 3000)
                is_lost = product == lost_product
                rid = start(live, "lost" if is_lost else "working", ids, release.id,
                            args.lost_timeout if is_lost else args.timeout, args.retries)
                kinds[rid], devices[rid] = ("lost" if is_lost else "working"), ids
            first, elapsed, executor = run(live, list(kinds), args.late_wait, limit=300)
            final = statuses(live, list(kinds))
            rows = []
            for rid, ids in devices.items():
                for d in ids:
                    truth = live.sim.device(d)
                    mine = [c for c in truth["commands"] if c.startswith(f"rollout-{rid}-")]
                    applied = sum(n for c, n in truth["applied"].items() if c.startswith(f"rollout-{rid}-"))
                    rows.append((kinds[rid], d, len(mine), applied, first.get(d, "-"), final[d],
                                 truth["firmware_version"] == VERSION, protocol[d]))
            platform.close()

    print(f"slow devices: {len(rows)} ({sum(1 for r in rows if r[0] == 'working')} working, of which "
          f"{sum(1 for r in rows if r[0] == 'working' and r[7] == 'http')} over HTTP; "
          f"{sum(1 for r in rows if r[0] == 'lost')} lost), every duration x {args.slow_factor:g}; "
          f"attempt timeout {args.timeout:g} s (working), {args.lost_timeout:g} s with {args.lost_minutes:g} min "
          f"declared (lost); retries {args.retries}; {elapsed:.1f} s")
    if args.per_device:
        print(f"{'rollout':8} {'device':24} {'ids':>4} {'applied':>7} {'first':>10} {'final':>10} new firmware")
        for kind, d, ids, applied, was, now, new, _protocol in rows:
            print(f"{kind:8} {d:24} {ids:>4} {applied:>7} {was:>10} {now:>10} {'yes' if new else 'no'}")
    for kind in ("working", "lost"):
        mine = [r for r in rows if r[0] == kind]
        print(f"{kind}: command ids per device {dict(sorted(Counter(r[2] for r in mine).items()))}, "
              f"applications per device {dict(sorted(Counter(r[3] for r in mine).items()))}, "
              f"first recorded {dict(Counter(r[4] for r in mine))}, final {dict(Counter(r[5] for r in mine))}, "
              f"on the new firmware {sum(1 for r in mine if r[6])}/{len(mine)}")
    contradicting = sum(1 for r in rows if r[5] == "failed" and r[6])
    followed, corrected = getattr(executor, "followed", "n/a"), getattr(executor, "corrected", "n/a")
    print(f"recorded failed but on the new firmware: {contradicting}; followed under the same id: "
          f"{followed}; corrected by a late result: {corrected}")


if __name__ == "__main__":
    main()
