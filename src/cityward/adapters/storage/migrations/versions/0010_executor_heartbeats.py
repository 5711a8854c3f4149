"""executor heartbeats: when each rollout executor last looked for work

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 08:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'executor_heartbeats',
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_executor_heartbeats')),
    )


def downgrade() -> None:
    op.drop_table('executor_heartbeats')
