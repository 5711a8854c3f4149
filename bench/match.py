"""Benchmark: advisories matched to a 1,000,000-device fleet (services.vulnerabilities.match).

    .venv/bin/python bench/match.py                                     # 1,000,000 devices, 200,000 entries, SQLite
    .venv/bin/python bench/match.py --devices 100000 --entries 20000 --component-entries 1000 --packages 300  # quick
    .venv/bin/python bench/match.py --pg postgresql://postgres@127.0.0.1:5432/postgres   # on PostgreSQL
    .venv/bin/python bench/match.py --py-spy /tmp/tools/bin/py-spy --keep   # profile it, keep the database

The world is synthetic but shaped like a city's: ~300 vendors (some only relabel other vendors'
products), ~5,000 products (15 % relabels, some two deep, so matching through the true origin is
exercised), each with 5-20 firmware versions in its vendor's format ("V5.5.0 build 170725", dotted
"2.4.1.15", semver with release candidates), devices spread over the products Zipf-like and over
the versions skewed to the newest, 92 % with a reported state (4 % of those report a newer firmware
than the inventory says). Advisories: CSAF-like documents of a vendor (a few CVEs times a few
products; 25 % of the products named are in the catalog (--in-catalog), the rest are products the
city does not own; some name a model family by wildcard, some are a relabeler's own advisory or
VEX) and CVE records; version ranges are written as vendors write them and normalized by
`domain.advisory_versions` (`parse_text`, `parse_vers`); statuses affected, fixed, not affected.
Every row is inserted directly (the project's `write_frame`: COPY on PostgreSQL, executemany on
SQLite), not through the import services.

SBOMs: a catalog release with a CycloneDX SBOM of 50 components (--sbom-components) for every
(true-origin product, firmware) the fleet runs, drawn from --packages packages; --component-entries
of the entries are CVE records about those packages.

Measured in a fresh child process (so its memory is its own, VmHWM):
(1) `compute` (adapters/storage/vuln_frames.py: the match without storing), then
    `vulnerabilities.match` of the whole fleet twice: into an empty `vuln_matches`, then again with
    nothing changed (only differences are written), while a second thread reads one device's
    matches twice a second (how long a reader waits); phase timers around the matcher's steps;
(2) a naive per-device loop over the entries of the device's product (and its origin) and over
    the package entries its firmware's SBOM lists, with `VersionRange.contains` on ranges re-parsed
    from the text as written, on a sample, timed and extrapolated, and checked against what the set
    join stored for the same devices;
(3) one new advisory (10 entries) for the product family with the most devices (the realistic
    worst case), then `vulnerabilities.match(cves=its CVEs)` several times: best and median; the
    same for a product of median size.

A measurement, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
from pgtemp import Database  # bench/pgtemp.py
from procstat import status_kb  # bench/procstat.py: the script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "src"))

from cityward.domain import advisory_versions as av  # noqa: E402
from cityward.domain.advisories import match_key, model_key, model_pattern  # noqa: E402
from cityward.domain.model_names import model_variants  # noqa: E402
from cityward.domain.products import product_key  # noqa: E402
from cityward.domain.vendors import canonical_vendor, vendor_key  # noqa: E402

GOAL_FULL_S = 20.0  # the whole fleet matched and stored
GOAL_ONE_S = 0.100  # one new advisory matched and stored
SBOM_COMPONENTS = 50  # per firmware, as the issue asks

KINDS = ("camera", "traffic_controller", "streetlight_controller", "environmental_sensor", "parking_sensor",
         "gateway", "access_controller", "smart_meter")
_PREFIXES = ("Hik", "Ax", "Dah", "Bos", "Han", "Uni", "Vi", "Mob", "Sie", "Hon", "Ava", "Pel", "Ges", "Lum", "Nor",
             "Tel", "Cal", "Ori", "Zen", "Qua", "Mil", "Tri", "Sol", "Ver", "Cor", "Del", "Ly", "Mer")
_ROOTS = ("vision", "is", "tek", "ch", "wha", "view", "tron", "ix", "com", "net", "data", "optics", "lux",
          "sys", "tec", "ware", "link", "scope", "cast", "grid")
_SUFFIXES = ("", "", "", " GmbH", " Inc.", " Co., Ltd.", " Technologies", " AG", " S.A.")
_MODEL_SUFFIXES = ("", "", "-I", "-IU", "(T3)", "/SL", "-E", "-W", "-4G")
_SERVICES = ('["mqtt"]', '["mqtt", "ssh"]', '["http", "https"]', '["mqtt", "telnet"]', '["https"]',
             '["ftp", "http"]', '["mqtt", "upnp"]', "[]")
_SERVICE_WEIGHTS = (40, 15, 15, 5, 15, 3, 4, 3)
_REMOTE = ("[]", '["vpn"]', '["vendor-cloud"]', '["teamviewer-like"]')
_REMOTE_WEIGHTS = (70, 15, 10, 5)


# --- the synthetic world ---------------------------------------------------------------------


@dataclass
class Vendor:
    name: str
    code: str
    style: str  # firmware format: build ("V5.5.0 build 170725"), dotted ("2.4.1.15"), semver
    relabeler: bool  # sells other vendors' products under its own name only
    kind: str
    families: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return vendor_key(self.name) or self.name


@dataclass
class Product:
    id: int
    vendor: Vendor
    model: str
    family: str
    relabel_of: int | None
    origin: int  # the true origin's id (itself when not a relabel)
    depth: int
    status: str  # original | relabeled | unknown
    versions: list[str]


@dataclass
class Package:
    """A software package firmware is built from, as an SBOM and a CVE record name it."""

    purl: str  # without a version
    key: str  # "type/namespace/name", as domain.cyclonedx.purl_key gives it
    versions: list[str]  # oldest first
    cves: list[str] = field(default_factory=list)


@dataclass
class Sboms:
    keys: pl.DataFrame  # firmware_keys (one signing key: the releases are never verified here)
    releases: pl.DataFrame  # firmware_releases
    sboms: pl.DataFrame
    components: pl.DataFrame  # sbom_components
    vex: pl.DataFrame  # sbom_vex


@dataclass
class World:
    vendors: list[Vendor]
    products: list[Product]
    devices: pl.DataFrame
    states: pl.DataFrame
    zones: pl.DataFrame
    advisories: pl.DataFrame
    entries: pl.DataFrame
    kev: pl.DataFrame
    epss: pl.DataFrame
    sboms: Sboms
    new_advisories: list[dict[str, Any]]
    stats: dict[str, Any]


def _versions(rng: random.Random, style: str, n: int) -> list[str]:
    """n increasing firmware versions in the vendor's format."""
    major, minor, patch = rng.randint(1, 5), rng.randint(0, 9), rng.randint(0, 20)
    day = date(2015, 1, 1) + timedelta(days=rng.randint(0, 1500))
    four = rng.random() < 0.5
    out: list[str] = []
    while len(out) < n:
        if out:
            r = rng.random()
            if r < 0.6:
                patch += rng.randint(1, 120) if style == "build" else rng.randint(1, 9)
            elif r < 0.92:
                minor, patch = minor + 1, 0
            else:
                major, minor, patch = major + 1, 0, 0
            day += timedelta(days=rng.randint(20, 200))
        if style == "build":
            out.append(f"V{major}.{minor}.{patch} build {day:%y%m%d}")
        elif style == "dotted":
            out.append(f"{major}.{minor}.{patch}" + (f".{rng.randint(1, 999)}" if four else ""))
        else:
            if rng.random() < 0.1 and len(out) < n - 1:
                out.append(f"{major}.{minor}.{patch}-rc.1")
            out.append(f"{major}.{minor}.{patch}")
    return out[:n]


def _vendors(rng: random.Random, count: int) -> list[Vendor]:
    names: dict[str, str] = {}
    while len(names) < count:
        name = rng.choice(_PREFIXES) + rng.choice(_ROOTS) + rng.choice(_SUFFIXES)
        names.setdefault(vendor_key(name) or name, name)
    vendors = []
    for i, name in enumerate(names.values()):
        style = rng.choices(("build", "dotted", "semver"), (35, 45, 20))[0]
        code = "".join(c for c in name if c.isalpha())[:2].upper() + str(i % 10)
        vendor = Vendor(name, code, style, relabeler=rng.random() < 0.13, kind=rng.choice(KINDS))
        vendor.families = [rng.choice(("2CD", "2DF", "NV", "PX", "TC", "SL", "EM", "GW", "AC", "X")) + str(k)
                           for k in range(rng.randint(2, 8))]
        vendors.append(vendor)
    return vendors


def _model(rng: random.Random, vendor: Vendor, family: str) -> str:
    return f"{vendor.code}-{family}{rng.randint(100, 9999)}{rng.choice(_MODEL_SUFFIXES)}"


def _catalog(rng: random.Random, vendors: list[Vendor], count: int) -> list[Product]:
    """Originals first (Zipf-like number per vendor), then relabels (some of relabels), so every
    relabel points to a lower id; 15 % relabels, 10 % of the originals of unknown origin."""
    makers = [v for v in vendors if not v.relabeler]
    relabelers = [v for v in vendors if v.relabeler]
    weights = [1.0 / (i + 1) ** 0.8 for i in range(len(makers))]
    used: set[tuple[str, str | None]] = set()
    products: list[Product] = []
    n_relabels = int(count * 0.15)
    for vendor in rng.choices(makers, weights, k=count - n_relabels):
        family = rng.choice(vendor.families)
        model = _model(rng, vendor, family)
        while (vendor.key, model_key(model)) in used:
            model = _model(rng, vendor, family)
        used.add((vendor.key, model_key(model)))
        pid = len(products) + 1
        status = "unknown" if rng.random() < 0.1 else "original"
        products.append(Product(pid, vendor, model, family, None, pid, 0, status,
                                _versions(rng, vendor.style, rng.randint(5, 20))))
    for _ in range(n_relabels):
        vendor = rng.choice(relabelers)
        upstream = rng.choice(products)  # an original, or already a relabel: a chain two deep
        origin = products[upstream.origin - 1]
        model = f"{vendor.code}-{rng.randint(1000, 99999)}{rng.choice(_MODEL_SUFFIXES)}"
        while (vendor.key, model_key(model)) in used:
            model = f"{vendor.code}-{rng.randint(1000, 99999)}"
        used.add((vendor.key, model_key(model)))
        products.append(Product(len(products) + 1, vendor, model, "R", upstream.id, origin.id, upstream.depth + 1,
                                "relabeled", origin.versions))
    return products


def _devices(rng: random.Random, products: list[Product], n: int, zones: int,
             tick: Callable[[int], None]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Devices over products Zipf-like (a random popularity order), firmware skewed to the newest;
    92 % with a reported state."""
    order = list(range(len(products)))
    rng.shuffle(order)
    cum: list[float] = []
    total = 0.0
    for rank in range(len(order)):
        total += 1.0 / (rank + 1)
        cum.append(total)
    ids, kinds, pids, fws, zone_ids, protos = [], [], [], [], [], []
    s_ids, s_fw, s_services, s_remote, s_transport = [], [], [], [], []
    odd = ("unknown", "custom")  # firmware strings no version scheme can compare
    for i in range(n):
        p = products[order[bisect_right(cum, rng.random() * total)]]
        vs = p.versions
        idx = max(0, len(vs) - 1 - int(rng.expovariate(0.45)))
        fw = vs[idx] if rng.random() > 0.001 else rng.choice(odd)
        dev = f"DEV-{i:07d}"
        ids.append(dev)
        kinds.append(p.vendor.kind if p.relabel_of is None else products[p.origin - 1].vendor.kind)
        pids.append(p.id)
        fws.append(fw)
        zone_ids.append(rng.randint(1, zones))
        proto = "mqtt" if rng.random() < 0.7 else "http"
        protos.append(proto)
        if rng.random() < 0.92:
            s_ids.append(dev)
            newer = fw in vs and idx + 1 < len(vs) and rng.random() < 0.04
            s_fw.append(vs[idx + 1] if newer else fw)
            s_services.append(rng.choices(_SERVICES, _SERVICE_WEIGHTS)[0])
            s_remote.append(rng.choices(_REMOTE, _REMOTE_WEIGHTS)[0])
            s_transport.append(proto)
        if i % 50_000 == 49_999:
            tick(50_000)
    tick(n % 50_000)
    now = datetime.now(UTC)
    devices = pl.DataFrame({"id": ids, "kind": kinds, "product_id": pids, "firmware_version": fws,
                            "zone_id": zone_ids, "protocol": protos}).with_columns(
        pl.lit(now).alias("created_at"), pl.lit(now).alias("updated_at"))
    states = pl.DataFrame({"device_id": s_ids, "transport": s_transport, "firmware_version": s_fw,
                           "services": s_services, "remote_access": s_remote}).with_columns(
        pl.lit(True).alias("online"), pl.lit(now).alias("status_at"), pl.lit(now).alias("last_seen"),
        pl.lit("unique").alias("credential_state"), pl.lit(False).alias("quarantined"))
    # Reported, else inventoried: what the import merge and state ingestion keep in devices.
    reported = states.select(pl.col("device_id").alias("id"), pl.col("firmware_version").alias("reported"))
    devices = (devices.join(reported, on="id", how="left")
               .with_columns(pl.coalesce("reported", "firmware_version").alias("firmware_running")).drop("reported"))
    return devices, states


class _Ranges:
    """Version ranges as a vendor writes them, normalized once per distinct text."""

    def __init__(self) -> None:
        self.cache: dict[str, tuple[str | None, str]] = {}

    def keyed(self, text: str | None) -> tuple[str | None, str]:
        """(intervals as the JSON the import service stores, scheme)"""
        if text is None:
            return None, "vendor"
        hit = self.cache.get(text)
        if hit is None:
            r = av.parse_vers(text) if text.startswith("vers:") else av.parse_text(text)
            intervals = json.dumps([{"lo": lo, "lo_incl": li, "hi": hi, "hi_incl": hi_}
                                    for lo, li, hi, hi_ in r.keyed()])
            hit = self.cache[text] = (intervals, str(r.scheme))
        return hit


def _affected_text(rng: random.Random, style: str, vs: list[str]) -> tuple[str, int, int]:
    """(range as written, first affected index j, first fixed index k; k == len: no fix yet)."""
    n = len(vs)
    k = rng.randint(1, n)
    j = 0 if rng.random() < 0.65 else rng.randint(0, k - 1)
    r = rng.random()
    if style == "semver":
        if r < 0.03:
            return "vers:semver/*", 0, n
        if r < 0.10:
            picks = sorted(rng.sample(range(j, k), min(3, k - j)))
            return "vers:semver/" + "|".join(vs[i] for i in picks), j, k
        if k == n:
            return (f"vers:semver/>={vs[j]}" if j else f"vers:semver/<={vs[-1]}"), j, k
        return (f"vers:semver/>={vs[j]}|<{vs[k]}" if j else f"vers:semver/<{vs[k]}"), j, k
    if r < 0.03:
        return "all versions", 0, n
    if r < 0.10:
        picks = sorted(rng.sample(range(j, k), min(3, k - j)))
        return ", ".join(vs[i] for i in picks), j, k
    if r < 0.16:
        stem = vs[k - 1].split(" ")[0].rsplit(".", 1)[0]  # "V5.5" of "V5.5.113 build 210317": the 5.5 line
        return f"{stem}.x", j, n
    if j == 0:
        if k == n:
            return f"{vs[-1]} and earlier", 0, n
        return rng.choice((f"< {vs[k]}", f"before {vs[k]}", f"{vs[k - 1]} and earlier", f"prior to {vs[k]}")), 0, k
    if k == n:
        return f">= {vs[j]}", j, n
    return rng.choice((f">= {vs[j]} < {vs[k]}", f"from {vs[j]} to {vs[k - 1]}", f"{vs[j]} - {vs[k - 1]}")), j, k


class _Entries:
    """The columns of advisory_entries, row by row."""

    COLUMNS = ("id", "advisory_id", "cve", "vendor", "product", "vendor_key", "product_key", "model_pattern",
               "versions", "intervals", "scheme", "status", "justification", "remediation", "fixed_version",
               "cvss", "exploited", "purl", "purl_key")

    def __init__(self, ranges: _Ranges, first_id: int = 1) -> None:
        self.ranges = ranges
        self.cols: dict[str, list[Any]] = {c: [] for c in self.COLUMNS}
        self.next_id = first_id

    def __len__(self) -> int:
        return len(self.cols["id"])

    def add(self, advisory_id: int, cve: str, vendor: str, product: str, status: str, versions: str | None, *,
            cvss: float | None, fixed: str | None = None, remediation: str | None = None,
            justification: str | None = None, exploited: bool = False) -> None:
        intervals, scheme = self.ranges.keyed(versions)
        pattern = model_pattern(product) if "*" in product else None
        row = (self.next_id, advisory_id, cve, vendor, product, vendor_key(vendor), model_key(product), pattern,
               versions, intervals, scheme, status, justification, remediation, fixed, cvss, exploited, None, None)
        for c, v in zip(self.COLUMNS, row, strict=True):
            self.cols[c].append(v)
        self.next_id += 1

    def add_component(self, advisory_id: int, cve: str, package: Package, status: str, versions: str, *,
                      cvss: float | None, fixed: str | None) -> None:
        """A statement about a software package (as a CVE record with a PURL names it), matched to
        the SBOM components of firmware releases, not to device identities."""
        intervals, scheme = self.ranges.keyed(versions)
        row = (self.next_id, advisory_id, cve, None, None, None, None, None, versions, intervals, scheme, status,
               None, "vendor_fix" if fixed else None, fixed, cvss, False, package.purl, package.key)
        for c, v in zip(self.COLUMNS, row, strict=True):
            self.cols[c].append(v)
        self.next_id += 1

    def statements(self, rng: random.Random, advisory_id: int, cve: str, vendor: str, product: str, style: str,
                   vs: list[str], cvss: float | None, exploited: bool) -> None:
        """What a vendor says about one product and one CVE: affected versions, often the fixed
        ones, sometimes the versions before the affected ones as not affected."""
        text, j, k = _affected_text(rng, style, vs)
        fixed = vs[k] if k < len(vs) else None
        remediation = "vendor_fix" if fixed else rng.choice(("mitigation", "none_available"))
        self.add(advisory_id, cve, vendor, product, "affected", text, cvss=cvss, fixed=fixed,
                 remediation=remediation, exploited=exploited)
        if fixed and rng.random() < 0.4:
            ge = f"vers:semver/>={fixed}" if style == "semver" else rng.choice((f"{fixed} and later", f">= {fixed}"))
            self.add(advisory_id, cve, vendor, product, "fixed", ge, cvss=cvss, fixed=fixed, remediation="vendor_fix")
        if j > 0 and rng.random() < 0.12:
            lt = f"vers:semver/<{vs[j]}" if style == "semver" else f"< {vs[j]}"
            self.add(advisory_id, cve, vendor, product, "not_affected", lt, cvss=cvss,
                     justification="vulnerable_code_not_present")

    def frame(self) -> pl.DataFrame:
        schema = {"id": pl.Int64, "advisory_id": pl.Int64, "cvss": pl.Float64, "exploited": pl.Boolean,
                  "vendor": pl.String, "product": pl.String, "vendor_key": pl.String, "product_key": pl.String,
                  "purl": pl.String, "purl_key": pl.String}
        return pl.DataFrame(self.cols, schema_overrides=schema).with_columns(pl.lit("[]").alias("hashes"))


def _advisory_frame(cols: pl.DataFrame) -> pl.DataFrame:
    """advisories rows: the generated columns plus what every imported advisory carries."""
    now = datetime.now(UTC)
    return cols.with_columns(
        pl.lit("1").alias("revision"), pl.lit(now).alias("released_at"), pl.lit(now).alias("updated_at"),
        pl.col("doc_id").map_elements(lambda d: hashlib.sha256(d.encode()).hexdigest(), return_dtype=pl.String)
        .alias("sha256"),
        pl.lit("[]").alias("unparsed"), pl.lit("bench").alias("imported_by"), pl.lit(now).alias("imported_at"))


def _spoken(vendor: Vendor, rng: random.Random) -> str:
    """The vendor as an advisory writes it: case and punctuation vary, the match key does not."""
    r = rng.random()
    if r < 0.2:
        return vendor.name.upper()
    if r < 0.3:
        return vendor.name.replace(",", "").replace(".", "")
    return vendor.name


def _advisories(rng: random.Random, vendors: list[Vendor], products: list[Product], target: int, in_catalog: float,
                tick: Callable[[int], None]) -> tuple[pl.DataFrame, _Entries, list[str], Counter[str]]:
    """CSAF-like vendor advisories, relabelers' advisories and VEX, and CVE records, until `target` entries."""
    ranges = _Ranges()
    entries = _Entries(ranges)
    by_vendor: dict[str, list[Product]] = {}
    for p in products:
        by_vendor.setdefault(p.vendor.key, []).append(p)
    catalog_keys = {(p.vendor.key, model_key(p.model)) for p in products}
    phantoms: dict[str, list[tuple[str, list[str]]]] = {}  # products the city does not own, per vendor

    def phantom(v: Vendor) -> tuple[str, list[str]]:
        pool = phantoms.setdefault(v.key, [])
        if pool and rng.random() < 0.7:
            return rng.choice(pool)
        model = _model(rng, v, rng.choice(v.families)) if not v.relabeler else f"{v.code}-{rng.randint(1000, 99999)}"
        while (v.key, model_key(model)) in catalog_keys:
            model = _model(rng, v, rng.choice(v.families))
        item = (model, _versions(rng, v.style, rng.randint(5, 20)))
        pool.append(item)
        return item

    publishers = [v for v in vendors if v.key in by_vendor]
    weights = [len(by_vendor[v.key]) ** 0.7 for v in publishers]
    cols: dict[str, list[Any]] = {c: [] for c in ("id", "source", "publisher", "publisher_key", "doc_id", "title",
                                                  "category", "cves")}
    cve_count = 0
    cves_of_vendor: dict[str, list[str]] = {}
    records: set[str] = set()  # CVEs that already have their CVE record
    affected_origins: dict[int, list[str]] = {}  # origin product id → CVEs said to affect it
    kinds: Counter[str] = Counter()
    year = 2017

    def new_cve() -> str:
        nonlocal cve_count, year
        cve_count += 1
        year = 2017 + cve_count * 8 // max(1, target // 10)
        return f"CVE-{year}-{10000 + cve_count}"

    done = 0
    while len(entries) < target:
        aid = len(cols["id"]) + 1
        vendor = rng.choices(publishers, weights)[0]
        own = by_vendor[vendor.key]
        r = rng.random()
        said = _spoken(vendor, rng)
        if r < 0.3 and vendor.relabeler:
            # A relabeler's VEX: its relabel is not affected by CVEs its origin is affected by.
            kind = "vex"
            mine = [p for p in own if p.origin in affected_origins]
            cves: list[str] = []
            for p in rng.sample(mine, min(3, len(mine))):
                for cve in rng.sample(affected_origins[p.origin], min(5, len(affected_origins[p.origin]))):
                    entries.add(aid, cve, said, p.model, "not_affected", None, cvss=None,
                                justification="vulnerable_code_not_present")
                    cves.append(cve)
            cves = sorted(set(cves))
            if not cves:
                continue
        else:
            record = r < 0.25
            kind = "cve5" if record else "csaf"
            known = cves_of_vendor.setdefault(vendor.key, [])
            if record:  # a CVE record of a CVE the vendor's advisories name, or of a new one
                reuse = [c for c in known[-50:] if c not in records]
                cves = [rng.choice(reuse) if reuse and rng.random() < 0.5 else new_cve()]
                records.add(cves[0])
                n_products = rng.randint(1, 3)
            else:
                cves = [new_cve() for _ in range(rng.choice((1, 1, 2, 3, 5, 8, 10, 12, 15, 20, 25, 30)))]
                n_products = rng.randint(1, 14)
            known.extend(c for c in cves if c not in known)
            named: list[tuple[str, list[str], str, int | None]] = []  # model, versions, style, origin id
            for _ in range(n_products):
                if rng.random() < in_catalog:
                    p = rng.choice(own)
                    named.append((p.model, p.versions, products[p.origin - 1].vendor.style, p.origin))
                else:
                    model, vs = phantom(vendor)
                    named.append((model, vs, vendor.style, None))
            if not vendor.relabeler and rng.random() < 0.08:
                family = rng.choice(vendor.families)
                members = [p for p in own if p.family == family]
                vs = rng.choice(members).versions if members else phantom(vendor)[1]
                named.append((f"{vendor.code}-{family}*", vs, vendor.style, None))
                kinds["pattern"] += 1
            for cve in cves:
                cvss = None if rng.random() < 0.05 else round(rng.uniform(4.0, 10.0), 1)
                exploited = rng.random() < 0.01
                for model, vs, st, origin in named:
                    if len(cves) > 1 and rng.random() < 0.2:
                        continue  # not every CVE of an advisory concerns every product in it
                    if rng.random() < 0.02:  # a product named without versions: every version
                        entries.add(aid, cve, said, model, "affected", None, cvss=cvss, exploited=exploited,
                                    remediation="none_available")
                    else:
                        entries.statements(rng, aid, cve, said, model, st, vs, cvss, exploited)
                    if origin is not None:
                        affected_origins.setdefault(origin, []).append(cve)
        kinds[kind] += 1
        cols["id"].append(aid)
        cols["source"].append("cve5" if kind == "cve5" else "csaf")
        cols["publisher"].append(vendor.name)
        cols["publisher_key"].append(vendor.key)
        cols["doc_id"].append(cves[0] if kind == "cve5" else f"{vendor.code}-SA-{aid:05d}")
        cols["title"].append(f"Vulnerabilities in {vendor.name} products")
        cols["category"].append({"cve5": "cve_record", "vex": "csaf_vex"}.get(kind, "csaf_security_advisory"))
        cols["cves"].append(json.dumps(cves))
        if len(entries) - done >= 5_000:
            tick(min(len(entries), target) - done)
            done = min(len(entries), target)
    tick(target - done)
    frame = _advisory_frame(pl.DataFrame(cols))
    cut = entries.cols
    for c in cut:  # exactly `target` entries; an advisory cut short keeps its CVE list (as a superset)
        del cut[c][target:]
    all_cves = sorted({c for c in cut["cve"]})
    return frame, entries, all_cves, kinds


_PKG_NAMES = ("busybox", "openssl", "lighttpd", "dropbear", "curl", "zlib", "libpng", "uclibc", "glibc", "sqlite",
              "mbedtls", "openssh", "dnsmasq", "ffmpeg", "libjpeg", "expat", "libxml2", "ntp", "hostapd", "boa",
              "gsoap", "live555", "jquery", "lwip", "freertos", "u-boot", "linux", "pcre", "lua", "json-c")
_PKG_TYPES = (("generic", 50), ("deb", 15), ("github", 20), ("npm", 10), ("pypi", 5))


def _packages(rng: random.Random, n: int) -> tuple[list[Package], list[float]]:
    """`n` packages with semver histories, and their popularity (Zipf-like: busybox is in every
    image, most packages in a few)."""
    from cityward.domain.cyclonedx import purl_key

    types = [t for t, _w in _PKG_TYPES]
    type_weights = [float(w) for _t, w in _PKG_TYPES]
    out: list[Package] = []
    for i in range(n):
        kind = rng.choices(types, type_weights)[0]
        name = _PKG_NAMES[i] if i < len(_PKG_NAMES) else f"{rng.choice(_PKG_NAMES)}-{rng.choice(_ROOTS)}{i}"
        namespace = "" if kind in ("npm", "pypi") else f"{rng.choice(_PREFIXES).lower()}{rng.choice(_ROOTS)}/"
        purl = f"pkg:{kind}/{namespace}{name}"
        major, minor, patch = rng.randint(0, 3), rng.randint(0, 30), rng.randint(0, 9)
        versions = []
        for _ in range(rng.randint(8, 25)):
            versions.append(f"{major}.{minor}.{patch}")
            r = rng.random()
            major, minor, patch = ((major, minor, patch + rng.randint(1, 3)) if r < 0.65 else
                                   (major, minor + 1, 0) if r < 0.95 else (major + 1, 0, 0))
        key = purl_key(purl)
        assert key is not None
        out.append(Package(purl, key[0], versions))
    rng.shuffle(out[len(_PKG_NAMES):])
    return out, [1.0 / (rank + 1) ** 0.8 for rank in range(n)]


def _component_advisories(rng: random.Random, packages: list[Package], entries: _Entries,
                          target: int, first_advisory: int) -> pl.DataFrame:
    """CVE records about packages (a PURL and a semver range), until `target` more entries: affected
    before a fixed version (every earlier version, or the few before it), often with the fixed
    range stated as well."""
    cols: dict[str, list[Any]] = {c: [] for c in ("id", "source", "publisher", "publisher_key", "doc_id", "title",
                                                  "category", "cves")}
    start = len(entries)
    n = 0
    while len(entries) - start < target:
        n += 1
        aid = first_advisory + n
        pkg = rng.choice(packages)  # CVEs are spread over packages; SBOMs favour the popular ones
        cve = f"CVE-{2016 + n % 10}-{900000 + n}"
        vs = pkg.versions
        k = rng.randint(1, len(vs) - 1)
        j = 0 if rng.random() < 0.4 else max(0, k - rng.randint(1, 4))  # every earlier version, or a few
        cvss = round(rng.uniform(3.0, 10.0), 1)
        text = f"vers:semver/<{vs[k]}" if j == 0 else f"vers:semver/>={vs[j]}|<{vs[k]}"
        entries.add_component(aid, cve, pkg, "affected", text, cvss=cvss, fixed=vs[k])
        if rng.random() < 0.3:
            entries.add_component(aid, cve, pkg, "fixed", f"vers:semver/>={vs[k]}", cvss=cvss, fixed=vs[k])
        pkg.cves.append(cve)
        vendor = pkg.key.split("/")[-2] if pkg.key.count("/") >= 2 else pkg.key.split("/")[-1]
        for c, v in zip(cols, (aid, "cve5", vendor, match_key(vendor) or vendor, cve, f"{cve} in {pkg.key}",
                               "cve_record", json.dumps([cve])), strict=True):
            cols[c].append(v)
    return _advisory_frame(pl.DataFrame(cols))


def _sboms(rng: random.Random, products: list[Product], devices: pl.DataFrame, packages: list[Package],
           weights: list[float], per_release: int) -> Sboms:
    """A release with a CycloneDX SBOM of `per_release` components for every (true-origin product,
    firmware) the fleet runs; newer firmware carries newer components. 5 % of the SBOMs state (VEX)
    that one of their components is not affected by one of its CVEs."""
    now = datetime.now(UTC)
    origin_of = {p.id: p.origin for p in products}
    running = (devices.select("product_id", "firmware_running").unique().iter_rows())
    wanted = sorted({(origin_of[pid], fw) for pid, fw in running})
    rel_cols: dict[str, list[Any]] = {c: [] for c in ("id", "brand", "model", "brand_key", "model_key", "version")}
    comp_rows: tuple[list[int], list[str], list[str], list[str]] = ([], [], [], [])
    vex_rows: list[tuple[int, str, str]] = []
    for rid, (origin, fw) in enumerate(wanted, start=1):
        p = products[origin - 1]
        if fw not in p.versions:
            continue  # a firmware string no release is named by
        bk, mk = product_key(p.vendor.name, p.model)
        for c, v in zip(rel_cols, (rid, p.vendor.name, p.model, bk, mk, fw), strict=True):
            rel_cols[c].append(v)
        age = p.versions.index(fw) / max(1, len(p.versions) - 1)  # 0 oldest, 1 newest
        chosen: dict[str, Package] = {}
        while len(chosen) < per_release:
            for pkg in rng.choices(packages, weights, k=per_release):
                chosen.setdefault(pkg.key, pkg)
        for pkg in list(chosen.values())[:per_release]:
            idx = min(len(pkg.versions) - 1, max(0, round(age * (len(pkg.versions) - 1)) + rng.randint(-3, 1)))
            comp_rows[0].append(rid)
            comp_rows[1].append(pkg.key)
            comp_rows[2].append(pkg.key.rsplit("/", 1)[-1])
            comp_rows[3].append(pkg.versions[idx])
        if rng.random() < 0.05:
            with_cves = [pkg for pkg in chosen.values() if pkg.cves]
            if with_cves:
                pkg = rng.choice(with_cves)
                vex_rows.append((rid, rng.choice(pkg.cves), pkg.key))
    releases = pl.DataFrame(rel_cols).with_columns(
        pl.lit(1 << 20).alias("size"), pl.col("id").cast(pl.String).str.pad_start(64, "0").alias("sha256"),
        pl.lit("bench").alias("signature"), pl.lit("bench-key").alias("key_id"), pl.lit("bench").alias("uploaded_by"),
        pl.lit(now).alias("uploaded_at"))
    sbom_frame = releases.select(
        pl.col("id").alias("release_id"), pl.lit("1.5").alias("spec_version"), pl.lit(None, pl.String)
        .alias("serial_number"), (pl.col("brand") + " " + pl.col("model") + " " + pl.col("version")).alias("subject"),
        pl.lit(per_release).alias("components"), pl.lit(0).alias("duplicates"), pl.col("sha256"),
        pl.lit("bench").alias("imported_by"), pl.lit(now).alias("imported_at"))
    components = pl.DataFrame({"release_id": comp_rows[0], "purl_key": comp_rows[1], "name": comp_rows[2],
                               "version": comp_rows[3]}).with_columns(pl.lit("library").alias("type"))
    components = components.with_row_index("id", offset=1).with_columns(pl.col("id").cast(pl.Int64))
    vex = pl.DataFrame(vex_rows, schema={"release_id": pl.Int64, "cve": pl.String, "purl_key": pl.String},
                       orient="row").unique(["release_id", "cve", "purl_key"])
    keys = pl.DataFrame({"key_id": ["bench-key"], "manufacturer": ["bench"], "manufacturer_key": ["bench"],
                         "public_key": ["A" * 43 + "="], "added_by": ["bench"], "added_at": [now]})
    return Sboms(keys, releases, sbom_frame, components, vex)


def _feeds(rng: random.Random, cves: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """CISA KEV for 3 % of the CVEs (a fifth of them with ransomware use), EPSS for every CVE."""
    today = date.today()
    kev = [c for c in cves if rng.random() < 0.03]
    kev_frame = pl.DataFrame({
        "cve": kev, "vendor": ["vendor"] * len(kev), "product": ["product"] * len(kev),
        "name": [f"{c} vulnerability" for c in kev],
        "date_added": [today - timedelta(days=rng.randint(0, 900)) for _ in kev],
        "due_date": [today + timedelta(days=rng.randint(-600, 21)) for _ in kev],
        "ransomware": [rng.random() < 0.2 for _ in kev],
    }, schema_overrides={"date_added": pl.Date, "due_date": pl.Date, "ransomware": pl.Boolean})
    scores = [rng.random() ** 4 for _ in cves]
    epss = pl.DataFrame({"cve": cves, "epss": scores}).with_columns(
        pl.col("epss").rank("average").truediv(max(1, len(cves))).alias("percentile"))
    return kev_frame, epss


def _new_advisories(rng: random.Random, products: list[Product], devices: pl.DataFrame,
                    ranges: _Ranges) -> list[dict[str, Any]]:
    """Two new vendor advisories of 10 entries each: 2 CVEs x (a product and two models of its
    family), affected before the newest version, fixed in it. One for the original with the most
    devices (counting its relabels'), the realistic worst case; one for a product of median size."""
    per_product = dict(devices.group_by("product_id").len().iter_rows())
    per_origin: Counter[int] = Counter()
    for p in products:
        per_origin[p.origin] += per_product.get(p.id, 0)
    ranked = sorted((pid for pid, n in per_origin.items() if n > 0), key=lambda pid: (per_origin[pid], pid))
    cases = []
    for n, (case, pid) in enumerate((("most devices", ranked[-1]), ("median product", ranked[len(ranked) // 2]))):
        top = products[pid - 1]
        vendor = top.vendor
        family = [p for p in products if p.vendor is vendor and p.family == top.family and p.id != top.id][:2]
        while len(family) < 2:
            family.append(Product(0, vendor, _model(rng, vendor, top.family), top.family, None, 0, 0, "original",
                                  _versions(rng, vendor.style, 10)))
        entries = _Entries(ranges, first_id=0)
        cves = [f"CVE-2099-{2 * n + 1:05d}", f"CVE-2099-{2 * n + 2:05d}"]
        for cve in cves:
            for i, p in enumerate([top, *family]):
                vs = p.versions
                k = max(1, len(vs) - 1)
                if vendor.style == "semver":
                    lt, ge = f"vers:semver/<{vs[k]}", f"vers:semver/>={vs[k]}"
                else:
                    lt, ge = f"< {vs[k]}", f"{vs[k]} and later"
                entries.add(0, cve, vendor.name, p.model, "affected", lt, cvss=8.8, fixed=vs[k],
                            remediation="vendor_fix")
                if i < 2:
                    entries.add(0, cve, vendor.name, p.model, "fixed", ge, cvss=8.8, fixed=vs[k],
                                remediation="vendor_fix")
        relabels = [p.id for p in products if p.origin == top.id and p.id != top.id]
        rows = [dict(zip(entries.cols, values, strict=True)) for values in zip(*entries.cols.values(), strict=True)]
        cases.append({"case": case, "doc_id": f"BENCH-SA-NEW-{n + 1}", "publisher": vendor.name,
                      "product": f"{vendor.name} {top.model}", "product_id": top.id, "relabels": len(relabels),
                      "devices": per_origin[top.id], "cves": cves, "entries": rows})
    return cases


def build_world(args: argparse.Namespace, progress: Any) -> World:
    rng = random.Random(args.seed)
    task = progress.add_task("catalog", total=args.products)
    vendors = _vendors(rng, args.vendors)
    products = _catalog(rng, vendors, args.products)
    progress.update(task, completed=args.products)
    task = progress.add_task("devices", total=args.devices)
    zones = 60
    devices, states = _devices(rng, products, args.devices, zones, lambda n: progress.advance(task, n))
    now = datetime.now(UTC)
    crit = rng.choices(("low", "medium", "high", "critical"), (30, 40, 20, 10), k=zones)
    zone_names = [f"zone-{i:02d}" for i in range(1, zones + 1)]
    zone_frame = pl.DataFrame({"id": range(1, zones + 1), "name": zone_names, "name_key": zone_names,
                               "criticality": crit}).with_columns(pl.lit(now).alias("created_at"))
    task = progress.add_task("advisory entries (ranges normalized)", total=args.entries)
    device_entries = args.entries - args.component_entries
    advisories, entries, cves, kinds = _advisories(rng, vendors, products, device_entries, args.in_catalog,
                                                   lambda n: progress.advance(task, n))
    packages, popularity = _packages(rng, args.packages)
    components = _component_advisories(rng, packages, entries, args.component_entries,
                                       first_advisory=advisories.height)
    progress.advance(task, args.component_entries)
    advisories = pl.concat([advisories, components], how="diagonal_relaxed")
    cves += sorted(c for pkg in packages for c in pkg.cves)
    kinds["cve5 (package)"] = components.height
    task = progress.add_task(f"SBOMs ({args.sbom_components} components each)", total=1)
    sboms = _sboms(rng, products, devices, packages, popularity, args.sbom_components)
    progress.advance(task, 1)
    kev, epss = _feeds(rng, cves)
    new = _new_advisories(rng, products, devices, entries.ranges)
    entry_frame = entries.frame()
    catalog_keys = {(p.vendor.key, model_key(p.model)) for p in products}
    named = entry_frame.select("vendor_key", "product_key", "model_pattern").filter(pl.col("model_pattern").is_null())
    in_catalog = sum(1 for key in named.select("vendor_key", "product_key").iter_rows() if key in catalog_keys)
    stats = {
        "vendors": len(vendors), "relabelers": sum(v.relabeler for v in vendors), "products": len(products),
        "relabels": sum(p.relabel_of is not None for p in products),
        "relabels_two_deep": sum(p.depth >= 2 for p in products),
        "firmware_versions": sum(len(p.versions) for p in products if p.relabel_of is None),
        "devices": devices.height, "device_states": states.height,
        "distinct_firmware": devices.get_column("firmware_version").n_unique(),
        "advisories": advisories.height, "entries": entry_frame.height, "cves": len(cves),
        "entries_in_catalog": in_catalog,
        "entries_pattern": int(entry_frame.get_column("model_pattern").is_not_null().sum()),
        "entries_every_version": int(entry_frame.get_column("intervals").is_null().sum()),
        "ranges_parsed": len(entries.ranges.cache),
        "by_status": dict(Counter(entry_frame.get_column("status").to_list())),
        "advisory_kinds": dict(kinds), "kev": kev.height, "epss": epss.height,
        "entries_component": int(entry_frame.get_column("purl_key").is_not_null().sum()),
        "packages": len(packages), "releases": sboms.releases.height, "sbom_components": sboms.components.height,
        "sbom_vex": sboms.vex.height,
        "top_products_devices": sorted(devices.group_by("product_id").len().get_column("len").to_list())[-3:],
    }
    return World(vendors, products, devices, states, zone_frame, advisories, entry_frame, kev, epss, sboms, new,
                 stats)


def product_frame(products: list[Product]) -> pl.DataFrame:
    now = datetime.now(UTC)
    rows = []
    for p in products:
        origin = products[p.origin - 1]
        brand_key, model_key_ = product_key(p.vendor.name, p.model)
        scheme = {"build": "vendor", "dotted": "dotted", "semver": "semver"}[origin.vendor.style]
        rows.append((p.id, p.vendor.name, p.model, brand_key, model_key_, origin.vendor.kind, p.relabel_of, p.status,
                     origin.vendor.name, origin.model, product_key(origin.vendor.name, origin.model)[0], p.depth,
                     scheme))
    schema = {"id": pl.Int64, "brand": pl.String, "model": pl.String, "brand_key": pl.String, "model_key": pl.String,
              "kind": pl.String, "relabel_of_id": pl.Int64, "origin_status": pl.String, "origin_brand": pl.String,
              "origin_model": pl.String, "origin_brand_key": pl.String, "origin_depth": pl.Int64,
              "version_scheme": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row").with_columns(
        pl.lit(now).alias("created_at"), pl.lit(now).alias("updated_at"))


# --- loading ---------------------------------------------------------------------------------


def _platform(url: str) -> Any:
    from cityward.bootstrap import bootstrap
    from cityward.config import load_settings

    return bootstrap(load_settings(database_url=url, secret_key_file=OUT / "match-bench.secret"))


def load(url: str, world: World, progress: Any) -> dict[str, float]:
    """Every row through `write_frame` (COPY on PostgreSQL, executemany on SQLite), in chunks."""
    from cityward.adapters.storage.frames import write_frame

    took: dict[str, float] = {}
    plat = _platform(url)
    tables = (("zones", world.zones), ("products", product_frame(world.products)), ("devices", world.devices),
              ("device_states", world.states), ("advisories", world.advisories), ("advisory_entries", world.entries),
              ("kev_entries", world.kev), ("epss_scores", world.epss), ("firmware_keys", world.sboms.keys),
              ("firmware_releases", world.sboms.releases), ("sboms", world.sboms.sboms),
              ("sbom_components", world.sboms.components), ("sbom_vex", world.sboms.vex))
    for table, frame in tables:
        task = progress.add_task(f"insert {table}", total=frame.height)
        start = time.perf_counter()
        with plat.uow(write=True) as uow:
            for offset in range(0, frame.height, 100_000):
                part = frame.slice(offset, 100_000)
                write_frame(uow.session, table, part)
                progress.advance(task, part.height)
            uow.commit()
        took[table] = time.perf_counter() - start
    pg = plat.engine.dialect.name == "postgresql"
    plat.close()
    if pg:
        start = time.perf_counter()
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")  # what autovacuum would have done by the time advisories arrive
        took["vacuum_analyze"] = time.perf_counter() - start
    return took


# --- the measuring child ---------------------------------------------------------------------


def _say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def _reader() -> Any:
    """The module that holds the matcher's reading and storing steps."""
    from cityward.adapters.storage import vuln_frames

    return vuln_frames


def compute_only(plat: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The whole fleet's class matches, not stored, and the classes examined (with device counts)."""
    with plat.uow() as uow:
        return _reader().compute(uow.session, None, uow.clock())  # type: ignore[no-any-return]


def _instrument() -> tuple[dict[str, float], dict[str, int]]:
    """Phase timers around the matcher's steps (looked up at call time), and the rows each returned."""
    from cityward.adapters import vuln_polars
    phases: dict[str, float] = {}
    rows: dict[str, int] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                out = fn(*a, **kw)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
            frame = out[0] if isinstance(out, tuple) else out
            if isinstance(frame, pl.DataFrame):
                rows[name] = rows.get(name, 0) + frame.height
            elif hasattr(out, "inserted"):  # the store: rows written
                rows[name] = rows.get(name, 0) + out.inserted + out.updated + out.deleted
            return out
        return wrapper

    reader = _reader()
    for attr, name in (("_entries", "read entries"), ("_identities", "identities"),
                       ("_sbom_components", "read SBOM components"), ("_classes", "read classes (version keys)"),
                       ("_component_classes", "classes x components"), ("_hashed_releases", "read hashed releases"),
                       ("store", "store (difference)")):
        setattr(reader, attr, timed(name, getattr(reader, attr)))
    vuln_polars.match_classes = timed("join classes x entries", vuln_polars.match_classes)
    return phases, rows


def _chunks(values: list[Any], size: int = 500) -> Iterator[list[Any]]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


def naive(plat: Any, sample_ids: list[str]) -> dict[str, Any]:
    """Per device, every entry of its product and of its true origin, and every entry about a
    package its firmware's SBOM lists, `VersionRange.contains` on the range re-parsed from the text
    as written; precedence as the matcher's (a matching fixed or not-affected statement, or the
    SBOM's own VEX, clears the CVE)."""
    import re

    from sqlalchemy import select

    from cityward.adapters.storage import vuln_frames
    from cityward.adapters.storage.models import (
        AdvisoryEntryRow,
        DeviceRow,
        FirmwareReleaseRow,
        ProductRow,
        SbomComponentRow,
        SbomVexRow,
        VulnMatchRow,
    )

    start = time.perf_counter()
    with plat.uow() as uow:
        s = uow.session
        aliases = vuln_frames.vendor_aliases(s)

        def names(brand: str, model: str) -> list[tuple[str | None, str | None]]:
            """Every (vendor key, model key) a catalog product goes by, as the matcher keys it."""
            vendor = canonical_vendor(vendor_key(brand), aliases)
            return [(vendor, k) for k in model_variants(brand, model)]

        products = {pid: (names(b, m), names(ob, om), (obk, product_key("", om)[1]))
                    for pid, b, m, ob, om, obk in s.execute(
                        select(ProductRow.id, ProductRow.brand, ProductRow.model, ProductRow.origin_brand,
                               ProductRow.origin_model, ProductRow.origin_brand_key))}
        rows = s.execute(select(AdvisoryEntryRow.cve, AdvisoryEntryRow.vendor_key, AdvisoryEntryRow.product_key,
                                AdvisoryEntryRow.model_pattern, AdvisoryEntryRow.status, AdvisoryEntryRow.versions,
                                AdvisoryEntryRow.purl_key)).all()
        devices = []
        for part in _chunks(sample_ids):
            devices += s.execute(select(DeviceRow.id, DeviceRow.product_id, DeviceRow.firmware_running)
                                 .where(DeviceRow.id.in_(part))).all()
        releases = {(b, m, v): rid for rid, b, m, v in s.execute(
            select(FirmwareReleaseRow.id, FirmwareReleaseRow.brand_key, FirmwareReleaseRow.model_key,
                   FirmwareReleaseRow.version))}
        wanted = sorted({rid for _d, pid, fw in devices if (rid := releases.get((*products[pid][2], fw)))})
        components: dict[int, list[tuple[str, str]]] = {}
        vex: dict[int, set[str]] = {}
        for part in _chunks(wanted):
            for rid, key, version in s.execute(select(SbomComponentRow.release_id, SbomComponentRow.purl_key,
                                                      SbomComponentRow.version)
                                               .where(SbomComponentRow.release_id.in_(part))):
                components.setdefault(rid, []).append((key, version))
            for rid, cve in s.execute(select(SbomVexRow.release_id, SbomVexRow.cve)
                                      .where(SbomVexRow.release_id.in_(part))):
                vex.setdefault(rid, set()).add(cve)
        joined: set[tuple[str, str]] = set()
        for part in _chunks(sample_ids):
            joined |= {(d, c) for d, c in s.execute(select(DeviceRow.id, VulnMatchRow.cve)
                                                    .join(DeviceRow, vuln_frames.on_device())
                                                    .where(DeviceRow.id.in_(part)))}
    read_s = time.perf_counter() - start

    start = time.perf_counter()
    parsed: dict[str, av.VersionRange] = {}
    Statement = tuple[str, str, av.VersionRange | None]
    exact: dict[tuple[str | None, str | None], list[Statement]] = {}
    patterns: dict[str, list[tuple[re.Pattern[str], Statement]]] = {}
    packages: dict[str, list[Statement]] = {}
    for cve, stored_vendor, prod_key, pattern, status, versions, package in rows:
        entry_vendor = canonical_vendor(stored_vendor, aliases)
        if status not in ("affected", "fixed", "not_affected"):
            continue
        rng = None
        if versions is not None:
            rng = parsed.get(versions)
            if rng is None:
                rng = parsed[versions] = (av.parse_vers(versions) if versions.startswith("vers:")
                                          else av.parse_text(versions))
        if package is not None:
            packages.setdefault(package, []).append((cve, status, rng))
        if entry_vendor is None:
            continue
        if pattern is not None:
            patterns.setdefault(entry_vendor, []).append((re.compile(pattern), (cve, status, rng)))
        elif prod_key is not None:
            exact.setdefault((entry_vendor, prod_key), []).append((cve, status, rng))
    prepare_s = time.perf_counter() - start

    start = time.perf_counter()
    found: set[tuple[str, str]] = set()
    by_component = 0
    for device_id, pid, firmware in devices:
        own, origin, catalog = products[pid]
        affected: set[str] = set()
        cleared: set[str] = set()
        for vendor, prod_key in dict.fromkeys([*own, *origin]):
            statements = list(exact.get((vendor, prod_key), ()))
            statements += [st for rx, st in patterns.get(vendor or "", ()) if rx.search(prod_key or "")]
            for cve, status, rng in set(statements):
                if rng is None or rng.contains(firmware) is True:
                    (affected if status == "affected" else cleared).add(cve)
        release = releases.get((*catalog, firmware))
        if release is not None:
            before = len(affected)
            for package, version in components.get(release, ()):
                for cve, status, rng in packages.get(package, ()):
                    if rng is None or rng.contains(version) is True:
                        (affected if status == "affected" else cleared).add(cve)
            by_component += len(affected) - before
            cleared |= vex.get(release, set())
        found.update((device_id, cve) for cve in affected - cleared)
    loop_s = time.perf_counter() - start
    only_naive, only_join = sorted(found - joined), sorted(joined - found)
    return {"sample": len(devices), "read_s": read_s, "prepare_s": prepare_s, "loop_s": loop_s,
            "ranges_parsed": len(parsed), "pairs_naive": len(found), "pairs_join": len(joined),
            "through_components": by_component,
            "mismatches": len(only_naive) + len(only_join), "only_naive": only_naive[:5], "only_join": only_join[:5]}


class Reader:
    """A reader of `vuln_matches` while the fleet is re-matched (one device's matches, as the API or
    the policy fact asks, twice a second): how long its slowest query waited."""

    def __init__(self, plat: Any) -> None:
        import threading

        self.plat = plat
        self.latencies: list[float] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        from sqlalchemy import func, select

        from cityward.adapters.storage import vuln_frames
        from cityward.adapters.storage.models import DeviceRow, VulnMatchRow

        i = 0
        while not self.done.is_set():
            start = time.perf_counter()
            with self.plat.uow() as uow:
                uow.session.scalar(select(func.count()).select_from(VulnMatchRow)
                                   .join(DeviceRow, vuln_frames.on_device())
                                   .where(DeviceRow.id == f"DEV-{i * 7919 % 1000:07d}"))
            self.latencies.append(time.perf_counter() - start)
            i += 1
            self.done.wait(0.5)

    def stop(self) -> dict[str, Any]:
        self.done.set()
        self.thread.join()
        lat = sorted(self.latencies)
        return {"queries": len(lat), "max_s": lat[-1] if lat else 0.0,
                "median_s": statistics.median(lat) if lat else 0.0}


def child(url: str, new_path: Path, sample: int, runs: int) -> None:
    from sqlalchemy import func, insert, select

    from cityward.adapters.storage.models import AdvisoryEntryRow, AdvisoryRow, DeviceRow
    from cityward.services import vulnerabilities

    plat = _platform(url)
    phases, rows = _instrument()
    out: dict[str, Any] = {"backend": plat.engine.dialect.name, "code_measured": code_state()}
    with plat.uow() as uow:
        n_devices = uow.session.scalar(select(func.count()).select_from(DeviceRow)) or 0
    gc.collect()
    out["rss_before_kb"] = status_kb("VmRSS")

    # (1) the whole fleet: computed only, then matched and stored twice
    start = time.perf_counter()
    frame, classes = compute_only(plat)
    seconds = time.perf_counter() - start
    out["compute"] = {"seconds": seconds, "classes": classes.height, "matches": frame.height,
                      "through_components": int((frame.get_column("via") == "component").sum()),
                      "phases": dict(phases), "rows": dict(rows)}
    out["hwm_compute_kb"] = status_kb("VmHWM")
    _say(f"compute only (not stored): {seconds:.1f} s, {classes.height:,} classes, {frame.height:,} class matches "
         f"({out['compute']['through_components']:,} through SBOM components), "
         f"peak {out['hwm_compute_kb'] / 1024:,.0f} MB")
    del frame
    gc.collect()
    out["full"] = []
    for label in ("into an empty table", "again, nothing changed"):
        phases.clear()
        rows.clear()
        reader = Reader(plat) if label.startswith("again") else None
        start = time.perf_counter()
        summary = vulnerabilities.match(plat.uow)
        seconds = time.perf_counter() - start
        probes = reader.stop() if reader else None
        out["full"].append({"label": label, "seconds": seconds, "classes": summary.classes,
                            "affected_classes": summary.affected_classes, "matches": summary.matches,
                            "devices": summary.devices, "cves": summary.cves, "kev": summary.kev,
                            "written": [summary.inserted, summary.updated, summary.deleted], "phases": dict(phases),
                            "rows": dict(rows), "hwm_kb": status_kb("VmHWM"), "reader": probes})
        _say(f"full match {label}: {seconds:.1f} s, {summary.affected_classes:,} class matches = "
             f"{summary.matches:,} device matches on {summary.devices:,} devices; written {summary.inserted:,} / "
             f"{summary.updated:,} / {summary.deleted:,} "
             f"({', '.join(f'{k} {v:.1f}' for k, v in phases.items())}), peak {status_kb('VmHWM') / 1024:,.0f} MB"
             + (f"; a reader's slowest query meanwhile {probes['max_s']:.2f} s" if probes else ""))
    out["hwm_full_kb"] = status_kb("VmHWM")

    # (2) the naive loop on a sample, checked against what the set join stored
    step = max(1, n_devices // sample)
    sample_ids = [f"DEV-{i:07d}" for i in range(0, n_devices, step)][:sample]
    nv = naive(plat, sample_ids)
    nv["extrapolated_s"] = nv["loop_s"] * n_devices / max(1, nv["sample"])
    out["naive"] = nv
    _say(f"naive loop: {nv['loop_s']:.2f} s on {nv['sample']:,} devices (+{nv['prepare_s']:.1f} s parsing "
         f"{nv['ranges_parsed']:,} ranges) -> {nv['extrapolated_s']:,.0f} s for {n_devices:,}; "
         f"{nv['mismatches']} mismatches with the set join")

    # (3) one new advisory, twice: for the product family with the most devices, for a median product
    out["one"] = []
    for spec in json.loads(new_path.read_text()):
        start = time.perf_counter()
        now = datetime.now(UTC)
        with plat.uow(write=True) as uow:
            s = uow.session
            adv_id = (s.scalar(select(func.max(AdvisoryRow.id))) or 0) + 1
            entry_id = (s.scalar(select(func.max(AdvisoryEntryRow.id))) or 0) + 1
            s.execute(insert(AdvisoryRow), [{
                "id": adv_id, "source": "csaf", "publisher": spec["publisher"],
                "publisher_key": match_key(spec["publisher"]), "doc_id": spec["doc_id"], "title": "new advisory",
                "category": "csaf_security_advisory", "revision": "1", "released_at": now, "updated_at": now,
                "cves": spec["cves"], "sha256": "0" * 64, "unparsed": [], "imported_by": "bench",
                "imported_at": now}])
            s.execute(insert(AdvisoryEntryRow), [
                {**e, "id": entry_id + i, "advisory_id": adv_id, "hashes": [],
                 "intervals": None if e["intervals"] is None else json.loads(e["intervals"])}
                for i, e in enumerate(spec["entries"])])
            uow.commit()
        insert_s = time.perf_counter() - start
        timings: list[float] = []
        runs_out: list[dict[str, Any]] = []
        for _ in range(runs):
            phases.clear()
            rows.clear()
            start = time.perf_counter()
            summary = vulnerabilities.match(plat.uow, cves=spec["cves"])
            seconds = time.perf_counter() - start
            timings.append(seconds)
            runs_out.append({"seconds": seconds, "phases": dict(phases), "rows": dict(rows)})
        median = statistics.median(timings)
        mid = min(runs_out, key=lambda r: abs(r["seconds"] - median))
        out["one"].append({
            "case": spec["case"], "product": spec["product"], "relabels": spec["relabels"],
            "family_devices": spec["devices"], "entries": len(spec["entries"]), "cves": spec["cves"],
            "insert_s": insert_s, "runs": timings, "best_s": min(timings), "median_s": median,
            "matches": summary.matches, "devices": summary.devices, "classes": summary.classes,
            "affected_classes": summary.affected_classes, "phases": mid["phases"], "rows": mid["rows"]})
        _say(f"one new advisory, {spec['case']} ({len(spec['entries'])} entries, {spec['product']}, "
             f"{spec['devices']:,} devices): best {min(timings) * 1000:.0f} ms, median {median * 1000:.0f} ms, "
             f"{summary.matches:,} matches on {summary.devices:,} devices")
    plat.close()
    print(json.dumps(out))


def run_child(url: str, new_path: Path, args: argparse.Namespace, backend: str) -> tuple[dict[str, Any], str | None]:
    cmd = [sys.executable, __file__, "--child", "--url", url, "--new", str(new_path), "--sample", str(args.sample),
           "--runs", str(args.runs)]
    profile = None
    if args.py_spy:
        profile = str(OUT / f"match-profile-{backend}-{args.devices}.txt")
        cmd = [args.py_spy, "record", "-f", "raw", "-r", "50", "-o", profile, "--", *cmd]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"the measuring process failed (exit {done.returncode}); see above")
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1])
    return result, profile


# --- report ----------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "[green]met[/]" if ok else "[bold red]NOT met[/]"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def _phases(r: dict[str, Any]) -> str:
    rest = r["seconds"] - sum(r["phases"].values())
    parts = [f"{k} {v:.2f}" if v < 1 else f"{k} {v:.1f}" for k, v in r["phases"].items()]
    return ", ".join([*parts, f"rest {rest:.2f}" if rest < 1 else f"rest {rest:.1f}"])


def report(world: dict[str, Any], took: dict[str, float], r: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    w = world
    table = Table(title=f"cityward vulnerability matching: {w['devices']:,} devices, {w['entries']:,} advisory "
                        f"entries ({r['backend']})", show_lines=False)
    for name, justify in (("measure", "left"), ("value", "right"), ("goal", "right"), ("", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_row("fleet", f"{w['devices']:,} devices", "", f"{w['products']:,} products of {w['vendors']} vendors, "
                  f"{w['relabels']:,} relabels ({w['relabels_two_deep']} two deep), {w['distinct_firmware']:,} "
                  f"firmware strings, {w['device_states']:,} reported states")
    table.add_row("advisories", f"{w['entries']:,} entries", "", f"{w['advisories']:,} advisories, {w['cves']:,} CVEs; "
                  f"{w['entries_in_catalog']:,} entries name a catalog product, {w['entries_pattern']:,} a model "
                  f"pattern, {w['entries_every_version']:,} every version; KEV {w['kev']:,}, EPSS {w['epss']:,}")
    table.add_row("SBOMs", f"{w['sbom_components']:,} components", "",
                  f"{w['releases']:,} firmware releases x {args.sbom_components} of {w['packages']:,} packages; "
                  f"{w['entries_component']:,} entries name a package; {w['sbom_vex']:,} SBOM VEX statements")
    table.add_row("database built (rows inserted directly)", f"{sum(took.values()):.1f} s", "", "")
    c = r["compute"]
    table.add_row("compute only (not stored)", f"{c['seconds']:.1f} s", "",
                  f"{c['classes']:,} classes, {c['matches']:,} class matches "
                  f"({c['through_components']:,} through SBOM components)")
    for f in r["full"]:
        ok = f["seconds"] <= GOAL_FULL_S
        table.add_row(f"full match, {f['label']}", f"{f['seconds']:.1f} s", f"≤ {GOAL_FULL_S:.0f} s", _met(ok))
        table.add_row("  phases (s)", "", "", _phases(f))
        if f.get("reader"):
            table.add_row("  a reader meanwhile (one device's matches)", f"{f['reader']['max_s']:.2f} s", "",
                          f"slowest of {f['reader']['queries']} queries (median {_ms(f['reader']['median_s'])})")
        table.add_row("  stored rows written: new / changed / gone", " / ".join(f"{n:,}" for n in f["written"]),
                      "", "")
    f = r["full"][0]
    table.add_row("  (device, CVE) matches / devices affected", f"{f['matches']:,}", "",
                  f"{f['devices']:,} devices ({f['devices'] / w['devices']:.0%}), {f['cves']:,} CVEs, "
                  f"{f['kev']:,} KEV matches; stored as {f['affected_classes']:,} (product, firmware, CVE) rows")
    table.add_row("peak memory (VmHWM of the measuring process)", f"{r['hwm_full_kb'] / 1024:,.0f} MB", "",
                  f"compute only {r['hwm_compute_kb'] / 1024:,.0f} MB, before {r['rss_before_kb'] / 1024:,.0f} MB")
    for o in r["one"]:
        table.add_row(f"one new advisory ({o['entries']} entries), {o['case']}: best of {len(o['runs'])}",
                      _ms(o["best_s"]), f"≤ {_ms(GOAL_ONE_S)}", _met(o["best_s"] <= GOAL_ONE_S))
        table.add_row("  median", _ms(o["median_s"]), f"≤ {_ms(GOAL_ONE_S)}", _met(o["median_s"] <= GOAL_ONE_S))
        table.add_row("  what it touched", f"{o['matches']:,} matches", "",
                      f"{o['product']} (+{o['relabels']} relabels, {o['family_devices']:,} devices): "
                      f"{o['classes']:,} classes read, {o['affected_classes']:,} class matches stored, "
                      f"{o['devices']:,} devices affected")
        table.add_row("  phases of the median run (ms)", "", "", ", ".join(
            f"{k} {v * 1000:.0f}" for k, v in o["phases"].items()) + f", rest "
            f"{(o['median_s'] - sum(o['phases'].values())) * 1000:.0f}")
    n = r["naive"]
    table.add_row(f"naive per-device loop, {n['sample']:,} devices", f"{n['loop_s']:.2f} s", "",
                  f"+ {n['prepare_s']:.1f} s to parse {n['ranges_parsed']:,} ranges once")
    table.add_row(f"  extrapolated to {w['devices']:,}", f"{n['extrapolated_s']:,.0f} s", "",
                  f"{n['extrapolated_s'] / c['seconds']:.0f} x the set join (compute only)")
    table.add_row("  agrees with the set join on the sample", f"{n['mismatches']} mismatches", "0",
                  _met(n["mismatches"] == 0) + f" ({n['pairs_naive']:,} vs {n['pairs_join']:,} pairs, "
                  f"{n['through_components']:,} through SBOM components)")
    Console(width=160).print(table)
    if n["mismatches"]:
        print(f"  only naive: {n['only_naive']}\n  only set join: {n['only_join']}")


def code_state() -> dict[str, Any]:
    """Which code was measured: the commit, whether src/ had uncommitted changes, and a digest of
    the matcher's files."""
    def git(*a: str) -> str:
        done = subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT)
        return done.stdout.strip()

    files = ("src/cityward/services/vulnerabilities.py", "src/cityward/adapters/storage/vuln_frames.py",
             "src/cityward/adapters/vuln_polars.py", "src/cityward/adapters/storage/frames.py")
    digest = hashlib.sha256()
    for name in files:
        path = ROOT / name
        if path.exists():
            digest.update(path.read_bytes())
    return {"commit": git("rev-parse", "--short", "HEAD"), "src_dirty": bool(git("status", "--porcelain", "src")),
            "matcher_sha256": digest.hexdigest()[:12]}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1_000_000)
    ap.add_argument("--entries", type=int, default=200_000, help="advisory product/version entries")
    ap.add_argument("--component-entries", type=int, default=10_000,
                    help="how many of --entries are about software packages (matched through SBOMs)")
    ap.add_argument("--packages", type=int, default=3_000, help="distinct software packages in the SBOMs")
    ap.add_argument("--sbom-components", type=int, default=SBOM_COMPONENTS, help="components per firmware SBOM")
    ap.add_argument("--products", type=int, default=5_000)
    ap.add_argument("--vendors", type=int, default=300)
    ap.add_argument("--in-catalog", type=float, default=0.25,
                    help="share of the products an advisory names that are in the city's catalog")
    ap.add_argument("--sample", type=int, default=10_000, help="devices given to the naive loop")
    ap.add_argument("--runs", type=int, default=5, help="re-matches after the new advisory (best and median)")
    ap.add_argument("--pg", metavar="URL", help="an admin connection: measure on a fresh PostgreSQL database "
                    "created there (and dropped afterwards) instead of SQLite")
    ap.add_argument("--py-spy", metavar="PATH", help="profile the measuring process with this py-spy (raw "
                    "collapsed stacks to bench/out/match-profile-<backend>-<devices>.txt)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards, to investigate (SQLite: "
                    "bench/out/match-<devices>.db; PostgreSQL: its URL is printed, drop it yourself)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--new", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args.url, args.new, args.sample, args.runs)
        return

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    backend = "postgresql" if args.pg else "sqlite"
    load_start = os.getloadavg()
    print(f"cityward match benchmark: {backend}, python {sys.version.split()[0]}, polars {pl.__version__}, "
          f"{os.cpu_count()} CPUs, load average {load_start[0]:.1f}", flush=True)
    columns = (TextColumn("  {task.description:40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with tempfile.TemporaryDirectory(prefix="cityward-match-") as tmp:
        db: AbstractContextManager[Any] = Database(args.pg) if args.pg else nullcontext()
        if args.keep and args.pg:
            db = nullcontext(Database(args.pg).__enter__())  # created, and not dropped at the end
        sqlite_file = (OUT if args.keep else Path(tmp)) / f"match-{args.devices}.db"
        if backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{sqlite_file}{suffix}").unlink(missing_ok=True)
        with db as pg:
            url = pg.url if pg is not None else f"sqlite:///{sqlite_file}"
            with Progress(*columns) as progress:
                start = time.perf_counter()
                world = build_world(args, progress)
                generate_s = time.perf_counter() - start
                took = load(url, world, progress)
            new_path = Path(tmp) / "new-advisory.json"
            new_path.write_text(json.dumps(world.new_advisories))
            stats = world.stats
            print(f"  generated in {generate_s:.1f} s; inserted in {sum(took.values()):.1f} s ("
                  + ", ".join(f"{k} {v:.1f}" for k, v in took.items()) + ")", flush=True)
            del world
            gc.collect()
            result, profile = run_child(url, new_path, args, backend)
            if backend == "sqlite":
                size = sum(p.stat().st_size for p in sqlite_file.parent.glob(sqlite_file.name + "*"))
                result["sqlite_file_mb"] = round(size / 2**20)
            if args.keep:
                print(f"  kept the database: {url}", flush=True)
    result["load_average"] = {"start": load_start[0], "end": os.getloadavg()[0]}
    report(stats, took, result, args)
    if profile:
        print(f"  profile: {profile}")
    line = {"devices": args.devices, "entries": args.entries, "component_entries": args.component_entries,
            "sbom_components": args.sbom_components, "in_catalog": args.in_catalog, "seed": args.seed,
            "generate_s": generate_s,
            "insert_s": took, "world": stats, **result,
            "goals": {"full_s": GOAL_FULL_S, "one_s": GOAL_ONE_S,
                      "full_met": all(f["seconds"] <= GOAL_FULL_S for f in result["full"]),
                      "one_best_met": {o["case"]: o["best_s"] <= GOAL_ONE_S for o in result["one"]},
                      "one_median_met": {o["case"]: o["median_s"] <= GOAL_ONE_S for o in result["one"]}},
            "code": code_state(), "at": datetime.now(UTC).isoformat(timespec="seconds")}
    if line["code"] != result["code_measured"]:
        print(f"  note: the code changed during the run: measured {result['code_measured']}, now {line['code']}")
    text = json.dumps(line, default=str)
    print(text)
    (OUT / "match-last.json").write_text(text + "\n")
    (OUT / f"match-last-{backend}.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
