"""A policy file (YAML, docs/policy.md) checked whole: every problem is reported, with the rule id,
the field and, for conditions, the column; nothing half-valid is ever used."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cityward.domain.limits import MAX_POLICY_BYTES, load_yaml
from cityward.domain.policy import expr
from cityward.domain.policy.controls import CATALOGS, Catalog
from cityward.domain.policy.expr import ExprError, Node
from cityward.domain.policy.facts import FACTS
from cityward.errors import InvalidInput, Problem

MAX_RULES = 1000
RULE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {s: i for i, s in enumerate(Severity)}


class Remediation(StrEnum):
    """The bulk operation that fixes a finding (run as a rollout)."""

    ROTATE_CREDENTIALS = "rotate_credentials"
    UPGRADE_FIRMWARE = "upgrade_firmware"
    DISABLE_SERVICES = "disable_services"
    RENEW_CERTIFICATE = "renew_certificate"
    RESTRICT_REMOTE_ACCESS = "restrict_remote_access"
    APPLY_CONFIGURATION = "apply_configuration"
    QUARANTINE = "quarantine"
    REPLACE_DEVICE = "replace_device"
    VERIFY_ORIGIN = "verify_origin"
    INSPECT = "inspect"


@dataclass(frozen=True)
class Scope:
    zones: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    products: tuple[str, ...] = ()  # "Brand Model" as labeled
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    rationale: str
    severity: Severity
    scope: Scope
    condition: str
    node: Node = field(compare=False, repr=False)
    controls: dict[Catalog, tuple[str, ...]]
    remediation: Remediation


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    rules: tuple[Rule, ...]
    prohibited_manufacturers: tuple[str, ...] = ()


_RULE_KEYS = {"id", "title", "rationale", "severity", "scope", "condition", "controls", "remediation"}
_TOP_KEYS = {"name", "description", "rules", "prohibited_manufacturers"}


def parse_policy(text: str | bytes, source: str) -> Policy:
    """Parse and check a policy; InvalidInput lists every problem (rule id, field, column)."""
    if len(text) > MAX_POLICY_BYTES:
        raise InvalidInput(f"{source}: larger than {MAX_POLICY_BYTES >> 10} KiB")
    data = load_yaml(text, source)  # depth, nodes and aliases bounded (domain/limits.py)
    problems: list[Problem] = []

    def bad(message: str, field_name: str, rule: str | None = None) -> None:
        problems.append(Problem(message, field=field_name, source=f"{source}: rule {rule}" if rule else source))

    if not isinstance(data, dict):
        raise InvalidInput(f"{source}: a policy is a mapping with `name` and `rules`")
    for key in sorted(set(data) - _TOP_KEYS):
        bad(f"unknown key {key!r} (known: {', '.join(sorted(_TOP_KEYS))})", str(key))
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        bad("a name of 1-100 characters is required", "name")
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        bad("a non-empty list of rules is required", "rules")
        raw_rules = []
    if len(raw_rules) > MAX_RULES:
        raise InvalidInput(f"{source}: {len(raw_rules)} rules; at most {MAX_RULES}")
    prohibited = data.get("prohibited_manufacturers") or []
    if not isinstance(prohibited, list) or not all(isinstance(m, str) and m.strip() for m in prohibited):
        bad("a list of manufacturer names", "prohibited_manufacturers")
        prohibited = []
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules):
        rule = _rule(raw, index, seen, bad)
        if rule is not None:
            rules.append(rule)
    if problems:
        raise InvalidInput(f"{source}: {len(problems)} problems; the policy was not used", problems[:200],
                           more=max(0, len(problems) - 200),
                           hint="fix them and run `cityward policy validate` again")
    assert isinstance(name, str)
    description = data.get("description")
    return Policy(name.strip(), description if isinstance(description, str) else "", tuple(rules),
                  tuple(m.strip() for m in prohibited))


def _strings(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(v.strip() for v in value)
    return None


def _rule(raw: Any, index: int, seen: set[str], bad: Any) -> Rule | None:
    label = f"#{index + 1}"
    if not isinstance(raw, dict):
        bad("a rule is a mapping", f"rules[{index}]", label)
        return None
    rule_id = raw.get("id")
    if isinstance(rule_id, str) and RULE_ID.match(rule_id):
        label = rule_id
        if rule_id in seen:
            bad("duplicate rule id", "id", label)
        seen.add(rule_id)
    else:
        bad("an id of letters, digits, '.', '_' or '-' (starting with a letter) is required", "id", label)
    ok = True
    for key in sorted(set(raw) - _RULE_KEYS):
        bad(f"unknown key {key!r}", str(key), label)
        ok = False
    for key in ("title", "rationale"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip() or len(value) > 2000:
            bad(f"{key} is required (1-2000 characters)", key, label)
            ok = False
    try:
        severity = Severity(str(raw.get("severity")))
    except ValueError:
        bad(f"severity must be one of {', '.join(s.value for s in Severity)}", "severity", label)
        ok = False
    try:
        remediation = Remediation(str(raw.get("remediation")))
    except ValueError:
        bad(f"remediation must be one of {', '.join(r.value for r in Remediation)}", "remediation", label)
        ok = False
    scope_raw = raw.get("scope") or {}
    scope_parts: dict[str, tuple[str, ...]] = {}
    if not isinstance(scope_raw, dict) or set(scope_raw) - {"zones", "kinds", "products", "tags"}:
        bad("scope may hold zones, kinds, products and tags", "scope", label)
        ok = False
    else:
        for key in ("zones", "kinds", "products", "tags"):
            values = _strings(scope_raw.get(key))
            if values is None:
                bad("a name or a list of names", f"scope.{key}", label)
                ok = False
            else:
                scope_parts[key] = values
        kinds_known = FACTS["kind"].values or frozenset()
        for kind in scope_parts.get("kinds", ()):
            if kind not in kinds_known:
                bad(f"unknown kind {kind!r}: the rule would match nothing", "scope.kinds", label)
                ok = False
    controls_raw = raw.get("controls")
    controls: dict[Catalog, tuple[str, ...]] = {}
    if not isinstance(controls_raw, dict) or not controls_raw:
        bad(f"controls map at least one of {', '.join(c.value for c in Catalog)} to ids", "controls", label)
        ok = False
    else:
        for key, ids in controls_raw.items():
            try:
                catalog = Catalog(key)
            except ValueError:
                bad(f"unknown catalog {key!r} (known: {', '.join(c.value for c in Catalog)})", "controls", label)
                ok = False
                continue
            values = _strings(ids)
            unknown = [v for v in values or () if v not in CATALOGS[catalog]]
            if values is None or unknown:
                bad(f"unknown {catalog.value} ids: {', '.join(unknown) or ids!r}", f"controls.{key}", label)
                ok = False
                continue
            controls[catalog] = values
    condition = raw.get("condition")
    node: Node | None = None
    if not isinstance(condition, str) or not condition.strip():
        bad("a condition is required", "condition", label)
        ok = False
    else:
        try:
            node = expr.compile_condition(condition)
        except ExprError as exc:
            bad(f"{exc.message} (column {exc.column}: …{condition[max(0, exc.column - 12):exc.column + 12]}…)",
                "condition", label)
            ok = False
    if not ok or node is None:
        return None
    assert isinstance(condition, str) and isinstance(rule_id, str)
    return Rule(rule_id, str(raw["title"]).strip(), str(raw["rationale"]).strip(), severity,
                Scope(**scope_parts), condition.strip(), node, controls, remediation)


def coverage(policy: Policy) -> dict[Catalog, tuple[list[str], list[str]]]:
    """Per catalog: (covered ids, uncovered ids), in the catalog's order."""
    cited = {c: {i for r in policy.rules for i in r.controls.get(c, ())} for c in Catalog}
    return {c: ([i for i in ids if i in cited[c]], [i for i in ids if i not in cited[c]])
            for c, ids in CATALOGS.items()}
