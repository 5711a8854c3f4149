"""The condition language: parsed by hand into a typed tree, never handed to `eval`.

    credential_state in ['default', 'weak'] or password_age > 365d
    firmware_version < '2.4.0' and kind == 'camera'
    any_in(services, ['telnet', 'ftp']) and not quarantined

A hand-written recursive-descent parser because the language is tiny and its errors must point
at a column of a rule's condition; a parser generator would add a dependency for a page of code.
The tree is then type-checked against the fact catalog (facts.py) and compiled (to polars, in
adapters/policy_polars.py) or interpreted one device at a time (reference.py), with the same
three-valued semantics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from cityward.domain.policy.facts import FACTS, FactType

MAX_CONDITION_CHARS = 4000
MAX_DEPTH = 64
NULL = "null"

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<duration>\d+(?:\.\d+)?[dhwy])\b
  | (?P<number>-?\d+(?:\.\d+)?)\b
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op>==|!=|<=|>=|<|>)
  | (?P<punct>[\[\](),])
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)
_KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}
_DAYS = {"d": 1.0, "h": 1 / 24, "w": 7.0, "y": 365.0}
FUNCTIONS = {"any_in": "true when the list shares at least one value with the given list"}


class ExprError(ValueError):
    """A problem at a column (1-based) of the condition."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.message = message
        self.column = column


@dataclass(frozen=True)
class Tok:
    kind: str  # duration, number, string, op, punct, word, keyword, end
    text: str
    column: int


def tokenize(text: str) -> list[Tok]:
    if len(text) > MAX_CONDITION_CHARS:
        raise ExprError(f"condition longer than {MAX_CONDITION_CHARS} characters", 1)
    out: list[Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExprError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup or ""
        if kind != "ws":
            value = m.group()
            if kind == "word" and value in _KEYWORDS:
                kind = "keyword"
            out.append(Tok(kind, value, pos + 1))
        pos = m.end()
    out.append(Tok("end", "", len(text) + 1))
    return out


# --- the tree -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Lit:
    value: str | float | bool | None
    type: FactType | None  # None: the null literal
    column: int


@dataclass(frozen=True)
class ListLit:
    items: tuple[Lit, ...]
    column: int


@dataclass(frozen=True)
class FactRef:
    name: str
    column: int


@dataclass(frozen=True)
class Not:
    operand: Node
    column: int


@dataclass(frozen=True)
class BoolOp:
    op: str  # and, or
    left: Node
    right: Node
    column: int


@dataclass(frozen=True)
class Compare:
    op: str  # == != < <= > >=
    left: Node
    right: Node
    column: int


@dataclass(frozen=True)
class In:
    needle: Node
    haystack: Node
    negated: bool
    column: int


@dataclass(frozen=True)
class IsNull:
    operand: Node
    negated: bool
    column: int


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]
    column: int


Node = Union[Lit, ListLit, FactRef, Not, BoolOp, Compare, In, IsNull, Call]  # noqa: UP007 - runtime alias


# --- parsing --------------------------------------------------------------------------------------

class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def take(self) -> Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, text: str) -> Tok:
        if self.tok.text != text:
            raise ExprError(f"expected {text!r}, found {self.tok.text or 'the end'!r}", self.tok.column)
        return self.take()

    def parse(self) -> Node:
        node = self.or_()
        if self.tok.kind != "end":
            raise ExprError(f"unexpected {self.tok.text!r}", self.tok.column)
        return node

    def _deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"nested deeper than {MAX_DEPTH} levels", self.tok.column)

    def or_(self) -> Node:
        left = self.and_()
        while self.tok.text == "or" and self.tok.kind == "keyword":
            col = self.take().column
            left = BoolOp("or", left, self.and_(), col)
        return left

    def and_(self) -> Node:
        left = self.not_()
        while self.tok.text == "and" and self.tok.kind == "keyword":
            col = self.take().column
            left = BoolOp("and", left, self.not_(), col)
        return left

    def not_(self) -> Node:
        if self.tok.text == "not" and self.tok.kind == "keyword":
            col = self.take().column
            self._deeper()
            node = Not(self.not_(), col)
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Node:
        left = self.atom()
        t = self.tok
        if t.kind == "op":
            self.take()
            return Compare(t.text, left, self.atom(), t.column)
        if t.kind == "keyword" and t.text == "in":
            self.take()
            return In(left, self.atom(), False, t.column)
        if t.kind == "keyword" and t.text == "not" and self.toks[self.i + 1].text == "in":
            self.take()
            self.take()
            return In(left, self.atom(), True, t.column)
        if t.kind == "keyword" and t.text == "is":
            self.take()
            negated = False
            if self.tok.text == "not":
                self.take()
                negated = True
            self.expect("null")
            return IsNull(left, negated, t.column)
        return left

    def atom(self) -> Node:
        t = self.tok
        if t.kind == "punct" and t.text == "(":
            self.take()
            self._deeper()
            node = self.or_()
            self.depth -= 1
            self.expect(")")
            return node
        if t.kind == "punct" and t.text == "[":
            self.take()
            items: list[Lit] = []
            while self.tok.text != "]":
                item = self.atom()
                if not isinstance(item, Lit) or item.type is None:
                    raise ExprError("a list holds text, numbers or durations only", item.column)
                items.append(item)
                if self.tok.text == ",":
                    self.take()
                elif self.tok.text != "]":
                    raise ExprError(f"expected ',' or ']', found {self.tok.text or 'the end'!r}", self.tok.column)
            self.take()
            return ListLit(tuple(items), t.column)
        self.take()
        if t.kind == "number":
            return Lit(float(t.text), FactType.NUMBER, t.column)
        if t.kind == "duration":
            return Lit(float(t.text[:-1]) * _DAYS[t.text[-1]], FactType.AGE, t.column)
        if t.kind == "string":
            body = t.text[1:-1]
            return Lit(re.sub(r"\\(.)", r"\1", body), FactType.STR, t.column)
        if t.kind == "keyword" and t.text in ("true", "false"):
            return Lit(t.text == "true", FactType.BOOL, t.column)
        if t.kind == "keyword" and t.text == NULL:
            return Lit(None, None, t.column)
        if t.kind == "word":
            if self.tok.text == "(":
                self.take()
                args: list[Node] = []
                while self.tok.text != ")":
                    args.append(self.or_())
                    if self.tok.text == ",":
                        self.take()
                    elif self.tok.text != ")":
                        raise ExprError(f"expected ',' or ')', found {self.tok.text or 'the end'!r}",
                                        self.tok.column)
                self.take()
                return Call(t.text, tuple(args), t.column)
            return FactRef(t.text, t.column)
        raise ExprError(f"unexpected {t.text or 'end of condition'!r}", t.column)


def parse(text: str) -> Node:
    """Parse a condition; ExprError names the column of the first problem."""
    return _Parser(text).parse()


# --- type checking --------------------------------------------------------------------------------

_ORDERED = {FactType.NUMBER, FactType.AGE, FactType.VERSION}


def _type(node: Node) -> FactType | None:
    if isinstance(node, Lit):
        return node.type
    if isinstance(node, ListLit):
        return FactType.LIST
    if isinstance(node, FactRef):
        fact = FACTS.get(node.name)
        if fact is None:
            close = [n for n in FACTS if n.startswith(node.name[:4])][:3]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ExprError(f"unknown fact {node.name!r}{hint}", node.column)
        return fact.type
    if isinstance(node, Not):
        _expect_bool(node.operand, "not")
        return FactType.BOOL
    if isinstance(node, BoolOp):
        _expect_bool(node.left, node.op)
        _expect_bool(node.right, node.op)
        return FactType.BOOL
    if isinstance(node, IsNull):
        if not isinstance(node.operand, FactRef):
            raise ExprError("`is null` applies to a fact", node.column)
        _type(node.operand)
        return FactType.BOOL
    if isinstance(node, Compare):
        _check_compare(node)
        return FactType.BOOL
    if isinstance(node, In):
        _check_in(node)
        return FactType.BOOL
    return _check_call(node)


def _expect_bool(node: Node, where: str) -> None:
    t = _type(node)
    if t is not FactType.BOOL:
        raise ExprError(f"`{where}` needs a true/false condition, not {t or 'null'}", _column(node))


def _column(node: Node) -> int:
    return node.column


def _check_compare(node: Compare) -> None:
    lt, rt = _type(node.left), _type(node.right)
    if lt is None or rt is None:
        raise ExprError("compare with null using `is null` / `is not null`", node.column)
    if lt is FactType.LIST or rt is FactType.LIST:
        raise ExprError("a list cannot be compared; use `'x' in list` or any_in(list, [...])", node.column)
    if {lt, rt} == {FactType.VERSION, FactType.STR} and (isinstance(node.left, Lit) or isinstance(node.right, Lit)):
        pass  # a version written as text: '2.4.0'
    elif lt is not rt:
        raise ExprError(f"cannot compare {lt} with {rt}", node.column)
    if node.op not in ("==", "!=") and lt not in _ORDERED and rt not in _ORDERED:
        raise ExprError(f"`{node.op}` needs numbers, ages or versions, not {lt}", node.column)
    if not isinstance(node.left, FactRef) and not isinstance(node.right, FactRef):
        raise ExprError("the comparison involves no device fact", node.column)
    for fact_side, lit_side in ((node.left, node.right), (node.right, node.left)):
        if isinstance(fact_side, FactRef) and isinstance(lit_side, Lit):
            allowed = FACTS[fact_side.name].values
            if allowed is not None and lit_side.value not in allowed:
                raise ExprError(f"{fact_side.name} is never {lit_side.value!r} (it is one of "
                                f"{', '.join(sorted(allowed))}): the rule would match nothing", lit_side.column)


def _check_in(node: In) -> None:
    nt, ht = _type(node.needle), _type(node.haystack)
    if ht is not FactType.LIST:
        raise ExprError("`in` needs a list on its right", node.column)
    if isinstance(node.haystack, ListLit):
        if not isinstance(node.needle, FactRef):
            raise ExprError("`in [...]` needs a device fact on its left", node.column)
        item_types = {i.type for i in node.haystack.items}
        want = FactType.STR if nt is FactType.VERSION else nt
        if item_types - {want}:
            raise ExprError(f"the list must hold {nt} values like {node.needle.name}", node.haystack.column)
        allowed = FACTS[node.needle.name].values
        if allowed is not None:
            for item in node.haystack.items:
                if item.value not in allowed:
                    raise ExprError(f"{node.needle.name} is never {item.value!r}", item.column)
        return
    if nt is not FactType.STR or not isinstance(node.needle, Lit):
        raise ExprError("`'value' in list_fact` needs a text value on its left", node.column)


def _check_call(node: Call) -> FactType:
    if node.name not in FUNCTIONS:
        raise ExprError(f"unknown function {node.name!r} (known: {', '.join(FUNCTIONS)})", node.column)
    if len(node.args) != 2 or not isinstance(node.args[0], FactRef) or not isinstance(node.args[1], ListLit):
        raise ExprError("any_in takes a list fact and a list of values: any_in(services, ['telnet'])", node.column)
    if _type(node.args[0]) is not FactType.LIST:
        raise ExprError(f"{node.args[0].name} is not a list", node.args[0].column)
    if {i.type for i in node.args[1].items} - {FactType.STR}:
        raise ExprError("any_in compares text values", node.args[1].column)
    return FactType.BOOL


def check(node: Node) -> None:
    """The condition is a well-typed true/false expression over known facts."""
    t = _type(node)
    if t is not FactType.BOOL:
        raise ExprError(f"a condition must be true or false, not {t or 'null'}", node.column)
    if not facts_used(node):
        raise ExprError("the condition involves no device fact: it is the same for every device", node.column)


def compile_condition(text: str) -> Node:
    node = parse(text)
    check(node)
    return node


def facts_used(node: Node) -> set[str]:
    if isinstance(node, FactRef):
        return {node.name}
    out: set[str] = set()
    for child in _children(node):
        out |= facts_used(child)
    return out


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Not):
        return (node.operand,)
    if isinstance(node, (BoolOp, Compare)):
        return (node.left, node.right)
    if isinstance(node, In):
        return (node.needle, node.haystack)
    if isinstance(node, IsNull):
        return (node.operand,)
    if isinstance(node, Call):
        return node.args
    return ()
