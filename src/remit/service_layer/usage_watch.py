"""Which customers' usage must be looked at again: those with alerts or a usage threshold that received usage.

A watched customer has a row in ``usage_watches``. Ingestion marks the customers of each batch ``dirty`` (one
indexed UPDATE per batch; customers nobody watches have no row, so for them it costs an index probe). The
evaluation (``usage_monitor``) claims dirty rows, clears them, and then measures: usage that commits after the
claim marks the row again, so it is looked at in the next round, never lost.

A claim is a lease: it also sets the row's ``claimed_until`` (``LEASE`` ahead), which the evaluation clears once
it has evaluated the batch (``release``). A process killed between the two leaves the time set: once it has
passed, the customer is claimable again, as if still marked, so a killed process's customers are evaluated by the
next one (an alert fires once and a threshold invoice is issued once: both are written under unique keys).

On PostgreSQL the mark is unconditional (``dirty = true`` even when it is already): it takes the row's lock until
the ingesting transaction commits, and the claim skips locked rows, so an evaluation can never clear a mark and
then read aggregates that miss a batch still committing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from remit.adapters.db import tables as t
from remit.service_layer.unit_of_work import UnitOfWork

UowFactory = Callable[[], UnitOfWork]

# How long a claim holds customers: far longer than evaluating a batch takes (~0.3 s for 200 customers, a few
# seconds when a customer's usage cannot be rated and the batch is split), so that a live evaluation keeps its
# customers, and short enough that a killed process's customers are evaluated again within minutes. Were a live
# evaluation ever slower, another would evaluate the same customers too: nothing is done twice (the customer
# lock, the triggers' and invoice lines' unique keys).
LEASE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Claim:
    ids: list[str]
    until: datetime  # the claim's lease: what tells this claim from a later one of the same customers


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


def claim(make_uow: UowFactory, test_clock_id: str | None, limit: int) -> Claim:
    """Up to ``limit`` customers of the real world (or of one test clock) that are dirty, or whose last claim's
    lease has passed (its process died), cleared and leased in a short transaction of their own. Rows another
    transaction holds (a batch being ingested, another worker's claim) are skipped."""
    w, c = t.usage_watches.c, t.customers.c
    clock = (c.test_clock_id == test_clock_id) if test_clock_id else c.test_clock_id.is_(None)
    with make_uow() as uow:
        until = uow.now + LEASE
        query = (
            select(w.customer_id)
            .join(t.customers, c.id == w.customer_id)
            .where(or_(w.dirty.is_(True), w.claimed_until < uow.now), clock)
            .order_by(w.customer_id)
            .limit(limit)
        )
        if uow.is_postgres:
            query = query.with_for_update(skip_locked=True, of=t.usage_watches)
        ids = list(uow.conn.execute(query).scalars())
        if ids:
            uow.conn.execute(
                update(t.usage_watches).where(w.customer_id.in_(ids)).values(dirty=False, claimed_until=until)
            )
    return Claim(ids, until)


def release(make_uow: UowFactory, customer_ids: Iterable[str], until: datetime) -> None:
    """The claim leased ``until`` of these customers ends (they were evaluated), in a short transaction of its
    own. A later claim of the same customers keeps its lease. On PostgreSQL rows being marked by ingestion are
    skipped, not waited for: they are dirty once it commits, and the next claim leases them anew."""
    ids = list(customer_ids)
    if not ids:
        return
    w = t.usage_watches.c
    with make_uow() as uow:
        mine = select(w.customer_id).where(w.customer_id.in_(ids), w.claimed_until == until)
        if uow.is_postgres:
            mine = mine.with_for_update(skip_locked=True)
        uow.conn.execute(update(t.usage_watches).where(w.customer_id.in_(mine)).values(claimed_until=None))


def release_stale(uow: UnitOfWork, test_clock_id: str) -> None:
    """Mark again the customers of a test clock that a claim still holds. Only an advance of the clock evaluates
    its customers, and the caller holds the clock: such a claim belonged to an advance that died (or failed), so
    its customers are evaluated now rather than once its lease has passed."""
    w = t.usage_watches.c
    of_clock = select(t.customers.c.id).where(t.customers.c.test_clock_id == test_clock_id)
    uow.conn.execute(
        update(t.usage_watches)
        .where(w.claimed_until.is_not(None), w.customer_id.in_(of_clock))
        .values(dirty=True, claimed_until=None)
    )


def remark(make_uow: UowFactory, customer_ids: Iterable[str]) -> None:
    """Put customers back for the next round (their evaluation failed or they were busy)."""
    ids = list(customer_ids)
    if ids:
        with make_uow() as uow:
            mark(uow, ids)
