"""usage events: the customer-meter-time index covers what aggregation reads (PostgreSQL)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 02:45:00
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INCLUDE = ["matched", "group_key", "value", "dimension", "transaction_id"]


SQLITE_COLUMNS = ["customer_id", "meter_code", "occurred_at", *INCLUDE]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        # SQLite has no INCLUDE: the same columns as keys make the index covering.
        with op.batch_alter_table("usage_events", schema=None) as batch_op:
            batch_op.drop_index("ix_usage_events_customer_meter_time")
            batch_op.create_index("ix_usage_events_customer_meter_time_all", SQLITE_COLUMNS)
        return
    op.drop_index("ix_usage_events_customer_meter_time", table_name="usage_events")
    op.create_index(
        "ix_usage_events_customer_meter_time",
        "usage_events",
        ["customer_id", "meter_code", "occurred_at"],
        postgresql_include=INCLUDE,
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        with op.batch_alter_table("usage_events", schema=None) as batch_op:
            batch_op.drop_index("ix_usage_events_customer_meter_time_all")
            batch_op.create_index("ix_usage_events_customer_meter_time", ["customer_id", "meter_code", "occurred_at"])
        return
    op.drop_index("ix_usage_events_customer_meter_time", table_name="usage_events")
    op.create_index("ix_usage_events_customer_meter_time", "usage_events", ["customer_id", "meter_code", "occurred_at"])
