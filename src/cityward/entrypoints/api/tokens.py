"""/api/v1/tokens: API tokens; a secret is shown once, when the token is created."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path

from cityward.domain.tokens import parse_duration
from cityward.entrypoints.api.auth import CallerDep, PlatformDep
from cityward.entrypoints.api.pages import After, Limit, paginate
from cityward.entrypoints.api.problems import NOT_FOUND
from cityward.entrypoints.api.schemas import (
    NO_CONTROL,
    IssuedTokenOut,
    TokenIn,
    TokenOut,
    TokenPageOut,
)
from cityward.errors import InvalidInput
from cityward.services import tokens
from cityward.services.tokens import TokenView

router = APIRouter(prefix="/tokens", tags=["tokens"])


def _key(t: TokenView) -> tuple[str, str, str]:
    return (t.org, t.created_at.isoformat(), t.id)


@router.get("", response_model=TokenPageOut)
def list_tokens(
    platform: PlatformDep, caller: CallerDep, limit: Limit = 100, after: After = None
) -> TokenPageOut:
    """Tokens the caller may manage (never their secrets)."""
    page, total, next_after = paginate(tokens.list_tokens(platform.uow, caller), _key, limit,
                                       after)
    return TokenPageOut(items=[TokenOut.model_validate(t) for t in page], total=total,
                        next_after=next_after)


@router.post("", response_model=IssuedTokenOut, status_code=201, responses=NOT_FOUND)
def create_token(platform: PlatformDep, caller: CallerDep, token: TokenIn) -> IssuedTokenOut:
    """A new token for `org` (default: the caller's); the response holds its only copy. It expires
    after `expires_in` or `expires_in_days` (default 90 days), or never with `no_expiry` (city
    administrators only)."""
    if token.expires_in is not None and token.expires_in_days is not None:
        raise InvalidInput("give expires_in or expires_in_days, not both")
    if token.expires_in is not None:
        expires: timedelta | None = parse_duration(token.expires_in)
    else:
        expires = timedelta(days=token.expires_in_days) if token.expires_in_days else None
    issued = tokens.create_token(platform.uow, caller, token.org or caller.org_name, token.name,
                                 token.role, expires, no_expiry=token.no_expiry)
    out = TokenOut.model_validate(issued.view)
    return IssuedTokenOut(**out.model_dump(), secret=issued.secret)


@router.delete("/{token_id}", response_model=TokenOut, responses=NOT_FOUND)
def revoke_token(
    platform: PlatformDep,
    caller: CallerDep,
    token_id: Annotated[str, Path(max_length=32, pattern=NO_CONTROL)],
) -> TokenOut:
    """Revoke at once (idempotent); the token's next request is refused."""
    return TokenOut.model_validate(tokens.revoke_token(platform.uow, caller, token_id))
