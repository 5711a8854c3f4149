"""Rich output shared by the commands, and the one place errors become messages and exit codes."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from enum import Enum
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cityward.errors import (
    AuthenticationFailed,
    CitywardError,
    InvalidInput,
    NotInitialized,
    PermissionDenied,
    StorageUnavailable,
)

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def json_text(value: Any) -> str:
    """What print_json prints, for writing to a file."""
    return json.dumps(_plain(value), indent=1, ensure_ascii=False, default=str)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_plain(value), indent=2, ensure_ascii=False) + "\n")


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        # Text, not str: device data must never be read as Rich markup (a styled Text is kept).
        t.add_row(*[v if isinstance(v, Text) else Text("" if v is None else str(v)) for v in r])
    return t


def exit_code(exc: CitywardError) -> int:
    return EXIT_USAGE if isinstance(exc, InvalidInput) else EXIT_FAILED


def show_error(exc: CitywardError) -> None:
    label = {
        InvalidInput: "bad input", PermissionDenied: "not allowed",
        AuthenticationFailed: "not signed in", NotInitialized: "not initialized",
        StorageUnavailable: "database unavailable",
    }.get(type(exc), "error")
    err.print(f"[bold red]{label}:[/] {escape(exc.message)}")
    if isinstance(exc, InvalidInput) and exc.problems:
        err.print(table("", ["where", "problem"], (
            (", ".join(x for x in (p.source, f"row {p.row}" if p.row is not None else None,
                                   f"field {p.field}" if p.field else None) if x), p.message)
            for p in exc.problems
        )))
        if exc.more:
            err.print(f"… and {exc.more} more problems not listed")
    if exc.hint:
        err.print(f"[dim]next:[/] {escape(exc.hint)}")
