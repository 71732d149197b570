"""Canceling usage events while others act on the same customer, on PostgreSQL where they really run at once: the
same cancellation sent twice at the same moment cancels once, and a cancellation that arrives while the bill run
is billing the event's period waits for it and is then credited by the next run, never lost."""

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.service_layer import bill_run, usage, usage_cancellation
from tests import builders as b

pytestmark = pytest.mark.postgres


def _app(postgres_url):
    app, cus = b.usage_customer_on_postgres(postgres_url, datetime(2026, 3, 1, tzinfo=UTC))
    app.clock.move_to(datetime(2026, 3, 31, tzinfo=UTC))
    events = [
        {"customer_id": cus, "code": "calls", "transaction_id": txn, "timestamp": at, "properties": {"n": n}}
        for txn, at, n in (("kept", "2026-03-10T00:00:00Z", 100), ("mistake", "2026-03-30T00:00:00Z", 50))
    ]
    with app.uow() as uow:
        assert len(usage.ingest(uow, events).accepted) == 2
    return app, cus


def _cancel(app, cus):
    with app.uow() as uow:
        return usage_cancellation.cancel_events(uow, [{"customer_id": cus, "transaction_id": "mistake"}])


def test_the_same_cancellation_twice_at_once_cancels_once(postgres_url):
    app, cus = _app(postgres_url)
    holding, outcomes = threading.Event(), {}

    def first():
        with app.uow() as uow:
            outcomes["first"] = usage_cancellation.cancel_events(
                uow, [{"customer_id": cus, "transaction_id": "mistake"}]
            )
            holding.set()
            time.sleep(0.5)  # the second request arrives while this one has not committed

    def second():
        holding.wait(10)
        outcomes["second"] = _cancel(app, cus)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(outcomes["first"].canceled) == 1
    assert (outcomes["second"].canceled, len(outcomes["second"].already_canceled)) == ([], 1)
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.usage_event_cancellations)).scalar_one() == 1
        kinds = conn.execute(select(t.events.c.type).where(t.events.c.type == "usage.events_canceled")).all()
    assert len(kinds) == 1
    app.engine.dispose()


def test_a_cancellation_during_the_run_that_bills_its_period_is_credited_by_the_next_run(postgres_url, monkeypatch):
    app, cus = _app(postgres_url)
    bill_run.run(app.uow, datetime(2026, 3, 31, tzinfo=UTC))  # nothing due yet; the review mark is set
    app.clock.move_to(datetime(2026, 4, 1, 0, 5, tzinfo=UTC))
    loaded, done, outcome = threading.Event(), threading.Event(), {}
    real_load_usage = bill_run.load_usage

    def slow_load_usage(uow, batch, as_of, *args, **kwargs):
        result = real_load_usage(uow, batch, as_of, *args, **kwargs)
        loaded.set()  # March's usage is read, the customer locked: the cancellation arrives now
        time.sleep(1.0)
        return result

    def cancel():
        loaded.wait(10)
        outcome["result"] = _cancel(app, cus)
        done.set()

    monkeypatch.setattr(bill_run, "load_usage", slow_load_usage)
    thread = threading.Thread(target=cancel)
    thread.start()
    bill_run.run(app.uow, datetime(2026, 4, 1, 0, 5, tzinfo=UTC))
    thread.join(10)
    assert done.is_set() and len(outcome["result"].canceled) == 1
    monkeypatch.setattr(bill_run, "load_usage", real_load_usage)
    assert [(ln[0], ln[3]) for ln in b.lines_of(app, cus)] == [("usage", "1.50")]  # read before the cancellation
    bill_run.run(app.uow, datetime(2026, 4, 1, 0, 10, tzinfo=UTC))
    assert [(ln[0], ln[3]) for ln in b.lines_of(app, cus)] == [("usage", "1.50"), ("usage_correction", "-0.50")]
    bill_run.run(app.uow, datetime(2026, 4, 1, 0, 15, tzinfo=UTC))
    assert len(b.lines_of(app, cus)) == 2
    app.engine.dispose()
