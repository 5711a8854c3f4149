"""API tokens expire: 90 days by default, a chosen lifetime within bounds, never only for a city admin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityward.adapters.storage.models import TokenRow
from cityward.bootstrap import Platform
from cityward.domain import tokens as rules
from cityward.domain.organizations import Caller, Role
from cityward.errors import InvalidInput, PermissionDenied
from cityward.services import auditlog, organizations, tokens
from tests.conftest import caller_for

_UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}


@given(st.integers(0, 999_999), st.sampled_from(sorted(_UNITS)), st.booleans())
def test_a_duration_is_a_number_and_a_unit(n: int, unit: str, upper: bool) -> None:
    assert rules.parse_duration(f" {n}{unit.upper() if upper else unit} ") == n * _UNITS[unit]


@given(st.text(max_size=12))
def test_anything_else_is_refused_naming_the_forms(text: str) -> None:
    try:
        parsed = rules.parse_duration(text)
    except InvalidInput as exc:
        assert "e.g. 90d, 12h" in exc.message
    else:  # only what the grammar allows gets through
        stripped = text.strip().lower()
        assert stripped[:-1].isascii() and stripped[:-1].isdigit() and stripped[-1] in _UNITS
        assert parsed >= timedelta(0)


@pytest.mark.parametrize("text", ["", "d", "90", "1.5d", "-3d", "3 d", "3y", "1234567d", "٣d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidInput):
        rules.parse_duration(text)


def _within(at: datetime | None, expected: datetime) -> bool:
    assert at is not None
    return abs(at - expected) < timedelta(minutes=1)


def test_a_token_lives_90_days_unless_asked_otherwise(platform: Platform, city: Caller) -> None:
    now = datetime.now(UTC)
    plain = tokens.create_token(platform.uow, city, "Springfield", "ops")
    assert _within(plain.view.expires_at, now + timedelta(days=90)) and not plain.view.expired
    short = tokens.create_token(platform.uow, city, "Springfield", "ci job", expires_in=timedelta(hours=12))
    assert _within(short.view.expires_at, now + timedelta(hours=12))
    first = next(t for t in tokens.list_tokens(platform.uow, city) if t.name == "first admin")
    assert _within(first.expires_at, now + timedelta(days=90))  # `init`'s token is no exception


def test_only_a_city_admin_makes_a_token_that_never_expires_and_it_is_audited(
        platform: Platform, city: Caller) -> None:
    organizations.create_org(platform.uow, city, "Alpha", "integrator")
    forever = tokens.create_token(platform.uow, city, "Alpha", "monitoring", no_expiry=True)
    assert forever.view.expires_at is None
    event = auditlog.list_events(platform.uow, city, action="tokens.created", target=forever.view.id)[0]
    assert event.after["no_expiry"] is True and event.after["expires_at"] is None

    alpha_admin = caller_for(platform, "Alpha", Role.ADMIN)
    city_operator = Caller(actor="t", org_id=city.org_id, org_name=city.org_name, org_kind=city.org_kind,
                           role=Role.OPERATOR)
    before = len(tokens.list_tokens(platform.uow, city))
    for who in (alpha_admin, city_operator):
        with pytest.raises(PermissionDenied, match="never expires"):
            tokens.create_token(platform.uow, who, who.org_name, "forever", no_expiry=True)
    with pytest.raises(InvalidInput, match="not both"):
        tokens.create_token(platform.uow, city, "Alpha", "x", expires_in=timedelta(days=1), no_expiry=True)
    assert len(tokens.list_tokens(platform.uow, city)) == before  # nothing half-made


def test_lifetimes_are_bounded(platform: Platform, city: Caller) -> None:
    organizations.create_org(platform.uow, city, "Alpha", "integrator")
    alpha_admin = caller_for(platform, "Alpha", Role.ADMIN)
    year = tokens.create_token(platform.uow, alpha_admin, "Alpha", "year", expires_in=timedelta(days=365))
    assert year.view.expires_at
    with pytest.raises(InvalidInput, match="at most 365 days"):
        tokens.create_token(platform.uow, alpha_admin, "Alpha", "two years", expires_in=timedelta(days=366))
    assert tokens.create_token(platform.uow, city, "Alpha", "long", expires_in=timedelta(days=3650)).view.expires_at
    with pytest.raises(InvalidInput, match="at most 3650 days"):
        tokens.create_token(platform.uow, city, "Alpha", "longer", expires_in=timedelta(days=3651))
    for bad in (timedelta(0), timedelta(days=-1)):
        with pytest.raises(InvalidInput, match="positive"):
            tokens.create_token(platform.uow, city, "Alpha", "none", expires_in=bad)


def test_an_expired_token_says_so_and_when(platform: Platform, city: Caller) -> None:
    issued = tokens.create_token(platform.uow, city, "Springfield", "old", expires_in=timedelta(days=1))
    assert tokens.authenticate(platform.uow, issued.secret).org_name == "Springfield"
    lapsed = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    with platform.uow(write=True) as uow:
        uow.session.get_one(TokenRow, issued.view.id).expires_at = lapsed
        uow.commit()
    with pytest.raises(tokens.TokenExpired, match="token expired on 2026-01-02 03:04 UTC"):
        tokens.authenticate(platform.uow, issued.secret)
    listed = next(t for t in tokens.list_tokens(platform.uow, city) if t.id == issued.view.id)
    assert listed.expired and listed.expires_at == lapsed
    # Without the secret nothing is told: the same message as for any bad token.
    with pytest.raises(tokens.AuthenticationFailed, match="invalid, expired or revoked") as refused:
        tokens.authenticate(platform.uow, f"cw_{issued.view.id}_{'A' * 43}")
    assert not isinstance(refused.value, tokens.TokenExpired)
