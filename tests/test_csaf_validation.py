"""CSAF 2.0 validation: schema, mandatory tests, error reporting, hostile input.

Two hand-written valid documents (tests/fixtures/csaf_validation/) are the base. Every invalid
case is a mutated copy of one of them, and must give a violation with the expected test id and
JSON pointer.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityward.adapters.advisories import csaf_validation as cv
from cityward.adapters.advisories.csaf_validation import CsafInvalid, Violation, ensure_valid, validate

FIXTURES = Path(__file__).parent / "fixtures" / "csaf_validation"
SCHEMAS = Path(cv.__file__).parent / "schemas"

Doc = dict[str, Any]


def load(name: str) -> Doc:
    doc = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


ADVISORY = load("security_advisory")
VEX = load("vex")

CVSS3 = "/vulnerabilities/0/scores/0/cvss_v3"
CVSS2 = "/vulnerabilities/0/scores/0/cvss_v2"
HISTORY = "/document/tracking/revision_history"


@pytest.fixture(params=["jsonschema-rs", "jsonschema"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with each schema engine (jsonschema-rs when installed, and the pure-Python fallback)."""
    if request.param == "jsonschema":
        python_engine = cv._PythonEngine()
        monkeypatch.setattr(cv, "_engine", lambda: python_engine)
    else:
        import jsonschema_rs  # a runtime dependency: a missing one fails here, it is not skipped

        assert jsonschema_rs
    return str(request.param)


def found(violations: list[Violation]) -> set[tuple[str, str]]:
    return {(v.test, v.path) for v in violations}


# --- valid documents -----------------------------------------------------------------------------


@pytest.mark.parametrize("doc", [ADVISORY, VEX], ids=["security_advisory", "vex"])
def test_valid_documents_have_no_violations(doc: Doc, engine: str) -> None:
    assert validate(copy.deepcopy(doc), "fixture.json") == []


def test_ensure_valid_returns_the_document() -> None:
    doc = copy.deepcopy(ADVISORY)
    assert ensure_valid(doc, "fixture.json") is doc


# --- one invalid variant per test ----------------------------------------------------------------


def mutate(base: Doc, change: Callable[[Doc], object]) -> Doc:
    doc = copy.deepcopy(base)
    change(doc)
    return doc


def vuln(doc: Doc) -> Doc:
    v = doc["vulnerabilities"][0]
    assert isinstance(v, dict)
    return v


def cvss3(doc: Doc) -> Doc:
    c = vuln(doc)["scores"][0]["cvss_v3"]
    assert isinstance(c, dict)
    return c


def history(*items: tuple[str, str], version: str, status: str = "final") -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        tracking = doc["document"]["tracking"]
        tracking["revision_history"] = [{"date": d, "number": n, "summary": "change"} for d, n in items]
        tracking["version"] = version
        tracking["status"] = status

    return change


def add_duplicate_group(doc: Doc) -> None:
    group = {"group_id": "CSAFGID-0001", "product_ids": ["CSAFPID-0001", "CSAFPID-0002"]}
    doc["product_tree"]["product_groups"].append(group)


def relationship_cycle(doc: Doc) -> None:
    rels = doc["product_tree"]["relationships"]
    rels[0]["relates_to_product_reference"] = "CSAFPID-0102"
    rels.append(
        {
            "category": "installed_on",
            "full_product_name": {"name": "B", "product_id": "CSAFPID-0102"},
            "product_reference": "CSAFPID-0001",
            "relates_to_product_reference": "CSAFPID-0101",
        }
    )


def second_cvss31_score(doc: Doc) -> None:
    vuln(doc)["scores"].append(
        {
            "products": ["CSAFPID-0001"],
            "cvss_v3": {
                "version": "3.1",
                "vectorString": "CVSS:3.1/AV:L/AC:L/PR:H/UI:R/S:U/C:H/I:H/A:H",
                "baseScore": 6.5,
                "baseSeverity": "MEDIUM",
            },
        }
    )


def duplicate_hash(doc: Doc) -> None:
    product = doc["product_tree"]["branches"][0]["branches"][0]["branches"][0]["product"]
    digest = {"algorithm": "sha256", "value": "0" * 64}
    product["product_identification_helper"]["hashes"] = [{"filename": "fw.bin", "file_hashes": [digest, dict(digest)]}]


def duplicate_involvement(doc: Doc) -> None:
    involvement = {"party": "vendor", "status": "completed", "date": "2021-09-18T00:00:00.000Z"}
    vuln(doc)["involvements"] = [involvement, {**involvement, "status": "in_progress"}]


def without_products(item: Doc) -> None:
    item.pop("product_ids", None)
    item.pop("group_ids", None)


def as_informational(doc: Doc) -> None:
    doc["document"]["category"] = "csaf_informational_advisory"
    doc["document"]["notes"] = [{"category": "legal_disclaimer", "text": "As is."}]
    doc["document"]["references"] = [{"category": "self", "summary": "This file", "url": "https://example.com/a.json"}]


def as_informational_without_vulnerabilities(doc: Doc) -> None:
    as_informational(doc)
    del doc["vulnerabilities"]


VERSION_NAME = "/product_tree/branches/0/branches/0/branches/0/name"


def version_branch(doc: Doc) -> Doc:
    branch = doc["product_tree"]["branches"][0]["branches"][0]["branches"][0]
    assert branch["category"] == "product_version"
    return cast(Doc, branch)


T1 = "2021-09-18T00:00:00.000Z"
T2 = "2021-10-01T08:30:00.000Z"
T3 = "2021-11-02T10:00:00+01:00"

CASES: list[tuple[str, Doc, Callable[[Doc], object], str, str]] = [
    # (case id, base, mutation, expected test, expected JSON pointer)
    ("schema-missing-category", ADVISORY, lambda d: d["document"].pop("category"), "schema", "/document"),
    ("schema-bad-cve", ADVISORY, lambda d: vuln(d).update(cve="CVE-21-1"), "schema", "/vulnerabilities/0/cve"),
    (
        "schema-bad-date",
        ADVISORY,
        lambda d: d["document"]["tracking"].update(current_release_date="2021-13-01T00:00:00Z"),
        "schema",
        "/document/tracking/current_release_date",
    ),
    (
        "6.1.1-status",
        ADVISORY,
        lambda d: vuln(d)["product_status"]["known_affected"].append("CSAFPID-9999"),
        "6.1.1",
        "/vulnerabilities/0/product_status/known_affected/2",
    ),
    (
        "6.1.1-relationship",
        ADVISORY,
        lambda d: d["product_tree"]["relationships"][0].update(relates_to_product_reference="CSAFPID-9999"),
        "6.1.1",
        "/product_tree/relationships/0/relates_to_product_reference",
    ),
    (
        "6.1.1-group",
        ADVISORY,
        lambda d: d["product_tree"]["product_groups"][0]["product_ids"].append("CSAFPID-9999"),
        "6.1.1",
        "/product_tree/product_groups/0/product_ids/2",
    ),
    (
        "6.1.2",
        ADVISORY,
        lambda d: d["product_tree"]["full_product_names"].append({"name": "Other", "product_id": "CSAFPID-0001"}),
        "6.1.2",
        "/product_tree/full_product_names/1/product_id",
    ),
    (
        "6.1.3-self",
        ADVISORY,
        lambda d: d["product_tree"]["relationships"][0].update(relates_to_product_reference="CSAFPID-0101"),
        "6.1.3",
        "/product_tree/relationships/0/full_product_name/product_id",
    ),
    (
        "6.1.3-cycle",
        ADVISORY,
        relationship_cycle,
        "6.1.3",
        "/product_tree/relationships/1/full_product_name/product_id",
    ),
    (
        "6.1.4",
        ADVISORY,
        lambda d: vuln(d)["threats"][0].update(group_ids=["CSAFGID-9999"]),
        "6.1.4",
        "/vulnerabilities/0/threats/0/group_ids/0",
    ),
    ("6.1.5", ADVISORY, add_duplicate_group, "6.1.5", "/product_tree/product_groups/1/group_id"),
    (
        "6.1.6",
        ADVISORY,
        lambda d: vuln(d)["product_status"]["known_affected"].append("CSAFPID-0002"),
        "6.1.6",
        "/vulnerabilities/0/product_status/fixed/0",
    ),
    ("6.1.7", ADVISORY, second_cvss31_score, "6.1.7", "/vulnerabilities/0/scores/1/products/0"),
    ("6.1.8-missing", ADVISORY, lambda d: cvss3(d).pop("baseSeverity"), "6.1.8", CVSS3),
    (
        "6.1.8-vector",
        ADVISORY,
        lambda d: cvss3(d).update(vectorString="CVSS:3.1/AV:X/AC:L"),
        "6.1.8",
        f"{CVSS3}/vectorString",
    ),
    (
        "6.1.8-v2",
        ADVISORY,
        lambda d: vuln(d)["scores"][0]["cvss_v2"].update(baseScore=11),
        "6.1.8",
        f"{CVSS2}/baseScore",
    ),
    ("6.1.9-base", ADVISORY, lambda d: cvss3(d).update(baseScore=9.9), "6.1.9", f"{CVSS3}/baseScore"),
    ("6.1.9-severity", ADVISORY, lambda d: cvss3(d).update(baseSeverity="HIGH"), "6.1.9", f"{CVSS3}/baseSeverity"),
    (
        "6.1.9-v2",
        ADVISORY,
        lambda d: vuln(d)["scores"][0]["cvss_v2"].update(baseScore=9.3),
        "6.1.9",
        f"{CVSS2}/baseScore",
    ),
    (
        "6.1.9-temporal",
        VEX,
        lambda d: cvss3(d).update(temporalScore=9.8),
        "6.1.9",
        f"{CVSS3}/temporalScore",
    ),
    (
        "6.1.9-unscorable",
        ADVISORY,
        lambda d: cvss3(d).update(vectorString="CVSS:3.1/AV:N/AC:L/PR:N"),
        "6.1.9",
        f"{CVSS3}/vectorString",
    ),
    (
        "6.1.9-duplicate-metric",
        ADVISORY,
        lambda d: cvss3(d).update(vectorString="CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/AV:L"),
        "6.1.9",
        f"{CVSS3}/vectorString",
    ),
    (
        "6.1.9-v2-duplicate-metric",
        ADVISORY,
        lambda d: vuln(d)["scores"][0]["cvss_v2"].update(vectorString="AV:N/AC:L/Au:N/C:C/I:C/A:C/AV:L"),
        "6.1.9",
        f"{CVSS2}/vectorString",
    ),
    ("6.1.10", ADVISORY, lambda d: cvss3(d).update(attackVector="LOCAL"), "6.1.10", f"{CVSS3}/attackVector"),
    (
        "6.1.10-v2",
        ADVISORY,
        lambda d: vuln(d)["scores"][0]["cvss_v2"].update(authentication="SINGLE"),
        "6.1.10",
        f"{CVSS2}/authentication",
    ),
    (
        "6.1.10-temporal",
        VEX,
        lambda d: cvss3(d).update(exploitCodeMaturity="UNPROVEN"),
        "6.1.10",
        f"{CVSS3}/exploitCodeMaturity",
    ),
    (
        "6.1.13",
        ADVISORY,
        lambda d: d["product_tree"]["branches"][0]["branches"][0]["branches"][1]["product"][
            "product_identification_helper"
        ].update(purl="pkg:maven/@1.3.4"),
        "6.1.13",
        "/product_tree/branches/0/branches/0/branches/1/product/product_identification_helper/purl",
    ),
    ("6.1.14", ADVISORY, history((T2, "1"), (T1, "2"), version="1"), "6.1.14", f"{HISTORY}/0/number"),
    ("6.1.14-semver", VEX, history((T1, "1.1.0"), (T2, "1.0.0"), version="1.0.0"), "6.1.14", f"{HISTORY}/1/number"),
    (
        "6.1.16",
        ADVISORY,
        lambda d: d["document"]["tracking"].update(version="1"),
        "6.1.16",
        "/document/tracking/version",
    ),
    (
        "6.1.16-semver",
        VEX,
        history((T1, "1.0.0"), (T2, "1.1.0"), version="1.0.0"),
        "6.1.16",
        "/document/tracking/version",
    ),
    ("6.1.21-gap", ADVISORY, history((T1, "1"), (T2, "3"), version="3"), "6.1.21", HISTORY),
    ("6.1.21-start", ADVISORY, history((T1, "2"), (T2, "3"), version="3"), "6.1.21", HISTORY),
    ("6.1.21-semver", VEX, history((T1, "1.0.0"), (T2, "1.1.0"), (T3, "4.0.0"), version="4.0.0"), "6.1.21", HISTORY),
    ("6.1.22", ADVISORY, history((T1, "1"), (T2, "1"), version="1"), "6.1.22", f"{HISTORY}/1/number"),
    (
        "6.1.23",
        ADVISORY,
        lambda d: d["vulnerabilities"].append(copy.deepcopy(vuln(d))),
        "6.1.23",
        "/vulnerabilities/1/cve",
    ),
    ("6.1.17", VEX, history((T1, "0.9.0"), version="0.9.0"), "6.1.17", "/document/tracking/status"),
    ("6.1.20", VEX, history((T1, "1.0.0-rc.1"), version="1.0.0-rc.1"), "6.1.20", "/document/tracking/version"),
    ("6.1.24", ADVISORY, duplicate_involvement, "6.1.24", "/vulnerabilities/0/involvements/1"),
    (
        "6.1.25",
        ADVISORY,
        duplicate_hash,
        "6.1.25",
        "/product_tree/branches/0/branches/0/branches/0/product/product_identification_helper/hashes/0/file_hashes/1/algorithm",
    ),
    (
        "6.1.29",
        ADVISORY,
        lambda d: without_products(vuln(d)["remediations"][0]),
        "6.1.29",
        "/vulnerabilities/0/remediations/0",
    ),
    ("6.1.32", VEX, lambda d: without_products(vuln(d)["flags"][0]), "6.1.32", "/vulnerabilities/0/flags/0"),
    (
        "6.1.26",
        ADVISORY,
        lambda d: d["document"].update(category="Security-Advisory"),
        "6.1.26",
        "/document/category",
    ),
    ("6.1.27.1", ADVISORY, as_informational_without_vulnerabilities, "6.1.27.1", "/document/notes"),
    (
        "6.1.27.2",
        ADVISORY,
        as_informational_without_vulnerabilities,
        "6.1.27.2",
        "/document/references",
    ),
    ("6.1.27.3", ADVISORY, as_informational, "6.1.27.3", "/vulnerabilities"),
    ("6.1.27.4", VEX, lambda d: d.pop("product_tree"), "6.1.27.4", ""),
    ("6.1.27.5", VEX, lambda d: vuln(d).pop("notes"), "6.1.27.5", "/vulnerabilities/0"),
    ("6.1.27.6", ADVISORY, lambda d: vuln(d).pop("product_status"), "6.1.27.6", "/vulnerabilities/0"),
    ("6.1.27.7", VEX, lambda d: vuln(d).pop("product_status"), "6.1.27.7", "/vulnerabilities/0"),
    (
        "6.1.27.7-recommended-only",
        VEX,
        lambda d: vuln(d).update(product_status={"recommended": ["CAM-5.5.800"]}),
        "6.1.27.7",
        "/vulnerabilities/0/product_status",
    ),
    ("6.1.27.8", VEX, lambda d: vuln(d).pop("cve"), "6.1.27.8", "/vulnerabilities/0"),
    (
        "6.1.27.9-flag",
        VEX,
        lambda d: vuln(d).pop("flags"),
        "6.1.27.9",
        "/vulnerabilities/0/product_status/known_not_affected/0",
    ),
    (
        "6.1.27.9-threat",
        VEX,
        lambda d: vuln(d)["threats"][0].update(category="target_set"),
        "6.1.27.9",
        "/vulnerabilities/0/product_status/known_not_affected/2",
    ),
    (
        "6.1.27.10",
        VEX,
        lambda d: vuln(d).pop("remediations"),
        "6.1.27.10",
        "/vulnerabilities/0/product_status/known_affected/0",
    ),
    ("6.1.27.11", VEX, lambda d: d.pop("vulnerabilities"), "6.1.27.11", ""),
    ("6.1.11-name", ADVISORY, lambda d: vuln(d)["cwe"].update(name="Improper Input Validation"), "6.1.11",
     "/vulnerabilities/0/cwe/name"),
    ("6.1.11-id", ADVISORY, lambda d: vuln(d)["cwe"].update(id="CWE-999999"), "6.1.11", "/vulnerabilities/0/cwe/id"),
    ("6.1.12-lang", ADVISORY, lambda d: d["document"].update(lang="EZ"), "6.1.12", "/document/lang"),
    ("6.1.12-source", ADVISORY, lambda d: d["document"].update(source_lang="qq-ZZ"), "6.1.12", "/document/source_lang"),
    ("6.1.15", ADVISORY, lambda d: d["document"]["publisher"].update(category="translator"), "6.1.15",
     "/document/source_lang"),
    ("6.1.18", VEX, history((T1, "0.9.0"), (T2, "1.0.0"), version="1.0.0"), "6.1.18", f"{HISTORY}/0/number"),
    ("6.1.19", VEX, history((T1, "1.0.0-rc.1"), (T2, "1.0.0"), version="1.0.0"), "6.1.19", f"{HISTORY}/0/number"),
    ("6.1.26-no-underscores", ADVISORY, lambda d: d["document"].update(category="csafsecurityadvisory"), "6.1.26",
     "/document/category"),
    ("6.1.28", ADVISORY, lambda d: d["document"].update(lang="en-US", source_lang="EN-us"), "6.1.28",
     "/document/source_lang"),
    ("6.1.30", ADVISORY, history((T1, "1.0.0"), (T2, "2"), version="2"), "6.1.30", f"{HISTORY}/0/number"),
    *[
        (f"6.1.31-{name}", ADVISORY, lambda d, name=name: version_branch(d).update(name=name), "6.1.31", VERSION_NAME)
        for name in ("prior to V5.5.800", "<=V5.5.710", "> 5.0", "5.5 and Later", "all", "V5.x versions",
                     "before 5.5.800", "5.5.710 and earlier", "after 5.0")
    ],
    ("6.1.33", VEX, lambda d: vuln(d)["flags"].append({"label": "vulnerable_code_not_present",
                                                       "product_ids": ["NVR-4.40.000"]}),
     "6.1.33", "/vulnerabilities/0/flags/1"),
]


@pytest.mark.parametrize(("base", "change", "test", "path"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_variant_is_reported(base: Doc, change: Callable[[Doc], object], test: str, path: str) -> None:
    violations = validate(mutate(base, change), "variant.json")
    assert (test, path) in found(violations), violations
    if test != "schema" and not test.startswith("6.1.8"):
        assert all(v.test != "schema" for v in violations), "the mutation should keep the schema valid"
    assert all(v.test != "limit" for v in violations)


SCHEMA_CASES = [c for c in CASES if c[3] in ("schema", "6.1.8")]


@pytest.mark.parametrize(
    ("base", "change", "test", "path"), [c[1:] for c in SCHEMA_CASES], ids=[c[0] for c in SCHEMA_CASES]
)
def test_python_fallback_engine_reports_the_same(
    base: Doc, change: Callable[[Doc], object], test: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    python_engine = cv._PythonEngine()
    monkeypatch.setattr(cv, "_engine", lambda: python_engine)
    assert (test, path) in found(validate(mutate(base, change), "variant.json"))


def test_mandatory_tests_do_not_run_on_a_schema_invalid_document() -> None:
    doc = mutate(ADVISORY, lambda d: d["document"].pop("title"))
    vuln(doc)["product_status"]["known_affected"].append("CSAFPID-9999")  # would be 6.1.1
    assert {v.test for v in validate(doc, "x.json")} == {"schema"}


def test_equal_dates_order_revisions_by_number() -> None:
    doc = mutate(ADVISORY, history((T1, "2"), (T1, "1"), version="2"))
    assert validate(doc, "x.json") == []


def test_draft_version_ignores_pre_release_part() -> None:
    # 6.1.19 forbids a pre-release revision in any status (as the BSI validator reads it); no other test fires.
    doc = mutate(VEX, history((T1, "1.0.0-rc.1"), version="1.0.0-rc.2", status="draft"))
    assert {v.test for v in validate(doc, "x.json")} == {"6.1.19"}
    doc = mutate(VEX, history((T1, "1.0.0-rc.1+build.7"), version="1.0.0-rc.2", status="final"))
    assert ("6.1.16", "/document/tracking/version") in found(validate(doc, "x.json"))


def test_unstated_cvss_metrics_are_not_contradicted() -> None:
    # A property whose metric the vector leaves out is not compared (as the OASIS TC examples do).
    doc = mutate(ADVISORY, lambda d: cvss3(d).update(modifiedAttackVector="LOCAL", exploitCodeMaturity="HIGH"))
    assert validate(doc, "x.json") == []


def test_a_cvss_v2_score_without_temporal_metrics_has_a_temporal_score_equal_to_base() -> None:
    doc = mutate(ADVISORY, lambda d: vuln(d)["scores"][0]["cvss_v2"].update(temporalScore=10.0))
    assert validate(doc, "x.json") == []


# --- CsafInvalid ---------------------------------------------------------------------------------


def test_ensure_valid_names_document_first_violations_and_count() -> None:
    doc = copy.deepcopy(ADVISORY)
    vuln(doc)["product_status"]["known_affected"].extend(f"CSAFPID-90{i}" for i in range(8))
    with pytest.raises(CsafInvalid) as caught:
        ensure_valid(doc, "hsrc-202109-01.json")
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.name == "hsrc-202109-01.json"
    assert len(error.violations) == 8
    message = str(error)
    assert message.startswith("hsrc-202109-01.json: not a valid CSAF 2.0 document: ")
    assert "6.1.1 at /vulnerabilities/0/product_status/known_affected/2: product ID 'CSAFPID-900'" in message
    assert "CSAFPID-904" in message and "CSAFPID-905" not in message
    assert message.endswith("(and 3 more)")


def test_ensure_valid_on_junk() -> None:
    with pytest.raises(CsafInvalid, match=r"^feed\.json: not a valid CSAF 2\.0 document: schema at \(document\)"):
        ensure_valid([1, 2], "feed.json")


# --- limits and hostile input --------------------------------------------------------------------


def test_violations_are_capped() -> None:
    doc = copy.deepcopy(ADVISORY)
    vuln(doc)["product_status"]["known_affected"].extend(f"X{i}" for i in range(cv.MAX_VIOLATIONS + 500))
    violations = validate(doc, "x.json")
    assert len(violations) == cv.MAX_VIOLATIONS + 1
    assert violations[-1] == Violation("limit", "", "500 more violations were not listed")


def test_schema_errors_are_capped(engine: str) -> None:
    doc = mutate(ADVISORY, lambda d: d.update(vulnerabilities=[1] * (cv.MAX_VIOLATIONS + 10)))
    violations = validate(doc, "x.json")
    assert len(violations) == cv.MAX_VIOLATIONS + 1
    assert violations[0].path == "/vulnerabilities/0"
    assert violations[-1].test == "limit"


def test_a_large_invalid_document_gets_its_first_schema_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("jsonschema_rs")
    monkeypatch.setattr(cv, "MAX_NODES_FOR_ALL_ERRORS", 100)
    doc = mutate(ADVISORY, lambda d: d.update(vulnerabilities=[1] * 200))
    violations = validate(doc, "x.json")
    assert [v.test for v in violations] == ["schema", "limit"]
    assert violations[0].path.startswith("/vulnerabilities/")


def test_long_messages_are_clipped(engine: str) -> None:
    violations = validate({"document": "x" * 10_000}, "x.json")
    assert violations and all(len(v.message) <= cv.MAX_MESSAGE_CHARS for v in violations)


def deep(depth: int, make: Callable[[object], object]) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = make(value)
    return value


HOSTILE: list[tuple[str, Callable[[], object]]] = [
    # large or deep cases (too slow for the pure-Python engine) are marked with a "!" prefix
    ("none", lambda: None),
    ("list", lambda: []),
    ("string", lambda: "{}"),
    ("number", lambda: 3.5),
    ("empty", dict),
    ("set", lambda: {"document": {1, 2}}),
    ("bytes", lambda: b"{}"),
    ("int-key", lambda: {1: "x"}),
    ("nan", lambda: {"document": float("nan")}),
    ("huge-int", lambda: {"document": 10**400}),
    ("object", object),
    ("!deep-list", lambda: deep(50_000, lambda v: [v])),
    ("!deep-dict", lambda: {"document": deep(50_000, lambda v: {"a": v})}),
    (
        "!deep-branches",
        lambda: mutate(ADVISORY, lambda d: d["product_tree"].update(branches=deep(3_000, lambda v: [v]))),
    ),
    ("!huge-array", lambda: mutate(ADVISORY, lambda d: d.update(vulnerabilities=[{}] * 300_000))),
    ("!huge-keys", lambda: {"document": {f"k{i}": i for i in range(100_000)}}),
]


@pytest.mark.parametrize(("case", "make"), HOSTILE, ids=[h[0].lstrip("!") for h in HOSTILE])
def test_hostile_input_gives_violations_not_exceptions(case: str, make: Callable[[], object]) -> None:
    """With the engine cityward installs (jsonschema-rs); the pure-Python fallback is too slow for
    the large cases and is covered by the other tests."""
    violations = validate(make(), "hostile.json")
    assert violations
    assert all(isinstance(v, Violation) and v.test for v in violations)
    assert len(violations) <= cv.MAX_VIOLATIONS + 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values | st.fixed_dictionaries({"document": json_values}))
def test_random_json_never_raises(value: object) -> None:
    violations = validate(value, "random.json")
    assert violations  # nothing random is a CSAF document
    assert all(isinstance(v, Violation) for v in violations)


def paths(value: object, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from paths(child, (*prefix, i))


ADVISORY_PATHS = [p for p in paths(ADVISORY) if p]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.sampled_from(ADVISORY_PATHS), value=json_values, base=st.sampled_from([ADVISORY, VEX]))
def test_random_replacement_in_a_valid_document_never_raises(
    where: tuple[str | int, ...], value: object, base: Doc
) -> None:
    doc = copy.deepcopy(base)
    node: Any = doc
    for part in where[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    try:
        node[where[-1]] = value
    except (IndexError, TypeError):
        return
    violations = validate(doc, "random.json")
    assert all(isinstance(v, Violation) for v in violations)


# --- performance ---------------------------------------------------------------------------------


def big_advisory(products: int, vulnerabilities: int) -> Doc:
    doc = copy.deepcopy(ADVISORY)
    versions = [
        {
            "category": "product_version",
            "name": f"V5.{i}",
            "product": {
                "name": f"Hikvision camera firmware V5.{i}",
                "product_id": f"P{i}",
                "product_identification_helper": {"purl": f"pkg:generic/hikvision/cam-firmware@5.{i}"},
            },
        }
        for i in range(products)
    ]
    doc["product_tree"]["branches"][0]["branches"].append(
        {"category": "product_name", "name": "Camera firmware", "branches": versions}
    )
    template = doc["vulnerabilities"][0]
    for v in range(vulnerabilities):
        ids = sorted({f"P{(v * 37 + k) % products}" for k in range(150)})
        item = copy.deepcopy(template)
        item["cve"] = f"CVE-2021-{40000 + v}"
        item["product_status"] = {"known_affected": ids}
        item["scores"][0]["products"] = ids
        item["remediations"][0]["product_ids"] = ids
        item["notes"][0]["text"] = "x" * 300
        doc["vulnerabilities"].append(item)
    return doc


def test_a_5_mb_document_validates_in_well_under_a_second() -> None:
    pytest.importorskip("jsonschema_rs")
    doc = big_advisory(products=10_000, vulnerabilities=520)
    assert len(json.dumps(doc)) > 5_000_000
    validate(ADVISORY, "warm-up.json")
    started = time.perf_counter()
    assert validate(doc, "big.json") == []
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"{elapsed:.2f} s"  # about 0.4 s on a laptop; generous for loaded CI runners


# --- the tables and data behind the checks -------------------------------------------------------


@pytest.mark.parametrize(
    ("schema_file", "table"),
    [
        ("cvss-v2.0.json", cv._V2_PROPERTIES),
        ("cvss-v3.0.json", cv._V3_PROPERTIES),
        ("cvss-v3.1.json", cv._V3_PROPERTIES),
    ],
)
def test_cvss_property_tables_match_the_cvss_schemas(
    schema_file: str, table: dict[str, tuple[str, dict[str, str]]]
) -> None:
    schema = json.loads((SCHEMAS / schema_file).read_text(encoding="utf-8"))
    definitions = schema["definitions"]
    enum_properties = {
        name: set(definitions[prop["$ref"].rsplit("/", 1)[1]]["enum"])
        for name, prop in schema["properties"].items()
        if "$ref" in prop and "enum" in definitions[prop["$ref"].rsplit("/", 1)[1]] and not name.endswith("Severity")
    }
    assert set(table) == set(enum_properties)
    for name, (_, values) in table.items():
        assert set(values.values()) == enum_properties[name], name


def test_schemas_are_the_ones_documented() -> None:
    readme = (SCHEMAS / "README.md").read_text(encoding="utf-8")
    import hashlib

    for schema in SCHEMAS.glob("*.json"):
        assert hashlib.sha256(schema.read_bytes()).hexdigest() in readme, schema.name


# --- tests added with 6.1.11 to 6.1.33: what they must accept --------------------------------------


def second_vulnerability_with_the_same_flags(doc: Doc) -> None:
    doc["vulnerabilities"].append({**copy.deepcopy(vuln(doc)), "cve": "CVE-2021-99999"})


@pytest.mark.parametrize(
    ("base", "change"),
    [
        # A word that merely contains a range word is a version name (the OASIS data has "after-eight").
        (ADVISORY, lambda d: version_branch(d).update(name="after-eight")),
        (ADVISORY, lambda d: version_branch(d).update(name="V5.5 allround build 2")),
        (ADVISORY, lambda d: d["document"].update(source_lang="de")
         or d["document"]["publisher"].update(category="translator")),
        (ADVISORY, lambda d: d["document"].update(lang="en-GB", source_lang="en-US")),
        (ADVISORY, lambda d: d["document"].update(lang="es-419")),
        # 6.1.33 counts flags per vulnerability: the same product in two vulnerabilities' flags is fine.
        (VEX, second_vulnerability_with_the_same_flags),
    ],
    ids=["after-eight", "allround", "translator-with-source", "translation", "es-419", "flags-per-vulnerability"],
)
def test_new_tests_accept_valid_variants(base: Doc, change: Callable[[Doc], object]) -> None:
    assert validate(mutate(base, change), "variant.json") == []


def test_draft_with_pre_release_history_is_reported_only_under_6_1_19() -> None:
    doc = mutate(VEX, history((T1, "0.1.0-alpha"), version="0.1.0-alpha", status="draft"))
    assert {v.test for v in validate(doc, "x.json")} == {"6.1.19"}


def test_integer_versions_throughout_are_consistent() -> None:
    doc = mutate(ADVISORY, history((T1, "1"), (T2, "2"), version="2"))
    assert validate(doc, "x.json") == []


_RANGE_HINTS = ("after", "all", "before", "earlier", "later", "prior", "versions")


@settings(max_examples=100, deadline=None)
@given(name=st.text(st.characters(codec="ascii", categories=["L", "N", "Zs", "Pd"]), min_size=1, max_size=30))
def test_6_1_31_flags_exactly_the_range_words_and_operators(name: str) -> None:
    doc = mutate(ADVISORY, lambda d: version_branch(d).update(name=name))
    flagged = any(v.test == "6.1.31" for v in validate(doc, "x.json"))
    assert flagged == any(word in _RANGE_HINTS for word in name.lower().split())
