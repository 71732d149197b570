"""Negotiated prices (per-customer price overrides) and periods already invoiced.

A period keeps the price it was first invoiced at: a negotiated price set or changed later applies to the periods
not yet invoiced (for usage billed in arrears, the open period too). Corrections of an invoiced period (late
usage, a canceled event, a quantity change, a cancellation) are rated at that period's price, never by re-rating
the whole period at the new one.
"""

import pytest
from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.domain.errors import ValidationError
from remit.service_layer import (
    alerts,
    catalog,
    clocks,
    credit_notes,
    explain,
    invoices,
    live_usage,
    subscriptions,
    usage,
    usage_cancellation,
)
from tests import builders as b


def _usage_customer(app, unit_price="1.00", at=(2026, 2, 1)):
    """A meter ``calls`` and a plan billing ``unit_price`` EUR a call monthly in arrears; a customer on a test
    clock subscribed to it on calendar months. Returns the clock, the customer, the subscription, the price."""
    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "calls", "Calls", "sum", "n")
        catalog.create_plan(
            uow,
            "api",
            "API",
            [
                {
                    "currency": "EUR",
                    "model": "per_unit",
                    "config": {"unit_price": unit_price},
                    "name": "API calls",
                    "usage": {"meter": "calls"},
                }
            ],
        )
    clock_id = b.clock(app, b.utc(*at))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "api", anchor="calendar")
        price_id = uow.conn.execute(select(t.prices.c.id)).scalar_one()
    return clock_id, cus, sub, price_id


def _calls(app, cus, *events):
    """events: (transaction id, time, calls)."""
    return b.send_calls(app, cus, *((txn, at.isoformat(), n) for txn, at, n in events))


def _negotiate(app, cus, price_id, model, config):
    with app.uow() as uow:
        return catalog.set_price_override(uow, cus, price_id, model, config)


def test_monthly__late_usage_after_a_new_negotiated_price_is_billed_at_the_price_the_period_was_invoiced_at(app):
    """February's 45 calls are invoiced on 1 March at the list price (1.00). On 2 March a negotiated 5.00 a call is
    set; on 3 March a call of 28 February arrives (inside the grace period). It is billed at February's price:
    +1.00, not February re-rated at 5.00 (46 × 5.00 - 45.00 = +185.00). March, still open when the price was
    negotiated, is billed at 5.00."""
    clock_id, cus, _sub, price_id = _usage_customer(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 2, 20))
    _calls(app, cus, ("feb", b.utc(2026, 2, 10), 45))
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 1))
    override_id = _negotiate(app, cus, price_id, "per_unit", {"unit_price": "5.00"})
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    assert b.lines_of(app, cus) == [("usage", "2026-02-01", "2026-03-01", "45.00")]
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 3))
    assert not _calls(app, cus, ("late", b.utc(2026, 2, 28), 1), ("mar", b.utc(2026, 3, 2), 2)).rejected
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 4))
    assert b.lines_of(app, cus) == [
        ("usage", "2026-02-01", "2026-03-01", "45.00"),
        ("usage_correction", "2026-02-01", "2026-03-01", "1.00"),
    ]
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert b.lines_of(app, cus)[2:] == [("usage", "2026-03-01", "2026-04-01", "10.00")]
    invoices = b.invoices_of(app, cus)
    correction, march = invoices[1]["lines"][0], invoices[2]["lines"][0]
    assert correction["unit_price"] == "1"
    with app.uow() as uow:
        assert explain.explain_line(uow, invoices[1]["id"], correction["id"])["negotiated_price"] is None
        assert explain.explain_line(uow, invoices[2]["id"], march["id"])["negotiated_price"] == {
            "override_id": override_id,
            "model": "per_unit",
            "config": {"unit_price": "5.00"},
        }


def test_monthly__a_renegotiated_price_leaves_the_period_billed_at_the_earlier_one(app):
    """Negotiated 0.50 from the start; February is billed at it. Renegotiated to 0.20 on 2 March: a late call of
    February is billed at 0.50 (the price February was invoiced at, as its line recorded), March at 0.20."""
    clock_id, cus, _sub, price_id = _usage_customer(app)
    override_id = _negotiate(app, cus, price_id, "per_unit", {"unit_price": "0.50"})
    clocks.advance(app.uow, clock_id, b.utc(2026, 2, 20))
    _calls(app, cus, ("feb", b.utc(2026, 2, 10), 10))
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    _negotiate(app, cus, price_id, "per_unit", {"unit_price": "0.20"})
    _calls(app, cus, ("late", b.utc(2026, 2, 27), 4), ("mar", b.utc(2026, 3, 2), 10))
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert b.lines_of(app, cus) == [
        ("usage", "2026-02-01", "2026-03-01", "5.00"),
        ("usage_correction", "2026-02-01", "2026-03-01", "2.00"),
        ("usage", "2026-03-01", "2026-04-01", "2.00"),
    ]
    invoices = b.invoices_of(app, cus)
    with app.uow() as uow:
        why = explain.explain_line(uow, invoices[1]["id"], invoices[1]["lines"][0]["id"])
    assert why["negotiated_price"] == {
        "override_id": override_id,
        "model": "per_unit",
        "config": {"unit_price": "0.50"},
    }


def test_monthly__an_invoiced_event_canceled_after_a_new_negotiated_price_is_credited_at_the_old_price(app):
    """February: 45 calls at 1.00, invoiced on 1 March. Negotiated 5.00 on 2 March; on 3 March February's event of
    5 calls is canceled: 5.00 is credited (5 × 1.00), not February re-rated (40 × 5.00 - 45.00 = +155.00)."""
    clock_id, cus, _sub, price_id = _usage_customer(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 2, 28))
    assert not _calls(app, cus, ("a", b.utc(2026, 2, 10), 40), ("b", b.utc(2026, 2, 27), 5)).rejected
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    _negotiate(app, cus, price_id, "per_unit", {"unit_price": "5.00"})
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 3))
    with app.uow() as uow:
        assert len(usage_cancellation.cancel_events(uow, [{"customer_id": cus, "transaction_id": "b"}]).canceled) == 1
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 4))
    assert b.lines_of(app, cus) == [
        ("usage", "2026-02-01", "2026-03-01", "45.00"),
        ("usage_correction", "2026-02-01", "2026-03-01", "-5.00"),
    ]


def test_monthly__the_open_period_shows_and_bills_the_new_negotiated_price(app):
    """Live usage and the upcoming invoice agree with the bill run: the open period at the price negotiated during
    it, and a late call of the invoiced period, in the upcoming invoice, at that period's price."""
    clock_id, cus, _sub, price_id = _usage_customer(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 2, 20))
    _calls(app, cus, ("feb", b.utc(2026, 2, 10), 45))
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    _negotiate(app, cus, price_id, "per_unit", {"unit_price": "5.00"})
    _calls(app, cus, ("late", b.utc(2026, 2, 28), 1), ("mar", b.utc(2026, 3, 2), 2))
    with app.uow() as uow:
        live = live_usage.live_usage(uow, cus)
        upcoming = clocks.preview_upcoming(uow, cus)
    assert live["amount"] == "10.00"
    assert [(ln["kind"], ln["amount_minor"]) for ln in upcoming["lines"]] == [("usage_correction", 100)]
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 3))
    with app.uow() as uow:
        upcoming = clocks.preview_upcoming(uow, cus)
    assert [(ln["kind"], ln["amount_minor"]) for ln in upcoming["lines"]] == [("usage", 1000)]
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert b.lines_of(app, cus)[1:] == [
        ("usage_correction", "2026-02-01", "2026-03-01", "1.00"),
        ("usage", "2026-03-01", "2026-04-01", "10.00"),
    ]


def test_monthly__in_advance__a_fee_negotiated_mid_period_applies_from_the_next_period(app):
    """30.00 a month in advance, March invoiced on 1 March. A negotiated 24.00 set on 10 March does not re-rate
    March (no -6.00 on the next run): April is billed at 24.00."""
    b.seller(app)
    b.plan(app, "basic", "30.00")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
        price_id = catalog.plan_price(uow, "basic", "EUR")["id"]
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _negotiate(app, cus, price_id, "flat", {"amount": "24.00"})
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 11))
    assert b.lines_of(app, cus) == [("subscription", "2026-03-01", "2026-04-01", "30.00")]
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-03-01", "2026-04-01", "30.00"),
        ("subscription", "2026-04-01", "2026-05-01", "24.00"),
    ]


def test_monthly__in_advance__a_change_after_a_negotiated_price_corrects_the_period_at_its_invoiced_price(app):
    """Seats at 31.00 a month in advance, 1 seat invoiced on 1 March. Negotiated 62.00 on 5 March; on 17 March
    the quantity goes to 2: the second seat's 15 remaining days of March are billed at March's
    price, 15/31 × 31.00 = 15.00 (not the whole month re-rated: 62.00 + 15/31 × 62.00 - 31.00). Canceling on
    22 March credits the 10 unused days at March's price."""
    b.seller(app)
    b.plan(app, "seats", "31.00", model="per_unit", config={"unit_price": "31.00"})
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "seats", anchor="calendar")
        price_id = catalog.plan_price(uow, "seats", "EUR")["id"]
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 5))
    _negotiate(app, cus, price_id, "per_unit", {"unit_price": "62.00"})
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 17))
    with app.uow() as uow:
        subscriptions.change_quantity(uow, sub, 2)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 22))
    with app.uow() as uow:
        subscriptions.cancel(uow, sub)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert [(kind, amount) for kind, _start, _end, amount in b.lines_of(app, cus)] == [
        ("subscription", "31.00"),
        ("proration", "15.00"),
        ("proration", "-20.00"),
    ]


def test_monthly__an_open_period_billed_early_at_a_threshold_keeps_the_price_it_was_invoiced_at(app):
    """Threshold 20.00 at 1.00 a call: 25 calls on 10 March are invoiced at once (25.00). A price of 0.50 negotiated
    on 15 March does not re-rate them (a -7.50 credit at the period's end, 35 × 0.50 - 25.00): March was invoiced
    at 1.00, so the 10 calls after the threshold invoice are billed at 1.00, as live usage shows; April at 0.50."""
    clock_id, cus, sub, price_id = _usage_customer(app, at=(2026, 3, 1))
    with app.uow() as uow:
        alerts.set_usage_threshold(uow, sub, "20.00")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10, 12))
    _calls(app, cus, ("a", b.utc(2026, 3, 10), 25))
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 11))
    assert b.lines_of(app, cus) == [("usage_threshold", "2026-03-01", "2026-04-01", "25.00")]
    _negotiate(app, cus, price_id, "per_unit", {"unit_price": "0.50"})
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 16))
    _calls(app, cus, ("b", b.utc(2026, 3, 15), 10))
    with app.uow() as uow:
        live = live_usage.live_usage(uow, cus)
    assert (live["amount"], live["billed"], live["unbilled"]) == ("35.00", "25.00", "10.00")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 3))
    _calls(app, cus, ("c", b.utc(2026, 4, 2), 10))
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    assert b.lines_of(app, cus) == [
        ("usage_threshold", "2026-03-01", "2026-04-01", "25.00"),
        ("usage_remainder", "2026-03-01", "2026-04-01", "10.00"),
        ("usage", "2026-04-01", "2026-05-01", "5.00"),
    ]


def _dimension_customer(app):
    """1.00 a call listed on a meter grouped by region, 0.10 in the eu region (a dimension's own model); a
    customer negotiated 0.50 a call before subscribing on 1 March. Returns the clock, the customer, the price and
    a function that sends events (transaction id, time, properties)."""
    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "calls", "Calls", "sum", "n", group_by=["region"])
        catalog.create_plan(
            uow,
            "api",
            "API",
            [
                {
                    "currency": "EUR",
                    "model": "per_unit",
                    "config": {"unit_price": "1.00"},
                    "name": "API calls",
                    "usage": {
                        "meter": "calls",
                        "dimensions": {"eu": {"model": "per_unit", "config": {"unit_price": "0.10"}}},
                    },
                }
            ],
        )
        price_id = uow.conn.execute(select(t.prices.c.id)).scalar_one()
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    _negotiate(app, cus, price_id, "per_unit", {"unit_price": "0.50"})
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "api", anchor="calendar")

    def send(*events):
        batch = [
            {"customer_id": cus, "code": "calls", "transaction_id": txn, "timestamp": at.isoformat(), "properties": p}
            for txn, at, p in events
        ]
        with app.uow() as uow:
            assert not usage.ingest(uow, batch).rejected

    return clock_id, cus, price_id, send


def test_monthly__dimensions__late_usage_takes_the_invoiced_negotiated_price_and_a_dimension_keeps_its_own(app):
    """March is invoiced on 1 April (eu 10 calls: 1.00; us 10 calls at the negotiated 0.50: 5.00); renegotiated to
    0.20 on 2 April. Late calls of 30 March: 2 in the us at 0.50 (March's negotiated price, as the us line recorded
    it; the eu line, which a dimension rated, says nothing of it), 10 in the eu at 0.10. April's us calls at 0.20."""
    clock_id, cus, price_id, send = _dimension_customer(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    send(("eu1", b.utc(2026, 3, 5), {"n": 10, "region": "eu"}), ("us1", b.utc(2026, 3, 6), {"n": 10, "region": "us"}))
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    _negotiate(app, cus, price_id, "per_unit", {"unit_price": "0.20"})
    send(
        ("us2", b.utc(2026, 3, 30), {"n": 2, "region": "us"}),
        ("eu2", b.utc(2026, 3, 30), {"n": 10, "region": "eu"}),
        ("us3", b.utc(2026, 4, 1), {"n": 10, "region": "us"}),
    )
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    lines = [(ln["description"], ln["amount"]) for inv in b.invoices_of(app, cus) for ln in inv["lines"]]
    assert lines == [
        ("API calls (eu): 10", "1.00"),
        ("API calls (us): 10", "5.00"),
        ("API calls (eu): usage received late for 2026-03-01 – 2026-04-01", "1.00"),
        ("API calls (us): usage received late for 2026-03-01 – 2026-04-01", "1.00"),
        ("API calls (us): 10", "2.00"),
    ]


def test_monthly__dimensions__a_group_no_longer_measured_is_credited_without_naming_the_negotiated_price(app):
    """March's only eu event (rated by the eu dimension's own model) is canceled after March was invoiced: the
    credit's explanation does not claim that the customer's negotiated price rated it."""
    clock_id, cus, _price_id, send = _dimension_customer(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 30))
    send(("eu1", b.utc(2026, 3, 28), {"n": 10, "region": "eu"}), ("us1", b.utc(2026, 3, 6), {"n": 10, "region": "us"}))
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    with app.uow() as uow:
        assert usage_cancellation.cancel_events(uow, [{"customer_id": cus, "transaction_id": "eu1"}]).canceled
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 3))
    invoice = b.invoices_of(app, cus)[-1]
    (credit,) = invoice["lines"]
    assert (credit["description"], credit["amount"]) == (
        "API calls (eu): usage corrected for 2026-03-01 – 2026-04-01",
        "-1.00",
    )
    with app.uow() as uow:
        why = explain.explain_line(uow, invoice["id"], credit["id"])
    assert why["negotiated_price"] is None
    assert not any("negotiated" in sentence for sentence in why["explanation"])


def test_a_one_off_charge_of_a_price_the_customer_negotiated_is_billed_at_the_negotiated_price(app):
    """Onboarding is listed at 500.00; this customer negotiated 300.00. A one-off charge of that price was billed at
    the list price (500.00): it is billed at 300.00, like every other line of a negotiated price; another customer
    pays the list price."""
    b.seller(app)
    with app.uow() as uow:
        product_id = catalog.create_product(uow, "Onboarding", "one_off")
        price_id = catalog.create_price(
            uow, product_id, {"currency": "EUR", "model": "flat", "config": {"amount": "500.00"}, "type": "one_off"}
        )
    negotiating, listed = b.customer(app, None), b.customer(app, None)
    _negotiate(app, negotiating, price_id, "flat", {"amount": "300.00"})
    with app.uow() as uow:
        item = credit_notes.add_one_off(uow, negotiating, price_id=price_id)
        other = credit_notes.add_one_off(uow, listed, price_id=price_id)
    assert (item["amount_minor"], other["amount_minor"]) == (30000, 50000)


def test_changing_a_negotiated_price_records_an_event_with_what_it_was(app):
    """Every change records a domain event: setting a negotiated price did, changing it (in place) recorded
    nothing, so a change of what a customer pays left no trace. Both record ``price_override.set`` with the
    negotiated model and settings, and a change the ones it replaced."""
    _clock_id, cus, _sub, price_id = _usage_customer(app)
    override_id = _negotiate(app, cus, price_id, "per_unit", {"unit_price": "0.50"})
    assert _negotiate(app, cus, price_id, "per_unit", {"unit_price": "0.20"}) == override_id
    assert _negotiate(app, cus, price_id, "per_unit", {"unit_price": "0.20"}) == override_id  # no change: no event
    with app.uow() as uow:
        rows = uow.conn.execute(
            select(t.events.c.data).where(t.events.c.type == "price_override.set").order_by(t.events.c.id)
        ).all()
    assert [row.data for row in rows] == [
        {"price_id": price_id, "override_id": override_id, "model": "per_unit", "config": {"unit_price": "0.50"}},
        {
            "price_id": price_id,
            "override_id": override_id,
            "model": "per_unit",
            "config": {"unit_price": "0.20"},
            "previous_model": "per_unit",
            "previous_config": {"unit_price": "0.50"},
        },
    ]


def test_a_negotiated_minimum_commitment_is_a_flat_amount_too(app):
    """A minimum commitment is a flat amount per period (refused otherwise when the price is made); a customer's
    negotiated price for one was accepted with any model, and a percentage of 0.5 made the commitment 0.50."""
    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "units", "Units", "sum", "n")
        catalog.create_plan(
            uow,
            "metered",
            "Metered",
            [
                {"currency": "EUR", "model": "per_unit", "config": {"unit_price": "0.10"}, "usage": {"meter": "units"}},
                {"currency": "EUR", "model": "flat", "config": {"amount": "20.00"}, "usage": {"minimum": True}},
            ],
        )
        minimum = uow.conn.execute(select(t.prices.c.id).where(t.prices.c.model == "flat")).scalar_one()
    cus = b.customer(app, None)
    for model, config in (("percentage", {"rate": "0.5"}), ("per_unit", {"unit_price": "3"})):
        with pytest.raises(ValidationError) as refused, app.uow() as uow:
            catalog.set_price_override(uow, cus, minimum, model, config)
        assert (refused.value.code, refused.value.field) == ("invalid_usage", "model")
    with app.uow() as uow:
        assert uow.conn.execute(select(t.price_overrides.c.id)).first() is None
    _negotiate(app, cus, minimum, "flat", {"amount": "15.00"})


def _committed_customer(app):
    """A plan billing 0.10 a unit with a minimum commitment of 20.00 a month; a customer on calendar months from
    1 March. Returns the clock, the customer and the commitment's price."""
    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "units", "Units", "sum", "n")
        catalog.create_plan(
            uow,
            "metered",
            "Metered",
            [
                {"currency": "EUR", "model": "per_unit", "config": {"unit_price": "0.10"}, "usage": {"meter": "units"}},
                {"currency": "EUR", "model": "flat", "config": {"amount": "20.00"}, "usage": {"minimum": True}},
            ],
        )
        minimum = uow.conn.execute(select(t.prices.c.id).where(t.prices.c.model == "flat")).scalar_one()
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "metered", anchor="calendar")
    return clock_id, cus, minimum


def _units(app, cus, txn, at, n):
    with app.uow() as uow:
        result = usage.ingest(
            uow,
            [
                {
                    "customer_id": cus,
                    "code": "units",
                    "transaction_id": txn,
                    "timestamp": at.isoformat(),
                    "properties": {"n": n},
                }
            ],
        )
    assert not result.rejected


@pytest.mark.parametrize(("negotiated_before", "march_true_up"), [(None, None), ("22.00", "2.00")])
def test_monthly__a_commitment_negotiated_after_a_period_met_it_keeps_that_periods_commitment(
    app, negotiated_before, march_true_up
):
    """March's 25.00 of usage met its commitment (the list 20.00, or 22.00 negotiated before March was invoiced),
    so March was invoiced without a true-up line. On 2 April the commitment is negotiated up to 40.00, then an
    event of 30 March (5.00) is canceled: March is re-rated at 20.00 of usage. It was trued up to 40.00 (a 20.00
    true-up): re-rated at the commitment negotiated after it was invoiced, as March had no true-up line to pin the
    commitment it was invoiced under. March keeps its commitment, as any price does (no true-up against 20.00,
    2.00 against 22.00); April is trued up to 40.00."""
    clock_id, cus, minimum = _committed_customer(app)
    if negotiated_before:
        _negotiate(app, cus, minimum, "flat", {"amount": negotiated_before})
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 6))
    _units(app, cus, "a", b.utc(2026, 3, 5), 200)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 31))
    _units(app, cus, "b", b.utc(2026, 3, 30), 50)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    assert b.lines_of(app, cus) == [("usage", "2026-03-01", "2026-04-01", "25.00")]
    _negotiate(app, cus, minimum, "flat", {"amount": "40.00"})
    with app.uow() as uow:
        assert usage_cancellation.cancel_events(uow, [{"customer_id": cus, "transaction_id": "b"}]).canceled
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    march = [("true_up", "2026-03-01", "2026-04-01", march_true_up)] if march_true_up else []
    assert b.lines_of(app, cus) == [
        ("usage", "2026-03-01", "2026-04-01", "25.00"),
        ("usage_correction", "2026-03-01", "2026-04-01", "-5.00"),
        *march,
        ("true_up", "2026-04-01", "2026-05-01", "40.00"),
    ]


def test_monthly__in_advance__a_fee_taken_off_a_draft_comes_back_at_the_price_negotiated_since(app):
    """Drafts left for review: March's fee (30.00) is on a draft when 24.00 is negotiated; kept, the draft's period
    keeps 30.00; taken off the draft, March is no longer invoiced and comes back at 24.00."""
    b.seller(app, auto_finalize=False)
    b.plan(app, "basic", "30.00")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    kept, removed = b.customer(app, clock_id), b.customer(app, clock_id)
    with app.uow() as uow:
        price_id = catalog.plan_price(uow, "basic", "EUR")["id"]
        for cus in (kept, removed):
            subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    for cus in (kept, removed):
        _negotiate(app, cus, price_id, "flat", {"amount": "24.00"})
    (draft,) = b.invoices_of(app, removed)
    with app.uow() as uow:
        invoices.remove_draft_line(uow, draft["id"], draft["lines"][0]["id"])
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 3))
    assert b.lines_of(app, kept) == [("subscription", "2026-03-01", "2026-04-01", "30.00")]
    assert b.lines_of(app, removed) == [("subscription", "2026-03-01", "2026-04-01", "24.00")]


def test_a_negotiated_price_in_another_currency_than_the_customers_is_refused(app):
    """It could never bill (a customer is billed in their currency only): it was accepted and silently ignored."""
    _clock_id, _cus, _sub, price_id = _usage_customer(app)
    usd_customer = b.customer(app, None, currency="USD")
    with pytest.raises(ValidationError) as refused, app.uow() as uow:
        catalog.set_price_override(uow, usd_customer, price_id, "per_unit", {"unit_price": "0.50"})
    assert (refused.value.code, refused.value.field) == ("currency_mismatch", "price_id")
    with app.uow() as uow:
        assert uow.conn.execute(select(t.price_overrides.c.id)).first() is None
