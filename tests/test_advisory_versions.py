"""Advisory version ranges: real advisory wording, univers as the semver oracle, and fuzzing."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import cast

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from univers.version_range import VersionRange as UniversRange
from univers.versions import SemverVersion

from cityward.domain.advisory_versions import (
    MAX_INTERVALS,
    MAX_VERSION_LENGTH,
    Bound,
    Interval,
    KeyedInterval,
    RangeError,
    VersionRange,
    parse_csaf_range,
    parse_cve5,
    parse_text,
    parse_vers,
    sort_key,
)
from cityward.domain.products import VersionScheme
from cityward.errors import InvalidInput

SEMVER, VENDOR = VersionScheme.SEMVER, VersionScheme.VENDOR


def inside(rng: VersionRange, *versions: str) -> bool:
    return all(rng.contains(v) is True for v in versions)


def outside(rng: VersionRange, *versions: str) -> bool:
    return all(rng.contains(v) is False for v in versions)


# --- real advisory wording -------------------------------------------------------------------


def test_hikvision_build_and_earlier() -> None:
    rng = parse_text("V5.5.0 build 170725 and earlier")
    assert rng.intervals == (Interval(None, Bound("V5.5.0 build 170725", True)),)
    assert inside(rng, "V5.5.0 build 170725", "V5.5.0 build 170101", "V5.4.5 build 160530", "V5.5.0")
    assert outside(rng, "V5.5.0 build 180101", "V5.5.3 build 170101", "V5.6.0")


def test_hikvision_interval_across_a_pipe() -> None:
    rng = parse_text(">= 5.3.1 build 150410 | <= 5.4.4 Build 161125")
    assert len(rng.intervals) == 1
    assert inside(rng, "V5.3.1 build 150410", "V5.4.0 build 160530", "V5.4.4 build 161125")
    assert outside(rng, "V5.3.0 build 150101", "V5.4.4 build 170101", "V5.5.0")


def test_siemens_service_pack_update() -> None:
    rng = parse_text("< V14 SP1 Update 14")
    assert inside(rng, "V14 SP1 Update 13", "V14 SP1", "V13 SP2 Update 2")
    assert outside(rng, "V14 SP1 Update 14", "V14 SP1 Update 15", "V15", "V14 SP2")


def test_axis_less_than() -> None:
    rng = parse_text("< 10.12.153")
    assert inside(rng, "10.12.152", "9.80.3.8", "10.12")
    assert outside(rng, "10.12.153", "10.12.153.1", "11.1.0")


@pytest.mark.parametrize(
    ("text", "ins", "outs"),
    [
        ("<1.2 | >=2.0 <2.3", ["1.1.9", "2.0", "2.2.9"], ["1.2", "1.9", "2.3"]),
        ("5.x", ["5", "5.0.1", "5.99.3"], ["4.9", "6", "6.0.1"]),
        ("5.4.*", ["5.4", "5.4.12"], ["5.3.9", "5.5"]),
        ("5.x before 5.4.2", ["5.0", "5.4.1"], ["4.9", "5.4.2", "6.0"]),
        ("all versions before 3.2", ["3.1.9"], ["3.2", "4"]),
        ("versions prior to 2.1.0", ["2.0.9"], ["2.1.0"]),
        ("up to and including 4.0", ["4.0", "3.9"], ["4.0.1"]),
        ("up to (excluding) 4.0", ["3.9"], ["4.0"]),
        ("from 1.0 to 1.9", ["1.0", "1.9"], ["0.9", "1.9.1"]),
        ("between 1.0 and 1.9", ["1.0", "1.9"], ["0.9", "2.0"]),
        ("V2.0 and later", ["V2.0", "3.1"], ["1.9"]),
        ("2.0 or higher", ["2.0"], ["1.9"]),
        ("2.0+", ["2.0", "9"], ["1.9"]),
        ("before V5.7.10", ["V5.7.9"], ["V5.7.10"]),
        ("5.5.0 - 5.5.800", ["5.5.0", "5.5.799", "5.5.800"], ["5.4.9", "5.5.801"]),
        ("5.5.0 \u2013 5.5.800", ["5.5.400"], ["5.6"]),
        ("\u2264 2.0", ["2.0"], ["2.0.1"]),
        ("> 1.0, < 2.0", ["1.5"], ["1.0", "2.0"]),
        (">= 1.0 and < 2.0", ["1.0"], ["2.0"]),
        ("1.0, 1.1 and 1.3", ["1.0", "1.1", "1.3"], ["1.2", "1.4"]),
        ("V5.4.4 build 161125", ["V5.4.4 build 161125"], ["V5.4.4 build 161126", "V5.4.4"]),
        ("Firmware version 2.1.0", ["2.1.0"], ["2.1.1"]),
        ("All versions < V3.0.29.", ["V3.0.28"], ["V3.0.29"]),
        ("V5.4.0 (build 160530) and earlier", ["V5.4.0 build 160530"], ["V5.4.0 build 160531"]),
        ("R2.1.3 SP2 and later", ["R2.1.3 SP2", "R2.2"], ["R2.1.3 SP1"]),
        (">3.0, <=3.5 | 4.x", ["3.5", "4.2"], ["3.0", "3.6", "5.0"]),
    ],
)
def test_vendor_text(text: str, ins: list[str], outs: list[str]) -> None:
    rng = parse_text(text)
    assert rng.scheme is VENDOR and rng.source == text
    assert inside(rng, *ins) and outside(rng, *outs)


@pytest.mark.parametrize("text", ["all versions", "All Versions", "*", "any version", "all versions are affected"])
def test_all_versions_hold_even_unkeyable_strings(text: str) -> None:
    rng = parse_text(text)
    assert rng.keyed() == ((None, False, None, False),)
    assert rng.contains("unknown") is True


def test_versions_that_cannot_be_compared_give_none() -> None:
    assert parse_text("< 2.0").contains("unknown") is None
    assert parse_vers("vers:semver/<2.0.0").contains("banana") is None
    assert parse_vers("vers:semver/<2.0.0").contains("1" * (MAX_VERSION_LENGTH + 1)) is None


# --- vers -----------------------------------------------------------------------------------


def test_vers_not_equal_splits_an_interval() -> None:
    rng = parse_vers("vers:semver/>=1.0.0|<2.0.0|!=1.5.0")
    assert rng.scheme is SEMVER
    assert rng.intervals == (
        Interval(Bound("1.0.0", True), Bound("1.5.0", False)),
        Interval(Bound("1.5.0", False), Bound("2.0.0", False)),
    )
    assert inside(rng, "1.0.0", "1.4.9", "1.5.1", "1.5.0-rc.1", "2.0.0-alpha")  # pre-releases of 2.0.0 sort below it
    assert outside(rng, "1.5.0", "2.0.0", "1.0.0-rc.1")


def test_vers_semver_prereleases_sort_before_release() -> None:
    rng = parse_vers("vers:npm/<1.0.0")
    assert inside(rng, "1.0.0-rc.1", "1.0.0-alpha", "0.9.9")
    assert outside(rng, "1.0.0", "1.0.1-beta")


def test_vers_generic_is_vendor_ordering() -> None:
    rng = parse_vers("vers:generic/>=V5.3.1%20build%20150410|<=V5.4.4%20build%20161125")
    assert rng.scheme is VENDOR
    assert rng.intervals[0].low == Bound("V5.3.1 build 150410", True)
    assert inside(rng, "V5.4.0 build 160530") and outside(rng, "V5.5.0")


def test_vers_all_and_star() -> None:
    assert parse_vers("vers:all/*").contains("anything") is True
    assert parse_vers("vers:semver/*").contains("1.0.0") is True


@pytest.mark.parametrize(
    "text",
    [
        "",
        "npm/1.0.0",
        "vers:",
        "vers:semver/",
        "vers:nosuchscheme/1.0",
        "vers:pypi/<1.0",  # pypi orders 1.0rc1 before 1.0; refused rather than compared wrongly
        "vers:semver/>=1.0.0|>=2.0.0",
        "vers:semver/1.0.0|1.0.0",
        "vers:semver/*|1.0.0",
        "vers:semver/<<1.0.0",
        "vers:semver/>=banana",
        "vers:generic/<latest",
        "vers:semver/!=1.0.0|!=2.0.0",  # matches nothing
        "vers:all/1.0",
        "vers:semver/\u00e91.0",
    ],
)
def test_vers_refused(text: str) -> None:
    with pytest.raises(RangeError):
        parse_vers(text)


# --- CVE JSON 5 ------------------------------------------------------------------------------


def test_cve5_less_than() -> None:
    got = parse_cve5({"version": "5.5.0", "status": "affected", "lessThan": "5.5.800", "versionType": "custom"})
    assert got.unaffected is None and got.affected is not None
    assert got.affected.scheme is VENDOR
    assert inside(got.affected, "5.5.0", "5.5.799") and outside(got.affected, "5.5.800", "5.4.9")


def test_cve5_less_than_or_equal_from_the_beginning() -> None:
    got = parse_cve5({"version": "0", "status": "affected", "lessThanOrEqual": "2.4.1", "versionType": "semver"})
    assert got.affected is not None and got.affected.intervals == (Interval(None, Bound("2.4.1", True)),)
    assert inside(got.affected, "0.0.0-alpha", "2.4.1") and outside(got.affected, "2.4.2")


def test_cve5_exact_and_unaffected() -> None:
    exact = parse_cve5({"version": "V5.4.4 build 161125", "status": "affected", "versionType": "custom"})
    assert exact.affected is not None and exact.affected.intervals[0].low == exact.affected.intervals[0].high
    fixed = parse_cve5({"version": "10.12.153", "status": "unaffected", "lessThan": "*", "versionType": "custom"})
    assert fixed.affected is None and fixed.unaffected is not None
    assert inside(fixed.unaffected, "10.12.153", "11.0") and outside(fixed.unaffected, "10.12.152")
    unknown = parse_cve5({"version": "1.0", "status": "unknown"})
    assert unknown.affected is None and unknown.unaffected is None


def test_cve5_version_field_holding_a_comparison() -> None:
    got = parse_cve5({"version": "< 10.12.153", "status": "affected", "versionType": "custom"})
    assert got.affected is not None and inside(got.affected, "10.12.152") and outside(got.affected, "10.12.153")


def test_cve5_wildcard_line() -> None:
    semver = parse_cve5({"version": "1.0.0", "status": "affected", "lessThan": "1.*", "versionType": "semver"})
    assert semver.affected is not None
    assert inside(semver.affected, "1.99.0", "1.5.0-rc.1") and outside(semver.affected, "2.0.0-alpha", "2.0.0")
    vendor = parse_cve5({"version": "5.0", "status": "affected", "lessThanOrEqual": "5.4.*"})
    assert vendor.affected is not None
    assert inside(vendor.affected, "5.4.99") and outside(vendor.affected, "5.5")


def test_cve5_changes_split_the_range() -> None:
    entry = {
        "version": "1.0",
        "status": "affected",
        "lessThan": "2.0",
        "versionType": "custom",
        "changes": [  # deliberately unsorted: the schema says clients must sort
            {"at": "1.1.8", "status": "unaffected"},
            {"at": "1.0.5", "status": "unaffected"},
            {"at": "1.1", "status": "affected"},
        ],
    }
    got = parse_cve5(entry)
    assert got.affected is not None and got.unaffected is not None
    assert inside(got.affected, "1.0", "1.0.4", "1.1", "1.1.7")
    assert outside(got.affected, "1.0.5", "1.0.9", "1.1.8", "1.9", "2.0", "0.9")
    assert inside(got.unaffected, "1.0.5", "1.0.9", "1.1.8", "1.9")
    assert outside(got.unaffected, "1.0", "1.1", "2.0")


def test_cve5_change_at_the_start_replaces_the_first_status() -> None:
    got = parse_cve5(
        {
            "version": "1.0",
            "status": "unaffected",
            "lessThanOrEqual": "1.0",
            "changes": [{"at": "1.0", "status": "affected"}],
        }
    )
    assert got.unaffected is None and got.affected is not None and inside(got.affected, "1.0")


@pytest.mark.parametrize(
    "entry",
    [
        {"version": "abc123", "status": "affected", "lessThan": "def456", "versionType": "git"},
        {"version": "1.0", "status": "affected", "lessThan": "0.9"},  # low above high
        {"version": "1.0", "status": "affected", "lessThan": "1.0"},  # empty
        {"version": "1.0", "status": "broken"},
        {"status": "affected", "lessThan": "2.0"},
        {"version": "1.0", "status": "affected", "lessThan": "2.0", "lessThanOrEqual": "2.0"},
        {"version": "1.0", "status": "affected", "changes": [{"at": "1.1", "status": "unaffected"}]},
        {"version": "1.0", "status": "affected", "lessThan": "2.0", "changes": [{"at": "3.0", "status": "unaffected"}]},
        {"version": "1.0", "status": "affected", "lessThan": "2.0", "changes": "1.5"},
        {"version": "n/a", "status": "affected"},
        {"version": "unspecified", "status": "affected", "versionType": "semver"},
        {"version": "1.0", "status": "affected", "lessThan": "banana", "versionType": "semver"},
        {"version": "1.2.3", "status": "affected", "lessThan": "1.2.3.*", "versionType": "semver"},
        {"version": "1." + "0" * MAX_VERSION_LENGTH, "status": "affected"},
    ],
)
def test_cve5_refused(entry: dict[str, object]) -> None:
    with pytest.raises(RangeError):
        parse_cve5(entry)


# --- CSAF ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ins", "outs"),
    [
        ("vers:semver/>=1.0.0|<1.4.2", ["1.4.1"], ["1.4.2"]),
        ("<V3.0.29", ["V3.0.28"], ["V3.0.29"]),
        ("<=2", ["2"], ["2.0.1"]),
        ("vls:>=8.1.5", ["8.1.5"], ["8.1.4"]),
        (">=1.0|<2.0", ["1.5"], ["2.0"]),
    ],
)
def test_csaf_ranges(text: str, ins: list[str], outs: list[str]) -> None:
    rng = parse_csaf_range(text)
    assert rng.source == text
    assert inside(rng, *ins) and outside(rng, *outs)


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "latest",
        "see vendor site",
        "up to 4.0",  # inclusive or not?
        "1.0-2.0",  # a range, or one version?
        "<= 5.4.4 | >= 5.3.1",  # upper first: a union of everything, surely not meant
        ">= 3.0 < 2.0",  # low above high
        "> 2.0 < 2.0",  # empty
        "1.0 and",
        "< 5.x",
        "!= 1.0",
        "V" + "1" * MAX_VERSION_LENGTH,
        ", ".join(f"1.{i}" for i in range(MAX_INTERVALS + 1)),
        "x" * 5000,
    ],
)
def test_text_refused(text: str) -> None:
    with pytest.raises(RangeError) as caught:
        parse_text(text)
    assert isinstance(caught.value, InvalidInput) and isinstance(caught.value, ValueError)
    assert caught.value.text == text and caught.value.reason in str(caught.value)


def test_error_names_the_text() -> None:
    with pytest.raises(RangeError, match="see vendor site"):
        parse_text("see vendor site")


# --- keys ------------------------------------------------------------------------------------


def test_semver_key_orders_the_spec_example() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "12345678901.0.0",
    ]
    keys = [sort_key(v, SEMVER) for v in ordered]
    assert all(k is not None for k in keys)
    assert keys == sorted(keys)  # type: ignore[type-var]
    assert sort_key("1.0.0+build.5", SEMVER) == sort_key("1.0.0", SEMVER)
    assert sort_key("v1.2", SEMVER) == sort_key("1.2.0", SEMVER)


def test_vendor_key_is_version_key_with_digits_only() -> None:
    assert sort_key("V5.5.0 build 170725", VENDOR) == sort_key("5.5.0.170725", VersionScheme.DOTTED)
    assert sort_key("unknown", VENDOR) is None


# --- properties ------------------------------------------------------------------------------


def _identifier(raw: str) -> str:
    return str(int(raw)) if raw.isdigit() else raw  # numeric identifiers have no leading zeros


numbers = st.one_of(st.integers(0, 3), st.integers(0, 10**14))
identifiers = st.one_of(
    st.integers(0, 3).map(str),
    st.text("ab-01", min_size=1, max_size=3).map(_identifier),
    st.text("0123456789abcXYZ-", min_size=1, max_size=6).map(_identifier),
)
prereleases = st.lists(identifiers, min_size=1, max_size=3).map(".".join)


@st.composite
def semvers(draw: st.DrawFn, build: bool = False) -> str:
    core = ".".join(str(draw(numbers)) for _ in range(3))
    if draw(st.booleans()):
        core += "-" + draw(prereleases)
    if build and draw(st.booleans()):
        core += "+" + draw(st.lists(st.text("ab01", min_size=1, max_size=3), min_size=1, max_size=2).map(".".join))
    return core


comparators = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])
constraint_lists = st.lists(st.tuples(comparators, semvers()), min_size=1, max_size=4)


_univers_range = cast(Callable[..., UniversRange], UniversRange.from_string)  # univers is unannotated


def _univers(spec: str) -> UniversRange | None:
    try:
        return _univers_range(f"vers:npm/{spec}", validate=True)
    except Exception:
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(constraint_lists, st.lists(semvers(), max_size=4))
def test_semver_vers_contains_agrees_with_univers(constraints: list[tuple[str, str]], extra: list[str]) -> None:
    spec = "|".join(c + v for c, v in constraints)
    theirs = _univers(spec)
    try:
        ours: VersionRange | None = parse_vers(f"vers:semver/{spec}")
    except RangeError:
        ours = None
    probes = [v for _, v in constraints] + extra
    if theirs is None:
        assert ours is None
        return
    for v in probes:
        expected = SemverVersion(v) in theirs
        if ours is None:  # refused only when it matches nothing
            assert not expected
        else:
            assert ours.contains(v) is expected, (spec, v)


@settings(max_examples=150, deadline=None)
@given(semvers(build=True), semvers(build=True))
def test_semver_key_order_is_univers_order(a: str, b: str) -> None:
    ka, kb = sort_key(a, SEMVER), sort_key(b, SEMVER)
    assert ka is not None and kb is not None
    va, vb = SemverVersion(a), SemverVersion(b)
    assert (ka > kb) - (ka < kb) == (va > vb) - (va < vb)


def _keyed_contains(keyed: tuple[KeyedInterval, ...], key: str | None) -> bool | None:
    if any(lo is None and hi is None for lo, _, hi, _ in keyed):
        return True
    if key is None:
        return None
    return any(
        (lo is None or key > lo or (lo_inc and key == lo)) and (hi is None or key < hi or (hi_inc and key == hi))
        for lo, lo_inc, hi, hi_inc in keyed
    )


vendor_versions = st.one_of(
    st.lists(st.integers(0, 12).map(str), min_size=1, max_size=4).map(".".join),
    st.builds(lambda v, b: f"V{v} build {b}", st.sampled_from(["5.4.4", "5.5.0", "5.3"]), st.integers(150000, 170000)),
    st.sampled_from(["unknown", "V14 SP1 Update 13", "10.12.153"]),
)
text_pieces = st.one_of(
    vendor_versions,
    st.builds(lambda op, v: f"{op} {v}", st.sampled_from(["<", "<=", ">", ">=", "before", "from"]), vendor_versions),
    st.builds(lambda v: f"{v} and later", vendor_versions),
    st.builds(lambda v: f"{v} and earlier", vendor_versions),
    st.builds(lambda a, b: f"{a} - {b}", vendor_versions, vendor_versions),
    st.integers(0, 9).map(lambda n: f"{n}.x"),
)
text_ranges = st.lists(text_pieces, min_size=1, max_size=4).flatmap(
    lambda pieces: st.sampled_from([" | ", ", ", " or ", " "]).map(lambda sep: sep.join(pieces))
)


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        constraint_lists.map(lambda cs: (SEMVER, "vers:semver/" + "|".join(c + v for c, v in cs))),
        text_ranges.map(lambda t: (VENDOR, t)),
    ),
    st.lists(st.one_of(semvers(build=True), vendor_versions, st.text(max_size=8)), min_size=1, max_size=5),
)
def test_contains_equals_keyed_evaluation(case: tuple[VersionScheme, str], versions: list[str]) -> None:
    scheme, text = case
    try:
        rng = parse_vers(text) if scheme is SEMVER else parse_text(text)
    except RangeError:
        assume(False)
        return
    for v in versions:
        assert rng.contains(v) == _keyed_contains(rng.keyed(), sort_key(v, scheme)), (text, v)


@settings(max_examples=120, deadline=None)
@given(
    st.one_of(
        st.text(),
        text_ranges,
        st.lists(
            st.sampled_from(
                [
                    "<",
                    "<=",
                    "V5.5.0",
                    "build",
                    "170725",
                    "and",
                    "or",
                    "later",
                    "earlier",
                    "|",
                    "-",
                    "x",
                    ".",
                    "up to",
                    "*",
                    "all",
                ]
            )
        ).map(" ".join),
    )
)
def test_parsers_only_raise_range_error(text: str) -> None:
    for parse in (parse_text, parse_csaf_range, parse_vers):
        try:
            rng = parse(text)
        except RangeError:
            continue
        assert rng.intervals
    for scheme in (SEMVER, VENDOR):
        key = sort_key(text, scheme)
        assert key is None or isinstance(key, str)


cve_values = st.one_of(st.none(), st.text(max_size=10), vendor_versions, semvers(), st.sampled_from(["*", "1.*", "0"]))


@settings(max_examples=100, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "version": cve_values,
            "status": st.sampled_from(["affected", "unaffected", "unknown", "bogus"]),
            "lessThan": cve_values,
            "lessThanOrEqual": cve_values,
            "versionType": st.sampled_from(["custom", "semver", "git", "maven"]),
            "changes": st.lists(
                st.fixed_dictionaries({"at": cve_values, "status": st.sampled_from(["affected", "unaffected"])}),
                max_size=3,
            ),
        },
    )
)
def test_cve5_only_raises_range_error(entry: dict[str, object]) -> None:
    with contextlib.suppress(RangeError):
        parse_cve5(entry)


@pytest.mark.parametrize(("older", "newer"), [
    ("May_22_2026", "Jun_02_2026"), ("31 December 2025", "2 Jan 2026"), ("January 2020", "February 2020"),
    ("Mar 3, 2021", "Mar 12, 2021"),
])
def test_firmware_named_by_date_orders_by_time(older: str, newer: str) -> None:
    """A real CSAF range "<May_22_2026" against firmware "Jun_02_2026": by digits alone the June
    build sorted first and was matched as affected."""
    old_key, new_key = sort_key(older, VersionScheme.VENDOR), sort_key(newer, VersionScheme.VENDOR)
    assert old_key is not None and new_key is not None and old_key < new_key


def test_vers_in_a_product_version_name_is_read_as_vers() -> None:
    """CSAF product_version names sometimes hold "vers:all/*" rather than one version."""
    assert parse_text("vers:all/*").intervals == parse_vers("vers:all/*").intervals
    assert parse_text(" vers:all/* ").source == " vers:all/* "
