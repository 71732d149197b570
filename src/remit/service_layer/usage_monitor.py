"""Evaluating watched customers: alerts that crossed a threshold, and usage that reached a threshold amount.

Runs in batches of customers, set-wise: a batch is one transaction that locks its customers (one writer per
account, like the bill run), measures their live usage in a fixed number of queries (``live_usage.measure``: one
aggregate query for the whole batch), then

- records each alert threshold newly crossed in ``alert_triggers`` (unique per alert, subscription, period start
  and threshold; ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, so a threshold fires exactly once per period
  even when two evaluations race) and emits ``usage.alert_triggered`` for the rows actually inserted;
- invoices at once (reason ``threshold``) the usage of subscriptions whose unbilled usage in the open period
  reached their ``usage_threshold``, as ``usage_threshold`` lines of the period's usage keys, and emits
  ``usage.threshold_reached``. The invoice lines' unique key and the customer lock make a repeat a no-op.

Only customers marked dirty by ingestion (or by setting an alert or threshold) are looked at (``usage_watch``).
Who calls it: ``clocks.advance`` before each step's bill run (test clocks: at the clock's time, so in time order),
and the worker loop (``remit worker``; in ``remit serve`` on SQLite) and ``remit alerts evaluate`` for real
customers.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id
from remit.domain.invoicing.generator import threshold_diff
from remit.domain.rating.aggregations import Aggregation
from remit.domain.rating.alerts import AlertKind, LineQuantity, canonical, combine_lines, crossed, group_matches
from remit.service_layer import usage_watch, wallets
from remit.service_layer.accounts import local_date
from remit.service_layer.invoices import Event, InvoiceDraft, write_events, write_invoices
from remit.service_layer.live_usage import CustomerUsage, SubscriptionUsage, measure
from remit.service_layer.unit_of_work import UnitOfWork, isolating, retrying
from remit.service_layer.views import money, plain

UowFactory = Callable[[], UnitOfWork]
BATCH_SIZE = 200
log = logging.getLogger("remit.usage_monitor")


@dataclass
class EvaluationResult:
    customers: int = 0
    alerts_triggered: int = 0
    invoice_ids: list[str] = field(default_factory=list)


def evaluate(
    make_uow: UowFactory,
    *,
    test_clock_id: str | None = None,
    batch_size: int = BATCH_SIZE,
    max_batches: int | None = None,
    progress: Callable[[], None] | None = None,
) -> EvaluationResult:
    """Evaluate the dirty customers of the real world (or of one test clock), batch after batch. ``max_batches``
    bounds one call (the worker loop's round), so a steady stream of usage cannot keep it from its other work.
    ``progress``: called after each batch (a test clock's advance renews its lease there)."""
    result = EvaluationResult()
    engine = make_uow().engine  # (a unit of work connects only when entered)
    _remark_pending(make_uow, engine)
    batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        claim = usage_watch.claim(make_uow, test_clock_id, batch_size)
        ids = claim.ids
        if not ids:
            break
        try:
            _evaluate_isolating(make_uow, claim, result)
        except BaseException:
            try:
                usage_watch.remark(make_uow, ids)
            except Exception:  # the database is still away: put them back at the next evaluation
                log.warning("%d customers claimed for evaluation are put back later", len(ids), exc_info=True)
                with _unmarked_lock:
                    _unmarked.setdefault(engine, set()).update(ids)
            raise
        if progress is not None:
            progress()
        if len(ids) < batch_size:
            break
    return result


# Customers claimed (their mark cleared) whose evaluation failed, and whose mark could not be put back either (the
# database went away and stayed away): kept here, per database, and marked again by this process's next
# evaluation, so that a dropped connection loses no alert and no threshold invoice at once. (A process killed
# between a claim and its evaluation leaves its claim's lease, ``usage_watch.LEASE``: once it has passed, the next
# evaluation claims those customers again.)
_unmarked: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()
_unmarked_lock = threading.Lock()


def _remark_pending(make_uow: UowFactory, engine: Engine) -> None:
    with _unmarked_lock:
        ids = sorted(_unmarked.pop(engine, ()))
    if not ids:
        return
    try:
        usage_watch.remark(make_uow, ids)
    except BaseException:
        with _unmarked_lock:
            _unmarked.setdefault(engine, set()).update(ids)
        raise


def _evaluate_isolating(make_uow: UowFactory, claim: usage_watch.Claim, result: EvaluationResult) -> None:
    """Evaluate a batch in one transaction; if it fails for a reason of its customers' (usage no price can
    rate: see ``bill_run``), evaluate its halves on their own, down to the customers that fail alone
    (``unit_of_work.isolating``). Those are logged and left unwatched until their usage changes again (new
    events, a cancellation); the bill run records them. Counts are added once each part has committed."""

    def attempt(part: Sequence[str]) -> EvaluationResult:
        def once() -> EvaluationResult:
            counted = EvaluationResult()  # a failed attempt's counts go with its transaction
            with make_uow() as uow:
                _evaluate_batch(uow, part, counted)
            return counted

        return retrying(once)  # a concurrent writer that got there first: the next attempt sees what it wrote

    def failed(customer_id: str, exc: Exception) -> None:
        log.warning("usage alerts and threshold of customer %s could not be evaluated: %s", customer_id, exc)

    for done in isolating(claim.ids, attempt, failed):
        result.customers += done.customers
        result.alerts_triggered += done.alerts_triggered
        result.invoice_ids.extend(done.invoice_ids)
    # Evaluated (or set aside, or marked again when busy): the claim ends. A process killed before this leaves
    # the lease to pass, and those customers are evaluated once more: nothing is done twice.
    usage_watch.release(make_uow, claim.ids, claim.until)


def _evaluate_batch(uow: UnitOfWork, customer_ids: Sequence[str], result: EvaluationResult) -> None:
    locked = uow.lock_customers(customer_ids, skip_locked=True)
    busy = sorted(set(customer_ids) - set(locked))
    if busy:  # a bill run holds them: look again next round
        usage_watch.mark(uow, busy)
    if not locked:
        return
    alerts = _alerts(uow, locked)
    thresholds = uow.conn.execute(
        select(t.subscriptions.c.customer_id).where(
            t.subscriptions.c.customer_id.in_(locked), t.subscriptions.c.usage_threshold_minor.is_not(None)
        )
    ).scalars()
    watched = {a["customer_id"] for a in alerts} | set(thresholds)
    usage_watch.unwatch(uow, [c for c in locked if c not in watched])
    if not watched:
        return
    batch, usage = measure(uow, sorted(watched), lock=True)  # it may write threshold invoices
    result.customers += len(watched)
    events: list[Event] = []
    _fire_alerts(uow, alerts, usage, events, result)
    drafts, reached = _threshold_drafts(batch, usage)
    if drafts:  # credits that recurring grants owe by now pay threshold invoices too, as they pay cycle invoices
        as_of = usage[drafts[0].customer["id"]].as_of
        wallets.grant_recurring_due(uow, as_of, drafts[0].customer["test_clock_id"], [d.customer["id"] for d in drafts])
    invoice_ids = write_invoices(uow, drafts, batch.entities, batch.balances, None, events=events)
    result.invoice_ids.extend(invoice_ids)
    for draft, invoice_id in zip(drafts, invoice_ids, strict=True):
        for sub in reached[draft.customer["id"]]:
            events.append(_threshold_event(sub, invoice_id, usage[sub.customer_id].as_of))
    write_events(uow, events)


def _alerts(uow: UnitOfWork, customer_ids: Sequence[str]) -> list[Mapping[Any, Any]]:
    a = t.alerts.c
    return list(uow.conn.execute(select(t.alerts).where(a.customer_id.in_(customer_ids)).order_by(a.id)).mappings())


def _watched_subscriptions(alert: Mapping[Any, Any], usage: CustomerUsage) -> list[SubscriptionUsage]:
    subs = [s for s in usage.subscriptions if alert["subscription_id"] in (None, s.subscription_id)]
    if alert["kind"] == AlertKind.USAGE.value:
        return subs
    return [s for s in subs if s.currency == alert["currency"]]


def measured(alert: Mapping[Any, Any], sub: SubscriptionUsage, aggregations: Mapping[str, Aggregation]) -> Decimal:
    """What an alert compares with its thresholds for one subscription's open period: a quantity, or minor units."""
    if alert["kind"] == AlertKind.SPEND.value:
        return Decimal(sub.amount_minor)
    items = [i for i in sub.items if i.meter == alert["meter_code"] and group_matches(i.group, alert["group_values"])]
    aggregation = aggregations.get(alert["meter_code"], Aggregation.SUM)
    lines = [LineQuantity(i.group, i.line.slices[-1].end_on, i.quantity) for i in items if i.line.slices]
    return combine_lines(aggregation, lines)


def _fire_alerts(
    uow: UnitOfWork,
    alerts: Sequence[Mapping[Any, Any]],
    usage: Mapping[str, CustomerUsage],
    events: list[Event],
    result: EvaluationResult,
) -> None:
    if not alerts:
        return
    aggregations = {
        code: Aggregation(agg) for code, agg in uow.conn.execute(select(t.meters.c.code, t.meters.c.aggregation))
    }
    fired = _fired(uow, alerts, usage)
    rows: list[dict[str, Any]] = []
    data: dict[str, tuple[dict[str, Any], str, datetime]] = {}
    for alert in alerts:
        customer = usage.get(alert["customer_id"])
        if customer is None:
            continue
        for sub in _watched_subscriptions(alert, customer):
            value = measured(alert, sub, aggregations)
            done = fired.get((alert["id"], sub.subscription_id, sub.period.start_on), set())
            thresholds = [Decimal(v) for v in alert["thresholds"]]
            for threshold in crossed(value, thresholds, done):
                row = {
                    "id": new_id("atrg"),
                    "alert_id": alert["id"],
                    "subscription_id": sub.subscription_id,
                    "period_start_on": sub.period.start_on,
                    "period_end_on": sub.period.end_on,
                    "threshold": canonical(threshold),
                    "value": canonical(value),
                    "triggered_at": customer.as_of,
                }
                rows.append(row)
                data[row["id"]] = (_trigger_data(alert, sub, threshold, value), alert["customer_id"], customer.as_of)
    for trigger_id, alert_id in _insert_new(uow, rows):
        payload, customer_id, at = data[trigger_id]
        events.append(("usage.alert_triggered", "alert", alert_id, payload, customer_id, at))
        result.alerts_triggered += 1


def _fired(
    uow: UnitOfWork, alerts: Sequence[Mapping[Any, Any]], usage: Mapping[str, CustomerUsage]
) -> dict[tuple[str, str, Any], set[str]]:
    """The thresholds already fired in the open periods, per (alert, subscription, period start)."""
    starts = [s.period.start_on for u in usage.values() for s in u.subscriptions]
    if not starts:
        return {}
    tr = t.alert_triggers.c
    out: dict[tuple[str, str, Any], set[str]] = {}
    for alert_id, sub_id, start, threshold in uow.conn.execute(
        select(tr.alert_id, tr.subscription_id, tr.period_start_on, tr.threshold).where(
            tr.alert_id.in_([a["id"] for a in alerts]), tr.period_start_on >= min(starts)
        )
    ):
        out.setdefault((alert_id, sub_id, start), set()).add(threshold)
    return out


def _insert_new(uow: UnitOfWork, rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """Insert triggers; the ones that were new come back, in the order given. A key another evaluation inserted
    first is skipped (it emitted the event)."""
    if not rows:
        return []
    dialect: Any = postgresql if uow.is_postgres else sqlite
    stmt = (
        dialect.insert(t.alert_triggers)
        .on_conflict_do_nothing()
        .returning(t.alert_triggers.c.id, t.alert_triggers.c.alert_id)
    )
    inserted = {trigger_id: alert_id for trigger_id, alert_id in uow.conn.execute(stmt, list(rows)).all()}
    return [(r["id"], inserted[r["id"]]) for r in rows if r["id"] in inserted]


def _trigger_data(
    alert: Mapping[Any, Any], sub: SubscriptionUsage, threshold: Decimal, value: Decimal
) -> dict[str, Any]:
    spend = alert["kind"] == AlertKind.SPEND.value
    return {
        "alert_id": alert["id"],
        "kind": alert["kind"],
        "meter": alert["meter_code"],
        "group": alert["group_values"],
        "threshold": money(int(threshold), sub.currency) if spend else plain(threshold),
        "value": money(int(value), sub.currency) if spend else plain(value),
        "currency": sub.currency if spend else None,
        "subscription_id": sub.subscription_id,
        "period": {"start_on": plain(sub.period.start_on), "end_on": plain(sub.period.end_on)},
    }


def _threshold_drafts(
    batch: Any, usage: Mapping[str, CustomerUsage]
) -> tuple[list[InvoiceDraft], dict[str, list[SubscriptionUsage]]]:
    """One invoice per customer for the subscriptions whose unbilled usage reached their threshold. A subscription
    that has ended has no open period any more: usage that comes late for its last one is the bill run's (a late
    correction), not a threshold invoice's."""
    drafts: list[InvoiceDraft] = []
    reached: dict[str, list[SubscriptionUsage]] = {}
    for customer_id, customer_usage in usage.items():
        today = local_date(customer_usage.as_of, batch.customers[customer_id]["timezone"])
        subs = [
            s
            for s in customer_usage.subscriptions
            if s.usage_threshold_minor is not None
            and s.unbilled_minor >= s.usage_threshold_minor
            and (s.ended_on is None or s.ended_on > today)
        ]
        lines = []
        for sub in subs:
            billed = batch.billed.get(sub.subscription_id, {})
            lines.extend(threshold_diff([i.line for i in sub.items], billed))
        if not lines:
            continue
        customer = batch.customers[customer_id]
        at = customer_usage.as_of
        drafts.append(
            InvoiceDraft(customer, lines, issued_on=local_date(at, customer["timezone"]), at=at, reason="threshold")
        )
        reached[customer_id] = subs
    return drafts, reached


def _threshold_event(sub: SubscriptionUsage, invoice_id: str, at: datetime) -> Event:
    data = {
        "subscription_id": sub.subscription_id,
        "invoice_id": invoice_id,
        "usage_threshold": money(sub.usage_threshold_minor, sub.currency),
        "unbilled": money(sub.unbilled_minor, sub.currency),
        "currency": sub.currency,
        "period": {"start_on": plain(sub.period.start_on), "end_on": plain(sub.period.end_on)},
    }
    return ("usage.threshold_reached", "subscription", sub.subscription_id, data, sub.customer_id, at)
