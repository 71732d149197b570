"""Which customers' usage must be looked at again: those with alerts or a usage threshold that received usage.

A watched customer has a row in ``usage_watches``. Ingestion marks the customers of each batch ``dirty`` (one
indexed UPDATE per batch; customers nobody watches have no row, so for them it costs an index probe). The
evaluation (``usage_monitor``) claims dirty rows, clears them, and then measures: usage that commits after the
claim marks the row again, so it is looked at in the next round, never lost.

On PostgreSQL the mark is unconditional (``dirty = true`` even when it is already): it takes the row's lock until
the ingesting transaction commits, and the claim skips locked rows, so an evaluation can never clear a mark and
then read aggregates that miss a batch still committing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from remit.adapters.db import tables as t
from remit.service_layer.unit_of_work import UnitOfWork

UowFactory = Callable[[], UnitOfWork]


def mark(uow: UnitOfWork, customer_ids: Iterable[str]) -> None:
    """Usage arrived for these customers (called by ingestion, in its transaction)."""
    mark_on(uow.conn, customer_ids)


# PostgreSQL: one array parameter, so the statement's text (and its prepared plan) is the same for every batch; sent
# through the driver, as ingestion's own statements are (SQLAlchemy's layers cost more CPU than the statement).
_MARK_PG = "UPDATE usage_watches SET dirty = true WHERE customer_id = ANY(%s::varchar[])"


def mark_on(conn: Connection, customer_ids: Iterable[str]) -> None:
    """``mark`` on a connection in a transaction (the bulk import's writer has no unit of work)."""
    ids = sorted(set(customer_ids))
    if conn.dialect.name == "postgresql":
        if ids:
            driver: Any = conn.connection.driver_connection
            with driver.cursor() as cur:
                cur.execute(_MARK_PG, (ids,))
        return
    for start in range(0, len(ids), 10_000):  # within SQLite's limit on bound parameters
        part = ids[start : start + 10_000]
        conn.execute(update(t.usage_watches).where(t.usage_watches.c.customer_id.in_(part)).values(dirty=True))


def watch(uow: UnitOfWork, customer_id: str) -> None:
    """Start watching a customer (an alert or a threshold was set), and look at it at the next evaluation."""
    dialect: Any = postgresql if uow.is_postgres else sqlite
    stmt = dialect.insert(t.usage_watches).values(customer_id=customer_id, dirty=True)
    uow.conn.execute(stmt.on_conflict_do_update(index_elements=["customer_id"], set_={"dirty": True}))


def unwatch(uow: UnitOfWork, customer_ids: Iterable[str]) -> None:
    ids = list(customer_ids)
    if ids:
        uow.conn.execute(delete(t.usage_watches).where(t.usage_watches.c.customer_id.in_(ids)))


def claim(make_uow: UowFactory, test_clock_id: str | None, limit: int) -> list[str]:
    """Up to ``limit`` dirty customers of the real world (or of one test clock), cleared in a short transaction
    of their own. Rows another transaction holds (a batch being ingested, another worker's claim) are skipped."""
    w, c = t.usage_watches.c, t.customers.c
    clock = (c.test_clock_id == test_clock_id) if test_clock_id else c.test_clock_id.is_(None)
    with make_uow() as uow:
        query = (
            select(w.customer_id)
            .join(t.customers, c.id == w.customer_id)
            .where(w.dirty.is_(True), clock)
            .order_by(w.customer_id)
            .limit(limit)
        )
        if uow.is_postgres:
            query = query.with_for_update(skip_locked=True, of=t.usage_watches)
        ids = list(uow.conn.execute(query).scalars())
        if ids:
            uow.conn.execute(update(t.usage_watches).where(w.customer_id.in_(ids)).values(dirty=False))
    return ids


def remark(make_uow: UowFactory, customer_ids: Iterable[str]) -> None:
    """Put customers back for the next round (their evaluation failed or they were busy)."""
    ids = list(customer_ids)
    if ids:
        with make_uow() as uow:
            mark(uow, ids)
