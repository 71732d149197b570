"""wallet recurring grants: the same credits given (or sold) every interval

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 13:20:00
"""

import sqlalchemy as sa
from alembic import op

import remit.adapters.db.types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TIME = remit.adapters.db.types.UTCDateTime(timezone=True)
_DECIMAL = remit.adapters.db.types.ExactDecimal(length=64)


def upgrade() -> None:
    op.create_table(
        "wallet_recurring_grants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("credits", _DECIMAL, nullable=False),
        sa.Column("paid", sa.Boolean(), nullable=False),
        sa.Column("grant_before_payment", sa.Boolean(), nullable=False),
        sa.Column("interval_unit", sa.String(length=16), nullable=False),
        sa.Column("interval_count", sa.Integer(), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=True),
        sa.Column("expires_days", sa.Integer(), nullable=True),
        sa.Column("next_index", sa.Integer(), nullable=False),
        sa.Column("next_on", sa.Date(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("canceled_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_wallet_recurring_grants_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_wallet_recurring_grants_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_recurring_grants")),
    )
    with op.batch_alter_table("wallet_recurring_grants", schema=None) as batch_op:
        batch_op.create_index("ix_wallet_recurring_grants_status_next_on", ["status", "next_on"], unique=False)
        batch_op.create_index(batch_op.f("ix_wallet_recurring_grants_wallet_id"), ["wallet_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("wallet_recurring_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wallet_recurring_grants_wallet_id"))
        batch_op.drop_index("ix_wallet_recurring_grants_status_next_on")
    op.drop_table("wallet_recurring_grants")
