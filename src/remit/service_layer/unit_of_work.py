"""One transaction per command, with the domain events it produced written inside it (the outbox).

Locks are taken here and only here, always in the same order (customers by id, then number series), so two
commands never wait on each other in a circle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table, bindparam, insert, select
from sqlalchemy.exc import IntegrityError, InterfaceError, InternalError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from remit.adapters.db import tables as t
from remit.adapters.db.id_lists import ID_LIST_TYPES, id_list_value, in_id_list
from remit.adapters.db.ids import new_id
from remit.domain.clock import Clock
from remit.domain.event_types import check_recorded
from remit.service_layer import idempotency

# Errors that are the database's or the process's, not the data's (the database went away, a lock or statement
# timed out, the pool is exhausted, memory ran out). Work done customer by customer (the bill run, the usage
# monitor) sets aside a customer whose work fails with any other error, and stops on these: each customer would
# meet them again.
SYSTEM_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    InternalError,
    ProgrammingError,
    PoolTimeout,
    MemoryError,
)

T = TypeVar("T")


def retrying(attempt: Callable[[], T], tries: int = 3) -> T:
    """``attempt()``, a transaction of its own, tried up to ``tries`` times when another transaction got in its
    way: a unique key another writer filled first (the next attempt sees its rows and writes the rest), or a
    deadlock or serialization failure (SQLSTATE class 40, PostgreSQL: the database rolled the transaction back
    whole, and it usually goes through when tried again). What still fails is raised."""
    for done in range(1, tries + 1):
        try:
            return attempt()
        except IntegrityError:
            if done == tries:
                raise
        except OperationalError as exc:
            if done == tries or not str(getattr(exc.orig, "sqlstate", None) or "").startswith("40"):
                raise
            time.sleep(0.05 * done)
    raise AssertionError("unreachable")


def isolating(
    ids: Sequence[str], attempt: Callable[[Sequence[str]], T], failed: Callable[[str, Exception], None]
) -> list[T]:
    """``attempt(ids)``, a transaction; if it fails for a reason of the ids' own (anything but ``SYSTEM_ERRORS``,
    which are raised), ``attempt`` each half on its own, recursively, down to the single ids that fail, whose
    errors go to ``failed``. Returns what the attempts that went through returned, in order. One failing id in a
    batch of n costs about log2(n) failed attempts, the largest the whole batch: about twice the batch's work.
    The bill run, its credits step and the usage monitor set a customer aside this way."""
    try:
        return [attempt(ids)]
    except SYSTEM_ERRORS:
        raise
    except Exception as exc:
        if len(ids) == 1:
            failed(ids[0], exc)
            return []
    half = len(ids) // 2
    return isolating(ids[:half], attempt, failed) + isolating(ids[half:], attempt, failed)


# Statements built once: a statement's cache key is computed once per statement object.
_INSERT_EVENTS = insert(t.events)
_CUSTOMER = select(t.customers).where(t.customers.c.id == bindparam("customer_id"))
_LOCKED_CUSTOMER = _CUSTOMER.with_for_update()
# PostgreSQL: lock customers by id, in id order; one statement per form of the id list and skip-locked flag.
_LOCK_CUSTOMERS = {
    (variant, skip): select(t.customers.c.id)
    .where(in_id_list(t.customers.c.id, variant, bindparam("ids", type_=ID_LIST_TYPES[variant])))
    .order_by(t.customers.c.id)
    .with_for_update(skip_locked=skip)
    for variant in ("pg", "pg_array", "pg_one")
    for skip in (True, False)
}


class UnitOfWork:
    """``read_only``: for commands that only read. On PostgreSQL they run without a transaction (autocommit):
    under READ COMMITTED every statement sees its own snapshot inside a transaction too, so the reads are the
    same, and the BEGIN and COMMIT round trips are saved. Writing through such a unit of work is refused.
    ``autocommits``: the engine's connections are made in autocommit mode (``Remit.readers``): used as they are."""

    def __init__(self, engine: Engine, clock: Clock, read_only: bool = False, autocommits: bool = False) -> None:
        self.engine = engine
        self.clock = clock
        self.read_only = read_only
        self.autocommits = autocommits
        self._conn: Connection | None = None
        self._events: list[dict[str, Any]] = []
        self._after_commit: list[Callable[[], None]] = []
        self._watched: int | None = None
        self.now: datetime = clock.now()  # read once per command

    @property
    def conn(self) -> Connection:
        assert self._conn is not None, "use the unit of work in a with-block"
        return self._conn

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def __enter__(self) -> UnitOfWork:
        self.now = self.clock.now()
        self._conn = self.engine.connect()
        if self.read_only and self.is_postgres and not self.autocommits:
            self._conn.execution_options(isolation_level="AUTOCOMMIT")
        self._conn.begin()
        self._watched = None if self.read_only else idempotency.watch(self._conn)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._conn is not None
        try:
            if exc_type is None:
                self._flush_events()
                idempotency.mark_committed(self._conn, self.now, self._watched)
                self._conn.commit()
            else:
                self._conn.rollback()
        finally:
            self._conn.close()
            self._conn = None
            self._events = []
            done, self._after_commit = self._after_commit, []
        if exc_type is None:
            for action in done:
                action()

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the command has committed (not at all if it rolls back): e.g. forget what a cache
        holds of what it changed, so that no other thread caches the old rows again before the commit."""
        self._after_commit.append(action)

    def emit(
        self,
        type_: str,
        object_type: str,
        object_id: str,
        data: dict[str, Any],
        customer_id: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Record a domain event; it is written with the change, or not at all. ``at``: when it happened; by
        default now as its customer lives it: the customer's test clock's time, or the real one."""
        self.ensure_writable()
        check_recorded(type_)
        self._events.append(
            {
                "public_id": new_id("evt"),
                "type": type_,
                "object_type": object_type,
                "object_id": object_id,
                "customer_id": customer_id,
                "data": data,
                "created_at": at,
            }
        )

    def ensure_writable(self) -> None:
        if self.read_only:
            raise RuntimeError("this unit of work is read-only")

    def _flush_events(self) -> None:
        if self._events:
            undated = [e for e in self._events if e["created_at"] is None]
            clocks = self._test_clock_times({e["customer_id"] for e in undated if e["customer_id"] is not None})
            for event in undated:
                event["created_at"] = clocks.get(event["customer_id"], self.now)
            self.conn.execute(_INSERT_EVENTS, self._events)
            self._events = []

    def _test_clock_times(self, customer_ids: set[str]) -> dict[str, datetime]:
        """The time of the test clock of each of these customers that has one."""
        if not customer_ids:
            return {}
        c, k = t.customers.c, t.test_clocks.c
        query = (
            select(c.id, k.frozen_at).join(t.test_clocks, k.id == c.test_clock_id).where(c.id.in_(sorted(customer_ids)))
        )
        return {row.id: row.frozen_at for row in self.conn.execute(query)}

    def lock_customers(self, customer_ids: Sequence[str], skip_locked: bool = False) -> list[str]:
        """One writer per account. On PostgreSQL, row locks in id order; SQLite already has one writer."""
        self.ensure_writable()
        ids = sorted(set(customer_ids))
        if not self.is_postgres or not ids:
            return ids
        # The ids as one parameter, into a statement built once: an IN list of a bill-run batch's 5,000 ids cost
        # SQLAlchemy about 0.1 s of CPU to render.
        variant, value = id_list_value(ids, postgres=True)
        return list(self.conn.execute(_LOCK_CUSTOMERS[(variant, skip_locked)], {"ids": value}).scalars())

    def lock_customer(self, customer_id: str) -> None:
        self.lock_customers([customer_id])

    def locked_customer(self, customer_id: str) -> Mapping[Any, Any] | None:
        """Lock one customer (like ``lock_customer``) and read its row in the same statement; None if there is
        no such customer."""
        self.ensure_writable()
        query = _LOCKED_CUSTOMER if self.is_postgres else _CUSTOMER
        return self.conn.execute(query, {"customer_id": customer_id}).mappings().first()

    def insert_many(self, table: Table, rows: Iterable[dict[str, Any]]) -> None:
        self.ensure_writable()
        rows = list(rows)
        if rows:
            self.conn.execute(insert(table), rows)
