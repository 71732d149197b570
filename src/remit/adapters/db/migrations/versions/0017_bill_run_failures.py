"""a bill run bills everyone it can: bill_run_failures, bill_runs.customers_failed and bill_runs.error

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-27 17:40:00
"""

import sqlalchemy as sa
from alembic import op

import remit.adapters.db.types

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_TIME = remit.adapters.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("bill_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("customers_failed", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
    op.create_table(
        "bill_run_failures",
        sa.Column("bill_run_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("field", sa.String(length=200), nullable=True),
        sa.Column("failed_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["bill_run_id"], ["bill_runs.id"], name=op.f("fk_bill_run_failures_bill_run_id_bill_runs")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_bill_run_failures_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("bill_run_id", "customer_id", name=op.f("pk_bill_run_failures")),
    )
    with op.batch_alter_table("bill_run_failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bill_run_failures_customer_id"), ["customer_id"], unique=False)


def downgrade() -> None:
    op.drop_table("bill_run_failures")
    with op.batch_alter_table("bill_runs", schema=None) as batch_op:
        batch_op.drop_column("error")
        batch_op.drop_column("customers_failed")
