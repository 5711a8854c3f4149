"""Mandatory CSAF 2.0 tests about release records and item references (6.1.17, 6.1.20, 6.1.24,
6.1.25, 6.1.29, 6.1.32), kept apart so that csaf_validation stays readable.

Each check takes the indexed document and the report of csaf_validation and runs in linear time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from cityward.adapters.advisories.csaf_validation import _Document, _Report

# Semantic version with a pre-release part ("1.0.0-rc.1"), or an integer/semver major 0.
_PRE_RELEASE: Final = re.compile(r"^\d+\.\d+\.\d+-")
_MAJOR_ZERO: Final = re.compile(r"^0(\.|$)")


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


def test_6_1_26(d: _Document, report: _Report) -> None:
    """A free category must neither claim the csaf_ prefix nor resemble a profile's name."""
    category = d.category
    if not isinstance(category, str) or category in _PROFILES:
        return
    normal = re.sub(r"[-_\s]", "", category).lower()
    if category.lower().startswith("csaf_") or normal in _PROFILE_NAMES:
        report.add("6.1.26", "/document/category", f"category {category!r} is reserved for a CSAF profile")
