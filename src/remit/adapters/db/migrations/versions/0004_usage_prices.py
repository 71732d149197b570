"""usage prices: a price's usage terms, a meter's value formula

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 01:55:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("usage", sa.JSON(), nullable=True))
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expression", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.drop_column("expression")
    with op.batch_alter_table("prices", schema=None) as batch_op:
        batch_op.drop_column("usage")
