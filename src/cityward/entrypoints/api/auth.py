"""Who is calling: the platform of this app and the Caller behind the request's bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.errors import AuthenticationFailed
from cityward.services import tokens

# A real token is about 60 characters; anything far longer is refused before any lookup.
_MAX_TOKEN_CHARS = 512

_bearer = HTTPBearer(
    auto_error=False,  # so a missing token becomes our 401 problem, not FastAPI's 403
    description="An API token from `cityward tokens create` or POST /api/v1/tokens.",
)


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def current_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Sync on purpose: FastAPI runs it in the thread pool, so the token lookup never blocks."""
    if credentials is None:
        raise AuthenticationFailed(
            "this endpoint needs a bearer token",
            hint="send the header `Authorization: Bearer <token>`",
        )
    if len(credentials.credentials) > _MAX_TOKEN_CHARS:
        raise AuthenticationFailed("invalid, expired or revoked token")
    return tokens.authenticate(get_platform(request).uow, credentials.credentials)


PlatformDep = Annotated[Platform, Depends(get_platform)]
CallerDep = Annotated[Caller, Depends(current_caller)]
