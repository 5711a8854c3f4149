"""Dashboard pages for advisories: priority, affected devices by model and firmware, remediation."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cityward.domain.access import Action, require
from cityward.domain.rollouts import WaveOptions
from cityward.entrypoints.web.common import SessionDep, check_csrf, may_act, page, platform_of
from cityward.errors import InvalidInput
from cityward.services import remediation, users, vulnerabilities

router = APIRouter(include_in_schema=False)
AdvisoryId = Annotated[int, PathParam(ge=1, le=2**31 - 1)]
CVE_ID = re.compile(r"CVE-\d{4}-\d{4,}")


@router.get("/advisories", response_class=HTMLResponse)
def advisory_list(request: Request, active: SessionDep, cve: Annotated[str, Query(max_length=100)] = "",
                  kev: Annotated[str, Query(max_length=10)] = "",
                  before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> HTMLResponse:
    chosen = {"cve": cve.strip().upper(), "kev": kev.strip()}
    error = None
    if chosen["cve"] and not CVE_ID.fullmatch(chosen["cve"]):
        error = f"cve: {cve.strip()!r} is not a CVE id (CVE-YYYY-NNNN)"
    elif chosen["kev"] not in ("", "yes"):
        error = f"kev: {kev.strip()!r} is not yes or empty"
    found = vulnerabilities.AdvisoryPage([], 0, None) if error else vulnerabilities.advisory_risks(
        platform_of(request).uow, active.caller, cve=chosen["cve"] or None, kev_only=chosen["kev"] == "yes",
        before=before)
    query = {k: v for k, v in chosen.items() if v}
    return page(request, "advisories.html", 400 if error else 200, session=active, active="advisories",
                page=found, filters=chosen, error=error, first=before is None,
                next_url=f"/advisories?{urlencode({**query, 'before': found.next_before})}"
                if found.next_before else None, first_url=f"/advisories?{urlencode(query)}")


@router.get("/advisories/{advisory_id}", response_class=HTMLResponse)
def advisory_page(request: Request, active: SessionDep, advisory_id: AdvisoryId) -> HTMLResponse:
    shown = vulnerabilities.advisory_risk(platform_of(request).uow, active.caller, advisory_id)
    return page(request, "advisory.html", session=active, active="advisories", a=shown, link=_link(shown.url),
                acting=may_act(active) and shown.risk.devices > 0)


def _link(url: str | None) -> str | None:
    """The advisory's own address as a link only when it is a web address (never `javascript:`)."""
    return url if url and url.lower().startswith(("https://", "http://")) else None


def _fixes(request: Request, active: users.WebSession, advisory_id: int, *, create: bool) -> tuple[
        vulnerabilities.AdvisoryRisk, list[remediation.ProductFix] | None, InvalidInput | None]:
    """The advisory, and its per-product fixes planned (or created), or why there are none."""
    require(active.caller, Action.ROLLOUT)  # refused before the advisory is even looked up
    platform = platform_of(request)
    risk = vulnerabilities.advisory_risks(platform.uow, active.caller, advisory_id=advisory_id).items[0]
    try:
        done = remediation.from_advisory(platform.uow, active.caller, risk.doc_id, WaveOptions(),
                                         platform.settings.firmware_dir, create=create)
    except InvalidInput as exc:  # e.g. it affects none of the caller's devices
        return risk, None, exc
    return risk, done, None


@router.post("/advisories/{advisory_id}/plan", response_class=HTMLResponse)
def plan(request: Request, active: SessionDep, advisory_id: AdvisoryId,
         csrf_token: Annotated[str, Form(max_length=200)] = "") -> HTMLResponse:
    """The dry run: one firmware upgrade per affected true product, or why there is none."""
    check_csrf(active, csrf_token)
    risk, fixes, error = _fixes(request, active, advisory_id, create=False)
    if error is not None:
        return page(request, "remediate.html", 422, session=active, active="advisories", mode="advisory",
                    advisory=risk, error=error.message, problems=error.problems, hint=error.hint,
                    back=f"/advisories/{advisory_id}")
    return page(request, "remediate.html", session=active, active="advisories", mode="advisory", advisory=risk,
                fixes=fixes, plannable=any(f.plan is not None for f in fixes or []),
                back=f"/advisories/{advisory_id}")


@router.post("/advisories/{advisory_id}/create")
def create(request: Request, active: SessionDep, advisory_id: AdvisoryId,
           csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    """The confirmed plan: the rollouts stored (planned again inside each write)."""
    check_csrf(active, csrf_token)
    risk, fixes, error = _fixes(request, active, advisory_id, create=True)
    created = [f.rollout for f in fixes or [] if f.rollout is not None]
    if len(created) == 1:
        return RedirectResponse(f"/rollouts/{created[0]}", status_code=303)
    if created:
        return RedirectResponse("/rollouts", status_code=303)
    return page(request, "remediate.html", 422, session=active, active="advisories", mode="advisory", advisory=risk,
                fixes=fixes, plannable=False, back=f"/advisories/{advisory_id}",
                error=error.message if error else "no rollout was created: each product's problem is below",
                problems=error.problems if error else [], hint=error.hint if error else None)
