"""wallet_grants.expires_days: how long bought credits last, counted from when they are granted (paid)

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-28 00:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("wallet_grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_days", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("wallet_grants", schema=None) as batch_op:
        batch_op.drop_column("expires_days")
