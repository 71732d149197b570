"""The monthly partitions of usage_events on PostgreSQL are made ahead of time; a month whose events already sit
in the default partition gets its partition with those events moved in, none lost and none twice; two
maintainers at once make each month once. On SQLite there is nothing to do."""

import threading
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Numeric, func, select, text

from remit.adapters.db import partitions
from remit.adapters.db import tables as t
from remit.adapters.db.engine import make_engine
from remit.adapters.db.ids import new_id

# Months no other test uses; their partitions are dropped at the end.
TODAY = date(2040, 5, 10)
MONTHS = ["usage_events_2040_05", "usage_events_2040_06", "usage_events_2040_07"]


@pytest.fixture
def engine(postgres_url):
    engine = make_engine(postgres_url)
    yield engine
    with engine.begin() as conn:
        for name in MONTHS:
            conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
        conn.execute(t.usage_events.delete().where(t.usage_events.c.customer_id == "cus_partitions"))
    engine.dispose()


def _event(at: datetime, n: int) -> dict:
    return {
        "id": new_id("uev"),
        "occurred_at": at,
        "customer_id": "cus_partitions",
        "subscription_id": None,
        "meter_code": "calls",
        "transaction_id": f"p{n}",
        "received_at": at,
        "value": Decimal(n),
        "dimension": None,
        "group_key": "[]",
        "matched": True,
        "properties": {},
    }


def _where(engine):
    with engine.connect() as conn:
        return sorted(
            conn.execute(
                text(
                    "SELECT tableoid::regclass::text, transaction_id FROM usage_events "
                    "WHERE customer_id = 'cus_partitions'"
                )
            ).all()
        )


@pytest.mark.postgres
def test_coming_months_are_made_and_events_waiting_in_the_default_partition_move_in(engine):
    with engine.begin() as conn:
        conn.execute(
            t.usage_events.insert(),
            [
                _event(datetime(2040, 5, 3, tzinfo=UTC), 1),
                _event(datetime(2040, 6, 30, 23, 59, tzinfo=UTC), 2),
                _event(datetime(2040, 7, 1, tzinfo=UTC), 3),
            ],
        )
    assert {p for p, _ in _where(engine)} == {"usage_events_default"}
    created = partitions.ensure_usage_partitions(engine, TODAY, months_ahead=2)
    assert [(c.name, c.start, c.end, c.moved) for c in created] == [
        ("usage_events_2040_05", date(2040, 5, 1), date(2040, 6, 1), 1),
        ("usage_events_2040_06", date(2040, 6, 1), date(2040, 7, 1), 1),
        ("usage_events_2040_07", date(2040, 7, 1), date(2040, 8, 1), 1),
    ]
    assert _where(engine) == [
        ("usage_events_2040_05", "p1"),
        ("usage_events_2040_06", "p2"),
        ("usage_events_2040_07", "p3"),
    ]
    with engine.connect() as conn:  # the partitioned primary key covers the new months too
        indexes = conn.execute(
            text("SELECT count(*) FROM pg_indexes WHERE tablename = ANY(:names)"), {"names": MONTHS}
        ).scalar_one()
        total = conn.execute(
            select(func.sum(t.usage_events.c.value.cast(Numeric()))).where(
                t.usage_events.c.customer_id == "cus_partitions"
            )
        ).scalar_one()
    assert indexes == 3 and total == 6
    assert partitions.ensure_usage_partitions(engine, TODAY, months_ahead=2) == []  # nothing twice


@pytest.mark.postgres
def test_two_maintainers_at_once_make_each_month_once(engine):
    results, errors = [], []

    def maintain():
        try:
            results.append(partitions.ensure_usage_partitions(engine, TODAY, months_ahead=2))
        except Exception as exc:  # pragma: no cover - what the test looks for
            errors.append(exc)

    threads = [threading.Thread(target=maintain) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(c.name for r in results for c in r) == MONTHS


def test_sqlite_has_no_partitions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert partitions.ensure_usage_partitions(engine, TODAY) == []
