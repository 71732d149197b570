"""leases on claimed work: usage_watches, test_clocks and idempotency_keys get claimed_until, so that what a killed
process had claimed (customers to evaluate, a clock being advanced, an idempotency key in progress) can be claimed
again once its time has passed

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-28 06:00:00
"""

import sqlalchemy as sa
from alembic import op

import remit.adapters.db.types

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

TABLES = ("usage_watches", "test_clocks", "idempotency_keys")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("claimed_until", remit.adapters.db.types.UTCDateTime(timezone=True), nullable=True)
            )
    # A clock left advancing by a process killed before this migration has no lease: the code takes it for
    # lapsed (NULL while advancing), so the next advance takes it over.


def downgrade() -> None:
    for table in reversed(TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("claimed_until")
