"""products.platform: the firmware platform a product runs

Advisories often name a platform ("ALEOS", "AXIS OS", "Niagara 4") rather than the device models
that run it; a product that declares its platform is matched by them.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 03:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('products') as batch:
        batch.add_column(sa.Column('platform', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('products') as batch:
        batch.drop_column('platform')
