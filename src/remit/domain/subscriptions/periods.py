"""Billing periods and proration: pure date maths.

Dates are ``datetime.date`` (no times, no time zones: the caller decides which calendar day "today" is) and
nothing here reads a clock. A period is half-open, ``[start_on, end_on)``: it includes its first day and
excludes its last, so consecutive periods share a boundary and never overlap.

**The period grid.** A subscription's periods are the grid ``add_interval(anchor, interval, k)`` for every
integer ``k``. Month-based boundaries are always computed from the anchor, never chained from the previous
boundary, and the day is clamped to the month's length: with anchor 31 Jan and a monthly interval the
boundaries are 31 Jan, 28 Feb (29 in a leap year), 31 Mar, 30 Apr, 31 May... A chained computation would drift
to the 28th forever.

**Anchors.** ``billing_anchor`` turns a subscription's settings into a grid origin:

- ``ANNIVERSARY``: the start date, or the trial end when there is a trial (as Stripe does).
- ``CALENDAR``: the calendar boundary of the interval's *unit* on or before the start: the 1st of the month
  for months, the 1st of Jan/Apr/Jul/Oct for quarters, 1 Jan for years, the Monday for weeks, the day itself
  for days. The count only sets the length: a "3 months" calendar plan starting 10 Aug runs 1 Aug - 1 Nov.
- ``DAY_OF_MONTH``: periods start on a given day of the month (clamped to short months), the latest such
  boundary on or before the start. Because the grid clamps from the anchor, the returned anchor carries the
  *unclamped* day: day 31 from 5 Mar gives the anchor 31 Jan, whose grid has the boundary 28 Feb, so the first
  period is [28 Feb, 31 Mar). ``period_containing(anchor, interval, start_on)`` is always the first period.

**Proration is by whole days.** ``proration_fraction`` is the number of days of the slice that fall inside the
period divided by the number of days in the period, as an exact ``Fraction``. Every day of a period weighs the
same, and a day is worth more in February (1/28) than in March (1/31): 10 Aug - 1 Sep of a monthly calendar
period is 22/31. There is no time-of-day proration (unlike Stripe's per-second proration); a change takes
effect from the start of its day. The fractions of slices that partition a period sum to exactly 1, so
prorated charges and credits for the same period never leave a remainder beyond rounding.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from enum import Enum
from fractions import Fraction

from remit.domain.errors import ValidationError


class IntervalUnit(str, Enum):  # noqa: UP042 (str mix-in kept on purpose: the agreed API)
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


_MONTHS_PER_UNIT = {IntervalUnit.MONTH: 1, IntervalUnit.QUARTER: 3, IntervalUnit.YEAR: 12}
_DAYS_PER_UNIT = {IntervalUnit.DAY: 1, IntervalUnit.WEEK: 7}


def _parse_unit(unit: object) -> IntervalUnit:
    if isinstance(unit, IntervalUnit):
        return unit
    if isinstance(unit, str):
        text = unit.strip().lower()
        for candidate in (text, text.removesuffix("s")):
            try:
                return IntervalUnit(candidate)
            except ValueError:
                continue
    allowed = ", ".join(u.value for u in IntervalUnit)
    raise ValidationError("invalid_interval", f"{unit!r} is not a billing interval; use one of {allowed}.", "interval")


@dataclass(frozen=True, slots=True)
class Interval:
    """A billing interval: ``count`` times a unit ("month", "3 months", "2 weeks")."""

    unit: IntervalUnit
    count: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "unit", _parse_unit(self.unit))
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValidationError(
                "invalid_interval",
                f"The interval count must be a whole number of at least 1, not {self.count!r}.",
                "interval_count",
            )

    @classmethod
    def parse(cls, unit: str, count: int = 1) -> Interval:
        """Build an interval from its API spelling; the unit is case-insensitive and may be plural."""
        return cls(_parse_unit(unit), count)

    def months(self) -> int | None:
        """Length in months for month, quarter and year intervals; ``None`` for day and week intervals."""
        per_unit = _MONTHS_PER_UNIT.get(self.unit)
        return None if per_unit is None else per_unit * self.count

    def days(self) -> int | None:
        """Length in days for day and week intervals; ``None`` for month-based intervals."""
        per_unit = _DAYS_PER_UNIT.get(self.unit)
        return None if per_unit is None else per_unit * self.count

    def __str__(self) -> str:
        if self.count == 1:
            return self.unit.value
        return f"{self.count} {self.unit.value}s"


@dataclass(frozen=True, slots=True)
class Period:
    """The half-open date range ``[start_on, end_on)``."""

    start_on: date
    end_on: date  # exclusive

    def __post_init__(self) -> None:
        if self.end_on < self.start_on:
            raise ValidationError(
                "invalid_period",
                f"A period cannot end ({self.end_on}) before it starts ({self.start_on}).",
                "end_on",
            )

    @property
    def days(self) -> int:
        return (self.end_on - self.start_on).days

    def contains(self, on: date) -> bool:
        return self.start_on <= on < self.end_on

    def overlap_days(self, start_on: date, end_on: date) -> int:
        """Days of ``[start_on, end_on)`` that fall inside this period (0 when they do not meet)."""
        return max(0, (min(self.end_on, end_on) - max(self.start_on, start_on)).days)


class AnchorKind(str, Enum):  # noqa: UP042 (str mix-in kept on purpose: the agreed API)
    CALENDAR = "calendar"
    ANNIVERSARY = "anniversary"
    DAY_OF_MONTH = "day_of_month"


def _month_index(on: date) -> int:
    return on.year * 12 + (on.month - 1)


def _month_length(index: int) -> int:
    year, month0 = divmod(index, 12)
    return calendar.monthrange(year, month0 + 1)[1]


def _on_day(index: int, day: int) -> date:
    """The given day of the month ``index``, clamped to the month's length."""
    year, month0 = divmod(index, 12)
    return date(year, month0 + 1, min(day, calendar.monthrange(year, month0 + 1)[1]))


def add_interval(anchor: date, interval: Interval, n: int) -> date:
    """The ``n``-th grid boundary after ``anchor`` (before it when ``n`` is negative).

    Month-based intervals count months from the anchor and clamp its day to the target month's length, so
    31 Jan + 1 month = 28 Feb (29 in leap years) and 31 Jan + 2 months = 31 Mar.
    """
    months = interval.months()
    if months is not None:
        return _on_day(_month_index(anchor) + months * n, anchor.day)
    days = interval.days()
    assert days is not None
    return anchor + timedelta(days=days * n)


def billing_anchor(
    kind: AnchorKind,
    start_on: date,
    interval: Interval,
    *,
    trial_end_on: date | None = None,
    day_of_month: int | None = None,
) -> date:
    """The origin of a subscription's period grid; always on or before ``start_on`` except for anniversary
    anchors after a trial. See the module docstring for each kind."""
    kind = AnchorKind(kind)
    if kind is AnchorKind.ANNIVERSARY:
        return trial_end_on if trial_end_on is not None else start_on

    if kind is AnchorKind.CALENDAR:
        if interval.unit is IntervalUnit.DAY:
            return start_on
        if interval.unit is IntervalUnit.WEEK:
            return start_on - timedelta(days=start_on.weekday())
        if interval.unit is IntervalUnit.QUARTER:
            return date(start_on.year, start_on.month - (start_on.month - 1) % 3, 1)
        if interval.unit is IntervalUnit.YEAR:
            return date(start_on.year, 1, 1)
        return start_on.replace(day=1)

    # DAY_OF_MONTH
    step = interval.months()
    if step is None:
        raise ValidationError(
            "invalid_anchor",
            f"A day-of-month anchor needs a month, quarter or year interval, not {interval}.",
            "billing_anchor_day",
        )
    if isinstance(day_of_month, bool) or not isinstance(day_of_month, int) or not 1 <= day_of_month <= 31:
        raise ValidationError(
            "invalid_anchor",
            f"The billing anchor day must be a day of the month (1-31), not {day_of_month!r}.",
            "billing_anchor_day",
        )
    # The first boundary: the anchor day (clamped) in the start month, or else in the month before.
    first = _month_index(start_on)
    if _on_day(first, day_of_month) > start_on:
        first -= 1
    # The grid origin must carry the unclamped day, so walk back whole intervals to a month long enough.
    for k in range(49):
        index = first - k * step
        if index < 12:  # before year 1
            break
        if _month_length(index) >= day_of_month:
            return _on_day(index, day_of_month)
    # Only a yearly grid on 30/31 February (or 29 Feb with no leap year in the grid) ends up here: every boundary
    # is the end of its February, so the origin is the grid's latest 29 February (its clamped day 28 Feb when the
    # grid has no leap year), whose grid ends each February on its last day: 28 Feb, or 29 in leap years.
    indexes = [first - k * step for k in range(49) if first - k * step >= 12]
    return _on_day(max(indexes, key=_month_length, default=first), day_of_month)


def _index_containing(anchor: date, interval: Interval, on: date) -> int:
    """The grid index ``k`` with ``add_interval(.., k) <= on < add_interval(.., k + 1)``."""
    months = interval.months()
    if months is not None:
        k = (_month_index(on) - _month_index(anchor)) // months
    else:
        days = interval.days()
        assert days is not None
        k = (on - anchor).days // days
    # Month arithmetic can overshoot by one boundary when the anchor day is later in the month than ``on``.
    while add_interval(anchor, interval, k) > on:
        k -= 1
    while add_interval(anchor, interval, k + 1) <= on:
        k += 1
    return k


def period_containing(anchor: date, interval: Interval, on: date) -> Period:
    """The grid period with ``start_on <= on < end_on``; ``on`` may be before the anchor. Constant time."""
    k = _index_containing(anchor, interval, on)
    return Period(add_interval(anchor, interval, k), add_interval(anchor, interval, k + 1))


def periods_overlapping(anchor: date, interval: Interval, start_on: date, end_on: date) -> list[Period]:
    """Every grid period that overlaps ``[start_on, end_on)``, in order; empty for an empty range."""
    if end_on < start_on:
        raise ValueError(f"range ends ({end_on}) before it starts ({start_on})")
    if end_on == start_on:
        return []
    k = _index_containing(anchor, interval, start_on)
    periods: list[Period] = []
    boundary = add_interval(anchor, interval, k)
    while boundary < end_on:
        following = add_interval(anchor, interval, k + 1)
        periods.append(Period(boundary, following))
        k += 1
        boundary = following
    return periods


def proration_fraction(slice_start_on: date, slice_end_on: date, period: Period) -> Fraction:
    """Days of ``[slice_start_on, slice_end_on)`` inside ``period`` over the period's days, exactly."""
    if slice_end_on < slice_start_on:
        raise ValueError(f"slice ends ({slice_end_on}) before it starts ({slice_start_on})")
    if period.days == 0:
        raise ValueError("cannot prorate over an empty period")
    return Fraction(period.overlap_days(slice_start_on, slice_end_on), period.days)
