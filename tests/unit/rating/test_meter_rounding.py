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
