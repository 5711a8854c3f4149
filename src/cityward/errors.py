"""cityward's error tree.

    CitywardError             anything else that failed (CLI exit 1, HTTP 500)
    ├── InvalidInput          bad usage or bad data (CLI exit 2, HTTP 422); carries row/field problems
    ├── NotFound              the thing does not exist *for this caller* (CLI exit 2, HTTP 404)
    ├── AuthenticationFailed  no or bad credentials (CLI exit 1, HTTP 401)
    ├── PermissionDenied      the caller's role or scope forbids it (CLI exit 1, HTTP 403)
    ├── Conflict              the change contradicts stored state (CLI exit 1, HTTP 409)
    ├── PreconditionFailed    a step this needs has not happened yet, e.g. no audit (CLI exit 1, HTTP 409)
    ├── NotInitialized        `cityward init` has not run (CLI exit 1, HTTP 503)
    └── StorageUnavailable    the database cannot be reached (CLI exit 1, HTTP 503)

Each class carries its `exit_code` and `http_status`: the one table both shells read, so the CLI
and the API cannot disagree about what kind of failure something is. The rule: the caller's own
mistake (bad input, a name that does not exist) exits 2; refused or failed exits 1. Adapters
translate library errors into these at their boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, located as precisely as we can."""

    message: str
    row: int | None = None
    field: str | None = None
    source: str | None = None

    def __str__(self) -> str:
        where = []
        if self.source:
            where.append(self.source)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field:
            where.append(f"field {self.field}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


def problem_type(title: str) -> str:
    """The `type` of a problem detail (RFC 9457) titled `title`, the same from the API and the CLI."""
    return "urn:cityward:problem:" + title.lower().replace(" ", "-")


class CitywardError(Exception):
    """Base of every error cityward raises on purpose."""

    title: ClassVar[str] = "cityward error"
    exit_code: ClassVar[int] = 1  # the CLI's exit status (see the tree above)
    http_status: ClassVar[int] = 500  # the API's response status

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InvalidInput(CitywardError):
    title = "Invalid input"
    exit_code = 2
    http_status = 422

    def __init__(
        self,
        message: str,
        problems: list[Problem] | None = None,
        *,
        more: int = 0,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems or []
        self.more = more  # problems found but not listed, to keep reports bounded


class AuthenticationFailed(CitywardError):
    title = "Authentication required"
    exit_code = 1
    http_status = 401


class PermissionDenied(CitywardError):
    title = "Permission denied"
    exit_code = 1
    http_status = 403


class NotFound(CitywardError):
    title = "Not found"
    exit_code = 2
    http_status = 404


class Conflict(CitywardError):
    title = "Conflict"
    exit_code = 1
    http_status = 409


class PreconditionFailed(CitywardError):
    """Refused until something else has been done first; the message says what (and the hint how)."""

    title = "Precondition failed"
    exit_code = 1
    http_status = 409


class NotInitialized(CitywardError):
    title = "Not initialized"
    exit_code = 1
    http_status = 503


class StorageUnavailable(CitywardError):
    title = "Storage unavailable"
    exit_code = 1
    http_status = 503
