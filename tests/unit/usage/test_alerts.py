"""Alert thresholds, groups and crossings: pure rules."""

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remit.domain.errors import ValidationError
from remit.domain.money import currency
from remit.domain.rating.aggregations import Aggregation, Meter
from remit.domain.rating.alerts import (
    AlertKind,
    LineQuantity,
    canonical,
    combine,
    combine_lines,
    crossed,
    group_matches,
    parse_group,
    parse_kind,
    parse_thresholds,
)

EUR, JPY = currency("EUR"), currency("JPY")
METER = Meter("tokens", Aggregation.SUM, "n", group_by=("model", "region"))


def test_usage_thresholds_are_exact_quantities_and_spend_thresholds_minor_units():
    assert parse_thresholds(["1000", 5000, "1e4"], AlertKind.USAGE, None) == [
        Decimal(1000),
        Decimal(5000),
        Decimal(10000),
    ]
    assert parse_thresholds(["9.99", "10", 25], AlertKind.SPEND, EUR) == [Decimal(999), Decimal(1000), Decimal(2500)]
    assert parse_thresholds(["500"], AlertKind.SPEND, JPY) == [Decimal(500)]


@pytest.mark.parametrize(
    ("raw", "kind", "code", "field"),
    [
        ([], AlertKind.USAGE, "invalid_thresholds", "thresholds"),
        ("100", AlertKind.USAGE, "invalid_thresholds", "thresholds"),
        (["1"] * 21, AlertKind.USAGE, "invalid_thresholds", "thresholds"),
        (["0"], AlertKind.USAGE, "invalid_threshold", "thresholds[0]"),
        (["5", "-1"], AlertKind.USAGE, "invalid_threshold", "thresholds[1]"),
        (["5", "5"], AlertKind.USAGE, "thresholds_not_ascending", "thresholds[1]"),
        (["2", "1.99"], AlertKind.SPEND, "thresholds_not_ascending", "thresholds[1]"),
        (["-2"], AlertKind.SPEND, "invalid_threshold", "thresholds[0]"),
        ([1.5], AlertKind.USAGE, "float_not_allowed", "thresholds[0]"),
        (["lots"], AlertKind.USAGE, "invalid_number", "thresholds[0]"),
        (["0.0000000001"], AlertKind.USAGE, "invalid_number", "thresholds[0]"),
        (["1.005"], AlertKind.SPEND, "too_many_decimals", "thresholds[0]"),
        (["1e20"], AlertKind.USAGE, "invalid_threshold", "thresholds[0]"),
        (["1e999999999"], AlertKind.USAGE, "invalid_threshold", "thresholds[0]"),  # once a bare decimal.Overflow
        (["1e-999999999"], AlertKind.USAGE, "invalid_number", "thresholds[0]"),  # once taken: crossed by any use
    ],
)
def test_bad_thresholds_are_refused_with_a_code_and_the_field(raw, kind, code, field):
    with pytest.raises(ValidationError) as err:
        parse_thresholds(raw, kind, EUR)
    assert (err.value.code, err.value.field) == (code, field)


def test_kind_and_group_are_checked_against_the_meter():
    assert parse_kind("spend") is AlertKind.SPEND
    with pytest.raises(ValidationError) as err:
        parse_kind("money")
    assert err.value.code == "invalid_choice"
    assert parse_group({"region": "eu"}, METER) == {"region": "eu"}
    assert parse_group({}, METER) is None
    for bad, code in [({"zone": "x"}, "unknown_dimension"), ({"region": 3}, "invalid_group"), ("eu", "invalid_group")]:
        with pytest.raises(ValidationError) as err:
            parse_group(bad, METER)
        assert err.value.code == code


def test_a_threshold_fires_when_reached_once_and_in_order():
    thresholds = [Decimal(10), Decimal(20), Decimal(30)]
    assert crossed(Decimal("9.99"), thresholds, []) == []
    assert crossed(Decimal(25), thresholds, []) == [Decimal(10), Decimal(20)]
    assert crossed(Decimal(25), thresholds, ["10"]) == [Decimal(20)]
    assert crossed(Decimal(30), thresholds, ["10", "20"]) == [Decimal(30)]
    assert canonical(Decimal("10.0")) == canonical(Decimal("1E+1")) == "10"


@given(
    st.lists(st.integers(1, 10**6), min_size=1, max_size=8, unique=True).map(sorted),
    st.lists(st.integers(0, 10**6), min_size=1, max_size=10),
)
def test_over_any_growing_sequence_of_values_each_threshold_fires_exactly_once_if_reached(thresholds, steps):
    values = [Decimal(v) for v in thresholds]
    fired: list[str] = []
    level = Decimal(0)
    for step in steps:
        level += step
        fired.extend(canonical(v) for v in crossed(level, values, fired))
    assert fired == [canonical(v) for v in values if v <= level]


def test_groups_match_on_the_dimensions_named_and_quantities_combine_per_aggregation():
    assert group_matches({"model": "a", "region": "eu"}, {"region": "eu"})
    assert not group_matches({"model": "a", "region": "us"}, {"region": "eu"})
    assert group_matches({"model": "a"}, None)
    assert combine(Aggregation.SUM, [Decimal(2), Decimal(3)]) == 5
    assert combine(Aggregation.MAX, [Decimal(2), Decimal(3)]) == 3
    assert combine(Aggregation.COUNT, []) == 0


def test_a_plan_change_splits_a_groups_period_in_lines_that_an_alert_reads_as_one_quantity():
    """Ten seats before and after a plan change are ten seats; two regions' latest values still add up."""
    march_10, april_1 = date(2026, 3, 10), date(2026, 4, 1)
    before, after = (
        LineQuantity({"region": "eu"}, march_10, Decimal(10)),
        LineQuantity({"region": "eu"}, april_1, Decimal(12)),
    )
    other = LineQuantity({"region": "us"}, april_1, Decimal(5))
    lines = [after, before, other]
    assert combine_lines(Aggregation.LATEST, lines) == 12 + 5  # the latest window's value, per group
    assert combine_lines(Aggregation.LATEST, [before]) == 10  # nothing reported since the change
    assert combine_lines(Aggregation.UNIQUE_COUNT, lines) == 12 + 5  # at least the largest count, per group
    assert combine_lines(Aggregation.MAX, lines) == 12
    for adds_up in (Aggregation.SUM, Aggregation.COUNT, Aggregation.WEIGHTED_SUM):
        assert combine_lines(adds_up, lines) == 10 + 12 + 5
    assert combine_lines(Aggregation.SUM, []) == 0
