"""Conditions compiled to polars expressions: a whole fleet is evaluated column-wise, in Rust.

Same meaning as the reference interpreter (domain/policy/reference.py), which the property tests
hold it to: polars' `&`, `|` and `~` follow three-valued logic, and membership tests on a null
are made null explicitly.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from cityward.domain.policy.expr import BoolOp, Call, Compare, FactRef, In, IsNull, ListLit, Lit, Node, Not
from cityward.domain.policy.facts import FACTS, FactType
from cityward.domain.policy.versions import version_key

VKEY = "__vkey"  # suffix of the sortable key column of a version fact
_NULL_BOOL = pl.lit(None, dtype=pl.Boolean)


_DTYPES: dict[FactType, Any] = {
    FactType.STR: pl.String, FactType.NUMBER: pl.Float64, FactType.BOOL: pl.Boolean, FactType.AGE: pl.Float64,
    FactType.VERSION: pl.String, FactType.LIST: pl.List(pl.String),
}
FACT_SCHEMA: dict[str, Any] = {name: _DTYPES[f.type] for name, f in FACTS.items()}


def fact_frame(devices: list[dict[str, Any]]) -> pl.DataFrame:
    """A fact table (one row per device, one column per fact) ready for compiled conditions."""
    return with_version_keys(pl.DataFrame(devices, schema=FACT_SCHEMA))


def version_key_expr(column: str) -> pl.Expr:
    """domain.policy.versions.version_key, vectorized (the tests hold the two to the same output)."""
    col = pl.col(column)
    groups = col.str.extract_all(r"[0-9]+").list.eval(
        pl.when(pl.element().str.len_chars() > 10).then(pl.lit("9999999999"))
        .otherwise(pl.element().str.zfill(10)))
    return (pl.when(col.is_null()).then(pl.lit(None, dtype=pl.String))
            .when(groups.list.len() == 0).then(pl.lit("~") + col.str.to_lowercase())
            .otherwise(groups.list.join(".")))


def with_version_keys(frame: pl.DataFrame) -> pl.DataFrame:
    """A `<fact>__vkey` column per version fact. A fleet has a few hundred distinct versions for a
    million devices: key each distinct value once and map it back."""
    cols = [name for name, f in FACTS.items() if f.type is FactType.VERSION and name in frame.columns]
    out = []
    for c in cols:
        keys = frame.select(pl.col(c).unique().drop_nulls()).with_columns(version_key_expr(c).alias("key"))
        out.append(pl.col(c).replace_strict(keys[c], keys["key"], default=None, return_dtype=pl.String)
                   .alias(c + VKEY))
    return frame.with_columns(out)


def _is_version(node: Node) -> bool:
    return isinstance(node, FactRef) and FACTS[node.name].type is FactType.VERSION


def _operand(node: Node, versions: bool) -> pl.Expr:
    if isinstance(node, FactRef):
        return pl.col(node.name + VKEY if versions else node.name)
    if isinstance(node, Lit):
        return pl.lit(version_key(str(node.value)) if versions else node.value)
    raise TypeError(f"not a value: {node!r}")


def _guarded(column: pl.Expr, test: pl.Expr) -> pl.Expr:
    return pl.when(column.is_null()).then(_NULL_BOOL).otherwise(test)


def compile_condition(node: Node) -> pl.Expr:
    if isinstance(node, BoolOp):
        left, right = compile_condition(node.left), compile_condition(node.right)
        return left & right if node.op == "and" else left | right
    if isinstance(node, Not):
        return ~compile_condition(node.operand)
    if isinstance(node, IsNull):
        assert isinstance(node.operand, FactRef)
        col = pl.col(node.operand.name)
        return col.is_not_null() if node.negated else col.is_null()
    if isinstance(node, Compare):
        versions = _is_version(node.left) or _is_version(node.right)
        left, right = _operand(node.left, versions), _operand(node.right, versions)
        ops: dict[str, Any] = {"==": left.__eq__, "!=": left.__ne__, "<": left.__lt__, "<=": left.__le__,
                               ">": left.__gt__, ">=": left.__ge__}
        result: pl.Expr = ops[node.op](right)
        return result
    if isinstance(node, In):
        if isinstance(node.haystack, ListLit):
            versions = _is_version(node.needle)
            col = _operand(node.needle, versions)
            values = [version_key(str(i.value)) if versions else i.value for i in node.haystack.items]
            test = _guarded(col, col.is_in(values))
        else:
            assert isinstance(node.haystack, FactRef) and isinstance(node.needle, Lit)
            col = pl.col(node.haystack.name)
            test = _guarded(col, col.list.contains(pl.lit(node.needle.value)))
        return ~test if node.negated else test
    if isinstance(node, FactRef):  # a true/false fact on its own: `online`
        return pl.col(node.name)
    if isinstance(node, Call):
        fact, wanted = node.args
        assert isinstance(fact, FactRef) and isinstance(wanted, ListLit)
        col = pl.col(fact.name)
        values = [i.value for i in wanted.items]
        return _guarded(col, col.list.eval(pl.element().is_in(values)).list.any())
    raise TypeError(f"not a condition: {node!r}")
