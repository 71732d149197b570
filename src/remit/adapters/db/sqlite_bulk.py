"""SQLite bulk writes as multi-row ``INSERT ... VALUES (...), (...)`` statements (``invoices.bulk_insert``).

An ``executemany`` of a one-row INSERT steps SQLite once per row, with Python's ``sqlite3`` module binding and
taking the GIL back around every step. One statement of up to ``ROWS_PER_STATEMENT`` rows is one step. What it
costs instead: a statement that inserts many rows and may fail half-way (a unique or foreign key) keeps a
statement journal, a copy of every page it changes, to undo just itself. So it pays where a batch's rows land on
few pages, and not where they land all over large indexes. Measured on SQLite 3.40 (``docs/performance.md``):

- a bill run's invoices, lines and events (new ids, in customer order: they go to the right edge of their
  indexes): 10–25 % less time than ``executemany``; lines whose subscriptions are spread over their indexes at
  random: the same time;
- usage events in the order a file gives them (random places in three large indexes): 35–50 % more time, so the
  usage import keeps ``executemany`` for them (its claim of their keys, which needs ``RETURNING``, is made of
  these statements).

Each statement holds a power-of-two number of rows (a remainder is split in decreasing powers of two), so a table
has a handful of distinct statements, each prepared once per connection and then found in its statement cache;
and none binds more parameters than the connection allows (``SQLITE_LIMIT_VARIABLE_NUMBER``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

ROWS_PER_STATEMENT = 256
_STATEMENTS: dict[tuple[str, str, int, int], str] = {}


def parameter_limit(driver: sqlite3.Connection) -> int:
    """How many parameters one statement may bind on this connection."""
    return driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


def insert_statements(
    head: str,
    width: int,
    rows: Sequence[Sequence[Any]],
    limit: int,
    *,
    tail: str = "",
    per_statement: int = ROWS_PER_STATEMENT,
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """The statements (SQL, parameters) that insert ``rows`` in order. ``head``: ``INSERT INTO t (a, b) VALUES``
    (the rows' placeholders follow it); ``width``: the values per row; ``limit``: ``parameter_limit``;
    ``tail``: what follows the rows (``ON CONFLICT ... RETURNING ...``); ``per_statement``: rows per statement
    at most (rounded down to a power of two)."""
    most = max(1, min(per_statement, limit // width))
    most = 1 << (most.bit_length() - 1)
    start, total = 0, len(rows)
    while start < total:
        left = total - start
        size = most if left >= most else 1 << (left.bit_length() - 1)
        sql = _STATEMENTS.get((head, tail, width, size))
        if sql is None:
            row = "(" + ", ".join("?" * width) + ")"
            sql = _STATEMENTS[(head, tail, width, size)] = f"{head} " + ", ".join([row] * size) + tail
        yield sql, tuple(value for values in rows[start : start + size] for value in values)
        start += size
