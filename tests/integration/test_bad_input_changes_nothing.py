"""Bad input gets a stable code and the field at fault, and leaves every table as it was."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from remit.adapters.db.tables import metadata
from remit.domain.errors import RemitError
from remit.service_layer import accounts, catalog, clocks, credit_notes, subscriptions
from tests import builders as b


def _counts(app):
    with app.engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in metadata.sorted_tables}


@pytest.fixture
def world(app):
    b.seller(app)
    b.plan(app, "basic", "10.00")
    b.plan(app, "pro", "20.00")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "basic")
        catalog.create_coupon(uow, "ONCE", "once", percent_off="10", max_redemptions=1)
        catalog.create_coupon(uow, "OLD", "expired", percent_off="10", redeem_by=b.utc(2026, 2, 1))
    other = b.customer(app, clock_id)
    with app.uow() as uow:
        subscriptions.create_subscription(uow, other, "basic", coupon="ONCE")
    canceled_cus = b.customer(app, clock_id)
    with app.uow() as uow:
        canceled = subscriptions.create_subscription(uow, canceled_cus, "basic")
    with app.uow() as uow:
        subscriptions.cancel(uow, canceled)
    return {"app": app, "clock": clock_id, "customer": cus, "sub": sub, "canceled": canceled}


CASES = [
    (
        "negative quantity",
        lambda u, w: subscriptions.change_quantity(u, w["sub"], "-1"),
        "negative_quantity",
        "quantity",
    ),
    ("float quantity", lambda u, w: subscriptions.change_quantity(u, w["sub"], 1.5), "float_not_allowed", "quantity"),
    # Numbers out of range: 1e999999999 once overflowed (a traceback), or was written out in full (a string of a
    # billion digits: minutes, then "string or blob too big"); 1e-999999999 was taken as a quantity or a percent.
    (
        "huge quantity",
        lambda u, w: subscriptions.change_quantity(u, w["sub"], "1e999999999"),
        "invalid_number",
        "quantity",
    ),
    (
        "quantity of 16 digits",
        lambda u, w: subscriptions.create_subscription(u, w["customer"], "basic", quantity=10**15),
        "invalid_number",
        "quantity",
    ),
    (
        "tiny quantity",
        lambda u, w: subscriptions.change_quantity(u, w["sub"], "1e-999999999"),
        "too_many_decimals",
        "quantity",
    ),
    (
        "huge quantity of a phase",
        lambda u, w: subscriptions.create_subscription(
            u, w["customer"], "basic", phases=[{"on": b.utc(2026, 6, 1).date(), "plan": "pro", "quantity": "1e20"}]
        ),
        "invalid_number",
        "phases[0].quantity",
    ),
    (
        "huge quantity of a one-off charge",
        lambda u, w: credit_notes.add_one_off(u, w["customer"], description="Set-up", unit_amount="1", quantity="1e99"),
        "invalid_number",
        "quantity",
    ),
    (
        "huge percent off",
        lambda u, w: catalog.create_coupon(u, "BIG", "big", percent_off="1e999999999"),
        "invalid_number",
        "percent_off",
    ),
    (
        "tiny percent off",
        lambda u, w: catalog.create_coupon(u, "TINY", "tiny", percent_off="1e-999999999"),
        "too_many_decimals",
        "percent_off",
    ),
    (
        "trial of a billion days",  # once an OverflowError (a date past 9999) from `remit subscriptions create`
        lambda u, w: subscriptions.create_subscription(u, w["customer"], "basic", trial_days=999_999_999),
        "invalid_trial",
        "trial_days",
    ),
    (
        "coupon redeemable 3 billion times",  # once a 500: PostgreSQL's integer column (SQLite's from 2^63)
        lambda u, w: catalog.create_coupon(u, "MANY", "many", percent_off="10", max_redemptions=3_000_000_000),
        "invalid_limit",
        "max_redemptions",
    ),
    (
        "promotion code redeemable 10^20 times",
        lambda u, w: catalog.create_promotion_code(u, "ONCE", "MANYNOW", max_redemptions=10**20),
        "invalid_limit",
        "max_redemptions",
    ),
    (
        "coupon repeating for 10^12 periods",  # the API takes at most 1000; the CLI took anything
        lambda u, w: catalog.create_coupon(
            u, "LONG", "long", percent_off="10", duration="repeating", duration_periods=10**12
        ),
        "invalid_duration",
        "duration_periods",
    ),
    (
        "unknown currency",
        lambda u, w: accounts.create_customer(u, "X", currency_code="ABC", country="DE"),
        "unknown_currency",
        "currency",
    ),
    (
        "plan lacks currency",
        lambda u, w: subscriptions.create_subscription(
            u, accounts.create_customer(u, "Y", currency_code="USD", country="US"), "basic"
        ),
        "currency_not_offered",
        "currency",
    ),
    (
        "change a canceled subscription",
        lambda u, w: subscriptions.change_plan(u, w["canceled"], "pro"),
        "subscription_invalid_transition",
        "status",
    ),
    (
        "pause a canceled subscription",
        lambda u, w: subscriptions.pause(u, w["canceled"]),
        "subscription_invalid_transition",
        "status",
    ),
    (
        "exhausted coupon",
        lambda u, w: subscriptions.apply_coupon(u, w["sub"], coupon="ONCE"),
        "coupon_exhausted",
        "coupon",
    ),
    ("expired coupon", lambda u, w: subscriptions.apply_coupon(u, w["sub"], coupon="OLD"), "coupon_expired", "coupon"),
    (
        "unknown coupon",
        lambda u, w: subscriptions.apply_coupon(u, w["sub"], coupon="NOPE"),
        "coupon_not_found",
        "coupon",
    ),
    (
        "change in the past",
        lambda u, w: subscriptions.change_plan(u, w["sub"], "pro", when=b.utc(2026, 2, 1).date()),
        "date_in_past",
        "effective_on",
    ),
    (
        "start in the past",
        lambda u, w: subscriptions.create_subscription(u, w["customer"], "basic", start_on=b.utc(2026, 2, 1).date()),
        "date_in_past",
        "start_on",
    ),
    (
        "phases out of order",
        lambda u, w: subscriptions.create_subscription(
            u,
            w["customer"],
            "basic",
            phases=[{"on": b.utc(2026, 6, 1).date(), "plan": "pro"}, {"on": b.utc(2026, 5, 1).date(), "plan": "basic"}],
        ),
        "dates_out_of_order",
        "phases[1].on",
    ),
    (
        "unknown plan",
        lambda u, w: subscriptions.create_subscription(u, w["customer"], "gold"),
        "plan_not_found",
        "plan",
    ),
    (
        "bad price model",
        lambda u, w: catalog.create_plan(
            u, "bad", "Bad", [{"currency": "EUR", "model": "graduated", "config": {"tiers": []}}]
        ),
        "invalid_tiers",
        None,
    ),
    (
        "unknown subscription",
        lambda u, w: subscriptions.cancel(u, "sub_missing"),
        "subscription_not_found",
        "subscription_id",
    ),
    (
        "negative trial",
        lambda u, w: subscriptions.create_subscription(u, w["customer"], "basic", trial_days=-3),
        "invalid_trial",
        "trial_days",
    ),
]


@pytest.mark.parametrize(("name", "action", "code", "field"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(world, name, action, code, field):
    app = world["app"]
    before = _counts(app)
    with pytest.raises(RemitError) as exc, app.uow() as uow:
        action(uow, world)
    assert exc.value.code == code
    if field is not None:
        assert exc.value.field == field
    assert exc.value.message
    assert _counts(app) == before


def test_a_test_clock_only_moves_forward(world):
    app = world["app"]
    before = _counts(app)
    with pytest.raises(RemitError) as exc:
        clocks.advance(app.uow, world["clock"], b.utc(2026, 3, 1) - timedelta(days=1))
    assert exc.value.code == "dates_out_of_order"
    assert _counts(app) == before
