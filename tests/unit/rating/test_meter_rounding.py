"""A meter rounds the quantity it measured in a period, before included units and pricing: up, down or to the
nearest (halves away from zero), to a number of decimals, or to tens, hundreds... with a negative precision."""

from decimal import Decimal

import pytest

from remit.domain.errors import ValidationError
from remit.domain.rating.aggregations import Aggregation, Meter, Rounding


def _meter(rounding, precision=0):
    return Meter("gb", Aggregation.SUM, "gb", rounding=rounding, precision=precision)


@pytest.mark.parametrize(
    ("rounding", "precision", "measured", "billed"),
    [
        (Rounding.CEIL, 0, "12.01", "13"),
        (Rounding.CEIL, 0, "12", "12"),
        (Rounding.CEIL, 0, "-12.5", "-12"),  # towards +infinity
        (Rounding.FLOOR, 0, "12.99", "12"),
        (Rounding.FLOOR, 0, "-12.5", "-13"),
        (Rounding.ROUND, 0, "12.5", "13"),
        (Rounding.ROUND, 0, "-12.5", "-13"),  # halves away from zero
        (Rounding.ROUND, 0, "12.49", "12"),
        (Rounding.CEIL, 2, "1.231", "1.24"),
        (Rounding.ROUND, -2, "1250", "1300"),
        (Rounding.FLOOR, -3, "1999", "1000"),
        (None, 0, "1.2345", "1.2345"),
    ],
)
def test_rounding(rounding, precision, measured, billed):
    out = _meter(rounding, precision).rounded(Decimal(measured))
    assert out == Decimal(billed) and str(out) == billed


@pytest.mark.parametrize(
    ("rounding", "precision", "code"),
    [
        (Rounding.CEIL, 13, "invalid_rounding_precision"),
        (Rounding.CEIL, -10, "invalid_rounding_precision"),
        (None, 2, "missing_rounding"),
    ],
)
def test_bad_rounding_is_refused(rounding, precision, code):
    with pytest.raises(ValidationError) as exc:
        _meter(rounding, precision)
    assert exc.value.code == code


def test_a_large_quantity_is_rounded_not_refused():
    """The default decimal context holds 28 digits; 2·10^16 at 12 decimals needs 29."""
    out = _meter(Rounding.CEIL, 12).rounded(Decimal("20000000000000000.0000000000001"))
    assert out == Decimal("20000000000000000.000000000001")
    assert _meter(Rounding.ROUND, -9).rounded(Decimal("9" * 60)) == Decimal("1" + "0" * 60)


def test_negative_zero_is_zero():
    assert str(_meter(Rounding.CEIL).rounded(Decimal("-0.4"))) == "0"


def test_a_long_exact_fraction_is_written_to_28_significant_digits():
    """An exact decimal of more digits than a quantity column holds is written as quantities always were."""
    from fractions import Fraction

    from remit.domain.rating.aggregations import decimal_of

    assert decimal_of(Fraction(3)) == 3 and str(decimal_of(Fraction(1, 8))) == "0.125"
    long = decimal_of(Fraction(Decimal("0." + "1234567890" * 6 + "1")) / 8)
    assert len(long.as_tuple().digits) == 28 and len(format(long, "f")) <= 64
