"""Progress of long CLI steps: live on a terminal, plain lines (no control codes) in a file."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from cityward.entrypoints.cli import progress
from cityward.entrypoints.cli.progress import step

LABEL = "devices reporting their state, a label longer than the console is wide"


def _file_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=40, highlight=False), buffer


def test_a_step_in_a_file_is_plain_lines_with_its_count_and_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.05)
    console, buffer = _file_console()
    with step(LABEL, console, total=10) as s:
        s.count(3)
        time.sleep(0.3)
        s.say("rollout 1: running · [bold]3[/] of 10 done")
        s.count(10)
    text = buffer.getvalue()
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    assert lines[0] == f"{LABEL}…"  # one line however narrow the console: never wrapped
    assert f"  {LABEL}: 3 of 10 (0 s)" in lines
    assert "  rollout 1: running · [bold]3[/] of 10 done (0 s)" in lines  # device text, not markup
    last = lines[-1]
    assert last.startswith(f"{LABEL}: done in ") and last.endswith(" s (10 of 10)")


def test_a_quiet_step_in_a_file_says_it_is_still_working(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.05)
    monkeypatch.setattr(progress, "PLAIN_QUIET", 0.1)
    console, buffer = _file_console()
    with step("auditing", console):
        time.sleep(0.4)
    assert "  auditing: still working (0 s)" in buffer.getvalue().splitlines()


def test_a_failing_step_says_so_and_lets_the_error_through() -> None:
    console, buffer = _file_console()
    with pytest.raises(RuntimeError), step("importing", console):
        raise RuntimeError("broken")
    assert buffer.getvalue().splitlines()[-1].startswith("importing: failed in ")


def test_on_a_terminal_a_step_leaves_one_line_with_its_time() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    with step("bringing the city online", console, total=5) as s:
        s.count(5)
        s.update("simulator ready")
    text = buffer.getvalue()
    assert "✓" in text and "bringing the city online" in text and " s)" in text
