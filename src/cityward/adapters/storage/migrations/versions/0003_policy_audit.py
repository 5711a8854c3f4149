"""policy audits: runs, findings, published versions, acknowledgements, waivers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 21:22:00.772387
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('policy_name', sa.String(length=100), nullable=False),
    sa.Column('policy_sha256', sa.String(length=64), nullable=False),
    sa.Column('scope_org_id', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_by', sa.String(length=200), nullable=False),
    sa.Column('devices', sa.Integer(), nullable=False),
    sa.Column('findings', sa.Integer(), nullable=False),
    sa.Column('new', sa.Integer(), nullable=False),
    sa.Column('resolved', sa.Integer(), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=False),
    sa.Column('policy_version', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_runs'))
    )
    with op.batch_alter_table('audit_runs', schema=None) as batch_op:
        batch_op.create_index('ix_audit_runs_policy_scope', ['policy_name', 'scope_org_id', 'id'], unique=False)

    op.create_table('policy_versions',
    sa.Column('number', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published_by', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('number', name=op.f('pk_policy_versions'))
    )
    op.create_table('policy_waivers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rule_id', sa.String(length=64), nullable=False),
    sa.Column('selector', sa.JSON(), nullable=False),
    sa.Column('reason', sa.String(length=1000), nullable=False),
    sa.Column('requested_by', sa.String(length=200), nullable=False),
    sa.Column('requested_org_id', sa.Integer(), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('decided_by', sa.String(length=200), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_waivers'))
    )
    with op.batch_alter_table('policy_waivers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_policy_waivers_rule_id'), ['rule_id'], unique=False)

    op.create_table('audit_findings',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('rule_id', sa.String(length=64), nullable=False),
    sa.Column('severity', sa.String(length=10), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('responsible_org_id', sa.Integer(), nullable=True),
    sa.Column('first_seen_run', sa.Integer(), nullable=False),
    sa.Column('waiver_id', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_findings'))
    )
    with op.batch_alter_table('audit_findings', schema=None) as batch_op:
        batch_op.create_index('ix_audit_findings_run_device', ['run_id', 'device_id'], unique=False)

    op.create_table('policy_acks',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('acked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('acked_by', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_policy_acks_org_id_organizations')),
    sa.ForeignKeyConstraint(['version'], ['policy_versions.number'], name=op.f('fk_policy_acks_version_policy_versions')),
    sa.PrimaryKeyConstraint('version', 'org_id', name=op.f('pk_policy_acks'))
    )


def downgrade() -> None:
    op.drop_table('policy_acks')
    with op.batch_alter_table('audit_findings', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_findings_run_device')

    op.drop_table('audit_findings')
    with op.batch_alter_table('policy_waivers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_policy_waivers_rule_id'))

    op.drop_table('policy_waivers')
    op.drop_table('policy_versions')
    with op.batch_alter_table('audit_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_runs_policy_scope')

    op.drop_table('audit_runs')
