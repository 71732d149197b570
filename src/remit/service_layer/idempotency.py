"""Idempotency keys: the first request with a key does the work; later ones with the same key get its answer.

The key is claimed in its own committed transaction before the work starts, so two identical requests racing
each other cannot both do it: the second finds the claim and is told to retry later (409) or, once the first has
finished, receives the same response. A different request under the same key is refused (409).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from remit.adapters.db import tables as t

RETENTION = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Stored:
    fingerprint: str
    status_code: int | None
    body: str | None


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    h = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode(), body):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def claim(engine: Engine, api_key_id: str, key: str, print_: str, now: datetime) -> Stored | None:
    """Claim a key for this request. None: claimed, go ahead. Otherwise what is stored under the key."""
    with engine.begin() as conn:
        # Keys older than the retention window are forgotten, so the same key may be used again after it.
        conn.execute(
            delete(t.idempotency_keys).where(
                t.idempotency_keys.c.api_key_id == api_key_id,
                t.idempotency_keys.c.key == key,
                t.idempotency_keys.c.created_at < now - RETENTION,
            )
        )
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(t.idempotency_keys).values(
                    api_key_id=api_key_id,
                    key=key,
                    fingerprint=print_,
                    status_code=None,
                    response_body=None,
                    created_at=now,
                )
            )
        return None
    except IntegrityError:
        with engine.connect() as conn:
            row = (
                conn.execute(
                    select(t.idempotency_keys).where(
                        t.idempotency_keys.c.api_key_id == api_key_id, t.idempotency_keys.c.key == key
                    )
                )
                .mappings()
                .first()
            )
        if row is None:  # released between our insert and our read: try once more
            return claim(engine, api_key_id, key, print_, now)
        return Stored(row["fingerprint"], row["status_code"], row["response_body"])


def complete(engine: Engine, api_key_id: str, key: str, status_code: int, body: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(t.idempotency_keys)
            .where(t.idempotency_keys.c.api_key_id == api_key_id, t.idempotency_keys.c.key == key)
            .values(status_code=status_code, response_body=body)
        )


def release(engine: Engine, api_key_id: str, key: str) -> None:
    """Forget a claim whose request failed on our side (5xx), so the client may retry with the same key."""
    with engine.begin() as conn:
        conn.execute(
            delete(t.idempotency_keys).where(
                t.idempotency_keys.c.api_key_id == api_key_id, t.idempotency_keys.c.key == key
            )
        )
