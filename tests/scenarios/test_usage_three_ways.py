"""Usage priced three ways must agree: live usage, the upcoming-invoice preview and the invoice the bill run issues.

A seeded random scenario per case: a catalog of usage plans built at random (every usage price model: per unit,
graduated, volume, package, percentage, graduated percentage; per-dimension prices; dynamic event amounts billed
per unit; formula meters; meters of every aggregation, rounding and carrying over; hybrid plans with a fixed fee,
in advance or in arrears, and included units; minimum commitments), and customers on a test clock (each in its own
time zone, calendar or anniversary anchors, some in a trial, some with a second subscription of another interval
on other meters) subscribed with coupons (percentage, once, fixed amount). While the clock advances they send
usage (some of it late: a correction of an invoiced period), cancel events, change plan now or at the period's
end, pause and resume, cancel, get negotiated prices (usage and fees), prepaid credits, usage thresholds, new plan
versions and migrations. For each subscription's billing period:

- an hour before it ends (the last usage sent and thresholds evaluated, as the worker does after ingestion), each
  item of live usage (``GET /customers/{id}/usage?subscription_id=``) is the preview's line of the same price and
  group (``GET /customers/{id}/upcoming_invoice``): what it has not billed yet is the line's amount, and for a
  charge's first line its subtotal and discount too. Documented differences: true-ups are not in live usage
  (docs/usage.md, "Live usage"), nor is what credits and the customer balance pay (they pay invoices);
- once it has ended, the invoice the advance wrote is the preview, line for line, with the same totals, and (once
  finalized) the same balance and credits applied; its lines of the period bill what live usage had not billed
  yet, item by item, with the same events, quantity (written the same way), included and billable units; its
  true-ups bill the shortfall of the period's commitments under the live items' subtotals;
- every line of that invoice is explained (``GET /invoices/{id}/lines/{line_id}/explain``) by what comes to it:
  a usage line's breakdown adds up to what its key was rated, which rounds to the subtotals its lines bill; a
  fee's slices add up to it, each its full-period rating × its fraction; a true-up is its share of the shortfall;
  the amount is the subtotal less the discount; and a first usage line's events are those the usage events
  listing it points to counts.

Ids are drawn from the seed, so a failing seed replays exactly.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

import pytest
from sqlalchemy import func, select

from remit.adapters.db import ids as id_module
from remit.adapters.db import mappers
from remit.adapters.db import tables as t
from remit.adapters.db.engine import make_engine
from remit.bootstrap import Remit, read_engine
from remit.domain.clock import FixedClock
from remit.domain.errors import RemitError
from remit.domain.money import RoundingPolicy, currency
from remit.domain.rating.aggregations import WIDE
from remit.service_layer import (
    alerts,
    catalog,
    clocks,
    explain,
    live_usage,
    subscriptions,
    usage,
    usage_cancellation,
    usage_events,
    usage_monitor,
    wallets,
)
from remit.service_layer.accounts import local_midnight
from remit.service_layer.views import plain
from tests import builders as b

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata")

# code: (aggregation, field, group_by, extra create_meter arguments)
METERS: dict[str, tuple[str, str | None, tuple[str, ...], dict[str, Any]]] = {
    "calls": ("count", None, ("region",), {}),
    "tokens": ("sum", None, ("model",), {"expression": "tin * 0.003 + tout * 0.015"}),
    "spend": ("sum", "amount", (), {}),  # dynamic amounts: the cost each event carries
    "gb": ("sum", "gb", (), {"rounding": "ceil"}),
    "peak": ("max", "jobs", (), {}),
    "users": ("unique_count", "user", (), {}),
    "seats": ("latest", "n", (), {"carry_over": True}),
    "storage": ("weighted_sum", "gb", (), {}),
    # Billed by a second subscription of some customers, on a plan of another interval.
    "jobs": ("count", None, ("kind",), {}),
    "minutes": ("sum", "m", (), {"rounding": "round", "rounding_precision": 3}),
}
SIDE_METERS = ("jobs", "minutes")
MONEY_METERS = ("spend", "tokens")  # values that are amounts of money: percentage models rate them


def _event(rng: random.Random, meter: str) -> dict[str, Any]:
    if meter == "calls":
        return {"region": rng.choice(["eu", "us", "apac"])}
    if meter == "tokens":
        return {"tin": rng.randint(0, 4000), "tout": rng.randint(0, 900), "model": rng.choice(["small", "large"])}
    if meter == "spend":
        cents = rng.randint(-3000, 40000) if rng.random() < 0.15 else rng.randint(1, 40000)
        return {"amount": str(Decimal(cents) / 100)}
    if meter == "gb":
        return {"gb": str(Decimal(rng.randint(1, 4000)) / 1000)}
    if meter == "peak":
        return {"jobs": rng.randint(1, 60)}
    if meter == "users":
        return {"user": f"u{rng.randint(1, 15)}"}
    if meter == "seats":
        return {"n": rng.randint(1, 40)}
    if meter == "jobs":
        return {"kind": rng.choice(["build", "deploy"])}
    if meter == "minutes":
        return {"m": str(Decimal(rng.randint(1, 9000)) / 10)}
    return {"gb": rng.randint(-8, 25)}  # storage: a change of the level


# Per currency: a scale for unit prices and amounts (JPY has no minor unit, BHD three).
SCALE = {"EUR": Decimal(1), "JPY": Decimal(150), "BHD": Decimal("0.377")}


def _amount(rng: random.Random, cur: str, low: int, high: int) -> str:
    """A flat amount in the currency, with at most its decimals."""
    places = currency(cur).minor_units
    value = (Decimal(rng.randint(low, high)) * SCALE[cur]).quantize(Decimal(1).scaleb(-places))
    return str(value)


def _unit(rng: random.Random, cur: str) -> str:
    return str((Decimal(rng.choice(["0.0125", "0.5", "1.15", "0.003", "2", "0.07"])) * SCALE[cur]).normalize())


def _model(rng: random.Random, meter: str, cur: str, included: bool) -> tuple[str, dict[str, Any]]:
    """A random price model fit for the meter; ``included``: the price has included units (no percentage)."""
    kinds = ["per_unit", "graduated", "volume", "package"]
    if meter in MONEY_METERS:
        kinds += ["graduated_percentage"] + ([] if included else ["percentage", "percentage"])
    kind = rng.choice(kinds)
    if kind == "per_unit":
        return kind, {"unit_price": _unit(rng, cur)}
    if kind in ("graduated", "volume"):
        bound = rng.choice([5, 10, 50, 1000])
        tiers = [
            {"up_to": str(bound), "unit_price": _unit(rng, cur)},
            {"up_to": str(bound * 4), "unit_price": _unit(rng, cur), "flat_fee": _amount(rng, cur, 0, 3)},
            {"up_to": None, "unit_price": _unit(rng, cur)},
        ]
        return kind, {"tiers": tiers}
    if kind == "package":
        return kind, {
            "package_size": str(rng.choice([3, 10, 100])),
            "package_price": _amount(rng, cur, 1, 9),
            "free_units": str(rng.choice([0, 0, 5])),
        }
    if kind == "percentage":
        config: dict[str, Any] = {"rate": rng.choice(["0.012", "0.029", "0.1"])}
        if rng.random() < 0.6:
            config["fixed_fee"] = str((Decimal("0.10") * SCALE[cur]).normalize())
        if rng.random() < 0.4:
            config["free_transactions"] = rng.randint(1, 3)
        if rng.random() < 0.3:
            config["min_per_transaction"] = str((Decimal("0.25") * SCALE[cur]).normalize())
        if rng.random() < 0.3:
            config["max_per_transaction"] = str((Decimal("9") * SCALE[cur]).normalize())
        return kind, config
    return kind, {  # graduated_percentage
        "tiers": [
            {"up_to": str(rng.choice([100, 1000])), "rate": "0.03"},
            {"up_to": None, "rate": rng.choice(["0.02", "0.015"]), "flat_fee": _amount(rng, cur, 0, 2)},
        ]
    }


@dataclass
class Case:
    seed: int
    cur: str
    policy: RoundingPolicy
    clock_id: str
    now: datetime
    interval: str = "month"
    plans: dict[str, int] = field(default_factory=dict)  # plan code -> its latest version
    fees: set[str] = field(default_factory=set)  # the plans' fixed fees
    usage_prices: dict[str, str] = field(default_factory=dict)  # usage price id -> meter
    customers: dict[str, str] = field(default_factory=dict)  # customer -> subscription
    events: dict[str, list[str]] = field(default_factory=dict)  # customer -> transaction ids
    sent: int = 0
    compared: dict[str, int] = field(default_factory=dict)  # what was compared, by kind: the test is not vacuous


def _plan_specs(rng: random.Random, case: Case, code: str, version: int) -> list[dict[str, Any]]:
    """A plan version's prices, at random: a fee or not, one to three usage prices, a minimum commitment or not."""
    cur = case.cur
    specs: list[dict[str, Any]] = []
    if rng.random() < 0.7:  # hybrid: a fee beside the usage
        specs.append(
            {
                "model": "flat",
                "config": {"amount": _amount(rng, cur, 10, 60)},
                "timing": rng.choice(["in_advance", "in_advance", "in_arrears"]),
                "name": f"{code}v{version} fee",
            }
        )
    for meter in rng.sample(sorted(set(METERS) - set(SIDE_METERS)), rng.randint(1, 3)):
        included = rng.random() < 0.4
        kind, config = _model(rng, meter, cur, included)
        terms: dict[str, Any] = {"meter": meter}
        if included:
            terms["included_units"] = str(rng.choice([1, 5, 100, 2500]))
        if METERS[meter][2] and rng.random() < 0.5:  # a group's own price
            group = "eu" if meter == "calls" else "large"
            own_kind, own_config = _model(rng, meter, cur, included)
            terms["dimensions"] = {group: {"model": own_kind, "config": own_config}}
        specs.append({"model": kind, "config": config, "usage": terms, "name": f"{code}v{version} {meter}"})
    if rng.random() < 0.4:
        specs.append(
            {
                "model": "flat",
                "config": {"amount": _amount(rng, cur, 5, 80)},
                "usage": {"minimum": True},
                "name": f"{code}v{version} minimum",
            }
        )
    return [{"currency": cur, "interval": case.interval, **spec} for spec in specs]


def _note_prices(uow, case: Case) -> None:
    for price_id, usage_terms, model in uow.conn.execute(select(t.prices.c.id, t.prices.c.usage, t.prices.c.model)):
        if usage_terms and usage_terms.get("meter"):
            case.usage_prices[price_id] = usage_terms["meter"]
        elif not usage_terms and model == "flat":
            case.fees.add(price_id)


def _catalog(app, rng: random.Random, case: Case) -> None:
    cur = case.cur
    with app.uow() as uow:
        for code, (aggregation, field_name, group_by, extra) in METERS.items():
            usage.create_meter(uow, code, code.title(), aggregation, field_name, group_by=group_by, **extra)
        for p in range(3):
            code = f"plan{p}"
            catalog.create_plan(uow, code, code.title(), _plan_specs(rng, case, code, 1))
            case.plans[code] = 1
        side_interval = rng.choice(["week", "month", "quarter"])
        catalog.create_plan(
            uow,
            "side",
            "Side",
            [
                {
                    "currency": cur,
                    "interval": side_interval,
                    "model": kind,
                    "config": config,
                    "usage": {"meter": meter},
                    "name": f"side {meter}",
                }
                for meter in SIDE_METERS
                for kind, config in [_model(rng, meter, cur, False)]
            ],
        )
        _note_prices(uow, case)
        catalog.create_coupon(uow, "PCT", "15% off", percent_off="15", duration="forever")
        catalog.create_coupon(uow, "ONCE", "40% once", percent_off="40", duration="once")
        catalog.create_coupon(
            uow, "FIXED", "Fixed off", amount_off=_amount(rng, cur, 3, 30), currency_code=cur, duration="forever"
        )


def _send(app, rng: random.Random, case: Case, cus: str, since: datetime, until: datetime, count: int) -> None:
    """``count`` events of random meters of the catalog, dated between the two times."""
    span = int((until - since).total_seconds())
    if span <= 0:
        return
    batch = []
    for _ in range(count):
        meter = rng.choice(sorted(METERS))
        case.sent += 1
        txn = f"t{case.sent}"
        at = since + timedelta(seconds=rng.randint(0, span))
        batch.append(
            {
                "customer_id": cus,
                "code": meter,
                "transaction_id": txn,
                "timestamp": at.isoformat(),
                "properties": _event(rng, meter),
            }
        )
    with app.uow() as uow:
        result = usage.ingest(uow, batch)
    # A meter no subscription of the customer bills has no open period: only the grace period (docs/usage.md,
    # "Late events"), so older events of it are refused.
    for refused in result.rejected:
        sent = batch[refused["index"]]
        assert refused["error"]["code"] == "event_too_old", refused
        assert datetime.fromisoformat(sent["timestamp"]) < case.now - timedelta(days=7), refused
    case.events.setdefault(cus, []).extend(batch[e["index"]]["transaction_id"] for e in result.accepted)


def _advance(app, case: Case, to: datetime) -> None:
    clocks.advance(app.uow, case.clock_id, to)
    case.now = to


def _description(item: dict[str, Any]) -> str:
    """The description the invoice gives a live usage item's first line (``generator._usage_difference``)."""
    label = item["price_name"]
    if item["group"]:
        label += " (" + ", ".join(str(v) for v in item["group"].values()) + ")"
    return f"{label}: {format(Decimal(item['quantity']).normalize(), 'f')}"


def _minor(text: str, cur: str) -> int:
    return int(Decimal(text).scaleb(currency(cur).minor_units))


def _has_included(uow, price_id: str) -> bool:
    terms = uow.conn.execute(select(t.prices.c.usage).where(t.prices.c.id == price_id)).scalar()
    return (terms or {}).get("included_units") not in (None, "0")


def _cancel_some(app, rng: random.Random, case: Case, watches: dict[str, Any]) -> None:
    for cus in sorted(case.customers):
        if _waiting(watches, cus):
            continue
        txns = case.events.get(cus, [])
        if txns and rng.random() < 0.4:
            chosen = rng.sample(txns, min(len(txns), rng.randint(1, 3)))
            with app.uow() as uow:
                usage_cancellation.cancel_events(
                    uow, [{"customer_id": cus, "transaction_id": x} for x in chosen], reason="sent by mistake"
                )
            for x in chosen:
                txns.remove(x)


def _label(item: dict[str, Any]) -> str:
    """A live usage item's charge as invoice lines name it (``generator._usage_label``)."""
    label = item["price_name"]
    if item["group"]:
        label += " (" + ", ".join(str(v) for v in item["group"].values()) + ")"
    return label


USAGE_KINDS = ("usage", "usage_remainder", "usage_correction")


def _check_live_against_preview(
    app, case: Case, cus: str, sub: str, end: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An hour before the period ends: live usage is the preview's usage lines of the period."""
    with app.uow() as uow:
        live = live_usage.live_usage(uow, cus, sub)
        preview = clocks.preview_upcoming(uow, cus)
    label = (case.seed, cus, sub, case.now.isoformat())
    case.compared["live_usage"] = case.compared.get("live_usage", 0) + 1
    (shown,) = live["subscriptions"]
    period_start = date.fromisoformat(shown["period"]["start_on"])
    if preview["as_of"] != end:  # nothing to bill at the period's end: the preview looks further
        assert preview["as_of"] is None or preview["as_of"] > end, label
        assert all(_minor(i["unbilled"], case.cur) == 0 for i in shown["items"]), label
        return live, {**preview, "as_of": None}
    lines: dict[str, dict[str, Any]] = {}
    for ln in preview["lines"]:
        if ln["kind"] in USAGE_KINDS and ln["subscription_id"] == sub and ln["period_start_on"] == period_start:
            name = ln["description"].split(": ")[0]
            assert name not in lines, (label, name)
            lines[name] = ln
    # A charge is billed when it comes to something, or is discounted to nothing (a line of 0.00 says so).
    items = {_label(i): i for i in shown["items"]}
    due = {n: i for n, i in items.items() if _minor(i["unbilled"], case.cur)}
    assert set(due) <= set(lines) <= set(items), (label, sorted(due), sorted(lines))
    due.update((n, items[n]) for n in lines)
    for name, item in due.items():
        line = lines[name]
        assert line["amount_minor"] == _minor(item["unbilled"], case.cur), (label, name)
        assert line["price_id"] == item["price_id"], (label, name)
        if line["kind"] == "usage":  # the charge's first line: nothing billed of it before
            assert line["description"] == _description(item), label
            got = (_minor(item["subtotal"], case.cur), _minor(item["discount"], case.cur))
            assert got == (line["subtotal_minor"], line["discount_minor"]), (label, name)
    assert _minor(shown["unbilled"], case.cur) == sum(ln["amount_minor"] for ln in lines.values()), label
    return live, preview


def _invoice_at(app, cus: str, at: datetime) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with app.uow() as uow:
        (inv,) = (
            uow.conn.execute(
                select(t.invoices).where(
                    t.invoices.c.customer_id == cus,
                    t.invoices.c.created_at == at,
                    t.invoices.c.billing_reason == "subscription_cycle",
                )
            )
            .mappings()
            .all()
        )
        lines = list(
            uow.conn.execute(select(t.invoice_lines).where(t.invoice_lines.c.invoice_id == inv["id"])).mappings()
        )
    return dict(inv), [dict(ln) for ln in lines]


def _check_invoice(
    app, case: Case, cus: str, sub: str, live: dict[str, Any], preview: dict[str, Any], end: datetime
) -> None:
    if preview["as_of"] is None:
        with app.uow() as uow:
            wrote = uow.conn.execute(
                select(t.invoices.c.id).where(t.invoices.c.customer_id == cus, t.invoices.c.created_at == end)
            ).all()
        assert wrote == [], (case.seed, cus)
        return
    inv, lines = _invoice_at(app, cus, preview["as_of"])
    for ln in lines:
        case.compared[ln["kind"]] = case.compared.get(ln["kind"], 0) + 1
    label = (case.seed, cus, preview["as_of"].isoformat())
    got = sorted((ln["kind"], ln["description"], ln["subtotal_minor"], ln["discount_minor"]) for ln in lines)
    want = sorted(
        (ln["kind"], ln["description"], ln["subtotal_minor"], ln["discount_minor"]) for ln in preview["lines"]
    )
    assert got == want, label
    assert inv["total_minor"] == preview["total_minor"], label
    if inv["status"] != "draft":  # finalized: the balance and credits the preview said it would apply
        assert (inv["applied_balance_minor"], inv["applied_credits_minor"], inv["amount_due_minor"]) == (
            preview["applied_balance_minor"],
            preview["applied_credits_minor"],
            preview["amount_due_minor"],
        ), label
    # Live usage, item by item: what the invoice's lines of the same price, group and period bill.
    (shown,) = live["subscriptions"]
    period_start = shown["period"]["start_on"]
    by_charge: dict[tuple[Any, ...], int] = {}
    for ln in lines:
        record = (ln["details"] or {}).get("usage") or {}
        if (
            ln["kind"] in USAGE_KINDS
            and ln["subscription_id"] == sub
            and ln["period_start_on"].isoformat() == period_start
        ):
            key = (ln["price_id"], tuple(sorted(record.get("group", {}).items())))
            by_charge[key] = by_charge.get(key, 0) + ln["amount_minor"]
    firsts = {
        (ln["price_id"], tuple(sorted(ln["details"]["usage"].get("group", {}).items()))): ln
        for ln in lines
        if ln["kind"] == "usage" and ln["subscription_id"] == sub and ln["period_start_on"].isoformat() == period_start
    }
    for item in shown["items"]:
        key = (item["price_id"], tuple(sorted(item["group"].items())))
        assert by_charge.pop(key, 0) == _minor(item["unbilled"], case.cur), (label, item)
        if key in firsts:  # what was measured, as the line records it and as it shows its quantity
            record = firsts[key]["details"]["usage"]
            assert plain(firsts[key]["quantity"]) == item["quantity"], label
            assert (item["events"], item["quantity"]) == (record["events"], record["quantity"]), label
            assert Decimal(item["included_units"]) == Decimal(record["included_units"]), label
            assert Decimal(item["billable_units"]) == Decimal(record["billable_units"]), label
    assert not by_charge, (label, sorted(by_charge))
    # True-ups, which live usage leaves out (docs/usage.md): the period's commitments less its usage lines, which
    # are the live items.
    used = sum(_minor(i["subtotal"], case.cur) for i in shown["items"])
    true_ups = [
        ln
        for ln in lines
        if ln["kind"] == "true_up"
        and ln["subscription_id"] == sub
        and ln["period_start_on"].isoformat() == period_start
    ]
    for ln in true_ups:
        assert int(ln["details"]["usage"]["usage_minor"]) == used, label
    if true_ups and all(ln["corrects_line_id"] is None for ln in true_ups):
        record = true_ups[0]["details"]["usage"]
        committed = int(record.get("period_minimum_minor", record["minimum_minor"]))
        assert sum(ln["subtotal_minor"] for ln in true_ups) == max(0, committed - used), label
    for ln in lines:
        _check_explained(app, case, inv["id"], ln)


def _check_explained(app, case: Case, invoice_id: str, ln: dict[str, Any]) -> None:
    with app.uow() as uow:
        shown = explain.explain_line(uow, invoice_id, ln["id"])
    cur = currency(case.cur)
    label = (case.seed, ln["kind"], ln["description"])
    subtotal, discount = _minor(shown["subtotal"], case.cur), _minor(shown["discount"], case.cur)
    assert (subtotal, discount) == (ln["subtotal_minor"], ln["discount_minor"]), label
    assert _minor(shown["amount"], case.cur) == subtotal - discount == ln["amount_minor"], label
    assert shown["explanation"][-1] == f"Amount: {shown['amount']} {case.cur}.", label
    with app.uow() as uow:  # what the key's earlier lines billed, before discounts
        il = t.invoice_lines.c
        before = uow.conn.execute(
            select(func.coalesce(func.sum(il.subtotal_minor), 0)).where(
                il.subscription_id == ln["subscription_id"],
                il.charge_key == ln["charge_key"],
                il.period_start_on == ln["period_start_on"],
                il.revision < ln["revision"],
            )
        ).scalar()
    total = int(before) + subtotal  # what the key's lines come to with this one
    details = ln["details"] or {}
    usage_rec = details.get("usage") or {}
    if ln["kind"] == "true_up":
        assert shown["breakdown"] == [], label
        minimum, used = int(usage_rec["minimum_minor"]), int(usage_rec["usage_minor"])
        period_minimum = int(usage_rec.get("period_minimum_minor", minimum))
        assert 0 <= total <= max(0, period_minimum - used), label
        if period_minimum == minimum:
            assert total == max(0, minimum - used), label
        return
    with localcontext(WIDE):  # exact: an amount may have more digits than the default context keeps
        breakdown = sum((Decimal(x["amount"]) for x in shown["breakdown"]), Decimal(0))
    if ln["price_id"] in case.usage_prices or usage_rec.get("meter"):
        if usage_rec.get("nothing_measured"):
            assert total == 0, label
            return
        assert case.policy.round_minor(breakdown, cur) == total, (label, shown["breakdown"])
        if ln["kind"] == "usage":  # the events it measured, where the explanation says they are listed
            counted = 0
            with app.uow() as uow:
                for window in shown["usage_events"]:
                    listed = usage_events.list_usage_events(
                        uow,
                        shown["customer_id"] if "customer_id" in shown else _customer_of(uow, invoice_id),
                        meter_code=usage_rec["meter"],
                        occurred_gte=datetime.fromisoformat(window["occurred_gte"]),
                        occurred_lt=datetime.fromisoformat(window["occurred_lt"]),
                        group=usage_rec.get("group") or None,
                        limit=None,
                    )
                    counted += sum(1 for e in listed if e["counted"] and e.get("canceled_at") is None)
            assert counted == usage_rec["events"], (label, counted, usage_rec["events"])
        return
    slices = shown["slices"]
    with localcontext(WIDE):
        raw = sum((Decimal(s["amount"]) for s in slices), Decimal(0))
    assert case.policy.round_minor(raw, cur) == total, label
    if len(slices) == 1:  # the breakdown rates the whole period; the slice is its fraction of it (to 28 digits)
        fraction = Fraction(slices[0]["fraction"])
        error = Fraction(breakdown) * fraction - Fraction(Decimal(slices[0]["amount"]))
        assert abs(error) < Fraction(1, 10**20), label


@dataclass
class Watch:
    """A subscription the walk checks: the period end it checked live usage and the preview before, and what they
    said, until the invoice of that end is checked."""

    customer: str
    zone: str
    end: datetime | None = None
    live: dict[str, Any] | None = None
    preview: dict[str, Any] | None = None


def _period_end(app, cus: str, sub: str, zone: str) -> datetime | None:
    with app.uow() as uow:
        shown = live_usage.live_usage(uow, cus, sub)["subscriptions"]
    return local_midnight(date.fromisoformat(shown[0]["period"]["end_on"]), zone) if shown else None


def _waiting(watches: dict[str, Watch], cus: str) -> bool:
    """Whether one of the customer's subscriptions was checked before its period's end and waits for its invoice."""
    return any(w.preview is not None for w in watches.values() if w.customer == cus)


def _walk(app, rng: random.Random, case: Case, watches: dict[str, Watch], target: datetime) -> None:
    """Advance to ``target``, stopping an hour before each subscription's period ends (usage sent until then; live
    usage against the preview) and an hour after (the invoice against both)."""
    while case.now < target:
        moments = [target]
        for sub, w in watches.items():
            if w.preview is not None:
                assert w.end is not None
                moments.append(w.end + timedelta(hours=1))
            else:
                end = _period_end(app, w.customer, sub, w.zone)
                if end is not None and end - timedelta(hours=1) > case.now:
                    moments.append(end - timedelta(hours=1))
        _advance(app, case, min(moments))
        for sub, w in sorted(watches.items()):
            if w.preview is not None and w.end is not None and case.now >= w.end + timedelta(hours=1):
                assert w.live is not None
                _check_invoice(app, case, w.customer, sub, w.live, w.preview, w.end)
                w.live = w.preview = None
        for sub, w in sorted(watches.items()):
            if w.preview is None:
                end = _period_end(app, w.customer, sub, w.zone)
                if end is not None and end - timedelta(hours=1) == case.now:
                    if not _waiting(watches, w.customer):
                        _send(app, rng, case, w.customer, case.now - timedelta(hours=20), case.now, rng.randint(0, 6))
                    # Thresholds are evaluated after ingestion, not during it (docs/usage.md, "When alerts are
                    # evaluated"): as the worker does within a second, before anyone looks.
                    usage_monitor.evaluate(app.uow, test_clock_id=case.clock_id)
                    w.end = end
                    w.live, w.preview = _check_live_against_preview(app, case, w.customer, sub, end)


def _act(app, rng: random.Random, case: Case, cus: str, sub: str) -> None:
    """Whatever a customer or the billing team does, now (a refused action changes nothing)."""
    with contextlib.suppress(RemitError), app.uow() as uow:
        roll = rng.random()
        if roll < 0.25:
            subscriptions.change_plan(uow, sub, rng.choice(sorted(case.plans)))
        elif roll < 0.3:
            subscriptions.change_plan(uow, sub, rng.choice(sorted(case.plans)), when="period_end")
        elif roll < 0.35:
            subscriptions.apply_coupon(uow, sub, coupon=rng.choice(["PCT", "FIXED", "ONCE"]))
        elif roll < 0.4:
            price_id = rng.choice(sorted(case.usage_prices))  # (a side price: for a customer with a side plan)
            kind, config = _model(rng, case.usage_prices[price_id], case.cur, _has_included(uow, price_id))
            catalog.set_price_override(uow, cus, price_id, kind, config)
        elif roll < 0.45:
            wallet = wallets.create_wallet(uow, cus, rate=rng.choice(["1", "0.01"]))
            wallets.grant(uow, wallet["id"], str(rng.randint(100, 5000)))
        elif roll < 0.5:
            subscriptions.pause(uow, sub)
        elif roll < 0.6:
            subscriptions.resume(uow, sub)
        elif roll < 0.62:
            subscriptions.cancel(uow, sub)
        elif roll < 0.65:
            subscriptions.cancel(uow, sub, at_period_end=True)
        elif roll < 0.7:
            alerts.set_usage_threshold(uow, sub, _amount(rng, case.cur, 5, 40))
        elif roll < 0.74 and case.fees:
            catalog.set_price_override(
                uow, cus, rng.choice(sorted(case.fees)), "flat", {"amount": _amount(rng, case.cur, 5, 90)}
            )
        elif roll < 0.78:
            subscriptions.change_quantity(uow, sub, rng.randint(1, 5))
        elif roll < 0.82:
            when = case.now.date() + timedelta(days=rng.randint(1, 20))
            (subscriptions.pause if rng.random() < 0.5 else subscriptions.resume)(uow, sub, when)
        elif roll < 0.85:
            subscriptions.release_scheduled(uow, sub)
        elif roll < 0.88:
            code = rng.choice(sorted(case.plans))
            version = case.plans[code] + 1
            catalog.publish_plan_version(uow, code, _plan_specs(rng, case, code, version))
            case.plans[code] = version
            _note_prices(uow, case)
            subscriptions.migrate_plan_version(uow, code, version, when=rng.choice(["now", "period_end"]))


def _scenario(app, seed: int) -> None:
    rng = random.Random(seed)
    cur = rng.choice(["EUR", "EUR", "JPY", "BHD"])
    half_even = rng.random() < 0.5
    auto = rng.random() < 0.7
    b.seller(app, currency=cur, rounding_policy="half_even" if half_even else "half_up", auto_finalize=auto)
    start = b.utc(2026, 1, rng.randint(2, 25), rng.randint(0, 23))
    policy = RoundingPolicy("half_even" if half_even else "half_up")
    case = Case(
        seed, cur, policy, b.clock(app, start), start, interval=rng.choice(["month", "month", "week", "quarter"])
    )
    _catalog(app, rng, case)
    watches: dict[str, Watch] = {}
    for _ in range(4):
        zone = rng.choice(ZONES)
        cus = b.customer(app, case.clock_id, currency=cur, timezone=zone)
        with app.uow() as uow:
            sub = subscriptions.create_subscription(
                uow,
                cus,
                rng.choice(sorted(case.plans)),
                anchor=rng.choice(["calendar", "anniversary"]),
                coupon=rng.choice([None, None, "PCT", "ONCE", "FIXED"]),
                trial_days=rng.choice([None, None, None, 5]),
            )
        case.customers[cus] = sub
        watches[sub] = Watch(cus, zone)
        if rng.random() < 0.4:  # a second subscription, billing other meters over another interval
            with app.uow() as uow:
                side = subscriptions.create_subscription(
                    uow, cus, "side", anchor=rng.choice(["calendar", "anniversary"])
                )
            watches[side] = Watch(cus, zone)
    days = {"week": 3, "month": 9, "quarter": 25}[case.interval]
    for _step in range(12 if case.interval == "quarter" else 8):
        for cus, sub in sorted(case.customers.items()):
            if _waiting(watches, cus):
                continue  # checked an hour before its period's end: nothing more until the invoice
            # Usage since the last step, and some of it late (dated up to 3 days back: an invoiced period's
            # usage arrives as a correction of it).
            _send(app, rng, case, cus, case.now - timedelta(days=3), case.now, rng.randint(2, 12))
            if rng.random() < 0.5:
                _act(app, rng, case, cus, sub)
        _cancel_some(app, rng, case, watches)
        _walk(app, rng, case, watches, case.now + timedelta(days=rng.randint(1, days), hours=rng.randint(0, 23)))
    assert case.compared.get("live_usage"), "live usage was never compared"


def _customer_of(uow, invoice_id: str) -> str:
    return str(uow.conn.execute(select(t.invoices.c.customer_id).where(t.invoices.c.id == invoice_id)).scalar())


def _seeded(monkeypatch, seed: int) -> None:
    monkeypatch.setattr(id_module, "_urandom", random.Random(f"ids-{seed}").randbytes)
    monkeypatch.setattr(mappers, "_PRICE_CACHE", {})


@pytest.mark.parametrize("seed", range(24))
def test_live_usage_preview_and_invoice_agree(sqlite_app, seed, monkeypatch):
    _seeded(monkeypatch, seed)
    _scenario(sqlite_app, seed)


@pytest.mark.postgres
@pytest.mark.parametrize("seed", range(100, 103))
def test_live_usage_preview_and_invoice_agree_on_postgres(postgres_url, seed, monkeypatch):
    """The same on PostgreSQL, whose aggregation is other SQL."""
    engine = make_engine(postgres_url)
    app = Remit(engine, FixedClock(b.utc(2026, 1, 1)), read_engine(engine))
    with app.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())
    try:
        _seeded(monkeypatch, seed)
        _scenario(app, seed)
    finally:
        app.dispose()
