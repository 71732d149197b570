"""Invoice generation as a diff (Kill Bill's generator, Lago's unique keys).

``propose`` computes every subscription line that *should* exist for the periods under review, up to an "as of"
day. ``diff`` compares that with what was already billed (per subscription, price and billing period) and returns
only the difference: a first line when nothing was billed yet, a linked correction line when the amount
changed (a plan change, a quantity change, a pause or a cancellation within a period). Issued lines are never
edited. Running the generator twice with the same input yields nothing the second time.

Rounding happens at one named point: the subtotal of a (subscription, price, period) key is rounded once, with
the legal entity's policy; discounts are rounded per line; corrections are differences of integers.

Usage prices (``price.usage``) are billed in arrears from a meter's aggregate over the days the price applied in
the period (its *windows*: consecutive slices of the same price are one window, so tiers never restart at a
quantity change elsewhere on the subscription). A meter with group-by dimensions gives one line per group, keyed
``price|group``. Usage the bill run did not know of yet (an event that arrived late, inside the grace period)
changes a period's proposed amount, so the diff bills the difference as a linked ``usage_correction`` line. A
minimum commitment adds a ``true_up`` line for what the period's usage lines fall short of it.

Threshold billing bills a period's usage before the period ends (``threshold_diff``): those lines are of kind
``usage_threshold``, and the period-end diff bills what came after them as ``usage_remainder`` (usage since the
threshold invoice), not as a late-usage correction.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, ROUND_CEILING, ROUND_FLOOR, Context, Decimal, localcontext
from fractions import Fraction
from types import MappingProxyType
from typing import TypeVar

from remit.domain.billing_events import Item, Segment, TimelineEvent, build_segments, ended_on
from remit.domain.catalog.model import Coupon, CouponDuration, Price, Timing
from remit.domain.money import Currency, RoundingPolicy, allocate
from remit.domain.rating.aggregations import WIDE, Aggregate, Aggregation, Meter, decimal_of
from remit.domain.rating.charge_models import ChargeModel, ChargeResult, PercentageCharge
from remit.domain.subscriptions.periods import (
    Interval,
    Period,
    period_containing,
    periods_overlapping,
    proration_fraction,
)

LineKey = tuple[str, str, date]  # (subscription id, charge key, period start)
# A subscription's periods already invoiced at another price than the customer's price now (a negotiated price set
# or changed since): (price id, period start) -> the price the period was first invoiced at. Usually empty.
Pinned = Mapping[tuple[str, date], Price]
NO_PINS: Pinned = MappingProxyType({})
THRESHOLD_KIND = "usage_threshold"  # usage billed before its period ended, because it reached a threshold
REMAINDER_KIND = "usage_remainder"  # the rest of a period's usage, after a threshold invoice
_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class AppliedCoupon:
    coupon: Coupon
    applied_on: date


@dataclass(frozen=True, slots=True)
class SubscriptionTerms:
    """What the generator needs to know about one subscription."""

    id: str
    customer_id: str
    currency: Currency
    interval: Interval
    anchor_on: date
    trial_end_on: date | None
    events: tuple[TimelineEvent, ...]
    coupons: tuple[AppliedCoupon, ...] = ()
    reviewed_from_on: date | None = None  # earliest day whose period may still change (None: from the start)
    billed_through_on: date | None = None  # the day the last bill run billed it through (only ever moves forward)


@dataclass(frozen=True, slots=True)
class Slice:
    start_on: date
    end_on: date
    quantity: Decimal
    fraction: Fraction
    amount: Decimal  # unrounded (to 28 digits when it has more, or no finite decimal expansion: 16/31 of a fee)
    full: Decimal | None = None  # a fixed fee's amount for the whole period, of which ``fraction`` is billed


UsageWindowKey = tuple[str, date, date]  # (meter code, first day, day after the last)


@dataclass(frozen=True, slots=True)
class UsageData:
    """What the generator needs to rate usage: the meters, and each window's aggregate per group."""

    meters: Mapping[str, Meter]
    windows: Mapping[UsageWindowKey, Mapping[tuple[str, ...], Aggregate]]
    # Percentage prices: each window's event values in time order, per group (charged transaction by transaction).
    transactions: Mapping[UsageWindowKey, Mapping[tuple[str, ...], Sequence[Decimal]]] = field(default_factory=dict)


@dataclass(slots=True)
class ProposedLine:
    subscription_id: str
    price: Price
    period: Period
    slices: list[Slice] = field(default_factory=list)
    subtotal_minor: int = 0
    discount_minor: int = 0
    charge_key: str = ""  # default: the price's id; a usage price's group adds to it
    model: ChargeModel | None = None  # the model that rated it, when not the price's (a dimension's)
    rated_units: Decimal | None = None  # usage: the units rated, after included units
    rated: ChargeResult | None = None  # usage: the rating, when it is not ``model.rate(rated_units)``
    usage: dict[str, object] | None = None  # usage: how the quantity was measured
    before_rounding: Decimal | None = None  # the exact subtotal, when the slices' amounts do not add up to it

    @property
    def key(self) -> LineKey:
        return (self.subscription_id, self.charge_key or self.price.id, self.period.start_on)

    @property
    def raw_subtotal(self) -> Decimal:
        return sum((s.amount for s in self.slices), Decimal(0))


@dataclass(frozen=True, slots=True)
class BilledTotals:
    """What existing lines of one key add up to."""

    subtotal_minor: int
    discount_minor: int
    count: int  # the next revision of the key: one after the highest billed (lines taken off drafts leave gaps)
    first_line_id: str
    period_end_on: date
    quantity: Decimal
    price_id: str = ""  # default: the key's charge
    last_kind: str = ""  # the kind of the key's latest line (``usage_threshold``: billed before its period ended)
    credited_minor: int = 0  # what credit notes credited on the key's lines: a correction credits no more than is left


@dataclass(frozen=True, slots=True)
class NewLine:
    subscription_id: str
    price_id: str
    charge_key: str
    period: Period
    revision: int
    kind: str  # "subscription" (first line of a key) or "proration" (a correction)
    description: str
    service_start_on: date
    service_end_on: date
    quantity: Decimal
    unit_price: Decimal
    subtotal_minor: int
    discount_minor: int
    corrects_line_id: str | None
    details: dict[str, object]

    @property
    def amount_minor(self) -> int:
        return self.subtotal_minor - self.discount_minor


# --- memos ------------------------------------------------------------------------------------------------
# A bill run asks the same pure questions for thousands of subscriptions: the rating of a price at a quantity,
# the segments of a timeline, the periods of a grid. Their answers are immutable, so they are computed once and
# shared. Keys hold the exact inputs (a quantity by its exact text: 1 and 1.0 rate to different-looking
# results), so a memo never changes an answer. Each memo is bounded: it is emptied when it grows too large.

_MEMO_LIMIT = 4096
_RATINGS: dict[tuple[int, str], tuple[ChargeModel, ChargeResult]] = {}
_SEGMENTS: dict[tuple[tuple[TimelineEvent, ...], date | None, tuple[str, ...]], tuple[Segment, ...]] = {}
_PERIODS: dict[tuple[date, Interval, date, date], tuple[Period, ...]] = {}
_CONTAINING: dict[tuple[date, Interval, date], Period] = {}
_ROUNDED: dict[tuple[Decimal, Currency, RoundingPolicy], int] = {}
_BREAKDOWNS: dict[int, tuple[ChargeResult, tuple[tuple[str, str, str, str, str], ...]]] = {}
_WHOLE = Fraction(1)  # what proration_fraction gives for a slice covering its whole period
_ZERO = Decimal(0)
_NANO = Decimal("0.000000001")


def _rate(model: ChargeModel, quantity: Decimal) -> ChargeResult:
    """``model.rate(quantity)``, remembered. Keyed by the model object (kept alive by the entry, so its id cannot
    be reused while the entry exists) and the quantity's exact text."""
    key = (id(model), str(quantity))
    hit = _RATINGS.get(key)
    if hit is not None and hit[0] is model:
        return hit[1]
    result = model.rate(quantity)
    if len(_RATINGS) >= _MEMO_LIMIT:
        _RATINGS.clear()
    _RATINGS[key] = (model, result)
    return result


def _segments(events: tuple[TimelineEvent, ...], trial_end_on: date | None) -> tuple[Segment, ...]:
    """``build_segments``, remembered. Equal quantities can be written differently (1 and 1.0) and segments carry
    them on, so the key holds each quantity's exact text too."""
    key = (events, trial_end_on, tuple([str(i.quantity) for e in events for i in e.items]))
    found = _SEGMENTS.get(key)
    if found is None:
        found = tuple(build_segments(events, trial_end_on))
        if len(_SEGMENTS) >= _MEMO_LIMIT:
            _SEGMENTS.clear()
        _SEGMENTS[key] = found
    return found


def _periods_overlapping(anchor_on: date, interval: Interval, start_on: date, end_on: date) -> tuple[Period, ...]:
    key = (anchor_on, interval, start_on, end_on)
    found = _PERIODS.get(key)
    if found is None:
        found = tuple(periods_overlapping(anchor_on, interval, start_on, end_on))
        if len(_PERIODS) >= _MEMO_LIMIT:
            _PERIODS.clear()
        _PERIODS[key] = found
    return found


def _period_containing(anchor_on: date, interval: Interval, on: date) -> Period:
    key = (anchor_on, interval, on)
    found = _CONTAINING.get(key)
    if found is None:
        found = period_containing(anchor_on, interval, on)
        if len(_CONTAINING) >= _MEMO_LIMIT:
            _CONTAINING.clear()
        _CONTAINING[key] = found
    return found


def _round_minor(policy: RoundingPolicy, raw: Decimal, cur: Currency) -> int:
    """``policy.round_minor(raw, cur)``, remembered. The result is an integer, so equal amounts share an entry
    however they are written."""
    if not raw.is_finite():
        return policy.round_minor(raw, cur)
    key = (raw, cur, policy)
    found = _ROUNDED.get(key)
    if found is None:
        found = policy.round_minor(raw, cur)
        if len(_ROUNDED) >= _MEMO_LIMIT:
            _ROUNDED.clear()
        _ROUNDED[key] = found
    return found


def _due(price: Price, slice_start: date, period: Period, end_on: date | None, as_of_on: date) -> bool:
    if price.timing is Timing.IN_ADVANCE:
        return slice_start <= as_of_on
    closes_on = period.end_on if end_on is None else min(period.end_on, end_on)
    return closes_on <= as_of_on


def propose(
    terms: SubscriptionTerms,
    prices: Mapping[str, Price],
    as_of_on: date,
    policy: RoundingPolicy,
    usage: UsageData | None = None,
    pinned: Pinned = NO_PINS,
) -> list[ProposedLine]:
    """Every subscription line that should exist for the periods under review, as of a day.

    Usage prices need ``usage``: the aggregates of the windows ``usage_windows`` names. ``pinned``: the periods
    that keep the price they were invoiced at, rather than the one in ``prices`` (see ``Pinned``)."""
    lines: dict[LineKey, ProposedLine] = {}
    plan = _plan(terms, prices, as_of_on, pinned)
    for period, start, end, item, price, fraction in plan.fixed:
        full = _rate(price.model, item.quantity).amount
        amount = full * fraction.numerator / fraction.denominator
        line = lines.get((terms.id, price.id, period.start_on))
        if line is None:
            line = lines[(terms.id, price.id, period.start_on)] = ProposedLine(terms.id, price, period)
        line.slices.append(Slice(start, end, item.quantity, fraction, amount, full))
    result = list(lines.values())
    for line in result:
        _round_fixed(line, policy, terms.currency)
    if plan.usage:
        result.extend(_usage_lines(terms, plan.usage, usage, policy))
    _apply_coupons(terms, result, policy)
    return result


def _round_fixed(line: ProposedLine, policy: RoundingPolicy, cur: Currency) -> None:
    """A fixed line's subtotal: its slices' exact sum, rounded once. Each slice's amount is written to 28 digits
    (16/31 of a fee has no finite decimal expansion), and so is their sum, so that slices of a per-seat fee adding
    up to exactly 5.085 (1.13 for 2 seats 1 day, 5 seats 25 days and 2 seats 4 days of 30) could come to
    5.084999… and be rounded down."""
    raw = line.raw_subtotal
    (first, *more) = line.slices
    if not more and first.fraction == 1 and first.amount == first.full:  # a whole period: its amount, exact
        line.subtotal_minor = _round_minor(policy, raw, cur)
        return
    exact = sum((Fraction(s.full or 0) * s.fraction for s in line.slices), Fraction(0))
    line.subtotal_minor = policy.round_exact(exact, cur)
    if Fraction(raw) != exact and Fraction(written := decimal_of(exact)) == exact:  # a finite amount: as it is
        line.before_rounding = written


DueSlice = tuple[Period, date, date, Item, Price, Fraction]
_DUE: dict[tuple[object, ...], tuple[tuple[TimelineEvent, ...], Mapping[str, Price], Pinned, tuple[DueSlice, ...]]] = {}


def _due_slices(
    terms: SubscriptionTerms, prices: Mapping[str, Price], as_of_on: date, pinned: Pinned = NO_PINS
) -> tuple[DueSlice, ...]:
    """``_find_due_slices``, remembered. Subscriptions on the same plan since the same day share their timeline's
    event objects (a bill run parses identical events once per batch), so they share their due slices too. Keyed
    by the identity of the events, of the prices and of the pinned periods (the entry keeps them alive, so no id
    is reused while it exists; all are immutable once loaded) and by every date the answer depends on."""
    events = terms.events
    key = (
        tuple(map(id, events)),
        id(prices),
        id(pinned),
        terms.trial_end_on,
        terms.reviewed_from_on,
        terms.anchor_on,
        terms.interval,
        as_of_on,
    )
    hit = _DUE.get(key)
    if (
        hit is not None
        and hit[1] is prices
        and hit[2] is pinned
        and all(a is b for a, b in zip(hit[0], events, strict=True))
    ):
        return hit[3]
    found = tuple(_find_due_slices(terms, prices, as_of_on, pinned))
    if len(_DUE) >= _MEMO_LIMIT:
        _DUE.clear()
    _DUE[key] = (events, prices, pinned, found)
    return found


def _find_due_slices(
    terms: SubscriptionTerms, prices: Mapping[str, Price], as_of_on: date, pinned: Pinned = NO_PINS
) -> Iterator[DueSlice]:
    """Each (period, slice, item) billable and due as of the day, with the slice's fraction of its period, and the
    price it is rated at (a pinned period's, else the customer's)."""
    segments = [s for s in _segments(terms.events, terms.trial_end_on) if s.billable]
    if not segments:
        return
    end_on = ended_on(terms.events)
    review_from = terms.reviewed_from_on or segments[0].start_on
    if review_from > as_of_on:
        return  # nothing has started yet
    # Periods that can hold due lines: from the one containing review_from to the one containing as_of_on.
    for period in _periods_overlapping(terms.anchor_on, terms.interval, review_from, as_of_on + _ONE_DAY):
        for seg in _overlapping(segments, period):
            start = max(seg.start_on, period.start_on)
            end = period.end_on if seg.end_on is None else min(seg.end_on, period.end_on)
            for item in seg.items:
                price = prices[item.price_id]
                if pinned:
                    price = pinned.get((price.id, period.start_on), price)
                if not price.recurring or not _due(price, start, period, end_on, as_of_on):
                    continue
                if start == period.start_on and end == period.end_on and start < end:
                    fraction = _WHOLE
                else:
                    fraction = proration_fraction(start, end, period)
                yield period, start, end, item, price, fraction


@dataclass(frozen=True, slots=True)
class _UsagePart:
    """A usage price's due slices in one period, and what follows from them alone."""

    price: Price
    period: Period
    fraction: Fraction  # the share of the period the slices cover
    windows: tuple[tuple[date, date], ...]  # consecutive slices merged
    windows_json: list[dict[str, str]]  # the windows as a line's details show them (never changed once made)
    included: Decimal  # the price's included units, prorated to the fraction (to 28 digits: as shown)
    included_exact: Fraction  # the same, exactly (10,000 × 16/31 has no finite decimal expansion)
    included_text: str
    # When the included units were prorated (a part of the period billed): the units per period and the share.
    proration: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class _Plan:
    """Due slices sorted for ``propose``: fixed-fee slices, usage prices per period, and the meter windows
    ``usage_windows`` reports. It depends only on the due slices and the prices, so it is made once per due
    slices (``_due_slices`` shares those between subscriptions with the same timeline and dates)."""

    fixed: tuple[DueSlice, ...]
    usage: tuple[_UsagePart, ...]
    windows: tuple[tuple[UsageWindowKey, bool], ...]


_PLANS: dict[int, tuple[tuple[DueSlice, ...], Mapping[str, Price], _Plan]] = {}


def _plan(terms: SubscriptionTerms, prices: Mapping[str, Price], as_of_on: date, pinned: Pinned = NO_PINS) -> _Plan:
    due = _due_slices(terms, prices, as_of_on, pinned)
    hit = _PLANS.get(id(due))  # the entry keeps ``due`` alive, so its id is not reused while it exists
    if hit is not None and hit[0] is due and hit[1] is prices:
        return hit[2]
    found = _make_plan(due, prices)
    if len(_PLANS) >= _MEMO_LIMIT:
        _PLANS.clear()
    _PLANS[id(due)] = (due, prices, found)
    return found


def _make_plan(due: Sequence[DueSlice], prices: Mapping[str, Price]) -> _Plan:
    fixed: list[DueSlice] = []
    slices: dict[tuple[str, date], list[tuple[date, date, Fraction]]] = {}  # (price id, period start) -> slices
    periods: dict[date, Period] = {}
    rated_by: dict[tuple[str, date], Price] = {}  # the price a period's slices were found with (pinned or not)
    for one in due:
        period, start, end, _item, price, fraction = one
        if price.usage is None:
            fixed.append(one)
            continue
        slices.setdefault((price.id, period.start_on), []).append((start, end, fraction))
        rated_by[(price.id, period.start_on)] = price
        periods[period.start_on] = period
    usage: list[_UsagePart] = []
    windows: list[tuple[UsageWindowKey, bool]] = []
    for (price_id, period_start), parts in slices.items():
        price = rated_by[(price_id, period_start)]
        assert price.usage is not None
        merged = tuple(_windows(parts))
        fraction = sum((f for _a, _b, f in parts), Fraction(0))
        included = price.usage.included_units * fraction.numerator / fraction.denominator
        included_exact = Fraction(price.usage.included_units) * fraction
        usage.append(
            _UsagePart(
                price,
                periods[period_start],
                fraction,
                merged,
                [{"start_on": a.isoformat(), "end_on": b.isoformat()} for a, b in merged],
                included,
                included_exact,
                _fmt_qty(included),
                None
                if fraction == 1 or not price.usage.included_units
                else {
                    "included_per_period": _fmt_qty(price.usage.included_units),
                    "share": f"{fraction.numerator}/{fraction.denominator}",
                },
            )
        )
        if price.metered:
            assert price.usage.meter is not None
            models = (price.model, *price.usage.dimensions.values())
            per_transaction = any(isinstance(m, PercentageCharge) for m in models)
            windows.extend(((price.usage.meter, a, b), per_transaction) for a, b in merged)
    return _Plan(tuple(fixed), tuple(usage), tuple(windows))


def has_usage(terms: SubscriptionTerms, prices: Mapping[str, Price]) -> bool:
    return any(prices[i.price_id].metered for e in terms.events for i in e.items if i.price_id in prices)


def usage_windows(
    terms: SubscriptionTerms, prices: Mapping[str, Price], as_of_on: date, pinned: Pinned = NO_PINS
) -> tuple[tuple[UsageWindowKey, bool], ...]:
    """The meter windows ``propose`` will need aggregates for (to load them set-wise beforehand), each with
    whether its price also needs the window's transactions one by one (a percentage model)."""
    return _plan(terms, prices, as_of_on, pinned).windows


def _windows(parts: Sequence[tuple[date, date, Fraction]]) -> list[tuple[date, date]]:
    """Consecutive slices merged: a price that applies from the 1st to the 31st is one window."""
    merged: list[list[date]] = []
    for start, end, _fraction in sorted(parts):
        if merged and merged[-1][1] == start:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged if a < b]


def _usage_lines(
    terms: SubscriptionTerms,
    parts: Sequence[_UsagePart],
    usage: UsageData | None,
    policy: RoundingPolicy,
) -> list[ProposedLine]:
    """Metered lines per price, period and group; then minimum commitments against them."""
    out: list[ProposedLine] = []
    minimums: list[_UsagePart] = []
    for part in parts:
        price, period, fraction, windows = part.price, part.period, part.fraction, part.windows
        terms_ = price.usage
        assert terms_ is not None
        if terms_.minimum:
            minimums.append(part)
            continue
        if usage is None:
            raise ValueError(f"usage price {price.id} needs usage data")
        assert terms_.meter is not None
        meter = usage.meters[terms_.meter]
        measured_windows = [(w, usage.windows.get((meter.code, *w), {})) for w in windows]
        if meter.aggregation is Aggregation.WEIGHTED_SUM:  # the level held, exactly (10 GB for 10 of 30 days: 10/3)
            levels = _weighted_levels(measured_windows, period)
            per_group = {group: (decimal_of(level), events) for group, (level, events) in levels.items()}
        else:
            levels, per_group = {}, _combine(meter, measured_windows, period)
        for group, (measured, events) in sorted(per_group.items()) if len(per_group) > 1 else per_group.items():
            quantity = meter.rounded(measured) if meter.rounding is not None else measured
            level = levels[group][0] if group in levels and meter.rounding is None else None
            billable, exact_billable = _billable(quantity, level, part)
            model = terms_.model_for(group, price.model)
            amount: Decimal | None = None  # the line's amount before rounding, if not the breakdown's
            subtotal: int | None = None  # when rated exactly, not from the amount written
            if isinstance(model, PercentageCharge):  # transaction by transaction: fees, free ones, min and max
                values = [v for w in windows for v in usage.transactions.get((meter.code, *w), {}).get(group, ())]
                rated = model.rate_transactions(values)
            else:
                rated = _rate(model, billable)
                if exact_billable is not None:
                    exact = _rate_exactly(model, exact_billable)
                    subtotal = policy.round_exact(exact, terms.currency)
                    if Fraction(written := decimal_of(exact)) == exact:  # a finite amount (0.005): shown as it is
                        amount = written
            details: dict[str, object] = {
                "meter": meter.code,
                "aggregation": meter.aggregation.value,
                "field": meter.field,
                "expression": meter.expression.source if meter.expression else None,
                "group": dict(zip(meter.group_by, group, strict=True)) if group else {},
                "windows": part.windows_json,
                "events": events,
                "quantity": _fmt_qty(quantity),
                "included_units": part.included_text,
                "billable_units": _fmt_qty(billable),
                "price_model": model.kind,
            }
            if meter.carry_over:  # a period without events has the value last reported before it
                details["carry_over"] = True
            if meter.rounding is not None:  # what was measured, and how it was rounded to the quantity billed
                details["measured"] = _fmt_qty(measured)
                details["rounding"] = {"mode": meter.rounding.value, "precision": meter.precision}
            if part.proration is not None:
                details.update(part.proration)
            line = ProposedLine(
                terms.id,
                price,
                period,
                [Slice(windows[0][0], windows[-1][1], quantity, fraction, rated.amount if amount is None else amount)],
                charge_key=charge_key(price.id, group),
                model=model,
                rated_units=billable,
                rated=rated,
                usage=details,
            )
            line.subtotal_minor = _round_minor(policy, rated.amount, terms.currency) if subtotal is None else subtotal
            out.append(line)
    out.extend(_true_ups(terms, minimums, out, policy))
    return out


_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)  # adds and subtracts decimals without rounding
_QUANTITY = Context(prec=28)  # the digits a quantity is written with


def _billable(quantity: Decimal, level: Fraction | None, part: _UsagePart) -> tuple[Decimal, Fraction | None]:
    """The units a usage line rates: its quantity (``level``: a weighted level's exact value) less the included
    units, never below 0; and the exact units when that decimal, written to 28 digits, is not them (an overage on
    included units prorated by 20/30: 75 - 200/3 calls). The usual case, included units not prorated (or none),
    is the difference of two decimals, worked out exactly without fractions."""
    if level is None and (part.fraction == 1 or not part.included_exact):
        wide = _EXACT.subtract(quantity, part.included)
        if not wide > 0:
            return _ZERO, None  # as max(0, ...) gives, 0 itself too
        if _QUANTITY.plus(wide) == wide:
            return wide, None
        exact = Fraction(wide)
    else:
        exact = (Fraction(quantity) if level is None else level) - part.included_exact
        if not exact > 0:
            return _ZERO, None
    billable = decimal_of(exact)
    return billable, (None if Fraction(billable) == exact else exact)


# Digits of the two decimals a billable quantity with no finite decimal expansion lies between: so close that no
# bound of a tier or package (a decimal of at most 24 digits, 9 of them decimals) can lie between them, and far
# fewer than the 200 rating multiplies exactly.
_BRACKET_DIGITS = 150


def _rate_exactly(model: ChargeModel, units: Fraction) -> Fraction:
    """The exact amount a model rates a quantity to that has no finite decimal expansion (an overage on included
    units prorated by 20/30: 75 - 200/3 calls), or more digits than the 28 it is written with. Every model is
    linear between its tier bounds and package steps, so the amount is interpolated between the ratings of the two
    nearest decimals of 150 digits on either side of the quantity."""
    with localcontext(WIDE) as ctx:
        ctx.prec = _BRACKET_DIGITS
        ctx.rounding = ROUND_FLOOR
        low = Decimal(units.numerator) / units.denominator
        ctx.rounding = ROUND_CEILING
        high = Decimal(units.numerator) / units.denominator
    at_low, at_high = model.rate(low).amount, model.rate(high).amount
    if low == high:  # a finite decimal after all, of more digits than a quantity is written with
        return Fraction(at_low)
    slope = (Fraction(at_high) - Fraction(at_low)) / (Fraction(high) - Fraction(low))
    return Fraction(at_low) + (units - Fraction(low)) * slope


def _true_ups(
    terms: SubscriptionTerms,
    minimums: Sequence[_UsagePart],
    usage_lines: Sequence[ProposedLine],
    policy: RoundingPolicy,
) -> list[ProposedLine]:
    """Minimum commitments against the period's usage lines, each counted once: the commitments that apply to a
    period (two after a plan change, each prorated) are added up, and the shortfall is shared among their lines
    in proportion to them, by largest remainder, so that the true-ups add up to it exactly. The period's
    commitment is rounded once, from the exact prorated ones, and split among them the same way: two halves of
    20.01 are 10.01 and 10.00, not 10.01 twice."""
    by_period: dict[date, list[tuple[_UsagePart, Decimal]]] = defaultdict(list)
    for part in minimums:
        fraction = part.fraction
        commitment = _rate(part.price.model, Decimal(1)).amount * fraction.numerator / fraction.denominator
        by_period[part.period.start_on].append((part, commitment))
    out: list[ProposedLine] = []
    for start_on, parts in by_period.items():
        used_minor = sum(ln.subtotal_minor for ln in usage_lines if ln.period.start_on == start_on)
        exact = [commitment for _part, commitment in parts]
        if len(parts) == 1:
            committed = [_round_minor(policy, exact[0], terms.currency)]
        else:  # the exact sum of the prorated commitments (each one's decimal may be cut to 28 digits), rounded once
            period_commitment = sum(
                (Fraction(_rate(part.price.model, Decimal(1)).amount) * part.fraction for part, _c in parts),
                Fraction(0),
            )
            committed = allocate(policy.round_exact(period_commitment, terms.currency), exact)
        shortfall = max(0, sum(committed) - used_minor)
        shares = allocate(shortfall, committed) if shortfall else [0] * len(parts)
        for (part, commitment), committed_minor, share in zip(parts, committed, shares, strict=True):
            windows = part.windows
            details: dict[str, object] = {
                "minimum_minor": committed_minor,
                "usage_minor": used_minor,
                "windows": part.windows_json,
            }
            if len(parts) > 1:  # the period's other commitments count too
                details["period_minimum_minor"] = sum(committed)
            if part.fraction != 1:  # prorated: the commitment per period and the share of the period it applied to
                per_period = _rate(part.price.model, Decimal(1)).amount
                cents = per_period.quantize(terms.currency.quantum)
                details["minimum_per_period"] = str(cents if cents == per_period else per_period)  # 20 as 20.00
                details["share"] = f"{part.fraction.numerator}/{part.fraction.denominator}"
            line = ProposedLine(
                terms.id,
                part.price,
                part.period,
                [Slice(windows[0][0], windows[-1][1], Decimal(1), part.fraction, commitment)],
                usage=details,
            )
            line.subtotal_minor = share
            out.append(line)
    return out


def _combine(
    meter: Meter,
    windows: Sequence[tuple[tuple[date, date], Mapping[tuple[str, ...], Aggregate]]],
    period: Period,
) -> dict[tuple[str, ...], tuple[Decimal, int]]:
    """One quantity per group over several windows of a period. Usually there is one window; several happen when
    a price stops and starts again within a period (a pause). Counts and sums add up; a maximum is the largest;
    the latest value is the last window's (the last with events, unless the meter carries over); unique counts
    add up per window (a value seen in two windows counts twice). A time-weighted sum is each window's average
    level weighted by its share of the period, so a level held for half a month bills half a month."""
    if len(windows) == 1 and meter.aggregation is not Aggregation.WEIGHTED_SUM:  # the usual case: taken as is
        return {group: (agg.quantity, agg.events) for group, agg in windows[0][1].items()}
    if meter.aggregation is Aggregation.WEIGHTED_SUM:
        return _combine_weighted(windows, period)
    out: dict[tuple[str, ...], tuple[Decimal, int]] = {}
    for _window, groups in windows:
        for group, agg in groups.items():
            quantity = agg.quantity
            before = out.get(group)
            if before is None:
                out[group] = (quantity, agg.events)
            elif meter.aggregation is Aggregation.MAX:
                out[group] = (max(before[0], quantity), before[1] + agg.events)
            elif meter.aggregation is Aggregation.LATEST:  # (a window that carries over has its value from before)
                out[group] = (quantity if agg.events or meter.carry_over else before[0], before[1] + agg.events)
            else:
                out[group] = (before[0] + quantity, before[1] + agg.events)
    return out


def _combine_weighted(
    windows: Sequence[tuple[tuple[date, date], Mapping[tuple[str, ...], Aggregate]]], period: Period
) -> dict[tuple[str, ...], tuple[Decimal, int]]:
    """Each window's average level times its share of the period, added up exactly (as fractions) and written
    out once: 5 GB held 18 of a window's 26 days, the window 26 of the period's 30, is 3 GB, not 3.000…001."""
    return {group: (decimal_of(total), events) for group, (total, events) in _weighted_levels(windows, period).items()}


def _weighted_levels(
    windows: Sequence[tuple[tuple[date, date], Mapping[tuple[str, ...], Aggregate]]], period: Period
) -> dict[tuple[str, ...], tuple[Fraction, int]]:
    """``_combine_weighted`` before it is written out: each group's level over the period as a fraction."""
    sums: dict[tuple[str, ...], tuple[Fraction, int]] = {}
    for (start, end), groups in windows:
        share = Fraction(period.overlap_days(start, end), period.days) if period.days else Fraction(0)
        for group, agg in groups.items():
            average = agg.exact if agg.exact is not None else Fraction(agg.quantity)
            before = sums.get(group, (Fraction(0), 0))
            sums[group] = (before[0] + average * share, before[1] + agg.events)
    return sums


def charge_key(price_id: str, group: tuple[str, ...]) -> str:
    """A usage line's charge: the price, and its group when the meter has dimensions (hashed if long, or if a
    value of two or more holds the separator: ("a|b", "c") and ("a", "b|c") must not share a key)."""
    if not group:
        return price_id
    if len(group) > 1 and any("|" in value for value in group):
        return f"{price_id}|#{hashlib.sha256(json.dumps(group).encode()).hexdigest()[:24]}"
    key = f"{price_id}|{'|'.join(group)}"
    if len(key) <= 80:
        return key
    return f"{price_id}|#{hashlib.sha256(chr(31).join(group).encode()).hexdigest()[:24]}"


def group_of_charge(price_id: str, key: str, dimensions: int | None = None) -> tuple[str, ...]:
    """A usage charge's group values, read back from its key (``charge_key``); () when it has none, or when the key
    is hashed (the values cannot be read back). ``dimensions``: how many the meter has, when known: the one value
    of a meter with one dimension may hold ``|`` ("us|east" is not "us" and "east")."""
    if not key.startswith(f"{price_id}|"):
        return ()
    rest = key[len(price_id) + 1 :]
    values = (rest,) if dimensions == 1 else tuple(rest.split("|"))
    if dimensions is not None and len(values) != dimensions:
        return ()
    return values if charge_key(price_id, values) == key else ()


def _overlapping(segments: Sequence[Segment], period: Period) -> list[Segment]:
    return [s for s in segments if s.start_on < period.end_on and (s.end_on is None or s.end_on > period.start_on)]


def _apply_coupons(terms: SubscriptionTerms, lines: list[ProposedLine], policy: RoundingPolicy) -> None:
    if not terms.coupons:
        return
    by_period: dict[date, list[ProposedLine]] = defaultdict(list)
    for line in lines:
        by_period[line.period.start_on].append(line)
    first_billable = terms.trial_end_on
    for applied in terms.coupons:
        starts = max(applied.applied_on, first_billable) if first_billable else applied.applied_on
        first_period = _period_containing(terms.anchor_on, terms.interval, starts)
        for period_start, period_lines in by_period.items():
            if period_start < first_period.start_on:
                continue
            index = _periods_between(terms, first_period, period_start)
            if not _coupon_covers(applied.coupon, index):
                continue
            _discount(applied.coupon, period_lines, terms.currency, policy)


def _periods_between(terms: SubscriptionTerms, first: Period, start_on: date) -> int:
    return (
        len(_periods_overlapping(terms.anchor_on, terms.interval, first.start_on, start_on))
        if (start_on > first.start_on)
        else 0
    )


def _coupon_covers(coupon: Coupon, index: int) -> bool:
    if coupon.duration is CouponDuration.FOREVER:
        return True
    if coupon.duration is CouponDuration.ONCE:
        return index == 0
    return index < (coupon.duration_periods or 0)


def _discount(coupon: Coupon, lines: list[ProposedLine], cur: Currency, policy: RoundingPolicy) -> None:
    remaining = [max(0, ln.subtotal_minor - ln.discount_minor) for ln in lines]
    if coupon.percent_off is not None:
        for ln, base in zip(lines, remaining, strict=True):
            # ``base`` is in minor units; ``round_minor`` takes an amount in major units (e.g. euros), so the
            # base is scaled to major units first (3000 minor × 20% is 6.00 EUR = 600 minor, not 600 EUR).
            raw = Decimal(base).scaleb(-cur.minor_units) * coupon.percent_off / 100
            ln.discount_minor += min(base, _round_minor(policy, raw, cur))
        return
    # An amount off is taken first from the fees billed in advance, then from those billed in arrears (usage,
    # true-ups), each group in proportion to its lines: what a period's first invoice was discounted stays as it
    # was when the period's usage is billed at its end, instead of being shared out again with that usage.
    cap = min(coupon.amount_off_minor or 0, sum(remaining))
    for advance in (True, False):
        group = [i for i, ln in enumerate(lines) if (ln.price.timing is Timing.IN_ADVANCE) is advance]
        weights = [remaining[i] for i in group]
        take = min(cap, sum(weights))
        if take <= 0:
            continue
        for i, part in zip(group, allocate(take, weights), strict=True):
            lines[i].discount_minor += part
        cap -= take


def diff(
    proposed: Sequence[ProposedLine],
    billed: Mapping[LineKey, BilledTotals],
    as_of_on: date,
    prices: Mapping[str, Price],
    meters: Mapping[str, Meter] | None = None,
    pinned: Pinned = NO_PINS,
    billed_through_on: date | None = None,
) -> list[NewLine]:
    """The lines to write so that what is billed equals what is proposed. ``meters``: to read a usage charge that
    is no longer proposed back into its group (``group_of_charge``). ``pinned``: as ``propose`` was given.
    ``billed_through_on``: the subscription's (``SubscriptionTerms``): a period a bill run already billed through
    its end was closed (a run as of its last day bills every line of it), so what changes in it after a threshold
    invoice is a late correction, not its remainder. (The end of a subscription canceled mid-period does not tell
    as much: a run earlier on the day of the cancellation billed it through that day already.)"""
    out: list[NewLine] = []
    seen: set[LineKey] = set()

    def closed(period_end_on: date) -> bool:
        return billed_through_on is not None and period_end_on <= billed_through_on

    for line in proposed:
        seen.add(line.key)
        before = billed.get(line.key)
        new = _difference(line, before, closed=closed(line.period.end_on))
        if new is not None:
            out.append(new)
    for key, before in billed.items():
        # Billed keys that are no longer proposed (e.g. a period cut away by a cancellation) are credited
        # in full, but never keys from periods after the as-of day: those belong to a later run.
        price_id = before.price_id or key[1]
        if key in seen or key[2] > as_of_on or price_id not in prices:
            continue
        if before.last_kind == THRESHOLD_KIND and before.period_end_on > as_of_on:
            continue  # usage billed early at a threshold: its period is still open, the rest comes at its end
        price = pinned.get((price_id, key[2]), prices[price_id]) if pinned else prices[price_id]
        ghost = ProposedLine(key[0], price, Period(key[2], before.period_end_on), charge_key=key[1])
        if price.metered and price.usage is not None:
            # Nothing is measured for it now (every event of its group canceled, say); its meter is recorded so
            # that the line is the same fee as the price's other lines (wallets limited to fees net them).
            ghost.usage = {"meter": price.usage.meter, "nothing_measured": True}
            meter = meters.get(price.usage.meter) if meters and price.usage.meter else None
            if meter is not None and (values := group_of_charge(price_id, key[1], len(meter.group_by))):
                ghost.usage["group"] = dict(zip(meter.group_by, values, strict=True))
                ghost.model = price.usage.model_for(values, price.model)  # a dimension's own, if it has one
        new = _difference(ghost, before, closed=closed(before.period_end_on))
        if new is not None:
            out.append(new)
    return out


def threshold_diff(proposed: Sequence[ProposedLine], billed: Mapping[LineKey, BilledTotals]) -> list[NewLine]:
    """Threshold billing: what the given usage lines of an open period add to what was billed of them, as
    ``usage_threshold`` lines (the first of a key is its revision 0). Only the lines given are looked at."""
    out: list[NewLine] = []
    for line in proposed:
        new = _difference(line, billed.get(line.key), interim=True)
        if new is not None:
            out.append(new)
    return out


def _difference(
    line: ProposedLine, before: BilledTotals | None, interim: bool = False, closed: bool = False
) -> NewLine | None:
    billed_subtotal = before.subtotal_minor if before else 0
    billed_discount = before.discount_minor if before else 0
    d_subtotal = line.subtotal_minor - billed_subtotal
    d_discount = line.discount_minor - billed_discount
    if before is not None and before.credited_minor and d_subtotal - d_discount < 0:
        d_subtotal, d_discount = _capped(d_subtotal, d_discount, before)
    if d_subtotal == 0 and d_discount == 0:
        return None
    if before is None and line.subtotal_minor == 0 and line.discount_minor == 0:
        return None
    first = before is None
    if line.price.usage is not None:
        new = _usage_difference(line, before, d_subtotal, d_discount, closed)
        return _as_threshold(new, line, before) if interim else new
    service_start, service_end, quantity = _service_range(line, first)
    if not line.slices and before is not None:
        quantity = before.quantity
    label = line.price.name or line.price.id
    qty_text = "" if quantity == 1 else f" × {_fmt_qty(quantity)}"
    if first:
        description = f"{label}{qty_text}"
    elif d_subtotal == 0:
        description = f"Discount adjustment on {label}{qty_text}"
    elif d_subtotal - d_discount >= 0:
        description = f"Remaining time on {label}{qty_text}"
    else:
        description = f"Unused time on {label}{qty_text}"
    full = _rate(line.price.model, quantity).amount if quantity else Decimal(0)
    unit_price = (full / quantity) if quantity else Decimal(0)
    return _new_line(
        line,
        before,
        "subscription" if first else "proration",
        description,
        service_start,
        service_end,
        quantity,
        unit_price,
        d_subtotal,
        d_discount,
    )


def _capped(d_subtotal: int, d_discount: int, before: BilledTotals) -> tuple[int, int]:
    """A correction's credit, capped at what the key still holds once its credit notes are counted (billed net of
    the key less what they credited): a charge credited in full by a credit note is not credited again. The capped
    credit keeps the correction's split between subtotal and discount (the subtotal in proportion, by largest
    remainder; the discount the rest, so the line's parts sum exactly). Nothing left: (0, 0), no line."""
    wanted = d_subtotal - d_discount
    room = max(before.subtotal_minor - before.discount_minor - before.credited_minor, 0)
    if -wanted <= room:
        return d_subtotal, d_discount
    if room == 0:
        return 0, 0
    subtotal = allocate(d_subtotal, [room, -wanted - room])[0]
    return subtotal, subtotal + room


def _usage_difference(
    line: ProposedLine, before: BilledTotals | None, d_subtotal: int, d_discount: int, closed: bool = False
) -> NewLine:
    """A usage or true-up line: the first for its key, or the correction late usage (or a change) calls for.
    ``closed``: a bill run billed the line's period through its end already (its remainder, if any, is billed)."""
    first = before is None
    label = _usage_label(line)
    if line.slices:
        start, end, quantity = line.slices[0].start_on, line.slices[-1].end_on, line.slices[-1].quantity
    else:  # a key no longer proposed (all its events canceled, say): nothing is measured for it now
        start, end, quantity = line.period.start_on, line.period.end_on, Decimal(0)
    minimum = line.price.is_minimum
    if minimum:
        kind = "true_up"
        description = f"{label}: minimum commitment" if first else f"{label}: minimum commitment adjusted"
        quantity, unit_price = Decimal(1), Decimal(line.subtotal_minor).scaleb(-line.price.currency.minor_units)
    else:
        kind = "usage" if first else "usage_correction"
        if first:
            description = f"{label}: {_fmt_qty(quantity)}"
        elif before is not None and before.last_kind == THRESHOLD_KIND and not closed:
            kind = REMAINDER_KIND
            change = "usage since" if d_subtotal - d_discount >= 0 else "usage corrected since"
            description = f"{label}: {change} the threshold invoice ({_fmt_qty(quantity)} in the period)"
        elif d_subtotal - d_discount >= 0:
            description = f"{label}: usage received late for {line.period.start_on} – {line.period.end_on}"
        else:
            description = f"{label}: usage corrected for {line.period.start_on} – {line.period.end_on}"
        units = line.rated_units if line.rated_units is not None else quantity
        if line.rated is not None:
            full = line.rated.amount
        else:
            full = _rate(line.model or line.price.model, units).amount if units else Decimal(0)
        unit_price = (full / units) if units else Decimal(0)
    return _new_line(line, before, kind, description, start, end, quantity, unit_price, d_subtotal, d_discount)


def _usage_label(line: ProposedLine) -> str:
    label = line.price.name or line.price.id
    group = line.usage.get("group") if line.usage else None
    if isinstance(group, dict) and group:
        label += " (" + ", ".join(str(v) for v in group.values()) + ")"
    elif values := group_of_charge(line.price.id, line.charge_key):
        label += " (" + ", ".join(values) + ")"  # a charge no longer measured: its group read back from its key
    return label


def _as_threshold(new: NewLine, line: ProposedLine, before: BilledTotals | None) -> NewLine:
    label = _usage_label(line)
    so_far = f"{_fmt_qty(new.quantity)} so far this period"
    if before is None:
        description = f"{label}: {so_far} (usage threshold reached)"
    else:
        description = f"{label}: usage since the last threshold invoice ({so_far})"
    return replace(new, kind=THRESHOLD_KIND, description=description[:500])


_PERIOD_JSON: dict[int, tuple[Period, dict[str, str]]] = {}
_K = TypeVar("_K")
_V = TypeVar("_V")


def _by_identity(memo: dict[int, tuple[_K, _V]], key: _K, make: Callable[[_K], _V]) -> _V:
    """``make(key)``, remembered per key object: for immutable objects the batch shares. The entry keeps its key
    alive, so the id is not reused while it exists; the memo is emptied when it grows past ``_MEMO_LIMIT``."""
    hit = memo.get(id(key))
    if hit is None or hit[0] is not key:
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        hit = memo[id(key)] = (key, make(key))
    return hit[1]


def _period_json(period: Period) -> dict[str, str]:
    """A period as a line's details show it, made once per period object. Never changed once made: lines share
    it."""
    return _by_identity(
        _PERIOD_JSON, period, lambda p: {"start_on": p.start_on.isoformat(), "end_on": p.end_on.isoformat()}
    )


def _new_line(
    line: ProposedLine,
    before: BilledTotals | None,
    kind: str,
    description: str,
    service_start: date,
    service_end: date,
    quantity: Decimal,
    unit_price: Decimal,
    d_subtotal: int,
    d_discount: int,
) -> NewLine:
    billed = (before.subtotal_minor - before.discount_minor) if before else 0
    details: dict[str, object] = {
        "period": _period_json(line.period),
        "slices": [
            {
                "start_on": s.start_on.isoformat(),
                "end_on": s.end_on.isoformat(),
                "quantity": str(s.quantity),
                "fraction": f"{s.fraction.numerator}/{s.fraction.denominator}",
                "amount": str(s.amount),
            }
            for s in line.slices
        ],
        "breakdown": _breakdown(line),
        "billed_before_minor": billed,
    }
    if line.before_rounding is not None:  # the slices' amounts, written to 28 digits, do not add up to it exactly
        details["before_rounding"] = str(line.before_rounding)
    if line.usage is not None:
        details["usage"] = line.usage
    if line.price.override_id is not None and (line.model is None or line.model is line.price.model):
        details["negotiated_price"] = _negotiated(line.price)  # what rated it (not a dimension's own model)
    return NewLine(
        subscription_id=line.subscription_id,
        price_id=line.price.id,
        charge_key=line.charge_key or line.price.id,
        period=line.period,
        revision=before.count if before else 0,
        kind=kind,
        description=description[:500],
        service_start_on=service_start,
        service_end_on=service_end,
        quantity=quantity,
        unit_price=_unit_price(unit_price),
        subtotal_minor=d_subtotal,
        discount_minor=d_discount,
        corrects_line_id=before.first_line_id if before else None,
        details=details,
    )


def _negotiated(price: Price) -> dict[str, object]:
    return {"override_id": price.override_id, "model": price.model.kind, "config": price.model.to_config()}


def _unit_price(value: Decimal) -> Decimal:
    """A line's unit price as shown (its amount ÷ its quantity: informational, never summed), to the nano: worked
    out in a wide context, since a tiny quantity (1e-20 units of a package) makes it huge, then to 28 digits."""
    with localcontext(WIDE):
        nano = value.quantize(_NANO)
    return nano.normalize()


def _service_range(line: ProposedLine, first: bool) -> tuple[date, date, Decimal]:
    """The days a line is about, and the quantity to show.

    A first line covers its slices. A correction covers the time that changed: from the first slice boundary
    inside the billed time to the period's end. The day billing begins in the period (the period's start, or the
    subscription's start or trial end in a first, partial period) was billed by the first line already and is
    not a change: an upgrade on 20 Feb of a subscription started 10 Feb on calendar months credits 20 Feb - 1 Mar,
    not 10 Feb - 1 Mar.
    """
    if not line.slices:
        return line.period.start_on, line.period.end_on, Decimal(0)
    if first:
        return line.slices[0].start_on, line.slices[-1].end_on, line.slices[-1].quantity
    begins = line.slices[0].start_on
    inner = [s.start_on for s in line.slices if s.start_on != begins]
    inner += [s.end_on for s in line.slices if s.end_on != line.period.end_on]
    start = min(inner) if inner else begins
    after = [s for s in line.slices if s.start_on >= start]
    quantity = after[-1].quantity if after else line.slices[-1].quantity
    return start, line.period.end_on, quantity


def _breakdown(line: ProposedLine) -> list[dict[str, str]]:
    if not line.slices or line.price.is_minimum:
        return []
    if line.rated is not None:
        result = line.rated
    elif line.rated_units is not None:
        result = _rate(line.model or line.price.model, line.rated_units)
    else:
        result = _rate(line.price.model, line.slices[-1].quantity)
    texts = _by_identity(
        _BREAKDOWNS,
        result,
        lambda r: tuple(
            (b.description, str(b.units), str(b.unit_price), str(b.flat_fee), str(b.amount)) for b in r.breakdown
        ),
    )
    return [{"description": d, "units": u, "unit_price": p, "flat_fee": f, "amount": a} for d, u, p, f, a in texts]


def _fmt_qty(quantity: Decimal) -> str:
    text = format(quantity.normalize(), "f")
    return text
