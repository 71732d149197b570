"""Bulk import of usage events (``remit events import FILE``): the same rules and the same deduplication as
``usage.ingest``, at the speed of the database's bulk path.

The events are read and checked in chunks (``CHUNK`` events). Each event is held to ``usage.check_event``, the
rules of the API; a refused one is reported with its line and reason, and nothing of it is stored. A chunk's valid
events are then written in one transaction of their own:

- PostgreSQL: the chunk's keys (customer, transaction id), sorted, are claimed in one ``INSERT INTO
  usage_event_keys SELECT ... FROM unnest(...) ON CONFLICT DO NOTHING`` that answers the positions of the keys that
  were not new (``usage.store_pg``); only the others' events are written to ``usage_events``, with one ``COPY``.
  A key that another transaction holds makes the claim wait for it, exactly as in ``ingest``, so concurrent
  imports of the same file store each event once; sorting the keys makes every writer take them in the same
  order, so two imports never deadlock.
- SQLite: the same claim (multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING``) and an ``executemany`` of the
  new events, under SQLite's single writer (``BEGIN IMMEDIATE``).

Reading and checking (Python) overlaps with writing (the database): a writer thread with its own connection
writes chunk N while the caller's thread checks chunk N+1. Waiting on the database releases the GIL, so on two
cores the two halves run side by side.

A transaction id repeated inside a chunk counts once (the first occurrence is kept); across chunks, files and
concurrent imports the keys table decides, as it does for the API.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, select

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_ids
from remit.adapters.db.sqlite_bulk import insert_statements, parameter_limit
from remit.adapters.db.types import sqlite_utc_text
from remit.domain.clock import Clock
from remit.domain.errors import RemitError, ValidationError
from remit.domain.rating.aggregations import Meter
from remit.service_layer.usage import (
    EVENT_COLUMNS,
    METERS_FRESH_S,
    CheckedEvent,
    OpenPeriods,
    References,
    UsageSettings,
    after_store,
    check_event,
    clock_times,
    copy_line,
    meter_from_row,
    store_pg,
)

CHUNK = 20_000  # events per transaction
MAX_REPORTED = 100  # refused events listed in the report; all are counted
_SQLITE_KEYS_PER_STATEMENT = 1_024  # keys per claim statement (``sqlite_bulk``: a power of two)
_SQLITE_CLAIM = "INSERT INTO usage_event_keys (customer_id, transaction_id, received_at) VALUES"
_SQLITE_CLAIMED = " ON CONFLICT DO NOTHING RETURNING customer_id, transaction_id"
SQLITE_CACHE_KIB = 256 * 1024  # SQLite page cache of the import's connection

_METERS = select(t.meters)
_CUSTOMERS = select(t.customers.c.id, t.customers.c.test_clock_id, t.customers.c.timezone).where(
    t.customers.c.id.in_(bindparam("ids", expanding=True))
)
_SQLITE_INSERT = f"INSERT INTO usage_events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"


@dataclass
class ImportReport:
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_events: list[dict[str, Any]] = field(default_factory=list)  # the first MAX_REPORTED

    def refuse(self, line: int, transaction_id: object, exc: RemitError) -> None:
        self.rejected += 1
        if len(self.rejected_events) < MAX_REPORTED:
            self.rejected_events.append(
                {
                    "line": line,
                    "transaction_id": transaction_id if isinstance(transaction_id, str) else None,
                    **exc.to_dict(),
                }
            )


@dataclass
class _Chunk:
    keys: list[tuple[str, str]]  # sorted
    rows: dict[tuple[str, str], Any]  # key -> the row as the writer writes it (COPY text line or parameters)
    received_at: datetime
    times: dict[tuple[str, str], datetime] = field(default_factory=dict)  # key -> the event's time
    customers: dict[str, Any] = field(default_factory=dict)  # the chunk's customers: time zone, test clock
    now_of: dict[str, datetime] = field(default_factory=dict)  # customers on a test clock: its time


def import_events(
    engine: Engine,
    clock: Clock,
    items: Iterable[tuple[int, Any]],
    *,
    settings: UsageSettings | None = None,
    chunk_size: int = CHUNK,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Check and store events given as (line number, parsed event): in place of an event, None if the line did not
    parse, or the RemitError that refuses it (a malformed CSV row)."""
    settings = settings or UsageSettings()
    report = ImportReport()
    postgres = engine.dialect.name == "postgresql"
    checker = _Checker(engine)
    writer = _Writer(engine, postgres)
    writer.start()
    try:
        for batch in _chunks(items, chunk_size):
            now = clock.now()
            chunk = checker.check(batch, now, settings, report, postgres)
            report.lines += len(batch)
            writer.put(chunk)
            if progress is not None:
                progress(len(batch))
    finally:
        counts = writer.finish()
    report.accepted = counts[0]
    report.duplicates += counts[1]
    return report


def _chunks(items: Iterable[tuple[int, Any]], size: int) -> Iterator[list[tuple[int, Any]]]:
    batch: list[tuple[int, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Checker:
    """Checks a chunk in the caller's thread; knows the meters and which customers exist."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.meters: dict[str, Meter] = {}
        self.customers: dict[str, Any] = {}  # id -> what checking and reopening periods need
        self._load_meters()

    def _load_meters(self) -> None:
        with self.engine.connect() as conn:
            self.meters = {r["code"]: meter_from_row(r) for r in conn.execute(_METERS).mappings()}
        self._meters_read = time.monotonic()

    def _learn(self, batch: list[tuple[int, Any]], named: set[str]) -> None:
        """Look up the customers and meters this chunk names that are not known yet (``named``: the customers its
        external ids and subscriptions name)."""
        wanted: set[str] = {c for c in named if c not in self.customers}
        codes_missing = False
        customers, meters = self.customers, self.meters
        for _, raw in batch:
            if type(raw) is dict:
                cus = raw.get("customer_id")
                if type(cus) is str and cus not in customers:
                    wanted.add(cus)
                code = raw.get("code")
                if not codes_missing and type(code) is str and code not in meters:
                    codes_missing = True
        if wanted:
            ids = sorted(wanted)
            with self.engine.connect() as conn:
                for start in range(0, len(ids), 10_000):  # within SQLite's limit on bound parameters
                    for row in conn.execute(_CUSTOMERS, {"ids": ids[start : start + 10_000]}).mappings():
                        self.customers[row["id"]] = dict(row)
        if codes_missing or time.monotonic() - self._meters_read > METERS_FRESH_S:
            self._load_meters()  # a meter created, or one deactivated, since they were read

    def check(
        self,
        batch: list[tuple[int, Any]],
        now: datetime,
        settings: UsageSettings,
        report: ImportReport,
        postgres: bool,
    ) -> _Chunk:
        with self.engine.connect() as conn:
            refs = References(conn, (raw for _, raw in batch))
        self._learn(batch, refs.customer_ids())
        meters, known = self.meters, self.customers
        customers = {
            c: known[c]
            for _, raw in batch
            if type(raw) is dict and type(c := raw.get("customer_id")) is str and c in known
        }
        customers.update((c, known[c]) for c in refs.customer_ids() if c in known)
        checked: dict[tuple[str, str], CheckedEvent] = {}
        with self.engine.connect() as conn:
            now_of = clock_times(conn, customers)
            open_since = OpenPeriods(conn, customers, now_of, now)  # read only if an event is older than the grace
            for line, raw in batch:
                if not isinstance(raw, dict):
                    if isinstance(raw, RemitError):
                        error = raw
                    elif raw is None:
                        error = ValidationError("invalid_json", "The line is not valid JSON.", None)
                    else:
                        error = ValidationError("invalid_event", "Each event is an object.", "events")
                    report.refuse(line, None, error)
                    continue
                try:
                    event = check_event(
                        refs.resolve(raw, customers), meters, customers, now, settings, now_of, open_since
                    )
                except RemitError as exc:
                    report.refuse(line, raw.get("transaction_id"), exc)
                    continue
                key = (event.customer_id, event.transaction_id)
                if key in checked:
                    report.duplicates += 1  # the same transaction id earlier in this chunk: the first one counts
                else:
                    checked[key] = event
        ids = new_ids("uev", len(checked))
        rows: dict[tuple[str, str], Any] = {}
        if postgres:
            received = now.isoformat()
            for i, (key, e) in enumerate(checked.items()):
                rows[key] = copy_line(ids[i], e, received)
        else:
            to_text = sqlite_utc_text  # the text SQLAlchemy writes: times are compared as text on SQLite
            received_text = to_text(now)
            for i, (key, e) in enumerate(checked.items()):
                rows[key] = (
                    ids[i],
                    to_text(e.occurred_at),
                    e.customer_id,
                    e.subscription_id,
                    e.meter_code,
                    e.transaction_id,
                    received_text,
                    e.value,
                    e.dimension,
                    e.group_key,
                    1 if e.matched else 0,
                    e.properties,
                )
        times = {key: e.occurred_at for key, e in checked.items()}
        return _Chunk(sorted(rows), rows, now, times, customers, now_of)


class _Writer(threading.Thread):
    """Writes chunks in their own transactions on its own connection, while the caller checks the next one."""

    def __init__(self, engine: Engine, postgres: bool) -> None:
        super().__init__(name="usage-import-writer", daemon=True)
        self.engine = engine
        self.postgres = postgres
        self.queue: queue.Queue[_Chunk | None] = queue.Queue(maxsize=2)
        self.accepted = 0
        self.duplicates = 0
        self.error: BaseException | None = None

    def put(self, chunk: _Chunk) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(chunk, timeout=0.5)
                return
            except queue.Full:
                continue

    def finish(self) -> tuple[int, int]:
        """Wait for every chunk put so far to be written; re-raise the writer's error, if any."""
        while self.is_alive():
            try:
                self.queue.put(None, timeout=0.5)
                break
            except queue.Full:
                continue
        self.join()
        if self.error is not None:
            raise self.error
        return self.accepted, self.duplicates

    def run(self) -> None:
        try:
            with self.engine.connect() as conn:
                if not self.postgres:
                    # A page cache to match a bulk load: the default (2 MiB) makes each index insert past it a
                    # read from the file. Set for this connection while it imports, then put back.
                    before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
                    conn.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
                    conn.commit()
                try:
                    self._write_all(conn)
                finally:
                    if not self.postgres:
                        conn.rollback()  # whatever a failed chunk left open
                        conn.exec_driver_sql(f"PRAGMA cache_size={int(before or -2000)}")
                        conn.commit()
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
            while True:  # unblock a caller waiting to put
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break

    def _write_all(self, conn: Any) -> None:
        while (chunk := self.queue.get()) is not None:
            if not chunk.keys:
                continue
            with conn.begin():
                driver = conn.connection.driver_connection
                stored = self._write_pg(driver, chunk) if self.postgres else self._write_sqlite(driver, chunk)
                # Late events reopen billed periods; watched customers are flagged: in the same transaction.
                after_store(
                    conn, chunk.received_at, [(k[0], chunk.times[k]) for k in stored], chunk.customers, chunk.now_of
                )
            self.accepted += len(stored)
            self.duplicates += len(chunk.keys) - len(stored)

    @staticmethod
    def _write_pg(driver: Any, chunk: _Chunk) -> list[tuple[str, str]]:
        """The keys of the chunk that were new (their events are stored)."""
        taken = store_pg(driver, chunk.keys, chunk.rows, chunk.received_at)
        return [k for i, k in enumerate(chunk.keys) if i not in taken] if taken else chunk.keys

    @staticmethod
    def _write_sqlite(driver: Any, chunk: _Chunk) -> list[tuple[str, str]]:
        keys = chunk.keys
        cur = driver.cursor()
        try:
            claimed: set[tuple[str, str]] = set()
            received = chunk.rows[keys[0]][6]
            limit = parameter_limit(driver)
            claims = [(c, x, received) for c, x in keys]
            for sql, params in insert_statements(
                _SQLITE_CLAIM, 3, claims, limit, tail=_SQLITE_CLAIMED, per_statement=_SQLITE_KEYS_PER_STATEMENT
            ):
                claimed.update((c, x) for c, x in cur.execute(sql, params).fetchall())
            rows = chunk.rows
            cur.executemany(_SQLITE_INSERT, [rows[k] for k in keys if k in claimed])
        finally:
            cur.close()
        return [k for k in keys if k in claimed]
