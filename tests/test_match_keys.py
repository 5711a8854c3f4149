"""The matcher computes catalog keys in polars and advisory keys in Python: they must agree."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from cityward.adapters.storage.vuln_frames import _model_key, _vendor_key
from cityward.domain.advisories import match_key, model_key

names = st.text(max_size=40) | st.sampled_from(["DS-2CD2026G2-IU/SL", "ds-2cd2026g2-iu\\/sl_firmware", "AXIS OS",
                                                "Siemens AG", "Desigo PXC00-E.D", "İstanbul Fw", "Straße", "x_FW"])


@settings(max_examples=300, deadline=None)
@given(st.lists(names, min_size=1, max_size=20))
def test_polars_keys_equal_python_keys(values: list[str]) -> None:
    frame = pl.DataFrame({"v": values}, schema={"v": pl.String})
    vendor = frame.select(_vendor_key("v")).get_column("vendor_key").to_list()
    model = frame.select(_model_key("v")).get_column("product_key").to_list()
    assert vendor == [match_key(v) or "" for v in values]
    assert model == [model_key(v) or "" for v in values]
