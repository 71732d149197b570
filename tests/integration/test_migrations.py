"""The Alembic migrations build exactly the schema the code declares, on both databases."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from remit.adapters.db.engine import include_object_for, make_engine, migrate, needs_migration
from remit.adapters.db.tables import metadata
from remit.bootstrap import Settings, bootstrap


def test_migrated_schema_matches_the_tables(app):
    with app.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include_object_for(conn.dialect.name)})
        diff = compare_metadata(context, metadata)
    assert diff == []
    assert not needs_migration(app.engine)


def test_first_use_creates_the_schema_and_a_second_migrate_is_a_no_op(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    remit = bootstrap(Settings(database_url=url))
    assert not needs_migration(remit.engine)
    migrate(make_engine(url))
    with remit.engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert mode == "wal"


def test_the_usage_events_key_is_the_index_aggregation_reads(app):
    """Migration 0009: one B-tree per event written, and still a covering one on PostgreSQL."""
    key = inspect(app.engine).get_pk_constraint("usage_events")
    assert key["constrained_columns"] == ["customer_id", "meter_code", "occurred_at", "id"]
    with app.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            definitions = (
                conn.execute(text("SELECT indexdef FROM pg_indexes WHERE tablename = 'usage_events'")).scalars().all()
            )
            assert len(definitions) == 1
            assert "INCLUDE (matched, group_key, value, dimension, transaction_id)" in definitions[0]
        else:
            names = [i["name"] for i in inspect(conn).get_indexes("usage_events")]
            assert names == ["ix_usage_events_customer_meter_time_all"]


def test_0016_repairs_whole_second_times_imported_on_sqlite_and_their_cancellations(tmp_path):
    """Before 0016 the import wrote ``2026-03-03 00:00:00`` (not ``...00:00:00.000000``), and a cancellation of
    such an event matched nothing: the event went on counting. The migration makes both right."""
    from alembic import command

    from remit.adapters.db.engine import alembic_config

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    command.upgrade(alembic_config(engine), "0015")
    import sqlite3

    raw = sqlite3.connect(tmp_path / "old.db")  # foreign keys are not enforced here: no customer needed
    with raw:
        raw.execute(
            "INSERT INTO usage_events (id, occurred_at, customer_id, meter_code, transaction_id, received_at, "
            "group_key, matched, properties) VALUES "
            "('uev_1', '2026-03-03 00:00:00', 'cus_1', 'calls', 'a', '2026-03-03 00:00:05', '[]', 1, '{}'), "
            "('uev_2', '2026-03-03 00:00:00.250000', 'cus_1', 'calls', 'b', '2026-03-03 00:00:05.5', '[]', 1, '{}')"
        )
        raw.execute(
            "INSERT INTO usage_event_cancellations (customer_id, transaction_id, event_id, meter_code, occurred_at, "
            "canceled_at) VALUES ('cus_1', 'a', 'uev_1', 'calls', '2026-03-03 00:00:00.000000', "
            "'2026-03-04 00:00:00.000000')"
        )
    raw.close()
    command.upgrade(alembic_config(engine), "head")
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT transaction_id, occurred_at, matched FROM usage_events ORDER BY transaction_id"
        ).all()
    assert [tuple(r) for r in rows] == [
        ("a", "2026-03-03 00:00:00.000000", 0),
        ("b", "2026-03-03 00:00:00.250000", 1),
    ]
    engine.dispose()


def _usage_customer(app):
    from remit.service_layer import catalog, subscriptions, usage
    from tests import builders as b

    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "m", "m", "sum", "v")
        catalog.create_plan(
            uow,
            "p",
            "P",
            [{"currency": "EUR", "model": "per_unit", "config": {"unit_price": "1"}, "usage": {"meter": "m"}}],
        )
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "p", anchor="calendar")
    return clock_id, cus, sub


def _send(app, cus, at, v, txn):
    from remit.service_layer import usage

    event = {
        "customer_id": cus,
        "code": "m",
        "transaction_id": txn,
        "timestamp": at.isoformat(),
        "properties": {"v": v},
    }
    with app.uow() as uow:
        assert not usage.ingest(uow, [event]).rejected


def _as_the_old_import_wrote_it(app, txn):
    with app.engine.begin() as conn:
        conn.execute(
            text("UPDATE usage_events SET occurred_at = substr(occurred_at, 1, 19) WHERE transaction_id = :x"),
            {"x": txn},
        )


def _run_0016_again(app):
    from alembic import command

    from remit.adapters.db.engine import alembic_config

    command.stamp(alembic_config(app.engine), "0015")
    command.upgrade(alembic_config(app.engine), "0016")
    command.stamp(alembic_config(app.engine), "head")


@pytest.mark.parametrize("app", ["sqlite"], indirect=True)
def test_0016_rebills_the_period_an_event_at_a_periods_first_second_was_billed_in(app):
    """Imported at exactly 1 April 00:00:00 with the old text, the event sorted into March and was billed there;
    repaired, it is April's: March is credited, April bills it, once."""
    from remit.service_layer import clocks
    from tests import builders as b

    clock_id, cus, _ = _usage_customer(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 31, 23, 58))
    _send(app, cus, b.utc(2026, 4, 1), 7, "edge")
    _as_the_old_import_wrote_it(app, "edge")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    assert b.lines_of(app, cus) == [("usage", "2026-03-01", "2026-04-01", "7.00")]
    _run_0016_again(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 2))
    assert b.lines_of(app, cus) == [
        ("usage", "2026-03-01", "2026-04-01", "7.00"),
        ("usage_correction", "2026-03-01", "2026-04-01", "-7.00"),
        ("usage", "2026-04-01", "2026-05-01", "7.00"),
    ]


@pytest.mark.parametrize("app", ["sqlite"], indirect=True)
def test_0016_credits_an_event_whose_cancellation_had_matched_nothing(app):
    from remit.service_layer import clocks
    from tests import builders as b

    clock_id, cus, sub = _usage_customer(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 30, 12))
    _send(app, cus, b.utc(2026, 3, 30), 5, "gone")
    _send(app, cus, b.utc(2026, 3, 30, 1), 1, "stay")
    _as_the_old_import_wrote_it(app, "gone")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1, 12))
    with app.engine.begin() as conn:  # what a cancellation did before 0016: recorded, the event still counting
        event_id = conn.execute(text("SELECT id FROM usage_events WHERE transaction_id = 'gone'")).scalar_one()
        conn.execute(
            text(
                "INSERT INTO usage_event_cancellations (customer_id, transaction_id, event_id, meter_code, "
                "occurred_at, canceled_at) VALUES (:c, 'gone', :e, 'm', '2026-03-30 00:00:00.000000', "
                "'2026-04-02 00:00:00.000000')"
            ),
            {"c": cus, "e": event_id},
        )
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 3))
    _run_0016_again(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 2))
    assert b.lines_of(app, cus)[:2] == [
        ("usage", "2026-03-01", "2026-04-01", "6.00"),
        ("usage_correction", "2026-03-01", "2026-04-01", "-5.00"),
    ]
