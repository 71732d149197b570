"""On the test clock: a customer whose usage cannot be billed (sent in absurd quantities by mistake) is set aside
by each bill run while everyone else is billed; its unbilled period stays open, so the mistake can be canceled
and a forgotten event sent weeks later, and the next run bills the period as if nothing had happened."""

from remit.service_layer import clocks, subscriptions, usage_cancellation, views
from tests import builders as b
from tests.scenarios.test_usage_billing import _fixed, _meter, _plan, _send, _start, _usage


def test_a_customer_that_cannot_be_billed_waits_for_its_usage_to_be_corrected(app):
    b.seller(app)
    _meter(app)
    _plan(app, "api", [_fixed("49.00"), _usage("api_calls", included_units="10000")])
    clock_id, stuck, _sub = _start(app, "api")
    fine = b.customer(app, clock_id)
    with app.uow() as uow:
        subscriptions.create_subscription(uow, fine, "api", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    for cus in (stuck, fine):
        assert not _send(app, cus, (b.utc(2026, 3, 5), {"calls": 12500})).rejected
    mistake = _send(app, stuck, (b.utc(2026, 3, 6), {"calls": "9" * 60}))  # a bug in the product's metering
    assert not mistake.rejected

    advanced = clocks.advance(app.uow, clock_id, b.utc(2026, 4, 20))

    assert advanced["customers_failed"] == 2  # the runs of 1 and 20 April each met it
    assert b.lines_of(app, fine) == [
        ("subscription", "2026-03-01", "2026-04-01", "49.00"),
        ("usage", "2026-03-01", "2026-04-01", "5.00"),
        ("subscription", "2026-04-01", "2026-05-01", "49.00"),
    ]
    assert b.lines_of(app, stuck) == [("subscription", "2026-03-01", "2026-04-01", "49.00")]
    with app.uow() as uow:
        failed = views.list_events(uow, None, type_="bill_run.customer_failed")
    assert [e["customer_id"] for e in failed] == [stuck, stuck]
    assert failed[0]["created_at"].startswith("2026-04-01")  # the test clock's time
    assert failed[0]["data"]["error"]["code"] == "amount_out_of_range"

    # 20 April: March is 20 days behind, past the 7-day grace, but was never billed for this customer: the
    # mistake can still be canceled, and a forgotten event of 30 March still sent.
    with app.uow() as uow:
        canceled = usage_cancellation.cancel_events(
            uow, [{"customer_id": stuck, "transaction_id": mistake.accepted[0]["transaction_id"]}]
        )
    assert len(canceled.canceled) == 1
    late = _send(app, stuck, (b.utc(2026, 3, 30), {"calls": 500}))
    assert not late.rejected
    assert _send(app, fine, (b.utc(2026, 3, 30), {"calls": 500})).rejected[0]["error"]["code"] == "event_too_old"

    advanced = clocks.advance(app.uow, clock_id, b.utc(2026, 4, 21))

    assert advanced["customers_failed"] == 0
    assert b.lines_of(app, stuck) == [
        ("subscription", "2026-03-01", "2026-04-01", "49.00"),
        ("usage", "2026-03-01", "2026-04-01", "6.00"),  # 13,000 calls, 3,000 over the included 10,000
        ("subscription", "2026-04-01", "2026-05-01", "49.00"),
    ]
    # Now that March is billed, the usual rule holds again for it.
    assert _send(app, stuck, (b.utc(2026, 3, 31), {"calls": 1})).rejected[0]["error"]["code"] == "event_too_old"
