"""Fan-out: new rows of the ``events`` outbox become one webhook delivery per matching endpoint.

The ``outbox_cursors`` row named "webhooks" holds the last event id handled. One transaction locks it, reads the
events after it, inserts the deliveries and moves it: a crash anywhere leaves either all of that or none of it, and
the unique key (endpoint_id, event_id) makes a replay a no-op. On PostgreSQL the cursor is locked ``FOR UPDATE SKIP
LOCKED``, so while one worker fans out the others go on delivering instead of queueing behind it.

**Event ids and late commits.** Ids come from a sequence when the row is inserted, but transactions commit in
their own order: while id 7 is already visible, id 6 may belong to a transaction still running (or to one that
rolled back: that id is never used). Moving the cursor past 7 would lose 6 for ever. So on PostgreSQL:

1. events pass only as a gap-free run after the cursor, while
2. at a gap, we read the highest visible id M, then list the transactions of this database that hold a
   transaction id, and wait (at most ``settle_s``) until they have all ended. A transaction can only hold an id
   at most M if it had drawn it before M was read, so it was in that list; once they have all ended, every id up
   to M is final (committed and visible, or rolled back and never coming), and the gaps below M can be passed.
   If they have not ended in time, only the gap-free run passes, and the next round tries again.

No wall-clock "settle window" is involved, so a slow transaction is never skipped, and ``created_at`` (which is
the test clock's time for test-mode customers) plays no part. A transaction must be listed from the moment it
holds an id: PostgreSQL gives a transaction its transaction id only at its first write, and a plain sequence
default draws the event id before that write, so a transaction whose first write was an event could hold an id
unlisted for a moment (a loss seen once in a concurrency test). The id's default therefore takes the transaction id
first (migration 0008: ``remit_next_event_id()``).

On SQLite every write transaction holds the database's single write lock from BEGIN to COMMIT, so ids become
visible in order and there are no late commits to wait for.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id
from remit.domain import event_types
from remit.domain.clock import Clock

CURSOR = "webhooks"
GAP_POLL_S = 0.02


def _insert_ignoring_duplicates(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(table).on_conflict_do_nothing(), rows)


def ensure_cursor(conn: Connection) -> None:
    """Create the cursor if missing, at the newest event: webhooks do not replay history older than themselves."""
    c = t.outbox_cursors.c
    if conn.execute(select(c.name).where(c.name == CURSOR)).first() is not None:
        return
    newest = conn.execute(select(func.max(t.events.c.id))).scalar() or 0
    _insert_ignoring_duplicates(conn, t.outbox_cursors, [{"name": CURSOR, "last_event_id": int(newest)}])


def _lock_cursor(conn: Connection) -> int | None:
    """The cursor's position, locked for this transaction; None when another worker holds it."""
    c = t.outbox_cursors.c
    query = select(c.last_event_id).where(c.name == CURSOR).with_for_update(skip_locked=True)
    row = conn.execute(query).first()
    if row is None:
        ensure_cursor(conn)
        row = conn.execute(query).first()
    return None if row is None else int(row[0])


def _events_after(conn: Connection, after: int, batch: int) -> list[Mapping[Any, Any]]:
    ev, cu = t.events, t.customers
    query = (
        select(ev.c.id, ev.c.type, ev.c.object_id, ev.c.customer_id, cu.c.legal_entity_id, cu.c.test_clock_id)
        .outerjoin(cu, cu.c.id == ev.c.customer_id)
        .where(ev.c.id > after)
        .order_by(ev.c.id)
        .limit(batch)
    )
    return list(conn.execute(query).mappings())


def final_prefix(ids: Sequence[int], after: int, horizon: int | None) -> int:
    """How many of ``ids`` (ascending, all > after) may pass: every id below each one is final.

    ``horizon``: every id up to it is known final (gaps there are rolled back); None: nothing known past ``after``.
    """
    known = after if horizon is None else max(after, horizon)
    count = 0
    for event_id in ids:
        if event_id > known + 1:
            break
        known = max(known, event_id)
        count += 1
    return count


def _settled_horizon(conn: Connection, settle_s: float) -> int | None:
    """PostgreSQL: the highest id M such that every id up to M is final, or None if that takes over settle_s.

    M is the highest visible id; then the transactions of this database holding a transaction id are listed (from
    the lock each holds on its own id, ``pg_locks``, which every role may read). Any transaction still holding an
    id up to M drew it (and, by migration 0008, took its transaction id first) before M was read, so it is among
    them; one that starts later draws a higher id. Once none of them is running, every id up to M is final.
    Neither another database's transactions on the same server (a long report, ``pg_dump``) nor a snapshot's
    ``xmax`` (a running transaction with a transaction id above every finished one is not in a snapshot's list
    of running ones) enters into it."""
    top = conn.execute(text("SELECT max(id) FROM events")).scalar()
    held = conn.execute(_HOLDERS).scalars().all()
    deadline = time.monotonic() + settle_s
    while held and conn.execute(_STILL_HELD, {"xids": list(held)}).scalar():
        if time.monotonic() >= deadline:
            return None
        time.sleep(GAP_POLL_S)
    return int(top or 0)


# Transactions of this database (other than ours) that hold a transaction id: each holds the lock on its own id
# until it ends.
_HOLDERS = text(
    "SELECT l.transactionid::text FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted"
    " AND a.datname = current_database() AND l.pid <> pg_backend_pid()"
)
_STILL_HELD = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND mode = 'ExclusiveLock' AND granted"
    " AND transactionid::text = ANY(:xids)"
)


def _passable(conn: Connection, after: int, batch: int, settle_s: float) -> list[Mapping[Any, Any]]:
    events = _events_after(conn, after, batch)
    if conn.dialect.name != "postgresql" or not events:
        return events
    count = final_prefix([e["id"] for e in events], after, None)
    if count == len(events):
        return events
    horizon = _settled_horizon(conn, settle_s)
    if horizon is not None:
        events = _events_after(conn, after, batch)  # now every id up to the horizon is final and visible
    return events[: final_prefix([e["id"] for e in events], after, horizon)]


def _type_matches(patterns: Sequence[str], event_type: str) -> bool:
    return any(event_types.matches(pattern, event_type) for pattern in patterns)


def matches(endpoint: Mapping[Any, Any], event: Mapping[Any, Any]) -> bool:
    """An event goes to an endpoint that wants its type and may see its customer (entity, live or test).

    Events without a customer (catalog, legal entities: shared by both modes) go to endpoints not limited to an
    entity, live or test.
    """
    if not _type_matches(endpoint["event_types"], event["type"]):
        return False
    if event["customer_id"] is None or event["legal_entity_id"] is None:
        return endpoint["legal_entity_id"] is None
    if endpoint["legal_entity_id"] not in (None, event["legal_entity_id"]):
        return False
    return bool(endpoint["livemode"]) == (event["test_clock_id"] is None)


def fan_out(engine: Engine, clock: Clock, batch: int = 500, settle_s: float = 1.0) -> int:
    """Turn the next events into deliveries; the number of events passed (with or without a matching endpoint)."""
    now = clock.now()
    with engine.begin() as conn:
        after = _lock_cursor(conn)
        if after is None:
            return 0
        events = _passable(conn, after, batch, settle_s)
        if not events:
            return 0
        endpoints = list(conn.execute(select(t.webhook_endpoints).where(t.webhook_endpoints.c.active.is_(True))))
        rows = [
            {
                "id": new_id("whd"),
                "endpoint_id": ep.id,
                "event_id": event["id"],
                "object_id": event["object_id"],
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for event in events
            for ep in endpoints
            if matches(ep._mapping, event)
        ]
        _insert_ignoring_duplicates(conn, t.webhook_deliveries, rows)
        c = t.outbox_cursors.c
        conn.execute(update(t.outbox_cursors).where(c.name == CURSOR).values(last_event_id=events[-1]["id"]))
    return len(events)
