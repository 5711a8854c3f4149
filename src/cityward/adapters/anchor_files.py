"""Anchors files: JSON Lines, appended to and never rewritten, outside the database.

A line is written with one `write` on a descriptor opened with O_APPEND and then fsynced, so two
processes anchoring at once interleave whole lines, and an anchor reported written survives a
crash. A line cut short by a crash mid-write is closed with a newline before the next one is added,
and reading names it as a bad line rather than taking it for an anchor.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from cityward.errors import InvalidInput


def append(path: Path, line: str) -> None:
    if "\n" in line or "\r" in line:
        raise ValueError("an anchor is one line")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        lead = b""
        if size and os.pread(fd, 1, size - 1) != b"\n":
            lead = b"\n"
        os.write(fd, lead + line.encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def lines(path: Path, max_line: int) -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank line; a line longer than `max_line` bytes or not
    UTF-8 is refused naming the file and line, before more than `max_line` bytes of it are read."""
    with path.open("rb") as fh:
        number = 0
        while True:
            raw = fh.readline(max_line + 2)
            if not raw:
                return
            number += 1
            if len(raw) > max_line + 1 or (len(raw) == max_line + 1 and not raw.endswith(b"\n")):
                raise InvalidInput(f"{path}, line {number}: longer than {max_line} bytes: not an anchor")
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise InvalidInput(f"{path}, line {number}: not UTF-8 text") from None
            if text:
                yield number, text
