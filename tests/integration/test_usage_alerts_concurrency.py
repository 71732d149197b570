"""Evaluations of alerts and thresholds racing on PostgreSQL: each threshold fires once, each crossing invoices once."""

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.adapters.db.engine import make_engine
from remit.bootstrap import Remit
from remit.domain.clock import FixedClock
from remit.service_layer import alerts, catalog, subscriptions, usage, usage_monitor, usage_watch
from tests import builders as b

pytestmark = pytest.mark.postgres
PRICE = {
    "currency": "EUR",
    "model": "per_unit",
    "config": {"unit_price": "0.01"},
    "name": "Calls",
    "usage": {"meter": "calls"},
}


def test_concurrent_evaluations_fire_each_threshold_once_and_invoice_each_crossing_once(postgres_url):
    app = Remit(make_engine(postgres_url, pool_size=10), FixedClock(datetime(2026, 1, 1, 12, tzinfo=UTC)))
    with app.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())
    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "calls", "Calls", "sum", "n")
        catalog.create_plan(uow, "api", "API", [PRICE])
    customers = []
    for i in range(24):
        cus = b.customer(app, None)
        with app.uow() as uow:
            sub = subscriptions.create_subscription(uow, cus, "api")
            alerts.create_alert(uow, cus, "usage", ["100", "200"], meter="calls")
            alerts.set_usage_threshold(uow, sub, "2.00")
        with app.uow() as uow:
            event = {"customer_id": cus, "code": "calls", "transaction_id": f"t{i}", "properties": {"n": 250}}
            assert usage.ingest(uow, [{**event, "timestamp": "2026-01-01T11:00:00Z"}]).accepted
        customers.append(cus)
    barrier = threading.Barrier(3)
    errors: list[Exception] = []

    def run() -> None:
        try:
            barrier.wait()
            for _ in range(3):
                with app.uow() as uow:  # look again at everyone, as if usage had arrived for all
                    usage_watch.mark(uow, customers)
                usage_monitor.evaluate(app.uow, batch_size=5)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    usage_monitor.evaluate(app.uow)
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.alert_triggers)).scalar_one() == 2 * len(customers)
        fired = conn.execute(
            select(func.count()).select_from(t.events).where(t.events.c.type == "usage.alert_triggered")
        )
        assert fired.scalar_one() == 2 * len(customers)
        invoices = conn.execute(select(t.invoices.c.customer_id, t.invoices.c.total_minor)).all()
    assert sorted(invoices) == sorted((c, 250) for c in customers)
    app.engine.dispose()
