"""Test clocks and the upcoming-invoice preview.

Advancing a test clock walks time forward one due moment at a time (period boundaries, trial ends, scheduled
changes, cancellations, recurring grants of credits) and runs the bill run for the clock's customers at each, in
order, exactly as the real scheduler would have done on those days. Before each bill run, usage alerts and
thresholds are evaluated for the clock's customers that received usage (``usage_monitor``), at the clock's time.

An advance holds the clock (status ``advancing``) under a lease, ``LEASE``, that it renews as it goes: at each
step and after each batch of customers it evaluates or bills. A process killed mid-advance stops renewing it; once
the lease has passed, the next advance takes the clock over and resumes from the step the dead one reached (each
step is idempotent: the bill run bills nothing twice, alerts and threshold invoices are written under unique keys).
An advance that finds its lease taken over stops (``test_clock_busy``) without moving the clock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select, update

from remit.adapters.db import tables as t
from remit.adapters.db.mappers import timeline_event_from_row
from remit.domain.billing_events import next_change_on
from remit.domain.clock import ensure_utc
from remit.domain.errors import Conflict, NotFound, ValidationError
from remit.domain.invoicing.invoice import settle
from remit.domain.subscriptions.periods import Interval, period_containing
from remit.domain.wallets import Fee, WalletScope
from remit.service_layer import bill_run, usage_monitor, usage_watch, wallets
from remit.service_layer.accounts import get_test_clock, local_date
from remit.service_layer.scoping import EVERYTHING, Visibility
from remit.service_layer.unit_of_work import UnitOfWork
from remit.service_layer.wallet_consumption import WalletCredits, line_fee

UowFactory = Callable[[], UnitOfWork]

# How long an advance holds its clock without renewing: far longer than what it does between two renewals (one
# batch of up to 200 customers evaluated or billed: well under a second, seconds on a loaded database), and short
# enough that a clock whose advancing process was killed is free again within minutes.
LEASE = timedelta(minutes=2)


class _Lease:
    """The advance's hold on its clock. Every write to the clock is conditional on still holding it (the lease's
    time is the token: a taker writes a later one), so an advance whose lease was taken over can neither move
    the clock nor set it ready under the one that took it."""

    def __init__(self, make_uow: UowFactory, clock_id: str, until: datetime) -> None:
        self.make_uow = make_uow
        self.clock_id = clock_id
        self.until = until

    def _write(self, uow: UnitOfWork, **values: Any) -> None:
        c = t.test_clocks.c
        held = uow.conn.execute(
            update(t.test_clocks).where(c.id == self.clock_id, c.claimed_until == self.until).values(**values)
        ).rowcount
        if not held:
            raise Conflict(
                "test_clock_busy",
                "The test clock was taken over by another advance (this one's lease had passed).",
                "test_clock_id",
            )

    def renew(self, *_ignored: Any) -> None:
        """Extend the lease, once half of it has gone (a batch costs no write)."""
        if self.make_uow().now < self.until - LEASE / 2:  # (a unit of work reads the clock; it connects when entered)
            return
        self.move()

    def move(self, **values: Any) -> None:
        """Renew the lease, writing ``values`` (the clock's next time) with it."""
        with self.make_uow() as uow:
            until = uow.now + LEASE
            self._write(uow, claimed_until=until, **values)
        self.until = until

    def end(self) -> None:
        with self.make_uow() as uow:
            self._write(uow, status="ready", claimed_until=None)


def _next_due(uow: UnitOfWork, customer_ids: Sequence[str], after: datetime) -> datetime | None:
    """The earliest moment after ``after`` at which one of these customers' subscriptions may have work."""
    subs = list(
        uow.conn.execute(
            select(t.subscriptions, t.customers.c.timezone)
            .join(t.customers, t.customers.c.id == t.subscriptions.c.customer_id)
            .where(t.subscriptions.c.customer_id.in_(customer_ids))
        ).mappings()
    )
    events: dict[str, list[Any]] = {}
    for row in uow.conn.execute(
        select(t.subscription_events).where(
            t.subscription_events.c.subscription_id.in_([s["id"] for s in subs]),
            t.subscription_events.c.revoked_at.is_(None),
        )
    ).mappings():
        events.setdefault(row["subscription_id"], []).append(timeline_event_from_row(row))
    timezones = {s["customer_id"]: s["timezone"] for s in subs}
    return _next_due_in(subs, events, timezones, after)


def _next_due_in(
    subs: Sequence[Mapping[Any, Any]],
    events: Mapping[str, Sequence[Any]],
    timezone: str | Mapping[str, str],
    after: datetime,
) -> datetime | None:
    """The earliest moment after ``after`` at which one of these subscriptions may have work."""
    best: datetime | None = None
    for sub in subs:
        tz_name = timezone if isinstance(timezone, str) else timezone[sub["customer_id"]]
        today = local_date(after, tz_name)
        interval = Interval.parse(sub["interval_unit"], sub["interval_count"])
        period_end = period_containing(sub["anchor_on"], interval, today).end_on
        day = next_change_on(events.get(sub["id"], []), sub["trial_end_on"], period_end, today)
        if day is None:
            continue
        moment = datetime.combine(day, time(0, 0), tzinfo=ZoneInfo(tz_name)).astimezone(ensure_utc(after).tzinfo)
        if best is None or moment < best:
            best = moment
    return best


def advance(
    make_uow: UowFactory, clock_id: str, to: datetime, on_step: Callable[[datetime, int], None] | None = None
) -> dict[str, Any]:
    """Move a test clock to ``to``, running all work that falls due on the way, in order."""
    to = ensure_utc(to)
    with make_uow() as uow:
        get_test_clock(uow, clock_id)  # one that does not exist is not found, not busy
        # Claimed in one statement: two advances that both read it ready must not both go on; one whose lease has
        # passed (its process died) is taken over. Read again once claimed, so that its time is the one the
        # advance before this one left.
        c = t.test_clocks.c
        until = uow.now + LEASE
        free = or_(c.status == "ready", c.claimed_until.is_(None), c.claimed_until < uow.now)
        claimed = uow.conn.execute(
            update(t.test_clocks).where(c.id == clock_id, free).values(status="advancing", claimed_until=until)
        ).rowcount
        if not claimed:
            raise Conflict("test_clock_busy", "The test clock is being advanced already.", "test_clock_id")
        clock = get_test_clock(uow, clock_id)
        # Advancing to where the clock stands only catches up: an advance that failed on its last step (the
        # database went away during that step's bill run) left the clock there with that step's work undone, and
        # the same request, tried again, finishes it (the bill run bills nothing twice).
        if to < clock["frozen_at"]:
            raise ValidationError("dates_out_of_order", "A test clock only moves forward.", "to")
        # Customers an advance that died had claimed for evaluation: evaluated now, not once their lease passes.
        usage_watch.release_stale(uow, clock_id)
    lease = _Lease(make_uow, clock_id, until)
    now = clock["frozen_at"]
    steps = invoices = failed = 0
    try:
        # Catch up first: work due at the clock's current time (a subscription created just now) runs before
        # time moves.
        invoices += len(usage_monitor.evaluate(make_uow, test_clock_id=clock_id, progress=lease.renew).invoice_ids)
        first = bill_run.run(make_uow, now, test_clock_id=clock_id, progress=lease.renew)
        invoices += first.invoices_created
        failed += len(first.failures)
        while now < to:
            with make_uow() as uow:
                customer_ids = list(
                    uow.conn.execute(select(t.customers.c.id).where(t.customers.c.test_clock_id == clock_id)).scalars()
                )
                due = _next_due(uow, customer_ids, now) if customer_ids else None
                granting = wallets.next_occurrence(uow, customer_ids, now) if customer_ids else None
                if granting is not None and (due is None or granting < due):
                    due = granting
            step_to = to if due is None or due > to else due
            lease.move(frozen_at=step_to)
            evaluated = usage_monitor.evaluate(make_uow, test_clock_id=clock_id, progress=lease.renew)
            invoices += len(evaluated.invoice_ids)
            result = bill_run.run(make_uow, step_to, test_clock_id=clock_id, progress=lease.renew)
            steps += 1
            invoices += result.invoices_created
            failed += len(result.failures)
            if on_step is not None:
                on_step(step_to, result.invoices_created)
            now = step_to
    finally:
        with contextlib.suppress(Conflict):  # taken over: the clock is the other advance's now
            lease.end()
    # ``customers_failed``: how many times a customer could not be billed on the way (each bill run that met it
    # counts once); the runs' failures say who and why.
    return {"id": clock_id, "frozen_at": to, "steps": steps, "invoices_created": invoices, "customers_failed": failed}


def preview_upcoming(uow: UnitOfWork, customer_id: str, vis: Visibility = EVERYTHING) -> dict[str, Any]:
    """What the customer's next invoice will be, computed exactly like the bill run; nothing is written. A
    customer outside ``vis`` is not found, like one that does not exist."""
    head = bill_run.load_head(uow, [customer_id])  # the customer, its entity and the sparse answers: one statement
    customer = head.customers.get(customer_id)
    if customer is None or not vis.sees_customer(customer):
        raise NotFound("customer", customer_id, "customer_id")
    now = get_test_clock(uow, customer["test_clock_id"])["frozen_at"] if customer["test_clock_id"] else uow.now
    moment = now
    # Nothing changes while we look ahead: load once. Nothing is written, so nothing is locked.
    batch = bill_run._load_batch(uow, [customer_id], lock=False, head=head)
    for _ in range(8):
        bill_run.load_usage(uow, batch, moment)  # usage so far, for usage billed at that moment
        drafts, _reviewed = bill_run.compute_drafts(batch, moment)
        if drafts and (drafts[0].lines or drafts[0].pending_items):
            preview = _present_draft(drafts[0], batch.balances.get(customer_id, 0), moment)
            return _with_credits(uow, preview, batch.credits, _fees(drafts[0]))
        nxt = _next_due_in(batch.subs, batch.events, customer["timezone"], moment)
        if nxt is None:
            break
        moment = nxt
    return {
        "customer_id": customer_id,
        "currency": customer["currency"],
        "lines": [],
        "subtotal_minor": 0,
        "discount_minor": 0,
        "total_minor": 0,
        "applied_balance_minor": 0,
        "applied_credits_minor": 0,
        "amount_due_minor": 0,
        "as_of": None,
    }


def _fees(draft: bill_run.InvoiceDraft) -> list[tuple[Fee, int]]:
    """The draft's lines as fees, for wallets limited to some."""
    fees = [
        line_fee({"kind": ln.kind, "price_id": ln.price_id, "details": ln.details, "amount_minor": ln.amount_minor})
        for ln in draft.lines
    ]
    return fees + [line_fee({"kind": "one_off", "amount_minor": i["amount_minor"]}) for i in draft.pending_items]


def _with_credits(
    uow: UnitOfWork, preview: dict[str, Any], any_credits: bool, fees: list[tuple[Fee, int]]
) -> dict[str, Any]:
    """What the customer's wallets would pay of it, consumed exactly as finalizing will (nothing is written),
    with the credits recurring grants will have given by then. ``any_credits``: whether the customer held any
    when the batch was loaded (if not, only the recurring grants are read)."""
    row = {**preview, "id": "upcoming", "billing_reason": "subscription_cycle"}
    credits = WalletCredits.load(uow, [row]) if any_credits else WalletCredits()
    for grant, wallet in wallets.upcoming_grants(uow, row["customer_id"], preview["as_of"]):
        credits.grants.setdefault(row["customer_id"], []).append(grant)
        credits.wallets.setdefault(
            grant.wallet_id, {"currency": wallet["currency"], "threshold": wallet["top_up_threshold"]}
        )
        credits.scopes.setdefault(grant.wallet_id, WalletScope.parse(wallet["applies_to"]))
    credited, _events = credits.apply(row, preview["amount_due_minor"], preview["as_of"], lambda: fees)
    return {**preview, "applied_credits_minor": credited, "amount_due_minor": preview["amount_due_minor"] - credited}


def _present_draft(draft: bill_run.InvoiceDraft, balance: int, at: datetime) -> dict[str, Any]:
    lines = [
        {
            "description": ln.description,
            "kind": ln.kind,
            "subscription_id": ln.subscription_id,
            "price_id": ln.price_id,
            "period_start_on": ln.period.start_on,
            "period_end_on": ln.period.end_on,
            "service_start_on": ln.service_start_on,
            "service_end_on": ln.service_end_on,
            "quantity": ln.quantity,
            "unit_price": ln.unit_price,
            "subtotal_minor": ln.subtotal_minor,
            "discount_minor": ln.discount_minor,
            "amount_minor": ln.amount_minor,
        }
        for ln in draft.lines
    ]
    lines += [
        {
            "description": i["description"],
            "kind": "one_off",
            "service_start_on": None,
            "service_end_on": None,
            "quantity": i["quantity"],
            "unit_price": i["unit_price"],
            "subtotal_minor": i["amount_minor"],
            "discount_minor": 0,
            "amount_minor": i["amount_minor"],
        }
        for i in draft.pending_items
    ]
    subtotal = sum(int(str(ln["subtotal_minor"])) for ln in lines)
    discount = sum(int(str(ln["discount_minor"])) for ln in lines)
    settlement = settle(subtotal - discount, balance)
    return {
        "customer_id": draft.customer["id"],
        "currency": draft.customer["currency"],
        "as_of": at,
        "lines": lines,
        "subtotal_minor": subtotal,
        "discount_minor": discount,
        "total_minor": subtotal - discount,
        "applied_balance_minor": settlement.applied_balance_minor,
        "amount_due_minor": settlement.amount_due_minor,
    }
