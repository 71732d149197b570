"""Live usage: each subscription's open billing period, the usage so far and what it would cost right now.

Computed exactly like the bill run, which is what makes the figure trustworthy: the same batch loader, the same
set-wise aggregation and the same pure generator, asked about the period's end (when its usage lines fall due)
while the aggregates can only hold the events received so far. So the amount shown is what the period-end invoice
would bill if no more usage arrived. Writes nothing.

Minimum commitments (true-ups) are left out: they depend on the whole period's usage and are settled at its end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.domain.errors import NotFound
from remit.domain.invoicing.generator import ProposedLine, UsageData, group_of_charge, has_usage, propose
from remit.domain.money import RoundingPolicy
from remit.domain.subscriptions.periods import Interval, Period, period_containing
from remit.service_layer import bill_run
from remit.service_layer.accounts import local_date, local_midnight
from remit.service_layer.unit_of_work import UnitOfWork
from remit.service_layer.views import money, plain


@dataclass(frozen=True, slots=True)
class UsageItem:
    """One usage line of the open period, as it stands: a price, and a group of its meter's dimensions."""

    line: ProposedLine
    billed_minor: int  # what threshold invoices billed of it already

    @property
    def meter(self) -> str:
        return str(self.line.usage["meter"]) if self.line.usage else ""

    @property
    def group(self) -> dict[str, str]:
        group = self.line.usage.get("group") if self.line.usage else None
        return dict(group) if isinstance(group, dict) else {}

    @property
    def quantity(self) -> Decimal:
        return self.line.slices[0].quantity if self.line.slices else Decimal(0)

    @property
    def amount_minor(self) -> int:
        return self.line.subtotal_minor - self.line.discount_minor


@dataclass(slots=True)
class SubscriptionUsage:
    subscription_id: str
    customer_id: str
    currency: str
    period: Period
    items: list[UsageItem] = field(default_factory=list)
    usage_threshold_minor: int | None = None
    ended_on: date | None = None  # the subscription's end, when it ends (its last period closes then)

    @property
    def amount_minor(self) -> int:
        return sum(i.amount_minor for i in self.items)

    @property
    def billed_minor(self) -> int:
        return sum(i.billed_minor for i in self.items)

    @property
    def unbilled_minor(self) -> int:
        return self.amount_minor - self.billed_minor


@dataclass(slots=True)
class CustomerUsage:
    customer_id: str
    currency: str
    as_of: datetime
    subscriptions: list[SubscriptionUsage] = field(default_factory=list)


def customer_times(uow: UnitOfWork, customers: Mapping[str, Mapping[Any, Any]]) -> dict[str, datetime]:
    """Each customer's 'now': its test clock's time, or the real clock's. One query for all the clocks."""
    clock_ids = {c["test_clock_id"] for c in customers.values() if c["test_clock_id"]}
    frozen: dict[str, datetime] = {}
    if clock_ids:
        tc = t.test_clocks.c
        rows = uow.conn.execute(select(tc.id, tc.frozen_at).where(tc.id.in_(clock_ids))).all()
        frozen = {clock_id: at for clock_id, at in rows}
    return {cid: frozen.get(c["test_clock_id"], uow.now) for cid, c in customers.items()}


def measure(uow: UnitOfWork, customer_ids: Sequence[str], lock: bool = False) -> tuple[Any, dict[str, CustomerUsage]]:
    """The batch (as the bill run loads it) and the live usage of these customers, in a fixed number of queries
    whatever their number: one aggregate query for all their usage (two with time-weighted meters). ``lock``: lock
    the subscriptions as the bill run does, for a caller that writes invoices from what it measured (threshold
    billing); showing live usage writes nothing and locks nothing."""
    batch = bill_run._load_batch(uow, customer_ids, lock=lock)
    nows = customer_times(uow, batch.customers)
    periods: dict[str, Period] = {}
    moments: dict[str, datetime] = {}
    for sub in batch.subs:
        tz = batch.customers[sub["customer_id"]]["timezone"]
        today = local_date(nows[sub["customer_id"]], tz)
        interval = Interval.parse(sub["interval_unit"], sub["interval_count"])
        period = periods[sub["id"]] = period_containing(sub["anchor_on"], interval, today)
        moments[sub["id"]] = local_midnight(period.end_on, tz)  # when this period's usage lines fall due
    bill_run.load_usage(uow, batch, uow.now, as_of_by_subscription=moments)
    thresholds = _thresholds(uow, [s["id"] for s in batch.subs])
    wanted = set(customer_ids)
    out = {cid: CustomerUsage(cid, c["currency"], nows[cid]) for cid, c in batch.customers.items() if cid in wanted}
    for sub in batch.subs:
        found = _subscription_usage(batch, sub, periods[sub["id"]])
        if found is not None:
            found.usage_threshold_minor = thresholds.get(sub["id"])
            out[sub["customer_id"]].subscriptions.append(found)
    return batch, out


def _subscription_usage(batch: Any, sub: Mapping[Any, Any], period: Period) -> SubscriptionUsage | None:
    terms = bill_run._terms(batch, sub)
    if terms is None:
        return None
    customer = batch.customers[sub["customer_id"]]
    prices = bill_run.customer_prices(batch, customer["id"])
    if not has_usage(terms, prices) or (sub["ended_on"] is not None and sub["ended_on"] <= period.start_on):
        return None
    policy = RoundingPolicy(batch.entities[customer["legal_entity_id"]]["rounding_policy"])
    pinned = bill_run.pinned_of(batch, sub["id"])  # an open period billed early by a threshold keeps its price
    proposed = propose(terms, prices, period.end_on, policy, batch.usage.get(customer["id"]), pinned)
    billed = batch.billed.get(sub["id"], {})
    result = SubscriptionUsage(sub["id"], customer["id"], sub["currency"], period, ended_on=sub["ended_on"])
    seen = set()
    for line in proposed:
        if line.price.metered and line.period.start_on == period.start_on:
            seen.add(line.key)
            before = billed.get(line.key)
            result.items.append(UsageItem(line, (before.subtotal_minor - before.discount_minor) if before else 0))
    # Charges billed by a threshold invoice that nothing is measured for any more (every event of the group was
    # canceled): they count nothing now, and what was billed of them is owed back at the period's end.
    for key, before in billed.items():
        price = pinned.get((before.price_id or key[1], key[2])) or prices.get(before.price_id or key[1])
        if key in seen or key[2] != period.start_on or price is None or not price.metered:
            continue
        line = ProposedLine(key[0], price, Period(key[2], before.period_end_on), charge_key=key[1])
        meter = price.meter
        line.usage = {
            "meter": meter or "",
            "group": _group_of(key[1], price.id, batch.usage.get(customer["id"]), meter),
        }
        result.items.append(UsageItem(line, before.subtotal_minor - before.discount_minor))
    return result


def _group_of(charge: str, price_id: str, usage: UsageData | None, code: str | None) -> dict[str, str]:
    """A usage charge's group, read back from its key (``generator.charge_key``); {} when the key is hashed."""
    meter = usage.meters.get(code) if usage is not None and code else None
    values = group_of_charge(price_id, charge, len(meter.group_by)) if meter is not None else ()
    if meter is None or not values:
        return {}
    return dict(zip(meter.group_by, values, strict=True))


def _thresholds(uow: UnitOfWork, subscription_ids: Sequence[str]) -> dict[str, int]:
    if not subscription_ids:
        return {}
    s = t.subscriptions.c
    rows = uow.conn.execute(
        select(s.id, s.usage_threshold_minor).where(s.id.in_(subscription_ids), s.usage_threshold_minor.is_not(None))
    ).all()
    return {sub_id: int(amount) for sub_id, amount in rows}


def live_usage(uow: UnitOfWork, customer_id: str, subscription_id: str | None = None) -> dict[str, Any]:
    """A customer's live usage (one subscription's, with ``subscription_id``), in public form: money as decimal
    strings in the customer's currency."""
    if uow.conn.execute(select(t.customers.c.id).where(t.customers.c.id == customer_id)).first() is None:
        raise NotFound("customer", customer_id, "customer_id")
    if subscription_id is not None:
        owner = uow.conn.execute(
            select(t.subscriptions.c.customer_id).where(t.subscriptions.c.id == subscription_id)
        ).scalar()
        if owner != customer_id:
            raise NotFound("subscription", subscription_id, "subscription_id")
    _batch, found = measure(uow, [customer_id])
    usage = found[customer_id]
    if subscription_id is not None:
        usage.subscriptions = [s for s in usage.subscriptions if s.subscription_id == subscription_id]
    return present(usage)


def present(usage: CustomerUsage) -> dict[str, Any]:
    cur = usage.currency
    subs = [_present_subscription(s) for s in usage.subscriptions]
    amount = sum(s.amount_minor for s in usage.subscriptions)
    billed = sum(s.billed_minor for s in usage.subscriptions)
    return {
        "object": "live_usage",
        "customer_id": usage.customer_id,
        "currency": cur,
        "as_of": plain(usage.as_of),
        "subscriptions": subs,
        "amount": money(amount, cur),
        "billed": money(billed, cur),
        "unbilled": money(amount - billed, cur),
    }


def _present_subscription(sub: SubscriptionUsage) -> dict[str, Any]:
    cur = sub.currency
    return {
        "subscription_id": sub.subscription_id,
        "period": {"start_on": plain(sub.period.start_on), "end_on": plain(sub.period.end_on)},
        "usage_threshold": money(sub.usage_threshold_minor, cur),
        "items": [_present_item(i, cur) for i in sub.items],
        "amount": money(sub.amount_minor, cur),
        "billed": money(sub.billed_minor, cur),
        "unbilled": money(sub.unbilled_minor, cur),
    }


def _present_item(item: UsageItem, cur: str) -> dict[str, Any]:
    line, usage = item.line, item.line.usage or {}
    return {
        "price_id": line.price.id,
        "price_name": line.price.name,
        "meter": item.meter,
        "group": item.group,
        "events": usage.get("events", 0),
        "quantity": plain(item.quantity),
        "included_units": plain(Decimal(str(usage.get("included_units", "0")))),
        "billable_units": plain(Decimal(str(usage.get("billable_units", "0")))),
        "subtotal": money(line.subtotal_minor, cur),
        "discount": money(line.discount_minor, cur),
        "amount": money(item.amount_minor, cur),
        "billed": money(item.billed_minor, cur),
        "unbilled": money(item.amount_minor - item.billed_minor, cur),
    }
