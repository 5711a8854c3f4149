"""Benchmark: real public advisories matched against a city fleet written by hand (issue 16).

    .venv/bin/python bench/match_real.py                      # SQLite, corpus at ../shared/corpus
    .venv/bin/python bench/match_real.py --pg postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/match_real.py --corpus /path/to/corpus --skip-conformance

The fleet, its catalog and the expected affected (device, CVE) pairs are in bench/real_fleet/
(written before the matcher was first run on them; see its README). The documents are the corpus
beside the project (`../shared/corpus/`: real CISA CSAF advisories and CVE JSON 5 records, the
OASIS CSAF 2.0 test data, CycloneDX test BOMs and examples). The corpus is only read: nothing is
written into it and nothing of it is copied into the project.

What it does, each in a fresh database (a SQLite file in bench/out/, or a PostgreSQL database made
through --pg and dropped afterwards), through the services the CLI uses:

1. **Matching, three times**: the CISA CSAF advisories alone, the CVE records alone, then both.
   Each run: `setup.initialize`, `catalog.import_catalog`, `inventory.import_devices`, then
   `advisories.import_advisories(folder, skip_refused=True)` and `advisories.rematch` per folder,
   as `cityward advisories import --skip-refused` does. The (device, CVE) pairs found are the
   stored class matches joined to the devices on (product, running firmware). They are compared
   with the expected pairs of that run's documents: true and false positives, false negatives
   (each listed), precision, recall, and the import report's figures (documents, statements
   normalized, statements that could not be normalized, refused documents; statements that name
   no catalog product, from `vendors.unmatched`, what `cityward advisories unmatched` lists). A miss
   counts as *reported* when its CVE has a statement in the unmatched report, or its document has
   a statement about that CVE the import said it could not normalize; else *silent*.
2. **CSAF conformance**: every file of `csaf-suite/` imported alone (`import_advisories`, kind
   csaf). What testcases.json says: a file under a mandatory test's `failures` must be refused
   (and should name the test), one under `valid` accepted; optional and informative tests only
   warn, so all their files must be accepted, as must the examples.
3. **CycloneDX conformance**: every JSON and XML file of `cyclonedx/` attached with
   `sboms.import_sbom` to one catalog release: `valid-*` must be accepted and `invalid-*` refused;
   the bom-examples must be accepted when their specVersion is one cityward reads (1.4-1.6) and
   refused otherwise.

It prints Rich tables and one JSON line (also written to bench/out/match_real-last.json). Exit 2
with a message when the corpus is absent. A measurement, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgtemp import Database  # bench/pgtemp.py: the script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
FLEET = ROOT / "bench" / "real_fleet"
sys.path.insert(0, str(ROOT / "src"))

SOURCES = {"csaf": "advisories/cisa", "cve5": "advisories/cve5"}
NEEDED = (*SOURCES.values(), "csaf-suite/csaf_2.0", "cyclonedx")
TESTCASES = "csaf-suite/csaf_2.0/test/validator/data/testcases.json"
CITY = "Real Bench City"
SBOM_BRAND, SBOM_MODEL, SBOM_VERSION = "Bench Probe", "SBOM Target", "1.0.0"


# --- the corpus, the fleet, the expectations -------------------------------------------------


def corpus_or_exit(path: Path) -> Path:
    """The corpus folder, or exit 2 naming what is missing (a fresh clone has no corpus)."""
    if not path.is_dir():
        sys.stderr.write(f"match_real: no corpus at {path}: this benchmark needs the real documents beside the "
                         "project (../shared/corpus, as CI has it); pass --corpus PATH\n")
        raise SystemExit(2)
    missing = [d for d in NEEDED if not (path / d).is_dir()]
    if missing:
        sys.stderr.write(f"match_real: the corpus at {path} lacks {', '.join(missing)}; pass --corpus PATH to a "
                         "complete copy (see its README.md)\n")
        raise SystemExit(2)
    return path


def source_kind(name: str) -> str:
    return "csaf" if name.startswith("icsa-") else "cve5"


@dataclass
class Expected:
    pairs: dict[str, set[tuple[str, str]]]  # scope (csaf, cve5, all) → (device, CVE)
    why: dict[tuple[str, str], list[tuple[str, str]]]  # (device, CVE) → [(source file, why)]
    devices: dict[str, dict[str, str]]  # id → inventory row


def load_expected() -> Expected:
    with (FLEET / "inventory.csv").open(newline="", encoding="utf-8") as f:
        devices = {r["id"]: r for r in csv.DictReader(f)}
    pairs: dict[str, set[tuple[str, str]]] = {"csaf": set(), "cve5": set(), "all": set()}
    why: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    with (FLEET / "expected.csv").open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            pair = (r["device_id"], r["cve"])
            if r["device_id"] not in devices:
                raise SystemExit(f"match_real: expected.csv names device {r['device_id']!r}, not in inventory.csv")
            pairs[source_kind(r["source"])].add(pair)
            pairs["all"].add(pair)
            why[pair].append((r["source"], r["why"]))
    return Expected(pairs, dict(why), devices)


# --- databases -------------------------------------------------------------------------------


@contextmanager
def database(pg_admin: str | None, label: str) -> Iterator[tuple[str, Path]]:
    """(SQLAlchemy URL, scratch folder) of a fresh database, removed afterwards."""
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"match_real-{label}-", dir=OUT))
    try:
        if pg_admin:
            with Database(pg_admin) as db:
                yield db.url, work
        else:
            yield f"sqlite:///{work / 'bench.db'}", work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def platform(url: str, work: Path) -> Any:
    from cityward.bootstrap import bootstrap
    from cityward.config import load_settings

    return bootstrap(load_settings(database_url=url, secret_key_file=work / "bench.secret"))


def city(plat: Any) -> Any:
    from cityward.services import organizations, setup

    setup.initialize(plat.uow, CITY, "local:bench", admin_user=None)
    return organizations.local_operator(plat.uow, "bench")


# --- 1. matching -----------------------------------------------------------------------------


@dataclass
class Run:
    scope: str
    found: set[tuple[str, str]]
    documents: int = 0
    statements: int = 0
    unparsed: list[dict[str, str | None]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unmatched: int | None = None  # statements naming no catalog product (`advisories unmatched`)
    unmatched_cves: set[str] = field(default_factory=set)  # CVEs with such a statement
    seconds: dict[str, float] = field(default_factory=dict)
    statements_by_cve: dict[str, list[dict[str, str | None]]] = field(default_factory=dict)  # as stored


def match_run(scope: str, corpus: Path, pg_admin: str | None) -> Run:
    from sqlalchemy import select

    from cityward.adapters.inventory_files import FileFormat
    from cityward.adapters.storage.models import AdvisoryEntryRow, AdvisoryRow, DeviceRow, VulnMatchRow
    from cityward.services import advisories, catalog, inventory, vendors

    folders = [corpus / SOURCES[s] for s in (SOURCES if scope == "all" else (scope,))]
    run = Run(scope, set())
    with database(pg_admin, scope) as (url, work):
        t = time.perf_counter()
        plat = platform(url, work)
        try:
            caller = city(plat)
            with (FLEET / "catalog.csv").open("rb") as f:
                catalog.import_catalog(plat.uow, caller, f, "catalog.csv", FileFormat.CSV)
            with (FLEET / "inventory.csv").open("rb") as f:
                inventory.import_devices(plat.uow, caller, f, "inventory.csv", FileFormat.CSV, create_missing=True)
            run.seconds["fleet"] = time.perf_counter() - t
            run.seconds["import"] = run.seconds["match"] = 0.0
            for folder in folders:
                t = time.perf_counter()
                report = advisories.import_advisories(plat.uow, caller, str(folder), skip_refused=True)
                run.seconds["import"] += time.perf_counter() - t
                t = time.perf_counter()
                advisories.rematch(plat.uow, caller, report)
                run.seconds["match"] += time.perf_counter() - t
                docs = report.imported + report.replaced
                run.documents += len(docs)
                run.statements += sum(int(d["entries"]) for d in docs)
                run.unparsed += [{"source": p.source, "field": p.field, "message": p.message} for p in report.unparsed]
                run.refused += [str(p) for p in report.refused]
            listed = vendors.unmatched(plat.uow, caller).unmatched  # what `cityward advisories unmatched` shows
            run.unmatched = sum(u.statements for u in listed)
            run.unmatched_cves = {cve for u in listed for cve in u.cves}
            with plat.uow() as uow:
                rows = uow.session.execute(
                    select(DeviceRow.id, VulnMatchRow.cve).join(
                        VulnMatchRow, (VulnMatchRow.product_id == DeviceRow.product_id)
                        & (VulnMatchRow.firmware == DeviceRow.firmware_running))).all()
                stored = uow.session.execute(select(
                    AdvisoryEntryRow.cve, AdvisoryRow.source, AdvisoryEntryRow.vendor, AdvisoryEntryRow.product,
                    AdvisoryEntryRow.vendor_key, AdvisoryEntryRow.product_key, AdvisoryEntryRow.model_pattern,
                    AdvisoryEntryRow.versions).join(AdvisoryRow, AdvisoryRow.id == AdvisoryEntryRow.advisory_id)).all()
            run.found = {(d, c) for d, c in rows}
            for cve, source, *rest in stored:
                run.statements_by_cve.setdefault(cve, []).append(dict(zip(
                    ("source", "vendor", "product", "vendor_key", "product_key", "model_pattern", "versions"),
                    (source, *rest), strict=True)))
        finally:
            plat.close()
    return run


def _base(source: str | None) -> str:
    return Path(source).name if source else ""


def nearest(statements: list[dict[str, str | None]], device: dict[str, str], kind: str) -> str:
    """The stored statement about the CVE (from that kind of document) whose product reads most like
    the device's model: what the matcher had to work with. A reading aid, not a rule."""
    mine = [st for st in statements if kind in ("all", st["source"])]
    if not mine:
        return "no statement stored"
    model = device["model"].lower()
    best = max(mine, key=lambda st: difflib.SequenceMatcher(None, model, (st["product"] or "").lower()).ratio())
    versions = best["versions"] if best["versions"] is not None else "every version"
    return f"{best['vendor']!r} / {best['product']!r} / {versions!r}"


def score(run: Run, exp: Expected) -> dict[str, Any]:
    want = exp.pairs[run.scope]
    tp, fp, fn = run.found & want, sorted(run.found - want), sorted(want - run.found)
    unreadable = {(_base(p["source"]), (p["message"] or "").split(":", 1)[0]) for p in run.unparsed}

    def reported(pair: tuple[str, str]) -> bool:
        """Its CVE is in the unmatched report, or reported unreadable in the document expected to name it."""
        return pair[1] in run.unmatched_cves or any(
            (src, pair[1]) in unreadable for src, _ in exp.why[pair] if run.scope in ("all", source_kind(src)))

    misses = []
    for device, cve in fn:
        d = exp.devices[device]
        sources = [(s, w) for s, w in exp.why[(device, cve)] if run.scope in ("all", source_kind(s))]
        misses.append({"device": device, "cve": cve, "brand": d["brand"], "model": d["model"],
                       "firmware": d["firmware_version"], "source": ", ".join(s for s, _ in sources),
                       "why": sources[0][1], "reported": reported((device, cve)),
                       "nearest": nearest(run.statements_by_cve.get(cve, []), d, run.scope)})
    return {
        "scope": run.scope, "expected": len(want), "found": len(run.found), "true_positives": len(tp),
        "false_positives": [{"device": d, "cve": c, "brand": exp.devices[d]["brand"], "model": exp.devices[d]["model"],
                             "firmware": exp.devices[d]["firmware_version"]} for d, c in fp],
        "false_negatives": misses,
        "precision": round(len(tp) / len(run.found), 3) if run.found else None,
        "recall": round(len(tp) / len(want), 3) if want else None,
        "documents": run.documents, "statements": run.statements, "unreadable": len(run.unparsed),
        "unmatched": run.unmatched, "refused": run.refused,
        "misses_reported": sum(1 for m in misses if m["reported"]),
        "misses_silent": sum(1 for m in misses if not m["reported"]),
        "seconds": {k: round(v, 2) for k, v in run.seconds.items()},
        "unparsed": run.unparsed,
    }


# --- 2. CSAF conformance ---------------------------------------------------------------------


def _names_test(message: str, test_id: str) -> bool:
    return re.search(re.escape(test_id) + r"(?![\d]|\.\d)", message) is not None


def csaf_conformance(corpus: Path, plat: Any, caller: Any) -> list[dict[str, Any]]:
    """One row per file: test id, group, what it should be (accept/refuse), what happened."""
    from cityward.adapters.advisories.sources import Document
    from cityward.errors import InvalidInput
    from cityward.services import advisories

    suite = corpus / "csaf-suite/csaf_2.0"
    data_dir = (corpus / TESTCASES).parent
    plan: list[tuple[Path, str, str, bool]] = []  # path, test id, group, must accept
    for test in json.loads((corpus / TESTCASES).read_text(encoding="utf-8"))["tests"]:
        for case in test.get("failures", []) + test.get("valid", []):
            accept = bool(case["valid"]) or test["group"] != "mandatory"  # optional/informative only warn
            plan.append((data_dir / case["name"], test["id"], test["group"], accept))
    named = {p for p, *_ in plan}
    for path in sorted((suite / "examples").rglob("*.json")):
        plan.append((path, "example", "examples", True))
    for path in sorted(data_dir.rglob("*.json")):
        if path not in named and path.name != "testcases.json":
            plan.append((path, "unlisted", "unlisted", True))
    rows = []
    for path, test_id, group, accept in plan:
        outcome, message = "accepted", ""
        try:
            advisories.import_advisories(plat.uow, caller, [Document(str(path.relative_to(suite)), path.read_bytes())],
                                         kind="csaf")
        except InvalidInput as exc:
            outcome = "refused"
            message = " | ".join([exc.message, *(str(p) for p in exc.problems)])
        except Exception as exc:  # a crash is a wrong answer too; say which
            outcome, message = "crashed", f"{type(exc).__name__}: {exc}"
        rows.append({"file": str(path.relative_to(suite)), "test": test_id, "group": group,
                     "want": "accept" if accept else "refuse", "got": outcome,
                     "right": outcome == ("accepted" if accept else "refused"),
                     "names_test": (not accept and outcome == "refused" and _names_test(message, test_id)),
                     "message": message[:500]})
    return rows


# --- 3. CycloneDX conformance ----------------------------------------------------------------


def _spec_version(path: Path) -> str | None:
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json":
        try:
            value = json.loads(text).get("specVersion")
            return str(value) if value is not None else None
        except (ValueError, AttributeError):
            return None
    found = re.search(r"cyclonedx\.org/schema/bom/(\d+\.\d+)", text)
    return found.group(1) if found else None


def sbom_release(plat: Any, caller: Any, work: Path) -> int:
    """One catalog product with one signed release to attach the SBOMs to (the simulator's keys
    play its manufacturer)."""
    import base64

    from cryptography.hazmat.primitives import serialization

    from cityward.adapters.inventory_files import FileFormat
    from cityward.services import catalog, firmware
    from cityward.sim.keys import key_id, public_key, sign_firmware

    rows = f"brand,model,kind,version_scheme\n{SBOM_BRAND},{SBOM_MODEL},other,semver\n".encode()
    catalog.import_catalog(plat.uow, caller, io.BytesIO(rows), "sbom-catalog.csv", FileFormat.CSV)
    raw = public_key(SBOM_BRAND, 16).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    firmware.register_key(plat.uow, caller, SBOM_BRAND, key_id(SBOM_BRAND, 16), base64.b64encode(raw).decode())
    image = b"match_real SBOM probe image\n"
    _sha, signature, kid = sign_firmware(SBOM_BRAND, SBOM_MODEL, SBOM_VERSION, image, 16)
    release = firmware.add_release(plat.uow, caller, work / "firmware", brand=SBOM_BRAND, model=SBOM_MODEL,
                                   version=SBOM_VERSION, image=image, signature=signature, key_id=kid)
    return int(release.id)


def cyclonedx_conformance(corpus: Path, plat: Any, caller: Any, work: Path) -> list[dict[str, Any]]:
    from cityward.errors import InvalidInput
    from cityward.services import sboms

    release = sbom_release(plat, caller, work)
    base = corpus / "cyclonedx"
    rows = []
    for path in sorted(p for p in base.rglob("*") if p.suffix in (".json", ".xml") and p.is_file()):
        rel = str(path.relative_to(base))
        if path.name.startswith(("valid-", "invalid-")):
            test_id = re.sub(r"-\d+\.\d+$", "", path.stem)
            group, accept, version = "specification", path.name.startswith("valid-"), None
        else:
            version = _spec_version(path)
            test_id, group = rel, "bom-examples"
            accept = version in ("1.4", "1.5", "1.6")
        outcome, message = "accepted", ""
        try:
            sboms.import_sbom(plat.uow, caller, path, release)
        except InvalidInput as exc:
            outcome, message = "refused", " | ".join([exc.message, *(str(p) for p in exc.problems)])
        except Exception as exc:
            outcome, message = "crashed", f"{type(exc).__name__}: {exc}"
        rows.append({"file": rel, "test": test_id, "group": group, "spec_version": version,
                     "want": "accept" if accept else "refuse", "got": outcome,
                     "right": outcome == ("accepted" if accept else "refused"), "message": message[:500]})
    return rows


def conformance(corpus: Path, pg_admin: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    t = time.perf_counter()
    with database(pg_admin, "conformance") as (url, work):
        plat = platform(url, work)
        try:
            caller = city(plat)
            csaf_rows = csaf_conformance(corpus, plat, caller)
            cdx_rows = cyclonedx_conformance(corpus, plat, caller, work)
        finally:
            plat.close()
    return csaf_rows, cdx_rows, time.perf_counter() - t


def per_test(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Counts per (group, test id), in the order the tests come."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        c = out.setdefault((r["group"], r["test"]), {"group": r["group"], "test": r["test"], "files": 0, "right": 0,
                                                      "wrong": 0, "must_refuse": 0, "names_test": 0, "wrong_files": []})
        c["files"] += 1
        c["right" if r["right"] else "wrong"] += 1
        c["must_refuse"] += r["want"] == "refuse"
        c["names_test"] += bool(r.get("names_test"))
        if not r["right"]:
            c["wrong_files"].append(f"{Path(r['file']).name}: want {r['want']}, got {r['got']}")
    return list(out.values())


def totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        key = f"{r['group']} ({'accept' if r['want'] == 'accept' else 'refuse'})"
        c = out.setdefault(key, {"files": 0, "right": 0, "wrong": 0})
        c["files"] += 1
        c["right" if r["right"] else "wrong"] += 1
    return out


# --- printing --------------------------------------------------------------------------------


def _ids(devices: list[str]) -> str:
    return ", ".join(devices) if len(devices) <= 4 else f"{', '.join(devices[:3])} … (+{len(devices) - 3})"


def show(scores: list[dict[str, Any]], csaf_rows: list[dict[str, Any]] | None,
         cdx_rows: list[dict[str, Any]] | None, seconds: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=240, markup=False, highlight=False)  # messages hold [brackets]
    t = Table(title="Real advisories against the hand-written fleet (bench/real_fleet)")
    for col in ("documents", "expected pairs", "found", "true pos.", "false pos.", "false neg.", "precision",
                "recall", "statements normalized", "unreadable", "naming no catalog product", "refused docs",
                "misses: its CVE in the unmatched report or unreadable / silent", "import + match s"):
        t.add_column(col, justify="right")
    t.add_column("scope", justify="left")
    for s in scores:
        t.add_row(f"{s['documents']}", f"{s['expected']}", f"{s['found']}", f"{s['true_positives']}",
                  f"{len(s['false_positives'])}", f"{len(s['false_negatives'])}",
                  "—" if s["precision"] is None else f"{s['precision']:.2f}",
                  "—" if s["recall"] is None else f"{s['recall']:.2f}", f"{s['statements']}", f"{s['unreadable']}",
                  "not reported" if s["unmatched"] is None else f"{s['unmatched']}", f"{len(s['refused'])}",
                  f"{s['misses_reported']} / {s['misses_silent']}",
                  f"{s['seconds']['import'] + s['seconds']['match']:.2f}", s["scope"])
    con.print(t)
    both = next(s for s in scores if s["scope"] == "all")
    for s in scores:
        if s["false_positives"]:
            fp = Table(title=f"False positives ({s['scope']})")
            for col in ("device", "brand", "model", "firmware", "CVE"):
                fp.add_column(col)
            for r in s["false_positives"]:
                fp.add_row(r["device"], r["brand"], r["model"], r["firmware"], r["cve"])
            con.print(fp)
    for s in scores:
        groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        for m in s["false_negatives"]:
            g = groups.setdefault((m["source"], m["brand"], m["model"], m["firmware"]),
                                  {"devices": [], "cves": [], "why": m["why"], "reported": 0, "nearest": m["nearest"]})
            if m["device"] not in g["devices"]:
                g["devices"].append(m["device"])
            if m["cve"] not in g["cves"]:
                g["cves"].append(m["cve"])
            g["reported"] += m["reported"]
        if not groups:
            continue
        fn = Table(title=f"False negatives ({s['scope']}): {len(s['false_negatives'])} pairs, grouped by document "
                         "and (brand, model, firmware)")
        for col in ("document", "brand", "model", "firmware", "devices", "CVEs", "pairs", "reported", "why expected",
                    "nearest statement stored: vendor / product / versions"):
            fn.add_column(col, overflow="fold")
        for (src, brand, model, fw), g in sorted(groups.items()):
            cves = g["cves"]
            fn.add_row(src, brand, model, fw, _ids(g["devices"]),
                       ", ".join(cves) if len(cves) <= 3 else f"{cves[0]} … ({len(cves)} CVEs)",
                       f"{len(g['devices']) * len(cves)}", f"{g['reported']}", g["why"], g["nearest"])
        con.print(fn)
    if both["refused"]:
        con.print(f"refused documents ({len(both['refused'])}):")
        for r in both["refused"]:
            con.print(f"  {r}")
    if both["unparsed"]:
        con.print(f"statements that could not be normalized ({len(both['unparsed'])}, both folders):")
        for p in both["unparsed"]:
            con.print(f"  {_base(p['source'])}: {p['message']}" + (f" [{p['field']}]" if p["field"] else ""))
    for title, rows in (("CSAF 2.0 conformance (csaf-suite)", csaf_rows), ("CycloneDX conformance", cdx_rows)):
        if rows is None:
            continue
        ct = Table(title=f"{title}: per test id (examples: one row per folder)")
        for col in ("group", "test", "files", "right", "wrong", "refused naming the test", "wrong files"):
            ct.add_column(col, overflow="fold")
        for c in per_test([r if r["group"] != "bom-examples" else {**r, "test": str(Path(r["file"]).parent)}
                           for r in rows]):
            ct.add_row(c["group"], c["test"], f"{c['files']}", f"{c['right']}", f"{c['wrong']}",
                       f"{c['names_test']} of {c['must_refuse']}" if c["must_refuse"] and c["group"] == "mandatory"
                       else "", "; ".join(c["wrong_files"]))
        con.print(ct)
        tt = Table(title=f"{title}: totals")
        for col in ("group (should be)", "files", "classified right", "wrong"):
            tt.add_column(col)
        for k, v in totals(rows).items():
            tt.add_row(k, f"{v['files']}", f"{v['right']}", f"{v['wrong']}")
        con.print(tt)
    con.print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus",
                    help="the corpus folder (default: ../shared/corpus beside the repository)")
    ap.add_argument("--pg", metavar="URL", help="PostgreSQL admin URL (…/postgres): run on PostgreSQL, in databases "
                                                 "made and dropped here; default SQLite")
    ap.add_argument("--skip-conformance", action="store_true", help="only the matching runs")
    args = ap.parse_args()
    corpus = corpus_or_exit(args.corpus.resolve())
    exp = load_expected()
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    scores = []
    for scope in ("csaf", "cve5", "all"):
        t = time.perf_counter()
        scores.append(score(match_run(scope, corpus, args.pg), exp))
        seconds[f"match run {scope}"] = time.perf_counter() - t
    csaf_rows = cdx_rows = None
    if not args.skip_conformance:
        csaf_rows, cdx_rows, seconds["conformance"] = conformance(corpus, args.pg)
    seconds["total"] = time.perf_counter() - start
    show(scores, csaf_rows, cdx_rows, seconds)
    full = {
        "bench": "match_real", "backend": "postgresql" if args.pg else "sqlite", "corpus": str(corpus),
        "devices": len(exp.devices), "scores": [{k: v for k, v in s.items() if k != "unparsed"} for s in scores],
        "unparsed": next(s for s in scores if s["scope"] == "all")["unparsed"],
        "csaf": None if csaf_rows is None else {"totals": totals(csaf_rows), "files": csaf_rows},
        "cyclonedx": None if cdx_rows is None else {"totals": totals(cdx_rows), "files": cdx_rows},
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "match_real-last.json").write_text(json.dumps(full, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    line = {  # the same figures, pairs as [device, CVE], per test id as [right, wrong]
        **{k: full[k] for k in ("bench", "backend", "devices", "seconds")},
        "scores": [{**{k: v for k, v in s.items() if k not in ("unparsed", "false_positives", "false_negatives")},
                    "false_positives": [[r["device"], r["cve"]] for r in s["false_positives"]],
                    "false_negatives": [[r["device"], r["cve"]] for r in s["false_negatives"]]} for s in scores],
        **{name: None if rows is None else {"totals": totals(rows), "per_test": {
            f"{c['group']}/{c['test']}": [c["right"], c["wrong"]] for c in per_test(rows)}}
           for name, rows in (("csaf", csaf_rows), ("cyclonedx", cdx_rows))},
    }
    print(json.dumps(line, ensure_ascii=False))


if __name__ == "__main__":
    main()
