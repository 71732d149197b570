"""Threshold billing in the invoice diff: usage billed before its period ends, and the rest at the end."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from remit.domain.billing_events import ChangeKind, Item, TimelineEvent
from remit.domain.catalog.model import Price, PriceType, Timing, UsageTerms
from remit.domain.invoicing.generator import (
    REMAINDER_KIND,
    THRESHOLD_KIND,
    BilledTotals,
    LineKey,
    NewLine,
    SubscriptionTerms,
    UsageData,
    diff,
    propose,
    threshold_diff,
    usage_windows,
)
from remit.domain.money import RoundingPolicy, currency
from remit.domain.rating.aggregations import Aggregate, Aggregation, Meter
from remit.domain.rating.charge_models import parse_charge_model
from remit.domain.subscriptions.periods import Interval, IntervalUnit

EUR = currency("EUR")
MONTH = Interval(IntervalUnit.MONTH)
METER = Meter("calls", Aggregation.SUM, "n")
TIERS = {"tiers": [{"up_to": "1000", "unit_price": "0.0133"}, {"up_to": None, "unit_price": "0.0071"}]}
PRICE = Price(
    "price_calls",
    "prod",
    EUR,
    parse_charge_model("graduated", TIERS),
    PriceType.RECURRING,
    MONTH,
    Timing.IN_ARREARS,
    name="Calls",
    usage=UsageTerms(meter="calls"),
)
PRICES = {PRICE.id: PRICE}
TERMS = SubscriptionTerms(
    "sub",
    "cus",
    EUR,
    MONTH,
    date(2026, 3, 1),
    None,
    (TimelineEvent(date(2026, 3, 1), ChangeKind.START, (Item(PRICE.id, Decimal(1)),)),),
)
END = date(2026, 4, 1)


def _usage(quantity: int) -> UsageData:
    ((key, _one_by_one),) = usage_windows(TERMS, PRICES, END)
    return UsageData({"calls": METER}, {key: {(): Aggregate(Decimal(quantity), 1)}})


def _proposed(quantity: int):
    return [ln for ln in propose(TERMS, PRICES, END, RoundingPolicy.HALF_UP, _usage(quantity)) if ln.price.metered]


def _billed(lines: list[NewLine]) -> dict[LineKey, BilledTotals]:
    if not lines:
        return {}
    last = max(lines, key=lambda ln: ln.revision)
    key = (last.subscription_id, last.charge_key, last.period.start_on)
    first = next(ln for ln in lines if ln.revision == 0)
    return {
        key: BilledTotals(
            sum(ln.subtotal_minor for ln in lines),
            sum(ln.discount_minor for ln in lines),
            len(lines),
            f"il_{first.revision}",
            last.period.end_on,
            last.quantity,
            last.price_id,
            last.kind,
        )
    }


def test_threshold_lines_then_the_remainder_sum_to_the_single_period_end_line():
    written: list[NewLine] = []
    for so_far in (1110, 2311):
        written += threshold_diff(_proposed(so_far), _billed(written))
    assert [(ln.kind, ln.revision) for ln in written] == [(THRESHOLD_KIND, 0), (THRESHOLD_KIND, 1)]
    assert "so far this period" in written[0].description
    # A bill run in the middle of the period neither bills nor credits the early lines.
    assert diff([], _billed(written), date(2026, 3, 20), PRICES) == []
    remainder = diff(_proposed(6373), _billed(written), END, PRICES)
    assert [(ln.kind, ln.revision) for ln in remainder] == [(REMAINDER_KIND, 2)]
    assert "since the threshold invoice" in remainder[0].description
    (single,) = diff(_proposed(6373), {}, END, PRICES)
    assert single.kind == "usage"
    assert sum(ln.amount_minor for ln in written + remainder) == single.amount_minor


def test_nothing_new_means_no_threshold_line_and_late_usage_after_the_remainder_is_a_correction():
    first = threshold_diff(_proposed(500), {})
    assert threshold_diff(_proposed(500), _billed(first)) == []
    rest = diff(_proposed(800), _billed(first), END, PRICES)
    late = diff(_proposed(900), _billed(first + rest), date(2026, 4, 3), PRICES)
    assert [ln.kind for ln in late] == ["usage_correction"]
