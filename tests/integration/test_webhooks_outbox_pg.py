"""PostgreSQL: the webhook fan-out loses nothing while many transactions commit their events out of id order."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text

from remit.adapters.db import tables as t
from remit.adapters.db.engine import make_engine
from remit.bootstrap import Remit
from remit.domain.clock import FixedClock
from remit.service_layer import webhooks

pytestmark = pytest.mark.postgres
WRITERS, EVENTS_EACH = 5, 60


def test_concurrent_writers_and_fan_outs_pass_every_committed_event_once(postgres_url):
    app = Remit(make_engine(postgres_url, pool_size=12), FixedClock(datetime(2026, 1, 1, tzinfo=UTC)))
    with app.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())
    with app.uow() as uow:
        webhooks.create_endpoint(uow, "http://127.0.0.1:9/unused", ["*"])
    done = threading.Event()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        rng = random.Random(n)
        try:
            for i in range(EVENTS_EACH):
                with app.uow() as uow:
                    uow.emit("meter.updated", "thing", f"obj_{n}", {"i": i})
                    uow._flush_events()  # draw the id now, commit a little later: out-of-order commits
                    threading.Event().wait(rng.random() * 0.005)
                if rng.random() < 0.1:  # an id drawn by a transaction that then rolls back: a gap for ever
                    with pytest.raises(RuntimeError), app.uow() as uow:
                        uow.emit("meter.updated", "thing", "ghost", {})
                        uow._flush_events()
                        raise RuntimeError
        except BaseException as exc:  # reported below
            errors.append(exc)

    def fanner() -> None:
        try:
            while not done.is_set():
                webhooks.fan_out(app.engine, app.clock, batch=13, settle_s=0.5)
        except BaseException as exc:  # reported below
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    fanners = [threading.Thread(target=fanner) for _ in range(2)]
    for thread in writers + fanners:
        thread.start()
    for thread in writers:
        thread.join(120)
    done.set()
    for thread in fanners:
        thread.join(30)
    while webhooks.fan_out(app.engine, app.clock):
        pass
    assert not errors
    d = t.webhook_deliveries.c
    with app.engine.connect() as conn:
        events = conn.execute(select(func.count()).select_from(t.events)).scalar()
        made, distinct = conn.execute(select(func.count(), func.count(d.event_id.distinct()))).one()
        ghosts = conn.execute(select(func.count()).where(d.object_id == "ghost")).scalar()
    assert events == WRITERS * EVENTS_EACH
    assert made == distinct == events and ghosts == 0
    app.engine.dispose()


def test_a_transaction_is_listed_in_snapshots_before_it_draws_an_event_id(postgres_url):
    """The fan-out's gap rule needs every transaction holding an event id to be listed in snapshots. A plain
    sequence draw does not give the transaction a transaction id; the events' id default does, before drawing."""
    engine = make_engine(postgres_url)
    assigned = text("SELECT pg_current_xact_id_if_assigned()")
    with engine.connect() as conn:
        default = conn.execute(
            text(
                "SELECT column_default FROM information_schema.columns WHERE table_name = 'events' AND column_name = 'id'"
            )
        ).scalar()
    assert default == "remit_next_event_id()"
    # What a plain sequence default left open: a draw that PostgreSQL does not write to its log (it logs one draw
    # in 32, and the first after a checkpoint, and only those assign a transaction id) leaves the transaction
    # without one. Two draws in a row cannot both be logged, short of a checkpoint between them.
    left_open = []
    for _ in range(3):
        with engine.begin() as conn:
            conn.execute(text("SELECT nextval('events_id_seq')"))
            left_open.append(conn.execute(assigned).scalar() is None)
    assert any(left_open)
    with engine.begin() as conn:
        conn.execute(text("SELECT remit_next_event_id()"))
        assert conn.execute(assigned).scalar() is not None
    engine.dispose()


def _fresh(postgres_url: str) -> Remit:
    app = Remit(make_engine(postgres_url, pool_size=6), FixedClock(datetime(2026, 1, 1, tzinfo=UTC)))
    with app.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())
    with app.uow() as uow:
        webhooks.create_endpoint(uow, "http://127.0.0.1:9/unused", ["*"])
    webhooks.fan_out(app.engine, app.clock)  # the cursor, at the newest event
    return app


def _delivered(app: Remit) -> set[str]:
    d = t.webhook_deliveries.c
    with app.engine.connect() as conn:
        return set(conn.execute(select(d.object_id)).scalars())


def _event(app: Remit, object_id: str, rolled_back: bool = False) -> None:
    try:
        with app.uow() as uow:
            uow.emit("meter.updated", "thing", object_id, {})
            uow._flush_events()
            if rolled_back:
                raise RuntimeError
    except RuntimeError:
        pass


def test_a_long_transaction_in_another_database_does_not_hold_back_the_fan_out(postgres_url):
    """The transactions that may still hold an event id are this database's: a long one elsewhere on the server
    (a report, pg_dump) used to hold every gap, so every event after a rolled-back one, until it ended."""
    app = _fresh(postgres_url)
    other = make_engine(postgres_url.rsplit("/", 1)[0] + "/postgres")
    with other.connect() as conn:
        conn.execute(text("SELECT pg_current_xact_id()"))  # another database's transaction holding an id...
        _event(app, "before")  # ...then this database's, which finish after it started
        _event(app, "ghost", rolled_back=True)  # a gap for ever
        _event(app, "after")
        webhooks.fan_out(app.engine, app.clock, settle_s=0.3)
        assert _delivered(app) == {"before", "after"}
        conn.rollback()
    other.dispose()
    app.engine.dispose()


def test_an_id_held_by_a_transaction_above_every_finished_one_waits_for_it(postgres_url):
    """A running transaction whose transaction id is above every finished one is not in a snapshot's list of
    running ones (it is at or past the snapshot's xmax): the gap rule read that list, passed the id it held, and
    its event, committed later, was never delivered."""
    app = _fresh(postgres_url)
    early, late = app.engine.connect(), app.engine.connect()
    early.execute(text("SELECT pg_current_xact_id()"))  # takes its transaction id first...
    late.execute(text("SELECT remit_next_event_id()"))  # ...this one its own, then the lower event id...
    early.execute(  # ...then the first writes a higher event id and commits: the only finished transaction
        t.events.insert().values(
            public_id="evt_early",
            type="thing.updated",
            object_type="thing",
            object_id="early",
            data={},
            created_at=app.clock.now(),
        )
    )
    early.commit()
    webhooks.fan_out(app.engine, app.clock, settle_s=0.3)
    assert "early" not in _delivered(app)  # it waits behind the id the running transaction holds
    late.rollback()  # that id is never used: now the gap passes
    webhooks.fan_out(app.engine, app.clock, settle_s=0.3)
    assert _delivered(app) == {"early"}
    early.close(), late.close()
    app.engine.dispose()
