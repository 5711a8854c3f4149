"""/api/v1/tokens: API tokens; a secret is shown once, when the token is created."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path

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
    """A new token for `org` (default: the caller's); the response holds its only copy."""
    expires = timedelta(days=token.expires_in_days) if token.expires_in_days else None
    issued = tokens.create_token(platform.uow, caller, token.org or caller.org_name, token.name,
                                 token.role, expires)
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
