from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remit.domain.errors import ValidationError
from remit.domain.money import (
    MAX_AMOUNT_MINOR,
    Money,
    RoundingPolicy,
    allocate,
    currency,
    decimals,
    parse_rate,
    to_decimal,
)


@pytest.mark.parametrize(
    ("code", "units"), [("EUR", 2), ("USD", 2), ("JPY", 0), ("KRW", 0), ("CLP", 0), ("BHD", 3), ("KWD", 3), ("GBP", 2)]
)
def test_currencies_know_their_minor_units(code, units):
    assert currency(code).minor_units == units


def test_money_is_stored_as_minor_units_per_currency():
    assert Money.of("10.50", "EUR").minor == 1050
    assert Money.of("1234", "JPY").minor == 1234
    assert Money.of("1.234", "KWD").minor == 1234
    assert Money.from_minor(1234, "BHD").amount == Decimal("1.234")


def test_money_refuses_floats_unknown_currencies_and_extra_decimals():
    with pytest.raises(ValidationError) as exc:
        Money.of(10.5, "EUR")
    assert exc.value.code == "float_not_allowed"
    with pytest.raises(ValidationError) as exc:
        Money.of("10", "XXX")
    assert (exc.value.code, exc.value.field) == ("unknown_currency", "currency")
    with pytest.raises(ValidationError) as exc:
        Money.of("10.5", "JPY")
    assert exc.value.code == "too_many_decimals"
    with pytest.raises(ValidationError) as exc:
        Money.of("abc", "EUR")
    assert exc.value.code == "invalid_number"


def test_money_refuses_mixed_currencies():
    with pytest.raises(ValidationError) as exc:
        Money.of("1", "EUR") + Money.of("1", "USD")
    assert exc.value.code == "currency_mismatch"


def test_rates_keep_up_to_nine_decimals():
    assert parse_rate("0.000000125") == Decimal("0.000000125")
    with pytest.raises(ValidationError) as exc:
        parse_rate("0.0000000001")
    assert exc.value.code == "too_many_decimals"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("1e999999999", "invalid_number"),  # once a bare decimal.Overflow (normalize() in the default context)
        ("-1e999999999", "invalid_number"),
        ("1000000000000000", "invalid_number"),  # 16 digits before the point: as the API and the catalog refuse
        ("1e-999999999", "too_many_decimals"),  # once taken: normalize() made it 0, which has no decimals
        ("1E-10", "too_many_decimals"),
        ("Infinity", "invalid_number"),
    ],
)
def test_a_rate_too_large_or_too_precise_is_refused_with_the_field(value, code):
    with pytest.raises(ValidationError) as exc:
        parse_rate(value, "unit_price")
    assert (exc.value.code, exc.value.field) == (code, "unit_price")


def test_the_largest_and_most_precise_rates():
    assert parse_rate("999999999999999.999999999") == Decimal("999999999999999.999999999")
    assert parse_rate("-999999999999999") == Decimal("-999999999999999")
    assert parse_rate("1.5000000000000") == Decimal("1.5")  # trailing zeros are not decimals
    assert parse_rate("0E-30") == 0


@pytest.mark.parametrize(
    ("value", "places"),
    [("1.50", 1), ("1E+3", 0), ("100", 0), ("0.000000001", 9), ("0E-20", 0), ("1E-999999999", 999999999)],
)
def test_decimals_are_counted_from_the_digits(value, places):
    assert decimals(Decimal(value)) == places


def test_rounding_policy_half_up_and_half_even():
    eur = currency("EUR")
    assert RoundingPolicy.HALF_UP.round(Decimal("0.125"), eur).amount == Decimal("0.13")
    assert RoundingPolicy.HALF_EVEN.round(Decimal("0.125"), eur).amount == Decimal("0.12")
    assert RoundingPolicy.HALF_UP.round(Decimal("-0.125"), eur).amount == Decimal("-0.13")
    assert RoundingPolicy.HALF_UP.round(Decimal("1234.5"), currency("JPY")).amount == Decimal("1235")
    # The published calendar-proration example: 22 × 50 / 31 = 35.48
    assert RoundingPolicy.HALF_UP.round(Decimal(22) * 50 / 31, eur).amount == Decimal("35.48")


def test_allocate_examples():
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]
    assert allocate(-100, [1, 1, 1]) == [-34, -33, -33]
    assert allocate(5, [0, 0]) == [3, 2]
    assert allocate(0, []) == []
    # Exact shares 291.67, 6.67 and 201.67 tie: the earlier parts get the two units left (not the later one,
    # as 28-digit decimal shares had it: their remainders differed in the last digit).
    assert allocate(500, [3500, 80, 2420]) == [292, 7, 201]
    assert Money.of("10.00", "EUR").allocate([1, 2]) == [Money.of("3.33", "EUR"), Money.of("6.67", "EUR")]


@given(
    total=st.integers(min_value=-(10**15), max_value=10**15),
    weights=st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=30),
)
def test_every_split_sums_exactly_to_the_whole(total, weights):
    parts = allocate(total, weights)
    assert sum(parts) == total
    assert len(parts) == len(weights)
    if sum(weights) > 0:
        # No part is further than one minor unit from its exact share.
        for part, weight in zip(parts, weights, strict=True):
            exact = Decimal(total) * weight / sum(weights)
            assert abs(Decimal(part) - exact) < 1


@given(
    total=st.integers(min_value=0, max_value=10**12),
    weights=st.lists(st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False), min_size=1, max_size=10),
)
def test_split_by_decimal_weights_sums_to_whole(total, weights):
    assert sum(allocate(total, weights)) == total


@given(
    st.decimals(min_value=-(10**9), max_value=10**9, allow_nan=False, allow_infinity=False, places=6),
    st.sampled_from(["EUR", "JPY", "KWD"]),
    st.sampled_from(list(RoundingPolicy)),
)
def test_rounding_is_within_half_a_minor_unit(raw, code, policy):
    cur = currency(code)
    rounded = policy.round(raw, cur)
    assert abs(rounded.amount - raw) <= cur.quantum / 2
    assert Money.from_minor(rounded.minor, cur) == rounded


def test_to_decimal_accepts_ints_strings_and_decimals_only():
    assert to_decimal(3) == Decimal(3)
    assert to_decimal(" 2.50 ") == Decimal("2.50")
    with pytest.raises(ValidationError):
        to_decimal(True)
    with pytest.raises(ValidationError):
        to_decimal("NaN")


@pytest.mark.parametrize("policy", list(RoundingPolicy))
def test_rounding_refuses_amounts_beyond_the_largest_billable_one(policy):
    """At most MAX_AMOUNT_MINOR minor units either way, in every currency; beyond, a clear error (not an
    InvalidOperation, nor an overflow of the 64-bit column it would be stored in)."""
    eur, jpy, kwd = currency("EUR"), currency("JPY"), currency("KWD")
    assert policy.round_minor(Decimal("10000000000000.00"), eur) == MAX_AMOUNT_MINOR == 10**15
    assert policy.round_minor(Decimal("-10000000000000.004"), eur) == -MAX_AMOUNT_MINOR
    assert policy.round_minor(Decimal(MAX_AMOUNT_MINOR), jpy) == MAX_AMOUNT_MINOR
    assert policy.round_minor(Decimal("1000000000000.000"), kwd) == MAX_AMOUNT_MINOR
    for raw, cur in [
        (Decimal("10000000000000.006"), eur),  # rounds up past the limit
        (Decimal("-10000000000000.01"), eur),
        (Decimal(MAX_AMOUNT_MINOR + 1), jpy),
        (Decimal("1E+63"), eur),  # more digits than the context holds
        (Decimal("Infinity"), eur),
    ]:
        with pytest.raises(ValidationError) as caught:
            policy.round_minor(raw, cur)
        assert caught.value.code == "amount_out_of_range"
        assert f"at most {Decimal(MAX_AMOUNT_MINOR).scaleb(-cur.minor_units):f} {cur.code}" in caught.value.message


@pytest.mark.parametrize(
    ("raw", "code", "half_up", "half_even"),
    [
        (Fraction(1, 200), "EUR", 1, 0),  # 0.005
        (Fraction(3, 200), "EUR", 2, 2),  # 0.015
        (Fraction(1, 300), "EUR", 0, 0),  # 0.00333...
        (Fraction(2, 300), "EUR", 1, 1),  # 0.00666...
        (Fraction(5, 2), "JPY", 3, 2),
        (Fraction(61, 2000), "BHD", 31, 30),  # 0.0305
        (Fraction(-1, 200), "EUR", -1, 0),  # a half away from zero, as Decimal's half up
        (Fraction(-2, 3), "KWD", -667, -667),
    ],
)
def test_an_exact_fraction_is_rounded_once_by_the_policy(raw, code, half_up, half_even):
    assert RoundingPolicy.HALF_UP.round_exact(raw, currency(code)) == half_up
    assert RoundingPolicy.HALF_EVEN.round_exact(raw, currency(code)) == half_even


def test_an_exact_fraction_beyond_what_can_be_billed_is_refused():
    with pytest.raises(ValidationError) as caught:
        RoundingPolicy.HALF_UP.round_exact(Fraction(MAX_AMOUNT_MINOR + 1, 3) * 3, currency("JPY"))
    assert caught.value.code == "amount_out_of_range"
