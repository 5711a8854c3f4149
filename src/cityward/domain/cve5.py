"""CVE JSON 5 records → normalized entries (no I/O).

Each `containers.cna.affected[]` item names a vendor and product (or CPEs) and lists versions with
a status; `defaultStatus: affected` makes every version not listed affected, which becomes one
every-version affected entry plus a not-affected entry per unaffected range (precedence in the
matcher does the rest). Scores come from the CNA's and ADP's metrics; an ADP's `kev` metric or an
SSVC `Exploitation: active` marks the CVE exploited.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cvss import CVSS3, CVSS4
from cvss.exceptions import CVSSError

from cityward.domain import advisory_versions as av
from cityward.domain.advisories import CVE_ID, MAX_ENTRIES, Advisory, Entry, Identity, Status, parse_cpe
from cityward.domain.limits import clip
from cityward.domain.model_names import read_models
from cityward.domain.vendors import split_vendors
from cityward.errors import Problem

_NA = {"", "n/a", "na", "unknown", "*", "-"}
_STATUS = {"affected": Status.AFFECTED, "unaffected": Status.NOT_AFFECTED, "unknown": None}


class NotACveRecord(ValueError):
    """The JSON is not a CVE JSON 5 record (or is one this importer cannot read)."""


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.now().astimezone().tzinfo)


def _base_score(key: str, m: Mapping[str, Any]) -> float | None:
    """The metric's base score, computed from its vector (the `cvss` library) when only that is given."""
    if isinstance(m.get("baseScore"), int | float):
        return float(m["baseScore"])
    vector = m.get("vectorString")
    if not isinstance(vector, str):
        return None
    try:
        return float((CVSS4 if key == "cvssV4_0" else CVSS3)(vector).base_score)
    except (CVSSError, ValueError, KeyError):
        return None  # a vector nobody can score: no score rather than a guess


def _scores(containers: list[Mapping[str, Any]]) -> tuple[float | None, str | None]:
    """The highest CVSS base score any container gives (v4.0, v3.1, v3.0), with its vector."""
    best: tuple[float | None, str | None] = (None, None)
    for c in containers:
        for metric in c.get("metrics", []) or []:
            for key in ("cvssV4_0", "cvssV3_1", "cvssV3_0"):
                m = metric.get(key) if isinstance(metric, Mapping) else None
                score = _base_score(key, m) if isinstance(m, Mapping) else None
                if score is not None and (best[0] is None or score > best[0]):
                    best = (score, m.get("vectorString") if isinstance(m, Mapping) else None)
    return best


def _exploited(adps: list[Mapping[str, Any]]) -> bool:
    for adp in adps:
        for metric in adp.get("metrics", []) or []:
            other = metric.get("other") or {}
            if other.get("type") == "kev":
                return True
            if other.get("type") == "ssvc":
                for option in (other.get("content") or {}).get("options", []) or []:
                    if isinstance(option, Mapping) and str(option.get("Exploitation", "")).lower() == "active":
                        return True
    return False


def _identities(item: Mapping[str, Any]) -> list[Identity]:
    vendor, product = item.get("vendor"), item.get("product")
    vendor = None if not isinstance(vendor, str) or vendor.strip().lower() in _NA else vendor.strip()
    product = None if not isinstance(product, str) or product.strip().lower() in _NA else product.strip()
    purl = item.get("packageURL") if isinstance(item.get("packageURL"), str) else None
    out: list[Identity] = []
    if vendor and product:
        out += [Identity(vendor=v, product=m.text, model_pattern=m.pattern, purl=purl)
                for v in split_vendors(vendor) for m in read_models(product)]
    for text in item.get("cpes", []) or []:
        cpe = parse_cpe(text) if isinstance(text, str) else None
        if cpe is not None and (cpe.vendor, cpe.product) != (vendor, product):
            out.append(Identity(vendor=cpe.vendor, product=cpe.product, cpe=text))
    if not out and purl:
        out.append(Identity(purl=purl))  # a package: matched through SBOMs
    return out


def _describe(item: Mapping[str, Any]) -> str:
    """A versions[] item as a person reads it: `>= 10.2.0, < 10.2.9-h1 (changes at 10.2.9-h1)`."""
    version = str(item.get("version", ""))
    upper = (f"< {item['lessThan']}" if "lessThan" in item else
             f"<= {item['lessThanOrEqual']}" if "lessThanOrEqual" in item else None)
    text = version if upper is None else (upper if version in ("0", "unspecified", "") else f">= {version}, {upper}")
    changes = [str(c.get("at")) for c in item.get("changes", []) or [] if isinstance(c, Mapping)]
    return clip(text + (f" (changes at {', '.join(changes)})" if changes else ""), 500) or ""


def normalize(record: Mapping[str, Any], name: str) -> Advisory:
    if not isinstance(record, Mapping) or record.get("dataType") != "CVE_RECORD":
        raise NotACveRecord(f"{name}: not a CVE JSON 5 record (dataType is not CVE_RECORD)")
    meta = record.get("cveMetadata") or {}
    cve = meta.get("cveId")
    if not isinstance(cve, str) or not CVE_ID.fullmatch(cve):
        raise NotACveRecord(f"{name}: cveMetadata.cveId {cve!r} is not a CVE id")
    containers = record.get("containers") or {}
    cna = containers.get("cna") or {}
    adps = [a for a in containers.get("adp", []) or [] if isinstance(a, Mapping)]
    problems: list[Problem] = []
    entries: list[Entry] = []
    if meta.get("state") == "REJECTED":
        problems.append(Problem(f"{cve} is REJECTED: nothing to match", source=name, field="cveMetadata.state"))
    cvss, vector = _scores([cna, *adps])
    exploited = _exploited(adps)
    for ai, item in enumerate(cna.get("affected", []) or []):
        where = f"containers.cna.affected[{ai}]"
        if not isinstance(item, Mapping):
            problems.append(Problem("not an object", source=name, field=where))
            continue
        idents = _identities(item)
        if not idents:
            problems.append(Problem(f"{cve}: no vendor and product, CPE or package URL to match devices by",
                                    source=name, field=where))
            continue
        statements: list[tuple[Status, str | None, av.VersionRange | None]] = []
        default = _STATUS.get(str(item.get("defaultStatus", "unknown")).lower())
        if default is Status.AFFECTED:
            statements.append((Status.AFFECTED, None, None))
        for vi, version in enumerate(item.get("versions", []) or []):
            try:
                ranges = av.parse_cve5(version)
            except av.RangeError as exc:
                problems.append(Problem(f"{cve}: cannot read {_describe(version)!r}: {exc.reason}", source=name,
                                        field=f"{where}.versions[{vi}]"))
                continue
            described: str | None = _describe(version)
            if ranges.affected is not None:
                statements.append((Status.AFFECTED, described, ranges.affected))
            if ranges.unaffected is not None:
                statements.append((Status.NOT_AFFECTED, described, ranges.unaffected))
        for status, text, rng in statements:
            for ident in idents:
                entries.append(Entry(
                    cve=cve, identity=ident, status=status, versions=text,
                    intervals=rng.keyed() if rng is not None else None,
                    scheme=str(rng.scheme) if rng is not None else "vendor", cvss=cvss, cvss_vector=vector,
                    exploited=exploited))
        if len(entries) > MAX_ENTRIES:
            raise NotACveRecord(f"{name}: more than {MAX_ENTRIES} product statements")
    title = cna.get("title") or next((d.get("value", "") for d in cna.get("descriptions", []) or []
                                      if isinstance(d, Mapping) and str(d.get("lang", "")).startswith("en")), "")
    refs = [r.get("url") for r in cna.get("references", []) or [] if isinstance(r, Mapping) and r.get("url")]
    return Advisory(
        source="cve5", publisher=str(meta.get("assignerShortName") or "CVE"), doc_id=cve,
        title=clip(str(title), 500) or "",
        category="cve_record", revision=str(meta.get("dateUpdated") or meta.get("datePublished") or ""),
        released_at=_time(meta.get("datePublished")), updated_at=_time(meta.get("dateUpdated")),
        url=refs[0] if refs else None, entries=tuple(entries), unparsed=tuple(problems), cves=(cve,))
