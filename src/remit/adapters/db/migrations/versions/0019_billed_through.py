"""subscriptions.billed_through_on: the day the bill run last billed a subscription through, moved only forward

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-27 18:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("billed_through_on", sa.Date(), nullable=True))
    # The best there is for what was billed before: the review mark (a late event may have moved it back, which
    # the next run moves forward again).
    op.execute("UPDATE subscriptions SET billed_through_on = reviewed_from_on")


def downgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("billed_through_on")
