"""Scenarios: monthly, billed in arrears, anniversary anchor.

Anniversary on the 31st: the grid clamps to short months (31 Jan, 28 Feb, 31 Mar, 30 Apr, 31 May) and never drifts.
Expected lines: see tests/scenarios/matrix.py (hand calculation from the dates below).
"""

from datetime import date

from tests.scenarios.matrix import Axis, check, expected_lines

AXIS = Axis(
    "month",
    "in_arrears",
    "anniversary",
    start=date(2026, 1, 31),
    bounds=(date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30), date(2026, 5, 31)),
    change_on=date(2026, 3, 16),
    resume_on=date(2026, 4, 16),
)


def test_monthly__in_arrears__anniversary__upgrade(app):
    """upgrade (basic → pro) now"""
    assert check(app, AXIS, "upgrade") == expected_lines(AXIS, "upgrade")


def test_monthly__in_arrears__anniversary__downgrade(app):
    """downgrade (basic → lite) now"""
    assert check(app, AXIS, "downgrade") == expected_lines(AXIS, "downgrade")


def test_monthly__in_arrears__anniversary__quantity_change(app):
    """3 → 5 seats now"""
    assert check(app, AXIS, "quantity_change") == expected_lines(AXIS, "quantity_change")


def test_monthly__in_arrears__anniversary__pause_resume(app):
    """pause in P1, resume in P2"""
    assert check(app, AXIS, "pause_resume") == expected_lines(AXIS, "pause_resume")


def test_monthly__in_arrears__anniversary__cancel_now(app):
    """cancel now"""
    assert check(app, AXIS, "cancel_now") == expected_lines(AXIS, "cancel_now")


def test_monthly__in_arrears__anniversary__cancel_at_period_end(app):
    """cancel at period end"""
    assert check(app, AXIS, "cancel_at_period_end") == expected_lines(AXIS, "cancel_at_period_end")
