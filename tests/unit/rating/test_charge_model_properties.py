from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from remit.domain.rating.charge_models import (
    ChargeModel,
    ChargeResult,
    FlatCharge,
    GraduatedCharge,
    PackageCharge,
    PercentageCharge,
    PerUnitCharge,
    Tier,
    VolumeCharge,
    parse_charge_model,
)


def decimals(max_value: int, places: int, min_value: Decimal | int = 0) -> st.SearchStrategy[Decimal]:
    return st.decimals(min_value=min_value, max_value=max_value, places=places, allow_nan=False, allow_infinity=False)


prices = decimals(1000, 9)
fees = decimals(100, 2)
units = decimals(10**7, 3)
positive = decimals(10**4, 3, min_value=Decimal("0.001"))


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(set(draw(st.lists(decimals(10**6, 2, min_value=Decimal("0.01")), max_size=5))))
    uppers: list[Decimal | None] = [*bounds, None]
    return tuple(Tier(up_to, draw(prices), draw(fees)) for up_to in uppers)


graduated = st.builds(GraduatedCharge, tier_lists())
volume = st.builds(VolumeCharge, tier_lists())
percentages = st.builds(
    lambda rate, fixed, free, low, high: PercentageCharge(
        rate, fixed, free, *((low, high) if low is None or high is None or low <= high else (high, low))
    ),
    decimals(1, 9),
    fees,
    st.integers(min_value=0, max_value=5),
    st.none() | fees,
    st.none() | fees,
)
models: st.SearchStrategy[ChargeModel] = st.one_of(
    st.builds(FlatCharge, fees),
    st.builds(PerUnitCharge, prices),
    graduated,
    volume,
    st.builds(PackageCharge, positive, fees, decimals(1000, 2)),
    percentages,
)


def assert_sound(result: ChargeResult) -> None:
    assert result.amount >= 0
    assert sum((line.amount for line in result.breakdown), Decimal(0)) == result.amount
    for line in result.breakdown:
        assert line.amount >= 0
        assert line.amount == line.units * line.unit_price + line.flat_fee
        assert line.description


@given(models, units)
def test_breakdown_sums_exactly_to_a_non_negative_amount(model: ChargeModel, quantity: Decimal) -> None:
    result = model.rate(quantity)
    assert result.model == model.kind
    assert result.units == quantity
    assert_sound(result)


@given(percentages, st.lists(decimals(10**5, 2), max_size=12))
def test_percentage_transactions_sum_exactly(model: PercentageCharge, amounts: list[Decimal]) -> None:
    result = model.rate_transactions(amounts)
    assert_sound(result)
    assert result.units == sum(amounts, Decimal(0))
    charged = amounts[model.free_transactions :]
    expected = Decimal(0)
    for amount in charged:
        fee = amount * model.rate_fraction + model.fixed_fee
        if model.min_per_transaction is not None:
            fee = max(fee, model.min_per_transaction)
        if model.max_per_transaction is not None:
            fee = min(fee, model.max_per_transaction)
        expected += fee
    assert result.amount == expected


@given(percentages, st.lists(decimals(10**5, 2, min_value=-(10**5)), max_size=12))
def test_percentage_refunds_net_within_the_line_never_below_zero(
    model: PercentageCharge, amounts: list[Decimal]
) -> None:
    result = model.rate_transactions(amounts)
    sales = [a for a in amounts if a >= 0]
    refunds = [a for a in amounts if a < 0]
    charged = model.rate_transactions(sales).amount
    assert result.amount == max(Decimal(0), charged + sum(refunds, Decimal(0)) * model.rate_fraction)
    assert sum((line.amount for line in result.breakdown), Decimal(0)) == result.amount
    for line in result.breakdown:
        assert line.amount == line.units * line.unit_price + line.flat_fee


@given(models)
def test_to_config_round_trips(model: ChargeModel) -> None:
    config = model.to_config()
    assert parse_charge_model(model.kind, config) == model
    assert parse_charge_model(model.kind, config).to_config() == config


@given(graduated, units, units)
def test_graduated_is_monotonic(model: GraduatedCharge, a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    assert model.rate(low).amount <= model.rate(high).amount


@given(prices, units)
def test_single_tier_graduated_equals_volume_equals_per_unit(price: Decimal, quantity: Decimal) -> None:
    tiers = (Tier(None, price),)
    expected = PerUnitCharge(price).rate(quantity).amount
    assert GraduatedCharge(tiers).rate(quantity).amount == expected
    assert VolumeCharge(tiers).rate(quantity).amount == expected


@given(tier_lists(), units)
def test_graduated_without_fees_never_exceeds_units_times_the_highest_price(
    tiers: tuple[Tier, ...], quantity: Decimal
) -> None:
    # Graduated charges each unit at most the highest tier price it passes through.
    no_fees = tuple(Tier(t.up_to, t.unit_price) for t in tiers)
    highest = max(t.unit_price for t in no_fees)
    assert GraduatedCharge(no_fees).rate(quantity).amount <= quantity * highest


@given(st.builds(PackageCharge, positive, fees, decimals(1000, 2)), units)
def test_package_charges_whole_started_packages(model: PackageCharge, quantity: Decimal) -> None:
    result = model.rate(quantity)
    billable = max(Decimal(0), quantity - model.free_units)
    packages = sum((line.units for line in result.breakdown if "package" in line.description), Decimal(0))
    assert packages == packages.to_integral_value()
    assert (packages - 1) * model.package_size < billable <= packages * model.package_size or billable == 0
    assert result.amount == packages * model.package_price
