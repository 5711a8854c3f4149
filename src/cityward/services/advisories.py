"""Importing vulnerability intelligence: CSAF 2.0 advisories, CVE JSON 5 records, the CISA KEV
catalog and EPSS scores, from a file, a directory, a zip or a URL.

An import is one transaction: every document is read, recognized, validated and normalized
first; if any is refused, nothing is stored (unless the caller asks to skip the refused ones),
and the report names each refused document and why. The same document twice changes nothing; a
newer revision replaces the older and says what changed; an older one is ignored. The fleet is
then re-matched for the CVEs the import touched (services.vulnerabilities).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select

from cityward.adapters.advisories import csaf_validation
from cityward.adapters.advisories.sources import Document, read_source
from cityward.adapters.storage import vuln_frames
from cityward.adapters.storage.models import (
    AdvisoryEntryRow,
    AdvisoryRow,
    DeviceRow,
    EpssScoreRow,
    KevEntryRow,
    VulnMatchRow,
)
from cityward.adapters.storage.scoping import scope_clause
from cityward.adapters.storage.uow import UnitOfWork, UnitOfWorkFactory
from cityward.domain import csaf, cve5, feeds
from cityward.domain.access import require_city_operator, require_device_details
from cityward.domain.advisories import Advisory, Entry
from cityward.domain.advisory_versions import sort_key
from cityward.domain.cyclonedx import purl_key
from cityward.domain.limits import ADVISORY_JSON, STORED_TEXT_CHARS, clip, load_json
from cityward.domain.organizations import Caller
from cityward.domain.products import VersionScheme
from cityward.errors import InvalidInput, NotFound, Problem
from cityward.services import vulnerabilities
from cityward.services.vulnerabilities import MatchSummary

KINDS = ("auto", "csaf", "cve5", "kev", "epss")


@dataclass
class ImportReport:
    imported: list[dict[str, Any]] = field(default_factory=list)  # new documents
    replaced: list[dict[str, Any]] = field(default_factory=list)  # newer revisions, with what changed
    unchanged: list[str] = field(default_factory=list)
    older: list[str] = field(default_factory=list)  # older revisions than the one stored: ignored
    refused: list[Problem] = field(default_factory=list)
    unparsed: list[Problem] = field(default_factory=list)  # statements reported, not guessed
    kev: int | None = None
    epss: int | None = None
    cves: set[str] = field(default_factory=set)  # what the fleet must be re-matched for


def _json(doc: Document) -> Any:
    """Depth, values and the length of one string are checked before parsing (domain/limits.py):
    a string over ADVISORY_FIELD_BYTES refuses the document (docs/vulnerabilities.md, "Limits")."""
    return load_json(doc.data, ADVISORY_JSON, doc.name)


def _fit(model: type[Any], values: dict[str, Any]) -> dict[str, Any]:
    """Text values cut to their column (String(n): n characters, Text: STORED_TEXT_CHARS) with the
    TRUNCATED marker, so a long vendor name or remediation note is kept, marked, on every backend."""
    columns = model.__table__.columns
    out = {}
    for name, value in values.items():
        if isinstance(value, str) and name in columns:
            value = clip(value, getattr(columns[name].type, "length", None) or STORED_TEXT_CHARS)
        out[name] = value
    return out


def recognize(doc: Document, kind: str = "auto") -> tuple[str, Any]:
    """What a document is (csaf, cve5, kev, epss) and its parsed content; refuses what it cannot use."""
    head = doc.data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        raise InvalidInput(f"{doc.name}: XML; a CycloneDX SBOM is imported with `cityward sbom import`")
    if head.startswith((b"{", b"[")):
        data = _json(doc)
        found = _json_kind(data)
        if found is None:
            raise InvalidInput(f"{doc.name}: a JSON document cityward does not recognize (expected a CSAF 2.0 "
                               "advisory, a CVE JSON 5 record or the CISA KEV catalog)")
    else:
        try:
            text = doc.data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{doc.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        first = text[:4096].split("\n", 1)[0]  # enough to recognize; a huge first line is not copied
        if first.startswith("#model_version") or first.replace(" ", "").startswith("cve,epss"):
            found, data = "epss", text
        elif "cveID" in first:
            found, data = "kev_csv", text
        else:
            raise InvalidInput(f"{doc.name}: not a format cityward imports (CSAF, CVE JSON 5, KEV JSON/CSV, EPSS CSV)")
    if kind != "auto" and found.split("_")[0] != kind:
        raise InvalidInput(f"{doc.name}: this is {found.split('_')[0]}, not {kind}")
    return found, data


def _json_kind(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("document"), dict) and "csaf_version" in data["document"]:
        return "csaf"
    if data.get("dataType") == "CVE_RECORD":
        return "cve5"
    if isinstance(data.get("vulnerabilities"), list) and ("catalogVersion" in data or "dateReleased" in data):
        return "kev"
    if data.get("bomFormat") == "CycloneDX":
        return None
    return None


@dataclass
class _Parsed:
    advisories: list[tuple[Document, Advisory]] = field(default_factory=list)
    kev: feeds.KevCatalog | None = None
    epss: feeds.EpssFeed | None = None


def _parse(docs: Iterable[Document], kind: str, report: ImportReport) -> _Parsed:
    parsed = _Parsed()
    for doc in docs:
        if doc.error is not None:
            report.refused.append(Problem(doc.error))
            continue
        try:
            found, data = recognize(doc, kind)
            if found == "csaf":
                csaf_validation.ensure_valid(data, doc.name)
                parsed.advisories.append((doc, csaf.normalize(data, doc.name)))
            elif found == "cve5":
                parsed.advisories.append((doc, cve5.normalize(data, doc.name)))
            elif found in ("kev", "kev_csv"):
                parsed.kev = feeds.kev_from_json(data, doc.name) if found == "kev" else feeds.kev_from_csv(
                    data, doc.name)
            else:
                parsed.epss = feeds.epss_from_csv(data, doc.name)
        except (InvalidInput, csaf_validation.CsafInvalid, cve5.NotACveRecord, ValueError) as exc:
            report.refused.append(Problem(str(exc), source=doc.name))
    return parsed


def _fingerprint(e: Entry | AdvisoryEntryRow) -> tuple[Any, ...]:
    if isinstance(e, Entry):
        return (e.cve, e.identity.vendor_key, e.identity.product_key, e.versions, e.status.value)
    return (e.cve, e.vendor_key, e.product_key, e.versions, e.status)


def _package(e: Entry) -> tuple[str | None, str | None, list[dict[str, Any]] | None]:
    """The PURL key SBOM components are matched on; a PURL naming one version (`pkg:…@1.2.3`) with
    no other range is that version."""
    key = purl_key(e.identity.purl) if e.identity.purl else None
    intervals = ([{"lo": lo, "lo_incl": li, "hi": hi, "hi_incl": hi_} for lo, li, hi, hi_ in e.intervals]
                 if e.intervals is not None else None)
    if key is None:
        return None, e.versions, intervals
    if intervals is None and key[1]:
        lo = sort_key(key[1], VersionScheme.VENDOR)
        if lo is not None:
            return key[0], key[1], [{"lo": lo, "lo_incl": True, "hi": lo, "hi_incl": True}]
    return key[0], e.versions, intervals


def _entry_rows(advisory_id: int, entries: Iterable[Entry]) -> list[dict[str, Any]]:
    return [_entry_row(advisory_id, e) for e in entries]


def _entry_row(advisory_id: int, e: Entry) -> dict[str, Any]:
    package, versions, intervals = _package(e)
    return _fit(AdvisoryEntryRow, {
        "advisory_id": advisory_id, "cve": e.cve, "vendor": e.identity.vendor, "product": e.identity.product,
        "vendor_key": e.identity.vendor_key, "product_key": e.identity.product_key,
        "model_pattern": e.identity.model_pattern, "purl": e.identity.purl,
        "purl_key": package, "cpe": e.identity.cpe, "hashes": list(e.identity.hashes), "versions": versions,
        "intervals": intervals, "scheme": e.scheme if e.intervals is not None or intervals is None else "vendor",
        "status": e.status.value, "justification": e.justification,
        "remediation": e.remediation, "remediation_detail": e.remediation_detail,
        "remediation_url": e.remediation_url, "fixed_version": e.fixed_version, "cvss": e.cvss,
        "cvss_vector": e.cvss_vector, "exploited": e.exploited,
    })


def _store_advisory(uow: UnitOfWork, caller: Caller, doc: Document, adv: Advisory, report: ImportReport) -> None:
    s = uow.session
    digest = hashlib.sha256(doc.data).hexdigest()
    keys = _fit(AdvisoryRow, {"publisher_key": adv.publisher_key, "doc_id": adv.doc_id})  # as stored
    row = s.scalar(select(AdvisoryRow).where(AdvisoryRow.source == adv.source,
                                             AdvisoryRow.publisher_key == keys["publisher_key"],
                                             AdvisoryRow.doc_id == keys["doc_id"]))
    summary = {"document": doc.name, "id": adv.doc_id, "revision": adv.revision, "entries": len(adv.entries),
               "cves": list(adv.cves)}
    now = uow.clock()
    if row is not None and row.sha256 == digest:
        report.unchanged.append(adv.doc_id)
        return
    if row is not None and row.updated_at and adv.updated_at and adv.updated_at < _aware(row.updated_at):
        report.older.append(f"{adv.doc_id} revision {adv.revision} (stored: {row.revision})")
        return
    report.unparsed += adv.unparsed
    unparsed = [{"message": p.message, "field": p.field} for p in adv.unparsed]
    if row is None:
        row = AdvisoryRow(**_fit(AdvisoryRow, dict(
            source=adv.source, publisher=adv.publisher, publisher_key=adv.publisher_key, doc_id=adv.doc_id,
            title=adv.title, category=adv.category, revision=adv.revision, released_at=adv.released_at,
            updated_at=adv.updated_at, cves=list(adv.cves), url=adv.url or None, sha256=digest, unparsed=unparsed,
            imported_by=caller.actor, imported_at=now)))
        s.add(row)
        s.flush()
        report.imported.append(summary)
        uow.record(caller, "advisory.imported", "advisory", row.id, after=summary)
    else:
        old = list(s.scalars(select(AdvisoryEntryRow).where(AdvisoryEntryRow.advisory_id == row.id)))
        before, after = {_fingerprint(e) for e in old}, {_fingerprint(e) for e in adv.entries}
        change = {"from_revision": row.revision, "added": len(after - before), "removed": len(before - after),
                  "cves_added": sorted(set(adv.cves) - set(row.cves)),
                  "cves_removed": sorted(set(row.cves) - set(adv.cves))}
        report.cves.update(row.cves)  # a CVE the new revision dropped must be re-matched too
        s.execute(delete(AdvisoryEntryRow).where(AdvisoryEntryRow.advisory_id == row.id))
        row.previous_revision, row.change = row.revision, change
        fitted = _fit(AdvisoryRow, {"title": adv.title, "category": adv.category, "revision": adv.revision,
                                    "url": adv.url or None})
        row.title, row.category, row.revision = fitted["title"], fitted["category"], fitted["revision"]
        row.released_at, row.updated_at, row.cves = adv.released_at, adv.updated_at, list(adv.cves)
        row.url, row.sha256, row.unparsed = fitted["url"], digest, unparsed
        row.imported_by, row.imported_at = caller.actor, now
        report.replaced.append({**summary, "change": change})
        uow.record(caller, "advisory.replaced", "advisory", row.id, after={**summary, "change": change})
    rows = _entry_rows(row.id, adv.entries)
    for i in range(0, len(rows), 5000):
        s.execute(insert(AdvisoryEntryRow), rows[i:i + 5000])
    report.cves.update(adv.cves)


def rematch(uow_factory: UnitOfWorkFactory, caller: Caller, report: ImportReport) -> MatchSummary | None:
    """Match the fleet again for the CVEs of the advisories an import stored; None: nothing to
    match. KEV and EPSS are joined when matches are read: a new catalog or score file needs none."""
    if report.cves:
        return vulnerabilities.match(uow_factory, cves=report.cves, caller=caller)
    return None


def _aware(at: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time cityward stores is UTC."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def import_advisories(uow_factory: UnitOfWorkFactory, caller: Caller, source: str | Iterable[Document], *,
                      kind: str = "auto", skip_refused: bool = False) -> ImportReport:
    """Read, check and store everything at `source` — a path or URL, or documents already read
    (an API upload) — see the module docstring; the caller then re-matches
    (`vulnerabilities.match(..., cves=report.cves)`)."""
    require_city_operator(caller, "import vulnerability intelligence")
    if kind not in KINDS:
        raise InvalidInput(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    report = ImportReport()
    try:
        parsed = _parse(read_source(source) if isinstance(source, str) else source, kind, report)
    except InvalidInput as exc:  # the source itself (archive, limits, download) is refused
        report.refused.append(Problem(str(exc)))
        parsed = _Parsed()
    if report.refused and not skip_refused:
        raise InvalidInput(f"{len(report.refused)} document(s) refused; nothing imported", problems=report.refused,
                           hint="fix or remove them, or import the rest with --skip-refused")
    if not (parsed.advisories or parsed.kev or parsed.epss):
        raise InvalidInput(f"{source if isinstance(source, str) else 'the upload'}: nothing to import",
                           problems=report.refused)
    with uow_factory(write=True) as uow:
        for doc, adv in parsed.advisories:
            _store_advisory(uow, caller, doc, adv, report)
        if parsed.kev is not None:
            uow.session.execute(delete(KevEntryRow))
            kev_rows = [{
                "cve": k.cve, "vendor": k.vendor, "product": k.product, "name": k.name, "date_added": k.date_added,
                "due_date": k.due_date, "ransomware": k.ransomware, "required_action": k.required_action,
                "catalog_version": parsed.kev.version} for k in parsed.kev.entries]
            if kev_rows:
                uow.session.execute(insert(KevEntryRow), kev_rows)
            report.kev = len(parsed.kev.entries)
            uow.record(caller, "kev.imported", "feed", "kev", after={"entries": report.kev,
                                                                    "catalog_version": parsed.kev.version})
        if parsed.epss is not None:
            uow.session.execute(delete(EpssScoreRow))
            rows = [{"cve": e.cve, "epss": e.epss, "percentile": e.percentile,
                     "model_version": parsed.epss.model_version, "score_date": parsed.epss.score_date}
                    for e in parsed.epss.scores]
            for i in range(0, len(rows), 20000):
                uow.session.execute(insert(EpssScoreRow), rows[i:i + 20000])  # empty: no batch at all
            report.epss = len(rows)
            uow.record(caller, "epss.imported", "feed", "epss", after={
                "scores": report.epss, "model_version": parsed.epss.model_version})
        uow.commit()
    return report


@dataclass(frozen=True)
class AdvisoryView:
    id: int
    source: str
    publisher: str
    doc_id: str
    title: str
    category: str
    revision: str
    previous_revision: str | None
    change: dict[str, Any] | None
    updated_at: datetime | None
    cves: list[str]
    statements: int
    unparsed: list[dict[str, Any]]
    devices_affected: int  # in the caller's scope
    url: str | None


def list_advisories(uow_factory: UnitOfWorkFactory, caller: Caller, *, advisory_id: int | None = None,
                    limit: int = 200) -> list[AdvisoryView]:
    """Imported advisories, newest first, with how many of the caller's devices each affects."""
    scope = require_device_details(caller)
    with uow_factory() as uow:
        s = uow.session
        q = select(AdvisoryRow).order_by(AdvisoryRow.imported_at.desc(), AdvisoryRow.id.desc()).limit(limit)
        if advisory_id is not None:
            q = q.where(AdvisoryRow.id == advisory_id)
        rows = list(s.scalars(q))
        if advisory_id is not None and not rows:
            raise NotFound(f"advisory {advisory_id} not found")
        counts = dict(s.execute(select(AdvisoryEntryRow.advisory_id, func.count()).where(
            AdvisoryEntryRow.advisory_id.in_([r.id for r in rows])).group_by(AdvisoryEntryRow.advisory_id)).all())
        wanted = sorted({c for r in rows for c in r.cves})
        by_cve: dict[str, set[str]] = {}
        for i in range(0, len(wanted), 500):
            q_matches = (select(DeviceRow.id, VulnMatchRow.cve)
                         .join(DeviceRow, vuln_frames.on_device())
                         .where(VulnMatchRow.cve.in_(wanted[i:i + 500]), scope_clause(s, scope)))
            for device_id, cve in s.execute(q_matches):
                by_cve.setdefault(cve, set()).add(device_id)
        return [AdvisoryView(
            r.id, r.source, r.publisher, r.doc_id, r.title, r.category, r.revision, r.previous_revision, r.change,
            r.updated_at, list(r.cves), counts.get(r.id, 0), list(r.unparsed),
            len(set().union(*(by_cve.get(c, set()) for c in r.cves))), r.url) for r in rows]
