"""Which periods late usage (and its cancellation) may still reach, on both databases: the current one, and an
earlier one only while no bill run has billed it; a period a run billed is closed beyond the grace period, even
after a change or a late event moved the subscription's review mark back into it."""

from datetime import UTC, datetime

from remit.domain.clock import FixedClock
from remit.service_layer import bill_run, catalog, subscriptions, usage, usage_cancellation
from tests import builders as b


def _setup(app, interval="month"):
    assert isinstance(app.clock, FixedClock)
    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "calls", "Calls", "sum", "n")
        fee = {"currency": "EUR", "model": "flat", "config": {"amount": "10.00"}, "interval": interval}
        calls = {"currency": "EUR", "model": "per_unit", "config": {"unit_price": "1"}, "usage": {"meter": "calls"}}
        catalog.create_plan(uow, "api", "API", [fee, {**calls, "interval": interval}])
    cus = b.customer(app, None)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "api", anchor="calendar")
    return cus, sub


def _send(app, cus, txn, at, n="1"):
    event = {
        "customer_id": cus,
        "code": "calls",
        "transaction_id": txn,
        "timestamp": at.isoformat(),
        "properties": {"n": n},
    }
    with app.uow() as uow:
        result = usage.ingest(uow, [event])
    return result.rejected[0]["error"]["code"] if result.rejected else "accepted"


def _run(app, at):
    app.clock.move_to(at)
    return bill_run.run(app.uow, at)


def test_a_change_on_the_first_day_of_a_period_does_not_reopen_the_invoiced_one(app):
    """A change "now" moves the review mark to the day before; the month the run billed stays closed."""
    cus, sub = _setup(app)
    app.clock.move_to(datetime(2026, 1, 10, tzinfo=UTC))
    assert _send(app, cus, "a", datetime(2026, 1, 5, tzinfo=UTC)) == "accepted"
    _run(app, datetime(2026, 2, 1, 0, 5, tzinfo=UTC))
    app.clock.move_to(datetime(2026, 2, 1, 9, tzinfo=UTC))
    with app.uow() as uow:
        subscriptions.change_quantity(uow, sub, 2)
    app.clock.move_to(datetime(2026, 2, 3, tzinfo=UTC))
    assert _send(app, cus, "late", datetime(2026, 1, 2, tzinfo=UTC), "1000") == "event_too_old"
    assert _send(app, cus, "in-grace", datetime(2026, 1, 30, tzinfo=UTC)) == "accepted"


def test_a_late_event_inside_the_grace_does_not_open_its_whole_invoiced_period(app):
    cus, _sub = _setup(app, interval="year")
    app.clock.move_to(datetime(2026, 6, 1, tzinfo=UTC))
    assert _send(app, cus, "a", datetime(2026, 5, 30, tzinfo=UTC)) == "accepted"
    _run(app, datetime(2027, 1, 1, 0, 5, tzinfo=UTC))  # invoices 2026's usage
    app.clock.move_to(datetime(2027, 1, 3, tzinfo=UTC))
    assert _send(app, cus, "in-grace", datetime(2026, 12, 30, tzinfo=UTC)) == "accepted"  # 4 days late
    assert _send(app, cus, "a-year-late", datetime(2026, 1, 2, tzinfo=UTC), "5000") == "event_too_old"
    _run(app, datetime(2027, 1, 3, 0, 5, tzinfo=UTC))
    assert b.lines_of(app, cus)[-1] == ("usage_correction", "2026-01-01", "2027-01-01", "1.00")


def test_the_unbilled_last_period_of_an_ending_subscription_stays_open_until_it_is_billed(app):
    """A subscription canceled at the end of its period, whose last period a run could not bill: the mistake can
    still be canceled weeks later, and the next run bills that period."""
    cus, sub = _setup(app)
    app.clock.move_to(datetime(2026, 1, 10, tzinfo=UTC))
    assert _send(app, cus, "ok", datetime(2026, 1, 5, tzinfo=UTC)) == "accepted"
    assert _send(app, cus, "oops", datetime(2026, 1, 6, tzinfo=UTC), "9" * 60) == "accepted"
    with app.uow() as uow:
        subscriptions.cancel(uow, sub, at_period_end=True)  # ends 1 February
    first = _run(app, datetime(2026, 2, 1, 0, 5, tzinfo=UTC))
    assert [f.customer_id for f in first.failures] == [cus]
    app.clock.move_to(datetime(2026, 2, 20, tzinfo=UTC))
    with app.uow() as uow:
        canceled = usage_cancellation.cancel_events(uow, [{"customer_id": cus, "transaction_id": "oops"}])
    assert len(canceled.canceled) == 1, canceled.rejected
    again = _run(app, datetime(2026, 2, 20, 0, 5, tzinfo=UTC))
    assert again.failures == []
    assert ("usage", "2026-01-01", "2026-02-01", "1.00") in b.lines_of(app, cus)
    app.clock.move_to(datetime(2026, 2, 21, tzinfo=UTC))  # billed now: closed beyond the grace
    assert _send(app, cus, "later", datetime(2026, 1, 7, tzinfo=UTC)) == "event_too_old"
