"""initial schema: ledger and registry

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('attempts',
    sa.Column('invocation_id', sa.String(length=64), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('node', sa.String(length=128), nullable=True),
    sa.Column('worker', sa.String(length=64), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('duration_ms', sa.Float(), nullable=True),
    sa.Column('init_ms', sa.Float(), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('error_type', sa.String(length=256), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('invocation_id', 'attempt')
    )
    op.create_table('functions',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('latest_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('invocations',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('function', sa.String(length=64), nullable=False),
    sa.Column('version', sa.String(length=16), nullable=True),
    sa.Column('qualifier', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('trigger', sa.String(length=32), nullable=True),
    sa.Column('invocation_type', sa.String(length=8), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('duration_ms', sa.Float(), nullable=True),
    sa.Column('billed_ms', sa.Integer(), nullable=True),
    sa.Column('memory_mb', sa.Integer(), nullable=True),
    sa.Column('max_memory_mb', sa.Integer(), nullable=True),
    sa.Column('init_ms', sa.Float(), nullable=True),
    sa.Column('cold', sa.Boolean(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=True),
    sa.Column('node', sa.String(length=128), nullable=True),
    sa.Column('error_type', sa.String(length=256), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('payload_size', sa.Integer(), nullable=True),
    sa.Column('result_size', sa.Integer(), nullable=True),
    sa.Column('payload', sa.LargeBinary(), nullable=True),
    sa.Column('result', sa.LargeBinary(), nullable=True),
    sa.Column('rank', sa.Integer(), nullable=False, server_default='0'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('invocations', schema=None) as batch_op:
        batch_op.create_index('ix_invocations_function_received', ['function', 'received_at'], unique=False)
        batch_op.create_index('ix_invocations_received', ['received_at'], unique=False)
        batch_op.create_index('ix_invocations_status_received', ['status', 'received_at'], unique=False)

    op.create_table('aliases',
    sa.Column('function', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('weights', sa.JSON(), nullable=False),
    sa.Column('history', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['function'], ['functions.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('function', 'name')
    )
    op.create_table('versions',
    sa.Column('function', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('deployed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deployed_by', sa.String(length=128), nullable=True),
    sa.ForeignKeyConstraint(['function'], ['functions.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('function', 'version')
    )
    with op.batch_alter_table('versions', schema=None) as batch_op:
        batch_op.create_index('ix_versions_hash', ['function', 'code_hash'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('versions', schema=None) as batch_op:
        batch_op.drop_index('ix_versions_hash')

    op.drop_table('versions')
    op.drop_table('aliases')
    with op.batch_alter_table('invocations', schema=None) as batch_op:
        batch_op.drop_index('ix_invocations_status_received')
        batch_op.drop_index('ix_invocations_received')
        batch_op.drop_index('ix_invocations_function_received')

    op.drop_table('invocations')
    op.drop_table('functions')
    op.drop_table('attempts')

