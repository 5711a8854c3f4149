"""domain/limits.py: the JSON scanner measures what the parser would build, on any bytes, in any
chunks; the bounded YAML and CSV readers refuse what is over a limit by name, never by traceback."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityward.domain import limits
from cityward.domain.limits import JsonLimits, JsonScanner, LimitExceeded, check_json, clip, load_json, load_yaml
from cityward.errors import InvalidInput

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
    | st.sampled_from(['"', "\\", '\\"', "[", "]", "{", "}", ",", '"]}', "\\\\"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=6) | st.sampled_from(['"', "[", "\\", "}"]), inner, max_size=4),
    max_leaves=30,
)


def depth(value: Any) -> int:
    """Nesting depth as the scanner counts it: every array and object is one level."""
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def values(value: Any) -> int:
    """Array elements and object members, recursively, plus one per empty array or object: what
    the scanner counts (commas and containers)."""
    if isinstance(value, list | dict):
        inner = list(value.values()) if isinstance(value, dict) else value
        return max(len(inner), 1) + sum(values(v) for v in inner)
    return 0


def longest(value: Any) -> int:
    """The longest string, keys included, as json.dumps writes it (bytes, without the quotes)."""
    if isinstance(value, str):
        return len(json.dumps(value, ensure_ascii=False).encode()) - 2
    if isinstance(value, list):
        return max((longest(v) for v in value), default=0)
    if isinstance(value, dict):
        return max((max(longest(k), longest(v)) for k, v in value.items()), default=0)
    return 0


def verdict(data: bytes, lim: JsonLimits, cuts: list[int] | None = None) -> str | None:
    """None when accepted, else the limit refused; fed in pieces cut at `cuts`."""
    scanner = JsonScanner(lim, "doc")
    try:
        previous = 0
        for cut in [*sorted(cuts or []), len(data)]:
            scanner.feed(data[previous:cut])
            previous = max(previous, cut)
    except LimitExceeded as exc:
        return exc.limit
    return None


@settings(max_examples=250, deadline=None)
@given(json_values, st.integers(1, 6), st.booleans(), st.lists(st.integers(0, 400), max_size=6))
def test_scanner_refuses_exactly_what_is_too_deep(doc: Any, limit: int, ascii_only: bool, cuts: list[int]) -> None:
    data = json.dumps(doc, ensure_ascii=ascii_only).encode()
    refused = verdict(data, JsonLimits(limit), cuts)
    assert (refused is not None) == (depth(doc) > limit), (data, refused)
    if refused is None:  # what the scanner accepts, the parser reads, as the standard library does
        assert load_json(data, JsonLimits(limit), "doc") == json.loads(data) == doc


@settings(max_examples=200, deadline=None)
@given(json_values, st.integers(0, 40), st.integers(0, 20), st.lists(st.integers(0, 400), max_size=6))
def test_scanner_counts_values_and_string_lengths(doc: Any, max_values: int, max_field: int, cuts: list[int]) -> None:
    data = json.dumps(doc, ensure_ascii=False).encode()
    counted = verdict(data, JsonLimits(100, values=max_values or 10**9), cuts)
    assert (counted is not None) == (max_values > 0 and values(doc) > max_values), (data, counted)
    measured = verdict(data, JsonLimits(100, field_bytes=max_field or 10**9), cuts)
    assert (measured is not None) == (max_field > 0 and longest(doc) > max_field), (data, measured)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b",", b"a", b":"]),
                                            max_size=300).map(b"".join),
       st.integers(1, 8), st.lists(st.integers(0, 300), max_size=5))
def test_scanner_never_crashes_and_agrees_with_the_parser(data: bytes, limit: int, cuts: list[int]) -> None:
    lim = JsonLimits(limit, values=50, field_bytes=40)
    refused = verdict(data, lim, cuts)  # only LimitExceeded may escape: anything else fails here
    assert refused == verdict(data, lim)  # however the bytes arrive
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return  # not JSON: the parser's own error is what the reader reports
    over = depth(doc) > limit or values(doc) > 50 or longest(doc) > 40
    # Valid JSON is measured as written; only escapes (\u00e9 is 6 bytes for 1 character) can make
    # a string's written length differ from what json.dumps would write, so check depth exactly.
    if depth(doc) > limit:
        assert refused is not None
    if not over and refused is not None:
        assert refused.endswith("bytes in one string")


def test_deep_brackets_are_refused_at_once_with_flat_memory() -> None:
    data = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(LimitExceeded, match=r"over the limit of nesting depth 16 \(near byte 0\)"):
        check_json(data, limits.INVENTORY_JSON, "devices.json")
    ok = b"[" * 16 + b"]" * 16
    check_json(ok, limits.INVENTORY_JSON, "devices.json")
    with pytest.raises(LimitExceeded, match="1,048,576 bytes in one string"):
        check_json(b'{"description": "' + b"x" * (2 << 20) + b'"}', limits.ADVISORY_JSON, "cve.json")


def test_load_json_refuses_by_limit_and_reports_bad_json_by_position() -> None:
    with pytest.raises(LimitExceeded) as refused:
        load_json(b'{"a": ' + b"[" * 1000 + b"]" * 1000 + b"}", limits.DOCUMENT_JSON, "doc.json")
    assert refused.value.problems[0].field == "near byte 0" and "nesting depth 160" in refused.value.message
    with pytest.raises(InvalidInput, match=r"doc.json: malformed JSON at line 1, column 7: the document ends early"):
        load_json(b'{"a": ', limits.DOCUMENT_JSON, "doc.json")
    assert load_json('{"a": [1, "]"]}', limits.API_JSON, "body") == {"a": [1, "]"]}


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 60), st.sampled_from(["flow", "block", "mapping"]))
def test_yaml_depth_is_refused_by_name_at_any_style(levels: int, style: str) -> None:
    if style == "flow":
        text = "[" * levels + "]" * levels
    elif style == "block":
        text = "".join("  " * i + "-\n" for i in range(levels - 1)) + "  " * (levels - 1) + "- x\n"
    else:
        text = "".join("  " * i + f"k{i}:\n" for i in range(levels - 1)) + "  " * (levels - 1) + "leaf: 1\n"
    if levels > limits.POLICY_YAML_DEPTH:
        with pytest.raises(LimitExceeded, match=f"nesting depth {limits.POLICY_YAML_DEPTH}"):
            load_yaml(text, "p.yaml")
    else:
        assert load_yaml(text, "p.yaml") == yaml.safe_load(text)


def test_yaml_refuses_deep_nesting_past_libyaml_and_many_aliases() -> None:
    for text in ("[" * 100_000, "a: " + "[" * 30_000 + "]" * 30_000, "- " * 5000 + "x"):
        with pytest.raises(LimitExceeded, match="nesting depth 32"):
            load_yaml(text, "p.yaml")
    laughs = "a: &a [x, x]\n" + "".join(f"b{i}: &b{i} [*a, *a]\n" for i in range(200))
    with pytest.raises(LimitExceeded, match="100 aliases"):
        load_yaml(laughs, "p.yaml")
    with pytest.raises(InvalidInput, match=r"not valid YAML at line \d+, column \d+"):
        load_yaml("a: [", "p.yaml")


def test_csv_field_over_the_limit_names_row_and_limit() -> None:
    text = "a,b\n1,2\n3," + "x" * (limits.CSV_FIELD_CHARS + 1) + "\n"
    rows = limits.csv_guarded(csv.reader(io.StringIO(text)), "feed.csv", 1)
    with pytest.raises(LimitExceeded, match=r"feed.csv: over the limit of 131,072 characters in one field \(row 3\)"):
        list(rows)


def test_clip_marks_what_it_cut() -> None:
    assert clip("short", 10) == "short" and clip(None, 3) is None
    cut = clip("x" * 600, 500)
    assert cut is not None and len(cut) == 500 and cut.endswith(limits.TRUNCATED)


# --- every reader of outside input goes through them ----------------------------------------------

def test_device_messages_too_deep_are_rejected_never_raised() -> None:
    from cityward.domain import telemetry

    payload = b'{"v": 1, "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # 60 KB: under the size cap
    rejected = telemetry.decode_payload("cam-1", "state", payload)  # msgspec raised RecursionError
    assert isinstance(rejected, telemetry.Rejected) and rejected.reason == "malformed"
    assert "nested deeper than 32" in rejected.detail
    assert telemetry.claimed_device_id(payload) is None


def test_inventory_json_nested_inside_a_device_is_refused_by_depth() -> None:
    from cityward.adapters.inventory_files import FileFormat, open_inventory

    data = b'[{"id": "cam-1", "tags": ' + b"[" * 20_000 + b"]" * 20_000 + b"}]"
    with pytest.raises(LimitExceeded, match=r"devices.json: over the limit of nesting depth 16"):
        list(open_inventory(io.BytesIO(data), "devices.json", FileFormat.JSON).rows)


def test_handover_files_and_feeds_refuse_by_limit() -> None:
    from cityward.domain import feeds
    from cityward.services.credentials import parse_handover

    with pytest.raises(LimitExceeded, match="nesting depth 32"):
        parse_handover(io.BytesIO(b'{"cam-1": ' + b"[" * 1000 + b"]" * 1000 + b"}"), "handover.json")
    with pytest.raises(LimitExceeded, match=r"handover.csv: over the limit of 131,072 characters in one field"):
        parse_handover(io.BytesIO(b'device_id,password\ncam-1,"' + b"x" * 200_000 + b'"\n'), "handover.csv")
    with pytest.raises(LimitExceeded, match=r"kev.csv: over the limit of 131,072 characters in one field \(row 1\)"):
        feeds.kev_from_csv('cveID,"' + "x" * 200_000 + '"\n', "kev.csv")
    kev = feeds.kev_from_json({"vulnerabilities": [{"cveID": "CVE-2024-0001", "dateAdded": "2024-01-01",
                                                    "vendorProject": "V" * 300}]}, "kev.json")
    assert kev.entries[0].vendor.endswith(limits.TRUNCATED) and len(kev.entries[0].vendor) == 200


def test_policy_files_refuse_deep_yaml_by_name() -> None:
    from cityward.domain.policy.document import parse_policy

    with pytest.raises(LimitExceeded, match=r"p.yaml: over the limit of nesting depth 32 \(line 1, column \d+\)"):
        parse_policy("rules: " + "[" * 100_000, "p.yaml")  # was RecursionError
