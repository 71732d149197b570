"""Scenarios: monthly, billed in advance, anniversary anchor.

Anniversary on the 31st: the grid clamps to short months (31 Jan, 28 Feb, 31 Mar, 30 Apr, 31 May) and never drifts.
Expected lines: see tests/scenarios/matrix.py (hand calculation from the dates below).
"""

from datetime import date

from tests.scenarios.matrix import Axis, expected, play

AXIS = Axis(
    "month",
    "in_advance",
    "anniversary",
    start=date(2026, 1, 31),
    bounds=(date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30), date(2026, 5, 31)),
    change_on=date(2026, 3, 16),
    resume_on=date(2026, 4, 16),
)


def test_monthly__in_advance__anniversary__each_change(app):
    """One customer each: upgrade, downgrade, quantity change, pause then resume, cancel now, cancel at period end."""
    assert play(app, AXIS) == expected(AXIS)
