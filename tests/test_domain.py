"""Pure domain rules: parsers and matchers with property tests (no database)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cityward.adapters.inventory_files import FileFormat, open_inventory
from cityward.domain.auditchain import GENESIS, AuditEvent, event_hash, verify_chain
from cityward.domain.inventory import (
    COLUMNS,
    DeviceRecord,
    neutralize_cell,
    parse_mac,
    parse_row,
    record_to_row,
    restore_cell,
)
from cityward.domain.products import CatalogEntry, OriginStatus, resolve_origins
from cityward.domain.responsibility import Duty, effective_responsibility, zones_held
from cityward.errors import InvalidInput


@given(st.text())
def test_neutralized_cells_restore_exactly(text: str) -> None:
    assert restore_cell(neutralize_cell(text)) == text


@given(st.text())
def test_neutralized_cells_never_start_a_formula(text: str) -> None:
    cell = neutralize_cell(text)
    assert not cell or cell[0] not in "=+-@\t\r" or cell.lstrip("+-").replace(".", "", 1).isdigit() or cell[0] == "'"


@given(st.binary(min_size=6, max_size=6))
def test_mac_spellings_normalize(raw: bytes) -> None:
    hexed = raw.hex()
    canonical = ":".join(hexed[i:i + 2] for i in range(0, 12, 2))
    for spelling in (canonical.upper(), hexed, "-".join(canonical.split(":")), f"{hexed[:4]}.{hexed[4:8]}.{hexed[8:]}"):
        assert parse_mac(spelling) == canonical


row_values = st.one_of(st.none(), st.text(max_size=80), st.integers(), st.floats(allow_nan=True),
                       st.booleans(), st.lists(st.text(max_size=5), max_size=3))


@given(st.dictionaries(st.sampled_from(COLUMNS), row_values))
def test_parse_row_never_raises(raw: dict[str, object]) -> None:
    result = parse_row(raw, 7)
    if isinstance(result, list):
        assert result and all(p.row == 7 and p.field in COLUMNS for p in result)
    else:
        assert isinstance(result, DeviceRecord)
        assert parse_row(record_to_row(result), 7) == result  # export form parses back to itself


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_csv_reader_only_raises_invalid_input(data: bytes) -> None:
    try:
        reader = open_inventory(io.BytesIO(b"id,kind,brand,model,firmware_version,zone\n" + data),
                                "f.csv", FileFormat.CSV)
        for _row, raw in reader.rows:
            if "__problem__" not in raw:
                parse_row(raw, 1)
    except InvalidInput:
        pass


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_json_reader_only_raises_invalid_input(data: bytes) -> None:
    try:
        for _row, raw in open_inventory(io.BytesIO(b"[" + data), "f.json", FileFormat.JSON).rows:
            if "__problem__" not in raw:
                parse_row(raw, 1)
    except InvalidInput:
        pass


def test_relabel_chain_resolves_to_its_end() -> None:
    cat = {1: CatalogEntry("Factory", "F1", None, OriginStatus.ORIGINAL),
           2: CatalogEntry("ODM", "O1", 1, OriginStatus.RELABELED),
           3: CatalogEntry("Shop", "S1", 2, OriginStatus.RELABELED)}
    origins = resolve_origins(cat)
    assert (origins[3].brand, origins[3].chain) == ("Factory", (3, 2, 1))
    assert not origins[1].relabeled and origins[2].relabeled


@given(st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=8))
def test_relabel_cycles_are_always_refused(targets: list[int]) -> None:
    n = len(targets)
    cat = {i: CatalogEntry(f"B{i}", "M", targets[i] % n, OriginStatus.RELABELED) for i in range(n)}
    with pytest.raises(InvalidInput, match="loops"):
        resolve_origins(cat)  # every product points somewhere: there must be a cycle


def test_zone_duty_is_inherited_and_overridden() -> None:
    parents = {1: None, 2: 1, 3: 2, 4: None}
    assignments = {(1, Duty.MAINTAIN): 10, (3, Duty.MAINTAIN): 20}
    assert zones_held(10, Duty.MAINTAIN, parents, assignments) == {1, 2}
    assert zones_held(20, Duty.MAINTAIN, parents, assignments) == {3}
    held = effective_responsibility({Duty.MAINTAIN: None, Duty.INSTALL: 30}, 2, parents, assignments)
    assert held[Duty.MAINTAIN] == 10 and held[Duty.INSTALL] == 30 and held[Duty.SUPPLY] is None


def _chain(n: int) -> list[AuditEvent]:
    events, prev = [], GENESIS
    for seq in range(1, n + 1):
        at = datetime(2026, 1, 1, tzinfo=UTC)
        h = event_hash(prev, seq, at, "a", 1, "x.done", "t", str(seq), None, {"n": seq})
        events.append(AuditEvent(seq, at, "a", 1, "x.done", "t", str(seq), None, {"n": seq}, prev, h))
        prev = h
    return events


@given(st.integers(min_value=1, max_value=12), st.data())
def test_any_single_edit_is_named(n: int, data: st.DataObject) -> None:
    events = _chain(n)
    assert verify_chain(events).ok
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    e = events[i]
    events[i] = AuditEvent(e.seq, e.at, e.actor, e.org_id, e.action, e.target_type, e.target_id,
                           e.before, {"n": -1}, e.prev_hash, e.hash)
    assert verify_chain(events).first_broken == i + 1


def test_naive_and_aware_times_hash_alike() -> None:
    aware = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert event_hash(GENESIS, 1, aware, "a", None, "x", "t", "1", None, None) == \
        event_hash(GENESIS, 1, aware.replace(tzinfo=None), "a", None, "x", "t", "1", None, None)
