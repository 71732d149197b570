"""customers.external_id: unique within a legal entity and a mode (live, or test), not across all of them

It was unique across every legal entity and both modes: creating a customer with an external id another entity (or
the other mode) used answered 409 ``external_id_taken``, which told a key limited to one entity that the other
entity has that customer, and a test-mode customer could take a live customer's id so the live one could no longer
be created. Now two partial unique indexes hold it per (legal entity, live) and (legal entity, test); a plain index
serves the look-up of usage events that name their customer by external id.

SQLite cannot drop a constraint: the table is rebuilt (env.py turns foreign key checks off while migrating, as
rebuilding a table others point at requires, and checks them all before committing).

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-28 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_constraint("uq_customers_external_id", type_="unique")
        batch_op.create_index("ix_customers_external_id", ["external_id"], unique=False)
    for name, where in (
        ("ux_customers_live_external_id", "test_clock_id IS NULL"),
        ("ux_customers_test_external_id", "test_clock_id IS NOT NULL"),
    ):
        op.create_index(
            name,
            "customers",
            ["legal_entity_id", "external_id"],
            unique=True,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )


def downgrade() -> None:
    # Fails, as it should, when two customers now share an external id.
    op.drop_index("ux_customers_test_external_id", table_name="customers")
    op.drop_index("ux_customers_live_external_id", table_name="customers")
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index("ix_customers_external_id")
        batch_op.create_unique_constraint("uq_customers_external_id", ["external_id"])
