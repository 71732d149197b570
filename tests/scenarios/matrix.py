"""The scenario matrix: interval × timing × anchor × change, played on a test clock.

Every axis file (``test_monthly_in_advance_calendar.py``...) describes its calendar *by hand*: the start day,
the period boundaries ``b0 < b1 < b2 < b3 < b4`` (period ``Pk`` is ``[bk, bk+1)``, the subscription starts in
``P0``), a day ``change_on`` inside ``P1`` and a day ``resume_on`` inside ``P2``. Nothing here asks Remit's
period code for dates: the expected lines are computed from those hand-written dates with the published rule:
an amount × (days in the slice / days in the period), rounded half-up to cents once per line. A correction
is what the period's line should now be (rounded once) minus what was billed for it: ``-15.48`` for 16 unused
days of 31 on 30.00 is 14.52 (15 days used) - 30.00.

The story, with one customer per change, all on one test clock:

1. the test clock starts on ``start`` and each customer subscribes (``basic``, or ``seats`` × 3 for quantity);
2. the clock moves to ``change_on``; each customer makes its change "now" (or cancels at period end):
   upgrade to ``pro``, downgrade to ``lite``, 3 → 5 seats, pause, cancel now, cancel at period end;
3. the clock moves to ``resume_on`` (in ``P2``) and the paused subscription is resumed "now";
4. the clock moves to ``b3``, and every invoice line written on the way is compared with the expectation.

Service ranges are half-open like periods: a line for April reads (2026-04-01, 2026-05-01).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

from remit.bootstrap import Remit
from remit.service_layer import clocks, subscriptions
from remit.service_layer.unit_of_work import UnitOfWork
from tests import builders as b

Line = tuple[str, str, str, str]

# Plan prices per interval: basic (the starting plan), pro (upgrade), lite (downgrade), seat (per unit).
PRICES = {
    "month": {"basic": "30.00", "pro": "50.00", "lite": "20.00", "seat": "12.00"},
    "quarter": {"basic": "90.00", "pro": "150.00", "lite": "60.00", "seat": "36.00"},
    "year": {"basic": "360.00", "pro": "600.00", "lite": "240.00", "seat": "144.00"},
}
SEATS_BEFORE, SEATS_AFTER = 3, 5

ACTIONS = ("upgrade", "downgrade", "quantity_change", "pause_resume", "cancel_now", "cancel_at_period_end")


@dataclass(frozen=True)
class Axis:
    interval: str  # "month" | "quarter" | "year"
    timing: str  # "in_advance" | "in_arrears"
    anchor: str  # "calendar" | "anniversary"
    start: date
    bounds: tuple[date, date, date, date, date]  # b0..b4, hand-written
    change_on: date  # inside P1
    resume_on: date  # inside P2

    def __post_init__(self) -> None:
        b0, b1, b2, b3, _b4 = self.bounds
        assert b0 <= self.start < b1, "the subscription starts in P0"
        assert b1 < self.change_on < b2, "the change happens inside P1"
        assert b2 < self.resume_on < b3, "the resumption happens inside P2"

    def price(self, plan: str) -> Decimal:
        return Decimal(PRICES[self.interval][plan])


def cents(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def part(amount: Decimal, start: date, end: date, period: tuple[date, date]) -> Decimal:
    """``amount`` × days of [start, end) / days of the period, unrounded."""
    return amount * (end - start).days / (period[1] - period[0]).days


def correction(now_due: Decimal, billed: Decimal) -> Decimal:
    """A correction line: the period's amount as it should now be, rounded once, less what was billed."""
    return Decimal(cents(now_due)) - billed


def _line(kind: str, start: date, end: date, amount: Decimal) -> Line:
    return (kind, start.isoformat(), end.isoformat(), cents(amount))


def expected_lines(axis: Axis, action: str) -> list[Line]:
    """The lines a hand calculation gives for ``action``, in billing order (invoice by invoice)."""
    b0, b1, b2, b3, b4 = axis.bounds  # P3 = [b3, b4) is billed in advance at b3
    p0, p1, p2 = (b0, b1), (b1, b2), (b2, b3)
    d, r = axis.change_on, axis.resume_on
    sub = "subscription"
    if action == "quantity_change":
        base = axis.price("seat") * SEATS_BEFORE
        after = axis.price("seat") * SEATS_AFTER
    else:
        base = after = axis.price("basic")
        if action == "upgrade":
            after = axis.price("pro")
        elif action == "downgrade":
            after = axis.price("lite")
    first = _line(sub, axis.start, b1, part(base, axis.start, b1, p0))

    if axis.timing == "in_advance":
        lines = [first, _line(sub, b1, b2, base)]  # P0 (prorated when calendar), P1 in full at b1
        if action in ("upgrade", "downgrade"):
            # On the change day: unused time on the old plan credited, the rest of P1 on the new plan charged.
            lines += [
                _line("proration", d, b2, correction(part(base, b1, d, p1), base)),
                _line(sub, d, b2, part(after, d, b2, p1)),
                _line(sub, b2, b3, after),
                _line(sub, b3, b4, after),
            ]
        elif action == "quantity_change":
            # Same price, so one correction: the extra seats for the rest of P1.
            lines += [
                _line("proration", d, b2, correction(part(base, b1, d, p1) + part(after, d, b2, p1), base)),
                _line(sub, b2, b3, after),
                _line(sub, b3, b4, after),
            ]
        elif action == "pause_resume":
            # Paused on d: the rest of P1 is credited; nothing is billed at b2; resumed on r: the rest of P2.
            lines += [
                _line("proration", d, b2, correction(part(base, b1, d, p1), base)),
                _line(sub, r, b3, part(base, r, b3, p2)),
                _line(sub, b3, b4, base),
            ]
        elif action == "cancel_now":
            lines += [_line("proration", d, b2, correction(part(base, b1, d, p1), base))]
        elif action == "cancel_at_period_end":
            pass  # P1 was paid in advance and is used to its end; nothing follows.
        else:
            raise AssertionError(action)
        return lines

    # In arrears: a period is billed when it closes (or when the subscription ends inside it).
    lines = [first]
    if action in ("upgrade", "downgrade"):
        # At b2: the old plan for [b1, d) and the new plan for [d, b2), each a first line of its own key.
        lines += [
            _line(sub, b1, d, part(base, b1, d, p1)),
            _line(sub, d, b2, part(after, d, b2, p1)),
            _line(sub, b2, b3, after),
        ]
    elif action == "quantity_change":
        # One key, two slices, rounded once: 3 seats for [b1, d) and 5 seats for [d, b2).
        lines += [
            _line(sub, b1, b2, part(base, b1, d, p1) + part(after, d, b2, p1)),
            _line(sub, b2, b3, after),
        ]
    elif action == "pause_resume":
        lines += [_line(sub, b1, d, part(base, b1, d, p1)), _line(sub, r, b3, part(base, r, b3, p2))]
    elif action == "cancel_now":
        lines += [_line(sub, b1, d, part(base, b1, d, p1))]  # billed on d, when the subscription ends
    elif action == "cancel_at_period_end":
        lines += [_line(sub, b1, b2, base)]
    else:
        raise AssertionError(action)
    return lines


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _apply(uow: UnitOfWork, sub: str, action: str) -> None:
    if action == "upgrade":
        subscriptions.change_plan(uow, sub, "pro", when="now")
    elif action == "downgrade":
        subscriptions.change_plan(uow, sub, "lite", when="now")
    elif action == "quantity_change":
        subscriptions.change_quantity(uow, sub, SEATS_AFTER, when="now")
    elif action == "pause_resume":
        subscriptions.pause(uow, sub, when="now")
    elif action == "cancel_now":
        subscriptions.cancel(uow, sub)
    elif action == "cancel_at_period_end":
        subscriptions.cancel(uow, sub, at_period_end=True)
    else:
        raise AssertionError(action)


def play(app: Remit, axis: Axis) -> dict[str, list[Line]]:
    """Play every action of the matrix on one test clock, one customer per action; returns each one's lines.

    The customers share the clock, so each is also billed at the others' due moments: the lines must not
    depend on when bill runs happen, only on the timeline.
    """
    b.seller(app)
    for plan in ("basic", "pro", "lite"):
        b.plan(app, plan, PRICES[axis.interval][plan], interval=axis.interval, timing=axis.timing)
    seat = {"unit_price": PRICES[axis.interval]["seat"]}
    b.plan(app, "seats", model="per_unit", config=seat, interval=axis.interval, timing=axis.timing)
    clock_id = b.clock(app, _at(axis.start))
    customers = {action: b.customer(app, clock_id) for action in ACTIONS}
    subs: dict[str, str] = {}
    with app.uow() as uow:
        for action, cus in customers.items():
            if action == "quantity_change":
                subs[action] = subscriptions.create_subscription(
                    uow, cus, "seats", quantity=SEATS_BEFORE, anchor=axis.anchor
                )
            else:
                subs[action] = subscriptions.create_subscription(uow, cus, "basic", anchor=axis.anchor)
    clocks.advance(app.uow, clock_id, _at(axis.change_on))
    for action, sub in subs.items():
        with app.uow() as uow:
            _apply(uow, sub, action)
    clocks.advance(app.uow, clock_id, _at(axis.resume_on))
    with app.uow() as uow:
        subscriptions.resume(uow, subs["pause_resume"], when="now")
    clocks.advance(app.uow, clock_id, _at(axis.bounds[3]))

    with app.uow() as uow:
        statuses = {a: subscriptions.get_subscription(uow, s)["status"] for a, s in subs.items()}
    assert statuses == {a: "canceled" if a.startswith("cancel") else "active" for a in ACTIONS}
    result: dict[str, list[Line]] = {}
    for action, cus in customers.items():
        for inv in b.invoices_of(app, cus):
            lines_total = sum((Decimal(ln["amount"]) for ln in inv["lines"]), Decimal(0))
            assert Decimal(inv["total"]) == lines_total, f"{action}: invoice {inv['number']} does not add up"
        result[action] = b.lines_of(app, cus)
    return result


def expected(axis: Axis) -> dict[str, list[Line]]:
    return {action: expected_lines(axis, action) for action in ACTIONS}
