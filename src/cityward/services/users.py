"""Dashboard users: created by an administrator, signed in with a password (argon2id), kept in a
server-side session. API tokens stay for machines; people sign in.

A failed sign-in says the same thing whether the username exists, the password is wrong, the
account is disabled or it waits after repeated failures, so none of it leaks; each failure on a
real account counts towards its lockout (domain.users.locked_until) and is audited.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update

from cityward.adapters.storage.models import OrganizationRow, UserRow, WebSessionRow
from cityward.adapters.storage.uow import UnitOfWork, UnitOfWorkFactory
from cityward.domain import users as rules
from cityward.domain.access import require_token_admin
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound, Problem
from cityward.services.organizations import org_to_manage

log = logging.getLogger(__name__)
_hasher = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) parameters
# Verified against when the username is unknown, so that answer takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
_SEEN_EVERY = 60  # seconds: how often a session's last_seen_at is written
FAILED = "wrong username or password, or the account waits after repeated failures: try again in a few minutes"


@dataclass(frozen=True)
class UserView:
    username: str
    org: str
    role: str
    created_at: datetime
    created_by: str
    disabled: bool
    locked_until: datetime | None
    last_sign_in_at: datetime | None


@dataclass(frozen=True)
class NewPassword:
    user: UserView
    password: str | None  # generated: show it once; None when the caller chose it


@dataclass(frozen=True)
class SignedIn:
    session: str  # the cookie's secret; only its hash is stored
    csrf_token: str
    caller: Caller
    expires_at: datetime


@dataclass(frozen=True)
class WebSession:
    caller: Caller
    username: str
    csrf_token: str


def _aware(at: datetime | None) -> datetime | None:
    return None if at is None else at if at.tzinfo else at.replace(tzinfo=UTC)


def _digest(secret: str) -> str:
    # 256 random bits: a plain SHA-256 resists guessing (as for API tokens), no slow KDF needed.
    return hashlib.sha256(secret.encode()).hexdigest()


def _view(row: UserRow, org: str) -> UserView:
    return UserView(row.username, org, row.role, _aware(row.created_at) or row.created_at, row.created_by,
                    row.disabled_at is not None, _aware(row.locked_until), _aware(row.last_sign_in_at))


def _role(role: str) -> Role:
    try:
        return Role(role.lower())
    except ValueError:
        raise InvalidInput(f"unknown role {role!r}; expected one of {', '.join(Role)}",
                           [Problem("unknown role", field="role")]) from None


def _password(password: str | None, username: str) -> tuple[str, bool]:
    """(the password, whether it was generated)."""
    if password is None:
        return rules.generated_password(), True
    problem = rules.password_problem(password, username)
    if problem:
        raise InvalidInput(problem, [Problem(problem, field="password")])
    return password, False


def _user(uow: UnitOfWork, caller: Caller, username: str) -> tuple[UserRow, OrganizationRow]:
    found = uow.session.execute(select(UserRow, OrganizationRow).join(
        OrganizationRow, OrganizationRow.id == UserRow.org_id).where(UserRow.username == username.lower())).first()
    if found is None or (not caller.is_city_admin and found[0].org_id != caller.org_id):
        raise NotFound(f"user {username!r} not found", hint="`cityward users list` shows the users you manage")
    require_token_admin(caller, found[0].org_id)
    return found[0], found[1]


def add_user(uow: UnitOfWork, caller: Caller, org: OrganizationRow, username: str, role: Role,
             password: str | None = None) -> NewPassword:
    """Create a user inside an open unit of work (used by `init` and `create_user`)."""
    username = username.strip().lower()
    problem = rules.username_problem(username)
    if problem:
        raise InvalidInput(problem, [Problem(problem, field="username")])
    if uow.session.scalar(select(UserRow.id).where(UserRow.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists", hint="choose another username")
    secret, generated = _password(password, username)
    now = uow.clock()
    row = UserRow(username=username, org_id=org.id, role=role.value, password_hash=_hasher.hash(secret),
                  created_at=now, created_by=caller.actor, password_changed_at=now, failed_sign_ins=0)
    uow.session.add(row)
    uow.session.flush()
    uow.record(caller, "users.created", "user", username, after={"org": org.name, "role": role.value})
    return NewPassword(_view(row, org.name), secret if generated else None)


def create_user(uow_factory: UnitOfWorkFactory, caller: Caller, username: str, org_name: str, role: str = "viewer",
                password: str | None = None) -> NewPassword:
    """An organization's admin creates its own users; the city admin anyone's. Without a password
    one is generated and returned once."""
    user_role = _role(role)
    with uow_factory(write=True) as uow:
        org = org_to_manage(uow.session, caller, org_name, user_role, "administrators")
        created = add_user(uow, caller, org, username, user_role, password)
        uow.commit()
    return created


def set_password(uow_factory: UnitOfWorkFactory, caller: Caller, username: str,
                 password: str | None = None) -> NewPassword:
    """A new password (generated when None), the lockout cleared and every session ended."""
    with uow_factory(write=True) as uow:
        row, org = _user(uow, caller, username)
        secret, generated = _password(password, row.username)
        now = uow.clock()
        row.password_hash, row.password_changed_at = _hasher.hash(secret), now
        row.failed_sign_ins, row.locked_until = 0, None
        ended = _end_sessions(uow, row.id, now)
        uow.record(caller, "users.password_set", "user", row.username,
                   after={"generated": generated, "sessions_ended": ended})
        view = _view(row, org.name)
        uow.commit()
    return NewPassword(view, secret if generated else None)


def disable_user(uow_factory: UnitOfWorkFactory, caller: Caller, username: str) -> UserView:
    """The user can no longer sign in; its sessions end at once."""
    with uow_factory(write=True) as uow:
        row, org = _user(uow, caller, username)
        if row.disabled_at is None:
            now = uow.clock()
            row.disabled_at = now
            ended = _end_sessions(uow, row.id, now)
            uow.record(caller, "users.disabled", "user", row.username, before={"disabled": False},
                       after={"disabled": True, "sessions_ended": ended})
        view = _view(row, org.name)
        uow.commit()
    return view


def list_users(uow_factory: UnitOfWorkFactory, caller: Caller) -> list[UserView]:
    with uow_factory() as uow:
        q = (select(UserRow, OrganizationRow.name).join(OrganizationRow, OrganizationRow.id == UserRow.org_id)
             .order_by(OrganizationRow.name, UserRow.username))
        if not caller.is_city_admin:
            q = q.where(UserRow.org_id == caller.org_id)
        return [_view(row, org) for row, org in uow.session.execute(q)]


def _end_sessions(uow: UnitOfWork, user_id: int, now: datetime) -> int:
    result = uow.session.execute(update(WebSessionRow).where(
        WebSessionRow.user_id == user_id, WebSessionRow.revoked_at.is_(None)).values(revoked_at=now))
    return int(getattr(result, "rowcount", 0) or 0)


def _caller(row: UserRow, org: OrganizationRow) -> Caller:
    return Caller(actor=f"user:{row.username}", org_id=org.id, org_name=org.name, org_kind=OrgKind(org.kind),
                  role=Role(row.role), brand=org.brand)


def sign_in(uow_factory: UnitOfWorkFactory, username: str, password: str) -> SignedIn:
    """A new session for a correct password on an enabled account that is not waiting; otherwise
    AuthenticationFailed with one message for every reason."""
    name = username.strip().lower()[:100]
    with uow_factory(write=True) as uow:
        now = uow.clock()
        found = uow.session.execute(select(UserRow, OrganizationRow).join(
            OrganizationRow, OrganizationRow.id == UserRow.org_id).where(UserRow.username == name)).first()
        if found is None or len(password) > rules.MAX_PASSWORD:
            _verify(_DUMMY_HASH, password[:rules.MAX_PASSWORD])
            log.warning("sign-in refused for unknown user or oversized password (%r)", name)
            raise AuthenticationFailed(FAILED)
        row, org = found
        waiting = _aware(row.locked_until)
        if row.disabled_at is not None or (waiting is not None and waiting > now):
            _verify(_DUMMY_HASH, password)
            why = "disabled" if row.disabled_at is not None else "locked"
            uow.record(_caller(row, org), "users.sign_in_refused", "user", row.username, after={"reason": why})
            uow.commit()
            raise AuthenticationFailed(FAILED)
        if not _verify(row.password_hash, password):
            row.failed_sign_ins += 1
            row.locked_until = rules.locked_until(row.failed_sign_ins, now)
            uow.record(_caller(row, org), "users.sign_in_failed", "user", row.username,
                       after={"consecutive": row.failed_sign_ins,
                              "locked_until": row.locked_until.isoformat() if row.locked_until else None})
            uow.commit()
            raise AuthenticationFailed(FAILED)
        if _hasher.check_needs_rehash(row.password_hash):
            row.password_hash = _hasher.hash(password)
        row.failed_sign_ins, row.locked_until, row.last_sign_in_at = 0, None, now
        secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = now + rules.SESSION_LONGEST
        uow.session.add(WebSessionRow(id_hash=_digest(secret), user_id=row.id, csrf_token=csrf, created_at=now,
                                      last_seen_at=now, expires_at=expires))
        caller = _caller(row, org)
        uow.record(caller, "users.signed_in", "user", row.username, after={"session_expires": expires.isoformat()})
        uow.commit()
    return SignedIn(secret, csrf, caller, expires)


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _session_row(uow: UnitOfWork, digest: str) -> Any:
    """(session, user, organization) for a session cookie's digest, or None."""
    return uow.session.execute(
        select(WebSessionRow, UserRow, OrganizationRow)
        .join(UserRow, UserRow.id == WebSessionRow.user_id)
        .join(OrganizationRow, OrganizationRow.id == UserRow.org_id)
        .where(WebSessionRow.id_hash == digest)).first()


def session(uow_factory: UnitOfWorkFactory, secret: str) -> WebSession | None:
    """The signed-in user behind a session cookie, or None when it is unknown, ended, idle too
    long, past its end, or its user was disabled."""
    if not secret or len(secret) > 100:
        return None
    digest = _digest(secret)
    with uow_factory() as uow:
        now = uow.clock()
        found = _session_row(uow, digest)
        if found is None:
            return None
        row, user, org = found
        seen = _aware(row.last_seen_at) or now
        expires = _aware(row.expires_at) or now
        if (row.revoked_at is not None or user.disabled_at is not None or expires <= now
                or now - seen > rules.SESSION_IDLE):
            return None
        active = WebSession(_caller(user, org), user.username, row.csrf_token)
    if (now - seen).total_seconds() > _SEEN_EVERY:
        with uow_factory(write=True) as uow:
            uow.session.execute(update(WebSessionRow).where(WebSessionRow.id_hash == digest).values(last_seen_at=now))
            uow.commit()
    return active


def sign_out(uow_factory: UnitOfWorkFactory, secret: str) -> None:
    """End the session (idempotent)."""
    digest = _digest(secret)
    with uow_factory(write=True) as uow:
        found = _session_row(uow, digest)
        if found is None or found[0].revoked_at is not None:
            return
        row, user, org = found
        row.revoked_at = uow.clock()
        uow.record(_caller(user, org), "users.signed_out", "user", user.username)
        uow.commit()
