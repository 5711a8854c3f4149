"""API tokens: shown once, stored as a hash, scoped to an organization and a role, and expiring
(90 days unless asked otherwise; never only when a city administrator says so: domain/tokens.py)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from cityward.adapters.storage.models import OrganizationRow, TokenRow
from cityward.adapters.storage.uow import UnitOfWork, UnitOfWorkFactory
from cityward.domain import tokens as rules
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
    expired: bool  # its expiry has passed (it authenticates nothing any more)


@dataclass(frozen=True)
class IssuedToken:
    view: TokenView
    secret: str  # the whole bearer token; shown once, never stored


class TokenExpired(AuthenticationFailed):
    """The right secret of a token whose lifetime is over (HTTP 401, saying so)."""

    title = "Token expired"


def _hash(secret: str) -> str:
    # The secret is 256 random bits, so a plain SHA-256 resists guessing; no need for a slow KDF.
    return hashlib.sha256(secret.encode()).hexdigest()


def _parse_role(role: str) -> Role:
    try:
        return Role(role.lower())
    except ValueError:
        raise InvalidInput(f"unknown role {role!r}; expected one of {', '.join(Role)}") from None


def _view(row: TokenRow, org: str, now: datetime) -> TokenView:
    expires_at = _aware(row.expires_at) if row.expires_at is not None else None
    return TokenView(row.id, org, row.name, row.role, row.created_at, row.created_by,
                     expires_at, row.revoked_at, row.last_used_at, rules.expired(expires_at, now))


def issue_token(
    uow: UnitOfWork, caller: Caller, org: OrganizationRow, name: str, role: Role,
    expires_in: timedelta | None, *, no_expiry: bool = False,
) -> IssuedToken:
    """Create a token inside an open unit of work (used by `init` and `create_token`); without
    `expires_in` it lives rules.DEFAULT_LIFETIME, with `no_expiry` (a city admin only) forever."""
    now = uow.clock()
    expires_at = rules.expiry(now, caller, expires_in, no_expiry=no_expiry)
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = TokenRow(
        id=token_id, org_id=org.id, name=name, role=role.value, secret_hash=_hash(secret),
        created_at=now, created_by=caller.actor, expires_at=expires_at,
    )
    uow.session.add(row)
    uow.record(caller, "tokens.created", "token", token_id,
               after={"org": org.name, "name": name, "role": role.value,
                      "expires_at": expires_at.isoformat() if expires_at else None,
                      "no_expiry": expires_at is None})
    return IssuedToken(_view(row, org.name, now), f"{PREFIX}{token_id}_{secret}")


def create_token(
    uow_factory: UnitOfWorkFactory,
    caller: Caller,
    org_name: str,
    name: str,
    role: str = "viewer",
    expires_in: timedelta | None = None,
    *,
    no_expiry: bool = False,
) -> IssuedToken:
    """A token for `org_name`: it expires after `expires_in` (default 90 days; a partner's at most
    a year), or never with `no_expiry`, which only a city administrator may ask for."""
    name = check_name(name, "token name")
    token_role = _parse_role(role)
    rules.expiry(uow_factory.clock(), caller, expires_in, no_expiry=no_expiry)  # refused before any write
    with uow_factory(write=True) as uow:
        org = org_to_manage(uow.session, caller, org_name, token_role, "admin tokens")
        issued = issue_token(uow, caller, org, name, token_role, expires_in, no_expiry=no_expiry)
        uow.commit()
    return issued


def list_tokens(uow_factory: UnitOfWorkFactory, caller: Caller) -> list[TokenView]:
    with uow_factory() as uow:
        q = (select(TokenRow, OrganizationRow.name)
             .join(OrganizationRow, OrganizationRow.id == TokenRow.org_id)
             .order_by(OrganizationRow.name, TokenRow.created_at))
        if not caller.is_city_admin:
            q = q.where(TokenRow.org_id == caller.org_id)
        now = uow.clock()
        return [_view(row, org, now) for row, org in uow.session.execute(q)]


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
        view = _view(row, org, uow.clock())
        uow.commit()
    return view


def authenticate(uow_factory: UnitOfWorkFactory, bearer: str) -> Caller:
    """The caller a bearer token stands for. Who does not hold the secret learns nothing (one
    message for every such failure); whoever does is told that it expired, and when."""
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
        if row.expires_at is not None and rules.expired(_aware(row.expires_at), now):
            raise TokenExpired(f"token expired on {_aware(row.expires_at):%Y-%m-%d %H:%M} UTC",
                               hint="ask an administrator for a new one (`cityward tokens create`)")
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
