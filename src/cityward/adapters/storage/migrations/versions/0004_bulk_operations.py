"""bulk operations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 23:46:35.454067
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('city_ca',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('certificate', sa.Text(), nullable=False),
    sa.Column('private_key', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_city_ca'))
    )
    op.create_table('desired_configs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('selector', sa.JSON(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_desired_configs')),
    sa.UniqueConstraint('name', name=op.f('uq_desired_configs_name'))
    )
    op.create_table('firmware_keys',
    sa.Column('key_id', sa.String(length=100), nullable=False),
    sa.Column('manufacturer', sa.String(length=128), nullable=False),
    sa.Column('manufacturer_key', sa.String(length=128), nullable=False),
    sa.Column('public_key', sa.String(length=64), nullable=False),
    sa.Column('added_by', sa.String(length=200), nullable=False),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key_id', name=op.f('pk_firmware_keys'))
    )
    with op.batch_alter_table('firmware_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_firmware_keys_manufacturer_key'), ['manufacturer_key'], unique=False)

    op.create_table('rollouts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('operation', sa.String(length=32), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('target', sa.JSON(), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('control', sa.String(length=20), nullable=False),
    sa.Column('control_reason', sa.String(length=500), nullable=True),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('needs_approval', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('approved_by', sa.String(length=200), nullable=True),
    sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rollouts'))
    )
    op.create_table('firmware_releases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('brand', sa.String(length=128), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('brand_key', sa.String(length=128), nullable=False),
    sa.Column('model_key', sa.String(length=128), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('signature', sa.String(length=200), nullable=False),
    sa.Column('key_id', sa.String(length=100), nullable=False),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('sbom', sa.JSON(), nullable=True),
    sa.Column('uploaded_by', sa.String(length=200), nullable=False),
    sa.Column('uploaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['firmware_keys.key_id'], name=op.f('fk_firmware_releases_key_id_firmware_keys')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_firmware_releases')),
    sa.UniqueConstraint('brand_key', 'model_key', 'version', name=op.f('uq_firmware_releases_brand_key'))
    )
    op.create_table('rollout_actions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rollout_id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('wave', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('command_id', sa.String(length=128), nullable=True),
    sa.Column('secret', sa.LargeBinary(), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claimed_by', sa.String(length=100), nullable=True),
    sa.Column('detail', sa.String(length=500), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['rollout_id'], ['rollouts.id'], name=op.f('fk_rollout_actions_rollout_id_rollouts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rollout_actions')),
    sa.UniqueConstraint('rollout_id', 'device_id', name=op.f('uq_rollout_actions_rollout_id'))
    )
    with op.batch_alter_table('rollout_actions', schema=None) as batch_op:
        batch_op.create_index('ix_rollout_actions_device_status', ['device_id', 'status'], unique=False)
        batch_op.create_index('ix_rollout_actions_work', ['rollout_id', 'wave', 'status'], unique=False)

    op.create_table('rollout_waves',
    sa.Column('rollout_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('verdict', sa.String(length=10), nullable=True),
    sa.ForeignKeyConstraint(['rollout_id'], ['rollouts.id'], name=op.f('fk_rollout_waves_rollout_id_rollouts')),
    sa.PrimaryKeyConstraint('rollout_id', 'number', name=op.f('pk_rollout_waves'))
    )


def downgrade() -> None:
    op.drop_table('rollout_waves')
    with op.batch_alter_table('rollout_actions', schema=None) as batch_op:
        batch_op.drop_index('ix_rollout_actions_work')
        batch_op.drop_index('ix_rollout_actions_device_status')

    op.drop_table('rollout_actions')
    op.drop_table('firmware_releases')
    op.drop_table('rollouts')
    with op.batch_alter_table('firmware_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_firmware_keys_manufacturer_key'))

    op.drop_table('firmware_keys')
    op.drop_table('desired_configs')
    op.drop_table('city_ca')
