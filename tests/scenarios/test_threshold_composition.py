"""Threshold billing composed with the rest of usage billing, on the test clock.

Two customers on the same plan receive the same usage; one has a usage threshold. Whatever happens in the
period, the period's invoices of the first must add up to what the second's period-end invoice bills."""

import random
from decimal import Decimal

import pytest

from remit.service_layer import alerts, catalog, clocks, subscriptions, usage, usage_cancellation
from tests import builders as b


def _price(model="per_unit", config=None, name="API calls", **terms):
    return {
        "currency": "EUR",
        "model": model,
        "config": config or {"unit_price": "0.01"},
        "name": name,
        "usage": {"meter": "api_calls", **terms},
    }


FEE = {"currency": "EUR", "model": "flat", "config": {"amount": "49.00"}, "name": "Platform fee"}
MINIMUM = {"currency": "EUR", "model": "flat", "config": {"amount": "50.00"}, "usage": {"minimum": True}}


def _pair(app, prices, threshold="5.00", coupon=None):
    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "api_calls", "API calls", "sum", "calls", group_by=["region"])
        catalog.create_plan(uow, "api", "Api", prices)
        catalog.create_plan(uow, "api2", "Api2", [_price(config={"unit_price": "0.02"})])
        if coupon:
            catalog.create_coupon(uow, "C", "C", **coupon)
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    subs = []
    for _ in range(2):
        cus = b.customer(app, clock_id)
        with app.uow() as uow:
            sub = subscriptions.create_subscription(
                uow, cus, "api", anchor="calendar", **({"coupon": "C"} if coupon else {})
            )
        subs.append((cus, sub))
    with app.uow() as uow:
        alerts.set_usage_threshold(uow, subs[0][1], threshold)
    return clock_id, subs


def _send(app, subs, at, calls, region="eu", value_field="calls"):
    events = [
        {
            "customer_id": cus,
            "code": "api_calls",
            "transaction_id": f"{cus}-{at.isoformat()}-{calls}-{region}",
            "timestamp": at.isoformat(),
            "properties": {value_field: calls, "region": region},
        }
        for cus, _sub in subs
    ]
    with app.uow() as uow:
        result = usage.ingest(uow, events)
    assert not result.rejected, result.rejected


def _total(app, cus):
    """What the customer's invoices add up to (exact: decimal strings)."""
    return sum((Decimal(i["total"]) for i in b.invoices_of(app, cus)), Decimal(0))


def _run(app, clock_id, subs, days, end=(2026, 4, 1)):
    for day, calls in days:
        clocks.advance(app.uow, clock_id, b.utc(2026, 3, day, 13))
        _send(app, subs, b.utc(2026, 3, day, 12), calls)
    clocks.advance(app.uow, clock_id, b.utc(*end))


DAYS = [(3, 333), (7, 777), (12, 1201), (20, 59), (28, 4003)]


@pytest.mark.parametrize(
    "prices",
    [
        [_price("package", {"package_size": "100", "package_price": "1.00"})],
        [
            _price(
                "volume", {"tiers": [{"up_to": "1000", "unit_price": "0.02"}, {"up_to": None, "unit_price": "0.001"}]}
            )
        ],
        [_price("percentage", {"rate": "0.015"})],
        [FEE, _price(included_units="1000")],
        [_price(dimensions={"eu": {"model": "per_unit", "config": {"unit_price": "0.03"}}})],
        [_price(), MINIMUM],
        [FEE, _price(config={"unit_price": "0.001"}), MINIMUM],
    ],
    ids=["package", "volume", "percentage", "included", "dimension", "minimum", "minimum_with_fee"],
)
def test_threshold_invoices_and_the_period_end_add_up_to_one_invoice(app, prices):
    clock_id, subs = _pair(app, prices)
    _run(app, clock_id, subs, DAYS, end=(2026, 4, 2))
    kinds = [k for k, *_ in b.lines_of(app, subs[0][0])]
    assert "usage_threshold" in kinds, kinds
    assert _total(app, subs[0][0]) == _total(app, subs[1][0]), (
        b.lines_of(app, subs[0][0]),
        b.lines_of(app, subs[1][0]),
    )


@pytest.mark.parametrize(
    "coupon",
    [
        {"amount_off": "10.00", "currency_code": "EUR", "duration": "forever"},
        {"amount_off": "10.00", "currency_code": "EUR", "duration": "once"},
        {"percent_off": "10", "duration": "once"},
    ],
    ids=["amount_forever", "amount_once", "percent_once"],
)
def test_a_coupon_discounts_the_period_once_across_threshold_invoices(app, coupon):
    clock_id, subs = _pair(app, [_price()], coupon=coupon)
    _run(app, clock_id, subs, DAYS, end=(2026, 4, 2))
    assert _total(app, subs[0][0]) == _total(app, subs[1][0]), (
        b.lines_of(app, subs[0][0]),
        b.lines_of(app, subs[1][0]),
    )


def test_one_advance_over_the_threshold_and_the_period_end(app):
    clock_id, subs = _pair(app, [FEE, _price()])
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, subs, b.utc(2026, 3, 10), 2000)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    assert _total(app, subs[0][0]) == _total(app, subs[1][0]), (
        b.lines_of(app, subs[0][0]),
        b.lines_of(app, subs[1][0]),
    )


@pytest.mark.parametrize("when", ["now", "period_end"])
def test_a_plan_change_after_a_threshold_invoice(app, when):
    clock_id, subs = _pair(app, [_price()])
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, subs, b.utc(2026, 3, 10), 800)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 11))
    assert [k for k, *_ in b.lines_of(app, subs[0][0])] == ["usage_threshold"]
    for _cus, sub in subs:
        with app.uow() as uow:
            subscriptions.change_plan(uow, sub, "api2", when="now" if when == "now" else "period_end")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20, 13))
    _send(app, subs, b.utc(2026, 3, 20), 300)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    assert _total(app, subs[0][0]) == _total(app, subs[1][0]), (
        b.lines_of(app, subs[0][0]),
        b.lines_of(app, subs[1][0]),
    )


@pytest.mark.parametrize("at_period_end", [False, True])
def test_a_cancellation_after_a_threshold_invoice(app, at_period_end):
    clock_id, subs = _pair(app, [FEE, _price()])
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, subs, b.utc(2026, 3, 10), 800)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 11))
    _send(app, subs, b.utc(2026, 3, 11), 300)
    for _cus, sub in subs:
        with app.uow() as uow:
            subscriptions.cancel(uow, sub, at_period_end=at_period_end)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    assert _total(app, subs[0][0]) == _total(app, subs[1][0]), (
        b.lines_of(app, subs[0][0]),
        b.lines_of(app, subs[1][0]),
    )


def test_a_late_event_after_the_period_end(app):
    clock_id, subs = _pair(app, [_price()])
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, subs, b.utc(2026, 3, 10), 800)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1, 6))
    _send(app, subs, b.utc(2026, 3, 31, 12), 300)
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 2))
    assert _total(app, subs[0][0]) == _total(app, subs[1][0]), (
        b.lines_of(app, subs[0][0]),
        b.lines_of(app, subs[1][0]),
    )


def _paid(app, cus):
    invs = b.invoices_of(app, cus)
    return [sum((Decimal(i[k]) for i in invs), Decimal(0)) for k in ("total", "applied_credits", "amount_due")]


def test_threshold_invoices_paid_by_credits(app):
    applies_to = None
    from remit.service_layer import wallets

    clock_id, subs = _pair(app, [FEE, _price()])
    for cus, _sub in subs:
        with app.uow() as uow:
            wallet = wallets.create_wallet(uow, cus, applies_to=applies_to)["id"]
            wallets.grant(uow, wallet, "70")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    _send(app, subs, b.utc(2026, 3, 10), 800)
    _send(app, subs, b.utc(2026, 3, 10), 900, region="us")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 11))
    with app.uow() as uow:
        usage_cancellation.cancel_events(
            uow,
            [
                {"customer_id": cus, "transaction_id": f"{cus}-{b.utc(2026, 3, 10).isoformat()}-800-eu"}
                for cus, _ in subs
            ],
        )
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 12, 13))
    _send(app, subs, b.utc(2026, 3, 12), 300)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    assert _paid(app, subs[0][0]) == _paid(app, subs[1][0]), (b.lines_of(app, subs[0][0]), b.lines_of(app, subs[1][0]))


MIXED = [
    [
        FEE,
        _price(
            "graduated",
            {"tiers": [{"up_to": "500", "unit_price": "0.013"}, {"up_to": None, "unit_price": "0.007"}]},
            included_units="200",
        ),
        MINIMUM,
    ],
    [
        _price(
            "package",
            {"package_size": "100", "package_price": "1.00", "free_units": "50"},
            dimensions={
                "us": {
                    "model": "volume",
                    "config": {
                        "tiers": [{"up_to": "300", "unit_price": "0.02"}, {"up_to": None, "unit_price": "0.011"}]
                    },
                }
            },
        )
    ],
    [FEE, _price("percentage", {"rate": "0.015", "fixed_fee": "0.03"})],
]


@pytest.mark.parametrize("seed", range(12))
def test_random_usage_changes_and_coupons_bill_the_same_with_and_without_a_threshold(app, seed):
    """Seeded random usage over a month, with canceled events, plan changes at once and a cancellation (at once or
    at the period's end), on three plans and with coupons: the same invoiced total with a threshold as without."""
    rnd = random.Random(seed)
    coupon = rnd.choice(
        [
            None,
            {"amount_off": "7.00", "currency_code": "EUR", "duration": "forever"},
            {"percent_off": "15", "duration": "once"},
        ]
    )
    clock_id, subs = _pair(app, MIXED[seed % 3], threshold=rnd.choice(["0.50", "3.00", "9.00"]), coupon=coupon)
    sent: list[str] = []
    plan = "api"
    days = sorted(rnd.sample(range(2, 31), 8))
    for day in days:
        clocks.advance(app.uow, clock_id, b.utc(2026, 3, day, 13))
        for _ in range(rnd.randint(1, 3)):
            txn = f"t{len(sent)}"
            calls, region, hour = rnd.randint(1, 700), rnd.choice(["eu", "us", "asia"]), rnd.randint(0, 12)
            events = [
                {
                    "customer_id": cus,
                    "code": "api_calls",
                    "transaction_id": txn,
                    "timestamp": b.utc(2026, 3, day, hour).isoformat(),
                    "properties": {"calls": calls, "region": region},
                }
                for cus, _sub in subs
            ]
            with app.uow() as uow:
                assert not usage.ingest(uow, events).rejected
            sent.append(txn)
        change = rnd.random()
        if change < 0.2:
            plan = "api2" if plan == "api" else "api"
            for _cus, sub in subs:
                with app.uow() as uow:
                    subscriptions.change_plan(uow, sub, plan)
        elif change < 0.3 and day == days[-2]:
            at_period_end = rnd.random() < 0.5
            for _cus, sub in subs:
                with app.uow() as uow:
                    subscriptions.cancel(uow, sub, at_period_end=at_period_end)
            break
        if rnd.random() < 0.3:
            txn = rnd.choice(sent)
            with app.uow() as uow:
                usage_cancellation.cancel_events(uow, [{"customer_id": cus, "transaction_id": txn} for cus, _ in subs])
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    assert _total(app, subs[0][0]) == _total(app, subs[1][0]), (
        b.lines_of(app, subs[0][0]),
        b.lines_of(app, subs[1][0]),
    )
