"""Advisories written the way real CISA CSAF files and CVE 5 records are written (legal vendor
names, model families and lists, `vers:all/*` in a version branch, dangling "and", a date as a
firmware version) are read into entries that match what a city's inventory calls the product.
The documents here are small and our own, written in those patterns."""

from __future__ import annotations

from typing import Any

import pytest

from cityward.domain import csaf, cve5
from cityward.domain.advisories import Status
from cityward.domain.vendors import vendor_key


def _csaf(vendor: str, product: str, version_branch: dict[str, Any] | None = None) -> dict[str, Any]:
    leaf = {"category": "product_version", "name": "1.0", "product": {"product_id": "P1", "name": "x"}}
    leaf = version_branch or leaf
    return {
        "document": {"category": "csaf_security_advisory", "csaf_version": "2.0", "title": "t",
                     "publisher": {"category": "vendor", "name": "CISA", "namespace": "https://example.org"},
                     "tracking": {"id": "ICSA-00-000-00", "current_release_date": "2024-01-01T00:00:00Z",
                                  "initial_release_date": "2024-01-01T00:00:00Z", "status": "final",
                                  "version": "1", "revision_history": []}},
        "product_tree": {"branches": [{"category": "vendor", "name": vendor, "branches": [
            {"category": "product_name", "name": product, "branches": [leaf]}]}]},
        "vulnerabilities": [{"cve": "CVE-2024-0001", "product_status": {"known_affected": ["P1"]}}],
    }


def test_a_family_under_a_legal_name_becomes_a_pattern_for_the_trade_name() -> None:
    adv = csaf.normalize(_csaf("Dahua Technology Co., Ltd", "IPC-HDBW2XXX Series"), "a.json")
    (entry,) = adv.entries
    assert entry.identity.vendor_key == vendor_key("Dahua") == "dahua"
    assert entry.identity.model_pattern == "^ipchdbw2.+.*$" and entry.status is Status.AFFECTED


def test_vers_all_in_a_version_branch_means_every_version() -> None:
    leaf = {"category": "product_version", "name": "vers:all/*", "product": {"product_id": "P1", "name": "x"}}
    adv = csaf.normalize(_csaf("Echelon", "SmartServer 1", leaf), "a.json")
    assert not adv.unparsed
    (entry,) = adv.entries
    assert entry.intervals == ((None, False, None, False),)


def test_a_version_list_ending_in_and_is_read() -> None:
    leaf = {"category": "product_version", "name": "V5.00.204, V5.00.260, and",
            "product": {"product_id": "P1", "name": "x"}}
    adv = csaf.normalize(_csaf("Siemens", "Desigo XWP", leaf), "a.json")
    assert not adv.unparsed
    assert adv.entries[0].intervals is not None and len(adv.entries[0].intervals) == 2


def test_two_vendors_in_one_string_give_an_entry_for_each() -> None:
    adv = csaf.normalize(_csaf("Sensormatic Electronics, LLC, Johnson Controls Inc.", "Illustra Pro Gen 3"),
                         "a.json")
    assert {e.identity.vendor_key for e in adv.entries} == {"sensormatic", "johnsoncontrols"}


@pytest.mark.parametrize(("product", "models"), [
    ("MP70 MP70E RV50 and LX60", {"MP70", "MP70E", "RV50", "LX60"}),
    ("AVM1203 (IP Camera)", {"AVM1203"}),
])
def test_cve5_products_read_as_lists_and_without_descriptions(product: str, models: set[str]) -> None:
    record = {"dataType": "CVE_RECORD", "dataVersion": "5.1",
              "cveMetadata": {"cveId": "CVE-2024-0002", "state": "PUBLISHED", "datePublished": "2024-01-01T00:00:00Z"},
              "containers": {"cna": {"affected": [{"vendor": "Sierra Wireless, Inc.", "product": product,
                                                   "versions": [{"version": "0", "lessThan": "4.9.4",
                                                                 "versionType": "custom", "status": "affected"}]}]}}}
    adv = cve5.normalize(record, "r.json")
    assert {e.identity.product for e in adv.entries} == models
    assert {e.identity.vendor_key for e in adv.entries} == {"sierra"}


@pytest.mark.parametrize(("category", "written", "models"), [
    ("product_version_range", "EY-AS525F001", {"eyas525f001"}),
    ("product_version", "L206-F2G1, L210-F2G, and", {"l206f2g1", "l210f2g"}),
])
def test_model_numbers_in_a_version_branch_are_read_as_the_models_every_version_affected(
        category: str, written: str, models: set[str]) -> None:
    leaf = {"category": category, "name": written, "product": {"product_id": "P1", "name": "x"}}
    adv = csaf.normalize(_csaf("SAUTER", "EY-modulo 5 Building Automation Station", leaf), "a.json")
    assert not adv.unparsed
    assert {e.identity.product_key for e in adv.entries} == models
    assert all(e.intervals is None and "read as the model" in (e.versions or "") for e in adv.entries)


@pytest.mark.parametrize("written", ["sometime in 2020", "see the vendor's website"])
def test_a_version_nobody_can_read_is_reported_not_taken_for_a_model(written: str) -> None:
    leaf = {"category": "product_version_range", "name": written, "product": {"product_id": "P1", "name": "x"}}
    adv = csaf.normalize(_csaf("Teltonika", "RUT", leaf), "a.json")
    assert not adv.entries and len(adv.unparsed) == 1
