"""The worker loop evaluates real customers' alerts and thresholds within a round of their usage arriving."""

from datetime import UTC, datetime

import httpx
from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.adapters.jobs.webhook_worker import tick
from remit.service_layer import alerts, catalog, subscriptions, usage
from tests import builders as b

PRICE = {"currency": "EUR", "model": "per_unit", "config": {"unit_price": "0.10"}, "usage": {"meter": "calls"}}


def test_a_worker_round_fires_alerts_and_bills_thresholds_of_real_customers(app):
    app.clock.move_to(datetime(2026, 1, 1, 12, tzinfo=UTC))
    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "calls", "Calls", "sum", "n")
        catalog.create_plan(uow, "api", "API", [PRICE])
    cus = b.customer(app, None)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "api")
        alerts.create_alert(uow, cus, "spend", ["1.00"])
        alerts.set_usage_threshold(uow, sub, "3.00")
    with httpx.Client() as client:
        tick(app, client)  # the new watch is looked at once: nothing to report yet
        event = {"customer_id": cus, "code": "calls", "transaction_id": "a", "timestamp": "2026-01-01T11:00:00Z"}
        with app.uow() as uow:
            usage.ingest(uow, [{**event, "properties": {"n": 35}}])
        assert tick(app, client) is True
        assert tick(app, client) is False  # nothing new: one cheap query
    with app.uow() as uow:
        types = list(uow.conn.execute(select(t.events.c.type).order_by(t.events.c.id)).scalars())
        reasons = list(uow.conn.execute(select(t.invoices.c.billing_reason)).scalars())
    assert types.count("usage.alert_triggered") == 1 and types.count("usage.threshold_reached") == 1
    assert reasons == ["threshold"]
