"""Live usage, usage alerts and threshold billing on the test clock.

Usage arrives while the clock stands still; advancing the clock evaluates the customers that received usage at
the clock's time (before the bill run of that moment), so alerts fire and threshold invoices are written in time
order.
"""

import pytest
from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.service_layer import (
    alerts,
    catalog,
    clocks,
    live_usage,
    subscriptions,
    usage,
    usage_cancellation,
    wallets,
)
from tests import builders as b


def _setup(app, prices, at=(2026, 3, 1), code="api"):
    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "api_calls", "API calls", "sum", "calls", group_by=["region"])
        catalog.create_plan(uow, code, code.title(), prices)
    clock_id = b.clock(app, b.utc(*at))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, code, anchor="calendar")
    return clock_id, cus, sub


def _usage_price(unit_price="0.01", **terms):
    return {
        "currency": "EUR",
        "model": "per_unit",
        "config": {"unit_price": unit_price},
        "name": "API calls",
        "usage": {"meter": "api_calls", **terms},
    }


FEE = {"currency": "EUR", "model": "flat", "config": {"amount": "49.00"}, "name": "Platform fee"}


def _send(app, cus, at, calls, region="eu", txn=None):
    event = {
        "customer_id": cus,
        "code": "api_calls",
        "transaction_id": txn or f"{at.isoformat()}-{calls}-{region}",
        "timestamp": at.isoformat(),
        "properties": {"calls": calls, "region": region},
    }
    with app.uow() as uow:
        result = usage.ingest(uow, [event])
    assert not result.rejected, result.rejected


def _events(app, type_):
    with app.uow() as uow:
        rows = uow.conn.execute(select(t.events).where(t.events.c.type == type_).order_by(t.events.c.id)).mappings()
        return [dict(r) for r in rows]


def test_usage_alert_fires_once_per_threshold_per_period_and_again_next_period(app):
    clock_id, cus, _sub = _setup(app, [_usage_price()])
    with app.uow() as uow:
        alert = alerts.create_alert(uow, cus, "usage", ["1000", "5000", "10000"], meter="api_calls")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 5))
    _send(app, cus, b.utc(2026, 3, 5), 1200)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 6))
    fired = _events(app, "usage.alert_triggered")
    assert [e["data"]["threshold"] for e in fired] == ["1000"]
    assert fired[0]["data"] == {
        "alert_id": alert["id"],
        "kind": "usage",
        "meter": "api_calls",
        "group": None,
        "threshold": "1000",
        "value": "1200",
        "currency": None,
        "subscription_id": _sub,
        "period": {"start_on": "2026-03-01", "end_on": "2026-04-01"},
    }
    assert fired[0]["created_at"] == b.utc(2026, 3, 5)  # when the usage arrived: the clock's time then
    # More usage, crossing two thresholds at once: each fires once, ascending.
    _send(app, cus, b.utc(2026, 3, 6), 9000)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 7))
    _send(app, cus, b.utc(2026, 3, 7), 10)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 8))
    assert [e["data"]["threshold"] for e in _events(app, "usage.alert_triggered")] == ["1000", "5000", "10000"]
    # Next period: the count starts again, and so do the alerts.
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    _send(app, cus, b.utc(2026, 4, 2), 1500)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 3))
    fired = _events(app, "usage.alert_triggered")
    assert [(e["data"]["period"]["start_on"], e["data"]["threshold"]) for e in fired] == [
        ("2026-03-01", "1000"),
        ("2026-03-01", "5000"),
        ("2026-03-01", "10000"),
        ("2026-04-01", "1000"),
    ]


def test_usage_alert_on_one_group_counts_only_that_group(app):
    clock_id, cus, _sub = _setup(app, [_usage_price()])
    with app.uow() as uow:
        alerts.create_alert(uow, cus, "usage", ["100"], meter="api_calls", group={"region": "us"})
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 5))
    _send(app, cus, b.utc(2026, 3, 5), 500, region="eu")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 6))
    assert _events(app, "usage.alert_triggered") == []
    _send(app, cus, b.utc(2026, 3, 6), 100, region="us")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 7))
    assert [e["data"]["value"] for e in _events(app, "usage.alert_triggered")] == ["100"]


def test_spend_alert_watches_the_usage_amount_after_included_units(app):
    """0.01 a call after 1,000 included: 3,000 calls cost 20.00, crossing 10.00 and 20.00, not 50.00."""
    clock_id, cus, sub = _setup(app, [FEE, _usage_price(included_units="1000")])
    with app.uow() as uow:
        alerts.create_alert(uow, cus, "spend", ["10.00", "20.00", "50.00"], subscription_id=sub)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, cus, b.utc(2026, 3, 10), 3000)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 11))
    fired = _events(app, "usage.alert_triggered")
    assert [(e["data"]["threshold"], e["data"]["value"], e["data"]["currency"]) for e in fired] == [
        ("10.00", "20.00", "EUR"),
        ("20.00", "20.00", "EUR"),
    ]
    # Evaluating again (more advances, no new usage) fires nothing more.
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    assert len(_events(app, "usage.alert_triggered")) == 2


def test_live_usage_equals_what_the_period_end_invoice_bills(app):
    clock_id, cus, _sub = _setup(app, [FEE, _usage_price(included_units="1000")])
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    _send(app, cus, b.utc(2026, 3, 5), 2500, region="eu")
    _send(app, cus, b.utc(2026, 3, 19), 700, region="us")
    with app.uow() as uow:
        live = live_usage.live_usage(uow, cus)
    assert live["amount"] == "15.00"  # included units are per group: eu 1,500 × 0.01; us 700 of 1,000 included
    sub = live["subscriptions"][0]
    assert sub["period"] == {"start_on": "2026-03-01", "end_on": "2026-04-01"}
    assert [(i["group"], i["quantity"], i["billable_units"], i["amount"]) for i in sub["items"]] == [
        ({"region": "eu"}, "2500", "1500", "15.00"),
        ({"region": "us"}, "700", "0", "0.00"),
    ]
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    usage_lines = [ln for ln in b.lines_of(app, cus) if ln[0] == "usage"]
    assert sum(int(ln[3].replace(".", "")) for ln in usage_lines) == int(live["amount"].replace(".", ""))


def test_threshold_invoice_mid_period_and_the_remainder_at_period_end_sum_to_one_invoice(app):
    """Threshold 20.00. 0.01 a call: 2,500 calls on 10 March reach it (25.00 invoiced at once); 1,234 more calls
    follow; at period end the remainder (12.34) is billed as usage since the threshold invoice."""
    clock_id, cus, sub = _setup(app, [FEE, _usage_price()])
    with app.uow() as uow:
        alerts.set_usage_threshold(uow, sub, "20.00")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, cus, b.utc(2026, 3, 10), 1500)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 11))
    assert [ln[0] for ln in b.lines_of(app, cus)] == ["subscription"]  # 15.00 < 20.00: nothing yet
    _send(app, cus, b.utc(2026, 3, 11), 1000)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 12))
    invs = b.invoices_of(app, cus)
    assert [i["billing_reason"] for i in invs] == ["subscription_cycle", "threshold"]
    threshold_line = invs[1]["lines"][0]
    assert (threshold_line["kind"], threshold_line["amount"], threshold_line["revision"]) == (
        "usage_threshold",
        "25.00",
        0,
    )
    assert "so far this period" in threshold_line["description"]
    assert invs[1]["status"] == "open" and invs[1]["number"]
    # Advancing further without usage invoices nothing twice; nor does the bill run credit the early line.
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 25))
    assert len(b.invoices_of(app, cus)) == 2
    _send(app, cus, b.utc(2026, 3, 25), 1234)
    with app.uow() as uow:  # the upcoming invoice already shows the remainder
        preview = clocks.preview_upcoming(uow, cus)
    assert sorted((ln["kind"], ln["amount_minor"]) for ln in preview["lines"]) == [
        ("subscription", 4900),
        ("usage_remainder", 1234),
    ]
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    lines = b.lines_of(app, cus)
    assert lines == [
        ("subscription", "2026-03-01", "2026-04-01", "49.00"),
        ("usage_threshold", "2026-03-01", "2026-04-01", "25.00"),
        ("usage_remainder", "2026-03-01", "2026-04-01", "12.34"),
        ("subscription", "2026-04-01", "2026-05-01", "49.00"),
    ]
    remainder = b.invoices_of(app, cus)[2]["lines"][0]
    assert "since the threshold invoice" in remainder["description"]
    assert remainder["corrects_line_id"] == threshold_line["id"]
    assert _events(app, "usage.threshold_reached")[0]["data"]["unbilled"] == "25.00"


def test_threshold_billing_sums_exactly_to_a_single_period_end_invoice(app):
    """The same usage billed with and without a threshold: graduated tiers, rounding per key once, so the
    threshold invoice plus the remainder equal the single invoice to the cent."""
    tiers = {
        "tiers": [
            {"up_to": "1000", "unit_price": "0.0133"},
            {"up_to": None, "unit_price": "0.0071"},
        ]
    }
    price = {**_usage_price(), "model": "graduated", "config": tiers}
    clock_id, cus, sub = _setup(app, [price])
    other = b.customer(app, clock_id)
    with app.uow() as uow:
        subscriptions.create_subscription(uow, other, "api", anchor="calendar")
        alerts.set_usage_threshold(uow, sub, "5.00")
    for day, calls in [(3, 333), (7, 777), (12, 1201), (20, 59), (28, 4003)]:
        clocks.advance(app.uow, clock_id, b.utc(2026, 3, day, 13))
        for who in (cus, other):
            _send(app, who, b.utc(2026, 3, day, 12), calls)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    with_threshold = b.lines_of(app, cus)
    single = b.lines_of(app, other)
    assert [k for k, *_ in single] == ["usage"]
    assert len(with_threshold) > 2 and with_threshold[0][0] == "usage_threshold"

    def cents(lines):
        return sum(int(amount.replace(".", "")) for *_, amount in lines)

    assert cents(with_threshold) == cents(single)


def test_a_threshold_invoice_is_written_once_even_when_evaluated_again(app):
    clock_id, cus, sub = _setup(app, [_usage_price()])
    with app.uow() as uow:
        alerts.set_usage_threshold(uow, sub, "1.00")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    _send(app, cus, b.utc(2026, 3, 2), 150)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 3))
    with app.uow() as uow:  # look again, as a second worker would
        from remit.service_layer import usage_watch

        usage_watch.watch(uow, cus)
    from remit.service_layer import usage_monitor

    assert usage_monitor.evaluate(app.uow, test_clock_id=clock_id).invoice_ids == []
    assert [i["billing_reason"] for i in b.invoices_of(app, cus)] == ["threshold"]


def test_a_customer_without_usage_prices_has_no_live_usage_and_its_alerts_never_fire(app):
    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "api_calls", "API calls", "sum", "calls")
    b.plan(app, "basic", "10.00")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "basic")
        alerts.create_alert(uow, cus, "usage", ["1"], meter="api_calls")
    _send(app, cus, b.utc(2026, 3, 1), 5, region="eu")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    with app.uow() as uow:
        live = live_usage.live_usage(uow, cus)
    assert (live["subscriptions"], live["amount"], live["unbilled"]) == ([], "0.00", "0.00")
    assert _events(app, "usage.alert_triggered") == []


def test_usage_canceled_after_its_threshold_invoice_is_credited_by_the_period_end_remainder(app):
    """Threshold 20.00, 0.01 a call: 2,500 calls are invoiced at once (25.00); 1,000 of them were sent by mistake
    and are canceled. Live usage shows 15.00 used and 10.00 more billed than used; at the period's end the
    remainder credits 10.00, so the period bills 15.00 in all."""
    clock_id, cus, sub = _setup(app, [FEE, _usage_price()])
    with app.uow() as uow:
        alerts.set_usage_threshold(uow, sub, "20.00")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, cus, b.utc(2026, 3, 10), 1500)
    _send(app, cus, b.utc(2026, 3, 10), 1000, txn="mistake")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 11))
    assert [ln[0] for ln in b.lines_of(app, cus)] == ["subscription", "usage_threshold"]
    with app.uow() as uow:
        result = usage_cancellation.cancel_events(uow, [{"customer_id": cus, "transaction_id": "mistake"}])
    assert len(result.canceled) == 1
    with app.uow() as uow:
        shown = live_usage.live_usage(uow, cus)
    assert (shown["amount"], shown["billed"], shown["unbilled"]) == ("15.00", "25.00", "-10.00")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-03-01", "2026-04-01", "49.00"),
        ("usage_threshold", "2026-03-01", "2026-04-01", "25.00"),
        ("usage_remainder", "2026-03-01", "2026-04-01", "-10.00"),
        ("subscription", "2026-04-01", "2026-05-01", "49.00"),
    ]
    remainder = b.invoices_of(app, cus)[2]["lines"][0]
    assert (
        remainder["description"] == "API calls (eu): usage corrected since the threshold invoice (1500 in the period)"
    )


def _threshold_billed_then_canceled(app):
    """Threshold 5.00: 2,500 us calls invoiced at once on 11 March (25.00), then all of them canceled."""
    clock_id, cus, sub = _setup(app, [FEE, _usage_price()])
    with app.uow() as uow:
        alerts.set_usage_threshold(uow, sub, "5.00")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, cus, b.utc(2026, 3, 10), 2500, region="us", txn="mistake")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 11))
    with app.uow() as uow:
        usage_cancellation.cancel_events(uow, [{"customer_id": cus, "transaction_id": "mistake"}])
    return clock_id, cus


def test_a_group_threshold_billed_then_wholly_canceled_stays_billed_and_brings_no_second_threshold_invoice(app):
    """Threshold 5.00: 2,500 us calls are invoiced at once (25.00), then all canceled. Live usage still shows the
    25.00 billed (owed back at the period's end), so 600 eu calls later (6.00) leave 19.00 owed, not a second
    threshold invoice; the period's end credits the difference."""
    clock_id, cus = _threshold_billed_then_canceled(app)
    with app.uow() as uow:
        shown = live_usage.live_usage(uow, cus)
    assert (shown["amount"], shown["billed"], shown["unbilled"]) == ("0.00", "25.00", "-25.00")
    (item,) = shown["subscriptions"][0]["items"]
    assert (item["meter"], item["group"], item["quantity"], item["billed"]) == (
        "api_calls",
        {"region": "us"},
        "0",
        "25.00",
    )
    _send(app, cus, b.utc(2026, 3, 11), 600, region="eu", txn="real")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 12))
    assert [i["billing_reason"] for i in b.invoices_of(app, cus)].count("threshold") == 1
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    march = [ln for ln in b.lines_of(app, cus) if ln[1] == "2026-03-01"]
    assert march == [
        ("subscription", "2026-03-01", "2026-04-01", "49.00"),
        ("usage_threshold", "2026-03-01", "2026-04-01", "25.00"),
        ("usage", "2026-03-01", "2026-04-01", "6.00"),
        ("usage_remainder", "2026-03-01", "2026-04-01", "-25.00"),
    ]
    april = b.invoices_of(app, cus)[-1]
    remainder = [ln for ln in april["lines"] if ln["kind"] == "usage_remainder"][0]
    assert remainder["description"] == "API calls (us): usage corrected since the threshold invoice (0 in the period)"
    assert april["total"] == "30.00"


def test_a_usage_wallet_pays_nothing_when_the_usage_of_an_invoice_nets_to_a_credit(app):
    """Usage 6.00 (eu) and a -25.00 remainder for the us calls all canceled: the usage fee nets to -19.00, so a wallet
    limited to usage pays nothing (the remainder once recorded no meter, stood apart from the eu line, and the
    wallet paid a share of the 6.00)."""
    clock_id, cus = _threshold_billed_then_canceled(app)
    _send(app, cus, b.utc(2026, 3, 11), 600, region="eu", txn="real")
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus, name="API credits", applies_to={"fee_types": ["usage"]})["id"]
        wallets.grant(uow, wallet, "100")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    april = b.invoices_of(app, cus)[-1]
    assert (april["total"], april["applied_credits"], april["amount_due"]) == ("30.00", "0.00", "30.00")


@pytest.mark.parametrize(
    ("aggregation", "fires"),
    [("latest", []), ("unique_count", []), ("sum", [("15", "20")])],
)
def test_a_plan_change_mid_period_does_not_add_up_seats_or_users_for_an_alert(app, aggregation, fires):
    """10 seats (latest) or 10 users (unique_count) reported before a plan change on 10 March and the same again
    after it are 10, not 20: an alert at 15 does not fire (it did). A sum of 10 and 10 calls is 20 and fires."""
    b.seller(app)
    field = "user" if aggregation == "unique_count" else "calls"
    with app.uow() as uow:
        usage.create_meter(uow, "api_calls", "API calls", aggregation, field)
        catalog.create_plan(uow, "basic", "Basic", [_usage_price("1.00")])
        catalog.create_plan(uow, "pro", "Pro", [_usage_price("2.00")])
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
        alerts.create_alert(uow, cus, "usage", ["15"], meter="api_calls")

    def report(at, prefix):
        props = [{"user": f"u{i}"} for i in range(10)] if aggregation == "unique_count" else [{"calls": 10}]
        batch = [
            {
                "customer_id": cus,
                "code": "api_calls",
                "transaction_id": f"{prefix}{i}",
                "timestamp": at.isoformat(),
                "properties": p,
            }
            for i, p in enumerate(props)
        ]
        with app.uow() as uow:
            assert not usage.ingest(uow, batch).rejected

    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 5))
    report(b.utc(2026, 3, 5), "a")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "pro")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 11))
    report(b.utc(2026, 3, 10, 1), "b")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 12))
    with app.uow() as uow:
        items = live_usage.live_usage(uow, cus)["subscriptions"][0]["items"]
    assert [i["quantity"] for i in items] == ["10", "10"]  # a line per plan, each billed at its plan's price
    fired = [(e["data"]["threshold"], e["data"]["value"]) for e in _events(app, "usage.alert_triggered")]
    assert fired == fires


def test_a_late_event_after_a_period_billed_wholly_by_its_threshold_invoice_is_a_late_correction(app):
    """Threshold 5.00: 800 calls on 10 March are invoiced at once (8.00) and nothing more comes, so the period's
    end bills no remainder. 300 calls dated 31 March arrive on 1 April, after that bill run closed the period:
    they are a late correction of a closed period, as without a threshold, not "usage since the threshold
    invoice"."""
    clock_id, cus, sub = _setup(app, [_usage_price()])
    with app.uow() as uow:
        alerts.set_usage_threshold(uow, sub, "5.00")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, cus, b.utc(2026, 3, 10), 800)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1, 6))
    assert [ln[0] for ln in b.lines_of(app, cus)] == ["usage_threshold"]
    _send(app, cus, b.utc(2026, 3, 31, 12), 300)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    assert b.lines_of(app, cus) == [
        ("usage_threshold", "2026-03-01", "2026-04-01", "8.00"),
        ("usage_correction", "2026-03-01", "2026-04-01", "3.00"),
    ]
    late = b.invoices_of(app, cus)[-1]["lines"][0]
    assert late["description"] == "API calls (eu): usage received late for 2026-03-01 – 2026-04-01"


def test_a_late_event_after_a_cancellation_is_billed_by_the_bill_run_not_a_threshold_invoice(app):
    """Threshold 5.00: 800 calls are invoiced at once on 10 March (8.00); the subscription is canceled on 15 March
    (the bill run bills its end). 600 calls dated 14 March arrive on 20 March: the subscription has no open period
    any more, so the next bill run bills them, not a threshold invoice."""
    clock_id, cus, sub = _setup(app, [_usage_price()])
    with app.uow() as uow:
        alerts.set_usage_threshold(uow, sub, "5.00")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, cus, b.utc(2026, 3, 10), 800)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 15))
    with app.uow() as uow:
        subscriptions.cancel(uow, sub)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    _send(app, cus, b.utc(2026, 3, 14), 600)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 21))
    assert [i["billing_reason"] for i in b.invoices_of(app, cus)] == ["threshold", "subscription_cycle"]
    assert b.lines_of(app, cus) == [
        ("usage_threshold", "2026-03-01", "2026-04-01", "8.00"),  # written before the cancellation
        ("usage_remainder", "2026-03-01", "2026-03-15", "6.00"),
    ]


def test_a_threshold_line_explains_that_it_counts_the_usage_received_by_its_invoice(app):
    """The threshold line's windows run to the period's end, and the events listed there grow after it was billed:
    its explanation says it counted those received by its invoice, and that the rest is billed later."""
    from remit.service_layer import explain

    clock_id, cus, sub = _setup(app, [_usage_price()])
    with app.uow() as uow:
        alerts.set_usage_threshold(uow, sub, "5.00")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, cus, b.utc(2026, 3, 10), 800)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 12))
    _send(app, cus, b.utc(2026, 3, 12), 300)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    threshold, remainder = b.invoices_of(app, cus)
    with app.uow() as uow:
        said = explain.explain_line(uow, threshold["id"], threshold["lines"][0]["id"])["explanation"]
    assert (
        "Billed before the period ended, when the unbilled usage reached the subscription's usage threshold: it "
        "counts the events received by 2026-03-10T00:00:00Z; the rest of the period's usage is billed by a later "
        "threshold invoice or at the period's end (usage_remainder)."
    ) in said
    assert "Meter api_calls: sum of calls for region=eu over 2026-03-01 to 2026-04-01: 800 from 1 event." in said
    with app.uow() as uow:
        said = explain.explain_line(uow, remainder["id"], remainder["lines"][0]["id"])["explanation"]
    assert not any(s.startswith("Billed before the period ended") for s in said)
