"""Idempotency keys: the first request with a key does the work; later ones with the same key get its answer.

The key is claimed in its own committed transaction before the work starts, so two identical requests racing
each other cannot both do it: the second finds the claim and is told to retry later (409) or, once the first has
finished, receives the same response. A different request under the same key is refused (409).

The claim is a lease (``LEASE``): a request whose process was killed before it answered leaves its key in progress;
once the lease has passed, the same request sent again takes the key over (in one conditional statement, so of
two such retries one does the work) and runs.

A request whose work committed is never run again under its key, even if its answer was never stored (its
process killed between the commit and storing the answer, or a failure after the commit): every unit of work
that commits while the request holds the key (``holding``) marks the key in its own transaction
(``mark_committed``). Such a key is not released on a failure (the failure is stored as the answer) and not taken
over once its lease has passed: a retry is told that the request was carried out and its answer lost
(``Stored.answer_lost``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from remit.adapters.db import tables as t

RETENTION = timedelta(hours=24)
# How long a request holds its key before a retry may take it over: longer than any request runs. The requests
# whose repeat would do something again (create a customer, an invoice item, a payment, a credit note, a grant)
# are one short transaction each: milliseconds, at most SQLite's 30 s wait for the database's write lock. The only
# ones that can run for minutes (a bill run, a test clock's advance, a large batch of events) do nothing twice
# when repeated (nothing is billed twice; the clock is busy or only catches up; events are deduplicated by their
# transaction ids), so even one outliving its lease cannot apply twice.
LEASE = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Claimed:
    """The key is this request's, until ``until`` (also what tells this claim from a later take-over)."""

    until: datetime


@dataclass(frozen=True, slots=True)
class Stored:
    fingerprint: str
    status_code: int | None
    body: str | None
    # No answer, the work committed and the lease passed: the request's process stopped after its commit.
    answer_lost: bool = False


# The key the request running in this context holds: (API key id, key, the claim's lease).
_HOLDING: ContextVar[tuple[str, str, datetime] | None] = ContextVar("remit_idempotency_holding", default=None)


@contextmanager
def holding(api_key_id: str, key: str, claimed: Claimed) -> Iterator[None]:
    """While the request that claimed the key runs: what it commits marks the key (``mark_committed``). The
    context travels with the request into the worker threads that run its work."""
    token = _HOLDING.set((api_key_id, key, claimed.until))
    try:
        yield
    finally:
        _HOLDING.reset(token)


def watch(conn: Connection) -> int | None:
    """At the start of a unit of work: None if no request holding a key runs it; otherwise what tells, at its
    end, whether it wrote anything (``mark_committed``)."""
    if _HOLDING.get() is None:
        return None
    if conn.dialect.name == "sqlite":
        return int(conn.connection.dbapi_connection.total_changes)  # type: ignore[union-attr]
    return 0


def mark_committed(conn: Connection, now: datetime, watched: int | None) -> None:
    """Inside a transaction about to commit (``watched``: what ``watch`` said when it began): if it is the work
    of a request holding an idempotency key and it wrote something, mark the key committed, with the work. A
    unit of work that only read (or found the test clock busy) leaves the key as it was."""
    held = _HOLDING.get()
    if held is None or watched is None:
        return
    if conn.dialect.name == "sqlite":
        wrote = conn.connection.dbapi_connection.total_changes != watched  # type: ignore[union-attr]
    else:  # a transaction has an id once it wrote (or locked) a row
        wrote = conn.exec_driver_sql("SELECT txid_current_if_assigned()").scalar() is not None
    if not wrote:
        return
    api_key_id, key, until = held
    k = t.idempotency_keys.c
    conn.execute(
        update(t.idempotency_keys)
        .where(k.api_key_id == api_key_id, k.key == key, k.claimed_until == until, k.committed_at.is_(None))
        .values(committed_at=now)
    )


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    h = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode(), body):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def claim(engine: Engine, api_key_id: str, key: str, print_: str, now: datetime) -> Claimed | Stored:
    """Claim a key for this request: ``Claimed``, go ahead; otherwise what is stored under the key."""
    k = t.idempotency_keys.c
    this = and_(k.api_key_id == api_key_id, k.key == key)
    with engine.begin() as conn:
        # Keys older than the retention window are forgotten, so the same key may be used again after it.
        conn.execute(delete(t.idempotency_keys).where(this, k.created_at < now - RETENTION))
    until = now + LEASE
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
                    claimed_until=until,
                )
            )
        return Claimed(until)
    except IntegrityError:
        pass
    # In progress under a lease that has passed (its request's process was killed): the same request takes it
    # over. One statement: of two retries at once, the second finds the lease the first wrote and does nothing.
    # (A key claimed before leases were kept has none: its lease is counted from when it was claimed.) A request
    # whose work committed is not run again.
    lapsed = or_(k.claimed_until < now, and_(k.claimed_until.is_(None), k.created_at < now - LEASE))
    with engine.begin() as conn:
        taken = conn.execute(
            update(t.idempotency_keys)
            .where(this, k.fingerprint == print_, k.status_code.is_(None), k.committed_at.is_(None), lapsed)
            .values(claimed_until=until)
        ).rowcount
    if taken:
        return Claimed(until)
    with engine.connect() as conn:
        row = conn.execute(select(t.idempotency_keys).where(this)).mappings().first()
    if row is None:  # released between our insert and our read: try once more
        return claim(engine, api_key_id, key, print_, now)
    held_until = row["claimed_until"] or row["created_at"] + LEASE
    lost = row["status_code"] is None and row["committed_at"] is not None and held_until < now
    return Stored(row["fingerprint"], row["status_code"], row["response_body"], answer_lost=lost)


def complete(engine: Engine, api_key_id: str, key: str, claimed: Claimed, status_code: int, body: str) -> None:
    """Store the response of the request that holds the key (one whose key was taken over stores nothing: the
    request that took it does)."""
    k = t.idempotency_keys.c
    with engine.begin() as conn:
        conn.execute(
            update(t.idempotency_keys)
            .where(k.api_key_id == api_key_id, k.key == key, k.claimed_until == claimed.until)
            .values(status_code=status_code, response_body=body, claimed_until=None)
        )


def release(engine: Engine, api_key_id: str, key: str, claimed: Claimed, status_code: int, body: str) -> bool:
    """Forget a claim whose request failed on our side (5xx) or was told to try again later, so the client may
    retry with the same key (a claim taken over is the other request's: left alone) -- unless the request's work
    committed before it failed: then its answer is stored like any other, and the work is not done again.
    True if the claim was forgotten."""
    k = t.idempotency_keys.c
    ours = and_(k.api_key_id == api_key_id, k.key == key, k.claimed_until == claimed.until)
    with engine.begin() as conn:
        if conn.execute(delete(t.idempotency_keys).where(ours, k.committed_at.is_(None))).rowcount:
            return True
        conn.execute(
            update(t.idempotency_keys)
            .where(ours)
            .values(status_code=status_code, response_body=body, claimed_until=None)
        )
    return False
