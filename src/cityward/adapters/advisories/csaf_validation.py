"""Validate CSAF 2.0 documents: the OASIS JSON schema first, then the mandatory tests of section 6.1.

    violations = validate(document, "hikvision-2021-09.json")   # [] when the document is valid
    document = ensure_valid(document, "hikvision-2021-09.json")  # or raises CsafInvalid

Each `Violation` names the failing test (`"schema"` or a section number of the standard, such
as `"6.1.1"`), a JSON pointer to the offending value (`""` is the whole document) and a message.
Any input, including values that are not JSON at all, gives a list of violations and never an
exception. The list holds at most `MAX_VIOLATIONS` items; a final `"limit"` item says that more
were left out.

Schema. The OASIS CSAF 2.0 schema and FIRST's CVSS v2.0, v3.0 and v3.1 schemas come from
`schemas/` (see its README for where they come from) and are resolved from a local registry.
No reference is ever fetched. They are compiled once per process.

The engine is `jsonschema-rs` when it can be imported. It checks the schema of a 5 MB document
in some 20 ms, and the whole validation takes about 0.4 s. Otherwise the engine is
`jsonschema`, which is pure Python and takes several seconds for 5 MB (some 50 µs per JSON
value). Both assert the `date-time` format. jsonschema-rs also asserts `uri` and `email`.

jsonschema-rs collects every error of a document before it hands over the first. So an
invalid document of more than `MAX_NODES_FOR_ALL_ERRORS` values gets its first schema error
only, followed by a `"limit"` item. Without that cap, a hostile array of millions of wrong
items would cost a minute and gigabytes.

A schema error inside `/vulnerabilities/*/scores/*/cvss_v2` or `cvss_v3` is reported as test
6.1.8 (Invalid CVSS). The object is validated again against the CVSS schema of its version,
so that the violation names the property at fault rather than the CSAF schema's `oneOf`.

Mandatory tests run only on a document that passes the schema:

* 6.1.1 Missing definition of product ID
* 6.1.2 Multiple definition of product ID
* 6.1.3 Circular definition of product ID (relationships)
* 6.1.4 Missing definition of product group ID
* 6.1.5 Multiple definition of product group ID
* 6.1.6 Contradicting product status
* 6.1.7 Multiple scores with the same CVSS version per product
* 6.1.8 Invalid CVSS (reported by the schema stage, see above)
* 6.1.9 Invalid CVSS computation: base, temporal and environmental scores and severities,
  computed from `vectorString` with the `cvss` library
* 6.1.10 Inconsistent CVSS: a metric property that contradicts `vectorString`
* 6.1.13 PURL: does `packageurl-python` parse it?
* 6.1.14 Sorted revision history
* 6.1.16 Latest document version
* 6.1.21 Missing item in revision history
* 6.1.22 Multiple definition in revision history
* 6.1.23 Multiple use of the same CVE
* 6.1.11 CWE, 6.1.12 Language, 6.1.15 Translator, 6.1.17 Document status draft,
  6.1.18 Released revision history, 6.1.19 Revision history entries for pre-release versions,
  6.1.20 Non-draft document version, 6.1.24 Multiple definition in involvements, 6.1.25
  Multiple use of same hash algorithm, 6.1.26 Prohibited document category name, 6.1.28
  Translation, 6.1.29 Remediation, 6.1.30 Mixed integer and semantic versioning, 6.1.31 Version
  range in product version, 6.1.32 Flag without product reference and 6.1.33 Multiple flags
  with VEX justification codes per product (in `csaf_release_tests`)
* 6.1.27.1 to 6.1.27.11 Profile tests, reported under their own numbers (csaf_vex:
  vulnerabilities and product tree present, product status, CVE or IDs, an impact statement
  for every known_not_affected product and an action statement for every known_affected one)

So every mandatory test of section 6.1 runs. Any violation refuses the document on import.

Where the standard leaves a detail open, we follow the BSI reference validator
(secvisogram/csaf-validator-lib) and the OASIS test data. Revision history items are ordered by
date, with ties broken by ascending version. An integer version `n` compares like `n.0.0`. A
CVSS v2 vector without temporal or environmental metrics scores as if they were all
NOT_DEFINED. 6.1.31 looks for its range words ("all", "prior", ...) as whole
whitespace-separated tokens, as the test data has "after-eight" as a valid version name; so
"vers:all/*", which real CISA advisories put in a product_version branch, passes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import cache, lru_cache
from importlib import resources
from itertools import islice, pairwise
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, TypeGuard

from cvss import CVSS2, CVSS3
from packageurl import PackageURL

if TYPE_CHECKING:
    import jsonschema_rs

log = logging.getLogger(__name__)

MAX_VIOLATIONS: Final = 1000
MAX_NODES_FOR_ALL_ERRORS: Final = 50_000  # larger invalid documents get their first schema error only
MAX_MESSAGE_CHARS: Final = 300
SHOWN_IN_ERROR: Final = 5

SCHEMA_TEST: Final = "schema"
LIMIT_TEST: Final = "limit"

_SCHEMA_PACKAGE: Final = "cityward.adapters.advisories"
_CSAF_SCHEMA_FILE: Final = "csaf_json_schema.json"
_CVSS_SCHEMA_FILES: Final = {"2.0": "cvss-v2.0.json", "3.0": "cvss-v3.0.json", "3.1": "cvss-v3.1.json"}


# --- public API ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    """One failed check: which test, where (a JSON pointer; "" is the whole document), and what."""

    test: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.test} at {self.path or '(document)'}: {self.message}"


class CsafInvalid(ValueError):
    """A CSAF document failed validation. The message names it, its first violations and how many more."""

    def __init__(self, name: str, violations: Sequence[Violation]) -> None:
        self.name = name
        self.violations = tuple(violations)
        shown = "; ".join(str(v) for v in self.violations[:SHOWN_IN_ERROR])
        text = f"{name}: not a valid CSAF 2.0 document: {shown}"
        more = len(self.violations) - SHOWN_IN_ERROR
        if more > 0:
            text += f" (and {more} more)"
        super().__init__(text)


def validate(document: object, name: str) -> list[Violation]:
    """Check `document` (parsed JSON) against the CSAF 2.0 schema and mandatory tests; [] when valid.

    `name` (a file name or URL) is used only in log records.
    """
    report = _Report()
    if _schema_stage(_engine(), document, report) and isinstance(document, dict):
        _mandatory_stage(document, report, name)
    return report.result()


def ensure_valid(document: object, name: str) -> dict[str, Any]:
    """Return `document` if it is a valid CSAF 2.0 document, else raise `CsafInvalid`."""
    violations = validate(document, name)
    if violations or not isinstance(document, dict):
        raise CsafInvalid(name, violations or [Violation(SCHEMA_TEST, "", "not a JSON object")])
    return document


# --- collecting violations -----------------------------------------------------------------------


@dataclass
class _Report:
    items: list[Violation] = field(default_factory=list)
    dropped: int = 0
    incomplete: bool = False  # the schema engine's error stream was cut short

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_VIOLATIONS

    def add(self, test: str, path: str, message: str) -> None:
        if self.full:
            self.dropped += 1
        else:
            self.items.append(Violation(test, path, _clip(message)))

    def result(self) -> list[Violation]:
        out = list(self.items)
        if self.incomplete:
            out.append(Violation(LIMIT_TEST, "", "the list stops here; the document may have more violations"))
        elif self.dropped:
            out.append(Violation(LIMIT_TEST, "", f"{self.dropped} more violations were not listed"))
        return out


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


def _pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901 JSON pointer."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


# --- schema stage --------------------------------------------------------------------------------

_Path = tuple[str | int, ...]
_Errors = list[tuple[_Path, str]]


class _Engine(Protocol):
    """Schema errors as (path, message): at most MAX_VIOLATIONS, and whether that is all of them."""

    name: str

    def errors(self, instance: object) -> tuple[_Errors, bool]: ...

    def cvss_errors(self, version: str, instance: object) -> tuple[_Errors, bool]: ...


def _load_schema(file_name: str) -> dict[str, Any]:
    text = resources.files(_SCHEMA_PACKAGE).joinpath("schemas", file_name).read_text(encoding="utf-8")
    schema = json.loads(text)
    assert isinstance(schema, dict)
    return schema


def _cvss_schemas() -> dict[str, dict[str, Any]]:
    return {version: _load_schema(file_name) for version, file_name in _CVSS_SCHEMA_FILES.items()}


def _registry_entries(schemas: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Each CVSS schema under its own id (`...cvss-v3.1.json?20211103`, the base of its internal
    references) and under the id without the query (which is how the CSAF schema refers to it)."""
    entries: list[tuple[str, dict[str, Any]]] = []
    for schema in schemas:
        uri = str(schema.get("$id") or schema.get("id"))
        entries.append((uri, schema))
        if "?" in uri:
            entries.append((uri.split("?", 1)[0], schema))
    return entries


class _RustEngine:
    name = "jsonschema-rs"

    def __init__(self) -> None:
        import jsonschema_rs

        self._error_class = jsonschema_rs.ValidationError
        cvss = _cvss_schemas()
        registry = jsonschema_rs.Registry(_registry_entries(cvss.values()))
        self._main = jsonschema_rs.validator_for(
            _load_schema(_CSAF_SCHEMA_FILE), registry=registry, validate_formats=True, offline=True
        )
        self._cvss = {
            version: jsonschema_rs.validator_for(schema, validate_formats=True, offline=True)
            for version, schema in cvss.items()
        }

    def errors(self, instance: object) -> tuple[_Errors, bool]:
        return self._errors(self._main, instance)

    def cvss_errors(self, version: str, instance: object) -> tuple[_Errors, bool]:
        return self._errors(self._cvss[version], instance)

    def _errors(self, validator: jsonschema_rs.Validator, instance: object) -> tuple[_Errors, bool]:
        # jsonschema-rs collects every error before it yields the first, at some 20 µs and a few
        # hundred bytes each: a few million (a hostile 5 MB array) would take a minute and
        # gigabytes. So a large invalid document gets its first error only.
        if validator.is_valid(instance):
            return [], True
        if _larger_than(instance, MAX_NODES_FOR_ALL_ERRORS):
            try:
                validator.validate(instance)
            except self._error_class as error:
                return [(tuple(error.instance_path), error.message)], False
            return [], True
        errors = [(tuple(error.instance_path), error.message) for error in validator.iter_errors(instance)]
        return errors[:MAX_VIOLATIONS], len(errors) <= MAX_VIOLATIONS


class _PythonEngine:
    name = "jsonschema"

    def __init__(self) -> None:
        from jsonschema import FormatChecker, validators
        from referencing import Registry, Resource

        cvss = _cvss_schemas()
        registry: Registry[Any] = Registry().with_resources(
            (uri, Resource.from_contents(schema)) for uri, schema in _registry_entries(cvss.values())
        )
        checker = FormatChecker(formats=())
        checker.checks("date-time")(_is_date_time)
        main = _load_schema(_CSAF_SCHEMA_FILE)
        self._main = validators.validator_for(main)(main, registry=registry, format_checker=checker)
        self._cvss = {
            version: validators.validator_for(schema)(schema, format_checker=checker)
            for version, schema in cvss.items()
        }

    def errors(self, instance: object) -> tuple[_Errors, bool]:
        return self._errors(self._main, instance)

    def cvss_errors(self, version: str, instance: object) -> tuple[_Errors, bool]:
        return self._errors(self._cvss[version], instance)

    @staticmethod
    def _errors(validator: Any, instance: object) -> tuple[_Errors, bool]:
        # jsonschema yields errors as it finds them: stop after the ones we can report.
        errors = [
            (tuple(error.absolute_path), error.message)
            for error in islice(validator.iter_errors(instance), MAX_VIOLATIONS + 1)
        ]
        return errors[:MAX_VIOLATIONS], len(errors) <= MAX_VIOLATIONS


@cache
def _engine() -> _Engine:
    try:
        return _RustEngine()
    except ImportError:
        log.warning("jsonschema-rs is not installed: CSAF schema validation falls back to jsonschema (slow)")
        return _PythonEngine()


def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or _parse_date(value) is not None


def _larger_than(instance: object, limit: int) -> bool:
    """Whether `instance` has more than `limit` values and keys (counting stops there)."""
    count = 0
    stack = [instance]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            count += 2 * len(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            count += len(node)
            stack.extend(node)
        if count > limit:
            return True
    return False


def _schema_stage(engine: _Engine, document: object, report: _Report) -> bool:
    """Report schema violations; True when there are none."""
    before = len(report.items)
    try:
        errors, complete = engine.errors(document)
        cvss_objects: dict[_Path, str] = {}  # path of a CVSS object with errors -> its first message
        for path, message in errors:
            at = _cvss_object_path(path)
            if at is None:
                report.add(SCHEMA_TEST, _pointer(path), message)
            else:
                cvss_objects.setdefault(at, message)
        for at, message in cvss_objects.items():
            complete &= _report_invalid_cvss(engine, at, _value_at(document, at), message, report)
        report.incomplete |= not complete
    except RecursionError:
        report.add(SCHEMA_TEST, "", "the document is nested too deeply to be validated")
    except (ValueError, TypeError, OverflowError) as exc:
        # jsonschema-rs: its recursion limit, or a value JSON cannot hold (a set, bytes, a non-string key)
        report.add(SCHEMA_TEST, "", f"the document cannot be validated: {exc}")
    return len(report.items) == before and not report.incomplete


def _cvss_object_path(path: _Path) -> _Path | None:
    """`(vulnerabilities, i, scores, j, cvss_v2|cvss_v3)` when `path` lies within a CVSS object."""
    if len(path) >= 5 and path[0] == "vulnerabilities" and path[2] == "scores" and path[4] in ("cvss_v2", "cvss_v3"):
        return path[:5]
    return None


def _value_at(document: object, path: _Path) -> object:
    node = document
    for part in path:
        if isinstance(node, dict) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return None
    return node


def _report_invalid_cvss(engine: _Engine, at: _Path, cvss: object, fallback: str, report: _Report) -> bool:
    """Report a CVSS object's errors against the CVSS schema of its version; False if not all are listed."""
    props = _obj(cvss)
    version = "2.0" if at[-1] == "cvss_v2" else str(props.get("version"))
    if version not in _CVSS_SCHEMA_FILES:
        vector = props.get("vectorString")
        version = "3.0" if isinstance(vector, str) and vector.startswith("CVSS:3.0/") else "3.1"
    errors, complete = engine.cvss_errors(version, cvss)
    for path, message in errors:
        report.add("6.1.8", _pointer(at + path), f"not a valid CVSS v{version} object: {message}")
    if not errors:
        report.add("6.1.8", _pointer(at), fallback)
    return complete


# --- mandatory tests -----------------------------------------------------------------------------


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _arr(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _strings(value: object) -> Iterator[tuple[int, str]]:
    for i, item in enumerate(_arr(value)):
        if isinstance(item, str):
            yield i, item


_PRODUCT_STATUSES: Final = (
    "first_affected",
    "first_fixed",
    "fixed",
    "known_affected",
    "known_not_affected",
    "last_affected",
    "recommended",
    "under_investigation",
)
_PRODUCT_ID_LISTS: Final = (("remediations", "product_ids"), ("threats", "product_ids"), ("flags", "product_ids"))
_GROUP_ID_LISTS: Final = (("remediations", "group_ids"), ("threats", "group_ids"), ("flags", "group_ids"))


class _Document:
    """The parts of a schema-valid document that several tests use, indexed once."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.tree = _obj(doc.get("product_tree"))
        self.vulnerabilities = _arr(doc.get("vulnerabilities"))
        self.meta = _obj(doc.get("document"))
        self.category = self.meta.get("category")
        self.tracking = _obj(self.meta.get("tracking"))
        self.full_product_names = list(_full_product_names(self.tree))
        self.groups: dict[str, set[str]] = {}
        for group in _arr(self.tree.get("product_groups")):
            group_id = _obj(group).get("group_id")
            if isinstance(group_id, str):
                members = self.groups.setdefault(group_id, set())
                members.update(pid for _, pid in _strings(_obj(group).get("product_ids")))

    def products_of(self, item: dict[str, Any]) -> set[str]:
        """Product IDs an item (threat, flag, remediation) names, directly or through its groups."""
        products = {pid for _, pid in _strings(item.get("product_ids"))}
        for _, group_id in _strings(item.get("group_ids")):
            products |= self.groups.get(group_id, set())
        return products


def _full_product_names(tree: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """Every full product name with its pointer, in document order (branches depth first)."""
    stack = [(branch, f"/product_tree/branches/{i}") for i, branch in enumerate(_arr(tree.get("branches")))]
    stack.reverse()
    while stack:
        branch, at = stack.pop()
        branch = _obj(branch)
        product = branch.get("product")
        if isinstance(product, dict):
            yield product, f"{at}/product"
        children = [(child, f"{at}/branches/{i}") for i, child in enumerate(_arr(branch.get("branches")))]
        stack.extend(reversed(children))
    for i, product in enumerate(_arr(tree.get("full_product_names"))):
        if isinstance(product, dict):
            yield product, f"/product_tree/full_product_names/{i}"
    for i, relationship in enumerate(_arr(tree.get("relationships"))):
        product = _obj(relationship).get("full_product_name")
        if isinstance(product, dict):
            yield product, f"/product_tree/relationships/{i}/full_product_name"


def _product_id_lists(d: _Document) -> Iterator[tuple[str, object]]:
    """Every list of product IDs used as references (6.1.1), with the pointer of the list."""
    for i, group in enumerate(_arr(d.tree.get("product_groups"))):
        yield f"/product_tree/product_groups/{i}/product_ids", _obj(group).get("product_ids")
    for v, vulnerability in enumerate(d.vulnerabilities):
        vulnerability = _obj(vulnerability)
        status = _obj(vulnerability.get("product_status"))
        for name in _PRODUCT_STATUSES:
            yield f"/vulnerabilities/{v}/product_status/{name}", status.get(name)
        for s, score in enumerate(_arr(vulnerability.get("scores"))):
            yield f"/vulnerabilities/{v}/scores/{s}/products", _obj(score).get("products")
        for list_name, key in _PRODUCT_ID_LISTS:
            for k, item in enumerate(_arr(vulnerability.get(list_name))):
                yield f"/vulnerabilities/{v}/{list_name}/{k}/{key}", _obj(item).get(key)


def _test_6_1_1(d: _Document, report: _Report) -> None:
    defined = {p.get("product_id") for p, _ in d.full_product_names}
    for i, relationship in enumerate(_arr(d.tree.get("relationships"))):
        for key in ("product_reference", "relates_to_product_reference"):
            ref = _obj(relationship).get(key)
            if isinstance(ref, str) and ref not in defined:
                report.add(
                    "6.1.1",
                    f"/product_tree/relationships/{i}/{key}",
                    f"product ID {ref!r} is not defined in the product tree",
                )
    for at, ids in _product_id_lists(d):
        for j, pid in _strings(ids):
            if pid not in defined:
                report.add("6.1.1", f"{at}/{j}", f"product ID {pid!r} is not defined in the product tree")


def _test_6_1_2(d: _Document, report: _Report) -> None:
    first: dict[str, str] = {}
    for product, at in d.full_product_names:
        pid = product.get("product_id")
        if not isinstance(pid, str):
            continue
        if pid in first:
            report.add("6.1.2", f"{at}/product_id", f"product ID {pid!r} is already defined at {first[pid]}")
        else:
            first[pid] = f"{at}/product_id"


def _test_6_1_3(d: _Document, report: _Report) -> None:
    edges: dict[str, set[str]] = {}
    defined_at: list[tuple[str, str]] = []
    for i, relationship in enumerate(_arr(d.tree.get("relationships"))):
        relationship = _obj(relationship)
        pid = _obj(relationship.get("full_product_name")).get("product_id")
        if not isinstance(pid, str):
            continue
        defined_at.append((pid, f"/product_tree/relationships/{i}/full_product_name/product_id"))
        targets = edges.setdefault(pid, set())
        for key in ("product_reference", "relates_to_product_reference"):
            ref = relationship.get(key)
            if isinstance(ref, str):
                targets.add(ref)
    circular = _nodes_on_cycles(edges)
    for pid, at in defined_at:
        if pid in circular:
            report.add("6.1.3", at, f"product ID {pid!r} is defined through a relationship that refers back to itself")


def _nodes_on_cycles(edges: dict[str, set[str]]) -> set[str]:
    """Nodes that can reach themselves (Tarjan's strongly connected components, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: set[str] = set()
    for root in edges:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = []
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work.append((root, iter(edges.get(root, ()))))
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(edges.get(succ, ()))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    result.update(component)
    return result


def _test_6_1_4(d: _Document, report: _Report) -> None:
    for v, vulnerability in enumerate(d.vulnerabilities):
        for list_name, key in _GROUP_ID_LISTS:
            for k, item in enumerate(_arr(_obj(vulnerability).get(list_name))):
                for j, group_id in _strings(_obj(item).get(key)):
                    if group_id not in d.groups:
                        report.add(
                            "6.1.4",
                            f"/vulnerabilities/{v}/{list_name}/{k}/{key}/{j}",
                            f"product group ID {group_id!r} is not defined in the product tree",
                        )


def _repeats(items: list[Any], key: str) -> Iterator[tuple[int, str, int]]:
    """(index, value, index of its first use) for each repeated text value of `key` in `items`."""
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        value = _obj(item).get(key)
        if not isinstance(value, str):
            continue
        if value in first:
            yield i, value, first[value]
        else:
            first[value] = i


def _test_6_1_5(d: _Document, report: _Report) -> None:
    for i, group_id, at in _repeats(_arr(d.tree.get("product_groups")), "group_id"):
        report.add(
            "6.1.5",
            f"/product_tree/product_groups/{i}/group_id",
            f"product group ID {group_id!r} is already defined at /product_tree/product_groups/{at}",
        )


_CONTRADICTION_GROUPS: Final = {
    "first_affected": "affected",
    "known_affected": "affected",
    "last_affected": "affected",
    "known_not_affected": "not affected",
    "first_fixed": "fixed",
    "fixed": "fixed",
    "under_investigation": "under investigation",
}


def _test_6_1_6(d: _Document, report: _Report) -> None:
    for v, vulnerability in enumerate(d.vulnerabilities):
        status = _obj(_obj(vulnerability).get("product_status"))
        seen: dict[str, tuple[str, str]] = {}  # product ID -> (contradiction group, status list)
        for name, group in _CONTRADICTION_GROUPS.items():
            for j, pid in _strings(status.get(name)):
                earlier = seen.setdefault(pid, (group, name))
                if earlier[0] != group:
                    report.add(
                        "6.1.6",
                        f"/vulnerabilities/{v}/product_status/{name}/{j}",
                        f"product {pid!r} is both {earlier[0]} ({earlier[1]}) and {group} ({name})",
                    )


def _score_versions(score: dict[str, Any]) -> Iterator[str]:
    if isinstance(score.get("cvss_v2"), dict):
        yield "2.0"
    version = _obj(score.get("cvss_v3")).get("version")
    if isinstance(version, str):
        yield version


def _test_6_1_7(d: _Document, report: _Report) -> None:
    for v, vulnerability in enumerate(d.vulnerabilities):
        seen: dict[tuple[str, str], int] = {}
        for s, score in enumerate(_arr(_obj(vulnerability).get("scores"))):
            score = _obj(score)
            for version in _score_versions(score):
                for j, pid in _strings(score.get("products")):
                    first = seen.setdefault((pid, version), s)
                    if first != s:
                        report.add(
                            "6.1.7",
                            f"/vulnerabilities/{v}/scores/{s}/products/{j}",
                            f"product {pid!r} already has a CVSS v{version} score (in scores/{first})",
                        )


# CVSS: property name -> (vector metric, {vector value: property value})
_V3_AV: Final = {"N": "NETWORK", "A": "ADJACENT_NETWORK", "L": "LOCAL", "P": "PHYSICAL"}
_V3_LH: Final = {"L": "LOW", "H": "HIGH"}
_V3_NLH: Final = {"N": "NONE", "L": "LOW", "H": "HIGH"}
_V3_UI: Final = {"N": "NONE", "R": "REQUIRED"}
_V3_S: Final = {"U": "UNCHANGED", "C": "CHANGED"}
_V3_REQ: Final = {"L": "LOW", "M": "MEDIUM", "H": "HIGH", "X": "NOT_DEFINED"}
_X: Final = {"X": "NOT_DEFINED"}
_V3_PROPERTIES: Final[dict[str, tuple[str, dict[str, str]]]] = {
    "attackVector": ("AV", _V3_AV),
    "attackComplexity": ("AC", _V3_LH),
    "privilegesRequired": ("PR", _V3_NLH),
    "userInteraction": ("UI", _V3_UI),
    "scope": ("S", _V3_S),
    "confidentialityImpact": ("C", _V3_NLH),
    "integrityImpact": ("I", _V3_NLH),
    "availabilityImpact": ("A", _V3_NLH),
    "exploitCodeMaturity": ("E", {"U": "UNPROVEN", "P": "PROOF_OF_CONCEPT", "F": "FUNCTIONAL", "H": "HIGH", **_X}),
    "remediationLevel": (
        "RL",
        {"O": "OFFICIAL_FIX", "T": "TEMPORARY_FIX", "W": "WORKAROUND", "U": "UNAVAILABLE", **_X},
    ),
    "reportConfidence": ("RC", {"U": "UNKNOWN", "R": "REASONABLE", "C": "CONFIRMED", **_X}),
    "confidentialityRequirement": ("CR", _V3_REQ),
    "integrityRequirement": ("IR", _V3_REQ),
    "availabilityRequirement": ("AR", _V3_REQ),
    "modifiedAttackVector": ("MAV", {**_V3_AV, **_X}),
    "modifiedAttackComplexity": ("MAC", {**_V3_LH, **_X}),
    "modifiedPrivilegesRequired": ("MPR", {**_V3_NLH, **_X}),
    "modifiedUserInteraction": ("MUI", {**_V3_UI, **_X}),
    "modifiedScope": ("MS", {**_V3_S, **_X}),
    "modifiedConfidentialityImpact": ("MC", {**_V3_NLH, **_X}),
    "modifiedIntegrityImpact": ("MI", {**_V3_NLH, **_X}),
    "modifiedAvailabilityImpact": ("MA", {**_V3_NLH, **_X}),
}

_V2_CIA: Final = {"N": "NONE", "P": "PARTIAL", "C": "COMPLETE"}
_V2_REQ: Final = {"L": "LOW", "M": "MEDIUM", "H": "HIGH", "ND": "NOT_DEFINED"}
_V2_PROPERTIES: Final[dict[str, tuple[str, dict[str, str]]]] = {
    "accessVector": ("AV", {"L": "LOCAL", "A": "ADJACENT_NETWORK", "N": "NETWORK"}),
    "accessComplexity": ("AC", {"H": "HIGH", "M": "MEDIUM", "L": "LOW"}),
    "authentication": ("Au", {"M": "MULTIPLE", "S": "SINGLE", "N": "NONE"}),
    "confidentialityImpact": ("C", _V2_CIA),
    "integrityImpact": ("I", _V2_CIA),
    "availabilityImpact": ("A", _V2_CIA),
    "exploitability": (
        "E",
        {"U": "UNPROVEN", "POC": "PROOF_OF_CONCEPT", "F": "FUNCTIONAL", "H": "HIGH", "ND": "NOT_DEFINED"},
    ),
    "remediationLevel": (
        "RL",
        {"OF": "OFFICIAL_FIX", "TF": "TEMPORARY_FIX", "W": "WORKAROUND", "U": "UNAVAILABLE", "ND": "NOT_DEFINED"},
    ),
    "reportConfidence": ("RC", {"UC": "UNCONFIRMED", "UR": "UNCORROBORATED", "C": "CONFIRMED", "ND": "NOT_DEFINED"}),
    "collateralDamagePotential": (
        "CDP",
        {"N": "NONE", "L": "LOW", "LM": "LOW_MEDIUM", "MH": "MEDIUM_HIGH", "H": "HIGH", "ND": "NOT_DEFINED"},
    ),
    "targetDistribution": ("TD", {"N": "NONE", "L": "LOW", "M": "MEDIUM", "H": "HIGH", "ND": "NOT_DEFINED"}),
    "confidentialityRequirement": ("CR", _V2_REQ),
    "integrityRequirement": ("IR", _V2_REQ),
    "availabilityRequirement": ("AR", _V2_REQ),
}
# Values that score exactly like NOT_DEFINED; the cvss library leaves a score out when its metrics are ND.
_V2_AS_NOT_DEFINED: Final = {"E": "H", "RL": "U", "RC": "C", "CDP": "N", "TD": "H", "CR": "M", "IR": "M", "AR": "M"}


def _vector_metrics(vector: str) -> dict[str, str]:
    parts = vector.split("/")
    if parts and parts[0].startswith("CVSS:"):
        parts = parts[1:]
    metrics: dict[str, str] = {}
    for part in parts:
        key, _, value = part.partition(":")
        metrics.setdefault(key, value)
    return metrics


class _Computed(NamedTuple):
    scores: dict[str, float | None]
    severities: dict[str, str | None]


@lru_cache(maxsize=4096)
def _compute_cvss(kind: str, vector: str) -> _Computed | str:
    """Scores computed from a vector, or why they cannot be."""
    try:
        if kind == "cvss_v2":
            metrics = _vector_metrics(vector)
            if len(metrics) != vector.count("/") + 1:
                return f"vectorString {vector!r} cannot be scored: a metric is given twice"
            for key, value in _V2_AS_NOT_DEFINED.items():
                if metrics.get(key, "ND") == "ND":
                    metrics[key] = value
            base, temporal, environmental = CVSS2("/".join(f"{k}:{v}" for k, v in metrics.items())).scores()
            return _Computed({"baseScore": base, "temporalScore": temporal, "environmentalScore": environmental}, {})
        cvss3 = CVSS3(vector)
        base, temporal, environmental = cvss3.scores()
        base_sev, temporal_sev, environmental_sev = cvss3.severities()
        return _Computed(
            {"baseScore": base, "temporalScore": temporal, "environmentalScore": environmental},
            {"baseSeverity": base_sev, "temporalSeverity": temporal_sev, "environmentalSeverity": environmental_sev},
        )
    except Exception as exc:  # the cvss library raises its own CVSSError family, and ValueError/KeyError on junk
        return f"vectorString {vector!r} cannot be scored: {exc}"


def _cvss_objects(d: _Document) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(kind, pointer, object) for every CVSS object."""
    for v, vulnerability in enumerate(d.vulnerabilities):
        for s, score in enumerate(_arr(_obj(vulnerability).get("scores"))):
            for kind in ("cvss_v2", "cvss_v3"):
                cvss = _obj(score).get(kind)
                if isinstance(cvss, dict) and isinstance(cvss.get("vectorString"), str):
                    yield kind, f"/vulnerabilities/{v}/scores/{s}/{kind}", cvss


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _test_6_1_9(d: _Document, report: _Report) -> None:
    for kind, at, cvss in _cvss_objects(d):
        computed = _compute_cvss(kind, cvss["vectorString"])
        if isinstance(computed, str):
            report.add("6.1.9", f"{at}/vectorString", computed)
            continue
        for prop, expected in computed.scores.items():
            given = cvss.get(prop)
            if _is_number(given) and expected is not None and round(given * 10) != round(expected * 10):
                report.add("6.1.9", f"{at}/{prop}", f"{prop} is {given} but the vector scores {expected}")
        for prop, severity in computed.severities.items():
            given = cvss.get(prop)
            if isinstance(given, str) and severity is not None and given.upper() != severity.upper():
                report.add("6.1.9", f"{at}/{prop}", f"{prop} is {given} but the vector scores {severity.upper()}")


def _test_6_1_10(d: _Document, report: _Report) -> None:
    for kind, at, cvss in _cvss_objects(d):
        # Only metrics the vector states are compared, as the OASIS TC's examples and the reference
        # validator do: a property whose metric the vector leaves out is not contradicted by it.
        table = _V2_PROPERTIES if kind == "cvss_v2" else _V3_PROPERTIES
        metrics = _vector_metrics(cvss["vectorString"])
        for prop, (metric, values) in table.items():
            given = cvss.get(prop)
            in_vector = metrics.get(metric)
            if given is None or in_vector is None:
                continue
            expected = values.get(in_vector)
            if expected is not None and given != expected:
                report.add(
                    "6.1.10",
                    f"{at}/{prop}",
                    f"{prop} is {given} but vectorString says {metric}:{in_vector} ({expected})",
                )


@lru_cache(maxsize=8192)
def _purl_problem(purl: str) -> str | None:
    try:
        PackageURL.from_string(purl)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


def _test_6_1_13(d: _Document, report: _Report) -> None:
    for product, at in d.full_product_names:
        purl = _obj(product.get("product_identification_helper")).get("purl")
        if isinstance(purl, str):
            problem = _purl_problem(purl)
            if problem is not None:
                report.add("6.1.13", f"{at}/product_identification_helper/purl", f"invalid purl: {problem}")


# Revision history -------------------------------------------------------------------------------

_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_INTEGER_VERSION: Final = re.compile(r"0|[1-9][0-9]*")
_SEMANTIC_VERSION: Final = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?"
)

_VersionKey = tuple[int, int, int, tuple[Any, ...]]


def _parse_date(value: str) -> datetime | None:
    """RFC 3339 date-time (leap seconds count as :59), or None."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    fraction, zone = match[7], match[8]
    try:
        if zone in ("Z", "z"):
            tz = UTC
        else:
            sign = -1 if zone[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
        return datetime(year, month, day, hour, minute, min(second, 59), micro, tzinfo=tz)
    except (ValueError, OverflowError):
        return None


def _version_key(number: str) -> _VersionKey | None:
    """Precedence of an integer (`n`, compared as `n.0.0`) or semantic version; build metadata is ignored."""
    if _INTEGER_VERSION.fullmatch(number):
        return (int(number), 0, 0, (1,))
    match = _SEMANTIC_VERSION.fullmatch(number)
    if match is None:
        return None
    pre = match[4]
    # A pre-release sorts before its release; numeric identifiers before alphanumeric ones.
    release: tuple[Any, ...] = (1,)
    if pre is not None:
        release = (0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")))
    return (int(match[1]), int(match[2]), int(match[3]), release)


class _Revision(NamedTuple):
    position: int
    date: datetime
    number: str
    key: _VersionKey


def _revisions_by_date(d: _Document) -> list[_Revision] | None:
    """Revision history sorted by date, ties by version; None if an item cannot be read."""
    revisions = []
    for i, item in enumerate(_arr(d.tracking.get("revision_history"))):
        item = _obj(item)
        date, number = item.get("date"), item.get("number")
        if not isinstance(date, str) or not isinstance(number, str):
            return None
        parsed, key = _parse_date(date), _version_key(number)
        if parsed is None or key is None:
            return None
        revisions.append(_Revision(i, parsed, number, key))
    revisions.sort(key=lambda r: (r.date, r.key))
    return revisions


def _test_6_1_14(d: _Document, report: _Report) -> None:
    revisions = _revisions_by_date(d) or []
    for earlier, later in pairwise(revisions):
        if later.key < earlier.key:
            report.add(
                "6.1.14",
                f"/document/tracking/revision_history/{later.position}/number",
                f"revision {later.number} is dated after revision {earlier.number} but has a lower number",
            )


def _test_6_1_16(d: _Document, report: _Report) -> None:
    revisions = _revisions_by_date(d)
    version = d.tracking.get("version")
    if not revisions or not isinstance(version, str):
        return
    draft = d.tracking.get("status") == "draft"

    def normalized(number: str) -> str:
        number = number.split("+", 1)[0]
        return number.split("-", 1)[0] if draft else number

    latest = revisions[-1].number
    if normalized(latest) != normalized(version):
        report.add(
            "6.1.16",
            "/document/tracking/version",
            f"document version {version} is not the number of the latest revision ({latest})",
        )


def _test_6_1_21(d: _Document, report: _Report) -> None:
    revisions = _revisions_by_date(d)
    if not revisions:
        return
    majors = list(dict.fromkeys(r.key[0] for r in revisions))
    at = "/document/tracking/revision_history"
    if majors[0] not in (0, 1):
        report.add("6.1.21", at, f"the first revision (by date) is version {majors[0]}; it must be 0 or 1")
    for low, high in pairwise(sorted(majors)):
        if high - low == 2:
            report.add("6.1.21", at, f"version {low + 1} is missing from the revision history")
        elif high - low > 2:
            report.add("6.1.21", at, f"versions {low + 1} to {high - 1} are missing from the revision history")


def _test_6_1_22(d: _Document, report: _Report) -> None:
    for i, number, at in _repeats(_arr(d.tracking.get("revision_history")), "number"):
        report.add(
            "6.1.22",
            f"/document/tracking/revision_history/{i}/number",
            f"version {number} is already in the revision history at index {at}",
        )


def _test_6_1_23(d: _Document, report: _Report) -> None:
    first: dict[str, int] = {}
    for v, vulnerability in enumerate(d.vulnerabilities):
        cve = _obj(vulnerability).get("cve")
        if not isinstance(cve, str):
            continue
        if cve in first:
            report.add("6.1.23", f"/vulnerabilities/{v}/cve", f"{cve} is already used by /vulnerabilities/{first[cve]}")
        else:
            first[cve] = v


# Profile tests (6.1.27.x) -----------------------------------------------------------------------

_ADVISORY: Final = "csaf_security_advisory"
_VEX: Final = "csaf_vex"
_INFORMATIONAL: Final = "csaf_informational_advisory"
_INCIDENT: Final = "csaf_security_incident_response"
_SUMMARY_NOTES: Final = frozenset({"description", "details", "general", "summary"})
_VEX_STATUSES: Final = ("fixed", "known_affected", "known_not_affected", "under_investigation")


def _test_6_1_27(d: _Document, report: _Report) -> None:
    category = d.category
    if category in (_INFORMATIONAL, _INCIDENT):
        notes = _arr(d.meta.get("notes"))
        if not any(_obj(n).get("category") in _SUMMARY_NOTES for n in notes):
            report.add(
                "6.1.27.1", "/document/notes", "needs a note of category description, details, general or summary"
            )
        references = _arr(d.meta.get("references"))
        # `category` defaults to "external" in the schema.
        if not any(_obj(r).get("category", "external") == "external" for r in references):
            report.add("6.1.27.2", "/document/references", "needs a reference of category external")
    if category == _INFORMATIONAL and "vulnerabilities" in d.doc:
        report.add("6.1.27.3", "/vulnerabilities", f"a {category} document must not have vulnerabilities")
    if category not in (_ADVISORY, _VEX):
        return
    if "product_tree" not in d.doc:
        report.add("6.1.27.4", "", f"a {category} document needs a product_tree")
    if "vulnerabilities" not in d.doc:
        report.add("6.1.27.11", "", f"a {category} document needs vulnerabilities")
    for v, vulnerability in enumerate(d.vulnerabilities):
        vulnerability = _obj(vulnerability)
        at = f"/vulnerabilities/{v}"
        if "notes" not in vulnerability:
            report.add("6.1.27.5", at, "the vulnerability needs notes")
        if category == _ADVISORY and "product_status" not in vulnerability:
            report.add("6.1.27.6", at, "the vulnerability needs a product_status")
        if category == _VEX:
            _vex_vulnerability(d, vulnerability, at, report)


def _vex_vulnerability(d: _Document, vulnerability: dict[str, Any], at: str, report: _Report) -> None:
    status = vulnerability.get("product_status")
    if not isinstance(status, dict):
        report.add("6.1.27.7", at, "the vulnerability needs a product_status")
        status = {}
    elif not any(isinstance(status.get(name), list) for name in _VEX_STATUSES):
        report.add(
            "6.1.27.7",
            f"{at}/product_status",
            "needs at least one of fixed, known_affected, known_not_affected, under_investigation",
        )
    if "cve" not in vulnerability and "ids" not in vulnerability:
        report.add("6.1.27.8", at, "the vulnerability needs a cve or ids")
    impact: set[str] = set()
    for threat in _arr(vulnerability.get("threats")):
        if _obj(threat).get("category") == "impact":
            impact |= d.products_of(_obj(threat))
    for flag in _arr(vulnerability.get("flags")):
        impact |= d.products_of(_obj(flag))
    for j, pid in _strings(status.get("known_not_affected")):
        if pid not in impact:
            report.add(
                "6.1.27.9",
                f"{at}/product_status/known_not_affected/{j}",
                f"no impact statement (flag, or threat of category impact) for known_not_affected product {pid!r}",
            )
    action: set[str] = set()
    for remediation in _arr(vulnerability.get("remediations")):
        action |= d.products_of(_obj(remediation))
    for j, pid in _strings(status.get("known_affected")):
        if pid not in action:
            report.add(
                "6.1.27.10",
                f"{at}/product_status/known_affected/{j}",
                f"no action statement (remediation) for known_affected product {pid!r}",
            )


from cityward.adapters.advisories import csaf_release_tests as release_tests  # noqa: E402

_MANDATORY_TESTS: Final[tuple[tuple[str, Callable[[_Document, _Report], None]], ...]] = (
    ("6.1.1", _test_6_1_1),
    ("6.1.2", _test_6_1_2),
    ("6.1.3", _test_6_1_3),
    ("6.1.4", _test_6_1_4),
    ("6.1.5", _test_6_1_5),
    ("6.1.6", _test_6_1_6),
    ("6.1.7", _test_6_1_7),
    ("6.1.9", _test_6_1_9),
    ("6.1.10", _test_6_1_10),
    ("6.1.13", _test_6_1_13),
    ("6.1.14", _test_6_1_14),
    ("6.1.16", _test_6_1_16),
    ("6.1.21", _test_6_1_21),
    ("6.1.22", _test_6_1_22),
    ("6.1.23", _test_6_1_23),
    ("6.1.27", _test_6_1_27),
    ("6.1.17", release_tests.test_6_1_17),
    ("6.1.20", release_tests.test_6_1_20),
    ("6.1.24", release_tests.test_6_1_24),
    ("6.1.25", release_tests.test_6_1_25),
    ("6.1.29", release_tests.test_6_1_29),
    ("6.1.26", release_tests.test_6_1_26),
    ("6.1.32", release_tests.test_6_1_32),
    ("6.1.11", release_tests.test_6_1_11),
    ("6.1.12", release_tests.test_6_1_12),
    ("6.1.15", release_tests.test_6_1_15),
    ("6.1.18", release_tests.test_6_1_18),
    ("6.1.19", release_tests.test_6_1_19),
    ("6.1.28", release_tests.test_6_1_28),
    ("6.1.30", release_tests.test_6_1_30),
    ("6.1.31", release_tests.test_6_1_31),
    ("6.1.33", release_tests.test_6_1_33),
)


def _mandatory_stage(doc: dict[str, Any], report: _Report, name: str) -> None:
    try:
        d = _Document(doc)
    except Exception as exc:
        log.exception("CSAF document %s could not be indexed", name)
        report.add(SCHEMA_TEST, "", f"the document could not be indexed ({type(exc).__name__})")
        return
    for test, check in _MANDATORY_TESTS:
        try:
            check(d, report)
        except Exception as exc:  # a bug in a check must reject the document, not crash the import
            log.exception("CSAF test %s failed to run on %s", test, name)
            report.add(test, "", f"the test could not be evaluated ({type(exc).__name__})")
