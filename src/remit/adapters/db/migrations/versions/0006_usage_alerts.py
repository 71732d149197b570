"""usage alerts: alerts, their triggers, watched customers, a subscription's usage threshold

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 02:10:00
"""

import sqlalchemy as sa
from alembic import op

import remit.adapters.db.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("usage_threshold_minor", sa.BigInteger(), nullable=True))
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("meter_code", sa.String(length=100), nullable=True),
        sa.Column("group_values", sa.JSON(), nullable=True),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("created_at", remit.adapters.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name=op.f("fk_alerts_customer_id_customers")),
        sa.ForeignKeyConstraint(
            ["subscription_id"], ["subscriptions.id"], name=op.f("fk_alerts_subscription_id_subscriptions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alerts_customer_id"), ["customer_id"], unique=False)
    op.create_table(
        "alert_triggers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("alert_id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("period_start_on", sa.Date(), nullable=False),
        sa.Column("period_end_on", sa.Date(), nullable=False),
        sa.Column("threshold", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.Column("triggered_at", remit.adapters.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], name=op.f("fk_alert_triggers_alert_id_alerts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_triggers")),
        sa.UniqueConstraint(
            "alert_id", "subscription_id", "period_start_on", "threshold", name="uq_alert_triggers_key"
        ),
    )
    op.create_table(
        "usage_watches",
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name=op.f("fk_usage_watches_customer_id_customers")),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_usage_watches")),
    )


def downgrade() -> None:
    op.drop_table("usage_watches")
    op.drop_table("alert_triggers")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alerts_customer_id"))
    op.drop_table("alerts")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("usage_threshold_minor")
