"""The published worked examples (shared/reference/README.md), played on a test clock on both databases.

Service ranges are half-open: "6-30 Apr" reads (2026-04-06, 2026-05-01).
"""

import pytest

from remit.service_layer import clocks, subscriptions
from tests import builders as b


def test_monthly__in_advance__calendar__trial_lago_example(app):
    """Lago: $50/month in advance, 5-day trial from 1 Apr, calendar anchor -> first invoice 6-30 Apr = 50 × 25/30."""
    b.seller(app, "USD")
    b.plan(app, "basic", "50.00", currency="USD")
    clock_id = b.clock(app, b.utc(2026, 4, 1))
    cus = b.customer(app, clock_id, "USD")
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "basic", anchor="calendar", trial_days=5)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 5, 23, 59))
    assert b.lines_of(app, cus) == []  # nothing is billed during the trial
    with app.uow() as uow:
        assert subscriptions.get_subscription(uow, sub)["status"] == "trialing"

    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-04-06", "2026-05-01", "41.67"),
        ("subscription", "2026-05-01", "2026-06-01", "50.00"),
    ]
    first = b.invoices_of(app, cus)[0]
    assert (first["issued_on"], first["total"], first["amount_due"]) == ("2026-04-06", "41.67", "41.67")
    with app.uow() as uow:
        assert subscriptions.get_subscription(uow, sub)["status"] == "active"


@pytest.mark.parametrize(("timing", "billed_on"), [("in_advance", "2026-08-10"), ("in_arrears", "2026-09-01")])
def test_monthly__calendar__proration_lago_example(app, timing, billed_on):
    """Lago: $50/month from 10 Aug on a calendar anchor: 22 days of 31 -> 22 × 50 / 31 = 35.48."""
    b.seller(app, "USD")
    b.plan(app, "basic", "50.00", currency="USD", timing=timing)
    clock_id = b.clock(app, b.utc(2026, 8, 10))
    cus = b.customer(app, clock_id, "USD")
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 9, 1))
    assert b.lines_of(app, cus)[0] == ("subscription", "2026-08-10", "2026-09-01", "35.48")
    first = b.invoices_of(app, cus)[0]
    assert (first["issued_on"], first["total"]) == (billed_on, "35.48")


def test_monthly__in_advance__anniversary__upgrade_stripe_example(app):
    """Stripe: $10 -> $20 halfway through a 30-day month: -5.00 for unused time, +10.00 for the rest, net +5.00."""
    b.seller(app, "USD")
    b.plan(app, "basic", "10.00", currency="USD")
    b.plan(app, "pro", "20.00", currency="USD")
    clock_id = b.clock(app, b.utc(2026, 4, 1))
    cus = b.customer(app, clock_id, "USD")
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "basic", anchor="anniversary")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 16))  # 15 of April's 30 days are left
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "pro", when="now")
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-04-01", "2026-05-01", "10.00"),
        ("proration", "2026-04-16", "2026-05-01", "-5.00"),
        ("subscription", "2026-04-16", "2026-05-01", "10.00"),
        ("subscription", "2026-05-01", "2026-06-01", "20.00"),
    ]
    invoices = b.invoices_of(app, cus)
    assert [i["total"] for i in invoices] == ["10.00", "5.00", "20.00"]
    correction = invoices[1]["lines"][0]
    assert correction["corrects_line_id"] == invoices[0]["lines"][0]["id"]
    assert correction["description"] == "Unused time on Basic"


def test_monthly__in_arrears__calendar__upgrade_lago_example(app):
    """Lago: A €100/month in arrears from 1 Jan, B €200 from 15 Jan -> A 14/31 × 100 = 45.16, B 17/31 × 200 = 109.68."""
    b.seller(app)
    b.plan(app, "a", "100.00", timing="in_arrears")
    b.plan(app, "b", "200.00", timing="in_arrears")
    clock_id = b.clock(app, b.utc(2026, 1, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "a", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 1, 15))
    assert b.lines_of(app, cus) == []  # nothing is billed before the period closes
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "b", when="now")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-01-01", "2026-01-15", "45.16"),
        ("subscription", "2026-01-15", "2026-02-01", "109.68"),
        ("subscription", "2026-02-01", "2026-03-01", "200.00"),
    ]
    invoices = b.invoices_of(app, cus)
    assert [(i["issued_on"], i["total"]) for i in invoices] == [("2026-02-01", "154.84"), ("2026-03-01", "200.00")]
