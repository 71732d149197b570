"""The monthly partitions of usage_events on PostgreSQL are made ahead of time, and for the months the upkeep
missed; a month whose events already sit in the default partition gets its partition with them moved in, none
lost and none twice; a new month starts where its neighbour ends, whatever time zone the migration ran in; an
event being written to the default partition meanwhile is waited for and moved too; two maintainers at once make
each month once. On SQLite there is nothing to do.

Each test has a database of its own (the migration's partitions are what is tested)."""

import threading
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import text

from remit.adapters.db import partitions
from remit.adapters.db import tables as t
from remit.adapters.db.engine import make_engine, migrate
from remit.adapters.db.ids import new_id
from tests.conftest import PG_ADMIN_URL


@pytest.fixture
def fresh(postgres_url):
    """``make(time_zone)``: an engine on a new, migrated database whose sessions default to that time zone."""
    import psycopg

    admin = PG_ADMIN_URL.replace("+psycopg", "")
    made: list[tuple[str, object]] = []

    def make(time_zone: str = "UTC"):
        name = f"remit_parts_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
            conn.execute(f"ALTER DATABASE \"{name}\" SET TimeZone = '{time_zone}'")
        engine = make_engine(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
        migrate(engine)
        made.append((name, engine))
        return engine

    yield make
    for name, engine in made:
        engine.dispose()  # type: ignore[attr-defined]
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
        return sorted(conn.execute(text("SELECT tableoid::regclass::text, transaction_id FROM usage_events")).all())


def _range(engine, name):
    with engine.begin() as conn:
        return partitions._bounds(conn)[name]


@pytest.mark.postgres
def test_missed_and_coming_months_are_made_and_waiting_events_move_in(fresh):
    engine = fresh()
    with engine.begin() as conn:  # 2031 has no partitions yet: these land in the default one
        conn.execute(
            t.usage_events.insert(),
            [_event(datetime(2031, 1, 15, tzinfo=UTC), 1), _event(datetime(2031, 3, 31, 23, 59, tzinfo=UTC), 2)],
        )
    assert {p for p, _ in _where(engine)} == {"usage_events_default"}
    created = partitions.ensure_usage_partitions(engine, date(2031, 2, 10), months_ahead=1)
    assert [(c.name, c.start, c.end, c.moved) for c in created] == [
        ("usage_events_2031_01", date(2031, 1, 1), date(2031, 2, 1), 1),  # missed by the upkeep
        ("usage_events_2031_02", date(2031, 2, 1), date(2031, 3, 1), 0),
        ("usage_events_2031_03", date(2031, 3, 1), date(2031, 4, 1), 1),
    ]
    assert _where(engine) == [("usage_events_2031_01", "p1"), ("usage_events_2031_03", "p2")]
    with engine.connect() as conn:  # the partitioned primary key covers the new months too
        indexes = conn.execute(
            text("SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'usage_events_2031_%'")
        ).scalar_one()
    assert indexes == 3
    assert partitions.ensure_usage_partitions(engine, date(2031, 2, 10), months_ahead=1) == []  # nothing twice


@pytest.mark.postgres
def test_months_of_imported_history_get_partitions_and_their_events_move_in(fresh):
    """Events older than the migration's first month (history imported from a legacy system) wait in the default
    partition until the upkeep makes their months, after the months to come; the month before the migration's
    first ends where that one begins."""
    engine = fresh()
    history = [datetime(2023, 5, 2, tzinfo=UTC), datetime(2023, 5, 31, 23, 59, tzinfo=UTC)]
    history.append(datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC))
    with engine.begin() as conn:
        conn.execute(
            t.usage_events.insert(),
            [_event(at, i) for i, at in enumerate(history)] + [_event(datetime(2031, 1, 15, tzinfo=UTC), 9)],
        )
    assert {p for p, _ in _where(engine)} == {"usage_events_default"}

    created = partitions.ensure_usage_partitions(engine, date(2031, 1, 10), months_ahead=0)

    assert [(c.name, c.moved) for c in created] == [
        ("usage_events_2031_01", 1),
        ("usage_events_2023_05", 2),
        ("usage_events_2024_12", 1),
    ]
    assert _where(engine) == [
        ("usage_events_2023_05", "p0"),
        ("usage_events_2023_05", "p1"),
        ("usage_events_2024_12", "p2"),
        ("usage_events_2031_01", "p9"),
    ]
    assert _range(engine, "usage_events_2024_12") == (
        datetime(2024, 12, 1, tzinfo=UTC),
        _range(engine, "usage_events_2025_01")[0],
    )
    assert partitions.ensure_usage_partitions(engine, date(2031, 1, 10), months_ahead=0) == []


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("time_zone", "starts"),
    [
        ("America/New_York", datetime(2031, 1, 1, 5, tzinfo=UTC)),  # would overlap 2030-12 if it began at 00:00
        ("Asia/Tokyo", datetime(2030, 12, 31, 15, tzinfo=UTC)),  # would leave a 9-hour gap
    ],
)
def test_a_new_month_starts_where_the_migrations_last_month_ends(fresh, time_zone, starts):
    """Databases migrated before the migration's bounds said UTC have their months in the server's time zone:
    December 2030 is made again here as they have it (its end, ``'2031-01-01'``, read in that zone)."""
    engine = fresh(time_zone)
    assert _range(engine, "usage_events_2030_11")[1] == datetime(2030, 12, 1, tzinfo=UTC)  # migrated today: UTC
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE usage_events_2030_12"))
        conn.execute(
            text(
                "CREATE TABLE usage_events_2030_12 PARTITION OF usage_events "
                "FOR VALUES FROM ('2030-12-15') TO ('2031-01-01')"
            )
        )
    assert _range(engine, "usage_events_2030_12")[1] == starts
    created = partitions.ensure_usage_partitions(engine, date(2031, 1, 10), months_ahead=1)
    assert [c.name for c in created] == ["usage_events_2031_01", "usage_events_2031_02"]
    assert _range(engine, "usage_events_2031_01") == (starts, datetime(2031, 2, 1, tzinfo=UTC))


@pytest.mark.postgres
def test_an_event_being_written_to_the_default_partition_is_waited_for_and_moved(fresh):
    engine = fresh()
    writer = engine.connect()
    writer.begin()
    writer.execute(t.usage_events.insert(), [_event(datetime(2031, 1, 5, tzinfo=UTC), 1)])  # not committed yet
    outcome: dict = {}

    def maintain():
        try:
            outcome["created"] = partitions.ensure_usage_partitions(engine, date(2031, 1, 10), months_ahead=0)
        except Exception as exc:  # what the test looks for
            outcome["error"] = exc

    thread = threading.Thread(target=maintain)
    thread.start()
    time.sleep(0.5)
    writer.commit()
    writer.close()
    thread.join(30)
    assert "error" not in outcome, outcome
    assert [(c.name, c.moved) for c in outcome["created"]] == [("usage_events_2031_01", 1)]
    assert _where(engine) == [("usage_events_2031_01", "p1")]


@pytest.mark.postgres
def test_two_maintainers_at_once_make_each_month_once(fresh):
    engine = fresh()
    results, errors = [], []

    def maintain():
        try:
            results.append(partitions.ensure_usage_partitions(engine, date(2031, 1, 10), months_ahead=2))
        except Exception as exc:  # what the test looks for
            errors.append(exc)

    threads = [threading.Thread(target=maintain) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(c.name for r in results for c in r) == [
        "usage_events_2031_01",
        "usage_events_2031_02",
        "usage_events_2031_03",
    ]


def test_sqlite_has_no_partitions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert partitions.ensure_usage_partitions(engine, date(2031, 1, 10)) == []


@pytest.mark.postgres
def test_a_default_partition_in_long_use_makes_the_upkeep_give_up_soon_and_try_again(fresh):
    engine = fresh()
    reader = engine.connect()
    reader.begin()
    reader.execute(text("SELECT count(*) FROM usage_events_default"))  # holds its lock until the end
    started = time.monotonic()
    with pytest.raises(partitions.PartitionsBusy) as exc:
        partitions.ensure_usage_partitions(engine, date(2031, 1, 10), months_ahead=0)
    assert time.monotonic() - started < 10 and exc.value.code == "partitions_busy"
    reader.rollback()
    reader.close()
    assert [c.name for c in partitions.ensure_usage_partitions(engine, date(2031, 1, 10), months_ahead=0)] == [
        "usage_events_2031_01"
    ]


@pytest.mark.postgres
def test_db_partitions_makes_every_month_of_a_long_history_at_once(fresh, monkeypatch):
    """`remit db partitions` after a backfill gives every month of history its partition, even more months than
    one round of the upkeep makes (MAX_MONTHS, made smaller here)."""
    from typer.testing import CliRunner

    from remit.entrypoints.cli.main import app

    engine = fresh()
    months = [partitions.Month(2001, 1).plus(i) for i in range(30)]
    with engine.begin() as conn:
        conn.execute(
            t.usage_events.insert(),
            [_event(datetime(m.year, m.month, 15, tzinfo=UTC), i) for i, m in enumerate(months)],
        )
    monkeypatch.setattr(partitions, "MAX_MONTHS", 20)
    monkeypatch.setenv("REMIT_DATABASE_URL", engine.url.render_as_string(hide_password=False))

    result = CliRunner().invoke(app, ["db", "partitions", "--months-ahead", "0", "--json"])

    assert result.exit_code == 0, result.output
    assert {p for p, _ in _where(engine)} == {m.name for m in months}  # none left in the default partition
