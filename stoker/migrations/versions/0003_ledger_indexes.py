"""ledger indexes for the trigger, node and cold-start filters

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Function, status and time were served by 0001's indexes; these make `--trigger`,
`--node` and `--cold` walk an index newest first too, instead of the whole ledger when
the value is rare (a cron trigger among API calls, a node that left last week). The cold
index is partial: only cold starts enter it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.create_index("ix_invocations_trigger_received", ["trigger", "received_at"], unique=False)
        batch_op.create_index("ix_invocations_node_received", ["node", "received_at"], unique=False)
        batch_op.create_index("ix_invocations_cold_received", ["received_at"], unique=False,
                              sqlite_where=sa.text("cold = 1"), postgresql_where=sa.text("cold"))


def downgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.drop_index("ix_invocations_cold_received")
        batch_op.drop_index("ix_invocations_node_received")
        batch_op.drop_index("ix_invocations_trigger_received")
