"""/api/v1/advisories and /vulnerabilities: vulnerability intelligence over HTTP, as on the CLI.

An upload is one document as the raw body (CSAF or CVE JSON, KEV JSON/CSV, EPSS CSV, gzip or zip),
checked and stored all-or-nothing exactly like `cityward advisories import`, then matched."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from cityward.adapters.advisories.sources import MAX_DOCUMENT, Document, unpack
from cityward.domain.access import require_city_operator
from cityward.entrypoints.api.auth import CallerDep, PlatformDep
from cityward.entrypoints.api.problems import NOT_FOUND, TOO_LARGE
from cityward.entrypoints.api.schemas import ShortText, UtcDateTime, _Out
from cityward.entrypoints.api.uploads import spool_body
from cityward.errors import InvalidInput
from cityward.services import advisories, vendors, vulnerabilities

router = APIRouter(tags=["vulnerabilities"])
IMPORT_PATH = "/api/v1/advisories/import"
MAX_UPLOAD = MAX_DOCUMENT  # one document (an archive of many goes through the CLI)


class AdvisoryOut(_Out):
    id: int
    source: str
    publisher: str
    doc_id: str
    title: str
    category: str
    revision: str
    previous_revision: str | None
    change: dict[str, Any] | None
    updated_at: UtcDateTime | None
    cves: list[str]
    statements: int
    unparsed: list[dict[str, Any]]
    devices_affected: int
    url: str | None


class MatchOut(_Out):
    cves: int
    classes: int
    affected_classes: int
    devices: int
    matches: int
    kev: int
    inserted: int
    updated: int
    deleted: int
    seconds: float


class ImportOut(BaseModel):
    imported: list[dict[str, Any]]
    replaced: list[dict[str, Any]]
    unchanged: list[str]
    older: list[str]
    unparsed: list[str]
    kev: int | None
    epss: int | None
    match: MatchOut | None


class ExposureOut(_Out):
    cve: str
    label: str
    priority: float
    kev: bool
    ransomware: bool
    epss: float | None
    cvss: float | None
    due: date
    product: str
    firmware: str
    devices: int
    organization: str | None
    fixed_version: str | None
    remediation: str | None
    advisory: str
    via: str


@router.get("/advisories", response_model=list[AdvisoryOut])
def list_advisories(platform: PlatformDep, caller: CallerDep,
                    limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> list[AdvisoryOut]:
    """Imported advisories, newest first, with the devices in your scope each affects."""
    return [AdvisoryOut.model_validate(a) for a in advisories.list_advisories(platform.uow, caller, limit=limit)]


# Digits only in the route, so that `GET /advisories/match` is a 405 naming POST, not a 422 about an id.
@router.get("/advisories/{advisory_id:int}", response_model=AdvisoryOut, responses=NOT_FOUND)
def get_advisory(advisory_id: Annotated[int, Path(ge=1, le=2**31 - 1)], platform: PlatformDep,
                 caller: CallerDep) -> AdvisoryOut:
    """One advisory: its revision, what changed, and what could not be normalized."""
    return AdvisoryOut.model_validate(advisories.list_advisories(platform.uow, caller, advisory_id=advisory_id)[0])


@router.post(IMPORT_PATH.removeprefix("/api/v1"), response_model=ImportOut, responses=TOO_LARGE, openapi_extra={
    "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {
        "type": "string", "format": "binary",
        "description": "one CSAF 2.0 / CVE JSON 5 document, KEV catalog (JSON or CSV), EPSS CSV; gzip or zip"}}}}})
async def import_advisories(request: Request, platform: PlatformDep, caller: CallerDep,
                            name: Annotated[ShortText, Query(description="the document's name, for messages")]
                            = "upload") -> ImportOut:
    """Check and store the uploaded document (all-or-nothing), then re-match what it touches."""
    require_city_operator(caller, "import vulnerability intelligence")  # before reading the upload
    with await spool_body(request) as body:
        data = body.read(MAX_DOCUMENT + 1)
    if len(data) > MAX_DOCUMENT:
        raise InvalidInput(f"{name}: over the {MAX_DOCUMENT // 2**20} MB limit per document")

    def run() -> ImportOut:
        report = advisories.import_advisories(platform.uow, caller, unpack(Document(name, data)))
        summary = advisories.rematch(platform.uow, caller, report)
        return ImportOut(imported=report.imported, replaced=report.replaced, unchanged=report.unchanged,
                         older=report.older, unparsed=[str(p) for p in report.unparsed], kev=report.kev,
                         epss=report.epss, match=MatchOut.model_validate(summary) if summary else None)

    return await run_in_threadpool(run)


@router.post("/advisories/match", response_model=MatchOut)
def match(platform: PlatformDep, caller: CallerDep) -> MatchOut:
    """Match every advisory against the whole fleet again (city operators)."""
    require_city_operator(caller, "re-match the fleet")
    return MatchOut.model_validate(vulnerabilities.match(platform.uow, caller=caller))


@router.get("/vulnerabilities", response_model=list[ExposureOut])
def list_vulnerabilities(
    platform: PlatformDep, caller: CallerDep,
    cve: Annotated[ShortText | None, Query(description="only this CVE")] = None,
    org: Annotated[ShortText | None, Query(description="only devices this organization maintains")] = None,
    kev: Annotated[bool, Query(description="only CVEs in CISA KEV")] = False,
    label: Annotated[str | None, Query(pattern="^(critical|high|medium|low)$")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 200,
) -> list[ExposureOut]:
    """Affected devices in your scope, grouped by CVE, product, firmware and maintainer, most urgent first."""
    return [ExposureOut.model_validate(e) for e in vulnerabilities.exposures(
        platform.uow, caller, cve=cve, organization=org, kev_only=kev, label=label, limit=limit)]


class UnmatchedOut(_Out):
    vendor: str | None
    product: str | None
    statements: int
    cves: list[str]
    advisories: list[str]
    reason: str
    suggestions: list[str]


class UnreadableOut(_Out):
    advisory: str
    message: str
    where: str | None


class UnmatchedReportOut(BaseModel):
    unmatched: list[UnmatchedOut]
    unreadable: list[UnreadableOut]


@router.get("/advisories/unmatched", response_model=UnmatchedReportOut)
def list_unmatched(
    platform: PlatformDep, caller: CallerDep,
    advisory: Annotated[ShortText | None, Query(description="only statements of this advisory (its doc id)")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> UnmatchedReportOut:
    """Statements that name no catalog product (with the nearest catalog names) and those no import could read."""
    report = vendors.unmatched(platform.uow, caller, advisory=advisory, limit=limit, offset=offset)
    return UnmatchedReportOut(
        unmatched=[UnmatchedOut(vendor=u.vendor, product=u.product, statements=u.statements, cves=sorted(u.cves),
                                advisories=sorted(u.advisories), reason=u.reason, suggestions=u.suggestions)
                   for u in report.unmatched],
        unreadable=[UnreadableOut(advisory=r.advisory, message=r.message, where=r.where) for r in report.unreadable])


class AliasIn(BaseModel):
    alias: ShortText
    vendor: ShortText


class AliasOut(_Out):
    alias: str
    vendor: str
    source: str
    created_by: str | None


@router.post("/vendors/aliases", response_model=AliasOut, status_code=201)
def add_alias(body: AliasIn, platform: PlatformDep, caller: CallerDep) -> AliasOut:
    """`alias` means `vendor`; the CVEs of statements under either name are re-matched."""
    return AliasOut.model_validate(vendors.add_alias(platform.uow, caller, body.alias, body.vendor))


@router.delete("/vendors/aliases/{alias}", status_code=204, responses=NOT_FOUND)
def remove_alias(alias: Annotated[ShortText, Path()], platform: PlatformDep, caller: CallerDep) -> None:
    """Drop an alias the city added; the CVEs it touched are re-matched."""
    vendors.remove_alias(platform.uow, caller, alias)
