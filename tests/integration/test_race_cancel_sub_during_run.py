"""A subscription canceled 'now' while a bill run is billing the customer: its final (partial) period must still
be billed by the next run, exactly as when the cancel comes after the run."""

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.service_layer import bill_run, subscriptions
from tests import builders as b

pytestmark = pytest.mark.postgres


def _setup(postgres_url):
    app, cus = b.usage_customer_on_postgres(postgres_url, datetime(2026, 3, 1, tzinfo=UTC))
    app.clock.move_to(datetime(2026, 4, 10, tzinfo=UTC))
    b.send_calls(app, cus, ("a", "2026-04-05T00:00:00Z", 100))
    bill_run.run(app.uow, datetime(2026, 4, 10, tzinfo=UTC))  # nothing due; review mark 10 April
    with app.engine.connect() as conn:
        sub = conn.execute(select(t.subscriptions.c.id).where(t.subscriptions.c.customer_id == cus)).scalar_one()
    app.clock.move_to(datetime(2026, 4, 15, 10, tzinfo=UTC))
    return app, cus, sub


def _finish(app, cus):
    app.clock.move_to(datetime(2026, 5, 1, 1, tzinfo=UTC))
    bill_run.run(app.uow, datetime(2026, 5, 1, 1, tzinfo=UTC))
    bill_run.run(app.uow, datetime(2026, 5, 2, 1, tzinfo=UTC))
    return [(ln[0], ln[1], ln[2], ln[3]) for ln in b.lines_of(app, cus)]


def test_control_cancel_after_the_run(postgres_url):
    app, cus, sub = _setup(postgres_url)
    bill_run.run(app.uow, datetime(2026, 4, 15, 10, tzinfo=UTC))
    with app.uow() as uow:
        subscriptions.cancel(uow, sub)
    lines = _finish(app, cus)
    assert [ln[3] for ln in lines if ln[0] == "usage"] == ["1.00"], lines
    app.engine.dispose()


@pytest.mark.parametrize("rep", range(1))
def test_cancel_now_while_the_run_bills_the_customer(postgres_url, monkeypatch, rep):
    app, cus, sub = _setup(postgres_url)
    locked, done = threading.Event(), threading.Event()
    errors = []
    real_load_usage = bill_run.load_usage

    def slow_load_usage(uow, batch, as_of, *args, **kwargs):
        result = real_load_usage(uow, batch, as_of, *args, **kwargs)
        locked.set()
        time.sleep(1.0)
        return result

    def cancel():
        locked.wait(10)
        try:
            with app.uow() as uow:
                subscriptions.cancel(uow, sub)
        except Exception as exc:
            errors.append(exc)
        done.set()

    monkeypatch.setattr(bill_run, "load_usage", slow_load_usage)
    th = threading.Thread(target=cancel)
    th.start()
    bill_run.run(app.uow, datetime(2026, 4, 15, 10, tzinfo=UTC))
    th.join(10)
    assert done.is_set() and not errors, errors
    monkeypatch.setattr(bill_run, "load_usage", real_load_usage)
    with app.engine.connect() as conn:
        row = conn.execute(
            select(t.subscriptions.c.ended_on, t.subscriptions.c.reviewed_from_on).where(t.subscriptions.c.id == sub)
        ).one()
    lines = _finish(app, cus)
    assert [ln[3] for ln in lines if ln[0] == "usage"] == ["1.00"], (lines, row)
    app.engine.dispose()
