"""Scenarios: monthly, billed in arrears, calendar anchor.

Calendar months: the first period runs 1 Feb - 1 Mar, so February is billed 19/28 of a month.
Expected lines: see tests/scenarios/matrix.py (hand calculation from the dates below).
"""

from datetime import date

from tests.scenarios.matrix import Axis, check, expected_lines

AXIS = Axis(
    "month",
    "in_arrears",
    "calendar",
    start=date(2026, 2, 10),
    bounds=(date(2026, 2, 1), date(2026, 3, 1), date(2026, 4, 1), date(2026, 5, 1), date(2026, 6, 1)),
    change_on=date(2026, 3, 16),
    resume_on=date(2026, 4, 16),
)


def test_monthly__in_arrears__calendar__upgrade(app):
    """upgrade (basic → pro) now"""
    assert check(app, AXIS, "upgrade") == expected_lines(AXIS, "upgrade")


def test_monthly__in_arrears__calendar__downgrade(app):
    """downgrade (basic → lite) now"""
    assert check(app, AXIS, "downgrade") == expected_lines(AXIS, "downgrade")


def test_monthly__in_arrears__calendar__quantity_change(app):
    """3 → 5 seats now"""
    assert check(app, AXIS, "quantity_change") == expected_lines(AXIS, "quantity_change")


def test_monthly__in_arrears__calendar__pause_resume(app):
    """pause in P1, resume in P2"""
    assert check(app, AXIS, "pause_resume") == expected_lines(AXIS, "pause_resume")


def test_monthly__in_arrears__calendar__cancel_now(app):
    """cancel now"""
    assert check(app, AXIS, "cancel_now") == expected_lines(AXIS, "cancel_now")


def test_monthly__in_arrears__calendar__cancel_at_period_end(app):
    """cancel at period end"""
    assert check(app, AXIS, "cancel_at_period_end") == expected_lines(AXIS, "cancel_at_period_end")
