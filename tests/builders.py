"""Small builders for tests: a seller, plans, customers on a test clock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from remit.bootstrap import Remit
from remit.service_layer import accounts, catalog, invoices, subscriptions, usage, views


def seller(app: Remit, currency: str = "EUR", **kwargs: Any) -> str:
    with app.uow() as uow:
        return str(accounts.create_legal_entity(uow, "Acme Cloud GmbH", "DE", currency, **kwargs))


def plan(
    app: Remit,
    code: str,
    amount: str | None = None,
    *,
    currency: str = "EUR",
    interval: str = "month",
    timing: str = "in_advance",
    model: str = "flat",
    config: dict[str, Any] | None = None,
) -> str:
    cfg = config if config is not None else {"amount": amount}
    with app.uow() as uow:
        return str(
            catalog.create_plan(
                uow,
                code,
                code.title(),
                [
                    {
                        "currency": currency,
                        "model": model,
                        "config": cfg,
                        "interval": interval,
                        "timing": timing,
                    }
                ],
            )["id"]
        )


def usage_plan(app: Remit, code: str = "api", unit_price: str = "0.01") -> None:
    """A meter ``calls`` (the sum of the events' ``n``) and a plan whose one price is ``unit_price`` EUR per call,
    monthly in arrears."""
    with app.uow() as uow:
        usage.create_meter(uow, "calls", "Calls", "sum", "n")
        catalog.create_plan(
            uow,
            code,
            code.upper(),
            [
                {
                    "currency": "EUR",
                    "model": "per_unit",
                    "config": {"unit_price": unit_price},
                    "usage": {"meter": "calls"},
                }
            ],
        )


def clock(app: Remit, at: datetime) -> str:
    with app.uow() as uow:
        return str(accounts.create_test_clock(uow, "test", at))


def customer(app: Remit, clock_id: str | None, currency: str = "EUR", **kwargs: Any) -> str:
    with app.uow() as uow:
        return str(
            accounts.create_customer(
                uow, "Test Customer", currency_code=currency, country="DE", test_clock_id=clock_id, **kwargs
            )
        )


def subscribed_customers(
    app: Remit, count: int, plan_code: str, clock_id: str | None = None, anchor: str = "anniversary"
) -> list[str]:
    """``count`` customers (real-clock, or on ``clock_id``), each with one subscription to the plan."""
    made = []
    for _ in range(count):
        cus = customer(app, clock_id)
        with app.uow() as uow:
            subscriptions.create_subscription(uow, cus, plan_code, anchor=anchor)
        made.append(cus)
    return made


def invoices_of(app: Remit, customer_id: str) -> list[dict[str, Any]]:
    """Every invoice of a customer with its lines, oldest first, in public form (money as strings)."""
    with app.uow() as uow:
        rows = views.list_invoices(uow, None, customer_id=customer_id)
        full = [views.invoice_public(invoices.get_invoice(uow, r["id"])) for r in rows]
    return sorted(full, key=lambda i: (i["created_at"], i["number"] or ""))


def lines_of(app: Remit, customer_id: str) -> list[tuple[str, str, str, str]]:
    """(kind, service start, service end, amount) of every line, in billing order: what scenario tests assert."""
    out = []
    for inv in invoices_of(app, customer_id):
        for ln in inv["lines"]:
            out.append((ln["kind"], ln["service_start_on"], ln["service_end_on"], ln["amount"]))
    return out


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc, arg-type]


def at_once(*calls: Callable[[], Any]) -> tuple[list[Any], list[Exception]]:
    """Run the calls in threads released together; what they returned (in the order they finished) and what
    they raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = []
    errors: list[Exception] = []

    def run(call: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            results.append(call())
        except Exception as exc:  # reported to the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results, errors


def emptied_postgres(postgres_url: str, at: datetime, pool_size: int = 5) -> Remit:
    """For tests where two things really run at once: an emptied PostgreSQL database on a fixed clock at ``at``,
    with a seller."""
    from remit.adapters.db import tables as t
    from remit.adapters.db.engine import make_engine
    from remit.domain.clock import FixedClock

    app = Remit(make_engine(postgres_url, pool_size=pool_size), FixedClock(at))
    with app.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())
    seller(app)
    return app


def send_calls(app: Remit, cus: str, *events: tuple[str, str, int]) -> Any:
    """``usage_plan``'s meter: one event per (transaction id, ISO time, calls), ingested together; the result."""
    batch = [
        {"customer_id": cus, "code": "calls", "transaction_id": txn, "timestamp": at, "properties": {"n": n}}
        for txn, at, n in events
    ]
    with app.uow() as uow:
        return usage.ingest(uow, batch)


def usage_customer_on_postgres(postgres_url: str, at: datetime) -> tuple[Remit, str]:
    """``emptied_postgres``, with ``usage_plan`` and a real-clock customer subscribed to it (calendar months)."""
    app = emptied_postgres(postgres_url, at)
    cus = customer(app, None)
    usage_plan(app)
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "api", anchor="calendar")
    return app, cus
