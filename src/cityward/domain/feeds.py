"""The exploitation feeds: CISA KEV (JSON and CSV) and FIRST EPSS (CSV). Parsed whole or not at
all: one bad row rejects the file, naming the row and field, so a catalog is never half-replaced."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from cityward.domain.advisories import CVE_ID, EpssScore, KevEntry
from cityward.domain.limits import STORED_TEXT_CHARS, clip, csv_guarded, csv_problem, first_line, text_lines
from cityward.errors import InvalidInput, Problem

MAX_ROWS = 2_000_000  # EPSS lists about 300,000 CVEs; ten times that is not a feed
_MODEL = re.compile(r"#\s*model_version\s*:\s*([^,\s]+)(?:\s*,\s*score_date\s*:\s*(\d{4}-\d{2}-\d{2}))?")
KEV_COLUMNS = ("cveID", "vendorProject", "product", "vulnerabilityName", "dateAdded", "shortDescription",
               "requiredAction", "dueDate", "knownRansomwareCampaignUse", "notes", "cwes")


@dataclass(frozen=True)
class KevCatalog:
    version: str | None
    entries: tuple[KevEntry, ...]


@dataclass(frozen=True)
class EpssFeed:
    model_version: str | None
    score_date: date | None
    scores: tuple[EpssScore, ...]


def _fail(problems: list[Problem], what: str) -> None:
    if problems:
        shown = "; ".join(str(p) for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InvalidInput(f"{what} rejected, nothing imported: {shown}{more}", problems=problems)


def _date(value: Any, row: int, field: str, name: str, problems: list[Problem], *,
          required: bool) -> date | None:
    if value in (None, "") and not required:
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        problems.append(Problem(f"{value!r} is not a date (YYYY-MM-DD)", row=row, field=field, source=name))
        return None


def _kev_rows(rows: Iterable[Mapping[str, Any]], name: str, first_row: int) -> tuple[KevEntry, ...]:
    problems: list[Problem] = []
    out: dict[str, KevEntry] = {}
    for n, row in enumerate(rows, start=first_row):
        if n - first_row >= MAX_ROWS:
            problems.append(Problem(f"more than {MAX_ROWS} rows", row=n, source=name))
            break
        if not isinstance(row, Mapping):
            problems.append(Problem("not an object", row=n, source=name))
            continue
        cve = str(row.get("cveID") or "").strip()
        if not CVE_ID.fullmatch(cve):
            problems.append(Problem(f"{cve!r} is not a CVE id", row=n, field="cveID", source=name))
            continue
        added = _date(row.get("dateAdded"), n, "dateAdded", name, problems, required=True)
        due = _date(row.get("dueDate"), n, "dueDate", name, problems, required=False)
        ransomware = str(row.get("knownRansomwareCampaignUse") or "Unknown").strip().lower()
        if ransomware not in ("known", "unknown"):
            problems.append(Problem(f"{ransomware!r} is neither Known nor Unknown", row=n,
                                    field="knownRansomwareCampaignUse", source=name))
        if added is None:
            continue
        out[cve] = KevEntry(cve=cve, vendor=_cut(row.get("vendorProject"), 200),
                            product=_cut(row.get("product"), 200),
                            name=_cut(row.get("vulnerabilityName"), 500), date_added=added, due_date=due,
                            ransomware=ransomware == "known",
                            required_action=_cut(row.get("requiredAction"), STORED_TEXT_CHARS) or None)
    _fail(problems, f"KEV catalog {name}")
    return tuple(out.values())


def _cut(value: Any, chars: int) -> str:
    """A text column as stored: cut to fit with a marker (docs/vulnerabilities.md, "Limits")."""
    return clip(str(value or ""), chars) or ""


def kev_from_json(doc: Any, name: str) -> KevCatalog:
    if not isinstance(doc, Mapping) or not isinstance(doc.get("vulnerabilities"), list):
        raise InvalidInput(f"{name}: not a KEV catalog (no `vulnerabilities` list)")
    return KevCatalog(str(doc.get("catalogVersion")) if doc.get("catalogVersion") else None,
                      _kev_rows(doc["vulnerabilities"], name, 1))


def kev_from_csv(text: str, name: str) -> KevCatalog:
    reader = csv.DictReader(text_lines(text, name))
    try:
        fieldnames = reader.fieldnames or ()
    except csv.Error as exc:
        raise csv_problem(exc, name, 1) from None
    missing = [c for c in ("cveID", "dateAdded") if c not in fieldnames]
    if missing:
        raise InvalidInput(f"{name}: not a KEV catalog CSV (no {', '.join(missing)} column)")
    return KevCatalog(None, _kev_rows(csv_guarded(reader, name, 2), name, 2))


def epss_from_csv(text: str, name: str) -> EpssFeed:
    """`#model_version:…,score_date:…` (optional), then `cve,epss,percentile`."""
    head = first_line(text, name)
    model, scored = None, None
    start = 0
    if head.startswith("#"):
        m = _MODEL.match(head)
        if m:
            model = m.group(1)
            scored = date.fromisoformat(m.group(2)) if m.group(2) else None
        start = 1
    reader = csv.DictReader(text_lines(text, name, len(head) + 1, 2) if start else text_lines(text, name))
    try:
        fieldnames = reader.fieldnames or []
    except csv.Error as exc:
        raise csv_problem(exc, name, start + 1) from None
    if [c.strip() for c in fieldnames][:3] != ["cve", "epss", "percentile"]:
        raise InvalidInput(f"{name}: not an EPSS CSV (expected the header cve,epss,percentile on line {start + 1})")
    problems: list[Problem] = []
    scores: dict[str, EpssScore] = {}
    for n, row in enumerate(csv_guarded(reader, name, start + 2), start=start + 2):
        if n > MAX_ROWS + start + 1:
            problems.append(Problem(f"more than {MAX_ROWS} rows", row=n, source=name))
            break
        cve = (row.get("cve") or "").strip()
        if not CVE_ID.fullmatch(cve):
            problems.append(Problem(f"{cve!r} is not a CVE id", row=n, field="cve", source=name))
            continue
        values = []
        for field in ("epss", "percentile"):
            try:
                value = float(row.get(field) or "")
            except ValueError:
                problems.append(Problem(f"{row.get(field)!r} is not a number", row=n, field=field, source=name))
                break
            if not 0.0 <= value <= 1.0:
                problems.append(Problem(f"{value} is outside 0 to 1", row=n, field=field, source=name))
                break
            values.append(value)
        if len(values) == 2:
            scores[cve] = EpssScore(cve, values[0], values[1])
    _fail(problems, f"EPSS file {name}")
    return EpssFeed(model, scored, tuple(scores.values()))
