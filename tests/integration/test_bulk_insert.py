"""``bulk_insert`` stores rows exactly as ``insert(table)`` stores them, on both databases."""

import sqlite3
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Column, Date, Integer, MetaData, String, Table, insert, select
from sqlalchemy.exc import IntegrityError

from remit.adapters.db.types import UTCDateTime
from remit.bootstrap import Remit
from remit.service_layer.invoices import bulk_insert

_TABLE = Table(
    "bulk_insert_probe",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("day", Date),
    Column("at", UTCDateTime),
    Column("note", String(20)),
)
_ROWS: list[dict[str, Any]] = [
    {"day": date(2026, 1, 31), "at": datetime(2026, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC), "note": "a"},
    {"day": date(999, 2, 3), "at": datetime(2026, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=5))), "note": "b"},
    {"day": None, "at": datetime(2026, 7, 4, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=-7))), "note": None},
    # Values equal to earlier ones (dates and times are formatted once per distinct value): the same day, and
    # the first row's instant written in another zone.
    {
        "day": date(2026, 1, 31),
        "at": datetime(2026, 2, 1, 4, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=5))),
        "note": "d",
    },
]


def test_bulk_rows_equal_inserted_rows(app: Remit) -> None:
    _TABLE.create(app.engine)
    try:
        with app.uow() as uow:
            bulk_insert(uow, _TABLE, [{"id": i, **row} for i, row in enumerate(_ROWS)])
            uow.conn.execute(insert(_TABLE), [{"id": 10 + i, **row} for i, row in enumerate(_ROWS)])
        with app.engine.connect() as conn:
            got = {r.id: r for r in conn.execute(select(_TABLE))}
            raw = {r[0]: tuple(r[1:]) for r in conn.exec_driver_sql("SELECT id, day, at, note FROM bulk_insert_probe")}
        for i, row in enumerate(_ROWS):
            assert raw[i] == raw[10 + i]  # the very text (SQLite) or value (PostgreSQL) stored
            assert (got[i].day, got[i].at, got[i].note) == (row["day"], row["at"], row["note"])
            assert got[i].at.tzinfo is not None
    finally:
        _TABLE.drop(app.engine)


def test_a_naive_time_is_refused_as_before(app: Remit) -> None:
    _TABLE.create(app.engine)
    try:
        with pytest.raises(Exception, match="naive datetimes are not stored"), app.uow() as uow:
            bulk_insert(uow, _TABLE, [{"id": 1, "day": None, "at": datetime(2026, 1, 1), "note": None}])
    finally:
        _TABLE.drop(app.engine)


@pytest.mark.parametrize("rows", [1, 256, 1000])
def test_every_row_is_written_once_whatever_the_count(app: Remit, rows: int) -> None:
    """On SQLite rows go in multi-row statements of powers of two (1,000 = 3 x 256 + 128 + 64 + 32 + 8)."""
    _TABLE.create(app.engine)
    try:
        written = [
            {"id": i, "day": date(2026, 1, 1) + timedelta(days=i % 40), "at": None, "note": f"n{i}"}
            for i in range(rows)
        ]
        with app.uow() as uow:
            bulk_insert(uow, _TABLE, written)
        with app.engine.connect() as conn:
            got = [(r.id, r.day, r.note) for r in conn.execute(select(_TABLE).order_by(_TABLE.c.id))]
        assert got == [(r["id"], r["day"], r["note"]) for r in written]
    finally:
        _TABLE.drop(app.engine)


def test_sqlite_statements_bind_no_more_parameters_than_allowed(sqlite_app: Remit) -> None:
    app = sqlite_app
    _TABLE.create(app.engine)
    try:
        with app.uow() as uow:
            driver = uow.conn.connection.driver_connection
            assert driver is not None
            before = driver.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 9)  # two rows of four columns
            try:
                bulk_insert(uow, _TABLE, [{"id": i, "day": None, "at": None, "note": str(i)} for i in range(7)])
            finally:
                driver.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, before)
        with app.engine.connect() as conn:
            assert [r.note for r in conn.execute(select(_TABLE).order_by(_TABLE.c.id))] == [str(i) for i in range(7)]
    finally:
        _TABLE.drop(app.engine)


def test_a_duplicate_key_is_sqlalchemys_integrity_error(app: Remit) -> None:
    """The bill run retries a batch on ``IntegrityError``: the bulk write raises SQLAlchemy's, on both databases."""
    _TABLE.create(app.engine)
    try:
        with pytest.raises(IntegrityError), app.uow() as uow:
            bulk_insert(uow, _TABLE, [{"id": 1, "day": None, "at": None, "note": None}] * 2)
    finally:
        _TABLE.drop(app.engine)
