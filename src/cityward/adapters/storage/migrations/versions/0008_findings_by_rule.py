"""findings by rule: an index for the devices failing one rule of a run

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 09:45:00
"""

from __future__ import annotations

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_audit_findings_run_rule_device', 'audit_findings', ['run_id', 'rule_id', 'device_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_audit_findings_run_rule_device', table_name='audit_findings')
