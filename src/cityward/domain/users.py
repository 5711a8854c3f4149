"""People who sign in to the dashboard: what a username and a password must be, and how long an
account waits after repeated failures. No I/O: services/users.py applies it."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta

MIN_PASSWORD = 12
MAX_PASSWORD = 256  # argon2 hashes anything; a cap keeps a hostile form from costing more than that
FAILURES_BEFORE_LOCK = 5
FIRST_LOCK = timedelta(minutes=1)
LONGEST_LOCK = timedelta(minutes=15)
SESSION_IDLE = timedelta(minutes=30)  # a session unused this long is over
SESSION_LONGEST = timedelta(hours=12)  # and none lasts longer than a working day

_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{2,99}")


def username_problem(username: str) -> str | None:
    """Why a username is refused, or None. Lower-case letters, digits and . _ @ -, 3 to 100."""
    if not _USERNAME.fullmatch(username):
        return ("a username is 3 to 100 lower-case letters, digits and . _ @ -, starting with a letter or "
                "digit")
    return None


def password_problem(password: str, username: str) -> str | None:
    """Why a password is refused, or None: length, no control characters, not the username."""
    if len(password) < MIN_PASSWORD:
        return f"a password has at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"a password has at most {MAX_PASSWORD} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        return "a password cannot contain control characters"
    if username and username.lower() in password.lower():
        return "a password cannot contain the username"
    if len(set(password)) < 5:
        return "a password needs more than four different characters"
    return None


def generated_password() -> str:
    """24 URL-safe characters (144 random bits): shown once, never stored."""
    return secrets.token_urlsafe(18)


def locked_until(failures: int, now: datetime) -> datetime | None:
    """After FAILURES_BEFORE_LOCK consecutive failures the account waits one minute, doubling with
    each further failure up to fifteen; None: it may try again at once."""
    if failures < FAILURES_BEFORE_LOCK:
        return None
    wait: timedelta = min(FIRST_LOCK * (2 ** (failures - FAILURES_BEFORE_LOCK)), LONGEST_LOCK)
    return now + wait
