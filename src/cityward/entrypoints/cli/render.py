"""Rich output shared by the commands, and the one place errors become messages.

Which exit code an error gives is the error's own (`CitywardError.exit_code`, cityward.errors); here
it is said: as a line on stderr with its row/field problems, or, under `--json`, as a JSON problem
object (RFC 9457 members, like the API's) on stderr, so stdout only ever carries results.

Output is for people on a terminal and for files and pipes alike: markup is rendered on a terminal
and stripped elsewhere (Rich drops styles when the stream is not a terminal), a cell never carries
markup text (device data is literal; styled cells are `styled(...)` Text), and off a terminal a
table is as wide as its widest row instead of folding ids at 80 columns.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from cityward.errors import (
    AuthenticationFailed,
    CitywardError,
    InvalidInput,
    NotFound,
    NotInitialized,
    PermissionDenied,
    PreconditionFailed,
    StorageUnavailable,
    problem_type,
)

_UNBOUNDED = 100_000  # columns: wide enough for any table we print


class _Console(Console):
    """Off a terminal, printed lines are never cropped to the detected width (see _Table)."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if not self.is_terminal:
            kwargs.setdefault("crop", False)
        super().print(*objects, **kwargs)


class _Table(Table):
    """A table that, printed to a file or pipe, takes the width its content needs: an id split
    over two lines breaks every `grep` and `cut` downstream."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not console.is_terminal and self.width is None and options.max_width >= console.width:
            natural = Measurement.get(console, options.update_width(_UNBOUNDED), self).maximum
            options = options.update_width(max(options.max_width, natural))
        yield from super().__rich_console__(console, options)


out = _Console(highlight=False, soft_wrap=False)
err = _Console(stderr=True, highlight=False)


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
    if isinstance(value, PurePath):  # e.g. a report's output directory
        return str(value)
    return value


def json_text(value: Any) -> str:
    """What print_json prints, for writing to a file."""
    return json.dumps(_plain(value), indent=1, ensure_ascii=False, default=str)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_plain(value), indent=2, ensure_ascii=False) + "\n")


def styled(text: str, style: str) -> Text:
    """A table cell shown in `style` on a terminal and as plain `text` anywhere else."""
    return Text(text, style=style)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    # Text, not str, for the title and every cell: data must never be read as Rich markup.
    t = _Table(title=Text(title) if title else None, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[v if isinstance(v, Text) else Text("" if v is None else str(v)) for v in r])
    return t


_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")


def human(message: str) -> str:
    """A message as a person reads it: Python's errno prefix ("[Errno 2] …") is dropped, in case
    a library's error text reached us untranslated."""
    return _ERRNO.sub("", message)


_LABELS: dict[type[CitywardError], str] = {
    InvalidInput: "bad input", NotFound: "not found", PermissionDenied: "not allowed",
    AuthenticationFailed: "not signed in", NotInitialized: "not initialized",
    PreconditionFailed: "not ready", StorageUnavailable: "database unavailable",
}


def _where(row: int | None, field: str | None, source: str | None) -> str:
    return ", ".join(x for x in (source, f"row {row}" if row is not None else None,
                                 f"field {field}" if field else None) if x)


def show_error(exc: CitywardError) -> None:
    label = next((_LABELS[c] for c in type(exc).__mro__ if c in _LABELS), exc.title.lower())
    err.print(f"[bold red]{label}:[/] {escape(human(exc.message))}")
    if isinstance(exc, InvalidInput) and exc.problems:
        located = [(_where(p.row, p.field, p.source), human(p.message)) for p in exc.problems]
        if any(where for where, _ in located):
            err.print(table("", ["where", "problem"], located))
        else:  # nothing to locate: a list, not a table with an empty column
            for _, problem in located:
                err.print(f"  {problem}", markup=False)
        if exc.more:
            err.print(f"… and {exc.more} more problems not listed")
    if exc.hint:
        err.print(f"[dim]next:[/] {escape(human(exc.hint))}")


def problem(exc: CitywardError) -> dict[str, Any]:
    """`exc` as a problem detail: the members the API uses (type, title, status, detail, hint,
    errors, more) and the exit code the command ends with."""
    body: dict[str, Any] = {"type": problem_type(exc.title), "title": exc.title, "status": exc.http_status,
                            "detail": human(exc.message), "exit_code": exc.exit_code}
    if exc.hint:
        body["hint"] = human(exc.hint)
    if isinstance(exc, InvalidInput) and exc.problems:
        body["errors"] = [{"row": p.row, "field": p.field, **({"source": p.source} if p.source else {}),
                           "message": human(p.message)} for p in exc.problems]
        if exc.more:
            body["more"] = exc.more
    return body


def print_problem(exc: CitywardError) -> None:
    """Under --json: the error as one JSON object on stderr."""
    sys.stderr.write(json.dumps(problem(exc), indent=2, ensure_ascii=False) + "\n")
