"""Phases, changes scheduled at period end, plan versions and negotiated prices, on a test clock."""

from datetime import date

import pytest

from remit.service_layer import catalog, clocks, subscriptions
from tests import builders as b


def test_monthly__in_advance__anniversary__phases_intro_then_list_price(app):
    """Three months on an introductory plan (10.00), then the list price (30.00): phases on period boundaries
    need no proration."""
    b.seller(app)
    b.plan(app, "intro", "10.00")
    b.plan(app, "std", "30.00")
    clock_id = b.clock(app, b.utc(2026, 2, 10))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        subscriptions.create_subscription(
            uow, cus, "intro", anchor="anniversary", phases=[{"on": date(2026, 5, 10), "plan": "std"}]
        )
    clocks.advance(app.uow, clock_id, b.utc(2026, 6, 10))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-02-10", "2026-03-10", "10.00"),
        ("subscription", "2026-03-10", "2026-04-10", "10.00"),
        ("subscription", "2026-04-10", "2026-05-10", "10.00"),
        ("subscription", "2026-05-10", "2026-06-10", "30.00"),
        ("subscription", "2026-06-10", "2026-07-10", "30.00"),
    ]


def test_monthly__in_advance__calendar__phase_inside_a_period_is_prorated(app):
    """A phase on 10 May with calendar periods splits May: intro for 9/31 (2.90), std for 22/31 (21.29)."""
    b.seller(app)
    b.plan(app, "intro", "10.00")
    b.plan(app, "std", "30.00")
    clock_id = b.clock(app, b.utc(2026, 4, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        subscriptions.create_subscription(
            uow, cus, "intro", anchor="calendar", phases=[{"on": date(2026, 5, 10), "plan": "std"}]
        )
    clocks.advance(app.uow, clock_id, b.utc(2026, 6, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-04-01", "2026-05-01", "10.00"),
        ("subscription", "2026-05-01", "2026-05-10", "2.90"),
        ("subscription", "2026-05-10", "2026-06-01", "21.29"),
        ("subscription", "2026-06-01", "2026-07-01", "30.00"),
    ]


@pytest.mark.parametrize(
    ("timing", "expected"),
    [
        (
            "in_advance",
            [
                ("subscription", "2026-03-01", "2026-04-01", "30.00"),
                ("subscription", "2026-04-01", "2026-05-01", "20.00"),
                ("subscription", "2026-05-01", "2026-06-01", "20.00"),
            ],
        ),
        (
            "in_arrears",
            [
                ("subscription", "2026-03-01", "2026-04-01", "30.00"),
                ("subscription", "2026-04-01", "2026-05-01", "20.00"),
            ],
        ),
    ],
)
def test_monthly__calendar__downgrade_at_period_end_has_no_proration(app, timing, expected):
    b.seller(app)
    b.plan(app, "basic", "30.00", timing=timing)
    b.plan(app, "lite", "20.00", timing=timing)
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    with app.uow() as uow:
        change = subscriptions.change_plan(uow, sub, "lite", when="period_end")
    assert change["effective_on"] == date(2026, 4, 1)
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    assert b.lines_of(app, cus) == expected
    assert all(kind == "subscription" for kind, *_ in b.lines_of(app, cus))


def test_monthly__in_advance__calendar__price_override_for_one_customer(app):
    """A negotiated 24.00 replaces the 30.00 list price for one customer only, prorations included."""
    b.seller(app)
    b.plan(app, "basic", "30.00")
    with app.uow() as uow:
        price_id = catalog.plan_price(uow, "basic", "EUR")["id"]
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    negotiated, listed = b.customer(app, clock_id), b.customer(app, clock_id)
    with app.uow() as uow:
        catalog.set_price_override(uow, negotiated, price_id, "flat", {"amount": "24.00"})
    subs = {}
    for cus in (negotiated, listed):
        with app.uow() as uow:
            subs[cus] = subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 21))  # 10 of April's 30 days are left
    for cus in (negotiated, listed):
        with app.uow() as uow:
            subscriptions.cancel(uow, subs[cus])
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    assert b.lines_of(app, negotiated) == [
        ("subscription", "2026-03-01", "2026-04-01", "24.00"),
        ("subscription", "2026-04-01", "2026-05-01", "24.00"),
        ("proration", "2026-04-21", "2026-05-01", "-8.00"),
    ]
    assert b.lines_of(app, listed) == [
        ("subscription", "2026-03-01", "2026-04-01", "30.00"),
        ("subscription", "2026-04-01", "2026-05-01", "30.00"),
        ("proration", "2026-04-21", "2026-05-01", "-10.00"),
    ]


def test_monthly__in_advance__calendar__plan_versions_and_migration(app):
    """v2 (35.00) is published: the existing subscriber stays on v1 (30.00) and a new one gets v2; migrating
    moves the v1 subscriber at the end of the current period, without proration."""
    b.seller(app)
    b.plan(app, "basic", "30.00")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    early, late = b.customer(app, clock_id), b.customer(app, clock_id)
    with app.uow() as uow:
        subscriptions.create_subscription(uow, early, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    with app.uow() as uow:
        published = catalog.publish_plan_version(
            uow, "basic", [{"currency": "EUR", "model": "flat", "config": {"amount": "35.00"}, "interval": "month"}]
        )
    assert published["version"] == 2
    with app.uow() as uow:
        subscriptions.create_subscription(uow, late, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 15))
    assert b.lines_of(app, early)[-1] == ("subscription", "2026-04-01", "2026-05-01", "30.00")  # still v1
    with app.uow() as uow:
        assert subscriptions.migrate_plan_version(uow, "basic", 2) == 1  # the v2 subscriber needs no move
    clocks.advance(app.uow, clock_id, b.utc(2026, 6, 1))
    assert b.lines_of(app, early) == [
        ("subscription", "2026-03-01", "2026-04-01", "30.00"),
        ("subscription", "2026-04-01", "2026-05-01", "30.00"),
        ("subscription", "2026-05-01", "2026-06-01", "35.00"),
        ("subscription", "2026-06-01", "2026-07-01", "35.00"),
    ]
    assert b.lines_of(app, late) == [
        ("subscription", "2026-03-10", "2026-04-01", "24.84"),  # 22/31 × 35.00
        ("subscription", "2026-04-01", "2026-05-01", "35.00"),
        ("subscription", "2026-05-01", "2026-06-01", "35.00"),
        ("subscription", "2026-06-01", "2026-07-01", "35.00"),
    ]


def test_monthly__in_advance__calendar__migration_follows_each_subscribers_timeline_not_its_first_plan(app):
    """Intro (10.00) with a phase to list (40.00) on 1 April; another subscriber with a phase on 1 May. On 10 April,
    migrating intro to v2 at the periods' end (1 May) moves neither: both are on list by then (the first was once
    moved back to intro, the second's phase lost to the migration); migrating list to v2 (45.00) moves both."""
    b.seller(app)
    b.plan(app, "intro", "10.00")
    b.plan(app, "list", "40.00")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    moved_on, moving = b.customer(app, clock_id), b.customer(app, clock_id)
    with app.uow() as uow:
        subscriptions.create_subscription(
            uow, moved_on, "intro", anchor="calendar", phases=[{"on": date(2026, 4, 1), "plan": "list"}]
        )
        subscriptions.create_subscription(
            uow, moving, "intro", anchor="calendar", phases=[{"on": date(2026, 5, 1), "plan": "list"}]
        )
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 10))
    flat = {"currency": "EUR", "model": "flat", "interval": "month"}
    with app.uow() as uow:
        catalog.publish_plan_version(uow, "intro", [{**flat, "config": {"amount": "12.00"}}])
        catalog.publish_plan_version(uow, "list", [{**flat, "config": {"amount": "45.00"}}])
    with app.uow() as uow:
        assert subscriptions.migrate_plan_version(uow, "intro", 2) == 0
        assert subscriptions.migrate_plan_version(uow, "list", 2) == 2  # both on list at their periods' end
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 2))
    assert b.lines_of(app, moved_on)[-1] == ("subscription", "2026-05-01", "2026-06-01", "45.00")
    assert b.lines_of(app, moving)[-1] == ("subscription", "2026-05-01", "2026-06-01", "45.00")
