"""Routes of the dashboard: sign-in, sign-out and the pages."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cityward.domain import users as rules
from cityward.domain.organizations import Role
from cityward.domain.rollouts import Control
from cityward.entrypoints.web import advisories as advisory_pages
from cityward.entrypoints.web import audit_log, findings, fleet, operations
from cityward.entrypoints.web.common import (
    HERE,
    SESSION_COOKIE,
    CsrfRefused,
    NotSignedIn,
    SessionDep,
    check_csrf,
    page,
    platform_of,
)
from cityward.errors import AuthenticationFailed
from cityward.services import audit, overview, policies, rollouts, users
from cityward.services.snapshots import Snapshots

LOGIN_COOKIE = "cw_login"  # the sign-in form's CSRF secret, before there is a session

router = APIRouter(include_in_schema=False)
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _secure(request: Request) -> bool:
    return bool(platform_of(request).settings.web_secure_cookies)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never another host (`//evil`, `https://…`) after signing in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target or len(target) > 500:
        return "/"
    return target


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: Annotated[str | None, Query(max_length=1000)] = None) -> Response:
    if users.session(platform_of(request).uow, request.cookies.get(SESSION_COOKIE, "")) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(request, _safe_next(next))


def _login_page(request: Request, target: str, *, error: str | None = None, status: int = 200,
                username: str = "") -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = page(request, "login.html", status, csrf_token=token, next=target, error=error, username=username)
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict", secure=_secure(request),
                        path="/login")
    return response


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, username: Annotated[str, Form(max_length=200)] = "",
          password: Annotated[str, Form(max_length=1000)] = "", csrf_token: Annotated[str, Form(max_length=200)] = "",
          next: Annotated[str, Form(max_length=1000)] = "/") -> Response:
    target = _safe_next(next)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf_token):
        return _login_page(request, target, status=403, username=username,
                           error="the sign-in form expired or came from another site: sign in again")
    if not username or not password:
        return _login_page(request, target, status=422, username=username,
                           error="enter both your username and your password")
    try:
        signed = users.sign_in(platform_of(request).uow, username, password)
    except AuthenticationFailed as exc:
        return _login_page(request, target, status=401, username=username, error=str(exc))
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, signed.session, max_age=int(rules.SESSION_LONGEST.total_seconds()),
                        httponly=True, samesite="strict", secure=_secure(request), path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, active: SessionDep, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    check_csrf(active, csrf_token)
    users.sign_out(platform_of(request).uow, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/", response_class=HTMLResponse)
def home(request: Request, active: SessionDep) -> HTMLResponse:
    """Fleet-wide counts come from a snapshot of the caller's scope (recounted in the background
    when older than `web_overview_fresh_s`, its time shown); the audit, rollouts and acknowledgements are
    small reads, current on every load."""
    platform = platform_of(request)
    caller = active.caller
    snapshots: Snapshots[overview.Posture] = request.app.state.posture
    snap = snapshots.get(overview.posture_key(caller), lambda: overview.posture(platform.uow, caller))
    fleet = snap.value.fleet
    runs = audit.list_runs(platform.uow, caller, limit=1)
    latest = audit.get_run(platform.uow, caller, runs[0].id)[1] if runs else None
    points = audit.trend(platform.uow, caller, runs[0].policy) if runs else []
    in_progress = [r for r in rollouts.list_rollouts(platform.uow, caller, limit=20)
                   if r.control != Control.ABORTED and r.done < r.total]
    return page(request, "overview.html", session=active, active="overview", fleet=fleet, live=snap.value.live,
                kinds=_bars(fleet.by_kind), zones=_bars(fleet.by_zone[:12]), run=runs[0] if runs else None,
                severities=_bars(list((latest or {}).get("by_severity", {}).items())),
                trend=_trend(points), kev_devices=snap.value.kev_devices, kev_cves=snap.value.kev_cves,
                rollouts=in_progress, counted=snap, fresh_s=int(snapshots.fresh_s),
                acks=policies.acknowledgement_status(platform.uow, caller),
                may_acknowledge=caller.role is not Role.VIEWER)


@router.post("/policy/acknowledge")
def acknowledge_policy(request: Request, active: SessionDep, csrf_token: Annotated[str, Form(max_length=200)] = "",
                       version: Annotated[int, Form(ge=1, le=2**31 - 1)] = 1) -> Response:
    """A partner acknowledges the policy version it was shown (not whatever is newest by then)."""
    check_csrf(active, csrf_token)
    policies.acknowledge(platform_of(request).uow, active.caller, version)
    return RedirectResponse("/#policy", status_code=303)


def _trend(points: list[audit.TrendPoint]) -> dict[str, Any] | None:
    """The compliance score of the last runs as an SVG polyline (0 to 100 %, bottom to top)."""
    if not points:
        return None
    step = 380 / max(1, len(points) - 1)
    coords = " ".join(f"{10 + i * step:.1f},{110 - p.score:.1f}" for i, p in enumerate(points))
    return {"coords": coords, "first": points[0], "last": points[-1], "runs": len(points)}


def _bars(pairs: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Rows for a horizontal bar chart drawn in SVG by the template (no script, readable as text)."""
    top = max((n for _k, n in pairs), default=0) or 1
    return [{"label": k, "value": n, "share": n / top} for k, n in pairs]


def _error_page(request: Request, status: int, title: str, message: str, hint: str | None = None) -> HTMLResponse:
    return page(request, "error.html", status, title=title, message=message, hint=hint)


def _html_error(request: Request, status: int, title: str, message: str, hint: str | None) -> Response | None:
    """The API's errors, as a page when a browser asked for a page (None: keep problem+json)."""
    return _error_page(request, status, title, message, hint) if wants_html(request) else None


def wants_html(request: Request) -> bool:
    """Browser pages get HTML errors; the API and its clients keep problem+json."""
    path = request.url.path
    if path.startswith(("/api/", "/healthz", "/docs", "/openapi", "/redoc")):
        return False
    return "text/html" in request.headers.get("accept", "") or request.method == "POST"


class _PageHeaders:
    """Adds the security headers to every HTML response (plain ASGI: streaming API responses pass
    through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if headers.get("content-type", "").startswith("text/html"):
                    for name, value in _PAGE_HEADERS.items():
                        headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_web(app: FastAPI) -> None:
    """Mount the dashboard on `app` (whose state holds the platform)."""

    async def not_signed_in(request: Request, _exc: Exception) -> Response:
        if request.method == "GET":
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        return _error_page(request, 401, "Not signed in", "your session ended", "sign in again, then repeat it")

    async def csrf_refused(request: Request, _exc: Exception) -> Response:
        return _error_page(request, 403, "Form refused", "the form did not carry this session's token (an old tab, "
                           "or a page of another site)", "reload the page and submit it again")

    app.add_exception_handler(NotSignedIn, not_signed_in)
    app.add_exception_handler(CsrfRefused, csrf_refused)
    app.state.html_error = _html_error
    app.state.posture = Snapshots[overview.Posture](fresh_s=app.state.platform.settings.web_overview_fresh_s)
    app.add_middleware(_PageHeaders)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)

    for pages in (fleet, operations, findings, advisory_pages, audit_log):
        app.include_router(pages.router)

