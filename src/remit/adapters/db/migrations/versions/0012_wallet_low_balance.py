"""wallets announce a low balance: wallets.low_balance_threshold

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27 14:15:00
"""

import sqlalchemy as sa
from alembic import op

import remit.adapters.db.types

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("wallets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("low_balance_threshold", remit.adapters.db.types.ExactDecimal(length=64), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("wallets", schema=None) as batch_op:
        batch_op.drop_column("low_balance_threshold")
