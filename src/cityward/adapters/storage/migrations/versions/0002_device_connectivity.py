"""device connectivity: live state, history, discovery, secrets, commands

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 20:01:06.081927
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('broker_routes',
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('gateway_id', sa.String(length=64), nullable=True),
    sa.Column('provisioned_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_broker_routes'))
    )
    with op.batch_alter_table('broker_routes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_broker_routes_gateway_id'), ['gateway_id'], unique=False)

    op.create_table('device_commands',
    sa.Column('command_id', sa.String(length=36), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('progress', sa.Integer(), nullable=True),
    sa.Column('detail', sa.String(length=500), nullable=True),
    sa.Column('issued_by', sa.String(length=200), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('command_id', name=op.f('pk_device_commands'))
    )
    with op.batch_alter_table('device_commands', schema=None) as batch_op:
        batch_op.create_index('ix_device_commands_device_issued', ['device_id', 'issued_at'], unique=False)

    op.create_table('device_history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('fact', sa.String(length=32), nullable=False),
    sa.Column('old', sa.JSON(), nullable=False),
    sa.Column('new', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_history'))
    )
    with op.batch_alter_table('device_history', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_history_at'), ['at'], unique=False)
        batch_op.create_index('ix_device_history_device_at', ['device_id', 'at'], unique=False)

    op.create_table('device_secrets',
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('device_id', 'purpose', name=op.f('pk_device_secrets'))
    )
    op.create_table('device_states',
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('online', sa.Boolean(), nullable=False),
    sa.Column('offline_reason', sa.String(length=32), nullable=True),
    sa.Column('status_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('transport', sa.String(length=8), nullable=False),
    sa.Column('via_gateway', sa.String(length=64), nullable=True),
    sa.Column('boot_id', sa.String(length=64), nullable=True),
    sa.Column('seq', sa.BigInteger(), nullable=True),
    sa.Column('reported_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('firmware_version', sa.String(length=64), nullable=True),
    sa.Column('hardware_version', sa.String(length=64), nullable=True),
    sa.Column('uptime_s', sa.BigInteger(), nullable=True),
    sa.Column('services', sa.JSON(), nullable=True),
    sa.Column('remote_access', sa.JSON(), nullable=True),
    sa.Column('credential_state', sa.String(length=10), nullable=False),
    sa.Column('password_changed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('certificates', sa.JSON(), nullable=True),
    sa.Column('cert_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('config_hash', sa.String(length=64), nullable=True),
    sa.Column('quarantined', sa.Boolean(), nullable=False),
    sa.Column('applied_commands', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_device_states'))
    )
    with op.batch_alter_table('device_states', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_states_last_seen'), ['last_seen'], unique=False)

    op.create_table('discovered_devices',
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('address', sa.String(length=260), nullable=True),
    sa.Column('hello', sa.JSON(), nullable=False),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('announcements', sa.Integer(), nullable=False),
    sa.Column('decided_by', sa.String(length=200), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_discovered_devices'))
    )
    with op.batch_alter_table('discovered_devices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_discovered_devices_status'), ['status'], unique=False)

    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index('ix_devices_last_seen', postgresql_where=sa.text('last_seen IS NOT NULL'),
                            sqlite_where=sa.text('last_seen IS NOT NULL'))
        batch_op.drop_column('reported_config')
        batch_op.drop_column('password_changed_at')
        batch_op.drop_column('config_hash')
        batch_op.drop_column('certificates')
        batch_op.drop_column('last_seen')
        batch_op.drop_column('remote_access')
        batch_op.drop_column('services')
        batch_op.drop_column('credential_state')



def downgrade() -> None:
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('credential_state', sa.String(length=10), nullable=False, server_default='unknown'))
        batch_op.add_column(sa.Column('services', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('remote_access', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('last_seen', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('certificates', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('config_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('password_changed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('reported_config', sa.JSON(), nullable=True))
        batch_op.create_index('ix_devices_last_seen', ['last_seen'], unique=False,
                              postgresql_where=sa.text('last_seen IS NOT NULL'),
                              sqlite_where=sa.text('last_seen IS NOT NULL'))

    with op.batch_alter_table('discovered_devices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_discovered_devices_status'))

    op.drop_table('discovered_devices')
    with op.batch_alter_table('device_states', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_states_last_seen'))

    op.drop_table('device_states')
    op.drop_table('device_secrets')
    with op.batch_alter_table('device_history', schema=None) as batch_op:
        batch_op.drop_index('ix_device_history_device_at')
        batch_op.drop_index(batch_op.f('ix_device_history_at'))

    op.drop_table('device_history')
    with op.batch_alter_table('device_commands', schema=None) as batch_op:
        batch_op.drop_index('ix_device_commands_device_issued')

    op.drop_table('device_commands')
    with op.batch_alter_table('broker_routes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_broker_routes_gateway_id'))

    op.drop_table('broker_routes')
