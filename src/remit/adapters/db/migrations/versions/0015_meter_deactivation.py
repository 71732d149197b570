"""meters can be deactivated: meters.deactivated_at

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-27 15:10:00
"""

import sqlalchemy as sa
from alembic import op

import remit.adapters.db.types

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("deactivated_at", remit.adapters.db.types.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.drop_column("deactivated_at")
