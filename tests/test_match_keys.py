"""Identity keys: vendor names as advisories write them, model families as vendors write them, and
the catalog side keyed by the very same functions."""

from __future__ import annotations

import re

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cityward.adapters.storage.vuln_frames import _keyed
from cityward.domain.advisories import model_key
from cityward.domain.model_names import EVERY_MODEL, model_variants, read_models
from cityward.domain.vendors import alias_map, canonical_vendor, fix_mojibake, split_vendors, vendor_key, vendor_keys

names = st.text(max_size=40) | st.sampled_from(["DS-2CD2026G2-IU/SL", "ds-2cd2026g2-iu\\/sl_firmware", "AXIS OS",
                                                "Siemens AG", "Desigo PXC00-E.D", "İstanbul Fw", "Straße", "x_FW",
                                                "Geutebrück", "GeutebrÃ¼ck", "Dahua Technology Co., Ltd"])


@settings(max_examples=300, deadline=None)
@given(st.lists(names, min_size=1, max_size=20))
def test_catalog_keys_are_the_advisory_keys(values: list[str]) -> None:
    frame = pl.DataFrame({"product_id": list(range(len(values))), "b": values, "m": values})
    keyed = _keyed(frame, "b", "m", "product", {}, variants=False).sort("product_id", maintain_order=True)
    assert keyed.get_column("vendor_key").to_list() == [vendor_key(v) for v in values]
    assert keyed.get_column("product_key").to_list() == [model_key(v) for v in values]
    every = _keyed(frame, "b", "m", "product", {})
    for i, v in enumerate(values):  # each product keeps its own key among its variants
        assert model_key(v) in every.filter(pl.col("product_id") == i).get_column("product_key").to_list()


def test_catalog_models_go_by_the_names_advisories_use() -> None:
    assert model_variants("Sierra Wireless", "AirLink MP70") == ("airlinkmp70", "sierrawirelessairlinkmp70", "mp70")
    assert model_variants("Illustra", "Flex Gen 2") == ("flexgen2", "illustraflexgen2")  # never "gen2"


@pytest.mark.parametrize(("advisory", "inventory"), [
    ("Hangzhou Hikvision Digital Technology Co., Ltd.", "Hikvision"),
    ("Axis Communications AB", "AXIS"),
    ("Dahua Technology Co., Ltd", "Dahua"),
    ("Dahua Technology Co, Ltd", "dahua"),
    ("Schneider Electric Software, LLC", "Schneider Electric"),
    ("GeutebrÃ¼ck", "Geutebrück"),
    ("Geutebrück GmbH", "GEUTEBRUCK"),
    (" CP Plus", "CP PLUS"),
    ("Ctek, Inc.", "Ctek"),
    ("Fujitsu Limited", "Fujitsu"),
    ("Hitron Systems", "Hitron"),
    ("Columbia Weather Systems, Inc.", "Columbia Weather"),
    ("NetComm Wireless", "NetComm"),
])
def test_legal_names_fold_to_the_trade_name(advisory: str, inventory: str) -> None:
    assert vendor_key(advisory) == vendor_key(inventory) is not None


@pytest.mark.parametrize(("one", "other"), [
    ("Johnson Controls", "Johnson Electric"), ("Sierra Wireless", "Sierra Monitor Corporation"),
    ("Schneider Electric", "Siemens"), ("Moxa", "Moxa Networks Asia"), ("Hikvision", "Dahua"),
])
def test_different_vendors_stay_apart(one: str, other: str) -> None:
    assert vendor_key(one) != vendor_key(other)


def test_a_string_naming_several_vendors_names_each() -> None:
    assert vendor_keys("Sensormatic Electronics, LLC, Johnson Controls Inc.") == ("sensormatic", "johnsoncontrols")
    assert vendor_keys("EnOcean Edge Inc, a subsidiary of EnOcean GmbH-") == ("enoceanedge", "enocean")
    assert split_vendors("Dahua Technology Co, Ltd") == ["Dahua Technology Co, Ltd"]
    assert vendor_keys("n/a") == () and vendor_key("N/A") is None and vendor_key("") is None


def test_aliases_follow_chains_and_ignore_self_aliases() -> None:
    aliases = alias_map([("Samsung Techwin", "Hanwha Techwin"), ("Hanwha Techwin", "Hanwha Vision"),
                         ("Axis Communications", "Axis")])
    assert canonical_vendor(vendor_key("Samsung Techwin Co., Ltd."), aliases) == "hanwha"
    assert "axis" not in aliases and canonical_vendor("axis", aliases) == "axis"
    loop = alias_map([("A Corp", "B Corp"), ("B Corp", "A Corp")])
    assert set(loop) == {"a", "b"}  # a loop ends instead of spinning


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_vendor_key_is_stable(text: str) -> None:
    key = vendor_key(text)
    assert key is None or (key and vendor_key(key) == key and not re.search(r"[\W_]", key))
    assert fix_mojibake(fix_mojibake(text)) == fix_mojibake(text) or "Ã" in fix_mojibake(text)


def _models(text: str) -> list[tuple[str, str | None]]:
    return [(m.text, m.pattern) for m in read_models(text)]


def _matches(text: str, model: str) -> bool:
    key = model_key(model) or ""
    return any(m.key == key if m.pattern is None else re.search(m.pattern, key) for m in read_models(text))


@pytest.mark.parametrize(("family", "member", "outsider"), [
    ("DS-2CD2xx2FWD Series", "DS-2CD2142FWD-I", "DS-2CD2143G0-I"),
    ("EFD-22xx", "EFD-2250", "EFD-3250"),
    ("RLC-4XX series", "RLC-410", "RLC-510"),
    ("DS-2DF*X(T3)", "DS-2DF8225IX(T3)", "DS-2DF8225IX(T5)"),
    ("ASI7XXX", "ASI7213X", "ASI6213"),
    ("IPC-HX2XXX", "IPC-HX2431", "IPC-HX3431"),
    ("DS-KH63 Series", "DS-KH6320-WTE1", "DS-KH8520"),
    ("AVM1203 (IP Camera)", "AVM1203", "AVM1204"),
    ("EDR-G902 / EDR-G903 Series", "EDR-G903", "EDR-G904"),
    ("MP70 MP70E RV50 RV50X LX40 and LX60", "RV50X", "RV55"),
    ("SkyRouter Series 4200 and 4400", "SkyRouter 4400", "SkyRouter 4300"),
    ("AirLink Raven XE, and", "AirLink Raven XE", "AirLink Raven XT"),
    ("Lynx Model: L206-F2G1", "L206-F2G1", "L210-F2G"),
])
def test_model_families_match_their_members_only(family: str, member: str, outsider: str) -> None:
    assert _matches(family, member), (family, member, _models(family))
    assert not _matches(family, outsider), (family, outsider, _models(family))


def test_a_single_capital_x_is_a_letter_and_lower_case_names_keep_their_x() -> None:
    assert _models("RV50X") == [("RV50X", None)]
    assert _models("ipc-hx2xxx") == [("ipc-hx2xxx", None)]
    assert _models("All Models") == [("All Models", EVERY_MODEL)]
    assert _models("  ,  ") == [] and read_models(None) == []


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_read_models_never_fails_and_every_pattern_compiles(text: str) -> None:
    for m in read_models(text):
        assert m.text and m.key
        if m.pattern is not None:
            re.compile(m.pattern)
            assert pl.Series([m.key]).str.contains(m.pattern).to_list() == [bool(re.search(m.pattern, m.key))]


@pytest.mark.parametrize(("written", "model", "other"), [
    ("CPU LS4000", "LS4000", "LS4001"),
    ("SCALANCE M812-1 ADSL-Router", "M812-1", "M816-1"),
    ("DVR HVR-4781", "HVR-4781", "HVR-4782"),
    ("Cradlepoint IBR600 NetCloud OS (NCOS)", "IBR600", "IBR900"),
    ("Vigilant Fixed LPR Coms Box (BCAV1F2-C600)", "BCAV1F2-C600", "BCAV1F2-C700"),
    ("Vigilant Fixed LPR Coms Box (BCAV1F2-C600)", "Vigilant Fixed LPR Coms Box", "Vigilant Mobile LPR"),
    ("enteliBUS Manager Touch (eBMGR-TCH)", "eBMGR-TCH", "eBMGR"),
])
def test_a_model_number_among_words_names_the_product(written: str, model: str, other: str) -> None:
    assert _matches(written, model), (written, _models(written))
    assert not _matches(written, other), (written, _models(written))


def test_no_shortcut_for_versions_ordinals_or_a_version_line() -> None:
    # "V4.X" and "10th" are not model numbers; "RS900G V5.X" names the V5 line only, which its
    # range ("< V5.5.4") cannot say on its own: an RS900G on V4.3.7 must not match it.
    assert not _matches("RUGGEDCOM ROS RS900G V5.X", "RS900G")
    assert not _matches("Gateway V4.X2 10th Edition", "10th")
    assert _models("AVM1203 (IP Camera)") == [("AVM1203", None)]
    assert _models("DS-2DF*X(T3)") == [("DS-2DF*X(T3)", "^ds2df.*xt3$")]
