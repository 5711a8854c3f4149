"""Progress of a long CLI step, shown the way the output is read.

On a terminal a step is a Rich spinner (or bar, once it has a count) that redraws in place and
leaves one `✓ label (3.2 s)` line behind. Written to a file or a pipe, redraws would be control
codes and carriage returns nobody can read, and a spinner prints nothing at all, so the same step
is plain lines instead: one when it starts, one every few seconds while its count or message
changes (or to say it is still working), and one with its time when it ends. Either way no step
is silent, and its time is on record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

PLAIN_EVERY = 2.0  # seconds between plain progress lines while something changes
PLAIN_QUIET = 10.0  # a plain "still working" line when nothing changed for this long


class Step:
    """A running step: `update` says what it is doing now, `count` how far it got."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.note = ""
        self.done: int | None = None
        self.total: int | None = None
        self._lock = threading.Lock()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(self, note: str) -> None:
        with self._lock:
            self.note = note
        self._changed()

    def count(self, done: int, total: int | None = None) -> None:
        with self._lock:
            self.done = done
            if total is not None:
                self.total = total
        self._changed()

    def state(self) -> str:
        """What a plain progress line says: the count, then the message."""
        with self._lock:
            parts = []
            if self.done is not None:
                parts.append(f"{self.done:,}" + (f" of {self.total:,}" if self.total is not None else ""))
            if self.note:
                parts.append(self.note)
            return " · ".join(parts)

    def say(self, line: str) -> None:
        """A line of its own about the step (printed above a live display)."""

    def _changed(self) -> None:
        """Hook for the display."""


class _LiveStep(Step):
    def __init__(self, label: str, bar: Progress, task: TaskID, *, has_bar: bool) -> None:
        super().__init__(label)
        self._bar, self._task, self._has_bar = bar, task, has_bar

    def _changed(self) -> None:
        with self._lock:
            done, total, note = self.done, self.total, self.note
        # Without a bar (no total when the step began) the count is part of the note.
        shown = note if self._has_bar else self.state()
        self._bar.update(self._task, completed=done or 0, total=total, note=escape(shown))

    def say(self, line: str) -> None:
        self._bar.console.print(line, markup=False, highlight=False)


class _PlainStep(Step):
    def __init__(self, label: str, console: Console) -> None:
        super().__init__(label)
        self._console = console
        self._stop = threading.Event()
        self._last_line = ""
        self._last_at = time.monotonic()
        self._ticker = threading.Thread(target=self._tick, name="cityward-progress", daemon=True)

    def begin(self) -> None:
        self._say(f"{self.label}…")
        self._ticker.start()

    def end(self, failed: bool) -> None:
        self._stop.set()
        self._ticker.join()
        result = "failed" if failed else "done"
        state = self.state()
        self._say(f"{self.label}: {result} in {self.elapsed:.1f} s" + (f" ({state})" if state else ""))

    def _tick(self) -> None:
        while not self._stop.wait(PLAIN_EVERY):
            state = self.state()
            quiet = time.monotonic() - self._last_at
            if state and state != self._last_line:
                self._last_line = state
                self._say(f"  {self.label}: {state} ({self.elapsed:.0f} s)")
            elif quiet >= PLAIN_QUIET:
                self._say(f"  {self.label}: still working ({self.elapsed:.0f} s)")

    def say(self, line: str) -> None:
        self._say(f"  {line} ({self.elapsed:.0f} s)")

    def _say(self, line: str) -> None:
        self._last_at = time.monotonic()
        # No markup, no highlighting, no wrapping: one line as written, whatever it contains.
        self._console.print(line, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def step(label: str, console: Console, *, total: int | None = None) -> Iterator[Step]:
    """Show `label` while the block runs: live on a terminal, plain lines otherwise."""
    if not console.is_terminal:
        plain = _PlainStep(label, console)
        if total is not None:
            plain.total = total
        plain.begin()
        failed = True
        try:
            yield plain
            failed = False
        finally:
            plain.end(failed)
        return
    columns: list[ProgressColumn | str] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn("[dim]{task.fields[note]}"), TimeElapsedColumn()]
    ok = False
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(escape(label), total=total, note="")
        live = _LiveStep(label, bar, task, has_bar=total is not None)
        try:
            yield live
            ok = True
        finally:
            bar.stop()  # the line below stays, the bar goes
            mark = "[green]✓[/]" if ok else "[red]✗[/]"
            console.print(f"{mark} {escape(label)} [dim]({live.elapsed:.1f} s)[/]", highlight=False)
