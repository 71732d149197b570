"""Scenarios: annual, billed in arrears, anniversary anchor.

Anniversary on a leap day: 29 Feb 2028, then 28 Feb in common years and 29 Feb again in 2032.
Expected lines: see tests/scenarios/matrix.py (hand calculation from the dates below).
"""

from datetime import date

from tests.scenarios.matrix import Axis, check, expected_lines

AXIS = Axis(
    "year",
    "in_arrears",
    "anniversary",
    start=date(2028, 2, 29),
    bounds=(date(2028, 2, 29), date(2029, 2, 28), date(2030, 2, 28), date(2031, 2, 28), date(2032, 2, 29)),
    change_on=date(2029, 8, 31),
    resume_on=date(2030, 8, 31),
)


def test_annual__in_arrears__anniversary__upgrade(app):
    """upgrade (basic → pro) now"""
    assert check(app, AXIS, "upgrade") == expected_lines(AXIS, "upgrade")


def test_annual__in_arrears__anniversary__downgrade(app):
    """downgrade (basic → lite) now"""
    assert check(app, AXIS, "downgrade") == expected_lines(AXIS, "downgrade")


def test_annual__in_arrears__anniversary__quantity_change(app):
    """3 → 5 seats now"""
    assert check(app, AXIS, "quantity_change") == expected_lines(AXIS, "quantity_change")


def test_annual__in_arrears__anniversary__pause_resume(app):
    """pause in P1, resume in P2"""
    assert check(app, AXIS, "pause_resume") == expected_lines(AXIS, "pause_resume")


def test_annual__in_arrears__anniversary__cancel_now(app):
    """cancel now"""
    assert check(app, AXIS, "cancel_now") == expected_lines(AXIS, "cancel_now")


def test_annual__in_arrears__anniversary__cancel_at_period_end(app):
    """cancel at period end"""
    assert check(app, AXIS, "cancel_at_period_end") == expected_lines(AXIS, "cancel_at_period_end")
