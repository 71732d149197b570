"""The bill run: for every account with something due, write what is missing. Set-wise, in batches.

Each batch is one transaction: it claims its customers (on PostgreSQL with ``FOR UPDATE SKIP LOCKED``, so runs
started together share the work and never bill an account twice), loads everything it needs in a handful of
queries, runs the pure generator per subscription, and writes invoices, lines and events in bulk. The unique key
on (subscription, charge, period, revision) is the last line of defence: a duplicate aborts the batch, and the
batch is retried, finding nothing left to do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id
from remit.adapters.db.mappers import coupon_from_row, load_prices, timeline_event_from_row, with_overrides
from remit.domain.billing_events import TimelineEvent, status_on
from remit.domain.catalog.model import Price
from remit.domain.invoicing.generator import (
    AppliedCoupon,
    BilledTotals,
    LineKey,
    NewLine,
    SubscriptionTerms,
    diff,
    propose,
)
from remit.domain.money import RoundingPolicy, currency
from remit.domain.subscriptions.periods import Interval
from remit.service_layer.accounts import local_date
from remit.service_layer.invoices import InvoiceDraft, write_invoices

__all__ = ["InvoiceDraft", "run", "bill_customers", "compute_drafts"]
from remit.service_layer.unit_of_work import UnitOfWork

UowFactory = Callable[[], UnitOfWork]
BATCH_SIZE = 1000


@dataclass
class BillRunResult:
    id: str
    as_of: datetime
    customers_seen: int = 0
    invoices_created: int = 0
    invoice_ids: list[str] = field(default_factory=list)


def _needs_review() -> Any:
    s = t.subscriptions.c
    return or_(s.ended_on.is_(None), s.reviewed_from_on.is_(None), s.reviewed_from_on < s.ended_on)


def _candidate_customers(uow: UnitOfWork, test_clock_id: str | None, after: str, limit: int) -> list[str]:
    clock_filter = (
        (t.customers.c.test_clock_id == test_clock_id) if test_clock_id else (t.customers.c.test_clock_id.is_(None))
    )
    with_subs = select(t.subscriptions.c.customer_id.label("cid")).where(
        _needs_review(), t.subscriptions.c.customer_id > after
    )
    with_items = select(t.pending_items.c.customer_id.label("cid")).where(
        t.pending_items.c.invoice_id.is_(None), t.pending_items.c.customer_id > after
    )
    union = with_subs.union(with_items).subquery()
    query = (
        select(union.c.cid)
        .join(t.customers, t.customers.c.id == union.c.cid)
        .where(clock_filter)
        .order_by(union.c.cid)
        .limit(limit)
    )
    return list(uow.conn.execute(query).scalars())


def run(
    make_uow: UowFactory,
    as_of: datetime,
    *,
    test_clock_id: str | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> BillRunResult:
    """Bill everything due up to ``as_of`` for real customers, or for the customers of one test clock."""
    result = BillRunResult(new_id("billrun"), as_of)
    with make_uow() as uow:
        uow.insert_many(
            t.bill_runs,
            [
                {
                    "id": result.id,
                    "as_of": as_of,
                    "test_clock_id": test_clock_id,
                    "status": "running",
                    "customers_seen": 0,
                    "invoices_created": 0,
                    "started_at": uow.now,
                }
            ],
        )
    after = ""
    while True:
        with make_uow() as uow:
            batch = _candidate_customers(uow, test_clock_id, after, batch_size)
        if not batch:
            break
        after = batch[-1]
        invoice_ids = _bill_batch_with_retry(make_uow, batch, as_of, result.id)
        result.customers_seen += len(batch)
        result.invoices_created += len(invoice_ids)
        result.invoice_ids.extend(invoice_ids)
        if progress is not None:
            progress(len(batch))
    with make_uow() as uow:
        uow.conn.execute(
            update(t.bill_runs)
            .where(t.bill_runs.c.id == result.id)
            .values(
                status="done",
                customers_seen=result.customers_seen,
                invoices_created=result.invoices_created,
                finished_at=uow.now,
            )
        )
    return result


def _bill_batch_with_retry(make_uow: UowFactory, batch: Sequence[str], as_of: datetime, run_id: str) -> list[str]:
    for attempt in range(3):
        try:
            with make_uow() as uow:
                return bill_customers(uow, batch, as_of, run_id, skip_locked=True)
        except IntegrityError:
            # Another run billed some of these lines first; on retry the diff sees them and writes the rest.
            if attempt == 2:
                raise
    return []


@dataclass
class _Batch:
    customers: dict[str, Mapping[str, Any]]
    entities: dict[str, Mapping[str, Any]]
    subs: list[Mapping[str, Any]]
    events: dict[str, list[TimelineEvent]]
    coupons: dict[str, list[AppliedCoupon]]
    overrides: dict[str, list[Mapping[str, Any]]]
    billed: dict[str, dict[LineKey, BilledTotals]]
    pending: dict[str, list[Mapping[str, Any]]]
    balances: dict[str, int]
    prices: dict[str, Price]


def _load_batch(uow: UnitOfWork, customer_ids: Sequence[str]) -> _Batch:
    conn = uow.conn
    customers = {
        r["id"]: r for r in conn.execute(select(t.customers).where(t.customers.c.id.in_(customer_ids))).mappings()
    }
    entity_ids = {c["legal_entity_id"] for c in customers.values()}
    entities = {
        r["id"]: r
        for r in conn.execute(select(t.legal_entities).where(t.legal_entities.c.id.in_(entity_ids))).mappings()
    }
    subs = list(
        conn.execute(
            select(t.subscriptions)
            .where(t.subscriptions.c.customer_id.in_(customer_ids), _needs_review())
            .order_by(t.subscriptions.c.customer_id, t.subscriptions.c.id)
        ).mappings()
    )
    sub_ids = [s["id"] for s in subs]
    events: dict[str, list[TimelineEvent]] = defaultdict(list)
    price_ids: set[str] = set()
    sub_customer = t.subscriptions.alias("s")
    for row in conn.execute(
        select(t.subscription_events)
        .join(sub_customer, sub_customer.c.id == t.subscription_events.c.subscription_id)
        .where(sub_customer.c.customer_id.in_(customer_ids), t.subscription_events.c.revoked_at.is_(None))
    ).mappings():
        event = timeline_event_from_row(row)
        events[row["subscription_id"]].append(event)
        price_ids.update(i.price_id for i in event.items)
    coupons: dict[str, list[AppliedCoupon]] = defaultdict(list)
    for row in conn.execute(
        select(t.coupons, t.subscription_coupons.c.subscription_id, t.subscription_coupons.c.applied_on)
        .join(t.subscription_coupons, t.subscription_coupons.c.coupon_id == t.coupons.c.id)
        .join(sub_customer, sub_customer.c.id == t.subscription_coupons.c.subscription_id)
        .where(sub_customer.c.customer_id.in_(customer_ids))
    ).mappings():
        coupons[row["subscription_id"]].append(AppliedCoupon(coupon_from_row(row), row["applied_on"]))
    overrides: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in conn.execute(
        select(t.price_overrides).where(t.price_overrides.c.customer_id.in_(customer_ids))
    ).mappings():
        overrides[row["customer_id"]].append(row)
    pending: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in conn.execute(
        select(t.pending_items).where(
            t.pending_items.c.customer_id.in_(customer_ids), t.pending_items.c.invoice_id.is_(None)
        )
    ).mappings():
        pending[row["customer_id"]].append(row)
    balances = dict(
        conn.execute(
            select(t.balance_transactions.c.customer_id, func.sum(t.balance_transactions.c.amount_minor))
            .where(t.balance_transactions.c.customer_id.in_(customer_ids))
            .group_by(t.balance_transactions.c.customer_id)
        )
        
        .all()
    )
    return _Batch(
        customers,
        entities,
        subs,
        events,
        coupons,
        overrides,
        _billed(uow, customer_ids) if sub_ids else {},
        pending,
        {k: int(v) for k, v in balances.items()},
        load_prices(conn, price_ids),
    )


def _billed(uow: UnitOfWork, customer_ids: Sequence[str]) -> dict[str, dict[LineKey, BilledTotals]]:
    """What was already billed for periods that may still change, per subscription and key."""
    s, ln = t.subscriptions, t.invoice_lines
    query = (
        select(
            ln.c.subscription_id,
            ln.c.charge_key,
            ln.c.period_start_on,
            ln.c.period_end_on,
            ln.c.revision,
            ln.c.id,
            ln.c.subtotal_minor,
            ln.c.discount_minor,
            ln.c.quantity,
        )
        .join(s, s.c.id == ln.c.subscription_id)
        .where(
            s.c.customer_id.in_(customer_ids),
            _needs_review(),
            or_(s.c.reviewed_from_on.is_(None), ln.c.period_end_on > s.c.reviewed_from_on),
        )
    )
    acc: dict[str, dict[LineKey, list[Any]]] = defaultdict(dict)
    for row in uow.conn.execute(query):
        sub_id, charge, p_start, p_end, revision, line_id, subtotal, discount, qty = row
        key = (sub_id, charge, p_start)
        entry = acc[sub_id].get(key)
        if entry is None:
            acc[sub_id][key] = [subtotal, discount, 1, line_id if revision == 0 else None, p_end, qty, revision]
        else:
            entry[0] += subtotal
            entry[1] += discount
            entry[2] += 1
            if revision == 0:
                entry[3] = line_id
            if revision > entry[6]:
                entry[5], entry[6] = qty, revision
    return {
        sub: {k: BilledTotals(v[0], v[1], v[2], v[3] or "", v[4], v[5]) for k, v in keys.items()}
        for sub, keys in acc.items()
    }


def bill_customers(
    uow: UnitOfWork,
    customer_ids: Sequence[str],
    as_of: datetime,
    run_id: str | None,
    skip_locked: bool = False,
    write: bool = True,
) -> list[str]:
    """Generate and write the invoices due for these customers as of a time. Returns the new invoice ids."""
    locked = uow.lock_customers(customer_ids, skip_locked=skip_locked)
    if not locked:
        return []
    batch = _load_batch(uow, locked)
    drafts, reviewed = compute_drafts(batch, as_of)
    if not write:
        return []
    _mark_reviewed(uow, batch, reviewed)
    return write_invoices(uow, drafts, batch.entities, batch.balances, run_id)


def compute_drafts(batch: _Batch, as_of: datetime) -> tuple[list[InvoiceDraft], dict[str, tuple[date, str]]]:
    subs_by_customer: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for sub in batch.subs:
        subs_by_customer[sub["customer_id"]].append(sub)
    drafts: list[InvoiceDraft] = []
    reviewed: dict[str, tuple[date, str]] = {}
    for customer_id, customer in batch.customers.items():
        entity = batch.entities[customer["legal_entity_id"]]
        policy = RoundingPolicy(entity["rounding_policy"])
        as_of_on = local_date(as_of, customer["timezone"])
        prices = with_overrides(batch.prices, batch.overrides.get(customer_id, ()))
        lines: list[NewLine] = []
        for sub in subs_by_customer.get(customer_id, ()):
            events = batch.events.get(sub["id"], [])
            if not events:
                continue
            terms = SubscriptionTerms(
                id=sub["id"],
                customer_id=customer_id,
                currency=currency(sub["currency"]),
                interval=_interval(sub["interval_unit"], sub["interval_count"]),
                anchor_on=sub["anchor_on"],
                trial_end_on=sub["trial_end_on"],
                events=tuple(events),
                coupons=tuple(batch.coupons.get(sub["id"], ())),
                reviewed_from_on=sub["reviewed_from_on"],
            )
            proposed = propose(terms, prices, as_of_on, policy)
            lines.extend(diff(proposed, batch.billed.get(sub["id"], {}), as_of_on, prices))
            reviewed[sub["id"]] = (as_of_on, status_on(events, sub["trial_end_on"], as_of_on).value)
        pending = batch.pending.get(customer_id, [])
        if lines or pending:
            drafts.append(
                InvoiceDraft(
                    customer=customer,
                    lines=lines,
                    pending_items=pending,
                    issued_on=as_of_on,
                    at=as_of,
                    reason="subscription_cycle",
                )
            )
    return drafts, reviewed


_INTERVALS: dict[tuple[str, int], Interval] = {}


def _interval(unit: str, count: int) -> Interval:
    key = (unit, count)
    found = _INTERVALS.get(key)
    if found is None:
        found = _INTERVALS[key] = Interval.parse(unit, count)
    return found


def _mark_reviewed(uow: UnitOfWork, batch: _Batch, reviewed: Mapping[str, tuple[date, str]]) -> None:
    """Advance each subscription's review mark; statuses that changed (trial ended, canceled...) emit events."""
    by_day: dict[date, list[str]] = defaultdict(list)
    changed: list[dict[str, Any]] = []
    for sub in batch.subs:
        if sub["id"] not in reviewed:
            continue
        day, status = reviewed[sub["id"]]
        if sub["reviewed_from_on"] is None or day > sub["reviewed_from_on"]:
            by_day[day].append(sub["id"])
        if status != sub["status"]:
            changed.append({"b_id": sub["id"], "b_status": status})
            uow.emit(
                _STATUS_EVENTS.get(status, "subscription.updated"),
                "subscription",
                sub["id"],
                {"status": status, "previous_status": sub["status"]},
                sub["customer_id"],
            )
    for day, ids in by_day.items():
        for chunk in _chunks(ids, 5000):
            uow.conn.execute(
                update(t.subscriptions).where(t.subscriptions.c.id.in_(chunk)).values(reviewed_from_on=day)
            )
    if changed:
        from sqlalchemy import bindparam

        uow.conn.execute(
            update(t.subscriptions)
            .where(t.subscriptions.c.id == bindparam("b_id"))
            .values(status=bindparam("b_status"), updated_at=uow.now),
            changed,
        )


_STATUS_EVENTS = {
    "active": "subscription.activated",
    "canceled": "subscription.canceled",
    "paused": "subscription.paused",
}


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
