"""The invoice generator as pure functions: ``propose`` what should exist, ``diff`` against what was billed.

No database: prices and timelines are built by hand, and a small in-memory ledger plays the bill run's part
(it keeps the written lines and sums them per key, as ``bill_run._billed`` does).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remit.domain.billing_events import ChangeKind, Item, TimelineEvent, ended_on
from remit.domain.catalog.model import Coupon, CouponDuration, Price, PriceType, Timing
from remit.domain.invoicing.generator import (
    AppliedCoupon,
    BilledTotals,
    LineKey,
    NewLine,
    SubscriptionTerms,
    diff,
    propose,
)
from remit.domain.money import Currency, RoundingPolicy, currency
from remit.domain.rating.charge_models import parse_charge_model
from remit.domain.subscriptions.periods import Interval, IntervalUnit

EUR = currency("EUR")
MONTH = Interval(IntervalUnit.MONTH)
POLICY = RoundingPolicy.HALF_UP
D = date


def price(
    pid: str,
    amount: str | None = None,
    *,
    timing: Timing = Timing.IN_ADVANCE,
    model: str = "flat",
    config: dict[str, object] | None = None,
    cur: Currency = EUR,
) -> Price:
    cfg = config if config is not None else {"amount": amount}
    return Price(
        id=pid,
        product_id=f"prod_{pid}",
        currency=cur,
        model=parse_charge_model(model, cfg),
        type=PriceType.RECURRING,
        interval=MONTH,
        timing=timing,
        name=pid.title(),
    )


def ev(on: date, kind: ChangeKind, *items: tuple[str, int | str], seq: int = 0) -> TimelineEvent:
    return TimelineEvent(on, kind, tuple(Item(p, Decimal(q)) for p, q in items), seq)


def terms(
    events: list[TimelineEvent],
    anchor: date,
    *,
    trial_end: date | None = None,
    coupons: tuple[AppliedCoupon, ...] = (),
    cur: Currency = EUR,
) -> SubscriptionTerms:
    return SubscriptionTerms("sub", "cus", cur, MONTH, anchor, trial_end, tuple(events), coupons)


def coupon(duration: CouponDuration, *, percent: str | None = None, off_minor: int | None = None, periods=None):
    return Coupon(
        id="cpn",
        code="C",
        name="C",
        percent_off=Decimal(percent) if percent else None,
        amount_off_minor=off_minor,
        currency=EUR if off_minor else None,
        duration=duration,
        duration_periods=periods,
        max_redemptions=None,
        redeem_by=None,
    )


def rows(lines: list[NewLine], minor_units: int = 2) -> list[tuple[str, str, str, str]]:
    """(kind, service start, service end, amount) like ``tests.builders.lines_of``."""
    return [
        (
            ln.kind,
            ln.service_start_on.isoformat(),
            ln.service_end_on.isoformat(),
            str(Decimal(ln.amount_minor).scaleb(-minor_units)),
        )
        for ln in lines
    ]


class Ledger:
    """The lines written so far, and what they add up to per key: the bill run's memory."""

    def __init__(self) -> None:
        self.written: list[tuple[str, NewLine]] = []

    def key(self, ln: NewLine) -> LineKey:
        return (ln.subscription_id, ln.charge_key, ln.period.start_on)

    def billed(self, reviewed_from_on: date | None = None) -> dict[LineKey, BilledTotals]:
        acc: dict[LineKey, list[tuple[str, NewLine]]] = defaultdict(list)
        for line_id, ln in self.written:
            if reviewed_from_on is None or ln.period.end_on > reviewed_from_on:
                acc[self.key(ln)].append((line_id, ln))
        out = {}
        for key, entries in acc.items():
            first_id = next(i for i, ln in entries if ln.revision == 0)
            last = max(entries, key=lambda e: e[1].revision)[1]
            out[key] = BilledTotals(
                subtotal_minor=sum(ln.subtotal_minor for _, ln in entries),
                discount_minor=sum(ln.discount_minor for _, ln in entries),
                count=len(entries),
                first_line_id=first_id,
                period_end_on=last.period.end_on,
                quantity=last.quantity,
            )
        return out

    def run(self, t: SubscriptionTerms, prices: dict[str, Price], as_of: date) -> list[NewLine]:
        new = diff(propose(t, prices, as_of, POLICY), self.billed(t.reviewed_from_on), as_of, prices)
        for ln in new:
            self.written.append((f"il_{len(self.written)}", ln))
        return new

    def first_line_id(self, key: LineKey) -> str:
        return next(i for i, ln in self.written if self.key(ln) == key and ln.revision == 0)


# --- First lines ----------------------------------------------------------------------------------------------


def test_in_advance_bills_the_whole_period_on_its_first_day():
    prices = {"basic": price("basic", "30.00")}
    t = terms([ev(D(2026, 3, 1), ChangeKind.START, ("basic", 1))], D(2026, 3, 1))
    ledger = Ledger()
    assert rows(ledger.run(t, prices, D(2026, 3, 1))) == [("subscription", "2026-03-01", "2026-04-01", "30.00")]
    assert ledger.run(t, prices, D(2026, 3, 31)) == []
    assert rows(ledger.run(t, prices, D(2026, 4, 1))) == [("subscription", "2026-04-01", "2026-05-01", "30.00")]


def test_calendar_proration_lago_example():
    """$50/month from 10 Aug, calendar anchor: 22/31 × 50 = 35.48."""
    prices = {"basic": price("basic", "50.00")}
    t = terms([ev(D(2026, 8, 10), ChangeKind.START, ("basic", 1))], D(2026, 8, 1))
    (line,) = Ledger().run(t, prices, D(2026, 8, 10))
    assert rows([line]) == [("subscription", "2026-08-10", "2026-09-01", "35.48")]
    (piece,) = line.details["slices"]
    assert (piece["fraction"], Decimal(piece["amount"])) == ("22/31", Decimal(50) * 22 / 31)  # unrounded


def test_trial_lago_example():
    """$50/month in advance, 5-day trial from 1 Apr, calendar anchor: nothing during the trial, then 25/30."""
    prices = {"basic": price("basic", "50.00")}
    t = terms([ev(D(2026, 4, 1), ChangeKind.START, ("basic", 1))], D(2026, 4, 1), trial_end=D(2026, 4, 6))
    ledger = Ledger()
    assert ledger.run(t, prices, D(2026, 4, 5)) == []
    assert rows(ledger.run(t, prices, D(2026, 4, 6))) == [("subscription", "2026-04-06", "2026-05-01", "41.67")]


def test_in_arrears_is_due_when_the_period_closes():
    prices = {"basic": price("basic", "30.00", timing=Timing.IN_ARREARS)}
    t = terms([ev(D(2026, 3, 10), ChangeKind.START, ("basic", 1))], D(2026, 3, 1))
    ledger = Ledger()
    assert ledger.run(t, prices, D(2026, 3, 31)) == []
    assert rows(ledger.run(t, prices, D(2026, 4, 1))) == [("subscription", "2026-03-10", "2026-04-01", "21.29")]


def test_a_zero_amount_proposal_writes_no_first_line():
    prices = {"free": price("free", "0")}
    t = terms([ev(D(2026, 3, 1), ChangeKind.START, ("free", 1))], D(2026, 3, 1))
    assert Ledger().run(t, prices, D(2026, 3, 1)) == []


# --- Corrections ----------------------------------------------------------------------------------------------


def test_upgrade_stripe_example_links_the_correction_to_the_first_line():
    """$10 -> $20 halfway through a 30-day month: -5.00 and +10.00."""
    prices = {"basic": price("basic", "10.00"), "pro": price("pro", "20.00")}
    events = [ev(D(2026, 4, 1), ChangeKind.START, ("basic", 1))]
    ledger = Ledger()
    ledger.run(terms(events, D(2026, 4, 1)), prices, D(2026, 4, 1))
    events.append(ev(D(2026, 4, 16), ChangeKind.CHANGE, ("pro", 1), seq=1))
    new = ledger.run(terms(events, D(2026, 4, 1)), prices, D(2026, 4, 16))
    assert rows(new) == [
        ("proration", "2026-04-16", "2026-05-01", "-5.00"),
        ("subscription", "2026-04-16", "2026-05-01", "10.00"),
    ]
    credit, charge = new
    assert credit.corrects_line_id == ledger.first_line_id(("sub", "basic", D(2026, 4, 1)))
    assert (credit.revision, credit.description) == (1, "Unused time on Basic")
    assert (charge.revision, charge.corrects_line_id) == (0, None)
    assert sum(ln.amount_minor for ln in new) == 500


def test_in_arrears_upgrade_lago_example():
    """A €100 in arrears from 1 Jan, B €200 from 15 Jan: 14/31 × 100 = 45.16 and 17/31 × 200 = 109.68."""
    prices = {
        "a": price("a", "100.00", timing=Timing.IN_ARREARS),
        "b": price("b", "200.00", timing=Timing.IN_ARREARS),
    }
    events = [ev(D(2026, 1, 1), ChangeKind.START, ("a", 1)), ev(D(2026, 1, 15), ChangeKind.CHANGE, ("b", 1), seq=1)]
    assert rows(Ledger().run(terms(events, D(2026, 1, 1)), prices, D(2026, 2, 1))) == [
        ("subscription", "2026-01-01", "2026-01-15", "45.16"),
        ("subscription", "2026-01-15", "2026-02-01", "109.68"),
    ]


def test_quantity_change_is_one_correction_on_the_same_key():
    """12.00 per seat, 3 -> 5 seats with 16 of 31 days left: + 2 × 12 × 16/31 = 12.39."""
    prices = {"seat": price("seat", model="per_unit", config={"unit_price": "12.00"})}
    events = [ev(D(2026, 3, 1), ChangeKind.START, ("seat", 3))]
    ledger = Ledger()
    ledger.run(terms(events, D(2026, 3, 1)), prices, D(2026, 3, 1))
    events.append(ev(D(2026, 3, 16), ChangeKind.CHANGE, ("seat", 5), seq=1))
    (line,) = ledger.run(terms(events, D(2026, 3, 1)), prices, D(2026, 3, 16))
    assert rows([line]) == [("proration", "2026-03-16", "2026-04-01", "12.39")]
    assert (line.quantity, line.description) == (Decimal(5), "Remaining time on Seat × 5")


def test_pause_and_resume_inside_a_period():
    """30.00 for March, paused from 10 Mar and resumed on 20 Mar: March ends up as 21 of 31 days."""
    prices = {"basic": price("basic", "30.00")}
    events = [ev(D(2026, 3, 1), ChangeKind.START, ("basic", 1))]
    ledger = Ledger()
    ledger.run(terms(events, D(2026, 3, 1)), prices, D(2026, 3, 1))
    events.append(ev(D(2026, 3, 10), ChangeKind.PAUSE, seq=1))
    paused = ledger.run(terms(events, D(2026, 3, 1)), prices, D(2026, 3, 10))
    assert rows(paused) == [("proration", "2026-03-10", "2026-04-01", "-21.29")]  # 22/31 × 30 credited
    events.append(ev(D(2026, 3, 20), ChangeKind.RESUME, seq=2))
    resumed = ledger.run(terms(events, D(2026, 3, 1)), prices, D(2026, 3, 20))
    # March is now 21 of 31 days: 20.32 in all, so the resumption adds back 20.32 - 8.71 = 11.61 (12/31 × 30).
    assert rows(resumed) == [("proration", "2026-03-10", "2026-04-01", "11.61")]
    assert sum(ln.amount_minor for _, ln in ledger.written) == 2032


def test_a_correction_in_a_first_partial_period_starts_at_the_change():
    """Started 10 Feb on calendar months; upgraded 20 Feb: the unused time is 20 Feb - 1 Mar, not from 10 Feb.
    The amount is what February now comes to (10/28 × 30 = 10.71) less what was billed (19/28 × 30 = 20.36)."""
    prices = {"basic": price("basic", "30.00"), "pro": price("pro", "50.00")}
    events = [ev(D(2026, 2, 10), ChangeKind.START, ("basic", 1))]
    ledger = Ledger()
    ledger.run(terms(events, D(2026, 2, 1)), prices, D(2026, 2, 10))
    events.append(ev(D(2026, 2, 20), ChangeKind.CHANGE, ("pro", 1), seq=1))
    assert rows(ledger.run(terms(events, D(2026, 2, 1)), prices, D(2026, 2, 20))) == [
        ("proration", "2026-02-20", "2026-03-01", "-9.65"),
        ("subscription", "2026-02-20", "2026-03-01", "16.07"),
    ]


def test_a_correction_without_a_change_of_slices_covers_the_billed_time():
    """Re-rated (a negotiated price replaced the list price) with no change of timeline: the correction is about
    the days billed, 10 Feb - 1 Mar, never days before the subscription began."""
    events = [ev(D(2026, 2, 10), ChangeKind.START, ("basic", 1))]
    ledger = Ledger()
    ledger.run(terms(events, D(2026, 2, 1)), {"basic": price("basic", "28.00")}, D(2026, 2, 10))
    new = ledger.run(terms(events, D(2026, 2, 1)), {"basic": price("basic", "42.00")}, D(2026, 2, 11))
    assert rows(new) == [("proration", "2026-02-10", "2026-03-01", "9.50")]  # 19/28 × (42 - 28)


def test_cancel_after_the_next_period_was_billed_credits_it_in_full():
    """April was billed in advance on 1 Apr; a cancellation effective 1 Apr recorded afterwards credits it all."""
    prices = {"basic": price("basic", "30.00")}
    events = [ev(D(2026, 3, 1), ChangeKind.START, ("basic", 1))]
    ledger = Ledger()
    ledger.run(terms(events, D(2026, 3, 1)), prices, D(2026, 4, 1))
    events.append(ev(D(2026, 4, 1), ChangeKind.CANCEL, seq=1))
    (credit,) = ledger.run(terms(events, D(2026, 3, 1)), prices, D(2026, 4, 1))
    assert rows([credit]) == [("proration", "2026-04-01", "2026-05-01", "-30.00")]
    assert credit.corrects_line_id == ledger.first_line_id(("sub", "basic", D(2026, 4, 1)))


def test_billed_keys_no_longer_proposed_are_credited_up_to_the_as_of_day_only():
    """March and April were billed; with nothing proposed any more, a diff as of 15 Mar credits March in full
    and leaves April (a period after the as-of day) to a later run."""
    prices = {"basic": price("basic", "30.00")}
    events = [ev(D(2026, 3, 1), ChangeKind.START, ("basic", 1))]
    ledger = Ledger()
    ledger.run(terms(events, D(2026, 3, 1)), prices, D(2026, 4, 1))
    assert rows(diff([], ledger.billed(), D(2026, 3, 15), prices)) == [
        ("proration", "2026-03-01", "2026-04-01", "-30.00")
    ]


def test_events_on_the_same_day_apply_in_recording_order():
    prices = {"basic": price("basic", "30.00"), "pro": price("pro", "50.00"), "lite": price("lite", "20.00")}
    events = [
        ev(D(2026, 3, 1), ChangeKind.START, ("basic", 1), seq=0),
        ev(D(2026, 3, 16), ChangeKind.CHANGE, ("lite", 1), seq=2),  # recorded last: wins
        ev(D(2026, 3, 16), ChangeKind.CHANGE, ("pro", 1), seq=1),
    ]
    lines = Ledger().run(terms(events, D(2026, 3, 1)), prices, D(2026, 3, 16))
    assert rows(lines) == [
        ("subscription", "2026-03-01", "2026-03-16", "14.52"),  # 15/31 × 30
        ("subscription", "2026-03-16", "2026-04-01", "10.32"),  # 16/31 × 20
    ]


# --- Coupons --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "amount", "discount", "net"),
    [("EUR", "30.00", "6.00", "24.00"), ("JPY", "3000", "600", "2400"), ("KWD", "30.000", "6.000", "24.000")],
)
def test_percent_coupon_is_a_percent_of_the_line_in_any_currency(code, amount, discount, net):
    cur = currency(code)
    prices = {"basic": price("basic", amount, cur=cur)}
    applied = (AppliedCoupon(coupon(CouponDuration.ONCE, percent="20"), D(2026, 3, 1)),)
    t = terms([ev(D(2026, 3, 1), ChangeKind.START, ("basic", 1))], D(2026, 3, 1), coupons=applied, cur=cur)
    (line,) = Ledger().run(t, prices, D(2026, 3, 1))
    scale = cur.minor_units
    got = tuple(str(Decimal(m).scaleb(-scale)) for m in (line.discount_minor, line.amount_minor))
    assert got == (discount, net)


def test_fixed_coupon_is_shared_between_the_prices_of_a_period_by_largest_remainder():
    prices = {"basic": price("basic", "30.00"), "support": price("support", "10.00")}
    applied = (AppliedCoupon(coupon(CouponDuration.FOREVER, off_minor=500), D(2026, 3, 1)),)
    events = [ev(D(2026, 3, 1), ChangeKind.START, ("basic", 1), ("support", 1))]
    lines = Ledger().run(terms(events, D(2026, 3, 1), coupons=applied), prices, D(2026, 3, 1))
    assert [(ln.price_id, ln.subtotal_minor, ln.discount_minor) for ln in lines] == [
        ("basic", 3000, 375),
        ("support", 1000, 125),
    ]


def test_repeating_coupon_covers_its_number_of_periods():
    prices = {"basic": price("basic", "30.00")}
    applied = (AppliedCoupon(coupon(CouponDuration.REPEATING, off_minor=500, periods=3), D(2026, 3, 10)),)
    t = terms([ev(D(2026, 3, 10), ChangeKind.START, ("basic", 1))], D(2026, 3, 1), coupons=applied)
    lines = Ledger().run(t, prices, D(2026, 6, 1))
    assert [(ln.period.start_on.month, ln.discount_minor) for ln in lines] == [(3, 500), (4, 500), (5, 500), (6, 0)]


# --- Idempotency ----------------------------------------------------------------------------------------------

STORIES = {
    "start": [ev(D(2026, 3, 10), ChangeKind.START, ("basic", 1))],
    "upgrade": [ev(D(2026, 3, 1), ChangeKind.START, ("basic", 1)), ev(D(2026, 3, 16), ChangeKind.CHANGE, ("pro", 2))],
    "pause": [ev(D(2026, 3, 1), ChangeKind.START, ("basic", 1)), ev(D(2026, 3, 5), ChangeKind.PAUSE)],
    "cancel": [ev(D(2026, 3, 1), ChangeKind.START, ("basic", 1)), ev(D(2026, 3, 9), ChangeKind.CANCEL)],
}


@pytest.mark.parametrize("timing", list(Timing))
@pytest.mark.parametrize("story", list(STORIES))
def test_diff_of_its_own_output_is_empty(story, timing):
    prices = {"basic": price("basic", "30.00", timing=timing), "pro": price("pro", "47.00", timing=timing)}
    events = [replace(e, seq=i) for i, e in enumerate(STORIES[story])]
    applied = (AppliedCoupon(coupon(CouponDuration.FOREVER, percent="15"), D(2026, 3, 1)),)
    t = terms(events, D(2026, 3, 1), coupons=applied)
    ledger = Ledger()
    for as_of in (D(2026, 3, 1), D(2026, 3, 16), D(2026, 4, 1), D(2026, 5, 1)):
        ledger.run(t, prices, as_of)
        assert diff(propose(t, prices, as_of, POLICY), ledger.billed(), as_of, prices) == []
    assert ledger.written  # something was billed


# --- Property: corrections add up to a fresh proposal ----------------------------------------------------------

PROPERTY_PRICES = {
    "a": ("flat", {"amount": "30.00"}),
    "b": ("flat", {"amount": "47.00"}),
    "u": ("per_unit", {"unit_price": "12.34"}),
}
PERIOD_START, PERIOD_END = D(2026, 3, 1), D(2026, 4, 1)


@st.composite
def change_stories(draw):
    """A start in March and up to 7 changes later in March, each recorded on its day (maybe followed by a run)."""
    start = PERIOD_START + timedelta(days=draw(st.integers(0, 30)))
    item = st.tuples(st.sampled_from(sorted(PROPERTY_PRICES)), st.integers(1, 9))
    first = draw(item)
    events = [TimelineEvent(start, ChangeKind.START, (Item(first[0], Decimal(first[1])),), 0)]
    runs = [(start, 1)] if draw(st.booleans()) else []  # (as-of day, number of events recorded before the run)
    day = start
    for seq in range(1, draw(st.integers(0, 7)) + 1):
        day = min(day + timedelta(days=draw(st.integers(0, 12))), PERIOD_END - timedelta(days=1))
        kind = draw(st.sampled_from([ChangeKind.CHANGE, ChangeKind.PAUSE, ChangeKind.RESUME, ChangeKind.CANCEL]))
        items = ()
        if kind is ChangeKind.CHANGE:
            chosen = draw(st.lists(item, min_size=1, max_size=2, unique_by=lambda x: x[0]))
            items = tuple(Item(p, Decimal(q)) for p, q in chosen)
        events.append(TimelineEvent(day, kind, items, seq))
        if draw(st.booleans()):
            runs.append((day, len(events)))
        if kind is ChangeKind.CANCEL:
            break
    timing = draw(st.sampled_from(list(Timing)))
    anchor = draw(st.sampled_from([PERIOD_START, start]))  # calendar, or the start as anniversary
    percent = draw(st.sampled_from([None, "15", "33.3"]))
    return events, runs, timing, anchor, percent


@settings(max_examples=300, deadline=None)
@given(change_stories())
def test_corrections_add_up_to_a_fresh_proposal_of_the_final_timeline(story):
    events, runs, timing, anchor, percent = story
    prices = {pid: price(pid, model=m, config=c, timing=timing) for pid, (m, c) in PROPERTY_PRICES.items()}
    applied = ()
    if percent:
        applied = (AppliedCoupon(coupon(CouponDuration.FOREVER, percent=percent), events[0].effective_on),)
    final_as_of = PERIOD_END if anchor == PERIOD_START else anchor + timedelta(days=31)
    ledger = Ledger()
    # Replay as the service layer and the bill run do: each run sees the events recorded before it; it marks
    # the subscription reviewed up to its day; recording an event effective on a day already reviewed moves
    # the mark back to the day before it; a subscription reviewed on or after its end is not billed again.
    reviewed: date | None = None
    recorded = 0
    for as_of, known_count in [*runs, (final_as_of, len(events))]:
        for e in events[recorded:known_count]:
            if reviewed is not None and e.effective_on <= reviewed:
                reviewed = e.effective_on - timedelta(days=1)
        recorded = known_count
        known = events[:known_count]
        end = ended_on(known)
        if end is not None and reviewed is not None and reviewed >= end:
            continue
        ledger.run(replace(terms(known, anchor, coupons=applied), reviewed_from_on=reviewed), prices, as_of)
        reviewed = as_of if reviewed is None else max(reviewed, as_of)

    fresh = propose(terms(events, anchor, coupons=applied), prices, final_as_of, POLICY)
    expected = {line.key: (line.subtotal_minor, line.discount_minor) for line in fresh}
    billed = {k: (v.subtotal_minor, v.discount_minor) for k, v in ledger.billed().items()}
    assert {k: v for k, v in billed.items() if v != (0, 0)} == {k: v for k, v in expected.items() if v != (0, 0)}

    for line_id, ln in ledger.written:
        first_id = ledger.first_line_id(ledger.key(ln))
        if ln.revision == 0:
            assert (ln.kind, ln.corrects_line_id, line_id) == ("subscription", None, first_id)
        else:
            assert (ln.kind, ln.corrects_line_id) == ("proration", first_id)
    t = terms(events, anchor, coupons=applied)
    assert diff(propose(t, prices, final_as_of, POLICY), ledger.billed(), final_as_of, prices) == []


# --- Corrections after credit notes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credited", "amount", "subtotal", "discount"),
    [
        (0, -4129, -5161, -1032),  # nothing credited: the unused time, as always
        (3000, -4129, -5161, -1032),  # 50.00 left covers it
        (5000, -3000, -3750, -750),  # 30.00 left: the credit is capped, subtotal and discount in proportion
        (7999, -1, -1, 0),
        (8000, None, None, None),  # all of it credited: no line
    ],
)
def test_a_correction_credits_no_more_than_credit_notes_left_on_the_key(credited, amount, subtotal, discount):
    """A 100.00 fee with 20 % off (80.00) canceled on 16 March: 16 of 31 days unused credit 41.29 (51.61 less
    10.32 off). Credit notes having credited part of the fee, the correction credits at most what is left."""
    prices = {"basic": price("basic", "100.00")}
    applied = (AppliedCoupon(coupon(CouponDuration.FOREVER, percent="20"), D(2026, 3, 1)),)
    events = [ev(D(2026, 3, 1), ChangeKind.START, ("basic", 1))]
    ledger = Ledger()
    ledger.run(terms(events, D(2026, 3, 1), coupons=applied), prices, D(2026, 3, 1))
    key = ("sub", "basic", D(2026, 3, 1))
    billed = {key: replace(ledger.billed()[key], credited_minor=credited)}
    events.append(ev(D(2026, 3, 16), ChangeKind.CANCEL, seq=1))
    new = diff(
        propose(terms(events, D(2026, 3, 1), coupons=applied), prices, D(2026, 3, 16), POLICY),
        billed,
        D(2026, 3, 16),
        prices,
    )
    if amount is None:
        assert new == []
        return
    (credit,) = new
    assert (credit.amount_minor, credit.subtotal_minor, credit.discount_minor) == (amount, subtotal, discount)
    assert credit.corrects_line_id == ledger.first_line_id(key)


def test_seat_changes_that_add_up_to_half_a_cent_are_rounded_once_as_a_half():
    """1.13 per seat for April (30 days): 2 seats on the 1st, 5 from the 2nd, 2 from the 27th, so 2 × 1/30 + 5 × 25/30
    + 2 × 4/30 = 4.5 seat-months, 5.085 exactly: 5.09 half up. Each slice's amount has no finite decimal expansion
    (0.07533…, 4.708333…, 0.301333…): written to 28 digits and added up, they came to 5.084999… and 5.08."""
    prices = {"seat": price("seat", model="per_unit", config={"unit_price": "1.13"})}
    events = [
        ev(D(2026, 4, 1), ChangeKind.START, ("seat", 2)),
        ev(D(2026, 4, 2), ChangeKind.CHANGE, ("seat", 5), seq=1),
        ev(D(2026, 4, 27), ChangeKind.CHANGE, ("seat", 2), seq=2),
    ]
    ledger = Ledger()
    for day in (1, 2, 27):
        ledger.run(terms(events[: {1: 1, 2: 2, 27: 3}[day]], D(2026, 4, 1)), prices, D(2026, 4, day))
    assert sum(ln.amount_minor for _, ln in ledger.written) == 509
    (line,) = propose(terms(events, D(2026, 4, 1)), prices, D(2026, 4, 27), RoundingPolicy.HALF_EVEN)
    assert (line.subtotal_minor, line.before_rounding) == (508, Decimal("5.085"))
