"""API tokens: shown once, stored as a hash, scoped to an organization and a role."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from cityward.adapters.storage.models import OrganizationRow, TokenRow
from cityward.adapters.storage.uow import UnitOfWork, UnitOfWorkFactory
from cityward.domain.access import require_token_admin
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.errors import AuthenticationFailed, InvalidInput, NotFound
from cityward.services.organizations import check_name, org_to_manage

PREFIX = "cw_"
_LAST_USED_EVERY = timedelta(minutes=5)


@dataclass(frozen=True)
class TokenView:
    id: str
    org: str
    name: str
    role: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class IssuedToken:
    view: TokenView
    secret: str  # the whole bearer token; shown once, never stored


def _hash(secret: str) -> str:
    # The secret is 256 random bits, so a plain SHA-256 resists guessing; no need for a slow KDF.
    return hashlib.sha256(secret.encode()).hexdigest()


def _parse_role(role: str) -> Role:
    try:
        return Role(role.lower())
    except ValueError:
        raise InvalidInput(f"unknown role {role!r}; expected one of {', '.join(Role)}") from None


def _view(row: TokenRow, org: str) -> TokenView:
    return TokenView(row.id, org, row.name, row.role, row.created_at, row.created_by,
                     row.expires_at, row.revoked_at, row.last_used_at)


def issue_token(
    uow: UnitOfWork, caller: Caller, org: OrganizationRow, name: str, role: Role,
    expires_in: timedelta | None,
) -> IssuedToken:
    """Create a token inside an open unit of work (used by `init` and `create_token`)."""
    now = uow.clock()
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = TokenRow(
        id=token_id, org_id=org.id, name=name, role=role.value, secret_hash=_hash(secret),
        created_at=now, created_by=caller.actor,
        expires_at=now + expires_in if expires_in else None,
    )
    uow.session.add(row)
    uow.record(caller, "tokens.created", "token", token_id,
               after={"org": org.name, "name": name, "role": role.value,
                      "expires_at": row.expires_at.isoformat() if row.expires_at else None})
    return IssuedToken(_view(row, org.name), f"{PREFIX}{token_id}_{secret}")


def create_token(
    uow_factory: UnitOfWorkFactory,
    caller: Caller,
    org_name: str,
    name: str,
    role: str = "viewer",
    expires_in: timedelta | None = None,
) -> IssuedToken:
    name = check_name(name, "token name")
    token_role = _parse_role(role)
    if expires_in is not None and expires_in <= timedelta(0):
        raise InvalidInput("a token's lifetime must be positive")
    with uow_factory(write=True) as uow:
        org = org_to_manage(uow.session, caller, org_name, token_role, "admin tokens")
        issued = issue_token(uow, caller, org, name, token_role, expires_in)
        uow.commit()
    return issued


def list_tokens(uow_factory: UnitOfWorkFactory, caller: Caller) -> list[TokenView]:
    with uow_factory() as uow:
        q = (select(TokenRow, OrganizationRow.name)
             .join(OrganizationRow, OrganizationRow.id == TokenRow.org_id)
             .order_by(OrganizationRow.name, TokenRow.created_at))
        if not caller.is_city_admin:
            q = q.where(TokenRow.org_id == caller.org_id)
        return [_view(row, org) for row, org in uow.session.execute(q)]


def revoke_token(uow_factory: UnitOfWorkFactory, caller: Caller, token_id: str) -> TokenView:
    with uow_factory(write=True) as uow:
        found = uow.session.execute(
            select(TokenRow, OrganizationRow.name)
            .join(OrganizationRow, OrganizationRow.id == TokenRow.org_id)
            .where(TokenRow.id == token_id)
        ).first()
        if found is None or (not caller.is_city_admin and found[0].org_id != caller.org_id):
            raise NotFound(f"token {token_id!r} not found")
        row, org = found
        require_token_admin(caller, row.org_id)
        if row.revoked_at is None:
            row.revoked_at = uow.clock()
            uow.record(caller, "tokens.revoked", "token", token_id, before={"revoked": False},
                       after={"revoked": True})
        view = _view(row, org)
        uow.commit()
    return view


def authenticate(uow_factory: UnitOfWorkFactory, bearer: str) -> Caller:
    """The caller a bearer token stands for; one message for every failure, so none leaks."""
    failure = AuthenticationFailed("invalid, expired or revoked token",
                                   hint="create a new one with `cityward tokens create`")
    if not bearer.startswith(PREFIX) or bearer.count("_") < 2:
        raise failure
    token_id, _, secret = bearer[len(PREFIX):].partition("_")
    with uow_factory() as uow:
        found = uow.session.execute(
            select(TokenRow, OrganizationRow)
            .join(OrganizationRow, OrganizationRow.id == TokenRow.org_id)
            .where(TokenRow.id == token_id)
        ).first()
        now = uow.clock()
        if found is None:
            raise failure
        row, org = found
        if not hmac.compare_digest(row.secret_hash, _hash(secret)) or row.revoked_at is not None:
            raise failure
        if row.expires_at is not None and _aware(row.expires_at) <= now:
            raise failure
        stale = row.last_used_at is None or now - _aware(row.last_used_at) > _LAST_USED_EVERY
        caller = Caller(
            actor=f"token:{row.id} ({row.name})", org_id=org.id, org_name=org.name,
            org_kind=OrgKind(org.kind), role=Role(row.role), brand=org.brand,
        )
    if stale:
        with uow_factory(write=True) as uow:
            uow.session.get_one(TokenRow, token_id).last_used_at = now
            uow.commit()
    return caller


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)
