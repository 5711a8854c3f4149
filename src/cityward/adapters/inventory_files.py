"""Streaming readers and writers for inventory files (CSV and JSON).

Memory stays flat whatever the file's size: CSV is read line by line with a cap on a line's
length and a cell's, JSON item by item (ijson) with a cap on one object's size and on nesting
depth, checked on the bytes before ijson sees them (ijson's cost grows with the square of the
depth: 100 KB of brackets took it to 6 GB). Limits: domain/limits.py. A structural fault (not
UTF-8, a line of a gigabyte, wrong delimiter, not a JSON list) stops the read with an error that
names the file and row; a bad value only marks its row (see domain.inventory.parse_row).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, BinaryIO

import ijson

from cityward.domain.inventory import COLUMNS, REQUIRED, neutralize_cell, restore_cell
from cityward.domain.limits import INVENTORY_JSON, MAX_INVENTORY_LINE_BYTES, JsonScanner, csv_problem
from cityward.errors import InvalidInput, Problem

MAX_LINE_BYTES = MAX_INVENTORY_LINE_BYTES  # one CSV line, or one JSON object: a device row is never near this
_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


class FileFormat(StrEnum):
    CSV = "csv"
    JSON = "json"

    @classmethod
    def from_name(cls, name: str, explicit: str | None = None) -> FileFormat:
        if explicit:
            return cls(explicit.lower())
        suffix = Path(name).suffix.lower().lstrip(".")
        if suffix in ("csv", "json"):
            return cls(suffix)
        raise InvalidInput(f"{name}: cannot tell the format from the name; pass --format csv|json")


@dataclass
class InventoryReader:
    """Rows of one file as (row number, raw mapping); `columns` are the columns it sets."""

    source: str
    columns: list[str]
    rows: Iterator[tuple[int, dict[str, Any]]]
    unknown: list[str] = field(default_factory=list)
    counter: _ByteCounter | None = None

    @property
    def bytes_read(self) -> int:
        return self.counter.total if self.counter else 0


class _ByteCounter(io.RawIOBase):
    """Counts bytes for progress, caps how much one JSON object may take and, given a scanner,
    checks the JSON's nesting before the parser reads it."""

    def __init__(self, raw: BinaryIO, source: str, limit: int, scanner: JsonScanner | None = None) -> None:
        self.raw, self.source, self.limit, self.scanner = raw, source, limit, scanner
        self.total = 0
        self.since_mark = 0
        self.row = 0

    def readable(self) -> bool:
        return True

    def mark(self, row: int) -> None:
        self.since_mark, self.row = 0, row

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        if self.scanner is not None:
            self.scanner.feed(data)
        n = len(data)
        buffer[:n] = data
        self.total += n
        self.since_mark += n
        if self.limit and self.since_mark > self.limit + 65536:
            raise InvalidInput(
                f"{self.source}, row {self.row + 1}: object larger than {self.limit} bytes; "
                "a device row is never that large (is this the right file?)"
            )
        return n


@dataclass(frozen=True)
class Layout:
    """The columns a kind of file may have and must have."""

    columns: tuple[str, ...]
    required: tuple[str, ...]


DEVICES = Layout(COLUMNS, REQUIRED)


def open_inventory(
    stream: BinaryIO,
    source: str,
    fmt: FileFormat,
    *,
    ignore_unknown: bool = False,
    layout: Layout = DEVICES,
) -> InventoryReader:
    if fmt is FileFormat.CSV:
        return _open_csv(stream, source, ignore_unknown, layout)
    return _open_json(stream, source, ignore_unknown, layout)


# --- CSV ------------------------------------------------------------------------------------


def _csv_lines(counter: _ByteCounter, source: str, where: list[int]) -> Iterator[str]:
    """Decoded lines, each at most MAX_LINE_BYTES; `where[0]` is the row being read."""
    first = True
    while True:
        chunk = counter.raw.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        counter.total += len(chunk)
        if len(chunk) > MAX_LINE_BYTES:
            raise InvalidInput(
                f"{source}, row {where[0]}: line longer than {MAX_LINE_BYTES} bytes; "
                "nothing was imported (is this a CSV inventory?)"
            )
        if first and chunk.startswith(b"\xef\xbb\xbf"):
            chunk = chunk[3:]
        first = False
        try:
            line = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"{source}, row {where[0]}: not valid UTF-8 (byte 0x{chunk[exc.start]:02x} at "
                f"position {exc.start + 1}); nothing was imported",
                hint="save the file as UTF-8 (in a spreadsheet: CSV UTF-8)",
            ) from None
        if "\x00" in line:
            raise InvalidInput(
                f"{source}, row {where[0]}: contains NUL bytes (a binary file?); nothing was imported"
            )
        yield line


def _open_csv(
    stream: BinaryIO, source: str, ignore_unknown: bool, layout: Layout
) -> InventoryReader:
    counter = _ByteCounter(stream, source, 0)
    where = [1]
    reader = csv.reader(_csv_lines(counter, source, where), strict=True)
    try:
        header = next(reader, None)
        while header == []:
            header = next(reader, None)
    except csv.Error as exc:
        if "field limit" in str(exc):
            raise csv_problem(exc, source, 1) from None
        raise InvalidInput(f"{source}, row 1: not a valid CSV header: {exc}") from None
    if header is None:
        raise InvalidInput(f"{source}: the file is empty; expected a header row naming the columns")
    names = [h.strip() for h in header]
    if len(names) == 1:
        for delim, label in _DELIMITERS.items():
            if delim in names[0]:
                raise InvalidInput(
                    f"{source}, row 1: the header is separated by {label}s; "
                    "cityward inventory files are comma-separated",
                    hint="export the sheet as CSV with commas, or convert the file",
                )
    columns = _check_columns(names, source, ignore_unknown, layout)

    keep = [(i, name) for i, name in enumerate(names) if name in columns]

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        row = 1
        while True:
            where[0] = row + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if "field limit" in str(exc):
                    raise csv_problem(exc, source, row + 1) from None
                raise InvalidInput(f"{source}, row {row + 1}: malformed CSV: {exc}") from None
            row += 1
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if len(record) != len(names):
                yield row, {"__problem__": f"expected {len(names)} fields, found {len(record)}"}
                continue
            yield row, {
                name: restore_cell(record[i]) if record[i][:1] == "'" else record[i]
                for i, name in keep
            }

    unknown = [n for n in names if n not in layout.columns]
    return InventoryReader(source, columns, rows(), unknown, counter)


def _check_columns(
    names: list[str], source: str, ignore_unknown: bool, layout: Layout, row: int = 1
) -> list[str]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for name in names:
        if name in seen:
            problems.append(Problem("column appears twice", row=row, field=name or "(empty)"))
        seen.add(name)
        if name not in layout.columns and not ignore_unknown:
            problems.append(
                Problem(
                    "unknown column (pass --ignore-unknown to skip it)",
                    row=row,
                    field=name or "(empty)",
                )
            )
    missing = [c for c in layout.required if c not in seen]
    for name in missing:
        problems.append(Problem("required column is missing", row=row, field=name))
    if problems:
        raise InvalidInput(f"{source}: the header row does not fit this kind of file", problems)
    return [n for n in names if n in layout.columns]


# --- JSON -----------------------------------------------------------------------------------


def _open_json(
    stream: BinaryIO, source: str, ignore_unknown: bool, layout: Layout
) -> InventoryReader:
    counter = _ByteCounter(stream, source, MAX_LINE_BYTES, JsonScanner(INVENTORY_JSON, source))
    buffered = io.BufferedReader(counter, buffer_size=65536)
    head = buffered.peek(64)[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        raise InvalidInput(f"{source}: the file is empty; expected a JSON list of device objects")
    if head[:1] != b"[":
        found = {b"{": "an object", b'"': "a string"}.get(head[:1], "something else")
        raise InvalidInput(
            f"{source}: expected a JSON list of device objects, found {found}",
            hint='write the devices as [{"id": ...}, {"id": ...}]',
        )
    if buffered.peek(3)[:3] == b"\xef\xbb\xbf":
        buffered.read(3)
    columns: list[str] = []  # union of the keys, in first-seen order; filled while reading
    unknown: list[str] = []

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        row = 0
        try:
            for item in ijson.items(buffered, "item", use_float=True):
                row += 1
                counter.mark(row)
                if not isinstance(item, dict):
                    yield row, {"__problem__": f"expected an object, found {type(item).__name__}"}
                    continue
                bad = [k for k in item if k not in layout.columns]
                for key in bad:
                    if key not in unknown:
                        unknown.append(key)
                for key in item:
                    if key in layout.columns and key not in columns:
                        columns.append(key)
                if bad and not ignore_unknown:
                    yield row, {"__problem__": f"unknown field(s) {', '.join(bad)} "
                                "(pass --ignore-unknown to skip them)"}
                    continue
                yield row, {k: v for k, v in item.items() if k in layout.columns}
        except ijson.JSONError as exc:
            raise InvalidInput(
                f"{source}: not valid JSON after row {row}: {exc}; nothing was imported"
            ) from None
        except UnicodeDecodeError:
            raise InvalidInput(
                f"{source}, row {row + 1}: not valid UTF-8; nothing was imported",
                hint="save the file as UTF-8",
            ) from None

    return InventoryReader(source, columns, rows(), unknown, counter)


# --- writing --------------------------------------------------------------------------------


def write_csv(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in rows:
        cells = []
        for column in COLUMNS:
            value = row[column]
            if value is None:
                cells.append("")
            elif column == "tags":
                cells.append(neutralize_cell(";".join(value)))
            elif isinstance(value, float):
                cells.append(repr(value))
            else:
                cells.append(neutralize_cell(str(value)))
        writer.writerow(cells)
        count += 1
    return count


def write_json(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    out.write("[")
    count = 0
    for row in rows:
        out.write("\n  " if count == 0 else ",\n  ")
        out.write(json.dumps(row, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count
