"""A realistic demo company, simulated on a test clock: `remit demo`.

Two legal entities (Germany in EUR, the US in USD), six plans with different price models in four currencies
(one of them hybrid: a platform fee plus API calls metered by region, with included calls and graduated overage),
an add-on, a one-off onboarding fee, coupons, and customers who trial, upgrade, downgrade, change seats, pause
and cancel while the clock runs through a year and the API customers send usage events. Everything goes through
the same services as production.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.bootstrap import Remit
from remit.domain.errors import Conflict, RemitError
from remit.domain.money import Money
from remit.service_layer import (
    accounts,
    catalog,
    clocks,
    credit_notes,
    invoices,
    subscriptions,
    usage,
    usage_cancellation,
    wallets,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
CURRENCIES = {
    "EUR": ("DE", "Europe/Berlin"),
    "USD": ("US", "America/New_York"),
    "GBP": ("GB", "Europe/London"),
    "JPY": ("JP", "Asia/Tokyo"),
}
# Per-currency amounts for each plan: (EUR, USD, GBP, JPY)
FLAT = {"EUR": "29", "USD": "29", "GBP": "25", "JPY": "4500"}
SEAT = {"EUR": "12", "USD": "12", "GBP": "10", "JPY": "1800"}
SEAT_Q = {"EUR": "33", "USD": "33", "GBP": "28", "JPY": "5000"}
SUPPORT = {"EUR": "99", "USD": "99", "GBP": "85", "JPY": "15000"}
ONBOARDING = {"EUR": "500", "USD": "500", "GBP": "450", "JPY": "75000"}
SCALE = {"EUR": 1, "USD": 1, "GBP": 1, "JPY": 150}
PLATFORM = {"EUR": "49", "USD": "49", "GBP": "42", "JPY": "7500"}
CALL_PRICES = {
    "EUR": ("0.002", "0.001"),
    "USD": ("0.002", "0.001"),
    "GBP": ("0.0018", "0.0009"),
    "JPY": ("0.3", "0.15"),
}
NAMES = (
    "Northwind",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Wonka",
    "Aperture",
    "Gringotts",
    "Oscorp",
    "Pied Piper",
    "Dunder Mifflin",
    "Monarch",
    "Massive",
    "Nakatomi",
    "Blue Sun",
    "Acme Retail",
    "Sirius",
    "Zorg",
    "Octan",
)


def reset(app: Remit) -> None:
    with app.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())


def _tiers(currency: str) -> dict[str, Any]:
    k = SCALE[currency]
    return {
        "tiers": [
            {"up_to": "10", "unit_price": str(20 * k), "flat_fee": str(50 * k)},
            {"up_to": "50", "unit_price": str(15 * k)},
            {"up_to": None, "unit_price": str(10 * k)},
        ]
    }


def _volume(currency: str) -> dict[str, Any]:
    k = SCALE[currency]
    return {"tiers": [{"up_to": "100", "unit_price": str(200 * k)}, {"up_to": None, "unit_price": str(150 * k)}]}


def _api_prices(currency: str) -> list[dict[str, Any]]:
    """A platform fee in advance, and API calls in arrears: 100,000 a month included, then graduated, with
    calls served from the APAC region at a premium."""
    first, rest = CALL_PRICES[currency]
    tiers = {"tiers": [{"up_to": "1000000", "unit_price": first}, {"up_to": None, "unit_price": rest}]}
    apac = {
        "tiers": [{"up_to": "1000000", "unit_price": str(Decimal(first) * 2)}, {"up_to": None, "unit_price": first}]
    }
    return [
        {"currency": currency, "model": "flat", "config": {"amount": PLATFORM[currency]}, "name": "Platform fee"},
        {
            "currency": currency,
            "model": "graduated",
            "config": tiers,
            "name": "API calls",
            "usage": {
                "meter": "api_calls",
                "included_units": "100000",
                "dimensions": {"apac": {"model": "graduated", "config": apac}},
            },
        },
    ]


def _catalog(app: Remit) -> dict[str, str]:
    with app.uow() as uow:
        de = accounts.create_legal_entity(
            uow,
            "Acme Cloud GmbH",
            "DE",
            "EUR",
            tax_id="DE811907980",
            address={"line1": "Friedrichstr. 68", "city": "Berlin", "postal_code": "10117"},
        )
        us = accounts.create_legal_entity(
            uow,
            "Acme Cloud Inc.",
            "US",
            "USD",
            invoice_prefix="US",
            credit_note_prefix="USCN",
            rounding_policy="half_even",
            address={"line1": "500 Howard St", "city": "San Francisco", "postal_code": "94105", "state": "CA"},
        )
        cur = list(CURRENCIES)
        catalog.create_plan(
            uow, "starter", "Starter", [{"currency": c, "model": "flat", "config": {"amount": FLAT[c]}} for c in cur]
        )
        catalog.create_plan(
            uow, "team", "Team", [{"currency": c, "model": "per_unit", "config": {"unit_price": SEAT[c]}} for c in cur]
        )
        catalog.create_plan(
            uow,
            "team-quarterly",
            "Team (quarterly)",
            [
                {"currency": c, "model": "per_unit", "config": {"unit_price": SEAT_Q[c]}, "interval": "quarter"}
                for c in cur
            ],
        )
        catalog.create_plan(
            uow, "business", "Business", [{"currency": c, "model": "graduated", "config": _tiers(c)} for c in cur]
        )
        catalog.create_plan(
            uow,
            "enterprise",
            "Enterprise (annual)",
            [{"currency": c, "model": "volume", "config": _volume(c), "interval": "year"} for c in cur],
        )
        usage.create_meter(uow, "api_calls", "API calls", "sum", "calls", group_by=["region"])
        catalog.create_plan(uow, "api", "API Platform", [p for c in cur for p in _api_prices(c)])
        support = catalog.create_product(uow, "Priority support", "add_on")
        onboarding = catalog.create_product(uow, "Onboarding", "one_off")
        ids = {"de": de, "us": us}
        for c in cur:
            ids[f"support_{c}"] = catalog.create_price(
                uow,
                support,
                {"currency": c, "model": "flat", "config": {"amount": SUPPORT[c]}, "name": "Priority support"},
            )
            ids[f"onboarding_{c}"] = catalog.create_price(
                uow,
                onboarding,
                {
                    "currency": c,
                    "type": "one_off",
                    "model": "flat",
                    "config": {"amount": ONBOARDING[c]},
                    "name": "Onboarding package",
                },
            )
        catalog.create_coupon(
            uow, "WELCOME20", "20% off for 3 months", percent_off="20", duration="repeating", duration_periods=3
        )
        catalog.create_coupon(uow, "LAUNCH10", "10 EUR off the first invoice", amount_off="10", currency_code="EUR")
        catalog.create_promotion_code(uow, "WELCOME20", "SPRING26", max_redemptions=8)
        # A newer Starter version (price rise); existing customers stay on v1 until migrated.
        catalog.publish_plan_version(
            uow,
            "starter",
            [{"currency": c, "model": "flat", "config": {"amount": str(int(FLAT[c]) + 2 * SCALE[c])}} for c in cur],
        )
    return ids


def _customers(app: Remit, rng: random.Random, clock_id: str, ids: dict[str, str], count: int) -> list[str]:
    subs: list[str] = []
    weights = {"EUR": 40, "USD": 35, "GBP": 15, "JPY": 10}
    spring = 0  # redemptions of SPRING26
    for i in range(count):
        cur = rng.choices(list(weights), list(weights.values()))[0]
        country, tz = CURRENCIES[cur]
        name = f"{NAMES[i % len(NAMES)]}{'' if i < len(NAMES) else ' ' + str(i // len(NAMES) + 1)} " + rng.choice(
            ("GmbH", "Ltd", "Inc.", "LLC", "SAS", "KK")
        )
        plan = rng.choices(
            ["starter", "team", "team-quarterly", "business", "enterprise", "api"], [26, 26, 8, 16, 8, 16]
        )[0]
        with app.uow() as uow:
            cid = accounts.create_customer(
                uow,
                name,
                currency_code=cur,
                country=country,
                timezone=tz,
                test_clock_id=clock_id,
                email=f"billing{i}@example.com",
                legal_entity_id=ids["de"] if cur in ("EUR", "GBP") else ids["us"],
                language={"EUR": "de", "JPY": "ja"}.get(cur, "en"),
            )
            start = START.date() + timedelta(days=rng.randrange(0, 28))
            qty = (
                1
                if plan == "starter"
                else rng.choice([3, 5, 8, 12, 20, 40, 120] if plan == "enterprise" else [2, 3, 5, 8, 12, 25])
            )
            sub = subscriptions.create_subscription(
                uow,
                cid,
                plan,
                quantity=qty,
                plan_version=1,
                start_on=start,
                trial_days=14 if rng.random() < 0.3 else None,
                anchor="calendar" if rng.random() < 0.4 else "anniversary",
                add_ons=[{"price_id": ids[f"support_{cur}"]}] if plan == "business" and rng.random() < 0.5 else (),
                coupon="LAUNCH10" if cur == "EUR" and rng.random() < 0.15 else None,
                # The code's 8 redemptions are never exceeded, however many customers the demo makes.
                promotion_code="SPRING26" if (promo := cur != "EUR" and rng.random() < 0.15 and spring < 8) else None,
                phases=[{"on": start + timedelta(days=90), "plan": "team", "quantity": 5}]
                if plan == "team" and rng.random() < 0.15
                else (),
            )
            spring += bool(promo)
            if plan in ("business", "enterprise"):
                credit_notes.add_one_off(uow, cid, price_id=ids[f"onboarding_{cur}"])
            if plan == "api":  # monthly free API credits, from the subscription's first day, for 45 days each
                wallet = wallets.create_wallet(uow, cid, name="Monthly API credits")
                wallets.create_recurring_grant(
                    uow, wallet["id"], "2500" if cur == "JPY" else "25", starts_on=start, expires_days=45
                )
        subs.append(sub)
        if plan == "api":
            metered.append(cid)
    return subs


metered: list[str] = []


def _send_usage(app: Remit, rng: random.Random, start: datetime, end: datetime, stats: Counter[str]) -> None:
    """Each API customer reports its calls per region a few times in the last days before ``end`` (the test
    clock's time): inside the grace period, so none is refused; some fall in a period that closed a day or two
    ago (anniversary billing) and are billed as late-usage corrections."""
    start = max(start, end - timedelta(days=6))
    for cid in metered:
        scale = rng.choice([20_000, 60_000, 150_000, 400_000])
        events = []
        for n in range(rng.randint(2, 5)):
            at = start + (end - start) * rng.random()
            region = rng.choices(["eu", "us", "apac"], [50, 35, 15])[0]
            events.append(
                {
                    "customer_id": cid,
                    "code": "api_calls",
                    "transaction_id": f"{cid}-{at:%Y%m%d%H%M%S}-{n}",
                    "timestamp": at.isoformat(),
                    "properties": {"calls": rng.randint(scale // 4, scale), "region": region},
                }
            )
        with app.uow() as uow:
            result = usage.ingest(uow, events)
        stats["usage_events"] += len(result.accepted)
    if metered:
        _staging_mistake(app, metered[0], end, stats)


def _staging_mistake(app: Remit, cid: str, at: datetime, stats: Counter[str]) -> None:
    """A staging deployment reports calls to the production account; support cancels them (they never bill)."""
    txn = f"{cid}-staging-{at:%Y%m%d}"
    event = {
        "customer_id": cid,
        "code": "api_calls",
        "transaction_id": txn,
        "timestamp": (at - timedelta(hours=1)).isoformat(),
        "properties": {"calls": 1_000_000, "region": "eu"},
    }
    with app.uow() as uow:
        usage.ingest(uow, [event])
    with app.uow() as uow:
        result = usage_cancellation.cancel_events(
            uow, [{"customer_id": cid, "transaction_id": txn}], reason="sent by a staging deployment"
        )
    stats["usage_events_canceled"] += len(result.canceled)


UPGRADE = {"starter": "team", "team": "business", "business": "business"}
DOWNGRADE = {"business": "team", "team": "starter", "starter": "starter"}


def _act(app: Remit, rng: random.Random, sub_id: str, stats: Counter[str]) -> None:
    """One random life event for one subscription; refusals (e.g. pausing a canceled plan) are part of life."""
    with app.uow() as uow:
        sub = subscriptions.get_subscription(uow, sub_id)
        plan = uow.conn.execute(select(t.plans.c.code).where(t.plans.c.id == sub["plan_id"])).scalar() or ""
    action = rng.choices(["upgrade", "downgrade", "seats", "pause", "cancel", "cancel_end"], [25, 10, 30, 10, 10, 15])[
        0
    ]
    if sub["status"] == "paused":
        action = "resume"
    try:
        with app.uow() as uow:
            if action == "upgrade" and plan in UPGRADE and UPGRADE[plan] != plan:
                subscriptions.change_plan(uow, sub_id, UPGRADE[plan], quantity=5 if plan == "starter" else None)
            elif action == "downgrade" and plan in DOWNGRADE and DOWNGRADE[plan] != plan:
                subscriptions.change_plan(
                    uow,
                    sub_id,
                    DOWNGRADE[plan],
                    when="period_end",
                    quantity=1 if DOWNGRADE[plan] == "starter" else None,
                )
            elif action == "seats" and plan not in ("starter", ""):
                subscriptions.change_quantity(uow, sub_id, rng.choice([2, 4, 6, 10, 15, 30]))
            elif action == "pause":
                subscriptions.pause(uow, sub_id)
            elif action == "resume":
                subscriptions.resume(uow, sub_id)
            elif action == "cancel":
                subscriptions.cancel(uow, sub_id)
            elif action == "cancel_end":
                subscriptions.cancel(uow, sub_id, at_period_end=True)
            else:
                return
        stats[action] += 1
    except (Conflict, RemitError):
        stats["refused"] += 1


def _collect(app: Remit, rng: random.Random, clock_at: datetime, stats: Counter[str]) -> None:
    """Customers pay most invoices within their terms; a few disputes end in credit notes or write-offs."""
    with app.uow() as uow:
        due = list(uow.conn.execute(select(t.invoices.c.id, t.invoices.c.due_on).where(t.invoices.c.status == "open")))
    for invoice_id, due_on in due:
        roll = rng.random()
        with app.uow() as uow:
            if due_on and due_on <= clock_at.date() and roll < 0.9:
                invoices.mark_paid(uow, invoice_id)
                stats["paid"] += 1
            elif roll < 0.03:
                credit_notes.issue_credit_note(
                    uow, invoice_id, reason="product_unsatisfactory", memo="Service outage goodwill credit"
                )
                stats["credit_notes"] += 1
            elif roll < 0.04 and due_on and due_on <= clock_at.date():
                invoices.mark_uncollectible(uow, invoice_id)
                stats["uncollectible"] += 1


def run(
    app: Remit, *, customers: int = 50, months: int = 12, seed: int = 7, on_month: Callable[[str], None] | None = None
) -> dict[str, Any]:
    rng = random.Random(seed)
    with app.uow() as uow:
        if uow.conn.execute(select(func.count()).select_from(t.legal_entities)).scalar_one():
            raise Conflict(
                "database_not_empty",
                "This database has data already; run `remit demo --reset` to start over (it deletes everything in it).",
                "reset",
            )
    ids = _catalog(app)
    with app.uow() as uow:
        clock_id = accounts.create_test_clock(uow, "Demo year", START)
    metered.clear()
    subs = _customers(app, rng, clock_id, ids, customers)
    stats: Counter[str] = Counter()
    at = START
    for _month in range(months):
        mid = at.replace(day=15)
        clocks.advance(app.uow, clock_id, mid)
        _send_usage(app, rng, at, mid, stats)
        for sub_id in rng.sample(subs, k=max(1, len(subs) // 6)):
            _act(app, rng, sub_id, stats)
        _collect(app, rng, mid, stats)
        late = at.replace(day=27)
        clocks.advance(app.uow, clock_id, late)
        _send_usage(app, rng, mid, late, stats)
        at = (at.replace(day=1) + timedelta(days=32)).replace(day=1)
        clocks.advance(app.uow, clock_id, at)
        if on_month:
            on_month(f"{at:%Y-%m}")
    _collect(app, rng, at, stats)
    return summary(app, clock_id, stats)


def summary(app: Remit, clock_id: str, stats: Counter[str]) -> dict[str, Any]:
    with app.uow() as uow:
        c = uow.conn
        by_status: dict[str, int] = dict(
            c.execute(select(t.invoices.c.status, func.count()).group_by(t.invoices.c.status)).all()
        )
        billed: dict[str, int] = defaultdict(int)
        for cur, total in c.execute(
            select(t.invoices.c.currency, func.sum(t.invoices.c.total_minor)).group_by(t.invoices.c.currency)
        ):
            billed[cur] = int(total)
        subs_by_status: dict[str, int] = dict(
            c.execute(select(t.subscriptions.c.status, func.count()).group_by(t.subscriptions.c.status)).all()
        )
        frozen = accounts.get_test_clock(uow, clock_id)["frozen_at"]
        sample = c.execute(
            select(t.invoices.c.id, t.invoices.c.number)
            .where(t.invoices.c.number.is_not(None))
            .order_by(t.invoices.c.total_minor.desc())
            .limit(1)
        ).first()
        credit = c.execute(select(func.count()).select_from(t.credit_notes)).scalar_one()
        grants = c.execute(select(func.count()).select_from(t.wallet_grants)).scalar_one()
        credits_paid = dict(
            c.execute(
                select(t.invoices.c.currency, func.sum(t.invoices.c.applied_credits_minor)).group_by(
                    t.invoices.c.currency
                )
            ).all()
        )
        events = c.execute(select(func.count()).select_from(t.events)).scalar_one()
        customers = c.execute(select(func.count()).select_from(t.customers)).scalar_one()
    return {
        "test_clock_id": clock_id,
        "clock_at": frozen,
        "customers": customers,
        "subscriptions": subs_by_status,
        "invoices": by_status,
        "invoices_total": sum(by_status.values()),
        "billed": {cur: str(Money.from_minor(v, cur).amount) for cur, v in sorted(billed.items())},
        "credit_notes": credit,
        "credit_grants": grants,
        "paid_by_credits": {
            cur: str(Money.from_minor(int(v or 0), cur).amount) for cur, v in sorted(credits_paid.items()) if v
        },
        "events": events,
        "actions": dict(stats),
        "largest_invoice": {"id": sample[0], "number": sample[1]} if sample else None,
    }


def print_summary(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]Demo company billed through {data['clock_at']:%Y-%m-%d}[/] (test clock {data['test_clock_id']})"
    )
    table = Table(title="What happened")
    table.add_column("")
    table.add_column("")
    table.add_row("Customers", str(data["customers"]))
    table.add_row("Subscriptions", ", ".join(f"{k}: {v}" for k, v in sorted(data["subscriptions"].items())))
    table.add_row(
        "Invoices",
        f"{data['invoices_total']} (" + ", ".join(f"{k}: {v}" for k, v in sorted(data["invoices"].items())) + ")",
    )
    for cur, amount in data["billed"].items():
        table.add_row(f"Billed in {cur}", f"{Decimal(amount):,} {cur}")
    table.add_row("Credit notes", str(data["credit_notes"]))
    paid = ", ".join(f"{Decimal(amount):,} {cur}" for cur, amount in data["paid_by_credits"].items())
    table.add_row("Prepaid credits", f"{data['credit_grants']} monthly grants; paid {paid or 'nothing yet'}")
    table.add_row("Life events", ", ".join(f"{k}: {v}" for k, v in sorted(data["actions"].items())))
    table.add_row("Domain events recorded", str(data["events"]))
    console.print(table)
    if data["largest_invoice"]:
        console.print(
            f"Try: [bold]remit invoices show {data['largest_invoice']['id']}[/]  "
            f"({data['largest_invoice']['number']}), [bold]remit invoices list[/], "
            "[bold]remit customers list[/], [bold]remit subscriptions list --status canceled[/]"
        )
