"""Changes at the edges: inside a first, partial period, during or right after a trial, on a period boundary."""

import pytest

from remit.service_layer import catalog, clocks, subscriptions
from tests import builders as b


def _setup(app, start, timing="in_advance"):
    b.seller(app)
    b.plan(app, "basic", "30.00", timing=timing)
    b.plan(app, "pro", "50.00", timing=timing)
    clock_id = b.clock(app, b.utc(*start))
    return clock_id, b.customer(app, clock_id)


@pytest.mark.parametrize(
    ("trial_days", "first", "credit"),
    [
        # From 10 Feb: 19/28 × 30 = 20.36 billed; 10 days used = 10.71, so the correction is 10.71 - 20.36.
        (None, ("subscription", "2026-02-10", "2026-03-01", "20.36"), "-9.65"),
        # Trial to 15 Feb: 14/28 × 30 = 15.00 billed; 5 days used = 5.36, so the correction is 5.36 - 15.00.
        (5, ("subscription", "2026-02-15", "2026-03-01", "15.00"), "-9.64"),
    ],
)
def test_monthly__in_advance__calendar__upgrade_inside_the_first_partial_period(app, trial_days, first, credit):
    """The credit is for the unused time from the upgrade day (20 Feb), not from the day billing began."""
    clock_id, cus = _setup(app, (2026, 2, 10))
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "basic", anchor="calendar", trial_days=trial_days)
    clocks.advance(app.uow, clock_id, b.utc(2026, 2, 20))
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "pro", when="now")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 1))
    assert b.lines_of(app, cus) == [
        first,
        ("proration", "2026-02-20", "2026-03-01", credit),
        ("subscription", "2026-02-20", "2026-03-01", "16.07"),  # 9/28 × 50
        ("subscription", "2026-03-01", "2026-04-01", "50.00"),
    ]


def test_monthly__in_advance__calendar__upgrade_during_the_trial_bills_the_new_plan_from_the_trial_end(app):
    clock_id, cus = _setup(app, (2026, 4, 1))
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "basic", anchor="calendar", trial_days=14)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 5))
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "pro", when="now")
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-04-15", "2026-05-01", "26.67"),  # 16/30 × 50
        ("subscription", "2026-05-01", "2026-06-01", "50.00"),
    ]


def test_monthly__in_advance__anniversary__trial_moves_the_anchor_to_the_trial_end(app):
    clock_id, cus = _setup(app, (2026, 4, 1))
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "basic", anchor="anniversary", trial_days=14)
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 15))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-04-15", "2026-05-15", "30.00"),
        ("subscription", "2026-05-15", "2026-06-15", "30.00"),
    ]


def test_monthly__in_advance__calendar__coupon_once_applies_to_the_first_period_after_the_trial(app):
    """40-day trial from 1 Apr ends 11 May: May is 21/31 × 30 = 20.32, half off = 10.16; June is full price."""
    clock_id, cus = _setup(app, (2026, 4, 1))
    with app.uow() as uow:
        catalog.create_coupon(uow, "HALF", "Half", percent_off="50", duration="once")
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "basic", anchor="calendar", trial_days=40, coupon="HALF")
    clocks.advance(app.uow, clock_id, b.utc(2026, 6, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-05-11", "2026-06-01", "10.16"),
        ("subscription", "2026-06-01", "2026-07-01", "30.00"),
    ]


@pytest.mark.parametrize(
    ("timing", "expected"),
    [
        (
            "in_advance",
            [
                ("subscription", "2026-03-01", "2026-04-01", "30.00"),
                ("subscription", "2026-04-01", "2026-05-01", "30.00"),  # billed at 00:00 on 1 Apr...
                ("proration", "2026-04-01", "2026-05-01", "-30.00"),  # ...and credited in full by the cancellation
            ],
        ),
        ("in_arrears", [("subscription", "2026-03-01", "2026-04-01", "30.00")]),
    ],
)
def test_monthly__calendar__cancel_now_on_a_period_boundary_after_that_days_bill_run(app, timing, expected):
    clock_id, cus = _setup(app, (2026, 3, 1), timing)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1, 9))
    with app.uow() as uow:
        assert subscriptions.cancel(uow, sub)["effective_on"].isoformat() == "2026-04-01"
    clocks.advance(app.uow, clock_id, b.utc(2026, 6, 1))
    assert b.lines_of(app, cus) == expected
    with app.uow() as uow:
        assert subscriptions.get_subscription(uow, sub)["status"] == "canceled"


def test_monthly__in_advance__calendar__upgrade_on_the_first_day_after_its_bill_run(app):
    clock_id, cus = _setup(app, (2026, 4, 1))
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1, 12))
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "pro", when="now")
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-04-01", "2026-05-01", "30.00"),
        ("proration", "2026-04-01", "2026-05-01", "-30.00"),
        ("subscription", "2026-04-01", "2026-05-01", "50.00"),
        ("subscription", "2026-05-01", "2026-06-01", "50.00"),
    ]


def test_monthly__in_advance__calendar__customer_time_zone_decides_the_day(app):
    """Los Angeles customer: 1 Apr 00:00 local is 1 Apr 07:00 UTC; at 06:59 UTC it is still March there."""
    b.seller(app)
    b.plan(app, "basic", "30.00")
    clock_id = b.clock(app, b.utc(2026, 3, 1, 8))
    cus = b.customer(app, clock_id, timezone="America/Los_Angeles")
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1, 6, 59))
    assert b.lines_of(app, cus) == [("subscription", "2026-03-01", "2026-04-01", "30.00")]
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1, 7))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-03-01", "2026-04-01", "30.00"),
        ("subscription", "2026-04-01", "2026-05-01", "30.00"),
    ]
