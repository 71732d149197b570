"""outbox events: a transaction has its transaction id before it draws an event id (PostgreSQL)

The webhook fan-out passes the gaps below the highest visible event id once every transaction running in a
snapshot has ended (service_layer/webhook_outbox.py). A transaction whose first write is an event drew its id from
the sequence a moment before PostgreSQL gave it a transaction id, and in that moment a snapshot did not list it:
its event could be passed over. The id's default now takes the transaction id first (``pg_current_xact_id()``
assigns one if there is none), then the next value of the same sequence.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 06:30:00
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite: one writer at a time, ids become visible in order
    op.execute(
        """
        CREATE FUNCTION remit_next_event_id() RETURNS bigint LANGUAGE sql VOLATILE AS $$
            SELECT CASE WHEN pg_current_xact_id() IS NOT NULL THEN nextval('events_id_seq') END
        $$
        """
    )
    op.execute("ALTER TABLE events ALTER COLUMN id SET DEFAULT remit_next_event_id()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE events ALTER COLUMN id SET DEFAULT nextval('events_id_seq'::regclass)")
    op.execute("DROP FUNCTION remit_next_event_id()")
