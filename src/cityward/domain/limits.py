"""Every limit on outside input, named in one place, and the small readers that enforce them.

Parsers build whatever a document describes: 70 KB of nested brackets took the inventory reader to
6 GB, nested YAML exhausted Python's stack, and a single 200 KB CSV cell stopped a feed with a
library error. So nesting depth, the number of values, the length of one field and the size of a
document are checked *before* (or while) a parser builds anything, and a breach is refused as bad
input (`InvalidInput`: exit 2, HTTP 422) naming the limit and where it was crossed. docs/inventory.md,
docs/policy.md and docs/vulnerabilities.md list the limits of each reader.

No I/O here: bytes in, a parsed value (or the refusal) out. `JsonScanner` is fed chunks, so a stream
(an inventory upload, a request body) is checked as it arrives and never held whole for the check.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import yaml

from cityward.errors import InvalidInput, Problem

# --- sizes of whole inputs ------------------------------------------------------------------------
MAX_ADVISORY_BYTES = 64 << 20  # one advisory, catalog or feed, uncompressed (adapters/advisories/sources.py)
MAX_SBOM_BYTES = 50 << 20  # one CycloneDX SBOM, JSON or XML
MAX_POLICY_BYTES = 1 << 20  # one policy file
MAX_API_JSON_BYTES = 1 << 20  # a JSON request body of any endpoint but the uploads
MAX_INVENTORY_LINE_BYTES = 1 << 20  # one CSV line, or one JSON device object, of an inventory file

# --- JSON -----------------------------------------------------------------------------------------
# Depth counts arrays and objects: `[{"tags": ["a"]}]` is 3 deep. Values count every array element
# and object member, plus one per empty array or object (commas plus containers, exactly): about
# the number of Python objects a parser would make. Field lengths are of one string as written
# (bytes, escapes included).
INVENTORY_JSON_DEPTH = 16  # the list, a device, its tags: 3
API_JSON_DEPTH = 32  # request bodies: a waiver's selector is 2
DEVICE_JSON_DEPTH = 32  # MQTT and HTTP device messages (docs/protocol.md)
DOCUMENT_JSON_DEPTH = 160  # advisories, SBOMs (64 nested components are 130), configs
DOCUMENT_JSON_VALUES = 2_000_000  # a 100,000-component SBOM is about 1.2 million
ADVISORY_FIELD_BYTES = 1 << 20  # one string in an advisory: a CVE description is a few KB
STORED_TEXT_CHARS = 2000  # an advisory's free text cityward keeps (remediation details), cut with a marker
TRUNCATED = "…[truncated]"  # ends every text cityward cut to fit

# --- YAML (policies) ------------------------------------------------------------------------------
POLICY_YAML_DEPTH = 32  # a policy is 4 deep (rules, a rule, controls, a list of ids)
POLICY_YAML_NODES = 200_000  # scalars, sequences and mappings
POLICY_YAML_ALIASES = 100  # `*anchor` references: a policy needs none, billion laughs needs thousands

# --- CSV ------------------------------------------------------------------------------------------
CSV_FIELD_CHARS = 131_072  # one cell: Python's csv default limit, kept (it is process-wide), named here
CSV_LINE_CHARS = 1 << 20  # one line of a feed or handover file (a KEV line is under 2 KB)

# --- XML (CycloneDX) ------------------------------------------------------------------------------
XML_DEPTH = 200  # elements inside elements (64 nested components are 130)
XML_ELEMENTS = 1_500_000  # a 100,000-component SBOM is about 900,000


@dataclass(frozen=True)
class JsonLimits:
    """The limits one JSON reader enforces; 0 means no limit of that kind (the size is then bounded
    by the reader, e.g. one inventory object or one request body)."""

    depth: int
    values: int = 0
    field_bytes: int = 0


INVENTORY_JSON = JsonLimits(INVENTORY_JSON_DEPTH)
API_JSON = JsonLimits(API_JSON_DEPTH)
DEVICE_JSON = JsonLimits(DEVICE_JSON_DEPTH)
DOCUMENT_JSON = JsonLimits(DOCUMENT_JSON_DEPTH, DOCUMENT_JSON_VALUES)
ADVISORY_JSON = JsonLimits(DOCUMENT_JSON_DEPTH, DOCUMENT_JSON_VALUES, ADVISORY_FIELD_BYTES)


class LimitExceeded(InvalidInput):
    """Input over one of the limits above; `limit` names it (e.g. "nesting depth 16")."""

    def __init__(self, source: str, limit: str, where: str, found: str = "") -> None:
        detail = f"{where}: {found}" if found else where
        super().__init__(f"{source}: over the limit of {limit} ({detail}); refused, nothing was stored",
                         [Problem(f"over the limit of {limit}", field=where, source=source)],
                         hint="this is not a file cityward writes or reads; check its source")
        self.limit, self.where = limit, where


# Inside a string: everything up to the closing quote, or to a backslash ending the chunk.
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a whole string, quotes included
_OPEN = frozenset(b"[{")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_SLICE = 1 << 20  # a whole document is scanned in slices, so the scan's own copies stay small


class JsonScanner:
    """Nesting depth, values and string lengths of JSON text, checked chunk by chunk without
    parsing: strings are cut out by one regular expression and the rest is counted with
    `bytes.count`, so the work runs at C speed and only what is near a limit is walked in Python.

    Only brackets, commas, quotes and backslashes are looked at, so text that is not JSON is never
    an error here (the parser says what is wrong with it); valid JSON is measured exactly."""

    def __init__(self, limits: JsonLimits, source: str) -> None:
        self.limits, self.source = limits, source
        self.depth = self.values = 0
        self.offset = 0  # bytes seen before the current chunk
        self._in_string = self._escape = False
        self._string_bytes = 0

    def feed(self, chunk: bytes) -> None:
        for start in range(0, len(chunk), _SLICE):
            self._feed(chunk[start:start + _SLICE] if len(chunk) > _SLICE else chunk)
            self.offset += min(_SLICE, len(chunk) - start)

    def _feed(self, chunk: bytes) -> None:
        pos, n = 0, len(chunk)
        if self._escape and n:  # the byte a backslash ending the last chunk escapes
            pos, self._escape = 1, False
            self._grow(1, 0)
        if self._in_string and pos < n:
            end = _STRING_BODY.match(chunk, pos).end()  # type: ignore[union-attr]  # always matches
            self._grow(end - pos, end)
            if end >= n:
                return
            if chunk[end] == 0x5C:  # a backslash ending the chunk
                self._escape = True
                self._grow(1, end)
                return
            self._in_string, pos = False, end + 1
        rest = chunk[pos:] if pos else chunk
        if self.limits.field_bytes and len(rest) > self.limits.field_bytes:
            longest = max(map(len, _STRING.findall(rest)), default=0) - 2
            if longest > self.limits.field_bytes:
                self._fail(f"{self.limits.field_bytes:,} bytes in one string", pos)
        outside = _STRING.sub(b"", rest)
        quote = outside.find(b'"')  # a string this chunk does not finish: the rest is inside it
        self._structure(outside if quote < 0 else outside[:quote], pos)
        if quote >= 0:
            tail = outside[quote + 1:]
            self._in_string, self._string_bytes = True, 0
            self._grow(len(tail), n)
            backslashes = len(tail) - len(tail.rstrip(b"\\"))
            self._escape = backslashes % 2 == 1

    def _grow(self, n: int, at: int) -> None:
        self._string_bytes += n
        if self.limits.field_bytes and self._string_bytes > self.limits.field_bytes:
            self._fail(f"{self.limits.field_bytes:,} bytes in one string", at)

    def _structure(self, segment: bytes, at: int) -> None:
        opens = segment.count(b"[") + segment.count(b"{")
        if self.limits.values:
            self.values += segment.count(b",") + opens
            if self.values > self.limits.values:
                self._fail(f"{self.limits.values:,} values", at)
        closes = segment.count(b"]") + segment.count(b"}")
        if self.depth + opens <= self.limits.depth:  # cannot cross the limit inside this segment
            self.depth += opens - closes
            return
        for b in segment.translate(None, _NOT_BRACKET):  # near the limit: bracket by bracket
            self.depth += 1 if b in _OPEN else -1
            if self.depth > self.limits.depth:
                self._fail(f"nesting depth {self.limits.depth}", at)

    def _fail(self, limit: str, at: int) -> None:
        # `at`: where in the current chunk the check ran (the chunk's start for counted limits)
        raise LimitExceeded(self.source, limit, f"near byte {self.offset + at:,}")


def check_json(data: bytes, limits: JsonLimits, source: str) -> JsonScanner:
    """Refuse `data` if it is over `limits`."""
    scanner = JsonScanner(limits, source)
    scanner.feed(data)
    return scanner


def load_json(data: bytes | str, limits: JsonLimits, source: str) -> Any:
    """Parse JSON within `limits`: checked first, then parsed by msgspec straight from the UTF-8
    bytes (no second copy of the text, which for a document of emoji and ASCII would be four times
    its size). Strict RFC 8259: NaN, Infinity and lone surrogates are malformed. Every failure is
    InvalidInput naming `source` and the line and column, or the limit."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    check_json(raw, limits, source)
    try:
        return msgspec.json.decode(raw)
    except UnicodeDecodeError:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        raise InvalidInput(f"{source}: not UTF-8 text") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        reason = str(exc).removeprefix("JSON is malformed: ")
        found = _AT_BYTE.search(reason)
        at = int(found.group(1)) if found else len(raw)
        reason = _AT_BYTE.sub("", reason).strip().replace("Input data was truncated", "the document ends early")
        line = raw.count(b"\n", 0, at) + 1
        column = at - (raw.rfind(b"\n", 0, at) + 1) + 1
        raise InvalidInput(f"{source}: malformed JSON at line {line}, column {column}: {reason}") from None
    except RecursionError:  # cannot happen within the depth limit; never a traceback if it does
        raise LimitExceeded(source, f"nesting depth {limits.depth}", "the document") from None


_AT_BYTE = re.compile(r"\s*\(byte (\d+)\)")


def long_strings(value: Any, limit: int, path: str = "") -> Iterator[tuple[str, int]]:
    """(JSON pointer, length) of every string longer than `limit` characters in a parsed document,
    keys included; iterative, so a deep document cannot exhaust the stack."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if len(item) > limit:
                yield where or "/", len(item)
        elif isinstance(item, dict):
            for k, v in item.items():
                if len(k) > limit:
                    yield f"{where}/{k[:40]}…", len(k)
                stack.append((f"{where}/{k}", v))
        elif isinstance(item, list):
            stack.extend((f"{where}/{i}", v) for i, v in enumerate(item))


def clip(text: str | None, chars: int) -> str | None:
    """`text` cut to `chars` characters, ending with the TRUNCATED marker when it was cut."""
    if text is None or len(text) <= chars:
        return text
    return text[: chars - len(TRUNCATED)] + TRUNCATED


# --- YAML -----------------------------------------------------------------------------------------

_LOADER: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str | bytes, source: str, *, depth: int = POLICY_YAML_DEPTH,
              nodes: int = POLICY_YAML_NODES, aliases: int = POLICY_YAML_ALIASES) -> Any:
    """`yaml.safe_load` within limits: the event stream (a flat state machine, no recursion) is
    walked first counting depth, nodes and aliases, and only then is the document built."""
    level = count = refs = 0
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, yaml.CollectionStartEvent):
                level += 1
                if level > depth:
                    _yaml_limit(source, f"nesting depth {depth}", event)
            elif isinstance(event, yaml.CollectionEndEvent):
                level -= 1
            elif isinstance(event, yaml.AliasEvent):
                refs += 1
                if refs > aliases:
                    _yaml_limit(source, f"{aliases} aliases", event)
            if isinstance(event, yaml.NodeEvent):
                count += 1
                if count > nodes:
                    _yaml_limit(source, f"{nodes:,} nodes", event)
        return yaml.load(text, Loader=_LOADER)  # noqa: S506 -- the safe loader (C or Python)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if "nesting depth" in str(exc.problem):  # libyaml's own cap (1,000) met while it looks ahead
            raise LimitExceeded(source, f"nesting depth {depth}", where.removeprefix(" at ")) from None
        raise InvalidInput(f"{source}: not valid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:  # cannot happen within the depth limit; never a traceback if it does
        raise LimitExceeded(source, f"nesting depth {depth}", "the document") from None


def _yaml_limit(source: str, limit: str, event: Any) -> None:
    mark = event.start_mark
    raise LimitExceeded(source, limit, f"line {mark.line + 1}, column {mark.column + 1}" if mark else "the document")


# --- CSV ------------------------------------------------------------------------------------------

T = TypeVar("T")


def text_lines(text: str, source: str, start: int = 0, line: int = 1) -> Iterator[str]:
    """The lines of `text` from offset `start` (line number `line`), endings kept, one at a time:
    what csv.reader reads, without io.StringIO's copy (four bytes a character) or splitlines' list,
    and never a line over CSV_LINE_CHARS (a 60 MB line would be copied whole before the csv module
    refused its first cell)."""
    size = len(text)
    while start < size:
        end = text.find("\n", start, start + CSV_LINE_CHARS + 1)
        if end < 0:
            if size - start > CSV_LINE_CHARS:
                raise LimitExceeded(source, f"{CSV_LINE_CHARS:,} characters in one line", f"line {line}")
            end = size
        else:
            end += 1
        yield text[start:end]
        start, line = end, line + 1


def first_line(text: str, source: str) -> str:
    """The first line of `text`, without its ending; over CSV_LINE_CHARS is refused."""
    return next(text_lines(text, source), "").removesuffix("\n")


def csv_guarded(rows: Iterable[T], source: str, first_row: int) -> Iterator[T]:
    """The rows of a csv reader, its errors (a cell over the field limit, a stray quote) turned
    into InvalidInput naming the row."""
    row, it = first_row, iter(rows)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except csv.Error as exc:
            raise csv_problem(exc, source, row) from None
        yield item
        row += 1


def csv_problem(exc: Exception, source: str, row: int) -> InvalidInput:
    """csv.Error as bad input naming the row; a cell over the field limit names that limit."""
    if "field larger than field limit" in str(exc):
        return LimitExceeded(source, f"{CSV_FIELD_CHARS:,} characters in one field", f"row {row}")
    return InvalidInput(f"{source}, row {row}: malformed CSV: {exc}; nothing was imported",
                        [Problem(f"malformed CSV: {exc}", row=row, source=source)])
