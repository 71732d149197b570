from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

import pytest

from remit.domain.errors import ValidationError
from remit.domain.rating.charge_models import (
    KINDS,
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

D = Decimal

ZUPLO_TIERS: dict[str, object] = {
    "tiers": [
        {"up_to": "1000", "unit_price": "0.10"},
        {"up_to": "10000", "unit_price": "0.05"},
        {"up_to": None, "unit_price": "0.01"},
    ]
}
LAGO_VOLUME_TIERS: dict[str, object] = {
    "tiers": [
        {"up_to": "10000", "unit_price": "0.0010", "flat_fee": "10"},
        {"up_to": "50000", "unit_price": "0.0008", "flat_fee": "10"},
        {"up_to": "100000", "unit_price": "0.0006", "flat_fee": "10"},
        {"up_to": None, "unit_price": "0.0004", "flat_fee": "10"},
    ]
}
LAGO_PERCENTAGE: dict[str, object] = {
    "rate": "0.012",
    "fixed_fee": "0.10",
    "free_transactions": 3,
    "min_per_transaction": None,
    "max_per_transaction": None,
}


def assert_consistent(result: ChargeResult) -> None:
    assert sum((i.amount for i in result.breakdown), D(0)) == result.amount
    for line in result.breakdown:
        assert line.amount == line.units * line.unit_price + line.flat_fee


def percentage(**overrides: object) -> PercentageCharge:
    model = parse_charge_model("percentage", {**LAGO_PERCENTAGE, **overrides})
    assert isinstance(model, PercentageCharge)
    return model


# --- published worked examples ------------------------------------------------------------------------------


def test_lago_package_started_package_is_charged_in_full() -> None:
    model = parse_charge_model("package", {"package_size": "100", "package_price": "5", "free_units": "100"})
    result = model.rate(D(201))
    assert result.amount == D(10)
    assert [i.description for i in result.breakdown] == [
        "first 100 units free",
        "2 packages of 100 × 5 (101 billable units)",
    ]
    assert_consistent(result)


def test_lago_volume_with_flat_fee_per_tier() -> None:
    result = parse_charge_model("volume", LAGO_VOLUME_TIERS).rate(D(65000))
    assert result.amount == D(49)
    assert result.model == "volume" and result.units == D(65000)
    (line,) = result.breakdown
    assert line.description == "65,000 × 0.0006 (tier 3, 50,001–100,000) + flat fee 10"
    assert (line.units, line.unit_price, line.flat_fee) == (D(65000), D("0.0006"), D(10))


def test_zuplo_graduated_vs_volume() -> None:
    graduated = parse_charge_model("graduated", ZUPLO_TIERS).rate(D(15000))
    volume = parse_charge_model("volume", ZUPLO_TIERS).rate(D(15000))
    assert graduated.amount == D(600)
    assert volume.amount == D(150)
    assert [i.description for i in graduated.breakdown] == [
        "1–1,000 × 0.10",
        "1,001–10,000 × 0.05",
        "10,001–15,000 × 0.01",
    ]
    assert [i.amount for i in graduated.breakdown] == [D(100), D(450), D(50)]
    assert [i.description for i in volume.breakdown] == ["15,000 × 0.01 (tier 3, above 10,000)"]
    assert_consistent(graduated)
    assert_consistent(volume)


def test_autumn_graduated() -> None:
    config = {
        "tiers": [
            {"up_to": "1000", "unit_price": "0.01"},
            {"up_to": "10000", "unit_price": "0.008"},
            {"up_to": None, "unit_price": "0.005"},
        ]
    }
    result = parse_charge_model("graduated", config).rate(D(15000))
    assert result.amount == D(107)  # 10 + 72 + 25
    assert_consistent(result)


def test_lago_percentage_fourth_transaction() -> None:
    result = percentage().rate_transactions([D(10), D(20), D(30), D(50)])
    assert result.amount == D("0.70")
    assert result.units == D(110)
    assert [i.description for i in result.breakdown] == [
        "3 transactions free (volume 60)",
        "1 transaction, volume 50 × 1.2% + 0.10 each",
    ]
    assert_consistent(result)


# --- flat and per unit --------------------------------------------------------------------------------------


def test_flat_ignores_units_but_reports_them() -> None:
    model = parse_charge_model("flat", {"amount": "49.00"})
    assert model == FlatCharge(D("49.00"))
    for units in (D(0), D(1), D("1234.5")):
        result = model.rate(units)
        assert result.amount == D(49) and result.units == units and result.model == "flat"
        assert [i.description for i in result.breakdown] == ["flat fee 49.00"]


def test_per_unit() -> None:
    model = parse_charge_model("per_unit", {"unit_price": "12.50"})
    result = model.rate(D(3))
    assert result.amount == D("37.50")
    assert [i.description for i in result.breakdown] == ["3 × 12.50"]
    assert model.rate(D("0.5")).amount == D("6.25")
    assert model.rate(D(0)).amount == 0


def test_per_unit_accepts_int_units_and_large_quantities_exactly() -> None:
    model = PerUnitCharge(D("0.000000001"))
    assert model.rate(7).amount == D("0.000000007")  # type: ignore[arg-type]
    big = D("123456789012345678901234567890123")
    # 33 significant digits: the default 28-digit context would round this product; rating does not.
    assert model.rate(big).amount == D("123456789012345678901234.567890123")


# --- graduated ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "amount"),
    [("0", "0"), ("1", "0.10"), ("1000", "100"), ("1001", "100.05"), ("10000", "550"), ("10001", "550.01")],
)
def test_graduated_boundaries_are_inclusive(units: str, amount: str) -> None:
    result = parse_charge_model("graduated", ZUPLO_TIERS).rate(D(units))
    assert result.amount == D(amount)
    assert_consistent(result)


def test_graduated_zero_units_has_empty_breakdown_and_no_flat_fee() -> None:
    model = GraduatedCharge((Tier(D(10), D(1), D(5)), Tier(None, D(0), D(7))))
    result = model.rate(D(0))
    assert result.amount == 0 and result.breakdown == ()


def test_graduated_flat_fee_charged_once_per_tier_entered() -> None:
    model = GraduatedCharge((Tier(D(10), D(1), D(5)), Tier(None, D(0), D(7))))
    assert model.rate(D(3)).amount == D(8)
    assert model.rate(D(10)).amount == D(15)
    result = model.rate(D(11))
    assert result.amount == D(22)
    assert [i.description for i in result.breakdown] == ["1–10 × 1 + flat fee 5", "unit 11 × 0 + flat fee 7"]


def test_graduated_fractional_units_are_described_as_ranges() -> None:
    result = parse_charge_model("graduated", ZUPLO_TIERS).rate(D("1000.5"))
    assert result.amount == D("100.025")
    assert [i.description for i in result.breakdown] == ["1–1,000 × 0.10", "over 1,000 up to 1,000.5 × 0.05"]


# --- volume -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "amount", "label"),
    [
        ("1", "10.0010", "tier 1, 1–10,000"),
        ("10000", "20", "tier 1, 1–10,000"),
        ("10001", "18.0008", "tier 2, 10,001–50,000"),
        ("200000", "90", "tier 4, above 100,000"),
    ],
)
def test_volume_boundaries(units: str, amount: str, label: str) -> None:
    result = parse_charge_model("volume", LAGO_VOLUME_TIERS).rate(D(units))
    assert result.amount == D(amount)
    assert label in result.breakdown[0].description


def test_volume_zero_units_costs_nothing_not_even_the_flat_fee() -> None:
    result = parse_charge_model("volume", LAGO_VOLUME_TIERS).rate(D(0))
    assert result.amount == 0 and result.breakdown == ()


def test_volume_single_open_tier_label() -> None:
    result = VolumeCharge((Tier(None, D("0.5")),)).rate(D(4))
    assert [i.description for i in result.breakdown] == ["4 × 0.5 (tier 1)"]


# --- package ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "amount"),
    [("0", "0"), ("50", "0"), ("100", "0"), ("100.5", "5"), ("101", "5"), ("200", "5"), ("201", "10")],
)
def test_package(units: str, amount: str) -> None:
    model = PackageCharge(D(100), D(5), D(100))
    result = model.rate(D(units))
    assert result.amount == D(amount)
    assert_consistent(result)


def test_package_free_units_default_to_zero_and_descriptions_are_singular() -> None:
    model = parse_charge_model("package", {"package_size": "100", "package_price": "5"})
    assert model == PackageCharge(D(100), D(5), D(0))
    result = model.rate(D(1))
    assert result.amount == D(5)
    assert [i.description for i in result.breakdown] == ["1 package of 100 × 5 (1 billable unit)"]
    assert model.to_config() == {"package_size": "100", "package_price": "5", "free_units": "0"}


def test_package_fractional_size() -> None:
    assert PackageCharge(D("0.5"), D(2)).rate(D("1.2")).amount == D(6)


# --- percentage ---------------------------------------------------------------------------------------------


def test_percentage_rate_is_volume_times_rate_only() -> None:
    model = percentage(min_per_transaction="1", max_per_transaction="2")
    result = model.rate(D("1000.50"))
    assert result.amount == D("12.006")
    assert [i.description for i in result.breakdown] == ["1.2% of 1,000.50"]


def test_percentage_min_and_max_clamp_each_transaction() -> None:
    model = percentage(free_transactions=0, min_per_transaction="0.30", max_per_transaction="1.00")
    # fees before clamping: 0.112, 0.70, 1.30, 0.124
    result = model.rate_transactions([D(1), D(50), D(100), D(2)])
    assert result.amount == D("0.30") + D("0.70") + D("1.00") + D("0.30")
    assert [i.description for i in result.breakdown] == [
        "1 transaction, volume 50 × 1.2% + 0.10 each",
        "2 transactions at the minimum of 0.30 (volume 3)",
        "1 transaction at the maximum of 1.00 (volume 100)",
    ]
    assert_consistent(result)


def test_percentage_fewer_transactions_than_free_and_empty() -> None:
    model = percentage()
    assert model.rate_transactions([D(10), D(20)]).amount == 0
    empty = model.rate_transactions([])
    assert empty.amount == 0 and empty.units == 0 and empty.breakdown == ()


def test_percentage_zero_amount_transaction_pays_the_fixed_fee() -> None:
    assert percentage(free_transactions=0).rate_transactions([D(0)]).amount == D("0.10")


def test_percentage_refund_is_credited_at_the_rate_and_nets_within_the_line() -> None:
    """A negative transaction is a refund: amount × rate back, no fixed fee, and it takes no free transaction."""
    model = percentage(free_transactions=1)
    result = model.rate_transactions([D(10), D(-40), D(100), D(50)])
    # 10 free; 100 and 50 at 1.2% + 0.10: 2.00; the refund of 40 credits 0.48
    assert result.amount == D("1.52")
    assert result.units == D(120)
    assert [(i.description, i.amount) for i in result.breakdown] == [
        ("1 transaction free (volume 10)", D(0)),
        ("2 transactions, volume 150 × 1.2% + 0.10 each", D("2.00")),
        ("1 refund, volume -40 × 1.2% credited", D("-0.48")),
    ]
    assert_consistent(result)


def test_percentage_refunds_credit_at_most_what_the_line_charges() -> None:
    model = percentage(free_transactions=0, min_per_transaction="0.30")
    result = model.rate_transactions([D(50), D(-500), D(-100)])
    assert result.amount == 0
    assert result.units == D(-550)
    assert [(i.description, i.amount) for i in result.breakdown] == [
        ("1 transaction, volume 50 × 1.2% + 0.10 each", D("0.70")),
        ("2 refunds, volume -600 × 1.2% credited up to the 0.7 charged", D("-0.70")),
    ]
    only_refunds = model.rate_transactions([D(-5)])
    assert only_refunds.amount == 0 and not only_refunds.amount.is_signed()  # 0, not -0
    assert_consistent(result)


def test_percentage_optional_settings_default() -> None:
    model = parse_charge_model("percentage", {"rate": "0.029"})
    assert model == PercentageCharge(D("0.029"))
    assert model.to_config() == {
        "rate": "0.029",
        "fixed_fee": "0",
        "free_transactions": 0,
        "min_per_transaction": None,
        "max_per_transaction": None,
    }


def test_percentage_free_transactions_accepts_whole_number_strings() -> None:
    assert percentage(free_transactions="2").free_transactions == 2


# --- protocol, kinds, config --------------------------------------------------------------------------------

EXAMPLES: dict[str, dict[str, object]] = {
    "flat": {"amount": "49.00"},
    "per_unit": {"unit_price": "12.50"},
    "graduated": ZUPLO_TIERS,
    "volume": LAGO_VOLUME_TIERS,
    "package": {"package_size": "100", "package_price": "5", "free_units": "100"},
    "percentage": {**LAGO_PERCENTAGE, "min_per_transaction": "0.05", "max_per_transaction": "9.99"},
    "graduated_percentage": {
        "tiers": [{"up_to": "10000", "rate": "0.03", "flat_fee": "0.50"}, {"up_to": None, "rate": "0.02"}]
    },
}


def test_graduated_percentage_charges_each_slice_of_the_volume_at_its_rate() -> None:
    """3% of the first 10,000 with a 0.50 fee for entering the tier, 2% above: 25,000 -> 300.50 + 300."""
    model = parse_charge_model("graduated_percentage", EXAMPLES["graduated_percentage"])
    result = model.rate(D(25000))
    assert result.amount == D("600.50")
    assert [(i.description, i.amount) for i in result.breakdown] == [
        ("3% of 1–10,000 + flat fee 0.50", D("300.50")),
        ("2% of 10,001–25,000", D("300")),
    ]
    assert model.rate(D(0)).amount == 0


def test_graduated_percentage_rates_are_fractions() -> None:
    with pytest.raises(ValidationError) as err:
        parse_charge_model("graduated_percentage", {"tiers": [{"up_to": None, "rate": "3"}]})
    assert err.value.field == "price.tiers[0].rate"


def test_kinds() -> None:
    assert KINDS == ("flat", "per_unit", "graduated", "volume", "package", "percentage", "graduated_percentage")
    assert set(EXAMPLES) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_model_round_trips_and_satisfies_the_protocol(kind: str) -> None:
    model = parse_charge_model(kind, EXAMPLES[kind])
    assert model.kind == kind
    assert isinstance(model, ChargeModel)
    config = model.to_config()
    assert parse_charge_model(kind, config) == model
    assert parse_charge_model(kind, config).to_config() == config
    assert all(v is None or isinstance(v, str | int | list) for v in config.values())


def test_to_config_writes_plain_notation() -> None:
    assert PerUnitCharge(D("1E+3")).to_config() == {"unit_price": "1000"}
    assert parse_charge_model("graduated", ZUPLO_TIERS).to_config() == {
        "tiers": [
            {"up_to": "1000", "unit_price": "0.10", "flat_fee": "0"},
            {"up_to": "10000", "unit_price": "0.05", "flat_fee": "0"},
            {"up_to": None, "unit_price": "0.01", "flat_fee": "0"},
        ]
    }


def test_custom_field_prefix() -> None:
    with pytest.raises(ValidationError) as info:
        parse_charge_model("per_unit", {"unit_price": "-1"}, field="prices[2].config")
    assert info.value.field == "prices[2].config.unit_price"
    with pytest.raises(ValidationError) as info:
        parse_charge_model("tiered", {}, field="prices[2].config")
    assert (info.value.code, info.value.field) == ("unknown_price_model", "prices[2].model")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("units", [D(-1), D("-0.001")])
def test_negative_units_are_refused(kind: str, units: Decimal) -> None:
    with pytest.raises(ValidationError) as info:
        parse_charge_model(kind, EXAMPLES[kind]).rate(units)
    assert (info.value.code, info.value.field) == ("negative_quantity", "quantity")


def test_float_units_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        PerUnitCharge(D(1)).rate(1.5)  # type: ignore[arg-type]
    assert info.value.code == "float_not_allowed"


def test_a_quantity_that_cannot_be_rated_exactly_is_refused_not_rounded() -> None:
    with pytest.raises(ValidationError) as info:
        parse_charge_model("graduated", ZUPLO_TIERS).rate(D("1E+300"))
    assert (info.value.code, info.value.field) == ("quantity_out_of_range", "quantity")


# --- validation ---------------------------------------------------------------------------------------------


def tiers(*entries: object) -> dict[str, object]:
    return {"tiers": list(entries)}


OPEN: dict[str, object] = {"up_to": None, "unit_price": "1"}

INVALID: list[tuple[str, object, str, str]] = [
    # kind, config, code, field
    ("tiered", {}, "unknown_price_model", "model"),
    ("", {}, "unknown_price_model", "model"),
    ("flat", "49", "invalid_price", "price"),
    ("flat", {}, "missing_field", "price.amount"),
    ("flat", {"amount": "1", "currency": "USD"}, "unknown_field", "price.currency"),
    ("flat", {"amount": "-1"}, "negative_amount", "price.amount"),
    ("flat", {"amount": 49.0}, "float_not_allowed", "price.amount"),
    ("flat", {"amount": "forty"}, "invalid_number", "price.amount"),
    ("flat", {"amount": None}, "invalid_number", "price.amount"),
    ("flat", {"amount": "NaN"}, "invalid_number", "price.amount"),
    ("per_unit", {}, "missing_field", "price.unit_price"),
    ("per_unit", {"unit_price": "-0.01"}, "negative_amount", "price.unit_price"),
    ("per_unit", {"unit_price": "0.0000000001"}, "too_many_decimals", "price.unit_price"),
    ("per_unit", {"unit_price": 0.1}, "float_not_allowed", "price.unit_price"),
    ("per_unit", {"unit_price": True}, "float_not_allowed", "price.unit_price"),
    ("graduated", {}, "missing_field", "price.tiers"),
    ("graduated", tiers(), "invalid_tiers", "price.tiers"),
    ("graduated", {"tiers": "1000"}, "invalid_tiers", "price.tiers"),
    ("graduated", {"tiers": {"up_to": None}}, "invalid_tiers", "price.tiers"),
    ("graduated", tiers("x"), "invalid_tiers", "price.tiers[0]"),
    ("graduated", tiers({"unit_price": "1"}), "missing_field", "price.tiers[0].up_to"),
    ("graduated", tiers({"up_to": None}), "missing_field", "price.tiers[0].unit_price"),
    ("graduated", tiers({**OPEN, "price": "1"}), "unknown_field", "price.tiers[0].price"),
    ("graduated", tiers({"up_to": "10", "unit_price": "1"}), "invalid_tiers", "price.tiers[0].up_to"),
    ("graduated", tiers(OPEN, OPEN), "invalid_tiers", "price.tiers[0].up_to"),
    (
        "graduated",
        tiers({"up_to": "10", "unit_price": "1"}, {"up_to": "10", "unit_price": "1"}, OPEN),
        "invalid_tiers",
        "price.tiers[1].up_to",
    ),
    (
        "graduated",
        tiers({"up_to": "10", "unit_price": "1"}, {"up_to": "5", "unit_price": "1"}, OPEN),
        "invalid_tiers",
        "price.tiers[1].up_to",
    ),
    ("graduated", tiers({"up_to": "0", "unit_price": "1"}, OPEN), "invalid_tiers", "price.tiers[0].up_to"),
    ("graduated", tiers({"up_to": "-5", "unit_price": "1"}, OPEN), "invalid_tiers", "price.tiers[0].up_to"),
    ("graduated", tiers({"up_to": 10.0, "unit_price": "1"}, OPEN), "float_not_allowed", "price.tiers[0].up_to"),
    ("graduated", tiers({"up_to": None, "unit_price": "-1"}), "negative_amount", "price.tiers[0].unit_price"),
    (
        "graduated",
        tiers({"up_to": "1", "unit_price": "1"}, {**OPEN, "flat_fee": "-10"}),
        "negative_amount",
        "price.tiers[1].flat_fee",
    ),
    ("volume", tiers(), "invalid_tiers", "price.tiers"),
    ("volume", tiers({"up_to": "10", "unit_price": "1"}), "invalid_tiers", "price.tiers[0].up_to"),
    ("volume", tiers({**OPEN, "unit_price": "-2"}), "negative_amount", "price.tiers[0].unit_price"),
    ("volume", {"tiers": [OPEN], "mode": "x"}, "unknown_field", "price.mode"),
    ("package", {"package_price": "5"}, "missing_field", "price.package_size"),
    ("package", {"package_size": "100"}, "missing_field", "price.package_price"),
    ("package", {"package_size": "0", "package_price": "5"}, "invalid_package_size", "price.package_size"),
    ("package", {"package_size": "-1", "package_price": "5"}, "invalid_package_size", "price.package_size"),
    ("package", {"package_size": "10", "package_price": "-5"}, "negative_amount", "price.package_price"),
    (
        "package",
        {"package_size": "10", "package_price": "5", "free_units": "-1"},
        "negative_amount",
        "price.free_units",
    ),
    (
        "package",
        {"package_size": "10", "package_price": "5", "free": "1"},
        "unknown_field",
        "price.free",
    ),
    ("percentage", {}, "missing_field", "price.rate"),
    ("percentage", {"rate": "1.2"}, "invalid_rate", "price.rate"),
    ("percentage", {"rate": "-0.01"}, "invalid_rate", "price.rate"),
    ("percentage", {"rate": 0.012}, "float_not_allowed", "price.rate"),
    ("percentage", {"rate": "0.0120000001"}, "too_many_decimals", "price.rate"),
    ("percentage", {"rate": "0.01", "fixed_fee": "-0.1"}, "negative_amount", "price.fixed_fee"),
    ("percentage", {"rate": "0.01", "free_transactions": -1}, "negative_amount", "price.free_transactions"),
    ("percentage", {"rate": "0.01", "free_transactions": "1.5"}, "invalid_number", "price.free_transactions"),
    ("percentage", {"rate": "0.01", "free_transactions": 1.0}, "float_not_allowed", "price.free_transactions"),
    (
        "percentage",
        {"rate": "0.01", "min_per_transaction": "-1"},
        "negative_amount",
        "price.min_per_transaction",
    ),
    (
        "percentage",
        {"rate": "0.01", "max_per_transaction": "-1"},
        "negative_amount",
        "price.max_per_transaction",
    ),
    (
        "percentage",
        {"rate": "0.01", "min_per_transaction": "2", "max_per_transaction": "1"},
        "invalid_range",
        "price.min_per_transaction",
    ),
    ("percentage", {"rate": "0.01", "cap": "1"}, "unknown_field", "price.cap"),
]


@pytest.mark.parametrize(("kind", "config", "code", "field"), INVALID, ids=[f"{k}-{c}-{f}" for k, _, c, f in INVALID])
def test_invalid_config(kind: str, config: object, code: str, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_charge_model(kind, config)  # type: ignore[arg-type]
    assert (info.value.code, info.value.field) == (code, field)
    assert info.value.message


HUGE: list[tuple[str, dict[str, object], str]] = [
    # kind, config, field: numbers too large for a price's settings (the API takes 15 digits before the point)
    ("flat", {"amount": "1e999999999"}, "price.amount"),
    ("per_unit", {"unit_price": "1000000000000000"}, "price.unit_price"),
    ("graduated", tiers({"up_to": "1e999999999", "unit_price": "1"}, OPEN), "price.tiers[0].up_to"),
    ("volume", tiers({"up_to": "10", "unit_price": "1", "flat_fee": "1e20"}, OPEN), "price.tiers[0].flat_fee"),
    ("package", {"package_size": "1e999999999", "package_price": "5"}, "price.package_size"),
    ("package", {"package_size": "1", "package_price": "5", "free_units": "1e16"}, "price.free_units"),
    ("percentage", {"rate": "1e999999999"}, "price.rate"),
    ("percentage", {"rate": "0.01", "free_transactions": "1e999999"}, "price.free_transactions"),
    ("percentage", {"rate": "0.01", "free_transactions": 10**20}, "price.free_transactions"),
    (
        "graduated_percentage",
        {"tiers": [{"up_to": "1e999999999", "rate": "0.1"}, {"up_to": None, "rate": "0"}]},
        "price.tiers[0].up_to",
    ),
]


@pytest.mark.parametrize(("kind", "config", "field"), HUGE, ids=[f"{k}-{f}" for k, _, f in HUGE])
def test_a_number_too_large_for_a_setting_is_refused_at_once(kind: str, config: dict[str, object], field: str) -> None:
    """They once escaped as a bare decimal.Overflow (a traceback from `remit plans create`), or, as a count of free
    transactions, took minutes to read (1e999999)."""
    started = time.monotonic()
    with pytest.raises(ValidationError) as info:
        parse_charge_model(kind, config)
    assert time.monotonic() - started < 0.5
    assert (info.value.code, info.value.field) == ("invalid_number", field)
    assert "at most 15 digits before the point" in info.value.message


def test_the_largest_numbers_a_setting_takes() -> None:
    largest = "999999999999999.999999999"
    assert parse_charge_model("per_unit", {"unit_price": largest}).rate(D(1)).amount == D(largest)
    assert percentage(free_transactions=str(10**15 - 1)).free_transactions == 10**15 - 1


def test_min_equal_to_max_is_allowed() -> None:
    model = percentage(min_per_transaction="1", max_per_transaction="1", free_transactions=0)
    assert model.rate_transactions([D(0), D(1000)]).amount == D(2)


@pytest.mark.parametrize(
    ("build", "code", "field"),
    [
        (lambda: FlatCharge(D(-1)), "negative_amount", "price.amount"),
        (lambda: FlatCharge(49.0), "float_not_allowed", "price.amount"),  # type: ignore[arg-type]
        (lambda: PerUnitCharge(D(-1)), "negative_amount", "price.unit_price"),
        (lambda: GraduatedCharge(()), "invalid_tiers", "price.tiers"),
        (lambda: VolumeCharge((Tier(D(5), D(1)),)), "invalid_tiers", "price.tiers[0].up_to"),
        (lambda: PackageCharge(D(0), D(1)), "invalid_package_size", "price.package_size"),
        (lambda: PercentageCharge(D(2)), "invalid_rate", "price.rate"),
        (lambda: PercentageCharge(D("0.1"), free_transactions=True), "invalid_number", "price.free_transactions"),
        (lambda: PercentageCharge(D("0.1"), D(0), 0, D(2), D(1)), "invalid_range", "price.min_per_transaction"),
    ],
)
def test_constructors_validate_too(build: Callable[[], object], code: str, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        build()
    assert (info.value.code, info.value.field) == (code, field)


def test_tiers_given_as_a_list_are_stored_as_a_tuple() -> None:
    model = GraduatedCharge([Tier(None, D(1))])  # type: ignore[arg-type]
    assert model.tiers == (Tier(None, D(1)),)
    assert hash(model) == hash(GraduatedCharge((Tier(None, D(1)),)))
