"""test_clocks.legal_entity_id: a test clock belongs to a legal entity (or, NULL, to none)

Clocks had no owner: a test-mode key limited to one legal entity could read and advance a clock holding another
entity's customers, and so bill them. A clock now holds only its entity's customers and is seen only by keys of
that entity (and by keys of every entity); a clock of no entity is seen only by keys of every entity. Existing
clocks whose customers all belong to one entity become that entity's.

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-28 12:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("test_clocks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("legal_entity_id", sa.String(length=40), nullable=True))
        batch_op.create_foreign_key(
            "fk_test_clocks_legal_entity_id_legal_entities", "legal_entities", ["legal_entity_id"], ["id"]
        )
    op.execute(
        "UPDATE test_clocks SET legal_entity_id = ("
        " SELECT MIN(customers.legal_entity_id) FROM customers WHERE customers.test_clock_id = test_clocks.id"
        " HAVING COUNT(DISTINCT customers.legal_entity_id) = 1)"
    )


def downgrade() -> None:
    with op.batch_alter_table("test_clocks", schema=None) as batch_op:
        batch_op.drop_constraint("fk_test_clocks_legal_entity_id_legal_entities", type_="foreignkey")
        batch_op.drop_column("legal_entity_id")
