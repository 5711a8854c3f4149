"""Benchmark: the baseline policy audit over a 1,000,000-device fleet, in memory and from PostgreSQL.

    .venv/bin/python bench/audit.py                                    # 1,000,000 devices, both parts
    .venv/bin/python bench/audit.py --devices 50000 --db-devices 20000 # a quick run
    .venv/bin/python bench/audit.py --no-db                            # in-memory part only
    .venv/bin/python bench/audit.py --cprofile                         # where the database audit's time goes

In-memory part: the demo city's inventory (`cityward.sim.city`, seed 7; the CSV in bench/out/ is
reused) becomes a fact table with every fact of `domain.policy.facts` (the reported state is
synthetic, deterministic per device id: 28 % default credentials, 8 % telnet, ...). On it:
(a) the compiled audit, `cityward.services.audit.evaluate` (best of 3);
(b) the same 28 baseline rules written by hand as polars expressions, same output frame (best of 3),
    checked to give the identical findings;
(c) the reference interpreter (`domain.policy.reference.evaluate`), one device at a time, on a
    10,000-device sample, extrapolated to the whole fleet, and checked against (a) on the sample.

Database part: a fresh PostgreSQL database (created on --pg, dropped afterwards) with the city set
up and the inventory imported, `device_states` filled for every device by one INSERT ... SELECT,
then `cityward.services.audit.run_audit` twice in a child process (so its memory is measured
alone, VmHWM): the first run, then (after a set-wise change to 3 % of the states) a second run that
is diffed against the first. Each run: load facts, evaluate, store run + findings, diff.

A measurement, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import psycopg
from pgtemp import Database  # bench/pgtemp.py
from procstat import status_kb  # bench/procstat.py: the script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "src"))

from cityward.adapters.policy_polars import FACT_SCHEMA, VKEY, compile_condition, with_version_keys  # noqa: E402
from cityward.domain.policy import reference  # noqa: E402
from cityward.domain.policy.document import Policy, Rule, parse_policy  # noqa: E402
from cityward.domain.policy.expr import facts_used  # noqa: E402
from cityward.domain.policy.facts import FACTS  # noqa: E402
from cityward.domain.responsibility import Duty  # noqa: E402
from cityward.services import audit  # noqa: E402
from cityward.sim.city import DemoCity, generate_city, write_inventory_csv  # noqa: E402

BASELINE = ROOT / "policies" / "baseline.yaml"
GOAL_RATIO = 1.5  # (a) compiled ≤ 1.5 x (b) hand-written
GOAL_SPEEDUP = 50.0  # (a) ≥ 50 x faster than (c) the reference interpreter
GOAL_DB_SECONDS = 30.0  # a full audit from PostgreSQL at 1M devices
GOAL_DB_MEMORY_KB = 4 * 1024 * 1024  # 4 GB peak
DAY = 86_400.0

T = TypeVar("T")


# --- helpers ---------------------------------------------------------------------------------


def best_of(runs: int, fn: Callable[[], T]) -> tuple[float, T]:
    best, result = float("inf"), None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    assert result is not None
    return best, result


def load_baseline() -> tuple[Policy, bytes]:
    text = BASELINE.read_bytes()
    return parse_policy(text, str(BASELINE)), text


def ensure_csv(city: DemoCity, rows: int, seed: int) -> Path:
    """The demo city's inventory file (same name as bench/import_devices.py uses, so it is shared)."""
    path = OUT / f"devices-{rows}-seed{seed}.csv"
    if path.exists():
        print(f"  using {path.relative_to(ROOT)}")
        return path
    start = time.perf_counter()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    write_inventory_csv(city, tmp, seed=seed)
    tmp.rename(path)
    print(f"  generated {path.relative_to(ROOT)} in {time.perf_counter() - start:.1f} s", flush=True)
    return path


# --- the in-memory fact table ----------------------------------------------------------------


def _u(salt: int) -> pl.Expr:
    """A uniform number in [0, 1), fixed per device id and salt."""
    return (pl.col("id").hash(seed=salt) % 1_048_576).cast(pl.Float64) / 1_048_576


def zones_inside(city: DemoCity) -> dict[str, set[str]]:
    """Zone name key → the names of the zones inside it (itself included), as services.audit builds it."""
    from cityward.domain.names import name_key

    parent = {name: p for name, _crit, p in city.zones}
    inside: dict[str, set[str]] = {name_key(name): set() for name in parent}
    for name in parent:
        current: str | None = name
        while current is not None:
            inside[name_key(current)].add(name)
            current = parent[current]
    return inside


def _zone_holders(city: DemoCity, org_id: dict[str, int]) -> dict[str, dict[str, int | None]]:
    """Duty → zone name → organization id holding it (the zone's own assignment, else the nearest parent's)."""
    parent = {name: p for name, _crit, p in city.zones}
    assigned = {(z, d): org_id[o] for z, d, o in city.zone_duties}
    out: dict[str, dict[str, int | None]] = {}
    for duty in Duty:
        by_zone: dict[str, int | None] = {}
        for name in parent:
            current: str | None = name
            holder = None
            while current is not None and holder is None:
                holder = assigned.get((current, duty.value))
                current = parent[current]
            by_zone[name] = holder
        out[duty.value] = by_zone
    return out


def fact_table(city: DemoCity, csv_path: Path, now: datetime, policy: Policy) -> pl.DataFrame:
    """Every fact of domain.policy.facts for every device of the inventory file, with the helper
    columns services.audit.evaluate uses (`_zone_id`, `_product`, `_resp_<duty>`), built the way
    adapters/storage/fleet_facts.load_facts builds it from the database; the reported state is
    synthetic, derived from a hash of the device id."""
    inv = pl.read_csv(csv_path, infer_schema=False)
    # The catalog: true manufacturer through the relabel chain, origin status, minimum firmware.
    upstream = {(r["brand"], r["model"]): (r["origin_brand"], r["origin_model"]) for r in city.catalog}
    products = []
    for r in city.catalog:
        key = (r["brand"], r["model"])
        root = key
        while upstream.get(root, root) != root:
            root = upstream[root]
        products.append({"brand": r["brand"], "model": r["model"], "manufacturer": root[0],
                         "origin_status": "original" if root == key else "relabeled",
                         "min_firmware": r["min_firmware"] or None, "end_of_support": r["end_of_support"] or None})
    catalog = pl.DataFrame(products).with_columns(pl.col("end_of_support").str.to_date())
    crit = {name: c for name, c, _p in city.zones}
    zone_ids = {name: i + 1 for i, (name, _c, _p) in enumerate(city.zones)}
    org_id = {city.name: 1, **{name: i + 2 for i, (name, _k, _b) in enumerate(city.orgs)}}
    holders = _zone_holders(city, org_id)
    banned = {m.strip().lower() for m in policy.prohibited_manufacturers}
    today = now.date()

    reported = _u(1) < 0.92  # 8 % never reported: no state at all
    online = pl.when(reported).then(_u(2) < 0.90)
    r_cred = _u(3)
    credential = (pl.when(~reported).then(None).when(r_cred < 0.28).then(pl.lit("default"))
                  .when(r_cred < 0.37).then(pl.lit("weak")).when(r_cred < 0.93).then(pl.lit("unique"))
                  .otherwise(pl.lit("unknown")))
    r_http = _u(9)

    def maybe(name: str, cond: pl.Expr) -> pl.Expr:
        return pl.when(cond).then(pl.lit(name))

    services = pl.concat_list(
        maybe("mqtt", pl.col("protocol") == "mqtt"), maybe("ssh", _u(4) < 0.20), maybe("telnet", _u(5) < 0.08),
        maybe("ftp", _u(6) < 0.04), maybe("upnp", _u(7) < 0.06), maybe("http", r_http < 0.35),
        maybe("https", (r_http < 0.25) | (_u(8) < 0.30)),
    ).list.drop_nulls()
    r_remote = _u(10)
    remote = (pl.when(r_remote < 0.70).then(pl.lit([], dtype=pl.List(pl.String)))
              .when(r_remote < 0.82).then(pl.lit(["vpn"])).when(r_remote < 0.90).then(pl.lit(["vendor-cloud"]))
              .when(r_remote < 0.93).then(pl.lit(["teamviewer-like"])).when(r_remote < 0.95)
              .then(pl.lit(["ssh-tunnel"])).otherwise(pl.lit(["vpn", "vendor-cloud"])))
    frame = (
        inv.with_columns(pl.lit(None, dtype=pl.String).alias("_none"))
        .join(catalog, on=["brand", "model"], how="left")
        .select(
            pl.col("id"), pl.col("kind"), pl.col("brand"), pl.col("model"), pl.col("manufacturer"),
            pl.col("origin_status").fill_null("unknown"), pl.col("zone"),
            pl.col("zone").replace_strict(crit, default=None).alias("zone_criticality"),
            pl.col("tags").str.strip_chars(";").str.split(";").list.eval(pl.element().filter(pl.element() != "")),
            pl.col("protocol"), pl.col("firmware_version"), pl.col("min_firmware"),
            (pl.col("end_of_support") < pl.lit(today)).alias("end_of_support_passed"),
            (pl.lit(today) - pl.col("installed_at").str.to_date()).dt.total_days().cast(pl.Float64).alias("age"),
            online.alias("online"),
            pl.when(reported).then(pl.when(online).then(_u(11) * 0.007).otherwise(_u(11) * 30.0))
            .alias("last_seen_age"),
            credential.alias("credential_state"),
            pl.when(reported & (credential != "default") & (_u(12) < 0.9)).then(_u(13) * 900.0).alias("password_age"),
            pl.when(reported).then(services).alias("services"),
            pl.when(reported).then(remote).alias("remote_access"),
            pl.when(reported & (_u(14) < 0.85)).then(_u(15) * 790.0 - 60.0).alias("cert_expires_in"),
            pl.when(reported).then(_u(16) < 0.015).alias("quarantined"),
            pl.when(reported).then(_u(17) < 0.03).alias("config_drift"),
            pl.col("manufacturer").str.to_lowercase().str.strip_chars().is_in(sorted(banned))
            .alias("manufacturer_prohibited"),
            ((pl.col("firmware_version").hash(seed=18) % 100) < 3).alias("known_exploited"),
            pl.when(reported).then(_u(19) >= 0.05).alias("firmware_signed"),
            pl.when(reported).then(_u(20) < 0.002).alias("identity_mismatch"),
            pl.col("zone").replace_strict(zone_ids, default=None, return_dtype=pl.Int64).alias("_zone_id"),
            (pl.col("brand") + " " + pl.col("model")).alias("_product"),
            *[pl.coalesce(pl.col(column).replace_strict(org_id, default=None, return_dtype=pl.Int64),
                          pl.col("zone").replace_strict(holders[duty.value], default=None, return_dtype=pl.Int64))
              .alias(f"_resp_{duty.value}")
              for duty, column in ((Duty.SUPPLY, "supplier"), (Duty.INSTALL, "installer"),
                                   (Duty.MAINTAIN, "maintainer"), (Duty.CREDENTIALS, "_none"),
                                   (Duty.REMOTE_ACCESS, "_none"))],
        )
    )
    frame = with_version_keys(frame.with_columns(
        pl.col(c).cast(t) for c, t in FACT_SCHEMA.items() if c in frame.columns))
    fw, minimum = pl.col("firmware_version" + VKEY), pl.col("min_firmware" + VKEY)
    frame = frame.with_columns(
        pl.when(fw.is_null() | minimum.is_null()).then(None).otherwise(fw < minimum).alias("firmware_below_minimum"))
    return frame.select(*FACT_SCHEMA, *[c for c in frame.columns if c not in FACT_SCHEMA])



# --- (b) the baseline by hand ----------------------------------------------------------------

_INSECURE = ["telnet", "ftp", "upnp"]
_UNAPPROVED = ["vendor-cloud", "teamviewer-like", "ssh-tunnel"]


def _any_in(column: str, values: list[str]) -> pl.Expr:
    return pl.any_horizontal(pl.col(column).list.contains(v) for v in values)


def handwritten_rules() -> list[tuple[str, str, str, list[str], pl.Expr]]:
    """policies/baseline.yaml written directly in polars: rule id, severity, duty that acts,
    facts shown as evidence (sorted), condition. A filter keeps only rows where it is true."""
    c = pl.col
    cred, critical_zone = c("credential_state"), c("zone_criticality") == "critical"
    services = c("services")
    m, cr, ra, su = Duty.MAINTAIN.value, Duty.CREDENTIALS.value, Duty.REMOTE_ACCESS.value, Duty.SUPPLY.value
    return [
        ("CRED-001", "critical", cr, ["credential_state"], cred == "default"),
        ("CRED-002", "high", cr, ["credential_state"], cred == "weak"),
        ("CRED-003", "medium", cr, ["password_age"], c("password_age") > 365),
        ("CRED-004", "low", m, ["credential_state", "online"], c("online") & (cred == "unknown")),
        ("CRED-005", "critical", cr, ["credential_state", "remote_access"],
         cred.is_in(["default", "weak"]) & _any_in("remote_access", [*_UNAPPROVED, "vpn"])),
        ("FW-001", "high", m, ["firmware_below_minimum"], c("firmware_below_minimum")),
        ("FW-002", "critical", m, ["known_exploited"], c("known_exploited")),
        ("FW-003", "high", m, ["firmware_signed"], ~c("firmware_signed")),
        ("FW-004", "critical", m, ["firmware_below_minimum", "zone_criticality"],
         c("firmware_below_minimum") & critical_zone),
        ("SVC-001", "high", m, ["services"], services.list.contains("telnet")),
        ("SVC-002", "high", m, ["services"], services.list.contains("ftp")),
        ("SVC-003", "medium", m, ["services"], services.list.contains("http") & ~services.list.contains("https")),
        ("SVC-004", "medium", m, ["services"], services.list.contains("upnp")),
        ("SVC-005", "critical", m, ["services", "zone_criticality"], critical_zone & _any_in("services", _INSECURE)),
        ("CERT-001", "high", m, ["cert_expires_in"], c("cert_expires_in") < 0),
        ("CERT-002", "medium", m, ["cert_expires_in"], c("cert_expires_in").is_between(0, 30, closed="left")),
        ("REM-001", "high", ra, ["remote_access"], _any_in("remote_access", _UNAPPROVED)),
        ("REM-002", "critical", ra, ["kind", "remote_access"],
         (c("kind") == "traffic_controller") & _any_in("remote_access", _UNAPPROVED)),
        ("LIFE-001", "high", m, ["end_of_support_passed"], c("end_of_support_passed")),
        ("LIFE-002", "critical", m, ["end_of_support_passed", "zone_criticality"],
         c("end_of_support_passed") & c("zone_criticality").is_in(["high", "critical"])),
        ("ORIG-001", "medium", su, ["origin_status"], c("origin_status") == "unknown"),
        ("ORIG-002", "critical", m, ["manufacturer_prohibited"], c("manufacturer_prohibited")),
        ("ORIG-003", "high", m, ["identity_mismatch"], c("identity_mismatch")),
        ("CONF-001", "medium", m, ["config_drift"], c("config_drift")),
        ("SEEN-001", "medium", m, ["last_seen_age"], c("last_seen_age") > 7),
        ("SEEN-002", "low", m, ["online"], c("online").is_null()),
        ("SEEN-003", "high", m, ["online", "zone_criticality"], ~c("online") & critical_zone),
        ("QUAR-001", "low", m, ["quarantined", "services"], c("quarantined") & _any_in("services", _INSECURE)),
    ]


def handwritten(facts: pl.DataFrame) -> pl.DataFrame:
    """The same findings frame as services.audit.evaluate, one lazy query over all rules."""
    lf = facts.lazy()
    return pl.concat([
        lf.filter(cond).select(
            pl.col("id").alias("device_id"), pl.lit(rule_id).alias("rule_id"), pl.lit(severity).alias("severity"),
            pl.struct(evidence).struct.json_encode().alias("evidence"),
            pl.col(f"_resp_{duty}").alias("responsible_org_id"))
        for rule_id, severity, duty, evidence, cond in handwritten_rules()
    ]).collect()


# --- (c) the reference interpreter -----------------------------------------------------------


def _in_scope(rule: Rule, row: dict[str, Any], inside: dict[str, set[str]]) -> bool:
    s = rule.scope
    if s.zones and row["zone"] not in set().union(*(inside.get(z, {z}) for z in s.zones)):
        return False
    if s.kinds and row["kind"] not in s.kinds:
        return False
    if s.products and row["_product"].lower() not in {p.lower() for p in s.products}:
        return False
    return not (s.tags and not set(row["tags"] or ()) & set(s.tags))


def reference_findings(policy: Policy, rows: list[dict[str, Any]], inside: dict[str, set[str]]) -> set[tuple[str, str]]:
    """One device at a time, every rule: (device id, rule id) where the condition is true."""
    found = set()
    for row in rows:
        for rule in policy.rules:
            if _in_scope(rule, row, inside) and reference.evaluate(rule.node, row) is True:
                found.add((row["id"], rule.id))
    return found


def compiled_lazy(policy: Policy, facts: pl.DataFrame, inside: dict[str, set[str]]) -> pl.DataFrame:
    """Diagnostic: services.audit.evaluate's rules and output, but one lazy query (filter after the
    projection, rules in parallel) instead of one eager filter per rule filters of the whole fact table."""
    parts = []
    for rule in policy.rules:
        duty = audit.DUTY_OF.get(rule.remediation, Duty.MAINTAIN)
        parts.append(facts.lazy().filter(
            (audit._scope_expr(rule, inside) & compile_condition(rule.node)).fill_null(False)).select(
            pl.col("id").alias("device_id"), pl.lit(rule.id).alias("rule_id"),
            pl.lit(rule.severity.value).alias("severity"),
            pl.struct(sorted(facts_used(rule.node))).struct.json_encode().alias("evidence"),
            pl.col(f"_resp_{duty.value}").alias("responsible_org_id")))
    return pl.concat(parts).collect()


def handwritten_eager(facts: pl.DataFrame) -> pl.DataFrame:
    """Diagnostic: the hand-written rules in services.audit.evaluate's structure (eager, one by one)."""
    return pl.concat([
        facts.filter(cond).select(
            pl.col("id").alias("device_id"), pl.lit(rule_id).alias("rule_id"), pl.lit(severity).alias("severity"),
            pl.struct(evidence).struct.json_encode().alias("evidence"),
            pl.col(f"_resp_{duty}").alias("responsible_org_id"))
        for rule_id, severity, duty, evidence, cond in handwritten_rules()
    ])


def _pairs(frame: pl.DataFrame) -> set[tuple[str, str]]:
    return set(frame.select("device_id", "rule_id").iter_rows())


def in_memory(devices: int, seed: int, sample: int, runs: int) -> dict[str, Any]:
    policy, _ = load_baseline()
    city = generate_city(devices, seed)
    path = ensure_csv(city, devices, seed)
    inside = zones_inside(city)
    start = time.perf_counter()
    facts = fact_table(city, path, datetime.now(UTC), policy)
    build_s = time.perf_counter() - start
    print(f"  fact table: {facts.height:,} devices x {facts.width} columns, "
          f"{facts.estimated_size() / 2**20:,.0f} MB, built in {build_s:.1f} s", flush=True)

    compiled_s, compiled = best_of(runs, lambda: audit.evaluate(policy, facts, inside))
    print(f"  (a) compiled audit   {compiled_s:8.3f} s  {compiled.height:,} findings", flush=True)
    hand_s, hand = best_of(runs, lambda: handwritten(facts))
    identical = _pairs(compiled) == _pairs(hand)
    same_frame = compiled.sort("rule_id", "device_id").equals(hand.sort("rule_id", "device_id"))
    print(f"  (b) hand-written     {hand_s:8.3f} s  {hand.height:,} findings, identical: "
          f"{'yes' if identical else 'NO'} (whole frame incl. evidence: {'yes' if same_frame else 'NO'})", flush=True)

    lazy_s, lazy = best_of(runs, lambda: compiled_lazy(policy, facts, inside))
    hand_eager_s, hand_eager = best_of(runs, lambda: handwritten_eager(facts))
    diag_ok = _pairs(lazy) == _pairs(compiled) == _pairs(hand_eager)
    print(f"  diagnostic: compiled conditions in one lazy query {lazy_s:.3f} s; hand-written rules as "
          f"one eager filter per rule {hand_eager_s:.3f} s (same findings: {'yes' if diag_ok else 'NO'})", flush=True)

    rows = facts.gather_every(max(1, facts.height // sample)).head(sample).select(list(FACTS)).to_dicts()
    start = time.perf_counter()
    ref = reference_findings(policy, rows, inside)
    ref_s = time.perf_counter() - start
    ids = {r["id"] for r in rows}
    agrees = ref == {p for p in _pairs(compiled) if p[0] in ids}
    ref_full_s = ref_s * facts.height / len(rows)
    print(f"  (c) reference        {ref_s:8.3f} s  on {len(rows):,} devices ({len(ref):,} findings, agrees with (a): "
          f"{'yes' if agrees else 'NO'}) → {ref_full_s:,.1f} s extrapolated to {facts.height:,}", flush=True)
    per_rule = dict(compiled.group_by("rule_id").len().iter_rows())
    return {
        "devices": facts.height, "build_s": build_s, "findings": compiled.height,
        "findings_per_rule": {r.id: int(per_rule.get(r.id, 0)) for r in policy.rules},
        "compiled_s": compiled_s, "handwritten_s": hand_s, "ratio": compiled_s / hand_s,
        "identical": identical, "identical_frame": same_frame,
        "reference_sample": len(rows), "reference_sample_s": ref_s, "reference_s": ref_full_s,
        "reference_agrees": agrees, "speedup": ref_full_s / compiled_s,
        "diag_compiled_lazy_s": lazy_s, "diag_handwritten_eager_s": hand_eager_s, "diag_same_findings": diag_ok,
    }


# --- the database part -----------------------------------------------------------------------


def _u_sql(k: int) -> str:
    return f"(hashtext(d.id || ':{k}') & 2147483647) / 2147483648.0 AS u{k}"


def _days_sql(expr: str) -> str:
    return f"make_interval(secs => ({expr}) * {DAY})"


# Every device's reported state in one statement; the same distributions as the in-memory table
# (8 % never reported, 10 % of the others offline, 28 % default and 9 % weak credentials, telnet 8 %,
# ftp 4 %, UPnP 6 %, remote access outside the VPN 12 %, 85 % with a certificate, 1.5 % quarantined).
FILL_STATES = f"""
INSERT INTO device_states (device_id, online, offline_reason, status_at, last_seen, transport, boot_id, seq,
                           reported_at, firmware_version, services, remote_access, credential_state,
                           password_changed_at, cert_expires_at, quarantined)
SELECT id, online, CASE WHEN NOT online THEN 'silence' END, seen, seen, coalesce(protocol, 'mqtt'),
       md5(id), (u2 * 100000)::bigint, seen, firmware_version,
       to_json(array_remove(ARRAY[
           CASE WHEN protocol = 'mqtt' THEN 'mqtt' END, CASE WHEN u4 < 0.20 THEN 'ssh' END,
           CASE WHEN u5 < 0.08 THEN 'telnet' END, CASE WHEN u6 < 0.04 THEN 'ftp' END,
           CASE WHEN u7 < 0.06 THEN 'upnp' END, CASE WHEN u9 < 0.35 THEN 'http' END,
           CASE WHEN u9 < 0.25 OR u8 < 0.30 THEN 'https' END]::text[], NULL)),
       (CASE WHEN u10 < 0.70 THEN '[]' WHEN u10 < 0.82 THEN '["vpn"]' WHEN u10 < 0.90 THEN '["vendor-cloud"]'
             WHEN u10 < 0.93 THEN '["teamviewer-like"]' WHEN u10 < 0.95 THEN '["ssh-tunnel"]'
             ELSE '["vpn", "vendor-cloud"]' END)::json,
       cred,
       CASE WHEN cred <> 'default' AND u12 < 0.9 THEN now() - {_days_sql("u13 * 900")} END,
       CASE WHEN u14 < 0.85 THEN now() + {_days_sql("u15 * 790 - 60")} END,
       u16 < 0.015
FROM (
    SELECT *, now() - {_days_sql("CASE WHEN online THEN u11 * 0.007 ELSE u11 * 30 END")} AS seen,
           CASE WHEN u3 < 0.28 THEN 'default' WHEN u3 < 0.37 THEN 'weak' WHEN u3 < 0.93 THEN 'unique'
                ELSE 'unknown' END AS cred
    FROM (
        SELECT d.id, d.protocol, d.firmware_version, {", ".join(_u_sql(k) for k in range(1, 17))}
        FROM devices d
    ) AS u, LATERAL (SELECT u.u2 < 0.90 AS online) AS o
    WHERE u1 < 0.92
) AS s
"""

# Between the two runs, about 3 % of the devices change: credentials rotated, a certificate renewed,
# telnet switched on, one device goes silent for two weeks.
CHANGE_STATES = [
    """UPDATE device_states SET credential_state = 'unique', password_changed_at = now()
       WHERE credential_state IN ('default', 'weak') AND (hashtext(device_id || ':c1') & 1023) < 40""",
    """UPDATE device_states SET cert_expires_at = now() + interval '365 days'
       WHERE cert_expires_at < now() + interval '30 days' AND (hashtext(device_id || ':c2') & 1023) < 100""",
    """UPDATE device_states SET services = (services::jsonb || '["telnet"]'::jsonb)::json
       WHERE NOT (services::jsonb ? 'telnet') AND (hashtext(device_id || ':c3') & 1023) < 10""",
    """UPDATE device_states SET online = false, last_seen = now() - interval '14 days'
       WHERE online AND (hashtext(device_id || ':c4') & 1023) < 5""",
]


def _platform(url: str) -> Any:
    from cityward.bootstrap import bootstrap
    from cityward.config import load_settings

    return bootstrap(load_settings(database_url=url, secret_key_file=OUT / "audit-bench.secret"))


def _pg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def prepare(url: str, devices: int, seed: int) -> dict[str, float]:
    """City, partners, zones, catalog, the inventory imported, device_states filled; seconds of each."""
    from cityward.adapters.inventory_files import FileFormat
    from cityward.entrypoints.cli.demo import install_city
    from cityward.services import inventory, organizations, setup

    city = generate_city(devices, seed)
    path = ensure_csv(city, devices, seed)
    took: dict[str, float] = {}
    start = time.perf_counter()
    plat = _platform(url)
    setup.initialize(plat.uow, city.name, "local:bench")
    caller = organizations.local_operator(plat.uow, "bench")
    install_city(plat, caller, city)
    took["setup_s"] = time.perf_counter() - start
    start = time.perf_counter()
    with path.open("rb") as fh:
        inventory.import_devices(plat.uow, caller, fh, path.name, FileFormat.CSV)
    took["import_s"] = time.perf_counter() - start
    plat.close()
    start = time.perf_counter()
    with psycopg.connect(_pg_url(url), autocommit=True) as conn:
        conn.execute(FILL_STATES)
        conn.execute("VACUUM ANALYZE device_states")
        conn.execute("ANALYZE devices")
    took["states_s"] = time.perf_counter() - start
    return took


def change_states(url: str) -> None:
    with psycopg.connect(_pg_url(url), autocommit=True) as conn:
        for sql in CHANGE_STATES:
            conn.execute(sql)
        conn.execute("ANALYZE device_states")


def child(url: str, profile: Path | None) -> None:
    """One full audit (run_audit) in this fresh process; prints one JSON line."""
    import gc

    from cityward.services import organizations

    plat = _platform(url)
    caller = organizations.local_operator(plat.uow, "bench")
    policy, text = load_baseline()
    phases: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., T]) -> Callable[..., T]:
        def wrapper(*args: Any, **kwargs: Any) -> T:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    # Phase timers: services.audit looks these names up at call time.
    audit.load_facts = timed("load_facts", audit.load_facts)  # type: ignore[attr-defined]
    audit.evaluate = timed("evaluate", audit.evaluate)
    audit.apply_waivers = timed("apply_waivers", audit.apply_waivers)
    audit._scores = timed("scores", audit._scores)
    audit.read_frame = timed("read_previous", audit.read_frame)
    audit.write_frame = timed("write_findings", audit.write_frame)
    gc.collect()
    rss_before = status_kb("VmRSS")
    start = time.perf_counter()
    if profile is not None:
        import cProfile

        prof = cProfile.Profile()
        report = prof.runcall(audit.run_audit, plat.uow, caller, policy, text)
        prof.dump_stats(str(profile))
    else:
        report = audit.run_audit(plat.uow, caller, policy, text)
    seconds = time.perf_counter() - start
    hwm = status_kb("VmHWM")
    plat.close()
    print(json.dumps({
        "seconds": seconds, "devices": report.devices, "findings": report.findings.height,
        "new": report.count("new"), "persisting": report.count("persisting"), "resolved": report.resolved.height,
        "rss_before_kb": rss_before, "hwm_kb": hwm, "phases": phases,
    }))


def run_child(url: str, profile: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--url", url]
    if profile is not None:
        cmd += ["--profile-out", str(profile)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"the audit failed (exit {done.returncode}); see above")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def in_database(pg_admin: str, devices: int, seed: int, cprofile: bool) -> dict[str, Any]:
    with Database(pg_admin) as db:
        took = prepare(db.url, devices, seed)
        print(f"  database {db.name}: setup {took['setup_s']:.1f} s, import of {devices:,} devices "
              f"{took['import_s']:.1f} s, device_states filled in {took['states_s']:.1f} s", flush=True)
        runs: dict[str, Any] = {}
        for label in ("first", "second"):
            if label == "second":
                change_states(db.url)
            prof = OUT / f"profile-audit-{devices}-{label}.pstats" if cprofile else None
            r = run_child(db.url, prof)
            runs[label] = r
            ph = r["phases"]
            rest = r["seconds"] - sum(ph.values())
            print(f"  {label} run: {r['seconds']:.1f} s, peak {r['hwm_kb'] / 1024:,.0f} MB — "
                  f"{r['findings']:,} findings ({r['new']:,} new, {r['resolved']:,} resolved); "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in ph.items()) + f", rest {rest:.1f} s", flush=True)
            if prof is not None:
                import pstats

                pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(30)
                pstats.Stats(str(prof)).sort_stats("tottime").print_stats(20)
        return {"devices": devices, **took, "runs": runs}


# --- report ----------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "[green]met[/]" if ok else "[bold red]NOT met[/]"


def report(mem: dict[str, Any] | None, db: dict[str, Any] | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cityward audit benchmark: baseline policy ({len(load_baseline()[0].rules)} rules)")
    for name, justify in (("measure", "left"), ("value", "right"), ("goal", "right"), ("", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    if mem is not None:
        n = f"{mem['devices']:,}"
        table.add_row(f"fact table, {n} devices (built in memory)", f"{mem['build_s']:.1f} s", "", "")
        table.add_row("findings", f"{mem['findings']:,}", "", "")
        table.add_row("(a) compiled audit, services.audit.evaluate (best of 3)", f"{mem['compiled_s']:.3f} s", "", "")
        table.add_row("(b) hand-written polars, one lazy query (best of 3)", f"{mem['handwritten_s']:.3f} s", "", "")
        table.add_row("(b) gives identical findings", "yes" if mem["identical"] else "NO",
                      "", "whole frame: " + ("yes" if mem["identical_frame"] else "NO"))
        table.add_row("(a) / (b)", f"{mem['ratio']:.2f} x", f"≤ {GOAL_RATIO} x", _met(mem["ratio"] <= GOAL_RATIO))
        table.add_row(f"(c) reference interpreter, {mem['reference_sample']:,} devices",
                      f"{mem['reference_sample_s']:.3f} s", "", "agrees with (a): "
                      + ("yes" if mem["reference_agrees"] else "NO"))
        table.add_row(f"(c) extrapolated to {n}", f"{mem['reference_s']:.1f} s", "", "")
        table.add_row("(c) / (a): compiled speed-up", f"{mem['speedup']:.1f} x", f"≥ {GOAL_SPEEDUP:.0f} x",
                      _met(mem["speedup"] >= GOAL_SPEEDUP))
        table.add_row("  diagnostic: compiled conditions, one lazy query", f"{mem['diag_compiled_lazy_s']:.3f} s",
                      "", f"(a) / (b) would be {mem['diag_compiled_lazy_s'] / mem['handwritten_s']:.2f} x, "
                      f"(c) / (a) {mem['reference_s'] / mem['diag_compiled_lazy_s']:.0f} x")
        table.add_row("  diagnostic: hand-written rules, one eager filter per rule",
                      f"{mem['diag_handwritten_eager_s']:.3f} s", "", "")
    if db is not None:
        n = f"{db['devices']:,}"
        table.add_row(f"PostgreSQL: setup + import of {n} devices", f"{db['setup_s'] + db['import_s']:.1f} s", "", "")
        table.add_row("PostgreSQL: device_states filled (one INSERT … SELECT)", f"{db['states_s']:.1f} s", "", "")
        for label, r in db["runs"].items():
            ph = r["phases"]
            store = r["seconds"] - ph.get("load_facts", 0.0) - ph.get("evaluate", 0.0)
            table.add_row(f"{label} audit from PostgreSQL, {r['findings']:,} findings "
                          f"({r['new']:,} new, {r['resolved']:,} resolved)",
                          f"{r['seconds']:.1f} s", f"≤ {GOAL_DB_SECONDS:.0f} s", _met(r["seconds"] <= GOAL_DB_SECONDS))
            table.add_row("  load facts / evaluate / waivers, store, diff, report",
                          f"{ph.get('load_facts', 0):.1f} / {ph.get('evaluate', 0):.1f} / {store:.1f} s", "", "")
            table.add_row("  of which: read previous findings / COPY findings / scores",
                          f"{ph.get('read_previous', 0):.1f} / {ph.get('write_findings', 0):.1f} / "
                          f"{ph.get('scores', 0):.1f} s", "", "")
            table.add_row("  peak memory (VmHWM of the audit process)", f"{r['hwm_kb'] / 1024:,.0f} MB",
                          f"≤ {GOAL_DB_MEMORY_KB // 1024:,} MB", _met(r["hwm_kb"] <= GOAL_DB_MEMORY_KB))
    Console(width=140).print(table)
    print(json.dumps({"in_memory": mem, "database": db}, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1_000_000, help="devices in the in-memory fact table (0: skip)")
    ap.add_argument("--sample", type=int, default=10_000, help="devices given to the reference interpreter")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of (a) and (b); the best counts")
    ap.add_argument("--db", action=argparse.BooleanOptionalAction, default=True,
                    help="also audit from PostgreSQL (default: yes)")
    ap.add_argument("--db-devices", type=int, default=1_000_000, help="devices in the PostgreSQL database")
    ap.add_argument("--pg", default=os.environ.get(
        "CITYWARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="an admin connection used to create and drop the benchmark database")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cprofile", action="store_true",
                    help="profile the database audits (bench/out/profile-audit-*.pstats; times are inflated)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args.url, args.profile_out)
        return
    print(f"cityward audit benchmark: python {sys.version.split()[0]}, polars {pl.__version__}, "
          f"{os.cpu_count()} CPUs", flush=True)
    mem = in_memory(args.devices, args.seed, args.sample, args.runs) if args.devices > 0 else None
    db = in_database(args.pg, args.db_devices, args.seed, args.cprofile) if args.db else None
    report(mem, db)


if __name__ == "__main__":
    main()
