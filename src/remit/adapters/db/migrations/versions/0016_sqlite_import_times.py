"""SQLite: usage events imported at a whole second get the time text every other write gives them

Before this revision, `remit events import` on SQLite stored a time with no fraction of a second as
``2025-12-31 00:00:00`` where SQLAlchemy writes ``2025-12-31 00:00:00.000000``. SQLite compares times as text, so
such an event at exactly a window's start fell before it (into the previous day or period), and canceling it
matched nothing (the cancellation was recorded, the event went on counting). The texts are made alike, and every
event with a cancellation stops counting, as its cancellation said. Nothing to do on PostgreSQL, which stores
times as times.

Both repairs change what a billed period would count (an event now counts in its own day rather than the one
before; a canceled event stops counting), so the review mark of the customers concerned moves back to the day
before their earliest such event, as for a late event: the next bill run re-rates those periods and bills or
credits the difference, once.

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
    op.execute(
        "CREATE TEMP TABLE remit_0016_days AS SELECT customer_id, min(date(substr(occurred_at, 1, 10), '-1 day')) "
        "AS day FROM usage_events WHERE length(occurred_at) = 19 OR (matched AND EXISTS (SELECT 1 FROM "
        "usage_event_cancellations c WHERE c.customer_id = usage_events.customer_id AND c.transaction_id = "
        "usage_events.transaction_id)) GROUP BY customer_id"
    )
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
    op.execute(
        "UPDATE subscriptions SET reviewed_from_on = (SELECT d.day FROM remit_0016_days d WHERE d.customer_id = "
        "subscriptions.customer_id) WHERE reviewed_from_on IS NOT NULL AND EXISTS (SELECT 1 FROM remit_0016_days d "
        "WHERE d.customer_id = subscriptions.customer_id AND d.day < subscriptions.reviewed_from_on)"
    )
    op.execute("DROP TABLE remit_0016_days")


def downgrade() -> None:
    pass  # the longer form is the right one either way
