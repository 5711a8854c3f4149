"""names have one identity: zones and organizations gain a unique name_key; product keys are NFKC

Zones, organizations and products compare by `domain.names.name_key` (NFKC, case-folded, white
space collapsed). Zones and organizations gain a `name_key` column with a unique constraint; the
products' brand/model keys, which were case-folded only, are recomputed with NFKC.

Existing clashes (e.g. "Harbour" and "harbour", made by earlier versions) are neither merged nor a
reason to refuse the upgrade:
- merging would move devices, duties, tokens and users between rows outside the audit log, and
  which row's duty or kind is right is a person's decision;
- refusing would leave the installation unable to start, with no command to resolve the clash.
So the oldest row of each clash keeps the key (every lookup by name and every import now reaches
it) and each later row gets a key that no name has (`<key>\\x1f<id>`); the upgrade logs each clash,
and `cityward doctor` reports them (exit 1) with the command that resolves each
(`cityward zones rename` / `cityward orgs rename`), until none is left.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 08:30:00
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

log = logging.getLogger("cityward.migrations")
MARK = "\x1f"


def _key(name: str) -> str:
    """domain.names.name_key as of this revision (a migration keeps the rule it was written with)."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return " ".join(folded.split())


def _old_key(name: str) -> str:
    """The products' key before this revision."""
    return " ".join(name.split()).casefold()


def _fill(conn: sa.Connection, table: str, what: str) -> None:
    rows = conn.execute(sa.text(f"SELECT id, name FROM {table} ORDER BY id")).all()  # noqa: S608
    owner: dict[str, tuple[int, str]] = {}
    for row_id, name in rows:
        key = _key(name)
        if key in owner:
            first_id, first = owner[key]
            log.warning("%s %r (id %s) has the same name as %r (id %s): lookups now reach %r; "
                        "run `cityward doctor`", what, name, row_id, first, first_id, first)
            key = f"{key}{MARK}{row_id}"
        else:
            owner[key] = (row_id, name)
        conn.execute(sa.text(f"UPDATE {table} SET name_key = :k WHERE id = :i"),  # noqa: S608
                     {"k": key, "i": row_id})


def _rekey_products(conn: sa.Connection, rule: Callable[[str], str], report: bool) -> None:
    rows = conn.execute(sa.text(
        "SELECT id, brand, model, origin_brand FROM products ORDER BY id")).all()
    # Two passes: a key may move to a row that held another's, and the unique constraint is
    # checked per statement.
    for row_id, *_ in rows:
        conn.execute(sa.text("UPDATE products SET model_key = :k WHERE id = :i"),
                     {"k": f"{MARK}{row_id}", "i": row_id})
    seen: dict[tuple[str, str], int] = {}
    for row_id, brand, model, origin_brand in rows:
        bk, mk = rule(brand), rule(model)
        if (bk, mk) in seen:
            if report:
                log.warning("product %r %r (id %s) has the same name as product id %s: lookups now "
                            "reach id %s; run `cityward doctor`", brand, model, row_id, seen[bk, mk],
                            seen[bk, mk])
            mk = f"{mk}{MARK}{row_id}"
        else:
            seen[bk, mk] = row_id
        conn.execute(sa.text("UPDATE products SET brand_key = :b, model_key = :m, origin_brand_key = :o "
                             "WHERE id = :i"), {"b": bk, "m": mk, "o": rule(origin_brand), "i": row_id})


def upgrade() -> None:
    conn = op.get_bind()
    for table, what in (("zones", "zone"), ("organizations", "organization")):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('name_key', sa.Text(), nullable=True))
        _fill(conn, table, what)
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column('name_key', existing_type=sa.Text(), nullable=False)
            batch_op.create_unique_constraint(batch_op.f(f'uq_{table}_name_key'), ['name_key'])
    _rekey_products(conn, _key, report=True)


def downgrade() -> None:
    _rekey_products(op.get_bind(), _old_key, report=False)
    for table in ("organizations", "zones"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(batch_op.f(f'uq_{table}_name_key'), type_='unique')
            batch_op.drop_column('name_key')
