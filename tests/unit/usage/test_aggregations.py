from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remit.domain.errors import ValidationError
from remit.domain.rating.aggregations import Aggregate, Aggregation, Meter, UsageEvent, aggregate, property_text
from remit.domain.rating.expressions import parse_formula

START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)  # 31 days


def ev(day: float, txn: str = "", **props):
    return UsageEvent(START + timedelta(days=day), props, txn or f"t{day}-{sorted(props.items())}")


EVENTS = [
    ev(0, gb="5", region="eu", user="a"),
    ev(3, gb="2.5", region="us", user="b"),
    ev(10, gb="1", region="eu", user="a"),
    ev(40, gb="100", region="eu", user="c"),
]


@pytest.mark.parametrize(
    ("aggregation", "field", "expected"),
    [
        (Aggregation.COUNT, None, Decimal(3)),
        (Aggregation.SUM, "gb", Decimal("8.5")),
        (Aggregation.MAX, "gb", Decimal(5)),
        (Aggregation.UNIQUE_COUNT, "user", Decimal(2)),
        (Aggregation.LATEST, "gb", Decimal(1)),
    ],
)
def test_simple_aggregations_over_one_period(aggregation, field, expected):
    result = aggregate(Meter("m", aggregation, field), EVENTS, START, END)
    assert result[()].quantity == expected
    assert result[()].events == 3  # the April event is outside the period


def test_filters_and_group_by_dimensions():
    meter = Meter("storage", Aggregation.SUM, "gb", filters={"region": ("eu",)}, group_by=("user",))
    result = aggregate(meter, EVENTS, START, END)
    assert {k: v.quantity for k, v in result.items()} == {("a",): Decimal(6)}


def test_weighted_sum_is_the_time_weighted_level():
    # 10 GB held from the 1st, +20 GB on day 15.5 (of 31), -30 GB on day 23.25.
    meter = Meter("gb_held", Aggregation.WEIGHTED_SUM, "delta")
    events = [ev(0, delta="10"), ev(15.5, delta="20"), ev(23.25, delta="-30")]
    result = aggregate(meter, events, START, END)[()]
    expected = (Decimal(10) * Decimal("15.5") + Decimal(30) * Decimal("7.75")) / 31
    assert result.quantity == expected
    assert result.ending_level == 0


def test_weighted_sum_carries_the_level_into_the_next_period():
    meter = Meter("seats", Aggregation.WEIGHTED_SUM, "delta")
    result = aggregate(meter, [], START, END, starting_levels={(): Decimal(4)})
    assert result[()].quantity == 4 and result[()].ending_level == 4


def test_latest_breaks_ties_by_transaction_id():
    meter = Meter("m", Aggregation.LATEST, "v")
    same_time = [ev(1, "b", v="2"), ev(1, "a", v="1")]
    assert aggregate(meter, same_time, START, END)[()].quantity == 2


def test_meters_refuse_events_they_could_not_bill():
    meter = Meter("api", Aggregation.SUM, "tokens", filters={"model": ("small", "large")}, group_by=("region",))
    with pytest.raises(ValidationError) as exc:
        meter.check(UsageEvent(START, {"tokens": "many", "model": "small", "region": "eu"}))
    assert (exc.value.code, exc.value.field) == ("not_numeric", "properties.tokens")
    with pytest.raises(ValidationError) as exc:
        meter.check(UsageEvent(START, {"tokens": 3, "region": "eu"}))
    assert (exc.value.code, exc.value.field) == ("missing_property", "properties.model")
    meter.check(UsageEvent(START, {"tokens": 3, "model": "small", "region": "eu"}))
    with pytest.raises(ValidationError):
        Meter("x", Aggregation.SUM)
    with pytest.raises(ValidationError):
        Meter("x", Aggregation.COUNT, "v")


@given(st.lists(st.tuples(st.integers(0, 31 * 24 - 1), st.integers(-50, 50)), max_size=30), st.integers(0, 100))
def test_weighted_sum_matches_an_hour_by_hour_count(changes, start_level):
    """Stepping through the month hour by hour gives the same time-weighted average."""
    meter = Meter("m", Aggregation.WEIGHTED_SUM, "d")
    events = [UsageEvent(START + timedelta(hours=h), {"d": d}, f"t{i}") for i, (h, d) in enumerate(changes)]
    result = aggregate(meter, events, START, END, starting_levels={(): Decimal(start_level)})[()]
    level = Decimal(start_level)
    area = Decimal(0)
    by_hour: dict[int, int] = {}
    for h, d in changes:
        by_hour[h] = by_hour.get(h, 0) + d
    for hour in range(31 * 24):
        level += by_hour.get(hour, 0)
        area += level
    assert result.quantity == area / (31 * 24)
    assert result.ending_level == start_level + sum(d for _, d in changes)


def test_a_meter_can_compute_each_events_value_with_a_formula():
    from remit.domain.rating.expressions import parse_formula

    meter = Meter("llm_cost", Aggregation.SUM, expression=parse_formula("tokens_in * 0.000003 + tokens_out * 0.000015"))
    events = [ev(1, tokens_in=1000, tokens_out=200), ev(2, tokens_in="500", tokens_out=0)]
    assert aggregate(meter, events, START, END)[()].quantity == Decimal("0.006") + Decimal("0.0015")


def test_a_formula_meter_refuses_an_event_it_cannot_value():
    from remit.domain.rating.expressions import parse_formula

    meter = Meter("llm_cost", Aggregation.SUM, expression=parse_formula("tokens_in * 2"))
    with pytest.raises(ValidationError) as err:
        meter.check(ev(1, other=1))
    assert err.value.field.startswith("properties")


def test_a_meter_takes_a_field_or_an_expression_not_both_and_no_expression_for_counts():
    from remit.domain.rating.expressions import parse_formula

    with pytest.raises(ValidationError):
        Meter("x", Aggregation.SUM, field="a", expression=parse_formula("a"))
    with pytest.raises(ValidationError):
        Meter("x", Aggregation.COUNT, expression=parse_formula("a"))


def _outcome(call):
    try:
        return call()
    except ValidationError as exc:
        return (exc.code, exc.field)


@pytest.mark.parametrize(
    "meter",
    [
        Meter("tokens", Aggregation.SUM, "tokens", {"tier": ("a",)}, ("model",)),
        Meter("seats", Aggregation.WEIGHTED_SUM, "seats"),
        Meter("users", Aggregation.UNIQUE_COUNT, "user", {}, ("region",)),
        Meter("calls", Aggregation.COUNT, None, {}, ("region",)),
        Meter("cost", Aggregation.SUM, expression=parse_formula("tokens * 2")),
    ],
)
@pytest.mark.parametrize(
    "props",
    [
        {"tokens": 5, "tier": "a", "model": "m", "seats": "2.5", "user": "u", "region": "eu"},
        {"tokens": "x", "tier": "a", "model": "m"},
        {"tokens": True, "model": "m"},
        {"tier": "a"},
        {},
    ],
)
def test_checked_value_is_check_then_value_of(meter, props):
    """The ingestion path's one-pass check gives what check() and value_of() give, errors included."""
    event = UsageEvent(datetime(2026, 1, 1, tzinfo=UTC), props)

    def two_passes():
        meter.check(event)
        return meter.value_of(event) if meter.aggregation.numeric else None

    assert _outcome(lambda: meter.checked_value(event)) == _outcome(two_passes)


def test_latest_can_carry_its_last_value_over_to_periods_without_events():
    """Seats reported only when they change: April has no event and bills March's last value; a group reported
    in April takes April's; a meter that does not carry over has nothing in April."""
    seats = Meter("seats", Aggregation.LATEST, "n", group_by=("region",), carry_over=True)
    events = [
        ev(2, n="10", region="eu"),
        ev(20, n="12", region="eu"),
        ev(25, n="3", region="us"),
        ev(35, n="4", region="us"),  # 5 April
        ev(75, n="99", region="eu"),  # after April: never carried backwards
    ]
    april = aggregate(seats, events, END, END + timedelta(days=30))
    assert {g: (a.quantity, a.events) for g, a in april.items()} == {
        ("eu",): (Decimal(12), 0),
        ("us",): (Decimal(4), 1),
    }
    march = aggregate(seats, events, START, END)
    assert {g: (a.quantity, a.events) for g, a in march.items()} == {
        ("eu",): (Decimal(12), 2),
        ("us",): (Decimal(3), 1),
    }
    assert aggregate(seats, events, START - timedelta(days=30), START) == {}  # nothing reported before: nothing
    plain = Meter("seats", Aggregation.LATEST, "n", group_by=("region",))
    assert set(aggregate(plain, events, END, END + timedelta(days=30))) == {("us",)}


def test_only_a_latest_meter_carries_over():
    with pytest.raises(ValidationError) as caught:
        Meter("m", Aggregation.SUM, "n", carry_over=True)
    assert (caught.value.code, caught.value.field) == ("invalid_carry_over", "carry_over")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("eu", "eu"),
        ("True", "True"),  # a string is compared as it is
        (True, "true"),
        (False, "false"),
        (None, None),  # null: a missing value
        (1, "1"),
        (-7, "-7"),
        (1.0, "1"),
        (Decimal("1.0"), "1"),
        (Decimal("1E+3"), "1000"),
        (Decimal("2.50"), "2.5"),
        (0.1, "0.1"),
        (Decimal("-0"), "0"),
        (Decimal("0.30000000000000001"), "0.30000000000000001"),
        (12345678901234567890, "12345678901234567890"),
    ],
)
def test_a_property_has_one_text_for_filters_groups_and_unique_counts(value, text):
    assert property_text(value, "properties.p") == text


@pytest.mark.parametrize("value", [{"a": 1}, [1], Decimal("1E+100000000"), Decimal("1E-100000000"), Decimal("NaN")])
def test_a_property_without_such_text_is_an_invalid_value(value):
    with pytest.raises(ValidationError) as err:
        property_text(value, "properties.p")
    assert (err.value.code, err.value.field) == ("invalid_value", "properties.p")


def test_filters_groups_and_unique_counts_compare_that_text():
    meter = Meter("m", Aggregation.COUNT, filters={"billable": ("true",), "tier": ("1",)}, group_by=("premium",))
    events = [
        ev(0, "a", billable=True, tier=1, premium=False),
        ev(1, "b", billable="true", tier=1.0, premium="false"),
        ev(2, "c", billable="True", tier=1, premium=False),  # the string "True" is not JSON's true
        ev(3, "d", billable=True, tier="1.0", premium=False),  # nor is the string "1.0" the number 1
    ]
    assert [meter.matches(e) for e in events] == [True, True, False, False]
    assert aggregate(meter, events, START, END) == {("false",): Aggregate(Decimal(2), 2)}
    users = Meter("u", Aggregation.UNIQUE_COUNT, "user")
    same = [ev(0, "a", user=7), ev(1, "b", user=7.0), ev(2, "c", user="7"), ev(3, "d", user=True)]
    assert aggregate(users, same, START, END)[()].quantity == Decimal(2)  # "7" and "true"


def test_a_null_filter_group_or_counted_property_is_missing():
    for meter in (
        Meter("f", Aggregation.COUNT, filters={"region": ("eu",)}),
        Meter("g", Aggregation.COUNT, group_by=("region",)),
        Meter("u", Aggregation.UNIQUE_COUNT, "region"),
    ):
        with pytest.raises(ValidationError) as err:
            meter.checked_value(ev(0, region=None))
        assert (err.value.code, err.value.field) == ("missing_property", "properties.region")


def _local_midnight(tz: str, *day: int) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(*day, tzinfo=ZoneInfo(tz)).astimezone(UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("tz", "month", "days"),
    [("America/New_York", 3, 31), ("Europe/Berlin", 10, 31), ("Australia/Lord_Howe", 4, 30), ("UTC", 3, 31)],
)
def test_weighted_sum_in_a_time_zone_weighs_each_local_day_the_same(tz, month, days):
    """Given the customer's zone, 100 held from the 1st to the 16th (local midnights) of a month with a clock
    change is 15 days of the month's, as a fee is prorated; without it, its share of the hours."""
    meter = Meter("gb", Aggregation.WEIGHTED_SUM, "gb")
    start, end = _local_midnight(tz, 2026, month, 1), _local_midnight(tz, 2026, month + 1, 1)
    drop = UsageEvent(_local_midnight(tz, 2026, month, 16), {"gb": "-100"}, "drop")
    found = aggregate(meter, [drop], start, end, {(): Decimal(100)}, timezone=tz)[()]
    assert found.exact == Fraction(1500, days)
    assert found.ending_level == 0
    by_hours = aggregate(meter, [drop], start, end, {(): Decimal(100)})[()]
    held = Fraction((drop.timestamp - start) // timedelta(seconds=1), (end - start) // timedelta(seconds=1))
    assert by_hours.exact == 100 * held
    assert (by_hours.exact == found.exact) is (tz == "UTC")


def test_weighted_sum_in_a_time_zone_counts_an_hour_of_a_short_day_as_its_share_of_that_day():
    """New York, 8 March 2026 has 23 hours: a level of 23 held for its last hour (and nothing else) is one day's
    worth of 1, 1/31 of March's average; the days of 24 hours are counted as before."""
    tz = "America/New_York"
    meter = Meter("gb", Aggregation.WEIGHTED_SUM, "gb")
    start, end = _local_midnight(tz, 2026, 3, 1), _local_midnight(tz, 2026, 4, 1)
    up = UsageEvent(_local_midnight(tz, 2026, 3, 9) - timedelta(hours=1), {"gb": "23"}, "up")
    down = UsageEvent(_local_midnight(tz, 2026, 3, 9), {"gb": "-23"}, "down")
    assert aggregate(meter, [up, down], start, end, timezone=tz)[()].exact == Fraction(1, 31)
    # A window that is not whole local days (an hour's bucket) is weighted by its seconds, as before.
    hour = aggregate(meter, [up], up.timestamp, down.timestamp, timezone=tz)[()]
    assert hour.exact == 23
