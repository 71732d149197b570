"""Deleting idempotency keys past their retention (24 hours): the worker's upkeep calls ``purge_expired``.

A key older than the retention is already ignored (``idempotency.claim`` forgets it when the same key comes
again); without this its row, with the stored response body, stayed for ever. Kept apart from the claim and
complete functions so that it changes nothing on the request path.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, delete, select, tuple_

from remit.adapters.db import tables as t
from remit.service_layer.idempotency import RETENTION

PURGE_BATCH = 2_000  # rows per transaction: short transactions, well within SQLite's bound parameters
PURGE_BATCHES_MAX = 50  # per call: at most 100,000 rows; what is left waits for the next call


def purge_expired(engine: Engine, now: datetime, batch: int = PURGE_BATCH, batches_max: int = PURGE_BATCHES_MAX) -> int:
    """Delete up to ``batch`` × ``batches_max`` keys created more than the retention before ``now``, oldest first,
    one short transaction per batch; how many were deleted."""
    keys = t.idempotency_keys.c
    expired = keys.created_at < now - RETENTION
    deleted = 0
    for _ in range(batches_max):
        with engine.begin() as conn:
            found = conn.execute(
                select(keys.api_key_id, keys.key).where(expired).order_by(keys.created_at).limit(batch)
            ).all()
            if not found:
                break
            # Expired again in the DELETE: a key claimed afresh meanwhile (the same key, used again) is not touched.
            conn.execute(
                delete(t.idempotency_keys).where(
                    tuple_(keys.api_key_id, keys.key).in_([tuple(r) for r in found]), expired
                )
            )
            deleted += len(found)
        if len(found) < batch:
            break
    return deleted
