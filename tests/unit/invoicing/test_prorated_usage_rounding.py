"""A usage line on included units prorated to part of its period is rounded once, from its exact amount.

Included units prorated by 20/30 (or 16/31) have no finite decimal expansion, so a line's overage cannot be written
exactly as a decimal. Its subtotal is rounded from the exact fraction all the same: one that comes to exactly half a
minor unit (0.005 EUR, 0.5 JPY, 0.0005 BHD) is rounded as a half by the entity's policy, not as 0.00499... .
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remit.domain.billing_events import ChangeKind, Item, TimelineEvent
from remit.domain.catalog.model import Price, PriceType, Timing, UsageTerms
from remit.domain.invoicing.generator import SubscriptionTerms, UsageData, propose, usage_windows
from remit.domain.money import RoundingPolicy, currency
from remit.domain.rating.aggregations import Aggregate, Aggregation, Meter
from remit.domain.rating.charge_models import parse_charge_model
from remit.domain.subscriptions.periods import Interval, IntervalUnit

MONTH = Interval(IntervalUnit.MONTH)
METER = Meter("calls", Aggregation.SUM, "n")
APRIL_END = date(2026, 5, 1)


def _line(code: str, model: str, config: dict[str, object], included: str, quantity: str, start: date, policy):
    cur = currency(code)
    price = Price(
        "price_calls",
        "prod",
        cur,
        parse_charge_model(model, config),
        PriceType.RECURRING,
        MONTH,
        Timing.IN_ARREARS,
        name="Calls",
        usage=UsageTerms(meter="calls", included_units=Decimal(included)),
    )
    prices = {price.id: price}
    terms = SubscriptionTerms(
        "sub",
        "cus",
        cur,
        MONTH,
        date(2026, 4, 1),
        None,
        (TimelineEvent(start, ChangeKind.START, (Item(price.id, Decimal(1)),)),),
    )
    ((key, _one_by_one),) = usage_windows(terms, prices, APRIL_END)
    data = UsageData({"calls": METER}, {key: {(): Aggregate(Decimal(quantity), 1)}})
    (line,) = [ln for ln in propose(terms, prices, APRIL_END, policy, data) if ln.price.metered]
    return line


FROM_11_APRIL = date(2026, 4, 11)  # 20 of April's 30 days


@pytest.mark.parametrize(
    ("code", "model", "config", "included", "quantity", "half_up", "half_even", "before_rounding"),
    [
        # (75 - 200/3) × 0.0006 = 0.005 EUR
        ("EUR", "per_unit", {"unit_price": "0.0006"}, "100", "75", 1, 0, "0.005"),
        # (1 - 2/3) × 1.5 = 0.5 JPY
        ("JPY", "per_unit", {"unit_price": "1.5"}, "1", "1", 1, 0, "0.5"),
        # 100 × 0.0003 + (200 - 200/3 - 100) × 0.000015 = 0.03 + 0.0005 = 0.0305 BHD
        (
            "BHD",
            "graduated",
            {"tiers": [{"up_to": "100", "unit_price": "0.0003"}, {"up_to": None, "unit_price": "0.000015"}]},
            "100",
            "200",
            31,
            30,
            "0.0305",
        ),
        # (3 - 2/3) × 0.0015 + 0.001 flat fee = 0.0045 KWD, the volume's second tier
        (
            "KWD",
            "volume",
            {
                "tiers": [
                    {"up_to": "1", "unit_price": "0.5"},
                    {"up_to": None, "unit_price": "0.0015", "flat_fee": "0.001"},
                ]
            },
            "1",
            "3",
            5,
            4,
            "0.0045",
        ),
    ],
)
def test_an_overage_on_prorated_included_units_that_comes_to_a_half_is_rounded_as_a_half(
    code, model, config, included, quantity, half_up, half_even, before_rounding
):
    up = _line(code, model, config, included, quantity, FROM_11_APRIL, RoundingPolicy.HALF_UP)
    even = _line(code, model, config, included, quantity, FROM_11_APRIL, RoundingPolicy.HALF_EVEN)
    assert (up.subtotal_minor, even.subtotal_minor) == (half_up, half_even)
    assert str(up.slices[0].amount) == before_rounding  # what the explanation says it was before rounding


def _graduated_exact(tiers: list[tuple[Decimal | None, Decimal]], units: Fraction) -> Fraction:
    total, lower = Fraction(0), Fraction(0)
    for up_to, price in tiers:
        if units <= lower:
            break
        top = units if up_to is None else min(units, Fraction(up_to))
        total += (top - lower) * Fraction(price)
        lower = top
    return total


@settings(max_examples=300, deadline=None)
@given(
    start_day=st.integers(2, 30),
    included=st.integers(1, 10**6),
    quantity=st.integers(0, 10**12),
    bound=st.integers(1, 10**6),
    low=st.integers(1, 10**6),
    high=st.integers(1, 10**6),
    code=st.sampled_from(["EUR", "JPY", "BHD"]),
    policy=st.sampled_from(list(RoundingPolicy)),
)
def test_a_graduated_overage_is_rounded_from_its_exact_amount(
    start_day, included, quantity, bound, low, high, code, policy
):
    """Tiers at sub-minor-unit prices (0.000001 to 1 per unit), up to 10^12 units, any part of April."""
    tiers = [(Decimal(bound), Decimal(low).scaleb(-6)), (None, Decimal(high).scaleb(-6))]
    config = {"tiers": [{"up_to": str(u) if u is not None else None, "unit_price": str(p)} for u, p in tiers]}
    line = _line(code, "graduated", config, str(included), str(quantity), date(2026, 4, start_day), policy)
    share = Fraction(31 - start_day, 30)
    billable = max(Fraction(0), quantity - included * share)
    assert line.subtotal_minor == policy.round_exact(_graduated_exact(tiers, billable), currency(code))


@settings(max_examples=200, deadline=None)
@given(
    start_day=st.integers(2, 30),
    included=st.integers(1, 10**4),
    quantity=st.integers(0, 10**5),
    bound=st.integers(1, 10**4),
    low=st.integers(1, 10**6),
    high=st.integers(1, 10**6),
    fee=st.integers(0, 10**3),
    size=st.integers(1, 100),
    policy=st.sampled_from(list(RoundingPolicy)),
)
def test_volume_and_package_overages_are_rounded_from_their_exact_amounts(
    start_day, included, quantity, bound, low, high, fee, size, policy
):
    """Near tier bounds and package steps too: the tier and the number of packages are the exact quantity's."""
    share = Fraction(31 - start_day, 30)
    billable = max(Fraction(0), quantity - included * share)
    low_price, high_price, flat = Decimal(low).scaleb(-6), Decimal(high).scaleb(-6), Decimal(fee).scaleb(-3)
    volume = {
        "tiers": [
            {"up_to": str(bound), "unit_price": str(low_price)},
            {"up_to": None, "unit_price": str(high_price), "flat_fee": str(flat)},
        ]
    }
    if billable == 0:
        expected = Fraction(0)
    elif billable <= bound:
        expected = billable * Fraction(low_price)
    else:
        expected = billable * Fraction(high_price) + Fraction(flat)
    line = _line("EUR", "volume", volume, str(included), str(quantity), date(2026, 4, start_day), policy)
    assert line.subtotal_minor == policy.round_exact(expected, currency("EUR"))
    package = {"package_size": str(size), "package_price": str(high_price)}
    packages = -(-billable.numerator // (billable.denominator * size))  # ceil(billable / size)
    line = _line("EUR", "package", package, str(included), str(quantity), date(2026, 4, start_day), policy)
    assert line.subtotal_minor == policy.round_exact(packages * Fraction(high_price), currency("EUR"))
