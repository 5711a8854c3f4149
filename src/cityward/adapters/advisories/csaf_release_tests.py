"""Mandatory CSAF 2.0 tests about catalogues, release records, translations, names and item
references (6.1.11, 6.1.12, 6.1.15, 6.1.17 to 6.1.20, 6.1.24 to 6.1.26, 6.1.28 to 6.1.33), kept
apart so that csaf_validation stays readable.

6.1.11 reads the MITRE CWE catalogue that the `cwe2` package ships (CWE v4.14 XML), once per
process (about 1 s), and only for a document that names a CWE. We read the XML ourselves: cwe2's
own lookup rescans its CSV files for every ID. A CWE added after v4.14, or a weakness renamed
since, is reported as a violation. 6.1.12 asks `langcodes` whether a language tag is valid
against the IANA language subtag registry.

Each check takes the indexed document and the report of csaf_validation and runs in linear time.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

import langcodes

if TYPE_CHECKING:
    from cityward.adapters.advisories.csaf_validation import _Document, _Report

# Semantic version with a pre-release part ("1.0.0-rc.1"), or an integer/semver major 0.
_PRE_RELEASE: Final = re.compile(r"^\d+\.\d+\.\d+-")
_MAJOR_ZERO: Final = re.compile(r"^0(\.|$)")
_INTEGER: Final = re.compile(r"^(0|[1-9][0-9]*)$")
# 6.1.31: the standard deems it sufficient to look for these words and the operators <, <=, >,
# >= in a product_version name. The OASIS test data counts "after-eight" as a valid version, so
# a word must be a whole whitespace-separated token; an operator counts anywhere ("<=4.1").
_RANGE_WORDS: Final = frozenset({"after", "all", "before", "earlier", "later", "prior", "versions"})
_OPERATORS: Final = ("<", ">")


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _arr(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def test_6_1_17(d: _Document, report: _Report) -> None:
    """A version 0 or a pre-release version needs the status draft."""
    version = d.tracking.get("version")
    status = d.tracking.get("status")
    if (
        isinstance(version, str)
        and status in ("final", "interim")
        and (_MAJOR_ZERO.match(version) or _PRE_RELEASE.match(version))
    ):
        report.add("6.1.17", "/document/tracking/status", f"version {version} requires status draft, not {status}")


def test_6_1_20(d: _Document, report: _Report) -> None:
    """A final or interim document must not carry a pre-release version."""
    version = d.tracking.get("version")
    if d.tracking.get("status") in ("final", "interim") and isinstance(version, str) and _PRE_RELEASE.match(version):
        report.add("6.1.20", "/document/tracking/version", f"version {version} has a pre-release part")


def test_6_1_24(d: _Document, report: _Report) -> None:
    """Two involvements of one vulnerability must not share party and date."""
    for v, vulnerability in enumerate(d.vulnerabilities):
        seen: set[tuple[str, str]] = set()
        for i, involvement in enumerate(_arr(_obj(vulnerability).get("involvements"))):
            key = (str(_obj(involvement).get("party")), str(_obj(involvement).get("date")))
            if key in seen:
                report.add(
                    "6.1.24", f"/vulnerabilities/{v}/involvements/{i}", f"party {key[0]} at {key[1]} is defined twice"
                )
            seen.add(key)


def test_6_1_25(d: _Document, report: _Report) -> None:
    """A hash item must not list one algorithm twice."""
    for product, at in d.full_product_names:
        helper = _obj(_obj(product).get("product_identification_helper"))
        for h, item in enumerate(_arr(helper.get("hashes"))):
            seen: set[str] = set()
            for f, file_hash in enumerate(_arr(_obj(item).get("file_hashes"))):
                algorithm = _obj(file_hash).get("algorithm")
                if isinstance(algorithm, str) and algorithm in seen:
                    report.add(
                        "6.1.25",
                        f"{at}/product_identification_helper/hashes/{h}/file_hashes/{f}/algorithm",
                        f"hash algorithm {algorithm} is used twice",
                    )
                if isinstance(algorithm, str):
                    seen.add(algorithm)


def _without_reference(d: _Document, report: _Report, test: str, key: str) -> None:
    for v, vulnerability in enumerate(d.vulnerabilities):
        for i, item in enumerate(_arr(_obj(vulnerability).get(key))):
            item = _obj(item)
            if "product_ids" not in item and "group_ids" not in item:
                report.add(test, f"/vulnerabilities/{v}/{key}/{i}", f"{key[:-1]} names no product_ids or group_ids")


def test_6_1_29(d: _Document, report: _Report) -> None:
    """Every remediation names products or groups."""
    _without_reference(d, report, "6.1.29", "remediations")


def test_6_1_32(d: _Document, report: _Report) -> None:
    """Every flag names products or groups."""
    _without_reference(d, report, "6.1.32", "flags")


_PROFILES: Final = frozenset(
    {
        "csaf_base",
        "csaf_security_incident_response",
        "csaf_informational_advisory",
        "csaf_security_advisory",
        "csaf_vex",
    }
)
_PROFILE_NAMES: Final = frozenset({"securityincidentresponse", "informationaladvisory", "securityadvisory", "vex"})
# Dashes, whitespace and underscores are removed from both sides, so "csafsecurityadvisory"
# is the profile value csaf_security_advisory too.
_PROFILE_VALUES: Final = frozenset(p.replace("_", "") for p in _PROFILES - {"csaf_base"})


def test_6_1_26(d: _Document, report: _Report) -> None:
    """A free category must neither claim the csaf_ prefix nor resemble a profile's name."""
    category = d.category
    if not isinstance(category, str) or category in _PROFILES:
        return
    normal = re.sub(r"[-_\s]", "", category).lower()
    if category.lower().startswith("csaf_") or normal in _PROFILE_NAMES or normal in _PROFILE_VALUES:
        report.add("6.1.26", "/document/category", f"category {category!r} is reserved for a CSAF profile")


def test_6_1_15(d: _Document, report: _Report) -> None:
    """A translator's document says which language it was translated from."""
    if _obj(d.meta.get("publisher")).get("category") == "translator" and not d.meta.get("source_lang"):
        report.add("6.1.15", "/document/source_lang", "a document published by a translator needs source_lang")


def _revision_numbers(d: _Document) -> list[tuple[str, str]]:
    """(pointer, number) of every revision history item with a string number."""
    return [
        (f"/document/tracking/revision_history/{i}/number", number)
        for i, item in enumerate(_arr(d.tracking.get("revision_history")))
        if isinstance(number := _obj(item).get("number"), str)
    ]


def test_6_1_18(d: _Document, report: _Report) -> None:
    """A final or interim document has no revision of version 0 in its history."""
    status = d.tracking.get("status")
    if status not in ("final", "interim"):
        return
    for at, number in _revision_numbers(d):
        if _MAJOR_ZERO.match(number):
            report.add("6.1.18", at, f"revision {number} is a version 0; the document status is {status}")


def test_6_1_19(d: _Document, report: _Report) -> None:
    """No revision history item carries a pre-release version."""
    for at, number in _revision_numbers(d):
        if _PRE_RELEASE.match(number):
            report.add("6.1.19", at, f"revision {number} has a pre-release part")


def test_6_1_28(d: _Document, report: _Report) -> None:
    """A translation is into another language: lang and source_lang differ (tags are case-insensitive)."""
    lang, source = d.meta.get("lang"), d.meta.get("source_lang")
    if isinstance(lang, str) and isinstance(source, str) and lang.lower() == source.lower():
        report.add("6.1.28", "/document/source_lang", f"source_lang {source} is the document language")


def test_6_1_30(d: _Document, report: _Report) -> None:
    """All versions of a document use one scheme: integer or semantic, as /document/tracking/version does."""
    version = d.tracking.get("version")
    if not isinstance(version, str):
        return
    integer = bool(_INTEGER.match(version))
    for at, number in _revision_numbers(d):
        if bool(_INTEGER.match(number)) != integer:
            scheme = "integer" if integer else "semantic"
            report.add("6.1.30", at, f"revision {number} does not follow {scheme} versioning like version {version}")


def test_6_1_31(d: _Document, report: _Report) -> None:
    """A product_version branch names one version, not a range ("prior to 4.2", "<= 4.1", "all")."""
    stack = [(b, f"/product_tree/branches/{i}") for i, b in enumerate(_arr(d.tree.get("branches")))]
    while stack:
        branch, at = stack.pop()
        branch = _obj(branch)
        name = branch.get("name")
        if branch.get("category") == "product_version" and isinstance(name, str):
            words = sorted(_RANGE_WORDS.intersection(name.lower().split()))
            words += [op for op in _OPERATORS if op in name]
            if words:
                report.add("6.1.31", f"{at}/name", f"product version {name!r} looks like a range ({', '.join(words)})")
        stack.extend((b, f"{at}/branches/{i}") for i, b in enumerate(_arr(branch.get("branches"))))


def test_6_1_33(d: _Document, report: _Report) -> None:
    """A product is in at most one flag of a vulnerability: one VEX justification per product."""
    for v, vulnerability in enumerate(d.vulnerabilities):
        first: dict[str, int] = {}
        for f, flag in enumerate(_arr(_obj(vulnerability).get("flags"))):
            for pid in sorted(d.products_of(_obj(flag))):
                if pid in first and first[pid] != f:
                    report.add(
                        "6.1.33",
                        f"/vulnerabilities/{v}/flags/{f}",
                        f"product {pid!r} is already in /vulnerabilities/{v}/flags/{first[pid]}",
                    )
                first.setdefault(pid, f)


_CWE_PACKAGE: Final = "cwe2"
_CWE_CATALOGUE: Final = ("database_v49", "cwec_v4.14.xml")


@cache
def _cwe_names() -> dict[str, str]:
    """CWE ID ("CWE-79") → name of every weakness in the shipped catalogue."""
    names: dict[str, str] = {}
    catalogue = resources.files(_CWE_PACKAGE).joinpath(*_CWE_CATALOGUE)
    with catalogue.open("rb") as stream:
        # The catalogue is package data we trust, not document input, so the stdlib parser is fine.
        for _, element in ET.iterparse(stream):  # noqa: S314
            tag = element.tag.rpartition("}")[2]
            if tag == "Weakness" and "ID" in element.attrib:
                names[f"CWE-{element.attrib['ID']}"] = element.attrib.get("Name", "")
            if tag in ("Weakness", "Category", "View"):
                element.clear()
    return names


def test_6_1_11(d: _Document, report: _Report) -> None:
    """A vulnerability's CWE exists in the catalogue, under the name the document gives."""
    for v, vulnerability in enumerate(d.vulnerabilities):
        cwe = _obj(_obj(vulnerability).get("cwe"))
        cwe_id, name = cwe.get("id"), cwe.get("name")
        if not isinstance(cwe_id, str) or not isinstance(name, str):
            continue
        known = _cwe_names().get(cwe_id)
        if known is None:
            report.add("6.1.11", f"/vulnerabilities/{v}/cwe/id", f"{cwe_id} is no weakness of the CWE catalogue")
        elif known != name:
            report.add("6.1.11", f"/vulnerabilities/{v}/cwe/name", f"{cwe_id} is named {known!r}, not {name!r}")


def test_6_1_12(d: _Document, report: _Report) -> None:
    """The document's language tags exist in the IANA language subtag registry."""
    for key in ("lang", "source_lang"):
        tag = d.meta.get(key)
        if isinstance(tag, str) and not langcodes.tag_is_valid(tag):
            report.add("6.1.12", f"/document/{key}", f"{tag!r} is not a valid language tag")
