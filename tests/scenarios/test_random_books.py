"""A seeded random workload over many months, with an auditor that keeps its own books and checks Remit's.

A few dozen customers on one test clock take fixed, usage and hybrid plans (monthly, quarterly, annual; in
advance and in arrears; trials; calendar, anniversary and day-of-month anchors), change plan and seats, pause,
resume and cancel, send usage (late, duplicated, canceled), get coupons, wallet credits and one-off charges, and
have invoices paid, voided and credited, while the clock advances. After every advance the auditor checks:

- each invoice's totals are the sums of its lines, each line's amount its subtotal less its discount, and what is
  due never negative nor more than the total;
- invoice and credit-note numbers are gapless per series;
- running the bill run again at the same time writes nothing;
- the upcoming-invoice preview taken before an advance is the invoice that advance then writes;
- for every subscription, charge and billing period that has fallen due, what all its lines add up to is what the
  auditor's own day-by-day model of the timeline says: fixed fees prorated by days (rounded once per key), usage
  from the events it saw accepted and not canceled, on the days the price applied and the subscription was
  active (not in a trial, paused or canceled), less the prorated included units; nothing billed ahead of time;
- a percentage coupon takes exactly its share of each key it covers; nothing is discounted outside its periods;
- every wallet's ledger adds up.

Ids are drawn from the seed, so a failing seed replays exactly on the same database.
"""

from __future__ import annotations

import contextlib
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from remit.adapters.db import ids as id_module
from remit.adapters.db import tables as t
from remit.domain.errors import RemitError
from remit.domain.subscriptions.periods import Interval, Period, period_containing
from remit.service_layer import (
    alerts,
    bill_run,
    catalog,
    clocks,
    credit_notes,
    invoices,
    subscriptions,
    usage,
    usage_cancellation,
    wallets,
)
from tests import builders as b

ZONES = ("UTC", "UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata")
INTERVALS = ("month", "quarter", "year")
TIMINGS = ("in_advance", "in_arrears")


@dataclass(frozen=True)
class PriceSpec:
    id: str
    fixed: bool
    timing: str
    amount: Decimal  # a fixed price's per-unit amount (flat: per period), or a usage price's unit price
    per_unit: bool = True  # fixed: multiplied by the quantity
    included: Decimal = Decimal(0)
    currency: str = "EUR"


@dataclass
class PlanSpec:
    code: str
    interval: str
    prices: dict[str, list[PriceSpec]]  # per currency
    seats: bool  # the quantity matters


@dataclass
class Change:
    on: date
    kind: str  # start, change, pause, resume, cancel
    prices: tuple[tuple[str, Decimal], ...] = ()


@dataclass
class SubModel:
    id: str
    customer: str
    plan: PlanSpec
    interval: Interval
    anchor_on: date
    start_on: date
    trial_end_on: date | None
    changes: list[Change]
    coupon: tuple[str, Decimal, str, int | None, date] | None = None  # (code, percent, duration, periods, from)
    threshold: bool = False

    def cancel_on(self) -> date | None:
        return next((c.on for c in self.changes if c.kind == "cancel"), None)

    def state_on(self, day: date) -> tuple[bool, tuple[tuple[str, Decimal], ...]]:
        """(billable, items) on a day: the last change on or before it wins (they are kept in recorded order)."""
        if day < self.start_on:
            return False, ()
        items: tuple[tuple[str, Decimal], ...] = ()
        paused = canceled = False
        for change in sorted(self.changes, key=lambda c: c.on):  # stable: same-day changes in recorded order
            if change.on > day:
                break
            if change.kind in ("start", "change"):
                items = change.prices
            elif change.kind == "pause":
                paused = True
            elif change.kind == "resume":
                paused = False
            elif change.kind == "cancel":
                canceled = True
        in_trial = self.trial_end_on is not None and day < self.trial_end_on
        return not (paused or canceled or in_trial), items


@dataclass
class CustomerModel:
    id: str
    zone: str
    currency: str
    subs: list[SubModel] = field(default_factory=list)
    events: dict[str, tuple[datetime, int]] = field(default_factory=dict)  # accepted: txn -> (time, n)
    canceled: set[str] = field(default_factory=set)

    def today(self, at: datetime) -> date:
        return at.astimezone(ZoneInfo(self.zone)).date()

    def live(self, today: date) -> SubModel | None:
        for sub in self.subs:
            end = sub.cancel_on()
            if end is None or end > today:
                return sub
        return None


def _round(value: Fraction, half_even: bool = False) -> int:
    """To the nearest integer, halves up (away from zero) or to even, exactly."""
    sign = -1 if value < 0 else 1
    value = abs(value)
    whole = int(value)
    rest = value - whole
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and not (half_even and whole % 2 == 0)):
        whole += 1
    return sign * whole


def _minor(amount: Fraction, cur: str, half_even: bool) -> int:
    """An amount in the currency, rounded to its minor unit with the policy, exactly."""
    return _round(amount * 10 ** DECIMALS[cur], half_even)


class _SeededIds:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"ids-{seed}")

    def urandom(self, n: int) -> bytes:
        return self.rng.randbytes(n)


# Per currency: (seat, pro seat, hybrid fee, hybrid unit price, api unit price), and the currency's decimals.
AMOUNTS = {
    "EUR": ("9.99", "24.35", "49.00", "0.0125", "0.0033"),
    "JPY": ("1490", "3650", "7300", "1.5", "0.35"),
    "BHD": ("3.875", "9.125", "18.450", "0.0045", "0.0013"),
}
DECIMALS = {"EUR": 2, "JPY": 0, "BHD": 3}


def _catalog(app) -> dict[str, PlanSpec]:
    plans: dict[str, PlanSpec] = {}
    with app.uow() as uow:
        usage.create_meter(uow, "calls", "Calls", "sum", "n")
        for interval in INTERVALS:
            made: list[tuple[str, list[tuple[str, dict[str, Any]]], bool]] = []

            def specs(kinds: list[tuple[str, str | None]]) -> list[tuple[str, dict[str, Any]]]:
                out = []
                for cur, amounts in AMOUNTS.items():
                    seat, pro, fee, hyb_unit, api_unit = amounts
                    for kind, timing in kinds:
                        spec: dict[str, Any] = {
                            "seat": {"model": "per_unit", "config": {"unit_price": seat}},
                            "pro": {"model": "per_unit", "config": {"unit_price": pro}},
                            "fee": {"model": "flat", "config": {"amount": fee}},
                            "hyb": {
                                "model": "per_unit",
                                "config": {"unit_price": hyb_unit},
                                "usage": {"meter": "calls", "included_units": "1000"},
                            },
                            "api": {
                                "model": "per_unit",
                                "config": {"unit_price": api_unit},
                                "usage": {"meter": "calls"},
                            },
                        }[kind]
                        if timing:
                            spec["timing"] = timing
                        out.append((cur, spec))
                return out

            for timing in TIMINGS:
                made.append((f"seat_{interval}_{timing}", specs([("seat", timing)]), True))
                made.append((f"pro_{interval}_{timing}", specs([("pro", timing)]), True))
                made.append((f"hyb_{interval}_{timing}", specs([("fee", timing), ("hyb", None)]), False))
            made.append((f"api_{interval}", specs([("api", None)]), False))
            for code, price_specs, _seats in made:
                catalog.create_plan(
                    uow,
                    code,
                    code,
                    [
                        {"currency": cur, "interval": interval, "name": f"{code} {cur} {i:02d}", **spec}
                        for i, (cur, spec) in enumerate(price_specs)
                    ],
                )
                price_ids = _price_ids(uow, code)
                assert len(price_ids) == len(price_specs), code
                by_currency: dict[str, list[PriceSpec]] = defaultdict(list)
                for i, (cur, spec) in enumerate(price_specs):
                    pid = price_ids[f"{code} {cur} {i:02d}"]
                    cfg = spec["config"]
                    if "usage" in spec:
                        one = PriceSpec(
                            pid,
                            False,
                            "in_arrears",
                            Decimal(cfg["unit_price"]),
                            included=Decimal(spec["usage"].get("included_units", "0")),
                            currency=cur,
                        )
                    else:
                        one = PriceSpec(
                            pid,
                            True,
                            spec["timing"],
                            Decimal(cfg.get("unit_price") or cfg["amount"]),
                            per_unit=spec["model"] == "per_unit",
                            currency=cur,
                        )
                    by_currency[cur].append(one)
                plans[code] = PlanSpec(code, interval, dict(by_currency), code.startswith(("seat", "pro")))
        catalog.create_coupon(uow, "TENFOREVER", "10% forever", percent_off="10", duration="forever")
        catalog.create_coupon(uow, "QUARTER3", "25% for 3", percent_off="25", duration="repeating", duration_periods=3)
        catalog.create_coupon(uow, "HALFONCE", "50% once", percent_off="50", duration="once")
    return plans


def _price_ids(uow, code: str) -> dict[str, str]:
    pr, pv, pl = t.prices.c, t.plan_versions.c, t.plans.c
    rows = uow.conn.execute(
        select(pr.id, pr.name)
        .join(t.plan_versions, pv.id == pr.plan_version_id)
        .join(t.plans, pl.id == pv.plan_id)
        .where(pl.code == code)
    ).all()
    return {r.name: r.id for r in rows}


COUPONS = {
    "TENFOREVER": (Decimal(10), "forever", None),
    "QUARTER3": (Decimal(25), "repeating", 3),
    "HALFONCE": (Decimal(50), "once", None),
}


class Books:
    """The auditor: its own model of what should have been billed, and the checks."""

    def __init__(self, app, clock_id: str, plans: dict[str, PlanSpec]) -> None:
        self.app = app
        self.clock_id = clock_id
        self.plans = plans
        self.prices = {p.id: p for plan in plans.values() for ps in plan.prices.values() for p in ps}
        self.half_even = False
        self.customers: dict[str, CustomerModel] = {}
        self.now: datetime = datetime.min

    # --- expected -----------------------------------------------------------------------------------------
    def expected(self, cus: CustomerModel, at: datetime) -> dict[tuple[str, str, date], tuple[int, bool, Period]]:
        """(sub, price, period start) -> (subtotal, due, period) for every period up to today."""
        today = cus.today(at)
        out: dict[tuple[str, str, date], tuple[int, bool, Period]] = {}
        usage_days: dict[date, list[int]] = defaultdict(list)
        for txn, (when, n) in cus.events.items():
            if txn not in cus.canceled:
                usage_days[cus.today(when)].append(n)
        for sub in cus.subs:
            period = period_containing(sub.anchor_on, sub.interval, sub.start_on)
            end = sub.cancel_on()
            while period.start_on <= today and (end is None or period.start_on < end):
                closes = period.end_on if end is None else min(period.end_on, end)
                fixed: dict[str, Fraction] = defaultdict(Fraction)
                used: dict[str, int] = defaultdict(int)
                days_on: dict[str, int] = defaultdict(int)
                runs: list[tuple[date, date, bool, tuple[tuple[str, Decimal], ...]]] = []
                day = period.start_on
                while day < period.end_on:
                    state = sub.state_on(day)
                    if runs and runs[-1][2:] == state and runs[-1][1] == day:
                        runs[-1] = (runs[-1][0], day + timedelta(days=1), *state)
                    else:
                        runs.append((day, day + timedelta(days=1), *state))
                    day += timedelta(days=1)
                for start, stop, billable, items in runs:
                    if not billable:
                        continue
                    length = (stop - start).days
                    for price_id, qty in items:
                        price = self.prices[price_id]
                        if price.fixed:
                            due = start <= today if price.timing == "in_advance" else closes <= today
                            if due:
                                full = price.amount * (qty if price.per_unit else 1)
                                fixed[price_id] += Fraction(full) * length / period.days
                        elif closes <= today:
                            days_on[price_id] += length
                            d = start
                            while d < stop:
                                used[price_id] += sum(usage_days.get(d, ()))
                                d += timedelta(days=1)
                for price_id, amount in fixed.items():
                    out[(sub.id, price_id, period.start_on)] = (
                        _minor(amount, cus.currency, self.half_even),
                        True,
                        period,
                    )
                for price_id, length in days_on.items():
                    price = self.prices[price_id]
                    billable_units = max(Fraction(0), used[price_id] - Fraction(price.included) * length / period.days)
                    out[(sub.id, price_id, period.start_on)] = (
                        _minor(billable_units * Fraction(price.amount), cus.currency, self.half_even),
                        True,
                        period,
                    )
                period = period_containing(sub.anchor_on, sub.interval, period.end_on)
        return out

    # --- checks -------------------------------------------------------------------------------------------
    def audit(self, label: str) -> None:
        with self.app.uow() as uow:
            conn = uow.conn
            invs = {r["id"]: dict(r) for r in conn.execute(select(t.invoices)).mappings()}
            lines = [dict(r) for r in conn.execute(select(t.invoice_lines)).mappings()]
            for wallet_id in conn.execute(select(t.wallets.c.id)).scalars():
                wallets.check_ledger(uow, wallet_id)
            notes = [dict(r) for r in conn.execute(select(t.credit_notes)).mappings()]
            balances = dict(
                conn.execute(
                    select(
                        t.balance_transactions.c.customer_id, func.sum(t.balance_transactions.c.amount_minor)
                    ).group_by(t.balance_transactions.c.customer_id)
                ).all()
            )
        by_invoice: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for ln in lines:
            by_invoice[ln["invoice_id"]].append(ln)
            assert ln["amount_minor"] == ln["subtotal_minor"] - ln["discount_minor"], (label, ln)
        for inv in invs.values():
            own = by_invoice[inv["id"]]
            assert inv["subtotal_minor"] == sum(x["subtotal_minor"] for x in own), (label, inv)
            assert inv["discount_minor"] == sum(x["discount_minor"] for x in own), (label, inv)
            assert inv["total_minor"] == inv["subtotal_minor"] - inv["discount_minor"], (label, inv)
            if inv["status"] != "draft":  # a draft is settled when finalized
                assert inv["amount_due_minor"] >= 0, (label, inv)
            if inv["status"] in ("open", "paid", "uncollectible"):
                assert inv["number"], (label, inv)
                if inv["total_minor"] > 0:
                    assert (
                        inv["applied_balance_minor"] + inv["applied_credits_minor"] + inv["amount_due_minor"]
                        <= inv["total_minor"]
                    ), (label, inv)
                    assert inv["credited_minor"] <= inv["total_minor"], (label, inv)
            if inv["status"] == "paid":
                assert inv["amount_due_minor"] == 0, (label, inv)
        for cus, balance in balances.items():
            assert balance >= 0, (label, cus, balance)
        # Gapless numbering per series.
        for kind, numbers in (
            ("invoice", [i["number"] for i in invs.values() if i["number"]]),
            ("credit note", [n["number"] for n in notes]),
        ):
            series: dict[str, list[int]] = defaultdict(list)
            for number in numbers:
                prefix, value = number.rsplit("-", 1)
                series[prefix].append(int(value))
            for prefix, values in series.items():
                assert sorted(values) == list(range(1, len(values) + 1)), (label, kind, prefix, sorted(values))
        # What is billed per key is what the model says.
        billed: dict[tuple[str, str, date], list[int]] = defaultdict(lambda: [0, 0])
        kinds: dict[tuple[str, str, date], set[str]] = defaultdict(set)
        for ln in lines:
            if ln["subscription_id"] is None:
                continue
            key = (ln["subscription_id"], ln["charge_key"], ln["period_start_on"])
            billed[key][0] += ln["subtotal_minor"]
            billed[key][1] += ln["discount_minor"]
            kinds[key].add(ln["kind"])
        for cus in self.customers.values():
            expected = self.expected(cus, self.now)
            subs = {s.id: s for s in cus.subs}
            for key in sorted(set(expected) | {k for k in billed if k[0] in subs}, key=str):
                want, _due, period = expected.get(key, (0, True, None))
                got_subtotal, got_discount = billed.get(key, (0, 0))
                if key not in expected and "usage_threshold" in kinds[key]:
                    continue  # billed early, at a threshold: its period is still open
                assert got_subtotal == want, (label, cus.id, cus.zone, key, got_subtotal, want, sorted(kinds[key]))
                sub = subs[key[0]]
                pct = self._coupon_share(sub, key[2])
                base = max(want, 0)
                want_discount = 0 if pct is None else min(base, _round(Fraction(base) * pct / 100, self.half_even))
                assert got_discount == want_discount, (label, cus.id, key, got_discount, want_discount, sub.coupon)

    def _coupon_share(self, sub: SubModel, period_start: date) -> Fraction | None:
        """The percentage a coupon takes off a period, or None."""
        if sub.coupon is None:
            return None
        _code, pct, duration, periods, applied_on = sub.coupon
        starts = max(applied_on, sub.trial_end_on) if sub.trial_end_on else applied_on
        first = period_containing(sub.anchor_on, sub.interval, starts)
        if period_start < first.start_on:
            return None
        index = 0
        p = first
        while p.start_on < period_start:
            p = period_containing(sub.anchor_on, sub.interval, p.end_on)
            index += 1
        covered = (
            duration == "forever"
            or (duration == "once" and index == 0)
            or (duration == "repeating" and index < (periods or 0))
        )
        return Fraction(pct) if covered else None


def _counts(app) -> tuple[int, ...]:
    with app.uow() as uow:
        return tuple(
            uow.conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (t.invoices, t.invoice_lines, t.wallet_transactions, t.balance_transactions, t.credit_notes)
        )


def _record_change(sub: SubModel, kind: str, on: date, prices: tuple[tuple[str, Decimal], ...] = ()) -> None:
    sub.changes.append(Change(on, kind, prices))


def _plan_items(plan: PlanSpec, cur: str, qty: Decimal) -> tuple[tuple[str, Decimal], ...]:
    return tuple((p.id, qty) for p in plan.prices[cur])


ACTIONS = (
    ["change"] * 3
    + ["quantity"] * 2
    + ["pause", "resume", "cancel", "coupon", "threshold", "grant", "one_off", "void", "credit"]
    + ["usage"] * 8
    + ["cancel_usage"] * 2
    + ["pay"] * 3
    + ["finalize", "finalize", "delete_draft", "remove_line", "release"]
)


def _act(rng: random.Random, books: Books, app) -> None:
    """One random action on one random customer; refused ones change nothing (checked by the audit)."""
    cus = rng.choice(list(books.customers.values()))
    today = cus.today(books.now)
    sub = cus.live(today)
    action = "subscribe" if sub is None and rng.random() < 0.7 else rng.choice(ACTIONS)
    with app.uow() as uow:
        if action == "subscribe":
            if sub is not None:
                return
            plan = books.plans[rng.choice(sorted(books.plans))]
            anchor = rng.choice(["calendar", "anniversary", "day_of_month"])
            trial = rng.choice([None, None, 7, 14, 30])
            qty = Decimal(rng.randint(1, 5)) if plan.seats else Decimal(1)
            coupon = rng.choice([None, None, "TENFOREVER", "QUARTER3", "HALFONCE"])
            sub_id = subscriptions.create_subscription(
                uow,
                cus.id,
                plan.code,
                quantity=str(qty),
                trial_days=trial,
                anchor=anchor,
                anchor_day=rng.randint(1, 31) if anchor == "day_of_month" else None,
                coupon=coupon,
            )
            row = subscriptions.get_subscription(uow, sub_id)
            model = SubModel(
                sub_id,
                cus.id,
                plan,
                Interval.parse(plan.interval),
                row["anchor_on"],
                row["started_on"],
                row["trial_end_on"],
                [Change(row["started_on"], "start", _plan_items(plan, cus.currency, qty))],
            )
            if coupon:
                pct, duration, periods = COUPONS[coupon]
                model.coupon = (coupon, pct, duration, periods, row["started_on"])
            cus.subs.append(model)
        elif sub is None:
            return
        elif action == "change":
            others = [p for p in books.plans.values() if p.interval == sub.plan.interval and p.code != sub.plan.code]
            plan = rng.choice(others)
            qty = Decimal(rng.randint(1, 5)) if plan.seats else Decimal(1)
            when: str | date = rng.choice(["now", "now", "period_end", "date"])
            if when == "date":
                when = today + timedelta(days=rng.randint(0, 60))
            done = subscriptions.change_plan(uow, sub.id, plan.code, quantity=str(qty), when=when)
            _record_change(sub, "change", done["effective_on"], _plan_items(plan, cus.currency, qty))
            sub.plan = plan
        elif action == "quantity" and sub.plan.seats:
            qty = Decimal(rng.randint(1, 9))
            done = subscriptions.change_quantity(uow, sub.id, str(qty))
            current = sub.state_on(done["effective_on"])[1] or _plan_items(sub.plan, cus.currency, qty)
            _record_change(sub, "change", done["effective_on"], ((current[0][0], qty), *current[1:]))
        elif action == "release":
            subscriptions.release_scheduled(uow, sub.id)
            sub.changes = [c for c in sub.changes if c.on <= today]
        elif action == "pause":
            done = subscriptions.pause(uow, sub.id, rng.choice(["now", today + timedelta(days=rng.randint(0, 20))]))
            _record_change(sub, "pause", done["effective_on"])
        elif action == "resume":
            done = subscriptions.resume(uow, sub.id, rng.choice(["now", today + timedelta(days=rng.randint(0, 20))]))
            _record_change(sub, "resume", done["effective_on"])
        elif action == "cancel":
            done = subscriptions.cancel(uow, sub.id, at_period_end=rng.random() < 0.5)
            _record_change(sub, "cancel", done["effective_on"])
        elif action == "coupon" and sub.coupon is None:
            code = rng.choice(sorted(COUPONS))
            subscriptions.apply_coupon(uow, sub.id, code)
            pct, duration, periods = COUPONS[code]
            sub.coupon = (code, pct, duration, periods, today)
        elif action == "threshold" and not sub.threshold:
            amount = {"EUR": ["5.00", "20.00"], "JPY": ["800", "3000"], "BHD": ["2.000", "8.000"]}[cus.currency]
            alerts.set_usage_threshold(uow, sub.id, rng.choice(amount))
            sub.threshold = True
        elif action == "usage":
            batch = []
            for _ in range(rng.randint(1, 6)):
                if cus.events and rng.random() < 0.2:
                    txn = rng.choice(sorted(cus.events))  # a retry: counts once
                else:
                    txn = f"t{rng.getrandbits(40):x}"
                at = books.now - timedelta(minutes=rng.randint(0, 60 * 24 * 12))
                batch.append(
                    {
                        "customer_id": cus.id,
                        "code": "calls",
                        "transaction_id": txn,
                        "timestamp": at.isoformat(),
                        "properties": {"n": rng.randint(1, 900)},
                    }
                )
            result = usage.ingest(uow, batch)
            for refused in result.rejected:
                sent = batch[refused["index"]]
                age = books.now - datetime.fromisoformat(sent["timestamp"])
                # Within the grace period an event is always taken (and so is one in the open period).
                assert age > timedelta(days=7), (sent, refused)
            for accepted in result.accepted:
                sent = batch[accepted["index"]]
                assert sent["transaction_id"] not in cus.events
                cus.events[sent["transaction_id"]] = (
                    datetime.fromisoformat(sent["timestamp"]),
                    sent["properties"]["n"],
                )
        elif action == "cancel_usage" and cus.events:
            txns = rng.sample(sorted(cus.events), min(len(cus.events), rng.randint(1, 3)))
            result = usage_cancellation.cancel_events(
                uow, [{"customer_id": cus.id, "transaction_id": x} for x in txns], reason="sent by mistake"
            )
            for done in result.canceled:
                cus.canceled.add(done["transaction_id"])
        elif action in ("pay", "void", "credit"):
            status = "paid" if action == "credit" else "open"
            ids = sorted(
                uow.conn.execute(
                    select(t.invoices.c.id).where(t.invoices.c.status == status, t.invoices.c.customer_id == cus.id)
                ).scalars()
            )
            if not ids:
                return
            target = rng.choice(ids)
            if action == "pay":
                invoices.mark_paid(uow, target)
            elif action == "void":
                invoices.void(uow, target)
            else:
                inv = invoices.get_invoice(uow, target)
                room = inv["total_minor"] - inv["credited_minor"]
                if room > 0:
                    amount = rng.randint(1, room)
                    credit_notes.issue_credit_note(
                        uow, target, amount=str(Decimal(amount).scaleb(-DECIMALS[cus.currency]))
                    )
        elif action == "grant":
            found = uow.conn.execute(select(t.wallets.c.id).where(t.wallets.c.customer_id == cus.id)).scalars().first()
            wallet_id = found or wallets.create_wallet(uow, cus.id, rate=rng.choice(["1", "0.01"]))["id"]
            expires = books.now + timedelta(days=rng.randint(5, 90)) if rng.random() < 0.5 else None
            wallets.grant(uow, wallet_id, str(rng.randint(1, 3000)), expires_at=expires)
        elif action in ("finalize", "delete_draft", "remove_line"):
            drafts = sorted(
                uow.conn.execute(
                    select(t.invoices.c.id).where(t.invoices.c.status == "draft", t.invoices.c.customer_id == cus.id)
                ).scalars()
            )
            if not drafts:
                return
            target = rng.choice(drafts)
            if action == "finalize":
                invoices.finalize(uow, target)
            elif action == "delete_draft":
                invoices.delete_draft(uow, target)
            else:
                line_ids = sorted(
                    uow.conn.execute(
                        select(t.invoice_lines.c.id).where(t.invoice_lines.c.invoice_id == target)
                    ).scalars()
                )
                if line_ids:
                    invoices.remove_draft_line(uow, target, rng.choice(line_ids))
        elif action == "one_off":
            amount = {"EUR": ["7.77", "120.00"], "JPY": ["777", "12000"], "BHD": ["7.775", "120.000"]}[cus.currency]
            credit_notes.add_one_off(uow, cus.id, description="Work", unit_amount=rng.choice(amount))


def _lines_as_preview(app, customer_id: str, at: datetime) -> list[tuple[Any, ...]] | None:
    with app.uow() as uow:
        inv_ids = list(
            uow.conn.execute(
                select(t.invoices.c.id).where(
                    t.invoices.c.customer_id == customer_id,
                    t.invoices.c.created_at == at,
                    t.invoices.c.billing_reason == "subscription_cycle",
                )
            ).scalars()
        )
        if len(inv_ids) != 1:
            return None
        inv = uow.conn.execute(select(t.invoices).where(t.invoices.c.id == inv_ids[0])).mappings().one()
        rows = uow.conn.execute(select(t.invoice_lines).where(t.invoice_lines.c.invoice_id == inv_ids[0])).mappings()
        lines = sorted(
            (r["kind"], r["service_start_on"], r["service_end_on"], r["subtotal_minor"], r["discount_minor"])
            for r in rows
        )
        if inv["status"] == "draft":  # not settled yet: the preview says what finalizing it will apply
            return [*lines, ("totals", inv["total_minor"])]
        return [
            *lines,
            ("totals", inv["total_minor"], inv["applied_balance_minor"], inv["applied_credits_minor"]),
            ("due", inv["amount_due_minor"]),
        ]


def simulate(app, seed: int, customers: int = 24, steps: int = 32) -> Books:
    rng = random.Random(seed)
    half_even = seed % 2 == 1
    b.seller(app, rounding_policy="half_even" if half_even else "half_up", auto_finalize=seed % 3 != 2)
    plans = _catalog(app)
    start = b.utc(2026, 1, 10, 9)
    clock_id = b.clock(app, start)
    books = Books(app, clock_id, plans)
    books.half_even = half_even
    books.now = start
    for _ in range(customers):
        zone = rng.choice(ZONES)
        cur = rng.choice(["EUR", "EUR", "JPY", "BHD"])
        cus_id = b.customer(app, clock_id, currency=cur, timezone=zone)
        books.customers[cus_id] = CustomerModel(cus_id, zone, cur)
    for step in range(steps):
        for _ in range(rng.randint(8, 20)):
            with contextlib.suppress(RemitError):  # a refused action changes nothing (the audit says so)
                _act(rng, books, app)
        target = books.now + timedelta(days=rng.randint(1, 24), hours=rng.randint(0, 23))
        previews = {}
        for cus in rng.sample(sorted(books.customers.values(), key=lambda c: c.id), 4):
            if any(s.threshold for s in cus.subs):
                continue
            with app.uow() as uow:
                preview = clocks.preview_upcoming(uow, cus.id)
            if preview["as_of"] is not None and preview["as_of"] <= target:
                previews[cus.id] = preview
        clocks.advance(app.uow, clock_id, target)
        books.now = target
        label = f"seed {seed} step {step} at {target.isoformat()}"
        before = _counts(app)
        again = bill_run.run(app.uow, target, test_clock_id=clock_id)
        assert again.invoices_created == 0 and _counts(app) == before, label
        for cus_id, preview in previews.items():
            got = _lines_as_preview(app, cus_id, preview["as_of"])
            want = sorted(
                (
                    ln["kind"],
                    ln["service_start_on"],
                    ln["service_end_on"],
                    ln["subtotal_minor"],
                    ln["discount_minor"],
                )
                for ln in preview["lines"]
            )
            if got is not None and got[-1][0] == "totals":
                want.append(("totals", preview["total_minor"]))
            else:
                want += [
                    (
                        "totals",
                        preview["total_minor"],
                        preview["applied_balance_minor"],
                        preview["applied_credits_minor"],
                    ),
                    ("due", preview["amount_due_minor"]),
                ]
            assert got == want, (label, cus_id, preview["as_of"], got, want)
        books.audit(label)
    return books


@pytest.mark.parametrize("seed", range(3))
def test_random_books_add_up(app, seed, monkeypatch):
    monkeypatch.setattr(id_module, "_urandom", _SeededIds(seed).urandom)
    simulate(app, seed)
