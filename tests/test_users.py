"""Dashboard users: who may create them, password rules, lockout, sessions."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from cityward.adapters.storage.models import AuditEventRow, UserRow
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.bootstrap import Platform
from cityward.domain import users as rules
from cityward.domain.organizations import Caller, Role
from cityward.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound, PermissionDenied
from cityward.services import organizations, users
from tests.conftest import caller_for


def _password() -> str:
    return secrets.token_urlsafe(16)


def _actions(platform: Platform) -> list[str]:
    with platform.uow() as uow:
        return list(uow.session.scalars(select(AuditEventRow.action).order_by(AuditEventRow.seq)))


def test_a_generated_password_is_shown_once_and_stored_as_argon2id(platform: Platform, city: Caller) -> None:
    created = users.create_user(platform.uow, city, "Ops.Lead", "Springfield", "operator")
    assert created.user.username == "ops.lead" and created.password and len(created.password) >= rules.MIN_PASSWORD
    with platform.uow() as uow:
        stored = uow.session.scalars(select(UserRow.password_hash)).one()
    assert stored.startswith("$argon2id$") and created.password not in stored
    assert users.sign_in(platform.uow, "OPS.LEAD", created.password).caller.role is Role.OPERATOR
    assert "users.created" in _actions(platform) and "users.signed_in" in _actions(platform)
    with pytest.raises(Conflict):
        users.create_user(platform.uow, city, "ops.lead", "Springfield")


@pytest.mark.parametrize(("username", "password", "field"), [
    ("ab", None, "username"), ("has space", None, "username"), ("<script>", None, "username"),
    ("anna", "short", "password"), ("anna", "annaannaanna-1", "password"), ("anna", "aaaaaaaaaaaaaa", "password"),
    ("anna", "x" * 300, "password"), ("anna", "tab\tinside-the-password", "password"),
])
def test_bad_usernames_and_passwords_are_refused(platform: Platform, city: Caller, username: str,
                                                 password: str | None, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        users.create_user(platform.uow, city, username, "Springfield", password=password)
    assert [p.field for p in caught.value.problems] == [field]
    assert users.list_users(platform.uow, city) == []


def test_only_admins_manage_users_and_partners_only_their_own(platform: Platform, city: Caller) -> None:
    organizations.create_org(platform.uow, city, "Alpha", "integrator")
    organizations.create_org(platform.uow, city, "Beta", "integrator")
    alpha_admin = caller_for(platform, "Alpha", Role.ADMIN)
    users.create_user(platform.uow, alpha_admin, "alpha.tech", "Alpha", "operator")
    with pytest.raises(PermissionDenied):
        users.create_user(platform.uow, alpha_admin, "beta.tech", "Beta")
    with pytest.raises(PermissionDenied):
        users.create_user(platform.uow, caller_for(platform, "Alpha", Role.OPERATOR), "alpha.two", "Alpha")
    users.create_user(platform.uow, city, "beta.tech", "Beta")
    assert [u.username for u in users.list_users(platform.uow, alpha_admin)] == ["alpha.tech"]
    with pytest.raises(NotFound):
        users.set_password(platform.uow, alpha_admin, "beta.tech")


def test_repeated_failures_make_the_account_wait_and_say_nothing_more(platform: Platform, city: Caller) -> None:
    password = _password()
    users.create_user(platform.uow, city, "anna", "Springfield", password=password)
    messages = set()
    for _ in range(rules.FAILURES_BEFORE_LOCK):
        with pytest.raises(AuthenticationFailed) as caught:
            users.sign_in(platform.uow, "anna", password + "x")
        messages.add(str(caught.value))
    with pytest.raises(AuthenticationFailed) as locked:  # the right password, but the account waits
        users.sign_in(platform.uow, "anna", password)
    with pytest.raises(AuthenticationFailed) as unknown:
        users.sign_in(platform.uow, "nobody", password)
    assert messages == {str(locked.value)} == {str(unknown.value)}  # the same words for every reason
    assert _actions(platform).count("users.sign_in_failed") == rules.FAILURES_BEFORE_LOCK
    assert "users.sign_in_refused" in _actions(platform)
    new = users.set_password(platform.uow, city, "anna")  # an administrator's reset lifts the wait
    assert new.password and users.sign_in(platform.uow, "anna", new.password).caller.actor == "user:anna"


def test_sessions_end_when_signed_out_disabled_or_the_password_changes(platform: Platform, city: Caller) -> None:
    password = _password()
    users.create_user(platform.uow, city, "anna", "Springfield", "admin", password=password)
    first = users.sign_in(platform.uow, "anna", password)
    active = users.session(platform.uow, first.session)
    assert active is not None and active.csrf_token == first.csrf_token and active.caller.is_city_admin
    assert users.session(platform.uow, first.session + "x") is None
    users.sign_out(platform.uow, first.session)
    assert users.session(platform.uow, first.session) is None
    second = users.sign_in(platform.uow, "anna", password)
    users.set_password(platform.uow, city, "anna", _password())
    assert users.session(platform.uow, second.session) is None
    with pytest.raises(AuthenticationFailed):
        users.sign_in(platform.uow, "anna", password)  # the old password no longer works
    users.disable_user(platform.uow, city, "anna")
    assert [u.disabled for u in users.list_users(platform.uow, city)] == [True]


def test_a_session_ends_when_idle_and_at_its_end_however_active(platform: Platform, city: Caller) -> None:
    password = _password()
    users.create_user(platform.uow, city, "anna", "Springfield", password=password)
    start = datetime.now(UTC)
    clock = [start]
    busy = UnitOfWorkFactory(platform.engine, clock=lambda: clock[0])
    kept = users.sign_in(busy, "anna", password)
    while clock[0] < kept.expires_at - timedelta(minutes=20):  # used every 20 minutes all day
        assert users.session(busy, kept.session) is not None
        clock[0] += timedelta(minutes=20)
    clock[0] = kept.expires_at + timedelta(seconds=1)
    assert users.session(busy, kept.session) is None
    signed = users.sign_in(platform.uow, "anna", password)
    later = datetime.now(UTC) + rules.SESSION_IDLE + timedelta(seconds=5)
    assert users.session(UnitOfWorkFactory(platform.engine, clock=lambda: later), signed.session) is None
    soon = datetime.now(UTC) + rules.SESSION_IDLE - timedelta(minutes=1)  # used in time: still alive
    assert users.session(UnitOfWorkFactory(platform.engine, clock=lambda: soon), signed.session) is not None


@given(st.integers(min_value=0, max_value=40))
def test_the_wait_grows_and_is_bounded(failures: int) -> None:
    now = datetime(2026, 11, 26, tzinfo=UTC)
    until = rules.locked_until(failures, now)
    if failures < rules.FAILURES_BEFORE_LOCK:
        assert until is None
    else:
        assert until is not None and rules.FIRST_LOCK <= until - now <= rules.LONGEST_LOCK
        later = rules.locked_until(failures + 1, now)
        assert later is not None and later >= until
