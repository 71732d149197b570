from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remit.domain.errors import ValidationError
from remit.domain.money import Money, RoundingPolicy, currency
from remit.domain.subscriptions.periods import (
    AnchorKind,
    Interval,
    IntervalUnit,
    Period,
    add_interval,
    billing_anchor,
    period_containing,
    periods_overlapping,
    proration_fraction,
)

MONTH = Interval(IntervalUnit.MONTH)
USD = currency("USD")


def prorate(amount: str, fraction: Fraction) -> Money:
    raw = Decimal(amount) * fraction.numerator / fraction.denominator
    return RoundingPolicy.HALF_UP.round(raw, USD)


# --- Interval -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "count", "months", "days", "text"),
    [
        ("day", 1, None, 1, "day"),
        ("day", 10, None, 10, "10 days"),
        ("week", 1, None, 7, "week"),
        ("week", 2, None, 14, "2 weeks"),
        ("month", 1, 1, None, "month"),
        ("month", 3, 3, None, "3 months"),
        ("quarter", 1, 3, None, "quarter"),
        ("quarter", 2, 6, None, "2 quarters"),
        ("year", 1, 12, None, "year"),
        ("year", 2, 24, None, "2 years"),
    ],
)
def test_interval_units(unit: str, count: int, months: int | None, days: int | None, text: str) -> None:
    interval = Interval.parse(unit, count)
    assert interval.unit is IntervalUnit(unit)
    assert interval.count == count
    assert interval.months() == months
    assert interval.days() == days
    assert str(interval) == text


def test_interval_parse_is_lenient_about_case_and_plural() -> None:
    assert Interval.parse("Month") == MONTH
    assert Interval.parse(" months ", 3) == Interval(IntervalUnit.MONTH, 3)


def test_interval_parse_rejects_unknown_unit() -> None:
    with pytest.raises(ValidationError) as info:
        Interval.parse("fortnight")
    assert (info.value.code, info.value.field) == ("invalid_interval", "interval")


@pytest.mark.parametrize("count", [0, -1, True, 1.5, "2"])
def test_interval_rejects_bad_count(count: object) -> None:
    with pytest.raises(ValidationError) as info:
        Interval(IntervalUnit.MONTH, count)  # type: ignore[arg-type]
    assert (info.value.code, info.value.field) == ("invalid_interval", "interval_count")


def test_interval_is_hashable_and_comparable() -> None:
    assert {Interval.parse("month"), MONTH} == {MONTH}
    assert Interval.parse("quarter") != Interval.parse("month", 3)


# --- Period -------------------------------------------------------------------------------------------------


def test_period_days_and_contains() -> None:
    period = Period(date(2026, 2, 1), date(2026, 3, 1))
    assert period.days == 28
    assert period.contains(date(2026, 2, 1))
    assert period.contains(date(2026, 2, 28))
    assert not period.contains(date(2026, 3, 1))
    assert Period(date(2026, 1, 1), date(2026, 1, 1)).days == 0


def test_period_rejects_reversed_range() -> None:
    with pytest.raises(ValidationError) as info:
        Period(date(2026, 3, 1), date(2026, 2, 1))
    assert info.value.code == "invalid_period"


# --- add_interval -------------------------------------------------------------------------------------------


def test_add_interval_days_and_weeks() -> None:
    anchor = date(2026, 12, 30)
    assert add_interval(anchor, Interval(IntervalUnit.DAY), 3) == date(2027, 1, 2)
    assert add_interval(anchor, Interval(IntervalUnit.DAY, 5), -2) == date(2026, 12, 20)
    assert add_interval(anchor, Interval(IntervalUnit.WEEK), 1) == date(2027, 1, 6)
    assert add_interval(anchor, Interval(IntervalUnit.WEEK, 2), 2) == date(2027, 1, 27)
    assert add_interval(anchor, MONTH, 0) == anchor


def test_add_interval_clamps_month_end_over_a_whole_year() -> None:
    anchor = date(2026, 1, 31)
    boundaries = [add_interval(anchor, MONTH, n) for n in range(13)]
    assert boundaries == [
        date(2026, 1, 31),
        date(2026, 2, 28),
        date(2026, 3, 31),
        date(2026, 4, 30),
        date(2026, 5, 31),
        date(2026, 6, 30),
        date(2026, 7, 31),
        date(2026, 8, 31),
        date(2026, 9, 30),
        date(2026, 10, 31),
        date(2026, 11, 30),
        date(2026, 12, 31),
        date(2027, 1, 31),
    ]


def test_add_interval_leap_years() -> None:
    assert add_interval(date(2028, 1, 31), MONTH, 1) == date(2028, 2, 29)
    assert add_interval(date(2028, 1, 31), MONTH, 2) == date(2028, 3, 31)
    leap_day = date(2028, 2, 29)
    year = Interval(IntervalUnit.YEAR)
    assert add_interval(leap_day, year, 1) == date(2029, 2, 28)
    assert add_interval(leap_day, year, 4) == date(2032, 2, 29)
    assert add_interval(leap_day, year, -1) == date(2027, 2, 28)
    assert add_interval(leap_day, MONTH, 1) == date(2028, 3, 29)


def test_add_interval_quarters_years_and_negative() -> None:
    anchor = date(2026, 11, 30)
    assert add_interval(anchor, Interval(IntervalUnit.QUARTER), 1) == date(2027, 2, 28)
    assert add_interval(anchor, Interval(IntervalUnit.QUARTER), 2) == date(2027, 5, 30)
    assert add_interval(anchor, Interval(IntervalUnit.YEAR, 2), 1) == date(2028, 11, 30)
    assert add_interval(anchor, MONTH, -9) == date(2026, 2, 28)
    assert add_interval(anchor, MONTH, -11) == date(2025, 12, 30)
    assert add_interval(date(2026, 3, 31), MONTH, -1) == date(2026, 2, 28)


# --- billing_anchor -----------------------------------------------------------------------------------------


def test_anniversary_anchor() -> None:
    start = date(2026, 1, 31)
    assert billing_anchor(AnchorKind.ANNIVERSARY, start, MONTH) == start
    trial_end = date(2026, 2, 14)
    assert billing_anchor(AnchorKind.ANNIVERSARY, start, MONTH, trial_end_on=trial_end) == trial_end


@pytest.mark.parametrize(
    ("unit", "count", "start", "expected"),
    [
        ("month", 1, date(2026, 8, 10), date(2026, 8, 1)),
        ("month", 1, date(2026, 8, 1), date(2026, 8, 1)),
        ("month", 3, date(2026, 8, 10), date(2026, 8, 1)),
        ("quarter", 1, date(2026, 1, 1), date(2026, 1, 1)),
        ("quarter", 1, date(2026, 3, 31), date(2026, 1, 1)),
        ("quarter", 1, date(2026, 4, 1), date(2026, 4, 1)),
        ("quarter", 1, date(2026, 6, 15), date(2026, 4, 1)),
        ("quarter", 1, date(2026, 8, 10), date(2026, 7, 1)),
        ("quarter", 1, date(2026, 12, 31), date(2026, 10, 1)),
        ("year", 1, date(2026, 8, 10), date(2026, 1, 1)),
        ("year", 1, date(2028, 12, 31), date(2028, 1, 1)),
        ("week", 1, date(2026, 8, 10), date(2026, 8, 10)),  # a Monday
        ("week", 1, date(2026, 8, 16), date(2026, 8, 10)),  # a Sunday
        ("week", 2, date(2026, 8, 13), date(2026, 8, 10)),
        ("day", 1, date(2026, 8, 13), date(2026, 8, 13)),
    ],
)
def test_calendar_anchor(unit: str, count: int, start: date, expected: date) -> None:
    interval = Interval.parse(unit, count)
    anchor = billing_anchor(AnchorKind.CALENDAR, start, interval)
    assert anchor == expected
    assert period_containing(anchor, interval, start).start_on == expected


def test_calendar_quarter_and_year_grids() -> None:
    quarter = Interval(IntervalUnit.QUARTER)
    anchor = billing_anchor(AnchorKind.CALENDAR, date(2026, 5, 20), quarter)
    assert [p.start_on for p in periods_overlapping(anchor, quarter, date(2026, 1, 1), date(2027, 1, 1))] == [
        date(2026, 1, 1),
        date(2026, 4, 1),
        date(2026, 7, 1),
        date(2026, 10, 1),
    ]
    year = Interval(IntervalUnit.YEAR)
    anchor = billing_anchor(AnchorKind.CALENDAR, date(2026, 5, 20), year)
    assert period_containing(anchor, year, date(2026, 5, 20)) == Period(date(2026, 1, 1), date(2027, 1, 1))
    assert period_containing(anchor, year, date(2028, 2, 29)) == Period(date(2028, 1, 1), date(2029, 1, 1))


def test_day_of_month_anchor_15() -> None:
    anchor = billing_anchor(AnchorKind.DAY_OF_MONTH, date(2026, 3, 20), MONTH, day_of_month=15)
    assert anchor == date(2026, 3, 15)
    anchor = billing_anchor(AnchorKind.DAY_OF_MONTH, date(2026, 3, 15), MONTH, day_of_month=15)
    assert anchor == date(2026, 3, 15)
    anchor = billing_anchor(AnchorKind.DAY_OF_MONTH, date(2026, 3, 10), MONTH, day_of_month=15)
    assert anchor == date(2026, 2, 15)
    assert period_containing(anchor, MONTH, date(2026, 3, 10)) == Period(date(2026, 2, 15), date(2026, 3, 15))
    anchor = billing_anchor(AnchorKind.DAY_OF_MONTH, date(2026, 1, 10), MONTH, day_of_month=15)
    assert anchor == date(2025, 12, 15)


def test_day_of_month_anchor_31() -> None:
    # Start after the 31st's clamp in a 31-day month.
    anchor = billing_anchor(AnchorKind.DAY_OF_MONTH, date(2026, 1, 31), MONTH, day_of_month=31)
    assert anchor == date(2026, 1, 31)
    # In February the boundary is the 28th; the grid origin keeps the 31st.
    start = date(2026, 2, 28)
    anchor = billing_anchor(AnchorKind.DAY_OF_MONTH, start, MONTH, day_of_month=31)
    assert anchor.day == 31 and anchor <= start
    assert period_containing(anchor, MONTH, start) == Period(date(2026, 2, 28), date(2026, 3, 31))
    # Early March: the last boundary was 28 Feb; then 31 Mar, 30 Apr, 31 May.
    start = date(2026, 3, 5)
    anchor = billing_anchor(AnchorKind.DAY_OF_MONTH, start, MONTH, day_of_month=31)
    assert anchor == date(2026, 1, 31)
    assert [p.start_on for p in periods_overlapping(anchor, MONTH, start, date(2026, 6, 1))] == [
        date(2026, 2, 28),
        date(2026, 3, 31),
        date(2026, 4, 30),
        date(2026, 5, 31),
    ]
    # May: the last boundary was 30 Apr.
    start = date(2026, 5, 10)
    anchor = billing_anchor(AnchorKind.DAY_OF_MONTH, start, MONTH, day_of_month=31)
    assert period_containing(anchor, MONTH, start) == Period(date(2026, 4, 30), date(2026, 5, 31))


def test_day_of_month_anchor_quarterly_phase_follows_start() -> None:
    quarter = Interval(IntervalUnit.QUARTER)
    start = date(2026, 7, 5)
    anchor = billing_anchor(AnchorKind.DAY_OF_MONTH, start, quarter, day_of_month=31)
    # The last boundary on the 31st (clamped) was 30 Jun; the origin with a real 31st in that phase is 31 Mar.
    assert anchor == date(2026, 3, 31)
    assert [p.start_on for p in periods_overlapping(anchor, quarter, start, date(2027, 4, 1))] == [
        date(2026, 6, 30),
        date(2026, 9, 30),
        date(2026, 12, 31),
        date(2027, 3, 31),
    ]
    anchor = billing_anchor(AnchorKind.DAY_OF_MONTH, date(2026, 8, 20), quarter, day_of_month=15)
    assert anchor == date(2026, 8, 15)


def test_day_of_month_anchor_leap_day_yearly() -> None:
    year = Interval(IntervalUnit.YEAR)
    start = date(2027, 2, 28)
    anchor = billing_anchor(AnchorKind.DAY_OF_MONTH, start, year, day_of_month=29)
    assert anchor == date(2024, 2, 29)
    assert period_containing(anchor, year, start) == Period(date(2027, 2, 28), date(2028, 2, 29))


@pytest.mark.parametrize("day", [30, 31])
def test_day_of_month_anchor_past_february_yearly_is_the_end_of_february_in_leap_years_too(day: int) -> None:
    """Periods that start on the 30th (31st) of February, clamped, start on its last day: the 29th in 2028."""
    year = Interval(IntervalUnit.YEAR)
    start = date(2026, 3, 5)
    anchor = billing_anchor(AnchorKind.DAY_OF_MONTH, start, year, day_of_month=day)
    assert periods_overlapping(anchor, year, start, date(2030, 1, 1)) == [
        Period(date(2026, 2, 28), date(2027, 2, 28)),
        Period(date(2027, 2, 28), date(2028, 2, 29)),
        Period(date(2028, 2, 29), date(2029, 2, 28)),
        Period(date(2029, 2, 28), date(2030, 2, 28)),
    ]


@pytest.mark.parametrize(
    ("interval", "day"),
    [
        (Interval(IntervalUnit.WEEK), 15),
        (Interval(IntervalUnit.DAY), 15),
        (MONTH, None),
        (MONTH, 0),
        (MONTH, 32),
    ],
)
def test_day_of_month_anchor_validation(interval: Interval, day: int | None) -> None:
    with pytest.raises(ValidationError) as info:
        billing_anchor(AnchorKind.DAY_OF_MONTH, date(2026, 3, 10), interval, day_of_month=day)
    assert (info.value.code, info.value.field) == ("invalid_anchor", "billing_anchor_day")


# --- period_containing / periods_overlapping ----------------------------------------------------------------


def test_period_containing_before_and_after_anchor() -> None:
    anchor = date(2026, 1, 31)
    assert period_containing(anchor, MONTH, date(2026, 1, 31)) == Period(date(2026, 1, 31), date(2026, 2, 28))
    assert period_containing(anchor, MONTH, date(2026, 3, 30)) == Period(date(2026, 2, 28), date(2026, 3, 31))
    assert period_containing(anchor, MONTH, date(2026, 3, 31)) == Period(date(2026, 3, 31), date(2026, 4, 30))
    assert period_containing(anchor, MONTH, date(2026, 1, 30)) == Period(date(2025, 12, 31), date(2026, 1, 31))
    assert period_containing(anchor, MONTH, date(2025, 3, 1)) == Period(date(2025, 2, 28), date(2025, 3, 31))
    week = Interval(IntervalUnit.WEEK, 2)
    assert period_containing(date(2026, 8, 10), week, date(2026, 8, 9)) == Period(date(2026, 7, 27), date(2026, 8, 10))
    # 364 days = 26 fortnights after the anchor: a boundary.
    assert period_containing(date(2026, 8, 10), week, date(2027, 8, 9)) == Period(date(2027, 8, 9), date(2027, 8, 23))
    assert period_containing(date(2026, 8, 10), week, date(2027, 8, 8)) == Period(date(2027, 7, 26), date(2027, 8, 9))


def test_periods_overlapping_examples() -> None:
    anchor = date(2026, 1, 1)
    assert periods_overlapping(anchor, MONTH, date(2026, 1, 15), date(2026, 1, 15)) == []
    assert periods_overlapping(anchor, MONTH, date(2026, 1, 15), date(2026, 2, 1)) == [
        Period(date(2026, 1, 1), date(2026, 2, 1))
    ]
    assert periods_overlapping(anchor, MONTH, date(2026, 1, 15), date(2026, 2, 2)) == [
        Period(date(2026, 1, 1), date(2026, 2, 1)),
        Period(date(2026, 2, 1), date(2026, 3, 1)),
    ]
    with pytest.raises(ValueError):
        periods_overlapping(anchor, MONTH, date(2026, 2, 1), date(2026, 1, 1))


def _brute_force_containing(anchor: date, interval: Interval, on: date) -> Period:
    k = 0
    step = 1 if on >= anchor else -1
    while True:
        start, end = add_interval(anchor, interval, k), add_interval(anchor, interval, k + 1)
        if start <= on < end:
            return Period(start, end)
        k += step


intervals = st.builds(
    Interval,
    st.sampled_from(list(IntervalUnit)),
    st.integers(min_value=1, max_value=5),
)
dates = st.dates(min_value=date(1990, 1, 1), max_value=date(2060, 12, 31))
month_ends = st.sampled_from(
    [date(2026, 1, 31), date(2028, 2, 29), date(2027, 2, 28), date(2026, 4, 30), date(2026, 8, 30)]
)


@given(anchor=st.one_of(dates, month_ends), interval=intervals, on=dates)
def test_period_containing_agrees_with_brute_force(anchor: date, interval: Interval, on: date) -> None:
    if interval.days() is not None and abs((on - anchor).days) > 3000:
        on = anchor + timedelta(days=(on - anchor).days % 3000 - 1500)
    period = period_containing(anchor, interval, on)
    assert period == _brute_force_containing(anchor, interval, on)
    assert period.start_on <= on < period.end_on


@given(anchor=st.one_of(dates, month_ends), interval=intervals, start=dates, length=st.integers(0, 800))
def test_periods_overlapping_covers_range_without_gaps(
    anchor: date, interval: Interval, start: date, length: int
) -> None:
    end = start + timedelta(days=length)
    periods = periods_overlapping(anchor, interval, start, end)
    if length == 0:
        assert periods == []
        return
    assert periods[0].start_on <= start < periods[0].end_on
    assert periods[-1].start_on < end <= periods[-1].end_on
    for before, after in zip(periods, periods[1:], strict=False):
        assert before.end_on == after.start_on
    for period in periods:
        assert period == period_containing(anchor, interval, period.start_on)
        assert period.days > 0
    covered = sum(p.overlap_days(start, end) for p in periods)
    assert covered == length


@given(
    kind=st.sampled_from(list(AnchorKind)),
    start=dates,
    interval=intervals,
    trial=st.one_of(st.none(), st.integers(1, 60)),
    day=st.integers(1, 31),
)
def test_billing_anchor_is_a_grid_boundary(
    kind: AnchorKind, start: date, interval: Interval, trial: int | None, day: int
) -> None:
    if kind is AnchorKind.DAY_OF_MONTH and interval.months() is None:
        return
    trial_end = None if trial is None else start + timedelta(days=trial)
    anchor = billing_anchor(kind, start, interval, trial_end_on=trial_end, day_of_month=day)
    reference = trial_end if kind is AnchorKind.ANNIVERSARY and trial_end is not None else start
    assert anchor <= reference
    first = period_containing(anchor, interval, reference)
    assert first.start_on <= reference < first.end_on
    if kind is AnchorKind.ANNIVERSARY:
        assert first.start_on == reference
    if kind is AnchorKind.DAY_OF_MONTH:
        # The first period starts on the anchor day, clamped to its month, no later than the start.
        assert first.start_on.day == day or (first.start_on + timedelta(days=1)).day == 1
        assert (start - first.start_on).days < 31 or interval.months() != 1


# --- proration ----------------------------------------------------------------------------------------------


def test_calendar_proration_example() -> None:
    start = date(2026, 8, 10)
    anchor = billing_anchor(AnchorKind.CALENDAR, start, MONTH)
    period = period_containing(anchor, MONTH, start)
    assert period == Period(date(2026, 8, 1), date(2026, 9, 1))
    fraction = proration_fraction(start, period.end_on, period)
    assert fraction == Fraction(22, 31)
    assert prorate("50", fraction) == Money.of("35.48", "USD")


def test_trial_proration_example() -> None:
    start = date(2026, 4, 1)
    trial_end = start + timedelta(days=5)
    assert trial_end == date(2026, 4, 6)
    anchor = billing_anchor(AnchorKind.CALENDAR, start, MONTH, trial_end_on=trial_end)
    period = period_containing(anchor, MONTH, trial_end)
    assert period == Period(date(2026, 4, 1), date(2026, 5, 1))
    assert proration_fraction(start, trial_end, period) == Fraction(5, 30)
    fraction = proration_fraction(trial_end, period.end_on, period)
    assert fraction == Fraction(25, 30)
    assert prorate("50", fraction) == Money.of("41.67", "USD")


def test_upgrade_halfway_through_a_30_day_month() -> None:
    period = Period(date(2026, 4, 1), date(2026, 5, 1))
    assert period.days == 30
    assert proration_fraction(date(2026, 4, 16), period.end_on, period) == Fraction(1, 2)


def test_in_arrears_example() -> None:
    period = period_containing(date(2026, 1, 1), MONTH, date(2026, 1, 10))
    assert period == Period(date(2026, 1, 1), date(2026, 2, 1))
    assert proration_fraction(date(2026, 1, 1), date(2026, 1, 15), period) == Fraction(14, 31)


def test_proration_clips_the_slice_to_the_period() -> None:
    period = Period(date(2026, 2, 1), date(2026, 3, 1))
    assert proration_fraction(date(2026, 1, 1), date(2026, 4, 1), period) == 1
    assert proration_fraction(date(2026, 1, 1), date(2026, 2, 8), period) == Fraction(7, 28)
    assert proration_fraction(date(2026, 3, 1), date(2026, 4, 1), period) == 0
    assert proration_fraction(date(2026, 2, 10), date(2026, 2, 10), period) == 0
    with pytest.raises(ValueError):
        proration_fraction(date(2026, 2, 10), date(2026, 2, 9), period)
    with pytest.raises(ValueError):
        proration_fraction(date(2026, 2, 10), date(2026, 2, 11), Period(date(2026, 2, 1), date(2026, 2, 1)))


@given(anchor=st.one_of(dates, month_ends), interval=intervals, on=dates, cuts=st.lists(st.integers(0, 10_000)))
def test_proration_of_a_partition_sums_to_one(anchor: date, interval: Interval, on: date, cuts: list[int]) -> None:
    if interval.days() is not None:
        on = anchor + timedelta(days=(on - anchor).days % 3000)
    period = period_containing(anchor, interval, on)
    offsets = sorted({0, period.days, *(c % (period.days + 1) for c in cuts)})
    boundaries = [period.start_on + timedelta(days=o) for o in offsets]
    fractions = [proration_fraction(a, b, period) for a, b in zip(boundaries, boundaries[1:], strict=False)]
    assert sum(fractions, Fraction(0)) == 1
    assert all(0 < f <= 1 for f in fractions)
