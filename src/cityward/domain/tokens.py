"""API token lifetimes: every token expires unless a city administrator decides otherwise.

A leaked token that nobody remembers is the one that hurts: so a token lives 90 days unless its
creator asks for another lifetime, a partner's tokens live at most a year, and only a city
administrator may create one that never expires (the choice is written in the audit log with the
token). No I/O: services/tokens.py applies it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from cityward.domain.organizations import Caller
from cityward.errors import InvalidInput, PermissionDenied

DEFAULT_LIFETIME = timedelta(days=90)
PARTNER_LONGEST = timedelta(days=365)  # beyond a year is the city administrator's call
LONGEST = timedelta(days=3650)

_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}
_DURATION = re.compile(r"([0-9]{1,6})([wdhm])")


def parse_duration(text: str) -> timedelta:
    """'90d', '12h', '2w', '45m' → a duration; anything else is refused naming the forms accepted."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None:
        raise InvalidInput(f"{text!r} is not a duration; use a whole number and a unit, e.g. 90d, 12h, 2w or 45m")
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


def describe(lifetime: timedelta) -> str:
    """The longest whole unit that states `lifetime` exactly ('90 days', '12 hours')."""
    seconds = int(lifetime.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'' if n == 1 else 's'}"
    return f"{seconds} seconds"


def expiry(now: datetime, caller: Caller, lifetime: timedelta | None, *, no_expiry: bool = False) -> datetime | None:
    """When a token `caller` creates now stops working; None only for a city administrator's
    explicit `no_expiry`. Without a lifetime it is DEFAULT_LIFETIME."""
    if no_expiry:
        if lifetime is not None:
            raise InvalidInput("a token either expires after a lifetime or never: give one of the two, not both")
        if not caller.is_city_admin:
            raise PermissionDenied("only a city administrator may create a token that never expires",
                                   hint=f"give it a lifetime of at most {describe(PARTNER_LONGEST)}")
        return None
    chosen = DEFAULT_LIFETIME if lifetime is None else lifetime
    if chosen <= timedelta(0):
        raise InvalidInput("a token's lifetime must be positive")
    longest = LONGEST if caller.is_city_admin else PARTNER_LONGEST
    if chosen > longest:
        raise InvalidInput(f"a token's lifetime is at most {describe(longest)}, not {describe(chosen)}",
                           hint="only a city administrator may create a token that never expires (--no-expiry)")
    return now + chosen


def expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and expires_at <= now
