"""Coupons on a test clock: percent once, fixed amount for 3 periods, forever; limits and expiry."""

from datetime import date

import pytest
from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.domain.errors import Conflict
from remit.service_layer import catalog, clocks, subscriptions, views
from tests import builders as b


def _subscribe(app, coupon: dict, start: date, until: date, *, code="C", upgrade_on: date | None = None):
    b.seller(app)
    b.plan(app, "basic", "30.00")
    b.plan(app, "pro", "50.00")
    with app.uow() as uow:
        catalog.create_coupon(uow, code, code, **coupon)
    clock_id = b.clock(app, b.utc(start.year, start.month, start.day))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "basic", anchor="calendar", coupon=code)
    if upgrade_on is not None:
        clocks.advance(app.uow, clock_id, b.utc(upgrade_on.year, upgrade_on.month, upgrade_on.day))
        with app.uow() as uow:
            subscriptions.change_plan(uow, sub, "pro", when="now")
    clocks.advance(app.uow, clock_id, b.utc(until.year, until.month, until.day))
    return cus


def _totals(app, cus):
    return [(i["subtotal"], i["discount"], i["total"]) for i in b.invoices_of(app, cus)]


def test_monthly__in_advance__calendar__coupon_percent_once(app):
    cus = _subscribe(app, {"percent_off": "20", "duration": "once"}, date(2026, 3, 1), date(2026, 5, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-03-01", "2026-04-01", "24.00"),
        ("subscription", "2026-04-01", "2026-05-01", "30.00"),
        ("subscription", "2026-05-01", "2026-06-01", "30.00"),
    ]
    assert _totals(app, cus) == [("30.00", "6.00", "24.00"), ("30.00", "0.00", "30.00"), ("30.00", "0.00", "30.00")]


def test_monthly__in_advance__calendar__coupon_percent_once_on_a_prorated_period(app):
    """From 10 Mar: 30.00 × 22/31 = 21.29; 20% of it is 4.258, rounded to 4.26 -> 17.03."""
    cus = _subscribe(app, {"percent_off": "20", "duration": "once"}, date(2026, 3, 10), date(2026, 4, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-03-10", "2026-04-01", "17.03"),
        ("subscription", "2026-04-01", "2026-05-01", "30.00"),
    ]
    assert _totals(app, cus)[0] == ("21.29", "4.26", "17.03")


def test_monthly__in_advance__calendar__coupon_fixed_amount_repeating_3_periods(app):
    coupon = {"amount_off": "5.00", "currency_code": "EUR", "duration": "repeating", "duration_periods": 3}
    cus = _subscribe(app, coupon, date(2026, 3, 1), date(2026, 7, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-03-01", "2026-04-01", "25.00"),
        ("subscription", "2026-04-01", "2026-05-01", "25.00"),
        ("subscription", "2026-05-01", "2026-06-01", "25.00"),
        ("subscription", "2026-06-01", "2026-07-01", "30.00"),
        ("subscription", "2026-07-01", "2026-08-01", "30.00"),
    ]


def test_monthly__in_advance__calendar__coupon_forever(app):
    cus = _subscribe(app, {"percent_off": "10", "duration": "forever"}, date(2026, 3, 1), date(2026, 6, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-03-01", "2026-04-01", "27.00"),
        ("subscription", "2026-04-01", "2026-05-01", "27.00"),
        ("subscription", "2026-05-01", "2026-06-01", "27.00"),
        ("subscription", "2026-06-01", "2026-07-01", "27.00"),
    ]


def test_monthly__in_advance__calendar__coupon_forever_across_an_upgrade(app):
    """10% off forever, 30.00 -> 50.00 on 16 Apr (15 of 30 days left): the credit is 15.00 less its 1.50
    discount, the charge 25.00 less 2.50."""
    cus = _subscribe(
        app,
        {"percent_off": "10", "duration": "forever"},
        date(2026, 4, 1),
        date(2026, 5, 1),
        upgrade_on=date(2026, 4, 16),
    )
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-04-01", "2026-05-01", "27.00"),
        ("proration", "2026-04-16", "2026-05-01", "-13.50"),
        ("subscription", "2026-04-16", "2026-05-01", "22.50"),
        ("subscription", "2026-05-01", "2026-06-01", "45.00"),
    ]
    assert _totals(app, cus)[1] == ("10.00", "1.00", "9.00")


def _times_redeemed(app, code):
    with app.uow() as uow:
        return uow.conn.execute(select(t.coupons.c.times_redeemed).where(t.coupons.c.code == code)).scalar_one()


@pytest.mark.parametrize(
    ("coupon", "error"),
    [
        ({"percent_off": "20", "max_redemptions": 1}, "coupon_exhausted"),
        ({"percent_off": "20", "redeem_by": b.utc(2026, 2, 28)}, "coupon_expired"),
    ],
)
def test_monthly__in_advance__calendar__unredeemable_coupon_changes_nothing(app, coupon, error):
    b.seller(app)
    b.plan(app, "basic", "30.00")
    with app.uow() as uow:
        catalog.create_coupon(uow, "LIMITED", "Limited", **coupon)
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    first, second = b.customer(app, clock_id), b.customer(app, clock_id)
    if error == "coupon_exhausted":  # the one redemption allowed goes to someone else
        other = b.customer(app, clock_id)
        with app.uow() as uow:
            subscriptions.create_subscription(uow, other, "basic", anchor="calendar", coupon="LIMITED")
    redeemed = _times_redeemed(app, "LIMITED")

    with pytest.raises(Conflict) as raised, app.uow() as uow:
        subscriptions.create_subscription(uow, first, "basic", anchor="calendar", coupon="LIMITED")
    assert raised.value.code == error
    with app.uow() as uow:
        assert views.list_subscriptions(uow, customer_id=first) == []  # the subscription was not created

    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, second, "basic", anchor="calendar")
    with pytest.raises(Conflict) as raised, app.uow() as uow:
        subscriptions.apply_coupon(uow, sub, "LIMITED")
    assert raised.value.code == error
    with app.uow() as uow:
        assert subscriptions.get_subscription(uow, sub)["coupons"] == []

    assert _times_redeemed(app, "LIMITED") == redeemed
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert b.lines_of(app, first) == []
    assert b.lines_of(app, second) == [
        ("subscription", "2026-03-01", "2026-04-01", "30.00"),
        ("subscription", "2026-04-01", "2026-05-01", "30.00"),
    ]


@pytest.mark.parametrize(
    ("order", "total"),
    [(("TENPCT", "FIVEOFF"), "85.00"), (("FIVEOFF", "TENPCT"), "85.50")],
)
def test_stacked_coupons_apply_in_the_order_they_were_added(app, order, total):
    """Each coupon takes its share of what the ones before it left: 10 % then 5.00 off 100.00 is 85.00, 5.00 then
    10 % is 85.50. The bill run read them in no defined order (the database's plan decided)."""
    b.seller(app)
    b.plan(app, "big", "100.00")
    with app.uow() as uow:
        catalog.create_coupon(uow, "TENPCT", "TENPCT", percent_off="10", duration="forever")
        catalog.create_coupon(uow, "FIVEOFF", "FIVEOFF", amount_off="5.00", currency_code="EUR", duration="forever")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "big", anchor="calendar")
    for code in order:
        with app.uow() as uow:
            subscriptions.apply_coupon(uow, sub, coupon=code)
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    assert {row[2] for row in _totals(app, cus)[1:]} == {total}
