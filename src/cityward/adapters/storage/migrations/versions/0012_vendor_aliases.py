"""vendor aliases the city adds; advisory entries re-keyed by domain.vendors.vendor_key

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 16:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'vendor_aliases',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('alias', sa.String(length=200), nullable=False),
        sa.Column('alias_key', sa.String(length=200), nullable=False),
        sa.Column('vendor', sa.String(length=200), nullable=False),
        sa.Column('vendor_key', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_by', sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_vendor_aliases')),
        sa.UniqueConstraint('alias_key', name=op.f('uq_vendor_aliases_alias_key')),
    )
    # Stored entries were keyed by letters and digits alone ("dahuatechnologycoltd"); the matcher
    # now keys vendors by domain.vendors.vendor_key ("dahua"). One UPDATE per distinct vendor name.
    from cityward.domain.vendors import vendor_key

    conn = op.get_bind()
    entries = sa.table('advisory_entries', sa.column('vendor', sa.String), sa.column('vendor_key', sa.String))
    names = [row[0] for row in conn.execute(sa.select(entries.c.vendor).distinct()) if row[0] is not None]
    for name in names:
        conn.execute(entries.update().where(entries.c.vendor == name).values(vendor_key=vendor_key(name)))


def downgrade() -> None:
    op.drop_table('vendor_aliases')
