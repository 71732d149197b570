"""Scenarios: monthly, billed in advance, calendar anchor.

Calendar months: the first period runs 1 Feb - 1 Mar, so February is billed 19/28 of a month.
Expected lines: see tests/scenarios/matrix.py (hand calculation from the dates below).
"""

from datetime import date

from tests.scenarios.matrix import Axis, expected, play

AXIS = Axis(
    "month",
    "in_advance",
    "calendar",
    start=date(2026, 2, 10),
    bounds=(date(2026, 2, 1), date(2026, 3, 1), date(2026, 4, 1), date(2026, 5, 1), date(2026, 6, 1)),
    change_on=date(2026, 3, 16),
    resume_on=date(2026, 4, 16),
)


def test_monthly__in_advance__calendar__each_change(app):
    """One customer each: upgrade, downgrade, quantity change, pause then resume, cancel now, cancel at period end."""
    assert play(app, AXIS) == expected(AXIS)


def test_monthly__in_advance__calendar__hand_figures():
    """The figures behind the matrix for this axis, written out (no database): 19/28 of February, then 16 of
    March's 31 days changed on 16 Mar."""
    assert expected(AXIS) == {
        "upgrade": [
            ("subscription", "2026-02-10", "2026-03-01", "20.36"),  # 30 × 19/28
            ("subscription", "2026-03-01", "2026-04-01", "30.00"),
            ("proration", "2026-03-16", "2026-04-01", "-15.48"),  # 30 × 15/31 = 14.52, less 30.00 billed
            ("subscription", "2026-03-16", "2026-04-01", "25.81"),  # 50 × 16/31
            ("subscription", "2026-04-01", "2026-05-01", "50.00"),
            ("subscription", "2026-05-01", "2026-06-01", "50.00"),
        ],
        "downgrade": [
            ("subscription", "2026-02-10", "2026-03-01", "20.36"),
            ("subscription", "2026-03-01", "2026-04-01", "30.00"),
            ("proration", "2026-03-16", "2026-04-01", "-15.48"),
            ("subscription", "2026-03-16", "2026-04-01", "10.32"),  # 20 × 16/31
            ("subscription", "2026-04-01", "2026-05-01", "20.00"),
            ("subscription", "2026-05-01", "2026-06-01", "20.00"),
        ],
        "quantity_change": [
            ("subscription", "2026-02-10", "2026-03-01", "24.43"),  # 3 × 12 × 19/28
            ("subscription", "2026-03-01", "2026-04-01", "36.00"),
            ("proration", "2026-03-16", "2026-04-01", "12.39"),  # 36 × 15/31 + 60 × 16/31 = 48.39, less 36.00
            ("subscription", "2026-04-01", "2026-05-01", "60.00"),
            ("subscription", "2026-05-01", "2026-06-01", "60.00"),
        ],
        "pause_resume": [
            ("subscription", "2026-02-10", "2026-03-01", "20.36"),
            ("subscription", "2026-03-01", "2026-04-01", "30.00"),
            ("proration", "2026-03-16", "2026-04-01", "-15.48"),
            ("subscription", "2026-04-16", "2026-05-01", "15.00"),  # 30 × 15/30, nothing on 1 Apr (paused)
            ("subscription", "2026-05-01", "2026-06-01", "30.00"),
        ],
        "cancel_now": [
            ("subscription", "2026-02-10", "2026-03-01", "20.36"),
            ("subscription", "2026-03-01", "2026-04-01", "30.00"),
            ("proration", "2026-03-16", "2026-04-01", "-15.48"),
        ],
        "cancel_at_period_end": [
            ("subscription", "2026-02-10", "2026-03-01", "20.36"),
            ("subscription", "2026-03-01", "2026-04-01", "30.00"),
        ],
    }
