"""Advisory version ranges in one form: a union of intervals over sortable version keys.

Advisories state affected versions as vers URIs, CVE JSON 5 `versions[]` items, CSAF
`product_version_range` strings and vendor prose ("V5.5.0 build 170725 and earlier"). The matcher
needs one shape it can evaluate once per *distinct* firmware string, or push down to polars/SQL as
plain string comparisons of `sort_key`s. Every parser returns a `VersionRange` or raises
`RangeError`; none guesses: text it cannot read exactly is refused, with the reason.

Keys compare with plain byte order (polars, SQLite, `COLLATE "C"` in PostgreSQL); a locale
collation that ignores punctuation would break the semver encoding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal, cast
from urllib.parse import unquote

from univers.version_constraint import VersionConstraint
from univers.version_range import RANGE_CLASS_BY_SCHEMES
from univers.versions import SemverVersion
from univers.versions import Version as UniversVersion

from cityward.domain.policy.versions import version_key
from cityward.domain.products import VersionScheme
from cityward.errors import InvalidInput, Problem

__all__ = [
    "MAX_INTERVALS",
    "MAX_VERSION_LENGTH",
    "Bound",
    "Cve5Ranges",
    "Interval",
    "KeyedInterval",
    "RangeError",
    "VersionRange",
    "parse_csaf_range",
    "parse_cve5",
    "parse_text",
    "parse_vers",
    "sort_key",
]

MAX_VERSION_LENGTH = 128
MAX_INTERVALS = 256
_MAX_TEXT_LENGTH = 4096  # a range longer than this is not an advisory, and it bounds regex work

KeyedInterval = tuple[str | None, bool, str | None, bool]  # (low key, inclusive, high key, inclusive)


class RangeError(InvalidInput, ValueError):
    """A version range that cannot be read; `text` is the raw input, `reason` says what is wrong."""

    def __init__(self, text: str, reason: str) -> None:
        shown = text if len(text) <= 200 else text[:200] + "…"
        super().__init__(f"cannot read version range {shown!r}: {reason}", [Problem(reason, source=shown)])
        self.text = text
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Sortable keys


def _number(n: int) -> str:
    """Digits whose text order is numeric order: 10 wide like `version_key`, longer ones after."""
    digits = str(n)
    if len(digits) <= 10:
        return digits.zfill(10)
    return f"~{len(digits):03d}{digits}"  # '~' sorts after every digit; then by length, then digits


@lru_cache(maxsize=65536)
def _semver_key(version: str) -> str | None:
    # univers parses (and coerces: "v1.2" is 1.2.0) so keys agree with its ordering by construction.
    try:
        value = SemverVersion(version).value
    except ValueError:
        return None
    core = f"{_number(value.major)}.{_number(value.minor)}.{_number(value.patch)}"
    if not value.prerelease:
        return core + "~"  # a release sorts after all its pre-releases ('~' > '-')
    # Pre-release identifiers: numeric ('0' + number) before alphanumeric ('1' + ASCII text); the
    # ',' separator sorts below every identifier character, so a shorter list sorts first.
    ids = ",".join("0" + _number(int(p)) if p.isdigit() else "1" + p for p in value.prerelease)
    return f"{core}-{ids}"


def sort_key(version: str, scheme: VersionScheme) -> str | None:
    """A string whose plain order is `scheme`'s version order; None when it cannot be compared.

    Semver follows univers's `SemverVersion` (pre-releases before their release, build metadata
    ignored as semver precedence says). Vendor and dotted versions use `version_key`, except that
    a version with no digits at all (or over `MAX_VERSION_LENGTH` characters) gets None rather
    than a key that would sort above every real version.
    """
    if len(version) > MAX_VERSION_LENGTH:
        return None
    if scheme == VersionScheme.SEMVER:
        return _semver_key(version)
    if not any("0" <= c <= "9" for c in version):  # ASCII digits, as version_key reads
        return None
    return version_key(_dates_as_numbers(version))


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = r"(?P<month>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_MONTH_FIRST = re.compile(rf"\b{_MONTH}[\s_-]*(?P<day>\d{{1,2}})(?:st|nd|rd|th)?[\s_,-]+(?P<year>\d{{4}})\b", re.I)
_DAY_FIRST = re.compile(rf"\b(?P<day>\d{{1,2}})[\s_-]*{_MONTH}[\s_,-]*(?P<year>\d{{4}})\b", re.I)
_MONTH_YEAR = re.compile(rf"\b{_MONTH}[\s_,-]*(?P<year>\d{{4}})\b", re.I)


def _dates_as_numbers(version: str) -> str:
    """A firmware named by its date ("Jun_02_2026", "2 June 2026", "January 2020") as year, month,
    day, so it orders by time: by its digits alone "Jun_02_2026" would come before "May_22_2026"."""
    def iso(m: re.Match[str]) -> str:
        month = _MONTHS.index(m["month"][:3].lower()) + 1
        day = int(m.groupdict().get("day") or 0)
        return f"{m['year']}.{month:02d}.{day:02d}"

    if not any(name in version.lower() for name in _MONTHS):
        return version
    for pattern in (_MONTH_FIRST, _DAY_FIRST, _MONTH_YEAR):
        version = pattern.sub(iso, version)
    return version


# ---------------------------------------------------------------------------------------------
# The normalized form


@dataclass(frozen=True)
class Bound:
    version: str
    inclusive: bool


@dataclass(frozen=True)
class Interval:
    """Versions between two bounds; None is unbounded. An exact version is [v, v]."""

    low: Bound | None
    high: Bound | None


@dataclass(frozen=True)
class VersionRange:
    """A union of intervals compared under one scheme (SEMVER or VENDOR); `source` is the raw text.

    Construction validates: every bound has a key, no interval is empty, at most `MAX_INTERVALS`.
    """

    intervals: tuple[Interval, ...]
    scheme: VersionScheme
    source: str
    _keys: tuple[KeyedInterval, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.intervals:
            raise RangeError(self.source, "the range matches no version")
        if len(self.intervals) > MAX_INTERVALS:
            raise RangeError(self.source, f"more than {MAX_INTERVALS} intervals")
        keys = tuple(_keyed(interval, self.scheme, self.source) for interval in self.intervals)
        for interval, keyed in zip(self.intervals, keys, strict=True):
            _check_not_empty(interval, keyed, self.source)
        object.__setattr__(self, "_keys", keys)

    def keyed(self) -> tuple[KeyedInterval, ...]:
        """Intervals as `sort_key` strings, so a polars/SQL filter can do the comparison.

        A key k is inside (lo, lo_inc, hi, hi_inc) when (lo is None or k > lo or (lo_inc and
        k == lo)) and (hi is None or k < hi or (hi_inc and k == hi)). An interval unbounded on both
        sides holds every version, even one without a key.
        """
        return self._keys

    def contains(self, version: str) -> bool | None:
        """Whether `version` is in the range; None when it cannot be compared under the scheme."""
        if any(lo is None and hi is None for lo, _, hi, _ in self._keys):
            return True
        key = sort_key(version, self.scheme)
        if key is None:
            return None
        return any(_key_in(key, keyed) for keyed in self._keys)


@dataclass(frozen=True)
class Cve5Ranges:
    """What one CVE JSON 5 `versions[]` item says: versions affected, and versions not affected.

    Either may be None. Versions in neither (status "unknown", or outside the item) fall to the
    product's `defaultStatus`, which the caller applies.
    """

    affected: VersionRange | None
    unaffected: VersionRange | None


def _key_in(key: str, keyed: KeyedInterval) -> bool:
    lo, lo_inc, hi, hi_inc = keyed
    above = lo is None or key > lo or (lo_inc and key == lo)
    below = hi is None or key < hi or (hi_inc and key == hi)
    return above and below


# An edge places a bound on the line of keys: (0,..) is -inf, (2,..) is +inf, and for a key k the
# third item is 0 "just below k", 1 "at k", 2 "just above k". An interval is empty when its first
# included place is after its last.
_Edge = tuple[int, str, int]


def _low_edge(keyed: KeyedInterval) -> _Edge:
    lo, inclusive = keyed[0], keyed[1]
    return (0, "", 0) if lo is None else (1, lo, 1 if inclusive else 2)


def _high_edge(keyed: KeyedInterval) -> _Edge:
    hi, inclusive = keyed[2], keyed[3]
    return (2, "", 0) if hi is None else (1, hi, 1 if inclusive else 0)


def _bound_key(bound: Bound | None, scheme: VersionScheme, source: str) -> str | None:
    if bound is None:
        return None
    if len(bound.version) > MAX_VERSION_LENGTH:
        raise RangeError(source, f"a version is longer than {MAX_VERSION_LENGTH} characters")
    key = sort_key(bound.version, scheme)
    if key is None:
        raise RangeError(source, f"{bound.version!r} is not a {scheme} version that can be compared")
    return key


def _keyed(interval: Interval, scheme: VersionScheme, source: str) -> KeyedInterval:
    return (
        _bound_key(interval.low, scheme, source),
        interval.low is not None and interval.low.inclusive,
        _bound_key(interval.high, scheme, source),
        interval.high is not None and interval.high.inclusive,
    )


def _check_not_empty(interval: Interval, keyed: KeyedInterval, source: str) -> None:
    if _low_edge(keyed) > _high_edge(keyed):
        if keyed[0] is not None and keyed[2] is not None and keyed[0] > keyed[2]:
            raise RangeError(source, f"{_describe(interval)} is empty: its low end is above its high end")
        raise RangeError(source, f"{_describe(interval)} holds no version")


def _describe(interval: Interval) -> str:
    low = "(-inf" if interval.low is None else ("[" if interval.low.inclusive else "(") + interval.low.version
    high = "+inf)" if interval.high is None else interval.high.version + ("]" if interval.high.inclusive else ")")
    return f"{low}, {high}"


def _build(intervals: Iterable[Interval], scheme: VersionScheme, source: str) -> VersionRange:
    """Sort and merge overlapping or touching intervals, then validate through `VersionRange`."""
    spans: list[tuple[_Edge, _Edge, Interval]] = []
    for interval in intervals:
        keyed = _keyed(interval, scheme, source)
        _check_not_empty(interval, keyed, source)
        low, high = _low_edge(keyed), _high_edge(keyed)
        spans.append((low, high, interval))
    if len(spans) > 4 * MAX_INTERVALS:
        raise RangeError(source, f"more than {MAX_INTERVALS} intervals")
    spans.sort(key=lambda s: (s[0], s[1]))
    merged: list[tuple[_Edge, _Edge, Interval]] = []
    for low, high, interval in spans:
        if merged:
            m_low, m_high, m_interval = merged[-1]
            touching = low[0] == 1 and m_high[0] == 1 and low[1] == m_high[1] and low[2] == m_high[2] + 1
            if low <= m_high or touching:
                if high > m_high:
                    merged[-1] = (m_low, high, Interval(m_interval.low, interval.high))
                continue
        merged.append((low, high, interval))
    return VersionRange(tuple(m[2] for m in merged), scheme, source)


def _everything(scheme: VersionScheme, source: str) -> VersionRange:
    return VersionRange((Interval(None, None),), scheme, source)


def _check_length(text: str) -> None:
    if len(text) > _MAX_TEXT_LENGTH:
        raise RangeError(text, f"longer than {_MAX_TEXT_LENGTH} characters")


# ---------------------------------------------------------------------------------------------
# vers: https://github.com/package-url/purl-spec/blob/master/VERSION-RANGE-SPEC.rst


class _VendorVersion(UniversVersion):
    """A univers version ordered by `version_key`, so univers validates vendor vers ranges too."""

    @classmethod
    def normalize(cls, string: str) -> str:
        return unquote(string).strip()  # vers percent-encodes what is not plain ASCII punctuation

    @classmethod
    def is_valid(cls, string: str) -> bool:
        return any(c.isdigit() for c in string)

    @classmethod
    def build_value(cls, string: str) -> str | None:
        return version_key(string)


# Schemes whose univers versions compare as semver; univers 32 has no "semver" scheme itself and
# its "generic" coerces to semver, which would make "V5.5.0 build 170725" a pre-release of 5.5.0.
_SEMVER_VERS = frozenset(
    {"semver"}
    | {
        name
        for name, range_class in RANGE_CLASS_BY_SCHEMES.items()
        if isinstance(range_class.version_class, type) and issubclass(range_class.version_class, SemverVersion)
    }
) - {"generic"}
_VENDOR_VERS = frozenset({"generic", "intdot"})
# univers is unannotated; these are its constraint parser and the spec's sequence rules.
_constraint = cast(Callable[..., VersionConstraint], VersionConstraint.from_string)
_validate = cast(Callable[[list[VersionConstraint]], object], VersionConstraint.validate)


def parse_vers(text: str) -> VersionRange:
    """A `vers:` URI under the spec's rules; "!=" splits an interval.

    Semver-ordered schemes (semver, npm, cargo, golang, ...) compare as SEMVER; generic and
    intdot as VENDOR; `vers:all/*` is every version. Schemes with their own ordering (pypi, deb,
    rpm, maven, ...) are refused rather than compared wrongly.
    """
    _check_length(text)
    spec = "".join(text.split())  # spaces are not significant in vers
    if not spec.isascii():
        raise RangeError(text, "vers is plain ASCII; percent-encode other characters")
    uri, colon, rest = spec.partition(":")
    if uri.lower() != "vers" or not colon:
        raise RangeError(text, "a vers range starts with 'vers:'")
    name, slash, constraints = rest.partition("/")
    name = name.lower()
    constraints = constraints.strip("|")
    if not slash or not constraints:
        raise RangeError(text, "no versioning scheme and constraints after 'vers:'")
    version_class: type[UniversVersion]
    if name in _SEMVER_VERS:
        scheme = VersionScheme.SEMVER
        known = RANGE_CLASS_BY_SCHEMES.get(name)
        version_class = known.version_class if known is not None and known.version_class else SemverVersion
    elif name in _VENDOR_VERS or name == "all":
        scheme, version_class = VersionScheme.VENDOR, _VendorVersion
    elif name in RANGE_CLASS_BY_SCHEMES:
        raise RangeError(text, f"scheme {name!r} orders versions its own way, which is not modelled here")
    else:
        raise RangeError(text, f"unknown versioning scheme {name!r}")
    if constraints == "*":
        return _everything(scheme, text)
    if name == "all":
        raise RangeError(text, "'vers:all' takes only '*'")

    parsed: list[VersionConstraint] = []
    for item in constraints.split("|"):
        try:
            parsed.append(_constraint(string=item, version_class=version_class))
        except ValueError:
            raise RangeError(text, f"{item!r} is not a comparator and a {scheme} version") from None
    if len(parsed) > 1 and any(c.comparator == "*" for c in parsed):
        raise RangeError(text, "'*' must stand alone")
    try:
        _validate(parsed)  # sorts by version; duplicates and bad sequences raise
    except ValueError:
        raise RangeError(
            text,
            "not a valid vers sequence: versions must be unique and, ignoring = and !=, lower bounds"
            " (>, >=) and upper bounds (<, <=) must alternate",
        ) from None
    return _build(_vers_intervals(parsed, scheme, text), scheme, text)


def _vers_intervals(constraints: Sequence[VersionConstraint], scheme: VersionScheme, text: str) -> list[Interval]:
    """The spec's containment algorithm, read as intervals (constraints are validated and sorted)."""

    def version(c: VersionConstraint) -> str:
        return str(c.version.normalized_string)

    intervals: list[Interval] = []
    if len(constraints) == 1 and constraints[0].comparator == "!=":
        intervals.append(Interval(None, None))  # alone, "!=" means everything else
    pending: Bound | None = None
    for c in constraints:
        if c.comparator == "=":
            intervals.append(Interval(Bound(version(c), True), Bound(version(c), True)))
        elif c.comparator in (">", ">="):
            pending = Bound(version(c), c.comparator == ">=")
        elif c.comparator in ("<", "<="):
            intervals.append(Interval(pending, Bound(version(c), c.comparator == "<=")))
            pending = None
    if pending is not None:
        intervals.append(Interval(pending, None))
    for c in constraints:
        if c.comparator == "!=":
            intervals = [part for interval in intervals for part in _without(interval, version(c), scheme, text)]
    if not intervals:
        raise RangeError(text, "the range matches no version")
    return intervals


def _without(interval: Interval, point: str, scheme: VersionScheme, source: str) -> list[Interval]:
    """`interval` minus one version: two pieces when the version is inside it, else unchanged."""
    keyed = _keyed(interval, scheme, source)
    key = _bound_key(Bound(point, True), scheme, source)
    if key is None or not _key_in(key, keyed):
        return [interval]
    pieces = [Interval(interval.low, Bound(point, False)), Interval(Bound(point, False), interval.high)]
    return [piece for piece in pieces if not _is_empty(piece, scheme, source)]


def _is_empty(interval: Interval, scheme: VersionScheme, source: str) -> bool:
    keyed = _keyed(interval, scheme, source)
    return _low_edge(keyed) > _high_edge(keyed)


# ---------------------------------------------------------------------------------------------
# CVE JSON 5: https://cveproject.github.io/cve-schema/schema/docs/ (affected[].versions[])

_CVE_STATUSES = ("affected", "unaffected", "unknown")
_CVE_OPEN_STARTS = frozenset({"0", "unspecified"})  # CNA tools write these for "from the first release"


def parse_cve5(entry: Mapping[str, object]) -> Cve5Ranges:
    """One CVE JSON 5 `versions[]` item, split by status into affected and unaffected ranges.

    versionType "semver" compares as SEMVER, "git" is refused (commits have no order here), any
    other type as VENDOR. A lone `version` is one version (for vendor types it is read with
    `parse_text`, since CNAs write "< 10.12.153" there). With `lessThan`/`lessThanOrEqual` the
    range starts at `version` ("0" or "unspecified": from the first release); "*" there means no
    upper end and "1.*" the whole 1.x line. `changes` switch the status at each `at` version.
    """
    source = json.dumps(entry, sort_keys=True, default=str, ensure_ascii=False)
    _check_length(source)
    version_type = entry.get("versionType")
    if version_type is not None and not isinstance(version_type, str):
        raise RangeError(source, "versionType is not text")
    if (version_type or "").strip().lower() == "git":
        raise RangeError(source, "git commit ranges have no version order to compare firmware strings with")
    scheme = VersionScheme.SEMVER if (version_type or "").strip().lower() == "semver" else VersionScheme.VENDOR
    status = _cve_status(entry.get("status"), source)
    version = _cve_text(entry.get("version"), "version", source)
    less_than, at_most, changes = entry.get("lessThan"), entry.get("lessThanOrEqual"), entry.get("changes")

    if less_than is None and at_most is None:
        if changes is not None:
            raise RangeError(source, "changes need lessThan or lessThanOrEqual")
        if scheme is VersionScheme.VENDOR:
            try:
                alone = replace(parse_text(version), source=source)
            except RangeError as exc:
                raise RangeError(source, exc.reason) from None
        else:
            alone = _build([Interval(Bound(version, True), Bound(version, True))], scheme, source)
        return _by_status([(alone, status)], scheme, source)

    if less_than is not None and at_most is not None:
        raise RangeError(source, "both lessThan and lessThanOrEqual are given")
    low = None if version.lower() in _CVE_OPEN_STARTS else Bound(_plain_version(version, source), True)
    if less_than is not None:
        high = _cve_upper(_cve_text(less_than, "lessThan", source), False, scheme, source)
    else:
        high = _cve_upper(_cve_text(at_most, "lessThanOrEqual", source), True, scheme, source)
    whole = _build([Interval(low, high)], scheme, source)

    steps = sorted(_cve_changes(changes, whole, source), key=lambda step: step[0])
    segments: list[tuple[Interval, str]] = []
    current, current_status = low, status
    for (_, at), change_status in steps:
        segments.append((Interval(current, Bound(at, False)), current_status))
        current, current_status = Bound(at, True), change_status
    segments.append((Interval(current, high), current_status))
    parts = [
        (_build([segment], scheme, source), segment_status)
        for segment, segment_status in segments
        if not _is_empty(segment, scheme, source)
    ]
    return _by_status(parts, scheme, source)


def _by_status(parts: Sequence[tuple[VersionRange, str]], scheme: VersionScheme, source: str) -> Cve5Ranges:
    def union(wanted: str) -> VersionRange | None:
        intervals = [i for rng, status in parts if status == wanted for i in rng.intervals]
        return _build(intervals, scheme, source) if intervals else None

    return Cve5Ranges(affected=union("affected"), unaffected=union("unaffected"))


def _cve_status(value: object, source: str) -> str:
    if not isinstance(value, str) or value not in _CVE_STATUSES:
        raise RangeError(source, f"status {value!r} is not one of {', '.join(_CVE_STATUSES)}")
    return value


def _cve_text(value: object, name: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RangeError(source, f"{name} is missing or not text")
    if len(value) > MAX_VERSION_LENGTH:
        raise RangeError(source, f"{name} is longer than {MAX_VERSION_LENGTH} characters")
    return value.strip()


def _plain_version(value: str, source: str) -> str:
    if value[0] in "<>=!*" or not any(c.isdigit() for c in value):
        raise RangeError(source, f"{value!r} is not a single version")
    return value


def _cve_upper(value: str, inclusive: bool, scheme: VersionScheme, source: str) -> Bound | None:
    if value == "*":
        return None
    wildcard = _WILDCARD.fullmatch(value)
    if wildcard is None:
        return Bound(_plain_version(value, source), inclusive)
    return _next_line(wildcard["stem"], scheme, source)  # arbitrarily large X.*: stop before X+1


def _cve_changes(changes: object, whole: VersionRange, source: str) -> list[tuple[tuple[str, str], str]]:
    """Validated (key, at) and status pairs; each `at` must lie inside the item's range."""
    if changes is None:
        return []
    if not isinstance(changes, Sequence) or isinstance(changes, str):
        raise RangeError(source, "changes is not a list")
    steps: list[tuple[tuple[str, str], str]] = []
    for change in changes:
        if not isinstance(change, Mapping):
            raise RangeError(source, "a change is not an object")
        at = _plain_version(_cve_text(change.get("at"), "changes[].at", source), source)
        key = sort_key(at, whole.scheme)
        status = _cve_status(change.get("status"), source)
        if key is not None and _at_upper_end(key, whole):
            continue  # real records change status at their own `lessThan`: nothing inside changes
        if key is None or not whole.contains(at):
            raise RangeError(source, f"change at {at!r} is outside the range it changes")
        steps.append(((key, at), status))
    if len({key for (key, _), _ in steps}) != len(steps):
        raise RangeError(source, "two changes at the same version")
    return steps


def _at_upper_end(key: str, whole: VersionRange) -> bool:
    """`key` is the range's exclusive upper end (e.g. lessThan 10.2.9-h1, a change at 10.2.9-h1)."""
    keyed = whole.keyed()
    return bool(keyed) and keyed[-1][2] == key and not keyed[-1][3]


def _next_line(stem: str, scheme: VersionScheme, source: str) -> Bound:
    """The exclusive upper bound of an `X.*` line: the first version of the next line."""
    if scheme == VersionScheme.SEMVER:
        if not re.fullmatch(r"\d+(?:\.\d+)?", stem):
            raise RangeError(source, f"{stem}.* is not a semver line (use 1.* or 1.2.*)")
        parts = [int(p) for p in stem.split(".")]
        parts[-1] += 1
        parts += [0] * (3 - len(parts))
        return Bound(".".join(map(str, parts)) + "-0", False)  # -0 is the lowest pre-release
    groups = list(re.finditer(r"\d+", stem))
    if not groups:
        raise RangeError(source, f"{stem!r} has no number to count from")
    last = groups[-1]
    return Bound(f"{stem[: last.start()]}{int(last.group()) + 1}{stem[last.end() :]}", False)


# ---------------------------------------------------------------------------------------------
# Vendor free text

_F = re.IGNORECASE | re.ASCII
_QUALIFIER = r"(?:service\s+pack|build|bld|update|upd|hotfix|patch|revision|rev|release|rel|sp|hf|cu|rc|b|u|p|r)"
_CORE = r"(?:[a-z]{1,3}[_-]?)?\d[0-9a-z]*(?:[._+-][0-9a-z]+)*(?:\.\*)*"
_VERSION = (
    rf"{_CORE}(?:\s+{_QUALIFIER}\s?\.?\s?\d[0-9a-z]*(?:[._-][0-9a-z]+)*"
    rf"|\s?\(\s?{_QUALIFIER}\s?\.?\s?\d[0-9a-z]*\s?\))*"
)
_WILDCARD = re.compile(r"(?P<stem>.*?\d)(?:\.[x*])+", _F)
_HYPHEN_PAIR = re.compile(r"[a-z]{0,3}\d+(?:\.\d+)+-[a-z]{0,3}\d+(?:\.\d+)+", _F)
_ALL = re.compile(
    r"\*|(?:all|any)(?:\s(?:affected\s)?(?:versions?|releases?|firmware(?:\sversions?)?))?(?:\s(?:are\s)?affected)?",
    _F,
)
_SEPARATORS = re.compile(r"(?:\s|[|,;&]|\b(?:and|or)\b)*", _F)
_FILLER = re.compile(r"(?:(?:all|any|affected|firmware|software|versions?|releases?)\s)*", _F)


def _ref(name: str) -> str:
    return rf"(?:(?:firmware\s)?(?:version|ver\.|release)\s)?(?P<{name}>{_VERSION})"


_Kind = Literal["closed", "le", "lt", "ge", "gt", "exact", "ambiguous"]
_ATOM_PATTERNS: tuple[tuple[str, _Kind], ...] = (
    (rf"between\s{_ref('a')}\sand\s{_ref('b')}", "closed"),
    (rf"from\s{_ref('a')}\s(?:to|through|thru|-)\s{_ref('b')}", "closed"),
    (rf"up\sto\s(?:and\sincluding|\(including\))\s{_ref('a')}", "le"),
    (rf"up\sto\s(?:but\s)?(?:not\sincluding|excluding|\(excluding\))\s{_ref('a')}", "lt"),
    (rf"up\sto\s{_ref('a')}", "ambiguous"),
    (rf"(?:<=|=<|at\smost\s|no\slater\sthan\s)\s?{_ref('a')}", "le"),
    (rf"(?:<|before|prior\sto|earlier\sthan|older\sthan|lower\sthan|less\sthan|below)\s?{_ref('a')}", "lt"),
    (rf"(?:>=|=>|(?:since|starting\s(?:with|from|at)|from|at\sleast)\s)\s?{_ref('a')}", "ge"),
    (rf"(?:>|after|later\sthan|newer\sthan|greater\sthan|higher\sthan|above)\s?{_ref('a')}", "gt"),
    (rf"{_ref('a')}\s(?:-|to|through|thru)\s{_ref('b')}", "closed"),
    (rf"{_ref('a')}\s(?:and|or)\s(?:earlier|prior|older|lower|below|before)(?:\sversions?)?", "le"),
    (rf"{_ref('a')}\s(?:and|or)\s(?:later|newer|higher|above|greater|after)(?:\sversions?)?", "ge"),
    (rf"{_ref('a')}\s?\+(?=$|[\s|,;])", "ge"),
    (rf"(?:==?\s?)?{_ref('a')}", "exact"),
)
_ATOMS = tuple((re.compile(pattern, _F), kind) for pattern, kind in _ATOM_PATTERNS)


@dataclass(frozen=True)
class _Atom:
    kind: Literal["lower", "upper", "point", "closed", "line"]
    interval: Interval


def parse_text(text: str) -> VersionRange:
    """Vendor prose ("< V14 SP1 Update 14", "V2.0 and later", "5.x", "5.5.0 - 5.5.800") as VENDOR.

    The text is a list of pieces separated by `|`, `,`, `;`, "and" or "or". A lower bound (or an
    `N.x` line) followed directly by an upper bound is one interval, whatever separates them
    (">= 5.3.1 | <= 5.4.4", ">=2.0 <2.3", "5.x before 5.4.2"); every other piece is an interval
    of its own and the result is their union ("<1.2 | >=2.0 <2.3", "1.0, 1.1"). Ranges written
    as "A - B", "A to B", "from A to B" and "between A and B" include both ends. Refused: bare
    "up to X" (inclusive or not?), "1.0-2.0" without spaces (a range or one version?), "!=",
    unpaired bounds that together cover every version ("<= 5.4.4 | >= 5.3.1": write the lower
    bound first), and anything that is not a version ("latest", "see vendor site").
    """
    _check_length(text)
    if text.strip()[:5].lower() == "vers:":  # CSAF product_version names carry "vers:all/*" too
        return replace(parse_vers(text.strip()), source=text)
    norm = text.replace("\u2264", "<=").replace("\u2265", ">=").replace("\u2013", " - ").replace("\u2014", " - ")
    norm = " ".join(norm.split()).rstrip(".").strip()
    if not norm:
        raise RangeError(text, "empty")
    if _ALL.fullmatch(norm):
        return _everything(VersionScheme.VENDOR, text)
    if "!=" in norm:
        raise RangeError(text, "exclusions (!=) are only read in vers ranges")
    atoms = _scan(norm, text)
    intervals: list[Interval] = []
    i = 0
    while i < len(atoms):
        atom = atoms[i]
        nxt = atoms[i + 1] if i + 1 < len(atoms) else None
        if atom.kind in ("lower", "line") and nxt is not None and nxt.kind == "upper":
            high = nxt.interval.high
            if atom.kind == "line":
                high = _lower_high(atom.interval.high, high, text)
            intervals.append(Interval(atom.interval.low, high))
            i += 2
        else:
            intervals.append(atom.interval)
            i += 1
    result = _build(intervals, VersionScheme.VENDOR, text)
    if any(i.low is None and i.high is None for i in result.intervals):
        raise RangeError(text, "separate bounds that together cover every version; write the lower bound first")
    return result


def _scan(norm: str, text: str) -> list[_Atom]:
    atoms: list[_Atom] = []
    pos = 0
    while True:
        gap = _SEPARATORS.match(norm, pos)
        end = gap.end() if gap else pos
        if end == len(norm):
            if atoms and re.search(r"\b(?:and|or)\b", norm[pos:end], _F):
                raise RangeError(text, f"nothing follows {norm[pos:end].strip()!r}")
            break
        filler = _FILLER.match(norm, end)
        pos = filler.end() if filler else end
        for pattern, kind in _ATOMS:
            found = pattern.match(norm, pos)
            if found:
                atoms.append(_atom(kind, found, text))
                pos = found.end()
                break
        else:
            raise RangeError(text, f"cannot read {norm[pos : pos + 40]!r}" if pos < len(norm) else "no version in it")
        if len(atoms) > 4 * MAX_INTERVALS:
            raise RangeError(text, f"more than {MAX_INTERVALS} intervals")
    if not atoms:
        raise RangeError(text, "no version in it")
    return atoms


def _atom(kind: _Kind, found: re.Match[str], text: str) -> _Atom:
    a = found["a"]
    if kind == "ambiguous":
        raise RangeError(text, f"'up to {a}' does not say whether {a} is included")
    versions = [a] if kind != "closed" else [a, found["b"]]
    if kind != "exact" and any(_WILDCARD.fullmatch(v) for v in versions):
        raise RangeError(text, "a wildcard version (5.x) cannot be a bound")
    if kind == "closed":
        return _Atom("closed", Interval(Bound(a, True), Bound(found["b"], True)))
    if kind in ("le", "lt"):
        return _Atom("upper", Interval(None, Bound(a, kind == "le")))
    if kind in ("ge", "gt"):
        return _Atom("lower", Interval(Bound(a, kind == "ge"), None))
    wildcard = _WILDCARD.fullmatch(a)
    if wildcard:
        stem = wildcard["stem"]
        return _Atom("line", Interval(Bound(stem, True), _next_line(stem, VersionScheme.VENDOR, text)))
    if _HYPHEN_PAIR.fullmatch(a):
        raise RangeError(text, f"{a!r} could be a range or one version; write a range as 'A - B'")
    return _Atom("point", Interval(Bound(a, True), Bound(a, True)))


def _lower_high(line_end: Bound | None, upper: Bound | None, text: str) -> Bound | None:
    """The tighter of two upper bounds ("5.x before 5.4.2")."""
    if line_end is None or upper is None:
        return upper or line_end
    ends = [(_high_edge(_keyed(Interval(None, b), VersionScheme.VENDOR, text)), b) for b in (line_end, upper)]
    return min(ends, key=lambda e: e[0])[1]


# ---------------------------------------------------------------------------------------------
# CSAF


def parse_csaf_range(text: str) -> VersionRange:
    """A CSAF `product_version_range` name: vers when it says so, else a vers-like list or prose."""
    stripped = text.strip()
    if stripped[:5].lower() == "vers:":
        return parse_vers(stripped)
    if stripped[:4].lower() == "vls:":
        stripped = stripped[4:]
    try:
        return replace(parse_text(stripped), source=text)
    except RangeError as exc:
        raise RangeError(text, exc.reason) from None
