"""Scenarios: quarterly, billed in arrears, anniversary anchor.

Anniversary quarters from 30 Nov: 30 Nov, 28 Feb (clamped), 30 May, 30 Aug, 30 Nov.
Expected lines: see tests/scenarios/matrix.py (hand calculation from the dates below).
"""

from datetime import date

from tests.scenarios.matrix import Axis, check, expected_lines

AXIS = Axis(
    "quarter",
    "in_arrears",
    "anniversary",
    start=date(2026, 11, 30),
    bounds=(date(2026, 11, 30), date(2027, 2, 28), date(2027, 5, 30), date(2027, 8, 30), date(2027, 11, 30)),
    change_on=date(2027, 4, 15),
    resume_on=date(2027, 7, 15),
)


def test_quarterly__in_arrears__anniversary__upgrade(app):
    """upgrade (basic → pro) now"""
    assert check(app, AXIS, "upgrade") == expected_lines(AXIS, "upgrade")


def test_quarterly__in_arrears__anniversary__downgrade(app):
    """downgrade (basic → lite) now"""
    assert check(app, AXIS, "downgrade") == expected_lines(AXIS, "downgrade")


def test_quarterly__in_arrears__anniversary__quantity_change(app):
    """3 → 5 seats now"""
    assert check(app, AXIS, "quantity_change") == expected_lines(AXIS, "quantity_change")


def test_quarterly__in_arrears__anniversary__pause_resume(app):
    """pause in P1, resume in P2"""
    assert check(app, AXIS, "pause_resume") == expected_lines(AXIS, "pause_resume")


def test_quarterly__in_arrears__anniversary__cancel_now(app):
    """cancel now"""
    assert check(app, AXIS, "cancel_now") == expected_lines(AXIS, "cancel_now")


def test_quarterly__in_arrears__anniversary__cancel_at_period_end(app):
    """cancel at period end"""
    assert check(app, AXIS, "cancel_at_period_end") == expected_lines(AXIS, "cancel_at_period_end")
