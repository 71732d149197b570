"""a latest meter can carry its last value over to periods without events: meters.carry_over

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-27 18:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("carry_over", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.drop_column("carry_over")
