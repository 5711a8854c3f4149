"""Frames in and out of the database (COPY as CSV on PostgreSQL, DB-API on SQLite) lose nothing:
NULL stays NULL, the empty string stays empty, quotes, commas and line breaks survive, booleans
and UTC timestamps keep their type."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Boolean, DateTime, String, Text, cast, delete, literal, select

from cityward.adapters.storage.frames import read_frame, write_frame
from cityward.adapters.storage.models import AuditFindingRow
from cityward.bootstrap import Platform

# PostgreSQL text cannot hold NUL; everything else, including CSV's own syntax, is fair game.
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=30)
OPTIONAL = st.none() | TEXT
SCHEMA = {"device_id": pl.String, "rule_id": pl.String, "evidence": pl.String, "responsible_org_id": pl.Int64,
          "waiver_id": pl.Int64}


def _frame(rows: list[tuple[str, str | None, int | None]], run: int) -> pl.DataFrame:
    return pl.DataFrame(
        [(run, f"D{i}-{dev[:20]}", rule or "", json.dumps({"v": rule}), org, org) for i, (dev, rule, org)
         in enumerate(rows)],
        schema={"run_id": pl.Int64, "device_id": pl.String, "rule_id": pl.String, "evidence": pl.String,
                "responsible_org_id": pl.Int64, "waiver_id": pl.Int64}, orient="row",
    ).with_columns(pl.lit("high").alias("severity"), pl.lit(run, dtype=pl.Int64).alias("first_seen_run"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(TEXT, OPTIONAL, st.none() | st.integers(-2**31, 2**31 - 1)), max_size=20))
def test_round_trip_keeps_every_value(platform: Platform, rows: list[tuple[str, str | None, int | None]]) -> None:
    frame = _frame(rows, run=4242)
    with platform.uow(write=True) as uow:
        uow.session.execute(delete(AuditFindingRow).where(AuditFindingRow.run_id == 4242))
        write_frame(uow.session, AuditFindingRow.__tablename__, frame)
        back = read_frame(uow.session, select(AuditFindingRow.device_id, AuditFindingRow.rule_id,
                                              cast(AuditFindingRow.evidence, Text),
                                              AuditFindingRow.responsible_org_id,
                                              AuditFindingRow.waiver_id)
                          .where(AuditFindingRow.run_id == 4242).order_by(AuditFindingRow.id), SCHEMA)
        uow.session.rollback()
    expected = frame.select(*SCHEMA)
    assert back.schema == expected.schema
    assert back["device_id"].to_list() == expected["device_id"].to_list()
    assert back["rule_id"].to_list() == expected["rule_id"].to_list()  # "" stays "", never NULL
    assert [json.loads(e) for e in back["evidence"]] == [json.loads(e) for e in expected["evidence"]]
    assert back["waiver_id"].to_list() == expected["waiver_id"].to_list()  # NULL stays NULL


def test_types_booleans_timestamps_and_empty_results(platform: Platform) -> None:
    at = datetime(2026, 11, 25, 12, 30, 15, 123456, tzinfo=UTC)
    schema = {"flag": pl.Boolean, "off": pl.Boolean, "absent": pl.Boolean, "at": pl.Datetime("us", "UTC"),
              "never": pl.Datetime("us", "UTC"), "label": pl.String}
    stmt = select(literal(True, Boolean).label("flag"), literal(False, Boolean).label("off"),
                  literal(None, Boolean).label("absent"), literal(at, DateTime(timezone=True)).label("at"),
                  literal(None, DateTime(timezone=True)).label("never"), literal('a,"b"\nc', String).label("label"))
    with platform.uow() as uow:
        got = read_frame(uow.session, stmt, schema)
        empty = read_frame(uow.session, stmt.where(literal(1) == 0), schema)
    assert got.rows() == [(True, False, None, at, None, 'a,"b"\nc')]
    assert got.schema == pl.Schema(schema) and empty.height == 0 and empty.schema == pl.Schema(schema)
