"""The order credits are consumed in, and exact credit splits (pure domain)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remit.domain.errors import ValidationError
from remit.domain.money import RoundingPolicy, currency
from remit.domain.wallets import (
    GrantBalance,
    consume,
    consumption_order,
    credits_value_minor,
    parse_credits,
    parse_wallet_rate,
    split_credits,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EUR = currency("EUR")


def g(gid, priority=1, granted_days=0, expires_days=None, credits="10", minor=1000, wallet=None):
    return GrantBalance(
        gid,
        wallet or f"w{priority}",
        priority,
        T0 + timedelta(days=granted_days),
        None if expires_days is None else T0 + timedelta(days=expires_days),
        Decimal(credits),
        minor,
    )


def test_order_is_priority_then_earliest_expiry_then_oldest_then_id():
    grants = [
        g("never-old", priority=1, granted_days=0),
        g("late-expiry", priority=1, granted_days=5, expires_days=60),
        g("soon-expiry", priority=1, granted_days=9, expires_days=30),
        g("b-same", priority=1, granted_days=9, expires_days=30),
        g("low-priority-soon", priority=2, expires_days=2),
        g("never-new", priority=1, granted_days=3),
    ]
    assert [x.grant_id for x in consumption_order(grants)] == [
        "b-same",
        "soon-expiry",
        "late-expiry",
        "never-old",
        "never-new",
        "low-priority-soon",
    ]


def test_consume_walks_the_order_and_skips_expired_and_empty_grants():
    grants = [
        g("expired", expires_days=1, minor=5000, credits="50"),
        g("empty", minor=0, credits="0"),
        g("first", expires_days=40, minor=700, credits="7"),
        g("second", minor=1000, credits="10"),
    ]
    taken, after = consume(grants, 1000, T0 + timedelta(days=2))
    assert [(c.grant_id, c.amount_minor, c.credits) for c in taken] == [
        ("first", 700, Decimal("7")),
        ("second", 300, Decimal("3")),
    ]
    assert [(a.grant_id, a.remaining_minor, a.remaining_credits) for a in after] == [
        ("expired", 5000, Decimal("50")),
        ("empty", 0, Decimal("0")),
        ("first", 0, Decimal("0")),
        ("second", 700, Decimal("7")),
    ]


def test_a_grant_expiring_exactly_now_pays_nothing():
    taken, _ = consume([g("x", expires_days=3)], 100, T0 + timedelta(days=3))
    assert taken == []


def test_consuming_less_than_the_credits_hold_leaves_the_rest():
    taken, after = consume([g("x", minor=1000)], 2500, T0)
    assert sum(c.amount_minor for c in taken) == 1000 and after[0].remaining_minor == 0


def test_custom_unit_credits_split_exactly_by_largest_remainder():
    # 10 credits worth 10.00 at 1.00 each... at rate 3: 10 credits = 30.00; taking 10.00 takes 3.333333333
    # credits, and the last part takes the rest exactly.
    value = credits_value_minor(Decimal(10), Decimal(3), RoundingPolicy.HALF_UP, EUR)
    assert value == 3000
    first = split_credits(Decimal(10), 3000, 1000)
    assert first == Decimal("3.333333333")
    second = split_credits(Decimal(10) - first, 2000, 1000)
    assert second == Decimal("3.333333334")  # the larger remainder
    assert split_credits(Decimal(10) - first - second, 1000, 1000) == Decimal("3.333333333")


def test_value_is_rounded_once_by_the_policy():
    assert credits_value_minor(Decimal("0.5"), Decimal("0.05"), RoundingPolicy.HALF_UP, EUR) == 3  # 0.025
    assert credits_value_minor(Decimal("0.5"), Decimal("0.05"), RoundingPolicy.HALF_EVEN, EUR) == 2
    assert credits_value_minor(Decimal(7), Decimal("1"), RoundingPolicy.HALF_UP, currency("JPY")) == 7
    with pytest.raises(ValidationError) as err:
        credits_value_minor(Decimal("0.001"), Decimal(1), RoundingPolicy.HALF_UP, EUR)
    assert err.value.code == "amount_too_small"


def test_value_is_rounded_from_the_exact_product_however_many_digits():
    """21 digits of credits × 11 of rate: the product has 30 digits, which 28-digit arithmetic would round
    (to ...844.005, then half-up to ...844.01) before the policy rounds it."""
    credits, rate = Decimal("3562147716.890109891"), Decimal("37.123456789")
    assert credits * rate == Decimal("132239236844.0050000000000000")  # what the default context makes of it
    assert credits_value_minor(credits, rate, RoundingPolicy.HALF_UP, EUR) == 13223923684400  # ...844.004999...


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("-1", "invalid_amount"),
        ("0", "invalid_amount"),
        (1.5, "float_not_allowed"),
        ("1.0000000001", "too_many_decimals"),
        ("1000000000000", "amount_too_large"),
        ("abc", "invalid_number"),
        ("NaN", "invalid_number"),
        ("1e999999999", "amount_too_large"),  # once a bare decimal.Overflow (a traceback from the CLI)
        ("1e-999999999", "too_many_decimals"),  # once taken: normalize() made it 0, which has no decimals
    ],
)
def test_bad_credits_are_refused(value, code):
    with pytest.raises(ValidationError) as err:
        parse_credits(value)
    assert (err.value.code, err.value.field) == (code, "credits")


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("0", "invalid_rate"),
        ("-2", "invalid_rate"),
        ("0.0000000001", "too_many_decimals"),
        ("1000000000000", "invalid_rate"),
        ("1e999999999", "invalid_rate"),  # once a bare decimal.Overflow
        ("-1e999999999", "invalid_rate"),
        ("1e-999999999", "too_many_decimals"),  # once taken as a rate
    ],
)
def test_bad_rates_are_refused(value, code):
    with pytest.raises(ValidationError) as err:
        parse_wallet_rate(value)
    assert (err.value.code, err.value.field) == (code, "rate")


credits_st = st.decimals(min_value=Decimal("0.000000001"), max_value=Decimal("999999999"), places=9)
rates_st = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1000"), places=6)


@st.composite
def wallets_st(draw):
    grants = []
    for i in range(draw(st.integers(1, 6))):
        credits = draw(credits_st)
        rate = draw(rates_st)
        minor = RoundingPolicy.HALF_UP.round_minor(credits * rate, EUR)
        if minor <= 0:
            continue
        expires = draw(st.none() | st.integers(1, 90))
        grants.append(g(f"g{i}", draw(st.integers(1, 3)), draw(st.integers(0, 30)), expires, credits, minor))
    return grants


@given(wallets_st(), st.lists(st.integers(0, 10**9), min_size=1, max_size=8), st.integers(0, 100))
def test_consumption_plus_remaining_is_what_was_granted_and_never_negative(grants, invoices, day):
    granted = {x.grant_id: (x.remaining_credits, x.remaining_minor) for x in grants}
    consumed = {x.grant_id: [Decimal(0), 0] for x in grants}
    at = T0 + timedelta(days=day)
    current = grants
    for due in invoices:
        usable = sum(x.remaining_minor for x in current if x.usable_at(at))
        taken, current = consume(current, due, at)
        assert sum(c.amount_minor for c in taken) == min(due, usable)
        for c in taken:
            assert c.amount_minor > 0 and c.credits >= 0
            consumed[c.grant_id][0] += c.credits
            consumed[c.grant_id][1] += c.amount_minor
    for x in current:
        credits, minor = granted[x.grant_id]
        assert x.remaining_credits >= 0 and x.remaining_minor >= 0
        assert x.remaining_credits + consumed[x.grant_id][0] == credits
        assert x.remaining_minor + consumed[x.grant_id][1] == minor
        if x.remaining_minor == 0:
            assert x.remaining_credits == 0  # the last consumption takes every credit that is left


@given(wallets_st(), st.integers(1, 10**7))
def test_one_consumption_takes_from_grants_in_order_only(grants, due):
    taken, _ = consume(grants, due, T0)
    order = [x.grant_id for x in consumption_order([x for x in grants if x.usable_at(T0)])]
    ids = [c.grant_id for c in taken]
    assert ids == order[: len(ids)]
    by_id = {x.grant_id: x for x in grants}
    # every grant but the last one taken from is emptied
    for c in taken[:-1]:
        assert c.amount_minor == by_id[c.grant_id].remaining_minor


@given(
    st.decimals(min_value=Decimal("0.000000001"), max_value=Decimal("999999999999.999999999"), places=9),
    st.integers(1, 10**15),
    st.data(),
)
def test_splits_stay_exact_at_the_limits(credits, remaining_minor, data):
    """Credits in units of 10^-9 times money in minor units pass Decimal's 28 digits: the split is in integers."""
    take = data.draw(st.integers(0, remaining_minor))
    part = split_credits(credits, remaining_minor, take)
    assert 0 <= part <= credits
    exact = credits * take / remaining_minor if take else Decimal(0)
    assert abs(part - exact) <= Decimal("0.000000001")


@pytest.mark.parametrize("code", ["EUR", "JPY", "KWD", "CLF"])
def test_huge_grants_are_refused_before_rounding(code):
    with pytest.raises(ValidationError) as err:
        credits_value_minor(
            Decimal("999999999999.999999999"), Decimal("999999999999"), RoundingPolicy.HALF_UP, currency(code)
        )
    assert err.value.code == "amount_too_large"
    assert credits_value_minor(Decimal(10) ** 9, Decimal(1), RoundingPolicy.HALF_UP, currency(code)) == 10 ** (
        9 + currency(code).minor_units
    )
