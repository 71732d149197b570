"""wallets: prepaid credits (wallets, grants, the wallet ledger) and the credit an invoice took from them

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 02:00:00
"""

import sqlalchemy as sa
from alembic import op

import remit.adapters.db.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TIME = remit.adapters.db.types.UTCDateTime(timezone=True)
_DECIMAL = remit.adapters.db.types.ExactDecimal(length=64)


def upgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("applied_credits_minor", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_table(
        "wallets",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("rate", _DECIMAL, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("top_up_threshold", _DECIMAL, nullable=True),
        sa.Column("top_up_credits", _DECIMAL, nullable=True),
        sa.Column("top_up_expires_days", sa.Integer(), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("voided_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name=op.f("fk_wallets_customer_id_customers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallets")),
    )
    with op.batch_alter_table("wallets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_wallets_customer_id"), ["customer_id"], unique=False)
    op.create_table(
        "wallet_grants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("credits", _DECIMAL, nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("remaining_credits", _DECIMAL, nullable=False),
        sa.Column("remaining_minor", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", _TIME, nullable=True),
        sa.Column("invoice_id", sa.String(length=40), nullable=True),
        sa.Column("cause_key", sa.String(length=80), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("granted_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_wallet_grants_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], name=op.f("fk_wallet_grants_invoice_id_invoices")),
        sa.ForeignKeyConstraint(["wallet_id"], ["wallets.id"], name=op.f("fk_wallet_grants_wallet_id_wallets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_grants")),
        sa.UniqueConstraint("wallet_id", "cause_key", name=op.f("uq_wallet_grants_wallet_id_cause_key")),
    )
    with op.batch_alter_table("wallet_grants", schema=None) as batch_op:
        batch_op.create_index("ix_wallet_grants_customer_status", ["customer_id", "status"], unique=False)
        batch_op.create_index("ix_wallet_grants_status_expires_at", ["status", "expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_wallet_grants_wallet_id"), ["wallet_id"], unique=False)
    op.create_table(
        "wallet_transactions",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("grant_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("cause_key", sa.String(length=80), nullable=False),
        sa.Column("credits", _DECIMAL, nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_wallet_transactions_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["grant_id"], ["wallet_grants.id"], name=op.f("fk_wallet_transactions_grant_id_wallet_grants")
        ),
        sa.ForeignKeyConstraint(["wallet_id"], ["wallets.id"], name=op.f("fk_wallet_transactions_wallet_id_wallets")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_wallet_transactions")),
        sa.UniqueConstraint("id", name=op.f("uq_wallet_transactions_id")),
        sa.UniqueConstraint("grant_id", "cause_key", name=op.f("uq_wallet_transactions_grant_id_cause_key")),
    )
    with op.batch_alter_table("wallet_transactions", schema=None) as batch_op:
        batch_op.create_index("ix_wallet_transactions_invoice_id", ["invoice_id"], unique=False)
        batch_op.create_index("ix_wallet_transactions_wallet_seq", ["wallet_id", "seq"], unique=False)


def downgrade() -> None:
    op.drop_table("wallet_transactions")
    op.drop_table("wallet_grants")
    op.drop_table("wallets")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_column("applied_credits_minor")
