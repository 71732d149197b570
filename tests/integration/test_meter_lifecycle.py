"""A meter is renamed, deactivated and reactivated. A deactivated meter refuses new events (on the API's path and
the import's) and new prices; the events it holds are still billed. Another process sees a deactivation within
the meters' freshness time. Each change is recorded as an event; repeating one changes nothing."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.adapters.db.engine import make_engine
from remit.bootstrap import Remit
from remit.domain.errors import NotFound, ValidationError
from remit.service_layer import catalog, clocks, meters, subscriptions, usage
from remit.service_layer.usage_import import import_events
from tests import builders as b

START = datetime(2026, 3, 1, tzinfo=UTC)


def _event(cus, txn, at):
    return {
        "customer_id": cus,
        "code": "calls",
        "transaction_id": txn,
        "timestamp": at.isoformat(),
        "properties": {"n": 10},
    }


def _ingest(app, *events):
    with app.uow() as uow:
        return usage.ingest(uow, list(events))


def _types(app):
    with app.engine.connect() as conn:
        query = select(t.events.c.type).where(t.events.c.type.like("meter.%")).order_by(t.events.c.id)
        return [r for (r,) in conn.execute(query)]


def test_a_deactivated_meter_refuses_new_events_and_prices_and_still_bills_what_it_has(app):
    clock_id = b.clock(app, START)
    b.seller(app)
    b.usage_plan(app)  # meter calls, plan api at 0.01 a call
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "api", anchor="calendar")
    clocks.advance(app.uow, clock_id, START + timedelta(days=10))
    assert len(_ingest(app, _event(cus, "a", START + timedelta(days=2))).accepted) == 1
    with app.uow() as uow:
        row = meters.deactivate_meter(uow, "calls")
    assert row["deactivated_at"] == app.clock.now()  # the meter is everyone's: the real clock, not the customer's
    refused = _ingest(app, _event(cus, "b", START + timedelta(days=3)))
    assert [(r["error"]["code"], r["error"]["field"]) for r in refused.rejected] == [("meter_deactivated", "code")]
    report = import_events(app.engine, app.clock, [(1, _event(cus, "c", START + timedelta(days=3)))])
    assert [r["code"] for r in report.rejected_events] == ["meter_deactivated"]
    with app.uow() as uow, pytest.raises(ValidationError) as exc:
        catalog.create_plan(
            uow,
            "api2",
            "API 2",
            [{"currency": "EUR", "model": "per_unit", "config": {"unit_price": "1"}, "usage": {"meter": "calls"}}],
        )
    assert (exc.value.code, exc.value.field) == ("meter_deactivated", "prices[0].usage.meter")
    clocks.advance(app.uow, clock_id, datetime(2026, 4, 1, tzinfo=UTC))
    assert b.lines_of(app, cus) == [("usage", "2026-03-01", "2026-04-01", "0.10")]  # the 10 calls it had
    with app.uow() as uow:
        meters.deactivate_meter(uow, "calls")  # again: nothing more
        meters.reactivate_meter(uow, "calls")
    assert len(_ingest(app, _event(cus, "d", datetime(2026, 4, 1, tzinfo=UTC))).accepted) == 1
    assert _types(app) == ["meter.deactivated", "meter.reactivated"]


def test_a_meter_is_renamed_never_reshaped(app):
    b.seller(app)
    b.usage_plan(app)
    with app.uow() as uow:
        renamed = meters.rename_meter(uow, "calls", "API calls")
        assert meters.rename_meter(uow, "calls", "API calls")["name"] == "API calls"  # the same: no event
    assert (renamed["name"], renamed["aggregation"], renamed["field"]) == ("API calls", "sum", "n")
    for bad in ("", " ", "x" * 201, None):
        with app.uow() as uow, pytest.raises(ValidationError) as exc:
            meters.rename_meter(uow, "calls", bad)
        assert (exc.value.code, exc.value.field) == ("invalid_name", "name")
    with app.uow() as uow, pytest.raises(NotFound):
        meters.deactivate_meter(uow, "nope")
    assert _types(app) == ["meter.updated"]


def test_another_process_sees_a_deactivation_once_its_meters_are_stale(app, monkeypatch):
    """Two engines on one database stand for two processes: the second refuses the meter's events as soon as its
    cached meters are older than METERS_FRESH_S."""
    b.seller(app)
    b.usage_plan(app)
    cus = b.customer(app, None)
    other = Remit(make_engine(app.engine.url.render_as_string(hide_password=False)), app.clock)
    now = [1000.0]
    monkeypatch.setattr(usage.time, "monotonic", lambda: now[0])
    at = datetime(2026, 1, 1, tzinfo=UTC) - timedelta(minutes=1)
    assert len(_ingest(other, _event(cus, "a", at)).accepted) == 1  # the other process reads the meters
    with app.uow() as uow:
        meters.deactivate_meter(uow, "calls")
    assert len(_ingest(other, _event(cus, "b", at)).accepted) == 1  # its meters are still fresh
    now[0] += usage.METERS_FRESH_S + 0.1
    assert [r["error"]["code"] for r in _ingest(other, _event(cus, "c", at)).rejected] == ["meter_deactivated"]
    assert [r["error"]["code"] for r in _ingest(app, _event(cus, "d", at)).rejected] == ["meter_deactivated"]
    other.engine.dispose()
