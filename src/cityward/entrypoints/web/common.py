"""What every dashboard page shares: templates, the platform, the signed-in session, CSRF."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from cityward import __version__
from cityward.bootstrap import Platform
from cityward.domain.access import Action, may
from cityward.services import users

HERE = Path(__file__).parent
SESSION_COOKIE = "cw_session"
templates = Jinja2Templates(directory=HERE / "templates")  # autoescape on for .html
templates.env.globals["version"] = __version__


class NotSignedIn(Exception):
    """A page was asked for without a live session: go and sign in."""


class CsrfRefused(Exception):
    """A form without this session's CSRF token: refused, whatever it asked."""


def platform_of(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def current_session(request: Request) -> users.WebSession:
    found = users.session(platform_of(request).uow, request.cookies.get(SESSION_COOKIE, ""))
    if found is None:
        raise NotSignedIn
    return found


SessionDep = Annotated[users.WebSession, Depends(current_session)]


def check_csrf(active: users.WebSession, token: str) -> None:
    if not hmac.compare_digest(active.csrf_token, token):
        raise CsrfRefused


def may_act(active: users.WebSession) -> bool:
    """Whether to offer remediation rollouts at all (the services decide, and refuse, anyway)."""
    return may(active.caller, Action.ROLLOUT)


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context, status_code=status)
