"""Scenarios: annual, billed in arrears, calendar anchor.

Calendar years: 2026 is billed from 10 Feb (325/365); 2028 is a leap year (366 days).
Expected lines: see tests/scenarios/matrix.py (hand calculation from the dates below).
"""

from datetime import date

from tests.scenarios.matrix import Axis, expected, play

AXIS = Axis(
    "year",
    "in_arrears",
    "calendar",
    start=date(2026, 2, 10),
    bounds=(date(2026, 1, 1), date(2027, 1, 1), date(2028, 1, 1), date(2029, 1, 1), date(2030, 1, 1)),
    change_on=date(2027, 7, 2),
    resume_on=date(2028, 7, 2),
)


def test_annual__in_arrears__calendar__each_change(app):
    """One customer each: upgrade, downgrade, quantity change, pause then resume, cancel now, cancel at period end."""
    assert play(app, AXIS) == expected(AXIS)
