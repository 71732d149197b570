"""usage events can be canceled: usage_event_cancellations

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27 15:00:00
"""

import sqlalchemy as sa
from alembic import op

import remit.adapters.db.types

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_TIME = remit.adapters.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "usage_event_cancellations",
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("transaction_id", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("meter_code", sa.String(length=100), nullable=False),
        sa.Column("occurred_at", _TIME, nullable=False),
        sa.Column("canceled_at", _TIME, nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_usage_event_cancellations_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("customer_id", "transaction_id", name=op.f("pk_usage_event_cancellations")),
    )


def downgrade() -> None:
    op.drop_table("usage_event_cancellations")
