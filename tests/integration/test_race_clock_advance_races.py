"""Test-clock advances racing: with a real bill run (both bill, numbers gapless, nothing twice), and two advances
of the same clock at once (one must be refused test_clock_busy; the clock ends where the other said)."""

import contextlib
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.service_layer import bill_run, clocks
from tests import builders as b

pytestmark = pytest.mark.postgres


def _app(postgres_url):
    app = b.emptied_postgres(postgres_url, datetime(2026, 3, 1, tzinfo=UTC), pool_size=10)
    b.plan(app, "basic", "10.00")
    return app


@pytest.mark.parametrize("rep", range(1))
def test_advance_and_real_run_at_once(postgres_url, rep):
    app = _app(postgres_url)
    b.subscribed_customers(app, 40, "basic")
    clock_id = b.clock(app, datetime(2026, 3, 1, tzinfo=UTC))
    b.subscribed_customers(app, 20, "basic", clock_id, anchor="calendar")
    results, errors = b.at_once(
        lambda: bill_run.run(app.uow, datetime(2026, 3, 1, 12, tzinfo=UTC), batch_size=3),
        lambda: clocks.advance(app.uow, clock_id, datetime(2026, 6, 1, 12, tzinfo=UTC)),
    )
    assert errors == []
    with app.engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(t.invoices)).scalar_one()
        numbers = sorted(conn.execute(select(t.invoices.c.number)).scalars())
        dup = conn.execute(
            select(t.invoice_lines.c.subscription_id, t.invoice_lines.c.period_start_on, func.count())
            .group_by(t.invoice_lines.c.subscription_id, t.invoice_lines.c.period_start_on)
            .having(func.count() > 1)
        ).all()
    assert n == 40 + 20 * 4
    assert numbers == [f"INV-2026-{i:06d}" for i in range(1, n + 1)]
    assert dup == []
    app.engine.dispose()


@pytest.mark.parametrize("rep", range(1))
def test_two_advances_of_one_clock_at_once(postgres_url, rep):
    app = _app(postgres_url)
    clock_id = b.clock(app, datetime(2026, 3, 1, tzinfo=UTC))
    b.subscribed_customers(app, 5, "basic", clock_id, anchor="calendar")
    results, errors = b.at_once(
        lambda: clocks.advance(app.uow, clock_id, datetime(2026, 9, 1, 12, tzinfo=UTC)),
        lambda: clocks.advance(app.uow, clock_id, datetime(2026, 4, 1, 12, tzinfo=UTC)),
    )
    with app.engine.connect() as conn:
        frozen, status = conn.execute(
            select(t.test_clocks.c.frozen_at, t.test_clocks.c.status).where(t.test_clocks.c.id == clock_id)
        ).one()
    busy = [e for e in errors if getattr(e, "code", None) == "test_clock_busy"]
    assert len(results) == 1 and len(busy) == 1, (results, errors, frozen)
    assert frozen == results[0]["frozen_at"] and status == "ready"
    app.engine.dispose()


@pytest.mark.parametrize("rep", range(1))
def test_two_advances_that_read_the_clock_ready_together_run_once(postgres_url, monkeypatch, rep):
    import threading

    app = _app(postgres_url)
    clock_id = b.clock(app, datetime(2026, 3, 1, tzinfo=UTC))
    b.subscribed_customers(app, 5, "basic", clock_id, anchor="calendar")
    both_read = threading.Barrier(2, timeout=5)
    real = clocks.get_test_clock

    def slow(uow, cid):
        row = real(uow, cid)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait()  # both requests have read the clock (ready) before either marks it advancing
        return row

    monkeypatch.setattr(clocks, "get_test_clock", slow)
    results, errors = b.at_once(
        lambda: clocks.advance(app.uow, clock_id, datetime(2026, 9, 1, 12, tzinfo=UTC)),
        lambda: clocks.advance(app.uow, clock_id, datetime(2026, 4, 1, 12, tzinfo=UTC)),
    )
    with app.engine.connect() as conn:
        frozen, status = conn.execute(
            select(t.test_clocks.c.frozen_at, t.test_clocks.c.status).where(t.test_clocks.c.id == clock_id)
        ).one()
        n = conn.execute(select(func.count()).select_from(t.invoices)).scalar_one()
    busy = [e for e in errors if getattr(e, "code", None) == "test_clock_busy"]
    assert len(results) == 1 and len(busy) == 1, (results, errors, frozen, n)
    app.engine.dispose()
