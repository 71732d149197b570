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
                    uow.emit("thing.updated", "thing", f"obj_{n}", {"i": i})
                    uow._flush_events()  # draw the id now, commit a little later: out-of-order commits
                    threading.Event().wait(rng.random() * 0.005)
                if rng.random() < 0.1:  # an id drawn by a transaction that then rolls back: a gap for ever
                    with pytest.raises(RuntimeError), app.uow() as uow:
                        uow.emit("thing.updated", "thing", "ghost", {})
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
