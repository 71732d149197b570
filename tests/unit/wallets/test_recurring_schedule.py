"""When a recurring grant's occurrences fall due (pure domain)."""

from datetime import UTC, date, datetime, time, timedelta

from hypothesis import given
from hypothesis import strategies as st

from remit.domain.subscriptions.periods import Interval
from remit.domain.wallets import due_occurrences, first_occurrence_after, occurrence_on

MONTH = Interval.parse("month")
MADE = datetime(2026, 1, 10, 9, 30, tzinfo=UTC)  # when the schedule was made


def _due(starts_on, as_of, *, interval=MONTH, next_index=0, ends_on=None, tz="UTC", created_at=MADE):
    return [
        (o.index, o.on.isoformat(), o.at.isoformat())
        for o in due_occurrences(starts_on, interval, next_index, ends_on, tz, created_at, as_of)
    ]


def test_month_based_occurrences_keep_the_first_day_clamped_to_shorter_months():
    days = [occurrence_on(date(2026, 1, 31), MONTH, n).isoformat() for n in range(4)]
    assert days == ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"]
    assert occurrence_on(date(2028, 1, 31), MONTH, 1) == date(2028, 2, 29)  # leap year
    assert occurrence_on(date(2026, 1, 10), Interval.parse("week", 2), 3) == date(2026, 2, 21)


def test_a_schedule_that_starts_today_gives_its_first_credits_when_it_is_made_not_at_midnight_before():
    assert _due(date(2026, 1, 10), MADE) == [(0, "2026-01-10", "2026-01-10T09:30:00+00:00")]
    assert _due(date(2026, 1, 10), datetime(2026, 1, 10, 9, 29, tzinfo=UTC)) == []


def test_every_occurrence_missed_is_due_in_order_each_at_the_start_of_its_own_day():
    as_of = datetime(2026, 4, 10, tzinfo=UTC)
    assert _due(date(2026, 2, 10), as_of) == [
        (0, "2026-02-10", "2026-02-10T00:00:00+00:00"),
        (1, "2026-03-10", "2026-03-10T00:00:00+00:00"),
        (2, "2026-04-10", "2026-04-10T00:00:00+00:00"),
    ]
    assert _due(date(2026, 2, 10), as_of, next_index=2) == [(2, "2026-04-10", "2026-04-10T00:00:00+00:00")]
    assert _due(date(2026, 2, 10), as_of, next_index=3) == []


def test_the_end_day_is_excluded():
    as_of = datetime(2026, 12, 31, tzinfo=UTC)
    assert [d for _i, d, _a in _due(date(2026, 2, 10), as_of, ends_on=date(2026, 4, 10))] == [
        "2026-02-10",
        "2026-03-10",
    ]
    assert len(_due(date(2026, 2, 10), as_of, ends_on=date(2026, 4, 11))) == 3


def test_days_start_in_the_customers_time_zone():
    # Midnight in New York is 05:00 UTC in winter and 04:00 UTC in summer.
    as_of = datetime(2026, 4, 1, 4, 0, tzinfo=UTC)
    assert _due(date(2026, 3, 1), as_of, tz="America/New_York") == [
        (0, "2026-03-01", "2026-03-01T05:00:00+00:00"),
        (1, "2026-04-01", "2026-04-01T04:00:00+00:00"),
    ]
    assert len(_due(date(2026, 3, 1), datetime(2026, 4, 1, 3, 59, tzinfo=UTC), tz="America/New_York")) == 1


@given(
    st.dates(min_value=date(2026, 1, 10), max_value=date(2030, 12, 31)),
    st.sampled_from(["day", "week", "month", "quarter", "year"]),
    st.integers(min_value=1, max_value=3),
    st.integers(min_value=0, max_value=400),
    st.integers(min_value=1, max_value=20),
)
def test_due_occurrences_resume_where_the_last_look_stopped(starts_on, unit, count, days, split):
    """Looking twice (up to a middle time, then to the end) finds exactly what looking once finds."""
    every = Interval.parse(unit, count)
    end = datetime.combine(starts_on + timedelta(days=days), time(12), UTC)
    middle = end - timedelta(days=min(split, days))
    once = due_occurrences(starts_on, every, 0, None, "Europe/Berlin", MADE, end)
    first = due_occurrences(starts_on, every, 0, None, "Europe/Berlin", MADE, middle)
    rest = due_occurrences(starts_on, every, len(first), None, "Europe/Berlin", MADE, end)
    assert first + rest == once
    assert [o.index for o in once] == list(range(len(once)))
    assert all(a.at < b.at for a, b in zip(once, once[1:], strict=False))


def test_the_first_occurrence_after_a_moment_is_where_a_test_clock_stops():
    after = datetime(2026, 3, 10, tzinfo=UTC)  # the occurrence of 10 March is at that moment: not after it
    found = first_occurrence_after(date(2026, 2, 10), MONTH, 0, None, "UTC", MADE, after)
    assert (found.index, found.on) == (2, date(2026, 4, 10))
    assert first_occurrence_after(date(2026, 2, 10), MONTH, 0, date(2026, 4, 10), "UTC", MADE, after) is None
