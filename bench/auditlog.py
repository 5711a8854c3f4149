"""Benchmark: `auditlog verify` on a large log, without and with anchors, and `auditlog anchor`.

    .venv/bin/python bench/auditlog.py                          # 1,000,000 events, SQLite and PostgreSQL
    .venv/bin/python bench/auditlog.py --events 100000 --no-pg  # a quick run

An installation is initialized, then its audit log is filled to `--events` events continuing the
real chain (each event hashed as `uow.record` hashes it, inserted in batches). An anchors file of
`--anchors` lines (a year of daily anchors) is signed with the installation's key over real heads
spread along the log, the last at the head. Then, once each (a walk is tens of seconds):

(a) the chain alone, `services.auditlog.verify_auditlog`;
(b) the chain and its anchors, `services.auditanchors.verify` (every line's signature, the best
    anchor against the chain), which is what `cityward auditlog verify` runs;
(c) `services.auditanchors.anchor`: (b), then sign, append and record.

A measurement, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select

from cityward.adapters import anchor_files
from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import AuditEventRow
from cityward.bootstrap import Platform, bootstrap
from cityward.config import load_settings
from cityward.domain import auditanchors as anchors
from cityward.domain.auditchain import ChainReport, event_hash
from cityward.services import auditanchors, auditlog, organizations, setup

BATCH = 20_000


def fill(plat: Platform, events: int, marks: set[int]) -> dict[int, str]:
    """Append events up to `events` in all, continuing the chain; the hashes at `marks`."""
    with plat.uow() as uow:
        seq, prev = uow.session.execute(select(AuditEventRow.seq, AuditEventRow.hash)
                                        .order_by(AuditEventRow.seq.desc()).limit(1)).one()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    kept: dict[int, str] = {}
    rows: list[dict[str, object]] = []
    while seq < events:
        seq += 1
        at = start + timedelta(seconds=seq * 30)
        after = {"device": f"SL-{seq:07d}", "firmware": "2.4.1", "wave": seq % 7}
        digest = event_hash(prev, seq, at, "token:bench", 1, "devices.updated", "device", f"SL-{seq:07d}", None,
                            after)
        rows.append({"seq": seq, "at": at, "actor": "token:bench", "org_id": 1, "action": "devices.updated",
                     "target_type": "device", "target_id": f"SL-{seq:07d}", "before": None, "after": after,
                     "prev_hash": prev, "hash": digest})
        if seq in marks:
            kept[seq] = digest
        prev = digest
        if len(rows) >= BATCH:
            _write(plat, rows)
    if rows:
        _write(plat, rows)
    return kept


def _write(plat: Platform, rows: list[dict[str, object]]) -> None:
    with plat.engine.begin() as conn:
        conn.execute(insert(AuditEventRow), rows)
    rows.clear()


def timed(label: str, fn: object) -> object:
    began = time.perf_counter()
    result = fn()  # type: ignore[operator]
    print(f"  {label:<44} {time.perf_counter() - began:8.2f} s", flush=True)
    return result


def run(url: str, label: str, events: int, n_anchors: int, home: Path) -> None:
    settings = load_settings(database_url=url, secret_key_file=home / "key",
                             audit_anchor_file=home / f"{label}-anchors.jsonl")
    plat = bootstrap(settings)
    try:
        setup.initialize(plat.uow, "Benchville", "local:bench", admin_user=None)
        caller = organizations.local_operator(plat.uow, "bench")
        marks = {max(1, events * (i + 1) // n_anchors) for i in range(n_anchors)}
        marks.discard(1)
        began = time.perf_counter()
        heads = fill(plat, events, marks)
        print(f"{label}: {events:,} events written in {time.perf_counter() - began:.1f} s", flush=True)
        key = auditanchors.signing_key(settings.secret_key_bytes())
        path = settings.audit_anchor_file
        for i, seq in enumerate(sorted(heads)):
            made = anchors.sign_head(key, "Benchville", ChainReport(seq, heads[seq]),
                                     datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=i))
            anchor_files.append(path, made.line())
        print(f"  anchors file: {len(heads)} lines, {path.stat().st_size:,} bytes")
        report = timed("(a) chain only (verify_auditlog)", lambda: auditlog.verify_auditlog(plat.uow, caller))
        assert isinstance(report, ChainReport) and report.ok
        both = timed("(b) chain + anchors (auditanchors.verify)",
                     lambda: auditanchors.verify(plat.uow, caller, key.public_key(), path))
        check = both[1]  # type: ignore[index]
        print(f"      anchor check: {check.status}, best anchor at event {check.anchor.seq:,} (line {check.line})")
        timed("(c) anchor (verify + sign + append + record)",
              lambda: auditanchors.anchor(plat.uow, caller, key, path, recipients=[],
                                          box=SecretBox(settings.secret_key_bytes())))
        began = time.perf_counter()
        for _ in range(20):
            auditanchors.read_file(path, key.public_key(), required=True)
        print(f"  reading + checking {len(heads)} signatures alone {(time.perf_counter() - began) / 20 * 1000:8.1f} ms")
    finally:
        plat.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--anchors", type=int, default=365)
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--no-sqlite", action="store_true")
    ap.add_argument("--pg", default=os.environ.get(
        "CITYWARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="an admin connection used to create and drop the benchmark database")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="cityward-bench-auditlog-") as tmp:
        home = Path(tmp)
        if not args.no_sqlite:
            run(f"sqlite:///{home / 'bench.db'}", "sqlite", args.events, args.anchors, home)
        if not args.no_pg:
            sys.path.insert(0, str(Path(__file__).parent))
            from pgtemp import Database

            with Database(args.pg) as db:
                run(db.url, "postgresql", args.events, args.anchors, home)


if __name__ == "__main__":
    main()
