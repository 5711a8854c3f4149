"""CSAF 2.0 → normalized entries (no I/O; the document was validated before it gets here).

The product tree is flattened to one description per product id: vendor, product (model) and
version from the branches (`vendor` → `product_family`/`product_name` → `product_version` or
`product_version_range`), identification helpers (CPE, PURL, model numbers, hashes), and
relationships. A relationship (`default_component_of`, `installed_on`, …) describes the device it
relates to, running the version of the component it references: "firmware V4.1 installed on
SCALANCE X-200" is the SCALANCE X-200 at V4.1. Each product id in each product status of each
vulnerability becomes one entry per model number; remediations, scores, VEX flags and threats
attach to the product ids they name, directly or through product groups.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cityward.domain import advisory_versions as av
from cityward.domain.advisories import (
    CSAF_STATUS,
    MAX_ENTRIES,
    Advisory,
    Entry,
    Identity,
    Status,
    parse_cpe,
)
from cityward.domain.model_names import names_models, read_models
from cityward.domain.vendors import split_vendors
from cityward.errors import Problem

_MAX_DEPTH = 40
_REMEDIATION_ORDER = ("vendor_fix", "mitigation", "workaround", "no_fix_planned", "none_available")


@dataclass(frozen=True)
class _Product:
    vendor: str | None = None
    product: str | None = None
    version: str | None = None  # an exact version (product_version branch)
    version_range: str | None = None  # product_version_range
    cpe: str | None = None
    purl: str | None = None
    models: tuple[str, ...] = ()
    hashes: tuple[str, ...] = ()
    name: str | None = None


def _helper(product: Mapping[str, Any]) -> dict[str, Any]:
    h = product.get("product_identification_helper") or {}
    hashes = tuple(fh.get("value", "").lower() for item in h.get("hashes", []) or []
                   for fh in item.get("file_hashes", []) or [] if fh.get("algorithm", "").lower() == "sha256")
    return {"cpe": h.get("cpe"), "purl": h.get("purl"), "models": tuple(h.get("model_numbers", []) or ()),
            "hashes": hashes}


def _walk(branches: list[Any], ctx: _Product, out: dict[str, _Product], path: str, depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError(f"{path}: branches nested deeper than {_MAX_DEPTH}")
    for i, branch in enumerate(branches):
        here = f"{path}/{i}"
        category, name = branch.get("category"), branch.get("name")
        now = ctx
        if category == "vendor":
            now = replace(ctx, vendor=name)
        elif category in ("product_family", "product_name"):
            now = replace(ctx, product=name)
        elif category == "product_version":
            now = replace(ctx, version=name)
        elif category == "product_version_range":
            now = replace(ctx, version_range=name)
        if isinstance(branch.get("product"), Mapping):
            p = branch["product"]
            out[p["product_id"]] = replace(now, name=p.get("name"), **_helper(p))
        if branch.get("branches"):
            _walk(branch["branches"], now, out, f"{here}/branches", depth + 1)


def flatten_products(tree: Mapping[str, Any]) -> dict[str, _Product]:
    """Product id → what it describes, from branches, full product names and relationships."""
    out: dict[str, _Product] = {}
    _walk(tree.get("branches", []) or [], _Product(), out, "/product_tree/branches")
    for p in tree.get("full_product_names", []) or []:
        out[p["product_id"]] = _Product(name=p.get("name"), **_helper(p))
    for rel in tree.get("relationships", []) or []:
        fpn = rel.get("full_product_name") or {}
        component = out.get(rel.get("product_reference", ""))
        device = out.get(rel.get("relates_to_product_reference", ""))
        if not fpn.get("product_id") or device is None:
            continue
        merged = device
        if component is not None and (component.version or component.version_range):
            merged = replace(device, version=component.version, version_range=component.version_range)
        out[fpn["product_id"]] = replace(merged, name=fpn.get("name"), **{
            k: v for k, v in _helper(fpn).items() if v})
    return out


def _with_cpe(p: _Product) -> _Product:
    """Vendor, product and version from the CPE where the branches did not give them."""
    cpe = parse_cpe(p.cpe) if p.cpe else None
    if cpe is None:
        return p
    return replace(p, vendor=p.vendor or cpe.vendor, product=p.product or cpe.product,
                   version=p.version or (cpe.version if not p.version_range else None))


def _groups(tree: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    return {g["group_id"]: tuple(g.get("product_ids", [])) for g in tree.get("product_groups", []) or []}


def _expand(item: Mapping[str, Any], groups: Mapping[str, tuple[str, ...]]) -> set[str]:
    ids = set(item.get("product_ids", []) or [])
    for gid in item.get("group_ids", []) or []:
        ids.update(groups.get(gid, ()))
    return ids


def _range(p: _Product) -> tuple[str | None, tuple[tuple[str | None, bool, str | None, bool], ...] | None, str]:
    """(range as written, sortable intervals or None for every version, scheme); raises RangeError."""
    if p.version_range:
        r = av.parse_csaf_range(p.version_range)
        return p.version_range, r.keyed(), str(r.scheme)
    if p.version:
        # Real trees put a vers range in a product_version branch ("vers:all/*") and end lists
        # of versions with a dangling "and": read them as written.
        text = re.sub(r"(?:,\s*|\s+)(?:and|or)\s*$", "", p.version.strip()).strip(" ,")
        r = av.parse_vers(text) if text.startswith("vers:") else av.parse_text(text)
        return p.version, r.keyed(), str(r.scheme)
    return None, None, "vendor"


def _identities(p: _Product) -> Iterator[Identity]:
    """One identity per vendor the vendor string names and per model the product name stands for
    (`domain.model_names`: families, wildcards, lists)."""
    vendors = split_vendors(p.vendor) if p.vendor else [None]
    names = p.models or ((p.product,) if p.product else ())
    models = [m for name in names for m in read_models(name)]
    for vendor in vendors:
        base = Identity(vendor=vendor, purl=p.purl, cpe=p.cpe, hashes=p.hashes)
        if not models:
            if p.purl or p.hashes:
                yield base
            continue
        for model in models:
            yield replace(base, product=model.text, model_pattern=model.pattern)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def normalize(doc: Mapping[str, Any], name: str) -> Advisory:
    """One validated CSAF 2.0 document → an Advisory; statements that cannot be normalized (a
    version range nobody can parse, a product with no identity) are listed in `unparsed`."""
    document, tree = doc["document"], doc.get("product_tree") or {}
    products = {pid: _with_cpe(p) for pid, p in flatten_products(tree).items()}
    groups = _groups(tree)
    entries: list[Entry] = []
    problems: list[Problem] = []
    cves: list[str] = []
    for vi, vuln in enumerate(doc.get("vulnerabilities", []) or []):
        where = f"/vulnerabilities/{vi}"
        cve = vuln.get("cve")
        if not cve:
            problems.append(Problem("no CVE id: cityward matches by CVE", source=name, field=where))
            continue
        cves.append(cve)
        remediations: dict[str, Mapping[str, Any]] = {}
        for rem in vuln.get("remediations", []) or []:
            for pid in _expand(rem, groups):
                held = remediations.get(pid)
                if held is None or _rank(rem) < _rank(held):
                    remediations[pid] = rem
        scores: dict[str, tuple[float, str | None]] = {}
        for score in vuln.get("scores", []) or []:
            v3 = score.get("cvss_v3") or {}
            if "baseScore" in v3:
                for pid in score.get("products", []) or []:
                    scores[pid] = (float(v3["baseScore"]), v3.get("vectorString"))
        justified: dict[str, str] = {}
        for flag in vuln.get("flags", []) or []:
            for pid in _expand(flag, groups):
                justified[pid] = flag.get("label", "")
        exploited: set[str] = set()
        for threat in vuln.get("threats", []) or []:
            if threat.get("category") == "exploit_status":
                exploited.update(_expand(threat, groups) or set(products))
        status_of = {pid: CSAF_STATUS[cat] for cat, pids in (vuln.get("product_status") or {}).items()
                     if cat in CSAF_STATUS for pid in pids}
        fixed_versions: dict[tuple[str | None, str | None], str] = {}
        for pid, status in status_of.items():
            p = products.get(pid)
            if status is Status.FIXED and p is not None and p.version:
                for ident in _identities(p):
                    fixed_versions.setdefault((ident.vendor_key, ident.product_key), p.version)
        for pid, status in sorted(status_of.items()):
            p = products.get(pid)
            if p is None:
                problems.append(Problem(f"{cve}: product {pid} is not in the product tree", source=name, field=where))
                continue
            written = p.version_range or p.version or ""
            text: str | None
            if names_models(written):
                # The tree put the model where the version goes and gave no version: every
                # version of that model is affected, and the statement says it was read so.
                p = replace(p, models=(written,), version=None, version_range=None)
                text, intervals, scheme = f"every version ({written!r} read as the model)", None, "vendor"
            else:
                try:
                    text, intervals, scheme = _range(p)
                except av.RangeError as exc:
                    problems.append(Problem(f"{cve}: product {pid} ({p.name or p.product}): {exc}", source=name,
                                            field=f"{where}/product_status"))
                    continue
            idents = list(_identities(p))
            if not idents:
                problems.append(Problem(f"{cve}: product {pid} ({p.name}) has no vendor, model, CPE, PURL or hash "
                                        "to match devices by", source=name, field=f"{where}/product_status"))
                continue
            rem = remediations.get(pid, {})
            cvss = scores.get(pid)
            for ident in idents:
                entries.append(Entry(
                    cve=cve, identity=ident, status=status, versions=text, intervals=intervals, scheme=scheme,
                    justification=justified.get(pid) if status is Status.NOT_AFFECTED else None,
                    remediation=rem.get("category"), remediation_detail=rem.get("details"),
                    remediation_url=rem.get("url"),
                    fixed_version=fixed_versions.get((ident.vendor_key, ident.product_key))
                    if status is Status.AFFECTED else None,
                    cvss=cvss[0] if cvss else None, cvss_vector=cvss[1] if cvss else None,
                    exploited=pid in exploited))
            if len(entries) > MAX_ENTRIES:
                raise ValueError(f"{name}: more than {MAX_ENTRIES} product statements")
    tracking = document.get("tracking", {})
    publisher = document.get("publisher", {})
    refs = [r.get("url") for r in document.get("references", []) or [] if r.get("category") == "self"]
    return Advisory(
        source="csaf", publisher=publisher.get("name", "?"), doc_id=tracking.get("id", name),
        title=document.get("title", ""), category=document.get("category", "csaf_base"),
        revision=str(tracking.get("version", "")), released_at=_time(tracking.get("initial_release_date")),
        updated_at=_time(tracking.get("current_release_date")), url=refs[0] if refs else None,
        entries=tuple(entries), unparsed=tuple(problems), cves=tuple(dict.fromkeys(cves)))


def _rank(rem: Mapping[str, Any]) -> int:
    cat = rem.get("category", "")
    return _REMEDIATION_ORDER.index(cat) if cat in _REMEDIATION_ORDER else len(_REMEDIATION_ORDER)
