"""SQLite: the next bill-run batch's usage, aggregated on a second connection in a thread while this batch is billed.

SQLite runs in the bill run's own process, and a sequential bill run has one batch at a time: while Python rates
and writes a batch, the second core idles. SQLite releases Python's lock (the GIL) while it executes a statement,
so a statement run on another thread and another connection uses that core, with two conditions:

- **The statement must do all of its work in one step.** Python takes the GIL back for every row a statement
  returns, and while the main thread runs Python that takes up to a switch interval (5 ms) per row. So the helper
  thread writes its result into a temporary table (``INSERT ... SELECT``: one step) and the main thread reads it
  back later, when it needs it (5,000 rows: a few milliseconds).
- **What it read must still be true when it is used.** It reads in its own snapshot, outside the write
  transaction of the batch that uses it (WAL lets it read while the bill run writes). The bill run checks, on
  its own connection, that nothing but its own previous batch was committed in between. At the start of each
  batch, inside its write transaction (so no other writer can commit until the batch ends), it reads
  ``PRAGMA data_version``, which changes when another connection commits, and the connection's count of rows
  changed; at the end of the batch, that count again. The read-ahead is started in batch N after the first
  reading, so it sees the database as of batch N's start or later; batch N+1 uses it only on the same connection,
  with the same data version, and with the count of rows changed where batch N left it (a pooled connection lent
  to someone else between the two batches would have changed it). Batch N itself writes no usage events.
  Anything else (another writer committed, another connection, an error, a span the next batch does not need)
  and the batch aggregates its usage itself, as without read-ahead.

Only the statement ``usage_queries`` reads per customer first (counts and sums of meters without dimensions, in
SQLite's own SQL) is read ahead, for the spans (meter, start, end) the current batch used: in a bill run all
customers on calendar billing share them. Measured in ``docs/performance.md``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine

from remit.adapters.db.usage_queries import ReadAheadSpan, Span, Window, read_ahead_statements
from remit.domain.rating.aggregations import Meter

_TABLE = "temp.remit_usage_read_ahead"

Version = tuple[Any, int, int]  # (the DBAPI connection, its PRAGMA data_version, its total changes)


def available(engine: Engine) -> bool:
    """Read-ahead needs a second connection to the same database that can read while the bill run writes: a
    SQLite database in a file (WAL), not in memory."""
    return engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:")


def version(conn: Connection) -> Version:
    """The bill run's connection, its data version and its count of rows changed, read at the start of a batch
    inside its write transaction."""
    dbapi: Any = conn.connection.dbapi_connection
    data_version = int(conn.exec_driver_sql("PRAGMA data_version").scalar_one())
    return dbapi, data_version, int(dbapi.total_changes)


class UsageReadAhead:
    """One bill run's read-ahead: ``start`` after a batch's usage is loaded, ``take`` in the next batch."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._raw: Any = None  # the pooled connection the thread reads with, taken on first use
        self._thread: threading.Thread | None = None
        self._started: Version | None = None
        self._ended: tuple[Any, int] | None = None  # the connection and its total changes when the batch ended
        self._spans: list[Span] = []
        self._customers: frozenset[str] = frozenset()
        self._failed: Exception | None = None

    def start(
        self, at: Version, customers: Sequence[str], meters: Mapping[str, Meter], windows: Sequence[Window]
    ) -> None:
        """Aggregate ``customers``' usage over the spans of ``windows`` that can be read ahead, in a thread."""
        self._finish()
        statements = read_ahead_statements(self._engine.dialect, meters, windows, customers)
        if not statements or not customers:
            return
        if self._raw is None:
            self._raw = self._engine.raw_connection()
            self._raw.driver_connection.execute(
                f"CREATE TABLE IF NOT EXISTS {_TABLE} (span INTEGER, customer_id, plain, events, value)"
            )
        self._started, self._ended = at, None
        self._spans, self._failed = [span for span, _sql, _args in statements], None
        self._customers = frozenset(customers)
        db = self._raw.driver_connection

        def run() -> None:
            try:
                db.execute(f"DELETE FROM {_TABLE}")
                for index, (_span, sql, args) in enumerate(statements):
                    db.execute(f"INSERT INTO {_TABLE} SELECT {index}, * FROM ({sql})", args)
            except Exception as exc:  # reported by take(): the batch then aggregates by itself
                self._failed = exc

        self._thread = threading.Thread(target=run, name="remit-usage-read-ahead", daemon=True)
        self._thread.start()

    def ended(self, conn: Connection) -> None:
        """The batch that started the read-ahead has written all it writes (its commit follows)."""
        dbapi: Any = conn.connection.dbapi_connection
        self._ended = dbapi, int(dbapi.total_changes)

    def take(self, at: Version) -> dict[Span, ReadAheadSpan]:
        """What was read ahead, if it is still true at ``at`` (this batch's version); else nothing. (A span is
        used only for customers it was read for: ``usage_queries.aggregate_usage`` checks.)"""
        started, ended, spans = self._started, self._ended, self._spans
        self._finish()
        self._started, self._ended, self._spans = None, None, []
        if (
            started is None
            or ended is None
            or self._failed is not None
            or not (started[0] is ended[0] is at[0])  # one connection throughout
            or started[1] != at[1]  # no other connection committed
            or ended[1] != at[2]  # nor this one, lent to someone else between the two batches
        ):
            return {}
        rows: dict[int, dict[str, tuple[Any, ...]]] = {index: {} for index in range(len(spans))}
        for index, customer_id, plain, events, value in self._raw.driver_connection.execute(
            f"SELECT span, customer_id, plain, events, value FROM {_TABLE}"
        ):
            rows[index][customer_id] = (customer_id, plain, events, value)
        return {span: ReadAheadSpan(self._customers, rows[index]) for index, span in enumerate(spans)}

    def close(self) -> None:
        self._finish()
        if self._raw is not None:
            try:
                self._raw.driver_connection.execute(f"DROP TABLE IF EXISTS {_TABLE}")
            finally:
                self._raw.close()
                self._raw = None

    def _finish(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
