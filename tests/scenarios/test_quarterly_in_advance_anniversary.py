"""Scenarios: quarterly, billed in advance, anniversary anchor.

Anniversary quarters from 30 Nov: 30 Nov, 28 Feb (clamped), 30 May, 30 Aug, 30 Nov.
Expected lines: see tests/scenarios/matrix.py (hand calculation from the dates below).
"""

from datetime import date

from tests.scenarios.matrix import Axis, expected, play

AXIS = Axis(
    "quarter",
    "in_advance",
    "anniversary",
    start=date(2026, 11, 30),
    bounds=(date(2026, 11, 30), date(2027, 2, 28), date(2027, 5, 30), date(2027, 8, 30), date(2027, 11, 30)),
    change_on=date(2027, 4, 15),
    resume_on=date(2027, 7, 15),
)


def test_quarterly__in_advance__anniversary__each_change(app):
    """One customer each: upgrade, downgrade, quantity change, pause then resume, cancel now, cancel at period end."""
    assert play(app, AXIS) == expected(AXIS)
