"""Scenarios: quarterly, billed in arrears, calendar anchor.

Calendar quarters: the first period is Q1 (90 days), billed from 10 Feb: 50/90.
Expected lines: see tests/scenarios/matrix.py (hand calculation from the dates below).
"""

from datetime import date

from tests.scenarios.matrix import Axis, expected, play

AXIS = Axis(
    "quarter",
    "in_arrears",
    "calendar",
    start=date(2026, 2, 10),
    bounds=(date(2026, 1, 1), date(2026, 4, 1), date(2026, 7, 1), date(2026, 10, 1), date(2027, 1, 1)),
    change_on=date(2026, 5, 16),
    resume_on=date(2026, 8, 16),
)


def test_quarterly__in_arrears__calendar__each_change(app):
    """One customer each: upgrade, downgrade, quantity change, pause then resume, cancel now, cancel at period end."""
    assert play(app, AXIS) == expected(AXIS)
