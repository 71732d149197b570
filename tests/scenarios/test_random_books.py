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

A second simulation (``simulate_priced``, below) prices what this one leaves out: meters of every aggregation with
group-by dimensions and per-group prices, graduated, volume and package models with included units, minimum
commitments and their true-ups, per-customer overrides, a second plan version and migrations to it, fixed-amount and
stacked coupons, threshold billing, wallets limited to usage and recurring grants; its auditor rates every line itself.

Ids are drawn from the seed, so a failing seed replays exactly on the same database.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from remit.adapters.db import ids as id_module
from remit.adapters.db import mappers
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
        return _cancel_on(self.changes)

    def state_on(self, day: date) -> tuple[bool, tuple[tuple[str, Decimal], ...]]:
        return _state_on(self.start_on, self.trial_end_on, self.changes, day)


def _cancel_on(changes: list[Change]) -> date | None:
    return next((c.on for c in changes if c.kind == "cancel"), None)


def _state_on(
    start_on: date, trial_end_on: date | None, changes: list[Change], day: date
) -> tuple[bool, tuple[tuple[str, Decimal], ...]]:
    """(billable, items) on a day: the last change on or before it wins (they are kept in recorded order)."""
    if day < start_on:
        return False, ()
    items: tuple[tuple[str, Decimal], ...] = ()
    paused = canceled = False
    for change in sorted(changes, key=lambda c: c.on):  # stable: same-day changes in recorded order
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
    in_trial = trial_end_on is not None and day < trial_end_on
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
        lines = _audit_invoices(self.app, label)
        self._audit_keys(label, lines)

    def _audit_keys(self, label: str, lines: list[dict[str, Any]]) -> None:
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


def _audit_invoices(app, label: str) -> list[dict[str, Any]]:
    """Checks every book must pass: totals are the sums of their lines, dues in range, numbers gapless, ledgers
    add up. Returns the invoice lines."""
    with app.uow() as uow:
        conn = uow.conn
        invs = {r["id"]: dict(r) for r in conn.execute(select(t.invoices)).mappings()}
        lines = [dict(r) for r in conn.execute(select(t.invoice_lines)).mappings()]
        for wallet_id in conn.execute(select(t.wallets.c.id)).scalars():
            wallets.check_ledger(uow, wallet_id)
        notes = [dict(r) for r in conn.execute(select(t.credit_notes)).mappings()]
        balances = dict(
            conn.execute(
                select(t.balance_transactions.c.customer_id, func.sum(t.balance_transactions.c.amount_minor)).group_by(
                    t.balance_transactions.c.customer_id
                )
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
    return lines


def _counts(app) -> tuple[int, ...]:
    with app.uow() as uow:
        return tuple(
            uow.conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (t.invoices, t.invoice_lines, t.wallet_transactions, t.balance_transactions, t.credit_notes)
        )


def _record_change(sub: SubModel | RichSub, kind: str, on: date, prices: tuple[tuple[str, Decimal], ...] = ()) -> None:
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
            if not _pay_void_or_credit(uow, rng, cus.id, cus.currency, action):
                return
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


def _lines_as_preview(app, customer_id: str, at: datetime, known: set[str]) -> list[tuple[Any, ...]] | None:
    """The invoice the advance wrote at the time (not one written there before: a clock that stood at that time
    and catches up writes a second invoice of the same time), as a preview shows it."""
    with app.uow() as uow:
        inv_ids = [
            inv_id
            for inv_id in uow.conn.execute(
                select(t.invoices.c.id).where(
                    t.invoices.c.customer_id == customer_id,
                    t.invoices.c.created_at == at,
                    t.invoices.c.billing_reason == "subscription_cycle",
                )
            ).scalars()
            if inv_id not in known
        ]
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


def _advance(rng: random.Random, books: Any, app, label: str) -> str:
    """Advance the clock a random while; check that running the bill run again writes nothing and that the previews
    taken before were the invoices written. Returns the step's label."""
    target = books.now + timedelta(days=rng.randint(1, 24), hours=rng.randint(0, 23))
    previews = {}
    for cus in rng.sample(sorted(books.customers.values(), key=lambda c: c.id), 4):
        if any(s.threshold for s in cus.subs):
            continue
        with app.uow() as uow:
            preview = clocks.preview_upcoming(uow, cus.id)
        if preview["as_of"] is not None and preview["as_of"] <= target:
            previews[cus.id] = preview
    with app.uow() as uow:
        known = set(uow.conn.execute(select(t.invoices.c.id)).scalars())
    clocks.advance(app.uow, books.clock_id, target)
    books.now = target
    label = f"{label} at {target.isoformat()}"
    before = _counts(app)
    again = bill_run.run(app.uow, target, test_clock_id=books.clock_id)
    assert again.invoices_created == 0 and _counts(app) == before, label
    for cus_id, preview in previews.items():
        got = _lines_as_preview(app, cus_id, preview["as_of"], known)
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
    return label


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
        label = _advance(rng, books, app, f"seed {seed} step {step}")
        books.audit(label)
    return books


def _seeded(monkeypatch, seed: int) -> None:
    """Ids drawn from the seed. The process's price cache is emptied first: it is keyed by id, and the same seed on
    the other database may have given an id to another price (never the case with random ids)."""
    monkeypatch.setattr(id_module, "_urandom", _SeededIds(seed).urandom)
    monkeypatch.setattr(mappers, "_PRICE_CACHE", {})


@pytest.mark.parametrize("seed", range(3))
def test_random_books_add_up(app, seed, monkeypatch):
    _seeded(monkeypatch, seed)
    simulate(app, seed)


# ==========================================================================================================
# Priced books: the same audit over what the first simulation leaves out. Meters of every aggregation (count by
# region, sum, max, unique count, latest, time-weighted sum), graduated, volume and package models, included
# units, per-group (dimension) prices, minimum commitments and their true-ups, per-customer overrides, a second
# plan version and migrations to it, fixed-amount and stacked coupons, threshold billing, wallets limited to
# usage and recurring grants. The auditor rates every line itself, from the events it saw accepted.
#
# Where the docs leave a choice open, the model follows the code's documented behaviour:
# - a subscription's coupons apply in the order they were applied (each to what the earlier ones left);
# - a fixed amount off is split over the advance fees first, then over the arrears lines (usage, true-ups,
#   arrears fees), each by largest remainder in the order the generator writes the lines (ties to the earlier);
# - overrides are set before the customer's first subscription (a negotiated rate applies to every period the
#   bill run still reviews, so setting one later re-rates an open period: not modelled).
# ==========================================================================================================

Rate = tuple[str, dict[str, Any]]  # (model, config) as the catalog takes it


def _rate_model(model: Rate, units: Fraction) -> Fraction:
    """The auditor's own rating of a quantity (exact)."""
    kind, cfg = model
    if kind == "per_unit":
        return units * Fraction(cfg["unit_price"])
    if kind == "flat":
        return Fraction(cfg["amount"])
    tiers = [
        (
            None if t_["up_to"] is None else Fraction(t_["up_to"]),
            Fraction(t_["unit_price"]),
            Fraction(t_.get("flat_fee", "0")),
        )
        for t_ in cfg.get("tiers", ())
    ]
    if kind == "graduated":
        total, lower = Fraction(0), Fraction(0)
        for up_to, unit, fee in tiers:
            if units <= lower:
                break
            top = units if up_to is None or units < up_to else up_to
            total += (top - lower) * unit + fee
            if up_to is None:
                break
            lower = up_to
        return total
    if kind == "volume":
        if units == 0:
            return Fraction(0)
        up_to, unit, fee = next(t_ for t_ in tiers if t_[0] is None or units <= t_[0])
        return units * unit + fee
    if kind == "package":
        billable = units - min(units, Fraction(cfg.get("free_units", "0")))
        if billable <= 0:
            return Fraction(0)
        size = Fraction(cfg["package_size"])
        packages = -(-billable // size)
        return packages * Fraction(cfg["package_price"])
    raise AssertionError(kind)


def _allocate(total: int, weights: Sequence[int | Fraction]) -> list[int]:
    """Largest remainder, ties to the earlier part (as concepts.md says splits are made)."""
    if not weights:
        return []
    if sum(weights) == 0:
        weights = [1] * len(weights)
    exact = [Fraction(total * w, sum(weights)) for w in weights]
    parts = [int(e) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


@dataclass(frozen=True)
class MeterSpec:
    code: str
    aggregation: str
    field: str | None
    group_by: tuple[str, ...] = ()

    def props(self, rng: random.Random) -> dict[str, Any]:
        return {
            "req": lambda: {"region": rng.choice(["eu", "us", "ap"])},
            "tok": lambda: {"n": rng.randint(1, 2500)},
            "peak": lambda: {"v": rng.randint(1, 60)},
            "users": lambda: {"u": f"u{rng.randint(1, 7)}"},
            "seats": lambda: {"v": rng.randint(1, 12)},
            "gb": lambda: {"v": rng.randint(-4, 25)},
        }[self.code]()

    def value(self, props: dict[str, Any]) -> Fraction:
        return Fraction(1) if self.field is None else Fraction(props[self.field])

    def group(self, props: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(props[d]) for d in self.group_by)


METERS = {
    m.code: m
    for m in (
        MeterSpec("req", "count", None, ("region",)),
        MeterSpec("tok", "sum", "n"),
        MeterSpec("peak", "max", "v"),
        MeterSpec("users", "unique_count", "u"),
        MeterSpec("seats", "latest", "v"),
        MeterSpec("gb", "weighted_sum", "v"),
    )
}


@dataclass(frozen=True)
class RichPrice:
    id: str
    kind: str  # fee, usage, minimum
    timing: str
    currency: str
    model: Rate
    meter: str | None = None
    included: Fraction = Fraction(0)
    dimensions: tuple[tuple[str, Rate], ...] = ()


def _scaled(cfg: Any, factor: int) -> Any:
    """A config in another currency: every amount times the factor (JPY: 100 per EUR)."""
    if isinstance(cfg, dict):
        return {k: (v if k in ("up_to", "package_size", "free_units") else _scaled(v, factor)) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [_scaled(v, factor) for v in cfg]
    if isinstance(cfg, str):
        return format((Decimal(cfg) * factor).normalize(), "f")
    return cfg


# Per plan and version, in EUR: (name, model, config, usage terms or None, timing).
RICH_PLANS: dict[tuple[str, int], list[tuple[str, str, dict[str, Any], dict[str, Any] | None, str | None]]] = {
    ("alpha", 1): [
        ("fee", "flat", {"amount": "20.00"}, None, "in_advance"),
        (
            "req",
            "per_unit",
            {"unit_price": "0.004"},
            {
                "meter": "req",
                "included_units": "2",
                "dimensions": {
                    "eu": {
                        "model": "graduated",
                        "config": {
                            "tiers": [
                                {"up_to": "3", "unit_price": "0.01"},
                                {"up_to": None, "unit_price": "0.005", "flat_fee": "0.50"},
                            ]
                        },
                    }
                },
            },
            None,
        ),
        (
            "tok",
            "graduated",
            {
                "tiers": [
                    {"up_to": "500", "unit_price": "0"},
                    {"up_to": "1500", "unit_price": "0.002"},
                    {"up_to": None, "unit_price": "0.001", "flat_fee": "1.00"},
                ]
            },
            {"meter": "tok"},
            None,
        ),
        ("users", "per_unit", {"unit_price": "1.25"}, {"meter": "users", "included_units": "1"}, None),
        ("minimum", "flat", {"amount": "15.00"}, {"minimum": True}, None),
    ],
    ("alpha", 2): [
        ("fee", "flat", {"amount": "22.00"}, None, "in_advance"),
        (
            "req",
            "per_unit",
            {"unit_price": "0.005"},
            {
                "meter": "req",
                "included_units": "1",
                "dimensions": {
                    "us": {
                        "model": "volume",
                        "config": {
                            "tiers": [
                                {"up_to": "2", "unit_price": "0.02"},
                                {"up_to": None, "unit_price": "0.01", "flat_fee": "0.30"},
                            ]
                        },
                    }
                },
            },
            None,
        ),
        (
            "tok",
            "package",
            {"package_size": "500", "package_price": "0.75", "free_units": "200"},
            {"meter": "tok", "included_units": "100"},
            None,
        ),
        ("users", "per_unit", {"unit_price": "1.50"}, {"meter": "users"}, None),
        ("minimum", "flat", {"amount": "18.00"}, {"minimum": True}, None),
    ],
    ("beta", 1): [
        ("fee", "flat", {"amount": "35.00"}, None, "in_arrears"),
        (
            "tok",
            "volume",
            {
                "tiers": [
                    {"up_to": "1500", "unit_price": "0.003"},
                    {"up_to": "4000", "unit_price": "0.002", "flat_fee": "2.00"},
                    {"up_to": None, "unit_price": "0.001", "flat_fee": "5.00"},
                ]
            },
            {"meter": "tok", "included_units": "300"},
            None,
        ),
        (
            "peak",
            "package",
            {"package_size": "10", "package_price": "2.00", "free_units": "5"},
            {"meter": "peak"},
            None,
        ),
        ("seats", "per_unit", {"unit_price": "3.00"}, {"meter": "seats", "included_units": "1"}, None),
        ("gb", "per_unit", {"unit_price": "0.10"}, {"meter": "gb", "included_units": "10"}, None),
        ("minimum", "flat", {"amount": "25.00"}, {"minimum": True}, None),
    ],
    ("gamma", 1): [
        ("fee", "flat", {"amount": "60.00"}, None, "in_advance"),
        ("req", "per_unit", {"unit_price": "0.003"}, {"meter": "req"}, None),
        (
            "gb",
            "graduated",
            {"tiers": [{"up_to": "50", "unit_price": "0.05"}, {"up_to": None, "unit_price": "0.02"}]},
            {"meter": "gb"},
            None,
        ),
        ("minimum", "flat", {"amount": "40.00"}, {"minimum": True}, None),
    ],
}
RICH_INTERVALS = {"alpha": "month", "beta": "month", "gamma": "quarter"}
RICH_FACTORS = {"EUR": 1, "JPY": 100}
# Coupons: code -> (percent or None, amount in EUR or None, duration, periods). Fixed amounts exist per currency.
RICH_COUPONS: dict[str, tuple[str | None, str | None, str, int | None]] = {
    "P10F": ("10", None, "forever", None),
    "P25R2": ("25", None, "repeating", 2),
    "P50O": ("50", None, "once", None),
    "A5F": (None, "5.00", "forever", None),
    "A12R3": (None, "12.00", "repeating", 3),
    "A30O": (None, "30.00", "once", None),
}
# Negotiated models a customer may get (EUR; JPY scaled): per plan and price name.
RICH_OVERRIDES: dict[tuple[str, str], Rate] = {
    ("alpha", "tok"): ("per_unit", {"unit_price": "0.0015"}),
    ("alpha", "req"): ("package", {"package_size": "25", "package_price": "0.40"}),
    ("beta", "peak"): ("per_unit", {"unit_price": "0.30"}),
    ("beta", "gb"): (
        "graduated",
        {"tiers": [{"up_to": "20", "unit_price": "0"}, {"up_to": None, "unit_price": "0.2"}]},
    ),
}


def _coupon_code(code: str, cur: str) -> str:
    return code if RICH_COUPONS[code][1] is None else f"{code}_{cur}"


@dataclass
class RichCoupon:
    code: str
    percent: Fraction | None
    amount_minor: int | None
    duration: str
    periods: int | None
    applied_on: date


@dataclass
class RichSub:
    id: str
    customer: str
    plan: str
    version: int
    interval: Interval
    anchor_on: date
    start_on: date
    trial_end_on: date | None
    changes: list[Change]
    coupons: list[RichCoupon] = field(default_factory=list)
    threshold: bool = False

    def cancel_on(self) -> date | None:
        return _cancel_on(self.changes)

    def state_on(self, day: date) -> tuple[bool, tuple[tuple[str, Decimal], ...]]:
        return _state_on(self.start_on, self.trial_end_on, self.changes, day)


@dataclass
class RichCustomer:
    id: str
    zone: str
    currency: str
    subs: list[RichSub] = field(default_factory=list)
    events: dict[str, tuple[datetime, str, dict[str, Any]]] = field(default_factory=dict)  # txn -> (at, meter, props)
    canceled: set[str] = field(default_factory=set)
    overrides: dict[str, Rate] = field(default_factory=dict)  # price id -> model
    schedules: dict[str, date] = field(default_factory=dict)  # recurring grant id -> first day (monthly)

    def today(self, at: datetime) -> date:
        return at.astimezone(ZoneInfo(self.zone)).date()

    def live(self, today: date) -> RichSub | None:
        for sub in self.subs:
            end = sub.cancel_on()
            if end is None or end > today:
                return sub
        return None

    def midnight(self, day: date) -> datetime:
        return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(self.zone)).astimezone(ZoneInfo("UTC"))


def _seconds_of(delta: timedelta) -> Fraction:
    return Fraction(delta.days * 86_400 + delta.seconds) + Fraction(delta.microseconds, 1_000_000)


def _decimal_of(value: Fraction) -> Fraction:
    """A fraction as Remit writes a measured quantity (exactly, or to 28 significant digits), back as a fraction."""
    from remit.domain.rating.aggregations import decimal_of

    return Fraction(decimal_of(value))


class RichBooks:
    """The auditor of the priced simulation."""

    def __init__(self, app, clock_id: str) -> None:
        self.app = app
        self.clock_id = clock_id
        self.prices: dict[str, RichPrice] = {}
        self.plan_items: dict[tuple[str, int, str], list[str]] = {}  # (plan, version, currency) -> price ids
        self.versions: dict[str, int] = {}  # plan -> latest version
        self.coupon_terms: dict[str, RichCoupon] = {}
        self.half_even = False
        self.customers: dict[str, RichCustomer] = {}
        self.now: datetime = datetime.min
        self.tried: Counter[str] = Counter()
        self.done: Counter[str] = Counter()  # not refused (some do nothing: no draft to finalize, say)

    # --- the catalog --------------------------------------------------------------------------------------
    def add_version(self, uow, plan: str, version: int) -> None:
        specs = []
        for cur, factor in RICH_FACTORS.items():
            for name, model, cfg, usage_terms, timing in RICH_PLANS[(plan, version)]:
                spec: dict[str, Any] = {
                    "currency": cur,
                    "interval": RICH_INTERVALS[plan],
                    "name": f"{plan} v{version} {name} {cur}",
                    "model": model,
                    "config": _scaled(cfg, factor),
                }
                if usage_terms is not None:
                    terms = dict(usage_terms)
                    if "dimensions" in terms:
                        terms["dimensions"] = {
                            g: {"model": d["model"], "config": _scaled(d["config"], factor)}
                            for g, d in terms["dimensions"].items()
                        }
                    spec["usage"] = terms
                if timing:
                    spec["timing"] = timing
                specs.append(spec)
        if version == 1:
            catalog.create_plan(uow, plan, plan, specs)
        else:
            catalog.publish_plan_version(uow, plan, specs)
        ids = _price_ids(uow, plan)
        for cur, factor in RICH_FACTORS.items():
            made = []
            for name, model, cfg, usage_terms, timing in RICH_PLANS[(plan, version)]:
                pid = ids[f"{plan} v{version} {name} {cur}"]
                terms = usage_terms or {}
                kind = "minimum" if terms.get("minimum") else "usage" if terms else "fee"
                self.prices[pid] = RichPrice(
                    pid,
                    kind,
                    timing or "in_arrears",
                    cur,
                    (model, _scaled(cfg, factor)),
                    terms.get("meter"),
                    Fraction(terms.get("included_units", "0")),
                    tuple(
                        (g, (d["model"], _scaled(d["config"], factor))) for g, d in terms.get("dimensions", {}).items()
                    ),
                )
                made.append(pid)
            self.plan_items[(plan, version, cur)] = made
        self.versions[plan] = version

    def price_named(self, plan: str, version: int, cur: str, name: str) -> str:
        names = [n for n, *_ in RICH_PLANS[(plan, version)]]
        return self.plan_items[(plan, version, cur)][names.index(name)]

    # --- expected -----------------------------------------------------------------------------------------
    def _window(self, cus: RichCustomer, meter: MeterSpec, a: date, b: date) -> dict[tuple[str, ...], Fraction]:
        """One window's quantity per group, as the meter aggregates it."""
        start, end = cus.midnight(a), cus.midnight(b)
        events = sorted(
            (when, txn, props)
            for txn, (when, code, props) in cus.events.items()
            if code == meter.code and txn not in cus.canceled
        )
        inside: dict[tuple[str, ...], list[tuple[datetime, str, dict[str, Any]]]] = defaultdict(list)
        before: dict[tuple[str, ...], Fraction] = defaultdict(Fraction)
        for when, txn, props in events:
            if start <= when < end:
                inside[meter.group(props)].append((when, txn, props))
            elif when < start and meter.aggregation == "weighted_sum":
                before[meter.group(props)] += meter.value(props)
        out: dict[tuple[str, ...], Fraction] = {}
        if meter.aggregation == "weighted_sum":
            total = _seconds_of(end - start)
            for group in set(inside) | set(before):
                level, at, area = before.get(group, Fraction(0)), start, Fraction(0)
                for when, _txn, props in inside.get(group, ()):
                    area += level * _seconds_of(when - at)
                    level += meter.value(props)
                    at = when
                area += level * _seconds_of(end - at)
                out[group] = area / total
            return out
        for group, evs in inside.items():
            if meter.aggregation == "count":
                out[group] = Fraction(len(evs))
            elif meter.aggregation == "unique_count":
                out[group] = Fraction(len({p[meter.field] for _w, _t, p in evs}))
            elif meter.aggregation == "latest":
                out[group] = meter.value(evs[-1][2])  # the last by (time, transaction id)
            else:
                values = [meter.value(p) for _w, _t, p in evs]
                out[group] = sum(values, Fraction(0)) if meter.aggregation == "sum" else max(values)
        return out

    def _measure(
        self, cus: RichCustomer, meter: MeterSpec, windows: list[tuple[date, date]], period: Period
    ) -> dict[tuple[str, ...], Fraction]:
        per_window = [self._window(cus, meter, a, b) for a, b in windows]
        out: dict[tuple[str, ...], Fraction] = {}
        if meter.aggregation == "weighted_sum":
            for (a, b), groups in zip(windows, per_window, strict=True):
                share = Fraction(period.overlap_days(a, b), period.days)
                for group, average in groups.items():
                    out[group] = out.get(group, Fraction(0)) + average * share
            return {g: _decimal_of(q) for g, q in out.items()}
        for groups in per_window:
            for group, q in groups.items():
                if group not in out:
                    out[group] = q
                elif meter.aggregation == "max":
                    out[group] = max(out[group], q)
                elif meter.aggregation == "latest":
                    out[group] = q
                else:
                    out[group] += q
        return out

    def expected(self, cus: RichCustomer, at: datetime) -> dict[tuple[str, str, date], tuple[int, int]]:
        """(sub, charge key, period start) -> (subtotal, discount) for every line due up to today."""
        today = cus.today(at)
        out: dict[tuple[str, str, date], tuple[int, int]] = {}
        for sub in cus.subs:
            period = period_containing(sub.anchor_on, sub.interval, sub.start_on)
            end = sub.cancel_on()
            while period.start_on <= today and (end is None or period.start_on < end):
                closes = period.end_on if end is None else min(period.end_on, end)
                lines = self._period_lines(cus, sub, period, today, closes <= today)
                self._discounts(cus, sub, period, lines)
                for key, subtotal, discount, _price in lines:
                    out[(sub.id, key, period.start_on)] = (subtotal, discount)
                period = period_containing(sub.anchor_on, sub.interval, period.end_on)
        return out

    def _period_lines(
        self, cus: RichCustomer, sub: RichSub, period: Period, today: date, closed: bool
    ) -> list[list[Any]]:
        """The period's due lines in the order the generator proposes them: [charge key, subtotal, discount,
        price]. Fixed fees first, then usage lines (a price's groups sorted), then true-ups."""
        fee_order: list[str] = []
        usage_order: list[str] = []
        fees: dict[str, Fraction] = defaultdict(Fraction)
        days: dict[str, list[date]] = defaultdict(list)
        runs: list[tuple[date, date, bool, tuple[tuple[str, Decimal], ...]]] = []  # as the timeline's slices
        day = period.start_on
        while day < period.end_on:
            state = sub.state_on(day)
            if runs and runs[-1][2:] == state:
                runs[-1] = (runs[-1][0], day + timedelta(days=1), *state)
            else:
                runs.append((day, day + timedelta(days=1), *state))
            day += timedelta(days=1)
        for start, stop, billable, items in runs:
            if not billable:
                continue
            for price_id, qty in items:
                price = self.prices[price_id]
                if price.kind == "fee":
                    if start <= today if price.timing == "in_advance" else closed:
                        if price_id not in fee_order:
                            fee_order.append(price_id)
                        fees[price_id] += _rate_model(price.model, Fraction(qty)) * (stop - start).days / period.days
                elif closed:
                    if price_id not in usage_order:
                        usage_order.append(price_id)
                    days[price_id].extend(start + timedelta(days=i) for i in range((stop - start).days))
        lines: list[list[Any]] = [
            [pid, _minor(fees[pid], cus.currency, self.half_even), 0, self.prices[pid]] for pid in fee_order
        ]
        usage_lines: list[list[Any]] = []
        minimums: list[tuple[RichPrice, Fraction]] = []  # each commitment prorated, exactly
        for pid in usage_order:
            price = self.prices[pid]
            share = Fraction(len(days[pid]), period.days)
            if price.kind == "minimum":
                minimums.append((price, _rate_model(price.model, Fraction(1)) * share))
                continue
            assert price.meter is not None
            windows: list[tuple[date, date]] = []
            for d in days[pid]:
                if windows and windows[-1][1] == d:
                    windows[-1] = (windows[-1][0], d + timedelta(days=1))
                else:
                    windows.append((d, d + timedelta(days=1)))
            meter = METERS[price.meter]
            included = price.included * share
            for group, quantity in sorted(self._measure(cus, meter, windows, period).items()):
                model = dict(price.dimensions).get("|".join(group)) or cus.overrides.get(pid) or price.model
                rated = _rate_model(model, max(Fraction(0), quantity - included))
                key = pid if not group else f"{pid}|{'|'.join(group)}"
                usage_lines.append([key, _minor(rated, cus.currency, self.half_even), 0, price])
        used = sum(line[1] for line in usage_lines)
        # The period's commitment is rounded once and shared between its commitments by largest remainder.
        exact = [m for _p, m in minimums]
        committed = _allocate(_minor(sum(exact, Fraction(0)), cus.currency, self.half_even), exact)
        shortfall = max(0, sum(committed) - used)
        shares = _allocate(shortfall, committed) if shortfall else [0] * len(minimums)
        true_ups = [[p.id, s, 0, p] for (p, _m), s in zip(minimums, shares, strict=True)]
        return lines + usage_lines + true_ups

    def _discounts(self, cus: RichCustomer, sub: RichSub, period: Period, lines: list[list[Any]]) -> None:
        for coupon in sub.coupons:
            if not self._covers(sub, coupon, period.start_on):
                continue
            remaining = [max(0, ln[1] - ln[2]) for ln in lines]
            if coupon.percent is not None:
                for ln, base in zip(lines, remaining, strict=True):
                    raw = Fraction(base, 10 ** DECIMALS[cus.currency]) * coupon.percent / 100
                    ln[2] += min(base, _minor(raw, cus.currency, self.half_even))
                continue
            assert coupon.amount_minor is not None
            cap = min(coupon.amount_minor, sum(remaining))
            for advance in (True, False):
                group = [i for i, ln in enumerate(lines) if (ln[3].timing == "in_advance") is advance]
                take = min(cap, sum(remaining[i] for i in group))
                if take <= 0:
                    continue
                for i, part in zip(group, _allocate(take, [remaining[i] for i in group]), strict=True):
                    lines[i][2] += part
                cap -= take

    def _covers(self, sub: RichSub, coupon: RichCoupon, period_start: date) -> bool:
        starts = max(coupon.applied_on, sub.trial_end_on) if sub.trial_end_on else coupon.applied_on
        first = period_containing(sub.anchor_on, sub.interval, starts)
        if period_start < first.start_on:
            return False
        index, p = 0, first
        while p.start_on < period_start:
            p = period_containing(sub.anchor_on, sub.interval, p.end_on)
            index += 1
        return (
            coupon.duration == "forever"
            or (coupon.duration == "once" and index == 0)
            or (coupon.duration == "repeating" and index < (coupon.periods or 0))
        )

    # --- checks -------------------------------------------------------------------------------------------
    def audit(self, label: str) -> None:
        lines = _audit_invoices(self.app, label)
        billed: dict[tuple[str, str, date], list[int]] = defaultdict(lambda: [0, 0])
        kinds: dict[tuple[str, str, date], set[str]] = defaultdict(set)
        for ln in lines:
            if ln["subscription_id"] is not None:
                key = (ln["subscription_id"], ln["charge_key"], ln["period_start_on"])
                billed[key][0] += ln["subtotal_minor"]
                billed[key][1] += ln["discount_minor"]
                kinds[key].add(ln["kind"])
        for cus in self.customers.values():
            expected = self.expected(cus, self.now)
            subs = {s.id: s for s in cus.subs}
            for key in sorted(set(expected) | {k for k in billed if k[0] in subs}, key=str):
                if key not in expected and "usage_threshold" in kinds[key]:
                    continue  # billed early, at a threshold: its period is still open
                got = tuple(billed.get(key, (0, 0)))
                want = expected.get(key, (0, 0))
                assert got == want, (label, cus.id, cus.zone, key, got, want, sorted(kinds[key]), subs[key[0]])
        self._audit_wallets(label, lines)

    def _audit_wallets(self, label: str, lines: list[dict[str, Any]]) -> None:
        with self.app.uow() as uow:
            conn = uow.conn
            limited = {
                r.id: r.applies_to for r in conn.execute(select(t.wallets.c.id, t.wallets.c.applies_to)) if r.applies_to
            }
            consumed: dict[tuple[str, str], int] = defaultdict(int)
            for r in conn.execute(
                select(
                    t.wallet_transactions.c.wallet_id,
                    t.wallet_transactions.c.invoice_id,
                    t.wallet_transactions.c.amount_minor,
                ).where(t.wallet_transactions.c.kind == "consumption")
            ):
                consumed[(r.wallet_id, r.invoice_id)] -= r.amount_minor
            made: dict[str, int] = defaultdict(int)
            for cause in conn.execute(
                select(t.wallet_grants.c.cause_key).where(t.wallet_grants.c.cause_key.like("recurring:%"))
            ).scalars():
                made[cause.split(":")[1]] += 1  # recurring:<schedule>:<n>
        # A wallet limited to usage pays at most the invoice's usage fees (each price's lines netted).
        usage_fees: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for ln in lines:
            price = self.prices.get(ln["price_id"] or "")
            if price is not None and price.kind == "usage":
                usage_fees[ln["invoice_id"]][price.id] += ln["amount_minor"]
        for (wallet_id, invoice_id), amount in consumed.items():
            if limited.get(wallet_id) == {"fee_types": ["usage"]}:
                room = sum(max(0, v) for v in usage_fees[invoice_id].values())
                assert amount <= room, (label, wallet_id, invoice_id, amount, room)
        # Each recurring grant has made one grant per occurrence up to the customer's today.
        for cus in self.customers.values():
            today = cus.today(self.now)
            for schedule, first in cus.schedules.items():
                due, n = 0, 0
                while True:
                    day = _add_months(first, n)
                    if day > today:
                        break
                    due, n = due + 1, n + 1
                assert made[schedule] == due, (label, cus.id, schedule, first, today, made[schedule], due)


def _add_months(day: date, months: int) -> date:
    import calendar

    y, m = divmod(day.month - 1 + months, 12)
    year, month = day.year + y, m + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


RICH_ACTIONS = (
    ["change"] * 3
    + ["pause", "resume", "cancel", "coupon", "coupon", "threshold", "wallet", "recurring", "publish", "migrate"]
    + ["usage"] * 14
    + ["cancel_usage"] * 2
    + ["pay"] * 3
    + ["void", "credit", "finalize", "finalize", "release"]
)


def _items_recorded(uow, sub_id: str) -> tuple[tuple[str, Decimal], ...]:
    """The items of the subscription's latest event, in the order Remit keeps them."""
    last = subscriptions.get_subscription(uow, sub_id)["events"][-1]
    return tuple((i["price_id"], Decimal(i["quantity"])) for i in last["items"])


def _rich_items(
    books: RichBooks, uow, sub_id: str, plan: str, version: int, cur: str
) -> tuple[tuple[str, Decimal], ...]:
    recorded = _items_recorded(uow, sub_id)
    assert sorted(recorded) == sorted((p, Decimal(1)) for p in books.plan_items[(plan, version, cur)]), recorded
    return recorded


def _rich_act(rng: random.Random, books: RichBooks, app) -> None:
    """One random action on one random customer; refused ones change nothing (checked by the audit)."""
    cus = rng.choice(list(books.customers.values()))
    today = cus.today(books.now)
    sub = cus.live(today)
    action = "subscribe" if sub is None and rng.random() < 0.7 else rng.choice(RICH_ACTIONS)
    books.tried[action] += 1
    with app.uow() as uow:
        if action == "subscribe":
            if sub is not None:
                return
            plan = rng.choice(sorted(RICH_INTERVALS))
            anchor = rng.choice(["calendar", "anniversary", "day_of_month"])
            coupon = rng.choice([None, None, *sorted(RICH_COUPONS)])
            sub_id = subscriptions.create_subscription(
                uow,
                cus.id,
                plan,
                trial_days=rng.choice([None, None, 7, 30]),
                anchor=anchor,
                anchor_day=rng.randint(1, 31) if anchor == "day_of_month" else None,
                coupon=_coupon_code(coupon, cus.currency) if coupon else None,
            )
            row = subscriptions.get_subscription(uow, sub_id)
            version = books.versions[plan]
            model = RichSub(
                sub_id,
                cus.id,
                plan,
                version,
                Interval.parse(RICH_INTERVALS[plan]),
                row["anchor_on"],
                row["started_on"],
                row["trial_end_on"],
                [Change(row["started_on"], "start", _rich_items(books, uow, sub_id, plan, version, cus.currency))],
            )
            if coupon:
                model.coupons.append(replace_coupon(books, coupon, cus.currency, row["started_on"]))
            cus.subs.append(model)
        elif sub is None:
            return
        elif action == "change":
            plan = rng.choice([p for p in RICH_INTERVALS if RICH_INTERVALS[p] == RICH_INTERVALS[sub.plan]])
            when: str | date = rng.choice(["now", "now", "period_end", "date"])
            if when == "date":
                when = today + timedelta(days=rng.randint(0, 60))
            done = subscriptions.change_plan(uow, sub.id, plan, when=when)
            version = books.versions[plan]
            _record_change(
                sub, "change", done["effective_on"], _rich_items(books, uow, sub.id, plan, version, cus.currency)
            )
            sub.plan, sub.version = plan, version
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
        elif action == "coupon" and len(sub.coupons) < 4:
            code = rng.choice(sorted(RICH_COUPONS))
            subscriptions.apply_coupon(uow, sub.id, _coupon_code(code, cus.currency))
            sub.coupons.append(replace_coupon(books, code, cus.currency, today))
        elif action == "threshold" and not sub.threshold:
            amount = rng.choice(["3.00", "12.00"])
            alerts.set_usage_threshold(uow, sub.id, format(Decimal(amount) * RICH_FACTORS[cus.currency], "f"))
            sub.threshold = True
        elif action == "publish" and books.versions["alpha"] == 1:
            books.add_version(uow, "alpha", 2)
        elif action == "migrate" and books.versions["alpha"] == 2:
            when = rng.choice(["now", "period_end"])
            moving = []
            for other in books.customers.values():
                day = other.today(books.now)
                for s in other.subs:
                    if s.cancel_on() is not None:
                        continue
                    start = max(day, s.start_on)
                    on = start if when == "now" else period_containing(s.anchor_on, s.interval, start).end_on
                    items = s.state_on(on)[1] if on >= s.start_on else ()
                    if not items and on >= s.start_on:
                        items = next(c.prices for c in reversed(sorted(s.changes, key=lambda c: c.on)) if c.prices)
                    main = items[0][0] if items else None
                    alpha = {p for (plan, _v, _c), ids in books.plan_items.items() if plan == "alpha" for p in ids}
                    if main in alpha and main != books.plan_items[("alpha", 2, other.currency)][0]:
                        moving.append((other, s, on))
            moved = subscriptions.migrate_plan_version(uow, "alpha", 2, when=when)
            assert moved == len(moving), (moved, [(s.id, on) for _c, s, on in moving])
            for other, s, on in moving:
                recorded = _rich_items(books, uow, s.id, "alpha", 2, other.currency)
                _record_change(s, "change", on, recorded)
                s.plan, s.version = "alpha", 2
        elif action == "usage":
            batch = []
            for _ in range(rng.randint(1, 12)):
                meter = METERS[rng.choice(sorted(METERS))]
                if cus.events and rng.random() < 0.15:
                    txn = rng.choice(sorted(cus.events))  # a retry: counts once
                    code, props = cus.events[txn][1], cus.events[txn][2]
                else:
                    txn, code, props = f"t{rng.getrandbits(40):x}", meter.code, meter.props(rng)
                at = books.now - timedelta(minutes=rng.randint(0, 60 * 24 * 10), seconds=rng.randint(0, 59))
                batch.append(
                    {
                        "customer_id": cus.id,
                        "code": code,
                        "transaction_id": txn,
                        "timestamp": at.isoformat(),
                        "properties": props,
                    }
                )
            result = usage.ingest(uow, batch)
            for refused in result.rejected:
                sent = batch[refused["index"]]
                age = books.now - datetime.fromisoformat(sent["timestamp"])
                assert age > timedelta(days=7), (sent, refused)
            for accepted in result.accepted:
                sent = batch[accepted["index"]]
                assert sent["transaction_id"] not in cus.events
                cus.events[sent["transaction_id"]] = (
                    datetime.fromisoformat(sent["timestamp"]),
                    sent["code"],
                    sent["properties"],
                )
        elif action == "cancel_usage" and cus.events:
            txns = rng.sample(sorted(cus.events), min(len(cus.events), rng.randint(1, 3)))
            result = usage_cancellation.cancel_events(
                uow, [{"customer_id": cus.id, "transaction_id": x} for x in txns], reason="sent by mistake"
            )
            for done in result.canceled:
                cus.canceled.add(done["transaction_id"])
        elif action == "wallet":
            wallet_id = (
                uow.conn.execute(select(t.wallets.c.id).where(t.wallets.c.customer_id == cus.id)).scalars().first()
            )
            if wallet_id is None:
                limited = rng.random() < 0.6
                wallet_id = wallets.create_wallet(
                    uow, cus.id, applies_to={"fee_types": ["usage"]} if limited else None
                )["id"]
            wallets.grant(uow, wallet_id, str(rng.randint(1, 40) * RICH_FACTORS[cus.currency]))
        elif action == "recurring":
            wallet_id = (
                uow.conn.execute(select(t.wallets.c.id).where(t.wallets.c.customer_id == cus.id)).scalars().first()
            )
            if wallet_id is None or len(cus.schedules) >= 2:
                return
            starts = today + timedelta(days=rng.choice([0, 0, 3, 20]))
            made = wallets.create_recurring_grant(
                uow, wallet_id, str(rng.randint(2, 15) * RICH_FACTORS[cus.currency]), starts_on=starts
            )
            cus.schedules[made["id"]] = starts
        elif action in ("pay", "void", "credit"):
            if not _pay_void_or_credit(uow, rng, cus.id, cus.currency, action):
                return
        elif action == "finalize":
            drafts = sorted(
                uow.conn.execute(
                    select(t.invoices.c.id).where(t.invoices.c.status == "draft", t.invoices.c.customer_id == cus.id)
                ).scalars()
            )
            if drafts:
                invoices.finalize(uow, rng.choice(drafts))
    books.done[action] += 1


def replace_coupon(books: RichBooks, code: str, cur: str, applied_on: date) -> RichCoupon:
    pct, amount, duration, periods = RICH_COUPONS[code]
    return RichCoupon(
        _coupon_code(code, cur),
        Fraction(pct) if pct else None,
        int(Decimal(amount) * RICH_FACTORS[cur] * 10 ** DECIMALS[cur]) if amount else None,
        duration,
        periods,
        applied_on,
    )


def simulate_priced(app, seed: int, customers: int = 16, steps: int = 24) -> RichBooks:
    rng = random.Random(f"priced-{seed}")
    half_even = seed % 2 == 0
    b.seller(app, rounding_policy="half_even" if half_even else "half_up", auto_finalize=seed % 3 != 1)
    start = b.utc(2026, 1, 10, 9)
    clock_id = b.clock(app, start)
    books = RichBooks(app, clock_id)
    books.half_even = half_even
    books.now = start
    with app.uow() as uow:
        for meter in METERS.values():
            usage.create_meter(uow, meter.code, meter.code, meter.aggregation, meter.field, group_by=meter.group_by)
        for plan in sorted(RICH_INTERVALS):
            books.add_version(uow, plan, 1)
        for code, (pct, amount, duration, periods) in RICH_COUPONS.items():
            for cur in RICH_FACTORS if amount else ["EUR"]:
                catalog.create_coupon(
                    uow,
                    _coupon_code(code, cur),
                    code,
                    percent_off=pct,
                    amount_off=format(Decimal(amount) * RICH_FACTORS[cur], "f") if amount else None,
                    currency_code=cur if amount else None,
                    duration=duration,
                    duration_periods=periods,
                )
    for _ in range(customers):
        zone = rng.choice(ZONES)
        cur = rng.choice(["EUR", "EUR", "JPY"])
        cus_id = b.customer(app, clock_id, currency=cur, timezone=zone)
        cus = books.customers[cus_id] = RichCustomer(cus_id, zone, cur)
        if rng.random() < 0.4:  # a negotiated rate, from the start
            (plan, name), (model, cfg) = rng.choice(sorted(RICH_OVERRIDES.items(), key=str))
            price_id = books.price_named(plan, 1, cur, name)
            cfg = _scaled(cfg, RICH_FACTORS[cur])
            with app.uow() as uow:
                catalog.set_price_override(uow, cus_id, price_id, model, cfg)
            cus.overrides[price_id] = (model, cfg)
    for step in range(steps):
        for _ in range(rng.randint(8, 18)):
            with contextlib.suppress(RemitError):  # a refused action changes nothing (the audit says so)
                _rich_act(rng, books, app)
        label = _advance(rng, books, app, f"priced seed {seed} step {step}")
        books.audit(label)
    return books


@pytest.mark.parametrize("seed", range(2))
def test_random_priced_books_add_up(app, seed, monkeypatch):
    _seeded(monkeypatch, 1000 + seed)
    simulate_priced(app, seed)


def _pay_void_or_credit(uow, rng, customer_id, currency, action) -> bool:
    """Pay or void one of the customer's open invoices, or credit part of a paid one (both simulations); False
    when the customer has no such invoice."""
    status = "paid" if action == "credit" else "open"
    ids = sorted(
        uow.conn.execute(
            select(t.invoices.c.id).where(t.invoices.c.status == status, t.invoices.c.customer_id == customer_id)
        ).scalars()
    )
    if not ids:
        return False
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
            credit_notes.issue_credit_note(uow, target, amount=str(Decimal(amount).scaleb(-DECIMALS[currency])))
    return True
