"""cityward's error tree.

    CitywardError
    ├── InvalidInput          bad usage or bad data (CLI exit 2, HTTP 422); carries row/field problems
    ├── AuthenticationFailed  no or bad credentials (HTTP 401)
    ├── PermissionDenied      the caller's role or scope forbids it (CLI exit 1, HTTP 403)
    ├── NotFound              the thing does not exist *for this caller* (HTTP 404)
    ├── Conflict              the change contradicts stored state (HTTP 409)
    ├── NotInitialized        `cityward init` has not run (CLI exit 1, HTTP 503)
    └── StorageUnavailable    the database cannot be reached (CLI exit 1, HTTP 503)

Adapters translate library errors into these at their boundary; the CLI and the API each map
them to exit codes and problem details in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


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


class CitywardError(Exception):
    """Base of every error cityward raises on purpose."""

    title = "cityward error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InvalidInput(CitywardError):
    title = "Invalid input"

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


class PermissionDenied(CitywardError):
    title = "Permission denied"


class NotFound(CitywardError):
    title = "Not found"


class Conflict(CitywardError):
    title = "Conflict"


class NotInitialized(CitywardError):
    title = "Not initialized"


class StorageUnavailable(CitywardError):
    title = "Storage unavailable"
