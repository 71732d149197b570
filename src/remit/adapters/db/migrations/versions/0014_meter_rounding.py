"""meters round a period's quantity: meters.rounding, meters.rounding_precision

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27 15:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rounding", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("rounding_precision", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.drop_column("rounding_precision")
        batch_op.drop_column("rounding")
