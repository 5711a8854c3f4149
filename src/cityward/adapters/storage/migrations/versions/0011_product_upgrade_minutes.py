"""products.upgrade_minutes: how long a firmware upgrade takes on a product

Rollouts wait this long for each device's upgrade (the attempt timeout when the rollout sets none)
and keep following a device that took its command for as long, instead of failing it and sending
the same upgrade again under a new command id.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 15:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('products') as batch:
        batch.add_column(sa.Column('upgrade_minutes', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('products') as batch:
        batch.drop_column('upgrade_minutes')
