"""Column types that keep values exact and times in UTC on both SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Dialect, String
from sqlalchemy.types import TypeDecorator


class ExactDecimal(TypeDecorator[Decimal]):
    """A decimal stored as text: SQLite has no exact numeric type, and quantities are never summed in SQL. Written
    out in full (``0.000125``), or, when that would not fit the column's 64 characters (a unit price worked out
    from 1e-62 units), in exponent form (``1E+64``), which reads back as exactly the same number."""

    impl = String(64)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"ExactDecimal needs a Decimal, got {type(value).__name__}")
        text = format(value, "f")
        return text if len(text) <= 64 else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime; SQLite hands back naive values, which are UTC by construction."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; give a UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sqlite_utc_text(value: datetime) -> str:
    """An aware time as SQLite stores a UTCDateTime: in UTC, without its offset, to the microsecond
    (YYYY-MM-DD HH:MM:SS.ffffff), exactly the text SQLAlchemy writes. Times are compared as text on SQLite, so a
    raw write must give the same form: the sqlite3 module's own adapter leaves out ``.000000``, and
    ``2025-12-31 00:00:00`` sorts before ``2025-12-31 00:00:00.000000``."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
