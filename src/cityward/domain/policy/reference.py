"""The reference interpreter: one device at a time, in plain Python, with the same three-valued
logic as the compiled audit. Slow on purpose (it is the yardstick the compiler is tested and
benchmarked against), and the definition of what a condition means."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from cityward.domain.policy.expr import BoolOp, Call, Compare, FactRef, In, IsNull, ListLit, Lit, Node, Not
from cityward.domain.policy.facts import FACTS, FactType
from cityward.domain.policy.versions import version_key

Truth = bool | None  # None: unknown

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def evaluate(node: Node, facts: Mapping[str, Any]) -> Truth:
    if isinstance(node, BoolOp):
        left, right = evaluate(node.left, facts), evaluate(node.right, facts)
        if node.op == "and":
            if left is False or right is False:
                return False
            return None if left is None or right is None else True
        if left is True or right is True:
            return True
        return None if left is None or right is None else False
    if isinstance(node, Not):
        inner = evaluate(node.operand, facts)
        return None if inner is None else not inner
    if isinstance(node, IsNull):
        assert isinstance(node.operand, FactRef)
        missing = facts.get(node.operand.name) is None
        return not missing if node.negated else missing
    if isinstance(node, Compare):
        versions = _is_version(node.left) or _is_version(node.right)
        left, right = _value(node.left, facts, versions), _value(node.right, facts, versions)
        if left is None or right is None:
            return None
        return _OPS[node.op](left, right)
    if isinstance(node, In):
        if isinstance(node.haystack, ListLit):
            needle = _value(node.needle, facts, _is_version(node.needle))
            if needle is None:
                return None
            versions = _is_version(node.needle)
            found = needle in {version_key(str(i.value)) if versions else i.value for i in node.haystack.items}
        else:
            haystack = _value(node.haystack, facts, False)
            if haystack is None:
                return None
            found = _value(node.needle, facts, False) in haystack
        return not found if node.negated else found
    if isinstance(node, FactRef):  # a true/false fact on its own: `online`
        value = facts.get(node.name)
        return None if value is None else bool(value)
    if isinstance(node, Call):  # any_in(list_fact, [...])
        values = _value(node.args[0], facts, False)
        if values is None:
            return None
        wanted = node.args[1]
        assert isinstance(wanted, ListLit)
        return bool(set(values) & {i.value for i in wanted.items})
    raise TypeError(f"not a condition: {node!r}")


def _is_version(node: Node) -> bool:
    return isinstance(node, FactRef) and FACTS[node.name].type is FactType.VERSION


def _value(node: Node, facts: Mapping[str, Any], versions: bool) -> Any:
    if isinstance(node, FactRef):
        value = facts.get(node.name)
        return version_key(value) if versions and value is not None else value
    if isinstance(node, Lit):
        return version_key(str(node.value)) if versions and node.value is not None else node.value
    raise TypeError(f"not a value: {node!r}")
