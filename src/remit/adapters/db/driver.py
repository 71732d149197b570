"""Hot statements run on the driver's own cursor when SQLAlchemy has nothing to do for them.

Running a statement that is already compiled still costs SQLAlchemy about 0.05 ms of CPU (the compiled-cache
lookup, the execution context, the result object): on the upcoming-invoice preview, whose two statements take
PostgreSQL about as long, that was a fifth of the preview's CPU in process. A statement whose parameters and
columns need no type processing on PostgreSQL (every value is one psycopg sends and returns as it is) is
compiled once and then executed on the driver's cursor, in the same connection and transaction; any other
statement, and every statement on SQLite (whose dates come back as text for SQLAlchemy to parse), goes through
SQLAlchemy as usual. The rows are the same either way: tuples of the selected columns in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.sql import Select


@dataclass(frozen=True)
class _Plain:
    compiled: Any  # sqlalchemy.sql.compiler.Compiled
    sql: str


# Per statement object (the callers' statements are built once and kept) and dialect: None when it needs
# SQLAlchemy.
_PLAIN: dict[tuple[Select[Any], str], _Plain | None] = {}


def rows(conn: Connection, statement: Select[Any], params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
    """The statement's rows, as tuples of its selected columns."""
    key = (statement, conn.dialect.name)
    plain = _PLAIN[key] if key in _PLAIN else _PLAIN.setdefault(key, _plain(statement, conn.dialect))
    if plain is None:
        return conn.execute(statement, params).all()
    driver = conn.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        cursor.execute(plain.sql, plain.compiled.construct_params(params))
        found: list[Sequence[Any]] = cursor.fetchall()
        return found
    finally:
        cursor.close()


def _plain(statement: Select[Any], dialect: Dialect) -> _Plain | None:
    """The statement compiled for the driver, or None if SQLAlchemy must process a parameter or a column."""
    if dialect.name != "postgresql":
        return None
    compiled = statement.compile(dialect=dialect)
    for bind in compiled.binds.values():
        if bind.expanding or bind.literal_execute or bind.type.dialect_impl(dialect).bind_processor(dialect):
            return None
    for column in statement.selected_columns:
        if column.type.dialect_impl(dialect).result_processor(dialect, None) is not None:
            return None
    return _Plain(compiled, compiled.string)
