"""Bulk inventory import: rows land in a temporary staging table, are checked set-wise, merged.

Why by hand: the rules that span rows (duplicates in the file and against the fleet, zones and
organizations that must exist, the importer's scope) are single SQL statements over the staging
table, so a million-row import never holds the file in memory and never loops per device; the
load itself is COPY on PostgreSQL and executemany on SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime
from typing import Any

from sqlalchemy import text

from cityward.adapters.storage.uow import UnitOfWork
from cityward.domain.inventory import COLUMNS, DeviceRecord
from cityward.domain.names import name_key
from cityward.domain.products import product_key
from cityward.errors import Problem

TABLE = "import_staging"
# inventory column → devices column for the organization references.
ORG_REFERENCES = {"owner": "owner_id", "installer": "installer_id",
                  "maintainer": "maintainer_id", "supplier": "supplier_id"}
# Columns naming a zone or an organization: each is staged with its name_key beside it
# (`<column>_key`), and matched on the key, so "harbour" in a file is the zone "Harbour".
NAMED = ("zone", *ORG_REFERENCES)
# Staging columns: the record's, the row number, the catalog key of brand/model, the name keys.
STAGE_COLUMNS = ("row_no", *COLUMNS, "brand_key", "model_key", *(f"{c}_key" for c in NAMED))
_TYPES = {
    "row_no": "INTEGER NOT NULL", "latitude": "DOUBLE PRECISION", "longitude": "DOUBLE PRECISION",
    "installed_at": "DATE",
}
# inventory column → devices column, for columns stored as they are.
PLAIN = ("serial", "mac", "kind", "hardware_version", "firmware_version", "address", "protocol",
         "latitude", "longitude", "installed_at", "tags")


def stage_tuple(row: int, rec: DeviceRecord) -> tuple[Any, ...]:
    brand_key, model_key = product_key(rec.brand, rec.model)
    tags = ";" + ";".join(rec.tags) + ";" if rec.tags else None
    return (
        row, rec.id, rec.kind, rec.brand, rec.model, rec.firmware_version, rec.zone, rec.serial,
        rec.mac, rec.hardware_version, rec.address, rec.protocol, rec.latitude, rec.longitude,
        rec.owner, rec.installer, rec.maintainer, rec.supplier, rec.installed_at, tags,
        brand_key, model_key, name_key(rec.zone),
        rec.owner and name_key(rec.owner), rec.installer and name_key(rec.installer),
        rec.maintainer and name_key(rec.maintainer), rec.supplier and name_key(rec.supplier),
    )


@dataclass(frozen=True)
class Check:
    """A set-wise rule: SQL selecting (row_no, value, other) for each offending row."""

    field: str
    sql: str
    message: Callable[[Any, Any], str]
    params: dict[str, Any] = dc_field(default_factory=dict)


class DeviceStaging:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.pg = uow.dialect == "postgresql"
        cols = ", ".join(f"{c} {_TYPES.get(c, 'TEXT')}" for c in STAGE_COLUMNS)
        if self.pg:
            # The set-wise checks group and hash-join the whole file: let them do it in memory.
            self._exec("SET LOCAL work_mem = '64MB'")
            self._exec(f"CREATE TEMPORARY TABLE {TABLE} ({cols}) ON COMMIT DROP")
        else:
            self._exec(f"DROP TABLE IF EXISTS temp.{TABLE}")
            self._exec(f"CREATE TEMPORARY TABLE {TABLE} ({cols})")

    def _exec(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        return self.uow.conn.execute(text(sql), params or {})

    def add(self, batch: Sequence[tuple[Any, ...]]) -> None:
        if not batch:
            return
        if self.pg:
            raw = self.uow.conn.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cur, cur.copy(
                f"COPY {TABLE} ({', '.join(STAGE_COLUMNS)}) FROM STDIN"
            ) as copy:
                for item in batch:
                    copy.write_row(item)
        else:
            marks = ", ".join("?" for _ in STAGE_COLUMNS)
            self.uow.conn.exec_driver_sql(f"INSERT INTO {TABLE} VALUES ({marks})", list(batch))

    def finish_loading(self) -> None:
        if not self.pg:
            # SQLite joins by nested loops and needs these; PostgreSQL's checks are whole-table
            # hash joins that the indexes barely help (1 s saved, 8-17 s spent per 1M rows).
            for name, cols in (("id", "id"), ("mac", "mac"), ("serial", "brand_key, serial"),
                               ("row", "row_no"), ("product", "brand_key, model_key")):
                self._exec(f"CREATE INDEX ix_{TABLE}_{name} ON {TABLE} ({cols})")
        self._exec(f"ANALYZE {TABLE}")

    def count(self) -> int:
        return int(self._exec(f"SELECT COUNT(*) FROM {TABLE}").scalar_one())

    # --- set-wise checks ---------------------------------------------------------------------

    def problems(self, check: Check, limit: int) -> tuple[list[Problem], int]:
        found = [
            Problem(check.message(value, other), row=row, field=check.field)
            for row, value, other in self._exec(
                f"{check.sql} ORDER BY 1 LIMIT {int(limit)}", check.params
            )
        ]
        if len(found) < limit:
            return found, len(found)
        total = self._exec(f"SELECT COUNT(*) FROM ({check.sql}) AS c", check.params).scalar_one()
        return found, int(total)

    def count_rows(self, checks: Sequence[Check]) -> int:
        """Distinct rows failing any of `checks`."""
        union = " UNION ".join(f"SELECT u{i}.row_no FROM ({c.sql}) AS u{i}" for i, c in enumerate(checks))
        params = {k: v for c in checks for k, v in c.params.items()}
        return int(self._exec(f"SELECT COUNT(*) FROM ({union}) AS bad", params).scalar_one())

    def drop(self, check: Check) -> int:
        result = self._exec(
            f"DELETE FROM {TABLE} WHERE row_no IN (SELECT c.row_no FROM ({check.sql}) AS c)",
            check.params,
        )
        return int(result.rowcount or 0)

    def missing(self, column: str, table: str) -> list[tuple[str, str, int]]:
        """(name, key, first row) of each name in `column` that `table` lacks: spelled as on the
        first row naming it, once however many spellings of it the file uses."""
        rows = self._exec(
            f"SELECT s.{column}, s.{column}_key, s.row_no FROM {TABLE} s JOIN "
            f"(SELECT {column}_key AS k, MIN(row_no) AS first FROM {TABLE} "
            f"WHERE {column}_key IS NOT NULL GROUP BY {column}_key) f ON f.first = s.row_no "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.name_key = s.{column}_key) ORDER BY 3"
        )
        return [(name, key, int(row)) for name, key, row in rows]

    def new_products(self) -> list[tuple[str, str, str, str, str, str]]:
        """(brand, model, brand_key, model_key, kind, firmware) of products the catalog lacks."""
        rows = self._exec(
            f"SELECT s.brand, s.model, s.brand_key, s.model_key, s.kind, s.firmware_version "
            f"FROM {TABLE} s JOIN (SELECT brand_key, model_key, MIN(row_no) AS first "
            f"FROM {TABLE} GROUP BY brand_key, model_key) f ON f.first = s.row_no "
            f"WHERE NOT EXISTS (SELECT 1 FROM products p "
            f"WHERE p.brand_key = s.brand_key AND p.model_key = s.model_key)"
        )
        return [tuple(r) for r in rows]

    def existing_count(self) -> int:
        return int(
            self._exec(f"SELECT COUNT(*) FROM {TABLE} s JOIN devices d ON d.id = s.id").scalar_one()
        )

    def merge(self, columns: Sequence[str], city_id: int, now: datetime) -> int:
        """Upsert every staged row into `devices`; on existing ids only `columns` change.

        Returns the rows written: inserted plus actually changed (identical rows are skipped,
        so re-importing an unchanged file rewrites nothing and keeps `updated_at` truthful).
        """
        select_cols = {
            "id": "s.id", "product_id": "p.id", "zone_id": "z.id",
            "owner_id": "COALESCE(o_owner.id, :city)",
            **{dev: f"o_{col}.id" for col, dev in ORG_REFERENCES.items() if col != "owner"},
            **{c: f"s.{c}" for c in PLAIN},
            "firmware_running": "s.firmware_version",
            "created_at": ":now", "updated_at": ":now",
        }
        joins = " ".join(
            f"LEFT JOIN organizations o_{col} ON o_{col}.name_key = s.{col}_key" for col in ORG_REFERENCES
        )
        updated = ["product_id", "zone_id", "updated_at"] + [
            ORG_REFERENCES.get(c, c) for c in columns
            if c in PLAIN or c in ORG_REFERENCES
        ]
        sets = ", ".join(f"{c} = excluded.{c}" for c in updated)
        if "firmware_version" in columns:  # what the device reports outranks what the file says
            sets += (", firmware_running = COALESCE((SELECT st.firmware_version FROM device_states st "
                     "WHERE st.device_id = devices.id), excluded.firmware_version)")
        compared = [c for c in updated if c != "updated_at"]
        if self.pg:
            changed = (f"ROW({', '.join(f'devices.{c}' for c in compared)}) IS DISTINCT FROM "
                       f"ROW({', '.join(f'excluded.{c}' for c in compared)})")
        else:
            changed = " OR ".join(f"devices.{c} IS NOT excluded.{c}" for c in compared)
        result = self._exec(
            f"INSERT INTO devices ({', '.join(select_cols)}) "
            f"SELECT {', '.join(select_cols.values())} FROM {TABLE} s "
            f"JOIN products p ON p.brand_key = s.brand_key AND p.model_key = s.model_key "
            f"JOIN zones z ON z.name_key = s.zone_key {joins} "
            # WHERE true: SQLite needs it to parse ON CONFLICT after a join.
            f"WHERE true ON CONFLICT (id) DO UPDATE SET {sets} WHERE {changed}",
            {"city": city_id, "now": now},
        )
        return int(result.rowcount or 0)


def _dup(value: Any, first: Any) -> str:
    return f"{value!r} repeats row {first}"


def duplicate_checks() -> list[Check]:
    """Rows repeating an id, MAC or (brand, serial) of an earlier row in the same file."""
    checks = []
    for column, key in (("id", "id"), ("mac", "mac"), ("serial", "brand_key, serial")):
        cols = [c.strip() for c in key.split(",")]
        on = " AND ".join(f"d.{c} = s.{c}" for c in cols)
        not_null = " AND ".join(f"{c} IS NOT NULL" for c in cols)
        checks.append(Check(column, (
            f"SELECT s.row_no, s.{column}, d.first FROM {TABLE} s JOIN "
            f"(SELECT {key}, MIN(row_no) AS first FROM {TABLE} WHERE {not_null} "
            f"GROUP BY {key} HAVING COUNT(*) > 1) d ON {on} WHERE s.row_no > d.first"
        ), _dup))
    return checks


def fleet_conflict_checks() -> list[Check]:
    """Rows whose MAC or (brand, serial) belongs to another device already in the fleet."""
    not_restaged = f"NOT EXISTS (SELECT 1 FROM {TABLE} s2 WHERE s2.id = d.id)"
    return [
        Check("mac", (
            f"SELECT s.row_no, s.mac, d.id FROM {TABLE} s JOIN devices d ON d.mac = s.mac "
            f"WHERE d.id <> s.id AND {not_restaged}"
        ), lambda v, other: f"{v} already belongs to device {other}"),
        Check("serial", (
            f"SELECT s.row_no, s.serial, d.id FROM {TABLE} s "
            f"JOIN devices d ON d.serial = s.serial JOIN products p ON p.id = d.product_id "
            f"WHERE p.brand_key = s.brand_key AND d.id <> s.id AND {not_restaged}"
        ), lambda v, other: f"serial {v!r} of this brand already belongs to device {other}"),
    ]


def reference_check(column: str, table: str, message: Callable[[Any], str]) -> Check:
    """Rows naming, in `column`, a zone or organization that `table` lacks (compared by key)."""
    return Check(column, (
        f"SELECT s.row_no, s.{column}, NULL FROM {TABLE} s WHERE s.{column}_key IS NOT NULL "
        f"AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.name_key = s.{column}_key)"
    ), lambda v, _o: message(v))


def claim_check(columns: Sequence[str], org_name: str, org_kind: str) -> Check:
    """A non-city importer must name itself in one of `columns` on every row."""
    names = " or ".join(columns)
    named = " OR ".join(f"COALESCE(s.{c}_key = :org, false)" for c in columns)
    article = "an" if org_kind[0] in "aeiou" else "a"
    return Check(columns[0], (
        f"SELECT s.row_no, s.id, NULL FROM {TABLE} s WHERE NOT ({named})"
    ), lambda v, _o: f"device {v}: {article} {org_kind} imports only devices naming it "
                     f"({org_name!r}) as {names}", {"org": name_key(org_name)})


def outside_scope_check(scope_sql: str) -> Check:
    """Rows updating an existing device that the importer is not responsible for."""
    return Check("id", (
        f"SELECT s.row_no, s.id, NULL FROM {TABLE} s JOIN devices ON devices.id = s.id "
        # COALESCE: NULL duty columns make the scope condition NULL, and NOT NULL selects nothing.
        f"WHERE NOT COALESCE(({scope_sql}), false)"
    ), lambda v, _o: f"id {v!r} belongs to a device outside your responsibility")
