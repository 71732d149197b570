"""Scenarios: annual, billed in arrears, anniversary anchor.

Anniversary on a leap day: 29 Feb 2028, then 28 Feb in common years and 29 Feb again in 2032.
Expected lines: see tests/scenarios/matrix.py (hand calculation from the dates below).
"""

from datetime import date

from tests.scenarios.matrix import Axis, expected, play

AXIS = Axis(
    "year",
    "in_arrears",
    "anniversary",
    start=date(2028, 2, 29),
    bounds=(date(2028, 2, 29), date(2029, 2, 28), date(2030, 2, 28), date(2031, 2, 28), date(2032, 2, 29)),
    change_on=date(2029, 8, 31),
    resume_on=date(2030, 8, 31),
)


def test_annual__in_arrears__anniversary__each_change(app):
    """One customer each: upgrade, downgrade, quantity change, pause then resume, cancel now, cancel at period end."""
    assert play(app, AXIS) == expected(AXIS)
