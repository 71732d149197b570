"""SQLite: usage events imported at a whole second get the time text every other write gives them

Before this revision, `remit events import` on SQLite stored a time with no fraction of a second as
``2025-12-31 00:00:00`` where SQLAlchemy writes ``2025-12-31 00:00:00.000000``. SQLite compares times as text, so
such an event at exactly a window's start fell before it (into the previous day or period), and canceling it
matched nothing (the cancellation was recorded, the event went on counting). The texts are made alike, and every
event with a cancellation stops counting, as its cancellation said. Nothing to do on PostgreSQL, which stores
times as times.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-27 15:40:00
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_FIX = "UPDATE {table} SET {column} = {column} || '.000000' WHERE length({column}) = 19"


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, column in (
        ("usage_events", "occurred_at"),
        ("usage_events", "received_at"),
        ("usage_event_keys", "received_at"),
    ):
        op.execute(_FIX.format(table=table, column=column))
    op.execute(
        "UPDATE usage_events SET matched = 0 WHERE matched AND EXISTS (SELECT 1 FROM usage_event_cancellations c "
        "WHERE c.customer_id = usage_events.customer_id AND c.transaction_id = usage_events.transaction_id)"
    )


def downgrade() -> None:
    pass  # the longer form is the right one either way
