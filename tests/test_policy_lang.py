"""The condition language: parser errors with columns, type checks, and the compiled (polars)
evaluation agreeing exactly with the reference interpreter on random fleets and random rules."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cityward.adapters.policy_polars import compile_condition, fact_frame, version_key_expr
from cityward.domain.policy import expr
from cityward.domain.policy.expr import ExprError
from cityward.domain.policy.facts import FACTS, FactType
from cityward.domain.policy.reference import evaluate
from cityward.domain.policy.versions import version_key

WORDS = ["telnet", "ftp", "upnp", "ssh", "http", "vpn", "vendor-cloud", "A", "b"]
VERSIONS = ["1.2.3", "2.4", "2.4.0", "10.0.1", "V5.5.0 build 170725", "V5.4.4 Build 161125", "beta", "",
            "99999999999.1"]


def _value(fact: str) -> st.SearchStrategy[Any]:
    f = FACTS[fact]
    if f.values is not None:
        base: st.SearchStrategy[Any] = st.sampled_from(sorted(f.values))
    elif f.type is FactType.STR:
        base = st.sampled_from(WORDS)
    elif f.type is FactType.NUMBER:
        base = st.integers(-5, 5).map(float)
    elif f.type is FactType.BOOL:
        base = st.booleans()
    elif f.type is FactType.AGE:
        base = st.sampled_from([-40.0, -1.0, 0.0, 0.5, 7.0, 29.9, 30.0, 400.0])
    elif f.type is FactType.VERSION:
        base = st.sampled_from(VERSIONS)
    else:
        base = st.lists(st.sampled_from(WORDS), max_size=3)
    return st.one_of(st.none(), base)


FLEET_FACTS = sorted(FACTS)
fleets = st.lists(st.fixed_dictionaries({name: _value(name) for name in FLEET_FACTS}), min_size=1, max_size=12)


def _literal(fact: str) -> st.SearchStrategy[str]:
    f = FACTS[fact]
    if f.values is not None:
        return st.sampled_from(sorted(f.values)).map(lambda v: f"'{v}'")
    return {
        FactType.STR: st.sampled_from(WORDS).map(lambda v: f"'{v}'"),
        FactType.NUMBER: st.integers(-5, 5).map(str),
        FactType.BOOL: st.sampled_from(["true", "false"]),
        FactType.AGE: st.sampled_from(["0d", "1d", "30d", "12h", "2w", "1y"]),
        FactType.VERSION: st.sampled_from(VERSIONS).map(lambda v: f"'{v}'"),
        FactType.LIST: st.just("[]"),
    }[f.type]


@st.composite
def atoms(draw: st.DrawFn) -> str:
    fact = draw(st.sampled_from(FLEET_FACTS))
    f = FACTS[fact]
    if f.type is FactType.LIST:
        word = draw(st.sampled_from(WORDS))
        return draw(st.sampled_from([f"'{word}' in {fact}", f"'{word}' not in {fact}",
                                     f"any_in({fact}, ['{word}', 'ssh'])", f"{fact} is null"]))
    if f.type is FactType.BOOL:
        return draw(st.sampled_from([fact, f"{fact} == {draw(_literal(fact))}", f"{fact} is not null"]))
    ops = ["==", "!="] + (["<", "<=", ">", ">="] if f.type in (FactType.NUMBER, FactType.AGE,
                                                              FactType.VERSION) else [])
    op = draw(st.sampled_from(ops))
    choice = draw(st.integers(0, 3))
    if choice == 0 and f.type in (FactType.STR, FactType.VERSION, FactType.NUMBER):
        items = draw(st.lists(_literal(fact), min_size=1, max_size=3))
        return f"{fact} {'not in' if draw(st.booleans()) else 'in'} [{', '.join(items)}]"
    if choice == 1:
        return f"{fact} is {'not ' if draw(st.booleans()) else ''}null"
    if choice == 2:
        return f"{draw(_literal(fact))} {op} {fact}"
    return f"{fact} {op} {draw(_literal(fact))}"


conditions = st.recursive(
    atoms(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda c: f"not {c}"),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets, conditions)
def test_compiled_audit_agrees_with_the_reference(fleet: list[dict[str, Any]], condition: str) -> None:
    try:
        node = expr.compile_condition(condition)
    except ExprError:
        assume(False)
        raise
    compiled = fact_frame(fleet).select(compile_condition(node).alias("hit"))["hit"].to_list()
    expected = [evaluate(node, device) for device in fleet]
    assert compiled == expected, condition


@given(st.one_of(st.sampled_from(VERSIONS), st.text(max_size=30)))
def test_vectorized_version_key_matches(version: str) -> None:
    frame = pl.DataFrame({"v": [version]}, schema={"v": pl.String})
    assert frame.select(version_key_expr("v").alias("k"))["k"].to_list() == [version_key(version)]


def test_version_order_across_schemes() -> None:
    ordered = ["1.2.3", "1.10.0", "2.4", "2.4.0", "V5.4.4 Build 161125", "V5.5.0 build 170725", "10.0.1"]
    keys = [version_key(v) for v in ordered]
    assert keys == sorted(keys)  # type: ignore[type-var]


@pytest.mark.parametrize("condition, column, needle", [
    ("kind == 'camera' and", 21, "unexpected"),
    ("kind == 'toaster'", 9, "match nothing"),
    ("firmware_version > 3d", 18, "cannot compare version with age"),
    ("firmwar == '1'", 1, "unknown fact"),
    ("services == 'telnet'", 10, "list cannot be compared"),
    ("credential_state < 'weak'", 18, "needs numbers"),
    ("kind == 'camera' or 1", 21, "true/false"),
    ("'a' == 'a'", 5, "no device fact"),
    ("kind in ['camera', 'toaster']", 20, "never 'toaster'"),
    ("password_age > 30x", 16, "unexpected character"),
    ("kind == null", 6, "is null"),
    ("bogus(services)", 1, "unknown function"),
    ("(" * 70 + "online" + ")" * 70, 66, "nested deeper"),
    ("true", 1, "no device fact"),
    ("kind = 'camera'", 6, "unexpected character"),
    ("online", None, None),
    ("'telnet' in services and password_age >= 1y and firmware_version < 'V5.5.0 build 170725'", None, None),
])
def test_errors_name_the_column(condition: str, column: int | None, needle: str | None) -> None:
    if column is None:
        expr.compile_condition(condition)
        return
    with pytest.raises(ExprError) as exc:
        expr.compile_condition(condition)
    assert exc.value.column == column and (needle or "") in exc.value.message, str(exc.value)


def test_oversized_condition_is_refused() -> None:
    with pytest.raises(ExprError, match="longer than"):
        expr.compile_condition("online or " * 1000 + "online")
