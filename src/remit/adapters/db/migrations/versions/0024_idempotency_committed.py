"""idempotency_keys.committed_at: when the request holding the key committed its work

A request that committed its work and then stopped before its answer was stored (its process killed, or a
failure after the commit) left its key in progress; once the lease passed, a retry took the key over and did the
work again. The work's own transaction now marks the key, so a key whose work committed is never taken over or
released: a retry is told the request was carried out (or gets the answer that was stored).

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-28 18:10:00
"""

import sqlalchemy as sa
from alembic import op

from remit.adapters.db.types import UTCDateTime

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("committed_at", UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_column("committed_at")
