"""Usage billing on the test clock: hybrid plans, overage, commitments, late events, plan changes, dimensions.

Usage is billed in arrears: the invoice written when a period closes carries the period's usage lines beside
the next period's fees billed in advance.
"""

from decimal import Decimal as D

import pytest
from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.domain.errors import ValidationError
from remit.service_layer import (
    catalog,
    clocks,
    explain,
    live_usage,
    subscriptions,
    usage,
    usage_cancellation,
    usage_series,
)
from tests import builders as b


def _meter(app, code="api_calls", aggregation="sum", field="calls", **kwargs):
    with app.uow() as uow:
        usage.create_meter(uow, code, code, aggregation, field, **kwargs)


def _plan(app, code, prices):
    with app.uow() as uow:
        catalog.create_plan(uow, code, code.title(), prices)


def _fixed(amount):
    return {"currency": "EUR", "model": "flat", "config": {"amount": amount}, "name": "Platform fee"}


def _usage(meter, model="per_unit", config=None, name="API calls", **terms):
    return {
        "currency": "EUR",
        "model": model,
        "config": config or {"unit_price": "0.002"},
        "name": name,
        "usage": {"meter": meter, **terms},
    }


def _start(app, plan, at=(2026, 3, 1)):
    clock_id = b.clock(app, b.utc(*at))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, plan, anchor="calendar")
    return clock_id, cus, sub


def _send(app, cus, *events, code="api_calls"):
    """events: (day in the clock's month as a datetime, properties)."""
    batch = [
        {
            "customer_id": cus,
            "code": code,
            "transaction_id": f"t{i}-{at.isoformat()}",
            "timestamp": at.isoformat(),
            "properties": props,
        }
        for i, (at, props) in enumerate(events)
    ]
    with app.uow() as uow:
        result = usage.ingest(uow, batch)
    return result


def test_monthly__hybrid_plan__fee_in_advance_and_overage_in_arrears(app):
    """49.00 a month with 10,000 calls included, then 0.002 a call. March: 12,500 calls -> 2,500 × 0.002."""
    b.seller(app)
    _meter(app)
    _plan(app, "api", [_fixed("49.00"), _usage("api_calls", included_units="10000")])
    clock_id, cus, _sub = _start(app, "api")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    assert not _send(app, cus, (b.utc(2026, 3, 5), {"calls": 5000}), (b.utc(2026, 3, 19), {"calls": 7500})).rejected
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-03-01", "2026-04-01", "49.00"),
        ("usage", "2026-03-01", "2026-04-01", "5.00"),
        ("subscription", "2026-04-01", "2026-05-01", "49.00"),
    ]
    line = b.invoices_of(app, cus)[1]["lines"][0]
    assert line["description"] == "API calls: 12500"
    assert line["quantity"] == "12500"


def test_monthly__usage_under_the_included_units_bills_nothing(app):
    b.seller(app)
    _meter(app)
    _plan(app, "api", [_fixed("49.00"), _usage("api_calls", included_units="10000")])
    clock_id, cus, _sub = _start(app, "api")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    _send(app, cus, (b.utc(2026, 3, 5), {"calls": 9000}))
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert [k for k, *_ in b.lines_of(app, cus)] == ["subscription", "subscription"]


def test_monthly__minimum_commitment__true_up_for_the_shortfall(app):
    """At least 20.00 of usage a month: 50 units at 0.10 = 5.00 of usage and a 15.00 true-up; in April 300
    units = 30.00, no true-up."""
    b.seller(app)
    _meter(app, "units", field="n")
    minimum = {
        "currency": "EUR",
        "model": "flat",
        "config": {"amount": "20.00"},
        "name": "Commitment",
        "usage": {"minimum": True},
    }
    _plan(app, "metered", [_usage("units", config={"unit_price": "0.10"}, name="Units"), minimum])
    clock_id, cus, _sub = _start(app, "metered")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, cus, (b.utc(2026, 3, 9), {"n": 50}), code="units")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 10))
    _send(app, cus, (b.utc(2026, 4, 9), {"n": 300}), code="units")
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    assert b.lines_of(app, cus) == [
        ("usage", "2026-03-01", "2026-04-01", "5.00"),
        ("true_up", "2026-03-01", "2026-04-01", "15.00"),
        ("usage", "2026-04-01", "2026-05-01", "30.00"),
    ]


def test_monthly__a_negotiated_minimum_commitment_is_a_flat_amount_too(app):
    """A minimum commitment is a flat amount per period, which a customer's override could get around: a per-unit,
    tiered or percentage model was taken, and the commitment became that model's rating of 1 unit. Such an
    override is refused as such a price is (invalid_usage); a flat one (a negotiated commitment) is billed."""
    b.seller(app)
    _meter(app, "units", field="n")
    minimum = {
        "currency": "EUR",
        "model": "flat",
        "config": {"amount": "20.00"},
        "name": "Commitment",
        "usage": {"minimum": True},
    }
    _plan(app, "metered", [_usage("units", config={"unit_price": "0.10"}, name="Units"), minimum])
    clock_id, cus, _sub = _start(app, "metered")
    with app.uow() as uow:
        price_id = uow.conn.execute(
            select(t.prices.c.id).where(t.prices.c.usage["minimum"].as_boolean().is_(True))
        ).scalar_one()
    for model, config in [
        ("per_unit", {"unit_price": "30.00"}),
        ("graduated", {"tiers": [{"up_to": "1", "unit_price": "30"}, {"up_to": None, "unit_price": "1"}]}),
        ("percentage", {"rate": "0.5"}),
    ]:
        with pytest.raises(ValidationError) as refused, app.uow() as uow:
            catalog.set_price_override(uow, cus, price_id, model, config)
        assert (refused.value.code, refused.value.field) == ("invalid_usage", "model"), model
    with app.uow() as uow:
        assert uow.conn.execute(select(t.price_overrides.c.id)).first() is None  # nothing written
        catalog.set_price_override(uow, cus, price_id, "flat", {"amount": "12.00"})
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, cus, (b.utc(2026, 3, 9), {"n": 50}), code="units")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert b.lines_of(app, cus) == [
        ("usage", "2026-03-01", "2026-04-01", "5.00"),
        ("true_up", "2026-03-01", "2026-04-01", "7.00"),
    ]


def test_monthly__late_event_inside_the_grace_period_is_billed_as_a_correction(app):
    """March is invoiced on 1 April. An event of 30 March arriving on 3 April (grace: 7 days) is billed on the
    next invoice as a correction linked to March's usage line; one of 20 March arriving then is refused."""
    b.seller(app)
    _meter(app)
    _plan(app, "api", [_fixed("49.00"), _usage("api_calls")])
    clock_id, cus, _sub = _start(app, "api")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    _send(app, cus, (b.utc(2026, 3, 5), {"calls": 1000}))
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 3))
    late = _send(app, cus, (b.utc(2026, 3, 30, 23), {"calls": 500}), (b.utc(2026, 3, 20), {"calls": 9999}))
    assert len(late.accepted) == 1
    assert [r["error"]["code"] for r in late.rejected] == ["event_too_old"]
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 4))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-03-01", "2026-04-01", "49.00"),
        ("usage", "2026-03-01", "2026-04-01", "2.00"),
        ("subscription", "2026-04-01", "2026-05-01", "49.00"),
        ("usage_correction", "2026-03-01", "2026-04-01", "1.00"),
    ]
    invs = b.invoices_of(app, cus)
    first, correction = invs[1]["lines"][0], invs[2]["lines"][0]
    assert len(invs) == 3  # the correction is on an invoice of its own, after March's
    assert correction["corrects_line_id"] == first["id"]
    assert "received late" in correction["description"]
    # Running again bills nothing twice.
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 5))
    assert len(b.lines_of(app, cus)) == 4


def test_monthly__an_event_canceled_after_its_period_was_billed_is_credited_on_the_next_invoice(app):
    """March's 1,500 calls are invoiced on 1 April (3.00). On 3 April the 500 calls of 30 March are canceled (sent
    by mistake): the next run credits 1.00 as a correction linked to March's line, and nothing twice. An event of
    April canceled in April is simply not billed at April's end."""
    b.seller(app)
    _meter(app)
    _plan(app, "api", [_fixed("49.00"), _usage("api_calls")])
    clock_id, cus, _sub = _start(app, "api")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 31))
    sent = _send(app, cus, (b.utc(2026, 3, 5), {"calls": 1000}), (b.utc(2026, 3, 30), {"calls": 500}))
    mistaken = sent.accepted[1]["transaction_id"]
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 3))
    april = _send(app, cus, (b.utc(2026, 4, 2), {"calls": 250})).accepted[0]["transaction_id"]
    with app.uow() as uow:
        result = usage_cancellation.cancel_events(
            uow,
            [{"customer_id": cus, "transaction_id": mistaken}, {"customer_id": cus, "transaction_id": april}],
            reason="load test data",
        )
    assert len(result.canceled) == 2
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 4))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-03-01", "2026-04-01", "49.00"),
        ("usage", "2026-03-01", "2026-04-01", "3.00"),
        ("subscription", "2026-04-01", "2026-05-01", "49.00"),
        ("usage_correction", "2026-03-01", "2026-04-01", "-1.00"),
    ]
    invs = b.invoices_of(app, cus)
    first, correction = invs[1]["lines"][0], invs[2]["lines"][0]
    assert correction["corrects_line_id"] == first["id"]
    assert correction["description"] == "API calls: usage corrected for 2026-03-01 – 2026-04-01"
    assert correction["quantity"] == "1000"
    with app.uow() as uow:  # the correction says why: the event canceled, when and for what reason
        why = explain.explain_line(uow, invs[2]["id"], correction["id"])
    assert why["canceled_events"] == [
        {
            "transaction_id": mistaken,
            "occurred_at": "2026-03-30T00:00:00Z",
            "canceled_at": "2026-04-03T00:00:00Z",
            "reason": "load test data",
        }
    ]
    assert f"  {mistaken} of 2026-03-30T00:00:00Z, canceled 2026-04-03T00:00:00Z: load test data" in why["explanation"]
    with app.uow() as uow:  # March's own line (which counted it) lists it too, with when it was canceled
        before = explain.explain_line(uow, invs[1]["id"], first["id"])
    assert [x["canceled_at"] for x in before["canceled_events"]] == ["2026-04-03T00:00:00Z"]
    # Canceling again, and running again, bill nothing more; April's canceled event is not billed at its end.
    with app.uow() as uow:
        again = usage_cancellation.cancel_events(uow, [{"customer_id": cus, "transaction_id": mistaken}])
    assert (again.canceled, len(again.already_canceled)) == ([], 1)
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    assert b.lines_of(app, cus)[4:] == [("subscription", "2026-05-01", "2026-06-01", "49.00")]


def test_monthly__a_meter_that_rounds_up_bills_whole_units_and_says_so(app):
    """Storage billed per started GB: 10.2 + 2.05 GB measured in March is 12.25, rounded up to 13 GB; 5 GB are
    included and 8 billed at 0.50. Live usage shows the rounded quantity too."""
    b.seller(app)
    _meter(app, "storage", "sum", "gb", rounding="ceil")
    _plan(app, "store", [_usage("storage", config={"unit_price": "0.50"}, name="Storage", included_units="5")])
    clock_id, cus, _sub = _start(app, "store")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    _send(app, cus, (b.utc(2026, 3, 5), {"gb": "10.2"}), (b.utc(2026, 3, 19), {"gb": "2.05"}), code="storage")
    with app.uow() as uow:
        (item,) = live_usage.live_usage(uow, cus)["subscriptions"][0]["items"]
    assert (item["quantity"], item["billable_units"], item["amount"]) == ("13", "8", "4.00")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert b.lines_of(app, cus) == [("usage", "2026-03-01", "2026-04-01", "4.00")]
    invoice = b.invoices_of(app, cus)[0]
    line = invoice["lines"][0]
    assert (line["description"], line["quantity"]) == ("Storage: 13", "13")
    with app.uow() as uow:
        explained = explain.explain_line(uow, invoice["id"], line["id"])
    assert (explained["usage"]["measured"], explained["usage"]["rounding"]) == (
        "12.25",
        {"mode": "ceil", "precision": 0},
    )
    assert "Measured 12.25; the meter rounds (ceil) to 0 decimals: 13." in explained["explanation"]


@pytest.mark.parametrize("rounding", ["ceil", "floor"])
def test_monthly__a_level_held_for_part_of_a_part_period_is_exact_before_it_is_rounded(app, rounding):
    """April has 30 days; the subscription starts on 5 April (26 of them); 5 GB are stored from 13 April (18 days):
    5 × 18/26 × 26/30 is exactly 3 GB-months, which rounds to 3 up or down (not 4 from 3.000…001)."""
    b.seller(app)
    _meter(app, "gb", "weighted_sum", "gb", rounding=rounding)
    _plan(app, "store", [_usage("gb", config={"unit_price": "1"}, name="Storage")])
    clock_id, cus, _sub = _start(app, "store", at=(2026, 4, 5))
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 14))
    _send(app, cus, (b.utc(2026, 4, 13), {"gb": 5}), code="gb")
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    invoice = b.invoices_of(app, cus)[-1]
    (line,) = invoice["lines"]
    assert (line["quantity"], line["amount"]) == ("3", "3.00")
    with app.uow() as uow:
        assert explain.explain_line(uow, invoice["id"], line["id"])["usage"]["measured"] == "3"


def test_monthly__a_level_held_for_a_third_of_the_month_is_billed_from_the_exact_level(app):
    """10 GB stored from 21 April, 10 of its 30 days: 10/3 GB-months at 0.0015 is 0.005 exactly, 0.01 half up. The
    level written to 28 digits (3.333333333333333333333333333) billed 0.004999…, rounded down to nothing."""
    b.seller(app)
    _meter(app, "gb", "weighted_sum", "gb")
    _plan(app, "store", [_usage("gb", config={"unit_price": "0.0015"}, name="Storage")])
    clock_id, cus, _sub = _start(app, "store", at=(2026, 4, 1))
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 22))
    _send(app, cus, (b.utc(2026, 4, 21), {"gb": 10}), code="gb")
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    (invoice,) = b.invoices_of(app, cus)
    (line,) = invoice["lines"]
    assert (line["quantity"], line["amount"]) == ("3.333333333333333333333333333", "0.01")
    with app.uow() as uow:
        why = explain.explain_line(uow, invoice["id"], line["id"])
    assert "Before rounding: 0.005 EUR; rounded to 0.01 EUR." in why["explanation"], why["explanation"]


def test_monthly__plan_change_mid_period__usage_on_both_sides_at_each_plans_price(app):
    """Basic bills 0.01 a call, Pro 0.005. An upgrade on 16 March: calls before it at Basic's price, calls
    after it at Pro's; the fees are prorated as usual."""
    b.seller(app)
    _meter(app)
    _plan(app, "basic", [_fixed("10.00"), _usage("api_calls", config={"unit_price": "0.01"})])
    _plan(app, "pro", [_fixed("40.00"), _usage("api_calls", config={"unit_price": "0.005"})])
    clock_id, cus, sub = _start(app, "basic")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 16))
    _send(app, cus, (b.utc(2026, 3, 10), {"calls": 1000}), (b.utc(2026, 3, 15, 23, 59), {"calls": 200}))
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "pro", when="now")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 25))
    _send(app, cus, (b.utc(2026, 3, 16), {"calls": 2000}), (b.utc(2026, 3, 24), {"calls": 400}))
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    lines = b.lines_of(app, cus)
    assert ("usage", "2026-03-01", "2026-03-16", "12.00") in lines  # 1,200 × 0.01
    assert ("usage", "2026-03-16", "2026-04-01", "12.00") in lines  # 2,400 × 0.005
    assert ("proration", "2026-03-16", "2026-04-01", "-5.16") in lines  # 16/31 of 10.00 back
    assert ("subscription", "2026-03-16", "2026-04-01", "20.65") in lines  # 16/31 of 40.00
    assert ("subscription", "2026-04-01", "2026-05-01", "40.00") in lines


def test_monthly__dimensions__one_line_per_region_at_its_own_price(app):
    b.seller(app)
    _meter(app, group_by=["region"])
    eu = {"model": "per_unit", "config": {"unit_price": "0.02"}}
    _plan(app, "api", [_usage("api_calls", config={"unit_price": "0.01"}, dimensions={"eu": eu})])
    clock_id, cus, _sub = _start(app, "api")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    _send(
        app,
        cus,
        (b.utc(2026, 3, 2), {"calls": 100, "region": "eu"}),
        (b.utc(2026, 3, 3), {"calls": 300, "region": "us"}),
        (b.utc(2026, 3, 4), {"calls": 50, "region": "eu"}),
    )
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    lines = b.invoices_of(app, cus)[0]["lines"]
    assert [(ln["description"], ln["amount"]) for ln in lines] == [
        ("API calls (eu): 150", "3.00"),
        ("API calls (us): 300", "3.00"),
    ]


def test_monthly__graduated_usage_price_and_its_breakdown(app):
    """Graduated: the first 1,000 calls at 0.01, the rest at 0.005; 2,500 calls -> 10.00 + 7.50."""
    b.seller(app)
    _meter(app)
    tiers = {"tiers": [{"up_to": "1000", "unit_price": "0.01"}, {"up_to": None, "unit_price": "0.005"}]}
    _plan(app, "api", [_usage("api_calls", model="graduated", config=tiers)])
    clock_id, cus, _sub = _start(app, "api")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    _send(app, cus, (b.utc(2026, 3, 2), {"calls": 2500}))
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    line = b.invoices_of(app, cus)[0]["lines"][0]
    assert line["amount"] == "17.50"
    assert [bd["amount"] for bd in line["details"]["breakdown"]] == ["10.00", "7.500"]


def test_monthly__weighted_sum__storage_held_for_part_of_the_month_bills_that_part(app):
    """1 GB-month at 2.00: 100 GB from 1 March (level carried from February's events) and +50 GB from
    17 March: (100 × 31 + 50 × 15) / 31 GB-months."""
    b.seller(app)
    _meter(app, "storage", aggregation="weighted_sum", field="gb")
    _plan(app, "store", [_usage("storage", config={"unit_price": "2.00"}, name="Storage")])
    clock_id, cus, _sub = _start(app, "store", at=(2026, 2, 20))
    _send(app, cus, (b.utc(2026, 2, 20), {"gb": 100}), code="storage")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 17))
    _send(app, cus, (b.utc(2026, 3, 17), {"gb": 50}), code="storage")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    lines = b.lines_of(app, cus)
    # February: 100 GB over 9 of 28 days (the subscription started on the 20th): 100 × 9/28 × 2.00 = 64.29
    assert lines[0] == ("usage", "2026-02-20", "2026-03-01", "64.29")
    # March: (100 × 31 + 50 × 15) / 31 × 2.00 = 248.39
    assert lines[1] == ("usage", "2026-03-01", "2026-04-01", "248.39")


def test_a_second_subscription_may_not_bill_the_same_meter(app):
    b.seller(app)
    _meter(app)
    _plan(app, "api", [_usage("api_calls")])
    _clock_id, cus, _sub = _start(app, "api")
    from remit.domain.errors import Conflict

    with pytest.raises(Conflict) as err, app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "api")
    assert err.value.code == "meter_already_billed"


def test_a_meter_is_billed_by_one_subscription_a_day_until_the_first_really_ends(app):
    """A subscription canceled at its period's end still bills the meter until then: a second one for the same
    meter may start on that day, not before (it once could, and both billed the same events); nor may another
    subscription change to a plan that bills it. Canceled now, the meter is free from today."""
    from remit.domain.errors import Conflict

    b.seller(app)
    _meter(app)
    _plan(app, "api", [_usage("api_calls")])
    _plan(app, "basic", [_fixed("10.00")])
    clock_id, cus, sub = _start(app, "api")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    with app.uow() as uow:
        subscriptions.cancel(uow, sub, at_period_end=True)
        other = subscriptions.create_subscription(uow, cus, "basic")
    for attempt in (
        lambda uow: subscriptions.create_subscription(uow, cus, "api"),
        lambda uow: subscriptions.change_plan(uow, other, "api"),
    ):
        with pytest.raises(Conflict) as err, app.uow() as uow:
            attempt(uow)
        assert (err.value.code, err.value.field) == ("meter_already_billed", "plan")
        assert f"Subscription {sub} bills meter api_calls for this customer until 2026-04-01" in err.value.message
    with app.uow() as uow:
        later = subscriptions.create_subscription(uow, cus, "api", start_on=b.utc(2026, 4, 1).date())
        subscriptions.cancel(uow, later)
    with app.uow() as uow:
        subscriptions.change_plan(uow, other, "api", when=b.utc(2026, 4, 1).date())


def test_withdrawing_a_cancellation_or_change_is_refused_when_another_subscription_bills_the_meter_then(app):
    """A subscription canceled at its period's end (or moved off the meter then) frees the meter from that day, so
    a second one may start billing it there. Withdrawing the cancellation or the change (release-schedule) once
    let both bill the same events: April's 10 calls were invoiced by each. It is refused now, and changes
    nothing."""
    from datetime import date

    from remit.domain.errors import Conflict

    b.seller(app)
    _meter(app)
    _plan(app, "api", [_usage("api_calls", config={"unit_price": "1"})])
    _plan(app, "pro", [_usage("api_calls", config={"unit_price": "2"})])
    _plan(app, "basic", [_fixed("10.00")])
    clock_id, cus, sub = _start(app, "api")
    moved = b.customer(app, clock_id)
    with app.uow() as uow:
        moving = subscriptions.create_subscription(uow, moved, "api", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    with app.uow() as uow:
        subscriptions.cancel(uow, sub, at_period_end=True)
        subscriptions.change_plan(uow, moving, "basic", when="period_end")
        subscriptions.create_subscription(uow, cus, "pro", anchor="calendar", start_on=date(2026, 4, 1))
        subscriptions.create_subscription(uow, moved, "pro", anchor="calendar", start_on=date(2026, 4, 1))
    for withdrawn in (sub, moving):
        with pytest.raises(Conflict) as err, app.uow() as uow:
            subscriptions.release_scheduled(uow, withdrawn)
        assert (err.value.code, err.value.field) == ("meter_already_billed", "plan")
    with app.uow() as uow:
        assert subscriptions.get_subscription(uow, sub)["ended_on"] == date(2026, 4, 1)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 10))
    _send(app, cus, (b.utc(2026, 4, 5), {"calls": 10}))
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    assert [ln for ln in b.lines_of(app, cus) if ln[0] == "usage"] == [("usage", "2026-04-01", "2026-05-01", "20.00")]
    alone = b.customer(app, clock_id)
    with app.uow() as uow:  # without a subscription in the way, a withdrawal still works
        free = subscriptions.create_subscription(uow, alone, "api", anchor="calendar")
        subscriptions.cancel(uow, free, at_period_end=True)
    with app.uow() as uow:
        assert subscriptions.release_scheduled(uow, free) == 1


def test_usage_price_refuses_in_advance_timing_and_unknown_meters(app):
    from remit.domain.errors import ValidationError

    b.seller(app)
    with pytest.raises(ValidationError) as err, app.uow() as uow:
        catalog.create_plan(uow, "x", "X", [{**_usage("nope")}])
    assert (err.value.code, err.value.field) == ("unknown_meter", "prices[0].usage.meter")
    _meter(app)
    with pytest.raises(ValidationError) as err, app.uow() as uow:
        catalog.create_plan(uow, "x", "X", [{**_usage("api_calls"), "timing": "in_advance"}])
    assert (err.value.code, err.value.field) == ("invalid_timing", "prices[0].timing")


def test_included_units_too_large_are_refused_when_the_plan_is_made_not_at_every_bill_run(app):
    """1e999999999 included units were stored (from the CLI, which has no schema in front), then every bill run
    failed for the customer with an internal error (decimal.Overflow while prorating them)."""
    b.seller(app)
    _meter(app)
    for included in ("1e999999999", "1000000000000000"):
        with pytest.raises(ValidationError) as err, app.uow() as uow:
            catalog.create_plan(uow, "x", "X", [_usage("api_calls", included_units=included)])
        assert (err.value.code, err.value.field) == ("invalid_number", "prices[0].usage.included_units")
    with app.uow() as uow:
        assert uow.conn.execute(select(t.prices.c.id)).first() is None  # nothing written
    _plan(app, "x", [_usage("api_calls", included_units="999999999999999")])


def test_monthly__percentage_usage_price_charges_each_transaction__published_example(app):
    """Lago's example: 1.2% + 0.10 per transaction, the first 3 transactions free: the 4th transaction, of
    50.00, costs 0.70 (here in EUR)."""
    b.seller(app)
    _meter(app, "payments", field="amount")
    pct = {"rate": "0.012", "fixed_fee": "0.10", "free_transactions": 3}
    _plan(app, "pay", [_usage("payments", model="percentage", config=pct, name="Payment fees")])
    clock_id, cus, _sub = _start(app, "pay")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    _send(app, cus, *[(b.utc(2026, 3, day), {"amount": "50.00"}) for day in (2, 3, 4, 5)], code="payments")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    line = b.invoices_of(app, cus)[0]["lines"][0]
    assert (line["kind"], line["amount"]) == ("usage", "0.70")
    assert [bd["description"] for bd in line["details"]["breakdown"]] == [
        "3 transactions free (volume 150)",
        "1 transaction, volume 50 × 1.2% + 0.10 each",
    ]


def test_monthly__a_refund_on_a_percentage_price_is_credited_within_its_line_never_below_zero(app):
    """Payments of 100 and a refund of 40 at 1% + 0.10: 1.10 charged, 0.40 credited back, 0.70; a customer
    whose refunds outweigh the payments owes nothing for the line (its bill run failed). A graduated
    percentage nets the volume the same way."""
    b.seller(app)
    _meter(app, "payments", field="amount")
    pct = {"rate": "0.01", "fixed_fee": "0.10"}
    tiers = {"tiers": [{"up_to": None, "rate": "0.01"}]}
    _plan(app, "pay", [_usage("payments", model="percentage", config=pct, name="Fees")])
    _plan(app, "volume", [_usage("payments", model="graduated_percentage", config=tiers, name="Fees")])
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    customers = []
    for plan, amounts in (("pay", ["100", "-40"]), ("pay", ["20", "-500"]), ("volume", ["100", "-40"])):
        cus = b.customer(app, clock_id)
        with app.uow() as uow:
            subscriptions.create_subscription(uow, cus, plan, anchor="calendar")
        customers.append((cus, amounts))
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    for cus, amounts in customers:
        sent = [(b.utc(2026, 3, 2 + i), {"amount": amount}) for i, amount in enumerate(amounts)]
        assert len(_send(app, cus, *sent, code="payments").accepted) == 2
    with app.uow() as uow:
        (item,) = live_usage.live_usage(uow, customers[1][0])["subscriptions"][0]["items"]
    assert item["amount"] == "0.00"
    advanced = clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert advanced["customers_failed"] == 0
    amounts = [[ln["amount"] for inv in b.invoices_of(app, cus) for ln in inv["lines"]] for cus, _ in customers]
    assert amounts == [["0.70"], [], ["0.60"]]  # a line of 0.00 is not invoiced
    (line,) = b.invoices_of(app, customers[0][0])[0]["lines"]
    assert [bd["description"] for bd in line["details"]["breakdown"]] == [
        "1 transaction, volume 100 × 1% + 0.10 each",
        "1 refund, volume -40 × 1% credited",
    ]


def test_monthly__graduated_percentage_usage_price(app):
    """3% of the first 10,000 of volume, 2% above: 25,000 processed in March -> 300 + 300."""
    b.seller(app)
    _meter(app, "volume", field="amount")
    tiers = {"tiers": [{"up_to": "10000", "rate": "0.03"}, {"up_to": None, "rate": "0.02"}]}
    _plan(app, "pay", [_usage("volume", model="graduated_percentage", config=tiers, name="Processing")])
    clock_id, cus, _sub = _start(app, "pay")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    _send(app, cus, (b.utc(2026, 3, 2), {"amount": "20000"}), (b.utc(2026, 3, 9), {"amount": "5000"}), code="volume")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert b.lines_of(app, cus) == [("usage", "2026-03-01", "2026-04-01", "600.00")]


def test_monthly__a_formulas_thirds_add_up_to_the_whole_and_a_bad_event_is_refused_alone(app):
    """A meter's formula divides each event's amount by 3: a quotient keeps 34 significant digits, more than the
    28 a quantity is written with, so three thirds of 1 measure 1. An event the formula cannot value (text
    compared with a number, an infinite amount) is refused on its own and the period bills the others."""
    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "cost", "Cost", "sum", None, expression="amount / 3 if amount > 0 else 0")
    _plan(app, "api", [_usage("cost", config={"unit_price": "10.00"}, name="Cost")])
    clock_id, cus, _sub = _start(app, "api")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    sent = [(b.utc(2026, 3, day), {"amount": "1"}) for day in (2, 3, 4)]
    sent += [(b.utc(2026, 3, 5), {"amount": "lots"}), (b.utc(2026, 3, 6), {"amount": "Infinity"})]
    result = _send(app, cus, *sent, code="cost")
    assert len(result.accepted) == 3
    assert [(r["index"], r["error"]["code"]) for r in result.rejected] == [
        (3, "formula_not_numeric"),
        (4, "formula_not_numeric"),
    ]
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    (line,) = b.invoices_of(app, cus)[0]["lines"]
    assert (line["quantity"], line["amount"]) == ("1", "10.00")


def test_monthly__upcoming_invoice_preview_shows_the_usage_so_far(app):
    b.seller(app)
    _meter(app)
    _plan(app, "api", [_fixed("49.00"), _usage("api_calls", included_units="10000")])
    clock_id, cus, _sub = _start(app, "api")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    _send(app, cus, (b.utc(2026, 3, 5), {"calls": 15000}))
    with app.uow() as uow:
        preview = clocks.preview_upcoming(uow, cus)
    assert sorted((ln["kind"], ln["amount_minor"]) for ln in preview["lines"]) == [
        ("subscription", 4900),
        ("usage", 1000),
    ]
    assert len(b.invoices_of(app, cus)) == 1  # the preview wrote nothing


def test_included_units_of_a_part_period_are_prorated_and_the_explanation_says_how(app):
    """Started on 16 March: 16 of 31 days, so 10,000 included calls become 10,000 × 16/31 = 5,161.29... and
    6,000 calls bill the rest; the line's explanation shows the proration."""
    from remit.service_layer.explain import explain_line

    b.seller(app)
    _meter(app)
    _plan(app, "api", [_usage("api_calls", included_units="10000")])
    clock_id, cus, _sub = _start(app, "api", at=(2026, 3, 16))
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    assert not _send(app, cus, (b.utc(2026, 3, 18), {"calls": 6000})).rejected
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    invoice = b.invoices_of(app, cus)[0]
    line = invoice["lines"][0]
    # 6,000 - 160,000/31 = 26,000/31 calls at 0.002: 1.677... -> 1.68
    assert (line["kind"], line["amount"]) == ("usage", "1.68")
    with app.uow() as uow:
        explained = explain_line(uow, invoice["id"], line["id"])
    assert explained["usage"]["included_per_period"] == "10000"
    assert explained["usage"]["share"] == "16/31"
    assert any(
        s.startswith("10000 units included per period × 16/31 (the part of the period billed) = 5161.29")
        for s in explained["explanation"]
    ), explained["explanation"]


def test_the_amount_before_rounding_of_an_overage_line_is_the_one_its_breakdown_comes_to(app):
    """10,000 calls from 16 March, 10,000 × 16/31 included: 4,838.709677419354838709677419 billable at 0.05 is
    241.93548387096774193548387095 (29 digits), as the breakdown says. The explanation's "Before rounding" cut it
    to 28 digits (241.935483870967741935483871), a figure that is neither the breakdown's nor the line's."""
    b.seller(app)
    _meter(app)
    _plan(app, "api", [_usage("api_calls", config={"unit_price": "0.05"}, included_units="10000")])
    clock_id, cus, _sub = _start(app, "api", at=(2026, 3, 16))
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    assert not _send(app, cus, (b.utc(2026, 3, 18), {"calls": 10000})).rejected
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    invoice = b.invoices_of(app, cus)[0]
    line = invoice["lines"][0]
    assert (line["kind"], line["amount"]) == ("usage", "241.94")
    with app.uow() as uow:
        explained = explain.explain_line(uow, invoice["id"], line["id"])
    assert [part["amount"] for part in explained["breakdown"]] == ["241.93548387096774193548387095"]
    assert "Before rounding: 241.93548387096774193548387095 EUR; rounded to 241.94 EUR." in explained["explanation"]


def test_the_smallest_quantity_a_package_price_bills_is_written_and_read_back_exactly(app):
    """1E-62 units (the smallest value an event may carry) of packages of 1,000 at 100.00: one package, 100.00,
    whose unit price per unit, 1E+64, is too long to write out in full: it is stored in exponent form and read
    back as the same number, on both databases (it once stopped the bill run)."""
    b.seller(app)
    _meter(app, "calls", "sum", "n")
    _plan(app, "pkg", [_usage("calls", model="package", config={"package_size": "1000", "package_price": "100"})])
    clock_id, cus, _sub = _start(app, "pkg")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    tiny = "0." + "0" * 61 + "1"  # 64 characters: 1E-62
    _send(app, cus, (b.utc(2026, 3, 5), {"n": tiny}), code="calls")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    (line,) = b.invoices_of(app, cus)[0]["lines"]
    assert (line["amount"], line["quantity"], line["unit_price"]) == ("100.00", tiny, "1" + "0" * 64)


def test_monthly__a_latest_meter_that_carries_over_bills_the_last_seats_reported(app):
    """Seats are reported only when they change: 10 on 3 March, 12 on 20 March, then nothing until 14 May (15).
    March bills 12, April, with no report, 12 again, May 15; live usage and the day-by-day series in April show
    the carried value."""
    b.seller(app)
    _meter(app, "seats", "latest", "n", carry_over=True)
    _plan(app, "team", [_usage("seats", config={"unit_price": "8.00"}, name="Seats")])
    clock_id, cus, _sub = _start(app, "team")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 25))
    _send(app, cus, (b.utc(2026, 3, 3), {"n": 10}), (b.utc(2026, 3, 20), {"n": 12}), code="seats")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 15))
    with app.uow() as uow:
        (item,) = live_usage.live_usage(uow, cus)["subscriptions"][0]["items"]
        days = usage_series.usage_series(uow, cus, "seats", b.utc(2026, 4, 1).date(), b.utc(2026, 4, 4).date())
    assert (item["quantity"], item["amount"]) == ("12", "96.00")
    assert [(d["quantity"], d["events"]) for d in days["data"]] == [("12", 0), ("12", 0), ("12", 0)]
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 14))
    _send(app, cus, (b.utc(2026, 5, 14), {"n": 15}), code="seats")
    clocks.advance(app.uow, clock_id, b.utc(2026, 6, 1))
    assert b.lines_of(app, cus) == [
        ("usage", "2026-03-01", "2026-04-01", "96.00"),
        ("usage", "2026-04-01", "2026-05-01", "96.00"),
        ("usage", "2026-05-01", "2026-06-01", "120.00"),
    ]
    april = b.invoices_of(app, cus)[1]
    with app.uow() as uow:
        explained = explain.explain_line(uow, april["id"], april["lines"][0]["id"])
    assert (explained["usage"]["events"], explained["usage"]["quantity"], explained["meter"]["carry_over"]) == (
        0,
        "12",
        True,
    )
    assert "no event in these windows, so the value last reported before their end counts" in " ".join(
        explained["explanation"]
    )


def _commitment(amount):
    return {
        "currency": "EUR",
        "model": "flat",
        "config": {"amount": amount},
        "name": "Commitment",
        "usage": {"minimum": True},
    }


def test_monthly__two_commitments_in_a_period_count_its_usage_once(app):
    """Basic and Pro each commit to 20.00 a month; an upgrade on 16 March prorates them (9.68 + 10.32 = 20.00).
    March's usage, 15.00, is counted once against both: the 5.00 short is trued up, shared in proportion to the
    commitments (2.42 + 2.58). Counted against each one, it would have hidden the shortfall."""
    b.seller(app)
    _meter(app, "units", field="n")
    _plan(app, "basic", [_usage("units", config={"unit_price": "0.10"}, name="Units"), _commitment("20.00")])
    _plan(app, "pro", [_usage("units", config={"unit_price": "0.10"}, name="Units"), _commitment("20.00")])
    clock_id, cus, sub = _start(app, "basic")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 16))
    _send(app, cus, (b.utc(2026, 3, 9), {"n": 150}), code="units")
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "pro", when="now")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    lines = b.lines_of(app, cus)
    assert [ln for ln in lines if ln[0] == "true_up"] == [
        ("true_up", "2026-03-01", "2026-03-16", "2.42"),  # service days: Basic's part, then Pro's
        ("true_up", "2026-03-16", "2026-04-01", "2.58"),
    ]
    assert sum(int(ln[3].replace(".", "")) for ln in lines if ln[0] in ("usage", "true_up")) == 2000
    march = b.invoices_of(app, cus)[0]
    true_up = [ln for ln in march["lines"] if ln["kind"] == "true_up"][0]
    with app.uow() as uow:
        why = explain.explain_line(uow, march["id"], true_up["id"])
    assert (
        "Minimum commitments 20.00 EUR for the period, of which this price's 9.68 EUR (the period's other "
        "commitments apply to other days of it); usage lines came to 15.00 EUR; the true-ups bill the shortfall, "
        "shared in proportion to the commitments."
    ) in why["explanation"]
    assert (
        "This price's commitment: 20.00 EUR per period × 15/31 (the part of the period it applied to) = 9.68 EUR."
        in (why["explanation"])
    )


def test_monthly__a_commitment_is_compared_before_discounts_and_the_coupon_discounts_the_true_up(app):
    """50 % off forever, a commitment of 20.00: 50 units (5.00) fall 15.00 short of it before the discount, so the
    true-up is 15.00 and the coupon halves it like the usage (2.50 + 7.50: half the commitment is paid), in the
    upcoming invoice as on the invoice."""
    b.seller(app)
    _meter(app, "units", field="n")
    _plan(app, "metered", [_usage("units", config={"unit_price": "0.10"}, name="Units"), _commitment("20.00")])
    with app.uow() as uow:
        catalog.create_coupon(uow, "HALF", "Half", percent_off="50", duration="forever")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "metered", anchor="calendar", coupon="HALF")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, cus, (b.utc(2026, 3, 9), {"n": 50}), code="units")
    with app.uow() as uow:
        preview = clocks.preview_upcoming(uow, cus)
    expected = [("usage", 500, 250), ("true_up", 1500, 750)]
    assert [(ln["kind"], ln["subtotal_minor"], ln["discount_minor"]) for ln in preview["lines"]] == expected
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    (march,) = b.invoices_of(app, cus)
    assert [(ln["kind"], ln["subtotal"], ln["discount"], ln["amount"]) for ln in march["lines"]] == [
        ("usage", "5.00", "2.50", "2.50"),
        ("true_up", "15.00", "7.50", "7.50"),
    ]


def test_monthly__two_prorated_commitments_add_up_to_the_period_commitment_not_a_cent_more(app):
    """Basic and Pro each commit to 20.01 a month; an upgrade on 16 April splits the 30-day month in halves of
    10.005. Each half was rounded on its own (10.01 + 10.01), so a customer without usage was trued up 20.02 for a
    month committed at 20.01. The period's commitment is rounded once (20.01) and split between the two in
    proportion (largest remainder): 10.01 + 10.00."""
    b.seller(app)
    _meter(app, "units", field="n")
    _plan(app, "basic", [_usage("units", config={"unit_price": "0.10"}, name="Units"), _commitment("20.01")])
    _plan(app, "pro", [_usage("units", config={"unit_price": "0.10"}, name="Units"), _commitment("20.01")])
    clock_id, cus, sub = _start(app, "basic", at=(2026, 4, 1))
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 16))
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "pro", when="now")
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    assert b.lines_of(app, cus) == [
        ("true_up", "2026-04-01", "2026-04-16", "10.01"),
        ("true_up", "2026-04-16", "2026-05-01", "10.00"),
    ]
    april = b.invoices_of(app, cus)[0]
    with app.uow() as uow:
        why = [explain.explain_line(uow, april["id"], line["id"]) for line in april["lines"]]
    assert [(w["usage"]["minimum"], w["usage"]["period_minimum"]) for w in why] == [
        ("10.01", "20.01"),
        ("10.00", "20.01"),
    ]


def test_monthly__two_prorated_commitments_are_added_up_exactly_before_their_one_rounding(app):
    """Half-even seller. Basic commits to 10.00 a month, Pro to 25.15; an upgrade on 2 April (30 days): 10.00 × 1/30
    + 25.15 × 29/30 = 24.645 exactly, 24.64 half to even. Each prorated commitment was written to 28 digits
    (0.3333…33 and 24.3116…67) and their sum, 24.645000…0033, was rounded up to 24.65."""
    b.seller(app, rounding_policy="half_even")
    _meter(app, "units", field="n")
    _plan(app, "basic", [_usage("units", config={"unit_price": "0.10"}, name="Units"), _commitment("10.00")])
    _plan(app, "pro", [_usage("units", config={"unit_price": "0.10"}, name="Units"), _commitment("25.15")])
    clock_id, cus, sub = _start(app, "basic", at=(2026, 4, 1))
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "pro", when="now")
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    assert b.lines_of(app, cus) == [
        ("true_up", "2026-04-01", "2026-04-02", "0.33"),
        ("true_up", "2026-04-02", "2026-05-01", "24.31"),
    ]


def test_monthly__a_prorated_commitment_is_explained_as_the_commitment_times_the_part_of_the_period(app):
    """A subscription from 16 March commits to 20.00 a month: March's commitment is 20.00 × 16/31 = 10.32, and
    50 units (5.00) true up 5.32. The explanation said "Minimum commitment 10.32 EUR for the period", which is
    not the commitment an auditor finds in the contract, and not how 10.32 came about; it says so now, as
    prorated included units do."""
    b.seller(app)
    _meter(app, "units", field="n")
    _plan(app, "metered", [_usage("units", config={"unit_price": "0.10"}, name="Units"), _commitment("20")])
    clock_id, cus, _sub = _start(app, "metered", at=(2026, 3, 16))
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 18))
    _send(app, cus, (b.utc(2026, 3, 17), {"n": 50}), code="units")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert b.lines_of(app, cus) == [
        ("usage", "2026-03-16", "2026-04-01", "5.00"),
        ("true_up", "2026-03-16", "2026-04-01", "5.32"),
    ]
    march = b.invoices_of(app, cus)[0]
    with app.uow() as uow:
        why = explain.explain_line(uow, march["id"], march["lines"][1]["id"])
    assert (why["usage"]["minimum"], why["usage"]["minimum_per_period"], why["usage"]["share"]) == (
        "10.32",
        "20.00",
        "16/31",
    )
    assert (
        "Minimum commitment 20.00 EUR per period × 16/31 (the part of the period billed) = 10.32 EUR; usage lines "
        "came to 5.00 EUR; the true-up bills the shortfall."
    ) in why["explanation"]


def test_monthly__group_values_holding_the_separator_are_billed_apart(app):
    """Two dimensions: ("x|y", "z") and ("x", "y|z") are different groups, each billed on its own line (they
    once shared a charge key, and the customer could not be billed)."""
    b.seller(app)
    _meter(app, group_by=["a", "b"])
    _plan(app, "api", [_usage("api_calls", config={"unit_price": "0.01"})])
    clock_id, cus, _sub = _start(app, "api")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 5))
    sent = _send(
        app,
        cus,
        (b.utc(2026, 3, 4), {"calls": 1000, "a": "x|y", "b": "z"}),
        (b.utc(2026, 3, 4), {"calls": 700, "a": "x", "b": "y|z"}),
    )
    assert not sent.rejected
    with app.uow() as uow:
        assert live_usage.live_usage(uow, cus)["amount"] == "17.00"
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    lines = b.invoices_of(app, cus)[0]["lines"]
    assert sorted((ln["description"], ln["amount"]) for ln in lines) == [
        ("API calls (x, y|z): 700", "7.00"),
        ("API calls (x|y, z): 1000", "10.00"),
    ]


def test_monthly__a_dimension_price_names_one_group_even_when_values_hold_the_separator(app):
    """Dimension prices were looked up by the group's values joined with "|": on a meter of two dimensions,
    ("x|y", "z") and ("x", "y|z") both took the price keyed "x|y|z", though billed on lines of their own. Such a key
    is now refused when the plan is made; a group whose values hold "|" is priced by a JSON list of its values
    ('["x|y", "z"]'), and the usual "eu|gpt-4" keys are read as before."""
    b.seller(app)
    _meter(app, group_by=["a", "b"])
    premium = {"model": "per_unit", "config": {"unit_price": "0.05"}}
    with pytest.raises(ValidationError) as refused, app.uow() as uow:
        catalog.create_plan(uow, "bad", "Bad", [_usage("api_calls", dimensions={"x|y|z": premium})])
    assert (refused.value.code, refused.value.field) == ("invalid_usage", "prices[0].usage.dimensions.x|y|z")
    assert '["x|y", "z"]' in refused.value.message
    for key in ('["x"]', '["x", "y", "z"]'):  # a list of one value per dimension
        with pytest.raises(ValidationError) as refused, app.uow() as uow:
            catalog.create_plan(uow, "bad", "Bad", [_usage("api_calls", dimensions={key: premium})])
        assert (refused.value.code, refused.value.field) == ("invalid_usage", f"prices[0].usage.dimensions.{key}")
    with pytest.raises(ValidationError) as refused, app.uow() as uow:  # one group, written twice
        catalog.create_plan(uow, "bad", "Bad", [_usage("api_calls", dimensions={"u|v": premium, '["u","v"]': premium})])
    assert refused.value.code == "invalid_usage"
    with app.uow() as uow:
        assert uow.conn.execute(select(t.prices.c.id)).first() is None  # nothing written
    dimensions = {'["x|y","z"]': premium, "u|v": {"model": "per_unit", "config": {"unit_price": "0.02"}}}
    _plan(app, "api", [_usage("api_calls", config={"unit_price": "0.01"}, dimensions=dimensions)])
    clock_id, cus, _sub = _start(app, "api")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 5))
    sent = _send(
        app,
        cus,
        (b.utc(2026, 3, 4), {"calls": 1000, "a": "x|y", "b": "z"}),
        (b.utc(2026, 3, 4), {"calls": 700, "a": "x", "b": "y|z"}),
        (b.utc(2026, 3, 4), {"calls": 100, "a": "u", "b": "v"}),
    )
    assert not sent.rejected
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    lines = b.invoices_of(app, cus)[0]["lines"]
    assert sorted((ln["description"], ln["amount"]) for ln in lines) == [
        ("API calls (u, v): 100", "2.00"),
        ("API calls (x, y|z): 700", "7.00"),
        ("API calls (x|y, z): 1000", "50.00"),
    ]


def test_monthly__a_group_canceled_entirely_after_billing_is_credited_and_explained(app):
    """March bills us 3.00 and eu 0.90; every us event is canceled on 2 April: the correction credits 3.00, says
    nothing is measured now, and its explanation names the meter, the group and the canceled event."""
    b.seller(app)
    _meter(app, group_by=["region"])
    _plan(app, "api", [_usage("api_calls", config={"unit_price": "0.01"})])
    clock_id, cus, _sub = _start(app, "api")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 31))
    sent = _send(
        app,
        cus,
        (b.utc(2026, 3, 5), {"calls": 90, "region": "eu"}),
        (b.utc(2026, 3, 30), {"calls": 300, "region": "us"}),
    )
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    with app.uow() as uow:
        usage_cancellation.cancel_events(
            uow, [{"customer_id": cus, "transaction_id": sent.accepted[1]["transaction_id"]}], reason="test traffic"
        )
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 3))
    invoice = b.invoices_of(app, cus)[-1]
    (correction,) = invoice["lines"]
    assert (correction["kind"], correction["quantity"], correction["amount"]) == ("usage_correction", "0", "-3.00")
    assert correction["description"] == "API calls (us): usage corrected for 2026-03-01 – 2026-04-01"
    with app.uow() as uow:
        why = explain.explain_line(uow, invoice["id"], correction["id"])
    assert [x["reason"] for x in why["canceled_events"]] == ["test traffic"]
    assert (
        "Meter api_calls for region=us: no event counts in this period any more, so this line credits what was billed for it."
        in why["explanation"]
    )
    assert why["usage_events"][0]["list"].endswith("&group=region%3Aus")


def test_a_percentage_model_cannot_take_included_units_through_a_dimension_or_an_override(app):
    """Included units cannot be taken from transactions: refused when a dimension, or a customer's negotiated
    price, would rate a price with included units by percentage (it once billed all of them)."""
    b.seller(app)
    _meter(app, group_by=["region"])
    percent = {"model": "percentage", "config": {"rate": "1"}}
    with pytest.raises(ValidationError) as refused, app.uow() as uow:
        catalog.create_plan(uow, "bad", "Bad", [_usage("api_calls", included_units="1000", dimensions={"eu": percent})])
    assert (refused.value.code, refused.value.field) == ("invalid_usage", "prices[0].usage.dimensions.eu.model")
    _plan(app, "api", [_usage("api_calls", included_units="1000")])
    clock_id, cus, _sub = _start(app, "api")
    with app.uow() as uow:
        price_id = uow.conn.execute(select(t.prices.c.id).where(t.prices.c.usage.is_not(None))).scalar_one()
    with pytest.raises(ValidationError) as refused, app.uow() as uow:
        catalog.set_price_override(uow, cus, price_id, "percentage", {"rate": "1"})
    assert (refused.value.code, refused.value.field) == ("invalid_usage", "model")


def test_monthly__a_line_rated_by_a_negotiated_price_explains_that_price_as_billed(app):
    """The list price is volume tiers; this customer negotiated 0.01 a call. The explanation showed only the list
    price ("model volume") beside a breakdown of the negotiated one, so the line could not be checked from it. It
    now records the negotiated model and settings when the line is billed: a later change of the override does
    not rewrite what was billed. A dimension's own model is not the negotiated one and says nothing of it."""
    b.seller(app)
    _meter(app, group_by=["region"])
    volume = {"tiers": [{"up_to": "1000", "unit_price": "0.05"}, {"up_to": None, "unit_price": "0.04"}]}
    eu = {"model": "per_unit", "config": {"unit_price": "0.02"}}
    _plan(app, "api", [_usage("api_calls", model="volume", config=volume, dimensions={"eu": eu})])
    clock_id, cus, _sub = _start(app, "api")
    with app.uow() as uow:
        price_id = uow.conn.execute(select(t.prices.c.id)).scalar_one()
        override_id = catalog.set_price_override(uow, cus, price_id, "per_unit", {"unit_price": "0.01"})
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(
        app,
        cus,
        (b.utc(2026, 3, 2), {"calls": 300, "region": "us"}),
        (b.utc(2026, 3, 3), {"calls": 100, "region": "eu"}),
    )
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    with app.uow() as uow:  # renegotiated after March's usage, before it is billed: March is billed at 0.02
        catalog.set_price_override(uow, cus, price_id, "per_unit", {"unit_price": "0.02"})
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    invoice = b.invoices_of(app, cus)[0]
    eu_line, us_line = invoice["lines"]
    assert [(ln["description"], ln["amount"]) for ln in invoice["lines"]] == [
        ("API calls (eu): 100", "2.00"),
        ("API calls (us): 300", "6.00"),
    ]
    with app.uow() as uow:
        catalog.set_price_override(uow, cus, price_id, "per_unit", {"unit_price": "0.03"})  # after billing
        why = explain.explain_line(uow, invoice["id"], us_line["id"])
        eu_why = explain.explain_line(uow, invoice["id"], eu_line["id"])
    assert why["negotiated_price"] == {
        "override_id": override_id,
        "model": "per_unit",
        "config": {"unit_price": "0.02"},
    }
    assert why["price"]["model"] == "volume"  # the list price, as configured
    assert (
        f"This customer's negotiated price ({override_id}) replaced the list price's model: per_unit, unit_price \"0.02\"."
        in why["explanation"]
    )
    assert [bd["amount"] for bd in why["breakdown"]] == ["6.00"]
    assert eu_why["negotiated_price"] is None
    assert not any("negotiated" in sentence for sentence in eu_why["explanation"])


def test_monthly__an_explanation_says_how_its_breakdown_was_rounded_and_discounted_to_the_amount(app):
    """1,000,000 calls at 0.0000125 JPY: the breakdown comes to 12.5 JPY, billed as 13 (half up, yen have no
    decimals), less 10% (1 JPY): 12. The sentences went from the breakdown's 12.5000000 straight to "Amount: 12
    JPY", leaving both the rounding and the coupon unsaid."""
    b.seller(app, "JPY")
    _meter(app)
    _plan(app, "api", [{**_usage("api_calls", config={"unit_price": "0.0000125"}), "currency": "JPY"}])
    with app.uow() as uow:
        catalog.create_coupon(uow, "TEN", "Ten percent", percent_off="10", duration="forever")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id, "JPY")
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "api", anchor="calendar", coupon="TEN")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, cus, (b.utc(2026, 3, 2), {"calls": 1_000_000}))
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    invoice = b.invoices_of(app, cus)[0]
    (line,) = invoice["lines"]
    assert (line["subtotal"], line["discount"], line["amount"]) == ("13", "1", "12")
    with app.uow() as uow:
        why = explain.explain_line(uow, invoice["id"], line["id"])
    assert why["explanation"][-3:] == [
        "Before rounding: 12.5 JPY; rounded to 13 JPY.",
        "Subtotal 13 JPY, discount 1 JPY: amount 12 JPY.",
        "Amount: 12 JPY.",
    ]
    assert sum(D(bd["amount"]) for bd in why["breakdown"]) == D("12.5")


def test_monthly__an_amount_off_coupon_is_taken_from_the_fee_first_and_usage_keeps_its_price(app):
    """10.00 off every month on a 49.00 fee in advance and usage in arrears: the fee takes the whole discount on
    1 March, and March's usage (15.00) is billed in full at its end, as live usage showed it, with no adjustment
    of the fee's discount."""
    b.seller(app)
    _meter(app)
    _plan(app, "api", [_fixed("49.00"), _usage("api_calls", config={"unit_price": "0.01"})])
    with app.uow() as uow:
        catalog.create_coupon(uow, "TEN", "Ten off", amount_off="10.00", currency_code="EUR", duration="forever")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "api", anchor="calendar", coupon="TEN")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, cus, (b.utc(2026, 3, 9), {"calls": 1500}))
    with app.uow() as uow:
        shown = live_usage.live_usage(uow, cus)
    assert (shown["amount"], shown["subscriptions"][0]["items"][0]["discount"]) == ("15.00", "0.00")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    april = b.invoices_of(app, cus)[1]
    assert [(ln["kind"], ln["amount"]) for ln in april["lines"]] == [("usage", "15.00"), ("subscription", "39.00")]


def test_a_meter_a_phase_or_a_scheduled_change_will_bill_is_taken_and_one_it_leaves_is_free(app):
    """The rule once read each subscription's plan at creation: a phase into a metered plan let a second
    subscription bill the same events (twice), and a scheduled change off the meter kept it refused."""
    from datetime import date

    from remit.domain.errors import Conflict

    b.seller(app)
    _meter(app)
    _plan(app, "basic", [_fixed("10.00")])
    _plan(app, "api", [_usage("api_calls", config={"unit_price": "1"})])
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        phased = subscriptions.create_subscription(
            uow, cus, "basic", anchor="calendar", phases=[{"on": date(2026, 4, 1), "plan": "api"}]
        )
    for at in (None, b.utc(2026, 4, 2)):  # before the phase and once it took effect
        if at is not None:
            clocks.advance(app.uow, clock_id, at)
        with pytest.raises(Conflict) as err, app.uow() as uow:
            subscriptions.create_subscription(uow, cus, "api", anchor="calendar")
        assert err.value.code == "meter_already_billed" and phased in err.value.message
    other = b.customer(app, clock_id)  # the other way round: a phase into the meter another subscription bills
    with app.uow() as uow:
        subscriptions.create_subscription(uow, other, "api", anchor="calendar")
    with pytest.raises(Conflict) as err, app.uow() as uow:
        subscriptions.create_subscription(uow, other, "basic", phases=[{"on": date(2026, 5, 1), "plan": "api"}])
    assert err.value.code == "meter_already_billed"
    with app.uow() as uow:  # moved off the meter at its period's end: free from then
        subscriptions.change_plan(uow, phased, "basic", when="period_end")
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "api", anchor="calendar", start_on=date(2026, 5, 1))


def test_a_time_weighted_quantity_is_written_one_way_by_live_usage_the_invoice_line_and_its_explanation(app):
    """1 GB held 8 of March's 31 days is 8/31 GB-months: 0.2580645161290322580645161290 to 28 digits, whose last
    one is a 0. Quantities drop trailing zeros ("a whole number exactly, anything else to 28 significant
    digits"): live usage, the line's quantity, its description and its explanation all said it, but live usage
    and the line's quantity kept the 0 and the description and the explanation did not."""
    b.seller(app)
    _meter(app, "storage", aggregation="weighted_sum", field="gb")
    _plan(app, "store", [_usage("storage", config={"unit_price": "2.00"}, name="Storage")])
    clock_id, cus, _sub = _start(app, "store", at=(2026, 3, 1))
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 24))
    _send(app, cus, (b.utc(2026, 3, 24), {"gb": 1}), code="storage")
    written = "0.258064516129032258064516129"
    with app.uow() as uow:
        (item,) = live_usage.live_usage(uow, cus)["subscriptions"][0]["items"]
    assert item["quantity"] == written
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    (line,) = [ln for ln in b.invoices_of(app, cus)[-1]["lines"] if ln["kind"] == "usage"]
    assert line["description"] == f"Storage: {written}"
    assert line["quantity"] == written
    with app.uow() as uow:
        shown = explain.explain_line(uow, line["invoice_id"], line["id"])
    assert shown["quantity"] == shown["usage"]["quantity"] == written


def test_a_rounded_quantity_is_written_one_way_by_live_usage_the_invoice_line_and_its_explanation(app):
    """A meter rounding to 3 decimals measures 1415.4 minutes: live usage and the line's quantity said 1415.400,
    the line's description and its explanation 1415.4. Written once, without trailing zeros, everywhere."""
    b.seller(app)
    _meter(app, "minutes", field="m", rounding="round", rounding_precision=3)
    _plan(app, "calls", [_usage("minutes", config={"unit_price": "0.01"}, name="Minutes")])
    clock_id, cus, _sub = _start(app, "calls", at=(2026, 3, 1))
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, cus, (b.utc(2026, 3, 9), {"m": "1000.25"}), (b.utc(2026, 3, 9, 1), {"m": "415.15"}), code="minutes")
    with app.uow() as uow:
        (item,) = live_usage.live_usage(uow, cus)["subscriptions"][0]["items"]
    assert (item["quantity"], item["billable_units"], item["amount"]) == ("1415.4", "1415.4", "14.15")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    (line,) = [ln for ln in b.invoices_of(app, cus)[-1]["lines"] if ln["kind"] == "usage"]
    assert (line["description"], line["quantity"]) == ("Minutes: 1415.4", "1415.4")
    with app.uow() as uow:
        shown = explain.explain_line(uow, line["invoice_id"], line["id"])
    assert shown["quantity"] == shown["usage"]["quantity"] == "1415.4"
    assert "Measured 1415.4; the meter rounds (round) to 3 decimals: 1415.4." in shown["explanation"]


def test_an_overage_on_prorated_included_units_is_rounded_once_from_its_exact_amount(app):
    """From 11 April: 20 of 30 days, so 100 included calls become 100 × 20/30 = 66.666... (no finite decimal).
    75 calls at 0.0006 bill (75 - 200/3) × 0.0006 = 25/3 × 0.0006 = 0.005 exactly: 0.01 half up. Written to 28
    digits first (66.66666666666666666666666667), the included units made it 0.004999...998, rounded to 0.00."""
    b.seller(app)
    _meter(app)
    _plan(app, "api", [_usage("api_calls", config={"unit_price": "0.0006"}, included_units="100")])
    clock_id, cus, _sub = _start(app, "api", at=(2026, 4, 11))
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 20))
    assert not _send(app, cus, (b.utc(2026, 4, 18), {"calls": 75})).rejected
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    invoice = b.invoices_of(app, cus)[0]
    line = invoice["lines"][0]
    assert (line["kind"], line["amount"]) == ("usage", "0.01")
    with app.uow() as uow:
        explained = explain.explain_line(uow, invoice["id"], line["id"])
    assert "Before rounding: 0.005 EUR; rounded to 0.01 EUR." in explained["explanation"], explained["explanation"]
