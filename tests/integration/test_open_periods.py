"""Which periods late usage (and its cancellation) may still reach, on both databases: the current one, and an
earlier one only while no bill run has billed it; a period a run billed is closed beyond the grace period, even
after a change or a late event moved the subscription's review mark back into it."""

from datetime import UTC, datetime

from remit.domain.clock import FixedClock
from remit.service_layer import bill_run, catalog, subscriptions, usage, usage_cancellation
from remit.service_layer.usage_import import import_events
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


# The open period is that of the subscription billing the event's meter, not the customer's earliest: a yearly
# subscription's open year does not keep an invoiced month of a monthly one open.


def _two_meters(app):
    """Meters ``calls`` and ``storage``; plans: ``api`` (monthly: a fee and calls), ``basic`` (monthly: a fee),
    ``store`` (yearly: a fee and storage) and ``files`` (monthly, anniversary-friendly: a fee and storage)."""
    assert isinstance(app.clock, FixedClock)
    b.seller(app)

    def prices(interval, meter=None):
        fee = {"currency": "EUR", "model": "flat", "config": {"amount": "10.00"}, "interval": interval}
        if meter is None:
            return [fee]
        per_unit = {"currency": "EUR", "model": "per_unit", "config": {"unit_price": "1"}, "interval": interval}
        return [fee, {**per_unit, "usage": {"meter": meter}}]

    with app.uow() as uow:
        usage.create_meter(uow, "calls", "Calls", "sum", "n")
        usage.create_meter(uow, "storage", "Storage", "sum", "n")
        catalog.create_plan(uow, "api", "API", prices("month", "calls"))
        catalog.create_plan(uow, "basic", "Basic", prices("month"))
        catalog.create_plan(uow, "store", "Store", prices("year", "storage"))
        catalog.create_plan(uow, "files", "Files", prices("month", "storage"))
    return b.customer(app, None)


def _subscribe(app, cus, plan, on, anchor="calendar"):
    app.clock.move_to(on)
    with app.uow() as uow:
        return subscriptions.create_subscription(uow, cus, plan, anchor=anchor)


def _event(cus, txn, at, code="calls", n="1"):
    return {
        "customer_id": cus,
        "code": code,
        "transaction_id": txn,
        "timestamp": at.isoformat(),
        "properties": {"n": n},
    }


def _send_to(app, cus, txn, at, code="calls", n="1"):
    with app.uow() as uow:
        result = usage.ingest(uow, [_event(cus, txn, at, code, n)])
    return result.rejected[0]["error"]["code"] if result.rejected else "accepted"


def _cancel(app, cus, txn):
    with app.uow() as uow:
        result = usage_cancellation.cancel_events(uow, [{"customer_id": cus, "transaction_id": txn}])
    return result.rejected[0]["error"]["code"] if result.rejected else "canceled"


def _monthly_and_yearly(app):
    """A monthly subscription billing calls and a yearly one billing storage, from 1 January; billed through
    March by the runs of February, March and April."""
    cus = _two_meters(app)
    _subscribe(app, cus, "api", datetime(2026, 1, 1, tzinfo=UTC))
    _subscribe(app, cus, "store", datetime(2026, 1, 1, tzinfo=UTC))
    app.clock.move_to(datetime(2026, 2, 6, tzinfo=UTC))
    assert _send_to(app, cus, "feb-calls", datetime(2026, 2, 5, tzinfo=UTC)) == "accepted"
    assert _send_to(app, cus, "feb-storage", datetime(2026, 2, 5, tzinfo=UTC), "storage") == "accepted"
    for month in (2, 3, 4):
        assert _run(app, datetime(2026, month, 1, 0, 5, tzinfo=UTC)).failures == []
    app.clock.move_to(datetime(2026, 4, 10, tzinfo=UTC))
    return cus


def test_a_yearly_subscription_does_not_keep_an_invoiced_month_open_for_late_events(app):
    cus = _monthly_and_yearly(app)
    assert _send_to(app, cus, "late", datetime(2026, 2, 5, tzinfo=UTC), n="1000") == "event_too_old"
    assert _send_to(app, cus, "in-grace", datetime(2026, 4, 4, tzinfo=UTC)) == "accepted"
    # The yearly subscription's own meter: its year is still open.
    assert _send_to(app, cus, "storage-late", datetime(2026, 2, 5, tzinfo=UTC), "storage") == "accepted"
    _run(app, datetime(2026, 4, 10, 0, 5, tzinfo=UTC))
    assert not [ln for ln in b.lines_of(app, cus) if ln[0] == "usage_correction"]


def test_a_yearly_subscription_does_not_keep_an_invoiced_month_open_for_cancellations(app):
    cus = _monthly_and_yearly(app)
    assert _cancel(app, cus, "feb-calls") == "too_late_to_cancel"
    assert _cancel(app, cus, "feb-storage") == "canceled"
    _run(app, datetime(2026, 4, 10, 0, 5, tzinfo=UTC))
    assert not [ln for ln in b.lines_of(app, cus) if ln[0] == "usage_correction"]


def test_a_yearly_subscription_does_not_keep_an_invoiced_month_open_for_imports(app):
    cus = _monthly_and_yearly(app)
    events = [
        _event(cus, "late", datetime(2026, 2, 5, tzinfo=UTC)),
        _event(cus, "storage-late", datetime(2026, 2, 5, tzinfo=UTC), "storage"),
    ]
    report = import_events(app.engine, app.clock, [(i + 1, e) for i, e in enumerate(events)])
    assert (report.accepted, [(r["line"], r["code"]) for r in report.rejected_events]) == (1, [(1, "event_too_old")])


def test_two_subscriptions_on_different_meters_each_keep_their_own_period_open(app):
    """Monthly both, on different anchors: calls invoiced through February, storage open since 20 February."""
    cus = _two_meters(app)
    _subscribe(app, cus, "api", datetime(2026, 1, 1, tzinfo=UTC))
    _subscribe(app, cus, "files", datetime(2026, 1, 20, tzinfo=UTC), anchor="anniversary")
    for at in (datetime(2026, 2, 1, 0, 5, tzinfo=UTC), datetime(2026, 2, 20, 0, 5, tzinfo=UTC)):
        assert _run(app, at).failures == []
    app.clock.move_to(datetime(2026, 2, 23, tzinfo=UTC))
    assert _send_to(app, cus, "c", datetime(2026, 2, 22, tzinfo=UTC)) == "accepted"
    assert _send_to(app, cus, "s", datetime(2026, 2, 22, tzinfo=UTC), "storage") == "accepted"
    assert _run(app, datetime(2026, 3, 1, 0, 5, tzinfo=UTC)).failures == []  # calls billed through February
    app.clock.move_to(datetime(2026, 3, 12, tzinfo=UTC))
    assert _send_to(app, cus, "calls-feb", datetime(2026, 2, 25, tzinfo=UTC)) == "event_too_old"
    assert _send_to(app, cus, "storage-feb", datetime(2026, 2, 25, tzinfo=UTC), "storage") == "accepted"
    assert _cancel(app, cus, "c") == "too_late_to_cancel"
    assert _cancel(app, cus, "s") == "canceled"


def test_a_plan_changed_mid_period_onto_a_meter_keeps_only_its_own_period_open(app):
    """A monthly subscription moved onto calls on 15 March, beside a yearly one: March's calls are invoiced."""
    cus = _two_meters(app)
    sub = _subscribe(app, cus, "basic", datetime(2026, 1, 1, tzinfo=UTC))
    _subscribe(app, cus, "store", datetime(2026, 1, 1, tzinfo=UTC))
    for month in (2, 3):
        assert _run(app, datetime(2026, month, 1, 0, 5, tzinfo=UTC)).failures == []
    app.clock.move_to(datetime(2026, 3, 15, tzinfo=UTC))
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "api")
    app.clock.move_to(datetime(2026, 3, 21, tzinfo=UTC))
    assert _send_to(app, cus, "mar", datetime(2026, 3, 20, tzinfo=UTC)) == "accepted"
    assert _run(app, datetime(2026, 4, 1, 0, 5, tzinfo=UTC)).failures == []
    app.clock.move_to(datetime(2026, 4, 10, tzinfo=UTC))
    assert _send_to(app, cus, "late", datetime(2026, 3, 20, tzinfo=UTC), n="1000") == "event_too_old"
    assert _cancel(app, cus, "mar") == "too_late_to_cancel"
    assert _send_to(app, cus, "april", datetime(2026, 4, 1, tzinfo=UTC)) == "accepted"  # its open month


def test_a_plan_changed_mid_period_off_a_meter_keeps_that_period_open_for_it(app):
    """Moved off calls on 15 April: April's calls, billed by the run of May, can still come late until then."""
    cus = _two_meters(app)
    sub = _subscribe(app, cus, "api", datetime(2026, 4, 1, tzinfo=UTC))
    app.clock.move_to(datetime(2026, 4, 15, tzinfo=UTC))
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "basic")
    app.clock.move_to(datetime(2026, 4, 28, tzinfo=UTC))
    assert _send_to(app, cus, "early-april", datetime(2026, 4, 2, tzinfo=UTC), n="3") == "accepted"
    _run(app, datetime(2026, 5, 1, 0, 5, tzinfo=UTC))
    assert ("usage", "2026-04-01", "2026-04-15", "3.00") in b.lines_of(app, cus)


def test_a_meter_no_open_subscription_bills_has_only_the_grace(app):
    """Calls were billed by a subscription that ended and was invoiced to its end; the customer's yearly
    subscription does not bill calls, so its open year does not let calls of the invoiced months back in."""
    cus = _two_meters(app)
    sub = _subscribe(app, cus, "api", datetime(2026, 1, 1, tzinfo=UTC))
    _subscribe(app, cus, "store", datetime(2026, 1, 1, tzinfo=UTC))
    app.clock.move_to(datetime(2026, 1, 20, tzinfo=UTC))
    with app.uow() as uow:
        subscriptions.cancel(uow, sub, at_period_end=True)  # ends 1 February
    assert _send_to(app, cus, "jan", datetime(2026, 1, 15, tzinfo=UTC)) == "accepted"
    assert _run(app, datetime(2026, 2, 1, 0, 5, tzinfo=UTC)).failures == []
    app.clock.move_to(datetime(2026, 4, 10, tzinfo=UTC))
    assert _send_to(app, cus, "late", datetime(2026, 1, 15, tzinfo=UTC), n="1000") == "event_too_old"
    assert _cancel(app, cus, "jan") == "too_late_to_cancel"
    assert _send_to(app, cus, "in-grace", datetime(2026, 4, 5, tzinfo=UTC)) == "accepted"
    _run(app, datetime(2026, 4, 10, 0, 5, tzinfo=UTC))
    assert not [ln for ln in b.lines_of(app, cus) if ln[0] == "usage_correction"]
