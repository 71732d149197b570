"""The `remit` command line."""

from __future__ import annotations

import json
import os
from datetime import date
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from remit.adapters.db import partitions
from remit.adapters.db.engine import migrate as run_migrations
from remit.bootstrap import Remit, Settings, bootstrap
from remit.domain.errors import NotFound, ValidationError
from remit.entrypoints.cli import alerts as alerts_cli
from remit.entrypoints.cli import usage as usage_cli
from remit.entrypoints.cli.output import all_pages, console, handle_errors, page_size, parse_date, parse_time, show
from remit.entrypoints.cli.wallets import wallets_app
from remit.entrypoints.cli.webhooks import webhooks_app, worker
from remit.service_layer import (
    accounts,
    bill_run,
    catalog,
    clocks,
    credit_notes,
    explain,
    invoices,
    subscriptions,
    views,
)
from remit.service_layer.scoping import EVERYTHING

app = typer.Typer(help="Remit: open-source billing automation.", no_args_is_help=True)
customers_app = typer.Typer(help="Customers.", no_args_is_help=True)
subs_app = typer.Typer(help="Subscriptions.", no_args_is_help=True)
invoices_app = typer.Typer(help="Invoices.", no_args_is_help=True)
clock_app = typer.Typer(help="Test clocks.", no_args_is_help=True)
plans_app = typer.Typer(help="Plans and prices.", no_args_is_help=True)
cn_app = typer.Typer(help="Credit notes.", no_args_is_help=True)
app.add_typer(customers_app, name="customers")
app.add_typer(subs_app, name="subscriptions")
app.add_typer(invoices_app, name="invoices")
app.add_typer(clock_app, name="clock")
app.add_typer(plans_app, name="plans")
app.add_typer(cn_app, name="credit-notes")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(wallets_app, name="wallets")
app.command("worker")(worker)

Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Limit = Annotated[int, typer.Option("--limit", help="Rows per page (at most 1000).")]
All = Annotated[bool, typer.Option("--all", help="Every row, not one page.")]
After = Annotated[str | None, typer.Option("--starting-after", help="Page after this id.")]


def _app() -> Remit:
    return bootstrap(Settings())


_time = parse_time
_date = parse_date


@app.command()
@handle_errors
def init(
    name: Annotated[str, typer.Option(help="Your company's legal name.")] = "My Company",
    country: Annotated[str, typer.Option(help="ISO 3166 country code.")] = "US",
    currency: Annotated[str, typer.Option(help="ISO 4217 currency.")] = "USD",
    review_drafts: Annotated[
        bool, typer.Option("--review-drafts", help="Leave invoices as drafts for review instead of finalizing.")
    ] = False,
    rounding: Annotated[str, typer.Option(help="half_up or half_even")] = "half_up",
    as_json: Json = False,
) -> None:
    """Create the database and a first legal entity (the seller)."""
    remit = _app()
    with remit.uow() as uow:
        from sqlalchemy import select

        from remit.adapters.db import tables as t

        existing = uow.conn.execute(select(t.legal_entities.c.id)).scalars().first()
        entity = existing or accounts.create_legal_entity(
            uow, name, country, currency, auto_finalize=not review_drafts, rounding_policy=rounding
        )
    show(
        {"legal_entity_id": entity, "created": existing is None, "database": str(remit.engine.url)},
        as_json,
        "Remit is ready",
    )


@app.command()
@handle_errors
def migrate(as_json: Json = False) -> None:
    """Create or upgrade the database schema."""
    remit = bootstrap(Settings(), auto_migrate=False)
    run_migrations(remit.engine)
    note = None
    try:
        created = partitions.ensure_usage_partitions(remit.engine, remit.clock.now().date())
    except partitions.PartitionsBusy as exc:  # the schema is migrated; the worker makes the rest later
        created, note = exc.created, exc.message
    show(
        {"database": str(remit.engine.url), "migrated": True, "partitions_created": len(created), "note": note},
        as_json,
        "Migrated",
    )


db_app = typer.Typer(help="Database upkeep.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("partitions")
@handle_errors
def db_partitions(
    months_ahead: Annotated[
        int, typer.Option("--months-ahead", min=0, max=120, help="Months after this one to have partitions for.")
    ] = partitions.MONTHS_AHEAD,
    as_json: Json = False,
) -> None:
    """PostgreSQL: create the monthly partitions of usage_events that are missing, from this month on (`remit
    worker` does it daily). Events of those months found in the default partition are moved into them."""
    remit = _app()
    created = []
    # One call makes at most MAX_MONTHS months: after a backfill of decades of history, call again until every
    # month whose events wait in the default partition has one (each round makes at least one, or ends).
    while made := partitions.ensure_usage_partitions(remit.engine, remit.clock.now().date(), months_ahead):
        created += made
    rows = [{"partition": c.name, "from": c.start, "to": c.end, "events_moved": c.moved} for c in created]
    if remit.engine.dialect.name != "postgresql":
        show({"partitions": "SQLite has none: nothing to do"}, as_json, "Partitions")
    else:
        show(rows, as_json, f"Partitions created ({len(rows)})", ["partition", "from", "to", "events_moved"])


@app.command()
@handle_errors
def demo(
    customers: Annotated[int, typer.Option(help="How many demo customers.")] = 50,
    months: Annotated[int, typer.Option(help="Months to simulate on the test clock.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same company.")] = 7,
    reset: Annotated[bool, typer.Option(help="Delete all data in the database first.")] = False,
    as_json: Json = False,
) -> None:
    """Create a demo company and simulate months of billing on a test clock."""
    from remit.service_layer import demo as demo_mod

    remit = _app()
    if reset:
        demo_mod.reset(remit)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
    ) as progress:
        task = progress.add_task("Simulating", total=months)
        summary = demo_mod.run(
            remit,
            customers=customers,
            months=months,
            seed=seed,
            on_month=lambda label: progress.update(task, advance=1, description=label),
        )
    if as_json:
        show(summary, True)
        return
    demo_mod.print_summary(summary)


@app.command("bill-run")
@handle_errors
def bill_run_cmd(
    as_of: Annotated[str | None, typer.Option("--as-of", help="ISO 8601 time; default now.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Processes billing batches at once on PostgreSQL; default: the machine's cores (at most 8).",
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """Create every invoice that is due (for customers on the real clock)."""
    remit = _app()
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    now = remit.clock.now()
    at = _time(as_of, "as_of") or now
    if at > now:
        raise ValidationError("as_of_in_future", "A bill run cannot look into the future; use a test clock.", "as_of")
    with Progress(
        TextColumn("Billing"),
        BarColumn(),
        TextColumn("{task.completed} customers"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
    ) as progress:
        task = progress.add_task("bill", total=None)
        result = bill_run.run(remit.uow, at, progress=lambda n: progress.update(task, advance=n), workers=workers)
    with remit.uow() as uow:
        run = views.get_bill_run(uow, result.id) or {}
        failures = _run_failures(uow, result.id)
    _show_run(run, failures, as_json)
    if failures:
        raise typer.Exit(BILL_RUN_FAILURES_EXIT)


# The exit code of a bill run that billed everyone it could but not some customers (listed in its output); a
# scheduler that watches exit codes sees it. Errors of the command itself keep theirs (2 to 5).
BILL_RUN_FAILURES_EXIT = 6


def _run_failures(uow: Any, run_id: str) -> list[dict[str, Any]]:
    return all_pages(lambda n, a: views.list_bill_run_failures(uow, run_id, n, a), 0, True, key="customer_id")


def _show_run(run: dict[str, Any], failures: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        show({**run, "failures": failures}, True)
        return
    show(run, False, "Bill run")
    if failures:
        rows = [{"customer_id": f["customer_id"], **f["error"]} for f in failures]
        show(rows, False, "Customers not billed (later runs try them again)", ["customer_id", "code", "message"])


bill_runs_app = typer.Typer(help="Bill runs: what each billed, and whom it could not bill.", no_args_is_help=True)
app.add_typer(bill_runs_app, name="bill-runs")


@bill_runs_app.command("list")
@handle_errors
def bill_runs_list(
    limit: Limit = 20,
    every: All = False,
    after: After = None,
    as_json: Json = False,
    test_clock: Annotated[
        str | None, typer.Option("--test-clock", help="The runs of this test clock's advances instead.")
    ] = None,
) -> None:
    """Bill runs of real customers (or of one test clock's), oldest first."""
    remit = _app()
    with remit.uow() as uow:
        if test_clock is not None:
            EVERYTHING.check_clock(uow, test_clock, "test_clock")
        live = test_clock is None
        rows = all_pages(
            lambda n, a: views.list_bill_runs(uow, n, a or after, livemode=live, test_clock_id=test_clock),
            limit,
            every,
        )
    columns = ["id", "as_of", "status", "customers_seen", "invoices_created", "customers_failed", "finished_at"]
    show(rows, as_json, "Bill runs", columns)


@bill_runs_app.command("show")
@handle_errors
def bill_runs_show(run_id: str, as_json: Json = False) -> None:
    """A bill run, with every customer it could not bill and why."""
    remit = _app()
    with remit.uow() as uow:
        run = views.get_bill_run(uow, run_id) or views.get_bill_run(uow, run_id, livemode=False)
        if run is None:
            raise NotFound("bill_run", run_id, "run_id")
        failures = _run_failures(uow, run_id)
    _show_run(run, failures, as_json)


# --- customers ---------------------------------------------------------------------------------------------------


@customers_app.command("list")
@handle_errors
def customers_list(limit: Limit = 20, every: All = False, after: After = None, as_json: Json = False) -> None:
    remit = _app()
    with remit.uow() as uow:
        rows = all_pages(lambda n, a: views.list_customers(uow, n, a or after), limit, every)
    show(rows, as_json, "Customers", ["id", "name", "email", "currency", "country", "test_clock_id"])


@customers_app.command("show")
@handle_errors
def customers_show(customer_id: str, as_json: Json = False) -> None:
    remit = _app()
    with remit.uow() as uow:
        row = views.customer_public(accounts.get_customer(uow, customer_id))
    show(row, as_json, "Customer")


@customers_app.command("create")
@handle_errors
def customers_create(
    name: Annotated[str, typer.Option()],
    currency: Annotated[str, typer.Option()],
    country: Annotated[str, typer.Option()],
    email: Annotated[str | None, typer.Option()] = None,
    legal_entity: Annotated[str | None, typer.Option("--legal-entity")] = None,
    language: Annotated[str, typer.Option()] = "en",
    timezone: Annotated[str, typer.Option()] = "UTC",
    test_clock: Annotated[str | None, typer.Option("--test-clock")] = None,
    external_id: Annotated[
        str | None, typer.Option("--external-id", help="Its id in your system (usage events may name it so).")
    ] = None,
    as_json: Json = False,
) -> None:
    remit = _app()
    with remit.uow() as uow:
        cid = accounts.create_customer(
            uow,
            name,
            currency_code=currency,
            country=country,
            email=email,
            legal_entity_id=legal_entity,
            language=language,
            timezone=timezone,
            test_clock_id=test_clock,
            external_id=external_id,
        )
    show({"id": cid}, as_json, "Customer created")


@customers_app.command("upcoming-invoice")
@handle_errors
def customers_upcoming(customer_id: str, as_json: Json = False) -> None:
    """Preview the customer's next invoice; nothing is written."""
    remit = _app()
    with remit.uow() as uow:
        preview = clocks.preview_upcoming(uow, customer_id)
    data = views.invoice_public(preview)
    if as_json:
        show(data, True)
        return
    show(
        data["lines"],
        False,
        f"Upcoming invoice as of {data['as_of']}",
        ["description", "service_start_on", "service_end_on", "quantity", "unit_price", "discount", "amount"],
    )
    console.print(
        f"Total {data['total']} {data['currency']}, customer balance {data['applied_balance']}, prepaid credits "
        f"{data['applied_credits']}, amount due {data['amount_due']}"
    )


# --- plans ---------------------------------------------------------------------------------------------------------


@plans_app.command("create")
@handle_errors
def plans_create(
    code: Annotated[str, typer.Option()],
    name: Annotated[str, typer.Option()],
    prices: Annotated[
        str,
        typer.Option(
            help='JSON list, e.g. [{"currency":"EUR","model":"flat","config":{"amount":"29"},"interval":"month"}]'
        ),
    ],
    as_json: Json = False,
) -> None:
    try:
        specs = json.loads(prices)
    except json.JSONDecodeError as exc:
        raise ValidationError("invalid_json", f"--prices is not valid JSON: {exc.msg}.", "prices") from None
    if not isinstance(specs, list):
        raise ValidationError("invalid_json", "--prices must be a JSON list.", "prices")
    remit = _app()
    with remit.uow() as uow:
        result = catalog.create_plan(uow, code, name, specs)
    show(result, as_json, "Plan created")


@plans_app.command("list")
@handle_errors
def plans_list(as_json: Json = False) -> None:
    from sqlalchemy import select

    from remit.adapters.db import tables as t

    remit = _app()
    with remit.uow() as uow:
        rows = [
            dict(r)
            for r in uow.conn.execute(
                select(
                    t.plans.c.code,
                    t.plans.c.name,
                    t.plan_versions.c.version,
                    t.prices.c.id.label("price_id"),
                    t.prices.c.currency,
                    t.prices.c.model,
                    t.prices.c.config,
                    t.prices.c.interval_unit,
                    t.prices.c.timing,
                )
                .join(t.plan_versions, t.plan_versions.c.plan_id == t.plans.c.id)
                .join(t.prices, t.prices.c.plan_version_id == t.plan_versions.c.id)
                .order_by(t.plans.c.code, t.plan_versions.c.version, t.prices.c.currency)
            ).mappings()
        ]
    show(rows, as_json, "Plans", ["code", "name", "version", "currency", "model", "config", "interval_unit", "timing"])


# --- subscriptions -------------------------------------------------------------------------------------------------


@subs_app.command("list")
@handle_errors
def subs_list(
    limit: Limit = 20,
    every: All = False,
    after: After = None,
    customer: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
    as_json: Json = False,
) -> None:
    remit = _app()
    with remit.uow() as uow:
        rows = all_pages(lambda n, a: views.list_subscriptions(uow, n, a or after, customer, status), limit, every)
    show(
        rows,
        as_json,
        "Subscriptions",
        ["id", "customer_id", "plan", "status", "interval_unit", "started_on", "trial_end_on", "ended_on"],
    )


@subs_app.command("show")
@handle_errors
def subs_show(subscription_id: str, as_json: Json = False) -> None:
    remit = _app()
    with remit.uow() as uow:
        row = subscriptions.get_subscription(uow, subscription_id)
    show(row, as_json, "Subscription")
    if not as_json:
        show(
            [{**e, "items": json.dumps(e["items"])} for e in row["events"]],
            False,
            "Timeline",
            ["seq", "effective_on", "kind", "items", "source", "revoked_at"],
        )


@subs_app.command("create")
@handle_errors
def subs_create(
    customer: Annotated[str, typer.Option()],
    plan: Annotated[str, typer.Option()],
    quantity: Annotated[str, typer.Option()] = "1",
    trial_days: Annotated[int | None, typer.Option("--trial-days")] = None,
    anchor: Annotated[str, typer.Option(help="anniversary, calendar or day_of_month")] = "anniversary",
    anchor_day: Annotated[int | None, typer.Option("--anchor-day")] = None,
    start_on: Annotated[str | None, typer.Option("--start-on")] = None,
    coupon: Annotated[str | None, typer.Option()] = None,
    promotion_code: Annotated[str | None, typer.Option("--promotion-code")] = None,
    phases: Annotated[str | None, typer.Option(help='JSON list: [{"on":"2026-04-01","plan":"pro"}]')] = None,
    add_ons: Annotated[
        str | None, typer.Option("--add-ons", help='JSON list: [{"price_id":"...","quantity":1}]')
    ] = None,
    as_json: Json = False,
) -> None:
    phase_list = _json_arg(phases, "phases") or []
    if not isinstance(phase_list, list):
        raise ValidationError("invalid_json", "--phases must be a JSON list.", "phases")
    for i, phase in enumerate(phase_list):
        if isinstance(phase, dict) and isinstance(phase.get("on"), str):
            phase["on"] = _date(phase["on"], f"phases[{i}].on")
    remit = _app()
    with remit.uow() as uow:
        sid = subscriptions.create_subscription(
            uow,
            customer,
            plan,
            quantity=quantity,
            trial_days=trial_days,
            anchor=anchor,
            anchor_day=anchor_day,
            start_on=_date(start_on, "start_on"),
            coupon=coupon,
            promotion_code=promotion_code,
        )
    show({"id": sid}, as_json, "Subscription created")


When = Annotated[str, typer.Option(help="now, period_end or a date YYYY-MM-DD")]


def _when(value: str) -> str | date:
    return value if value in ("now", "period_end") else (_date(value, "when") or "now")


@subs_app.command("change-plan")
@handle_errors
def subs_change_plan(
    subscription_id: str,
    plan: Annotated[str, typer.Option()],
    when: When = "now",
    quantity: Annotated[str | None, typer.Option()] = None,
    as_json: Json = False,
) -> None:
    """Upgrade or downgrade (now: prorated; period_end: from the next period)."""
    remit = _app()
    with remit.uow() as uow:
        result = subscriptions.change_plan(uow, subscription_id, plan, quantity=quantity, when=_when(when))
    show(result, as_json, "Plan changed")


@subs_app.command("change-quantity")
@handle_errors
def subs_change_quantity(
    subscription_id: str, quantity: Annotated[str, typer.Option()], when: When = "now", as_json: Json = False
) -> None:
    remit = _app()
    with remit.uow() as uow:
        result = subscriptions.change_quantity(uow, subscription_id, quantity, when=_when(when))
    show(result, as_json, "Quantity changed")


@subs_app.command("pause")
@handle_errors
def subs_pause(subscription_id: str, when: When = "now", as_json: Json = False) -> None:
    remit = _app()
    with remit.uow() as uow:
        result = subscriptions.pause(uow, subscription_id, when=_when(when))
    show(result, as_json, "Paused")


@subs_app.command("resume")
@handle_errors
def subs_resume(subscription_id: str, when: When = "now", as_json: Json = False) -> None:
    remit = _app()
    with remit.uow() as uow:
        result = subscriptions.resume(uow, subscription_id, when=_when(when))
    show(result, as_json, "Resumed")


@subs_app.command("cancel")
@handle_errors
def subs_cancel(
    subscription_id: str, at_period_end: Annotated[bool, typer.Option("--at-period-end")] = False, as_json: Json = False
) -> None:
    remit = _app()
    with remit.uow() as uow:
        result = subscriptions.cancel(uow, subscription_id, at_period_end=at_period_end)
    show(result, as_json, "Canceled")


# --- invoices ------------------------------------------------------------------------------------------------------


@invoices_app.command("list")
@handle_errors
def invoices_list(
    limit: Limit = 20,
    every: All = False,
    after: After = None,
    customer: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
    as_json: Json = False,
) -> None:
    remit = _app()
    with remit.uow() as uow:
        rows = all_pages(lambda n, a: views.list_invoices(uow, n, a or after, customer, status), limit, every)
    show(
        rows,
        as_json,
        "Invoices",
        ["id", "number", "customer_id", "status", "currency", "total", "amount_due", "issued_on", "due_on"],
    )


@invoices_app.command("show")
@handle_errors
def invoices_show(invoice_id: str, as_json: Json = False) -> None:
    remit = _app()
    with remit.uow() as uow:
        data = views.invoice_public(invoices.get_invoice(uow, invoice_id))
    show(data, as_json, f"Invoice {data['number'] or '(draft)'}")
    if not as_json:
        show(
            data["lines"],
            False,
            "Lines",
            [
                "id",
                "description",
                "kind",
                "service_start_on",
                "service_end_on",
                "quantity",
                "unit_price",
                "subtotal",
                "discount",
                "amount",
            ],
        )


def _invoice_action(action: Any, invoice_id: str, as_json: bool, title: str) -> None:
    remit = _app()
    with remit.uow() as uow:
        data = views.invoice_public(action(uow, invoice_id))
    show({k: v for k, v in data.items() if k != "lines"}, as_json, title)


@invoices_app.command("explain")
@handle_errors
def invoices_explain(invoice_id: str, line_id: str, as_json: Json = False) -> None:
    """Why a line says what it says: period, price, usage measured, tiers applied, corrections."""
    remit = _app()
    with remit.uow() as uow:
        data = explain.explain_line(uow, invoice_id, line_id)
    if as_json:
        show(data, True, "")
        return
    console.print(f"[bold]{data['description']}[/bold] ({data['kind']}, {data['amount']} {data['currency']})")
    for sentence in data["explanation"]:
        console.print(sentence, markup=False, highlight=False)


@invoices_app.command("finalize")
@handle_errors
def invoices_finalize(invoice_id: str, as_json: Json = False) -> None:
    _invoice_action(invoices.finalize, invoice_id, as_json, "Finalized")


@invoices_app.command("void")
@handle_errors
def invoices_void(invoice_id: str, as_json: Json = False) -> None:
    _invoice_action(invoices.void, invoice_id, as_json, "Voided")


@invoices_app.command("mark-uncollectible")
@handle_errors
def invoices_uncollectible(invoice_id: str, as_json: Json = False) -> None:
    _invoice_action(invoices.mark_uncollectible, invoice_id, as_json, "Marked uncollectible")


@invoices_app.command("pay")
@handle_errors
def invoices_pay(invoice_id: str, as_json: Json = False) -> None:
    """Record a payment received outside Remit."""
    _invoice_action(invoices.mark_paid, invoice_id, as_json, "Paid")


# --- credit notes --------------------------------------------------------------------------------------------------


@cn_app.command("create")
@handle_errors
def cn_create(
    invoice: Annotated[str, typer.Option()],
    amount: Annotated[str | None, typer.Option(help="Default: everything still creditable.")] = None,
    reason: Annotated[str, typer.Option()] = "other",
    memo: Annotated[str | None, typer.Option()] = None,
    as_json: Json = False,
) -> None:
    remit = _app()
    with remit.uow() as uow:
        note = credit_notes.issue_credit_note(uow, invoice, amount=amount, reason=reason, memo=memo)
    show(views.invoice_public(note), as_json, "Credit note issued")


@cn_app.command("list")
@handle_errors
def cn_list(limit: Limit = 20, every: All = False, after: After = None, as_json: Json = False) -> None:
    remit = _app()
    with remit.uow() as uow:
        rows = all_pages(lambda n, a: views.list_credit_notes(uow, n, a or after), limit, every)
    show(rows, as_json, "Credit notes", ["id", "number", "invoice_id", "reason", "amount", "currency", "to_balance"])


# --- test clocks ---------------------------------------------------------------------------------------------------


@clock_app.command("create")
@handle_errors
def clock_create(
    name: Annotated[str, typer.Option()],
    at: Annotated[str, typer.Option(help="ISO 8601 time")],
    legal_entity: Annotated[
        str | None, typer.Option("--legal-entity", help="It holds only this entity's customers.")
    ] = None,
    as_json: Json = False,
) -> None:
    remit = _app()
    frozen = _time(at, "at")
    assert frozen is not None
    with remit.uow() as uow:
        cid = accounts.create_test_clock(uow, name, frozen, legal_entity)
    show({"id": cid, "frozen_at": frozen}, as_json, "Test clock created")


@clock_app.command("advance")
@handle_errors
def clock_advance(
    clock_id: str,
    to: Annotated[str | None, typer.Option(help="ISO 8601 time")] = None,
    days: Annotated[int | None, typer.Option()] = None,
    as_json: Json = False,
) -> None:
    """Move a test clock forward; all work that falls due on the way runs, in order."""
    remit = _app()
    with remit.uow() as uow:
        frozen = accounts.get_test_clock(uow, clock_id)["frozen_at"]
    from datetime import timedelta

    target = _time(to, "to") if to else (frozen + timedelta(days=days) if days else None)
    if target is None:
        raise ValidationError("missing_field", "Give --to or --days.", "to")
    with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=console, disable=as_json) as progress:
        task = progress.add_task("Advancing", total=None)
        result = clocks.advance(
            remit.uow,
            clock_id,
            target,
            on_step=lambda at, n: progress.update(task, description=f"{at:%Y-%m-%d}: {n} invoices"),
        )
    show(result, as_json, "Test clock advanced")


@clock_app.command("list")
@handle_errors
def clock_list(as_json: Json = False) -> None:
    from sqlalchemy import select

    from remit.adapters.db import tables as t

    remit = _app()
    with remit.uow() as uow:
        rows = [
            dict(r) for r in uow.conn.execute(select(t.test_clocks).order_by(t.test_clocks.c.created_at)).mappings()
        ]
    show(rows, as_json, "Test clocks", ["id", "name", "frozen_at", "status", "legal_entity_id"])


events_app = typer.Typer(help="Domain events (the outbox), and usage events: import and cancel.", no_args_is_help=True)
app.add_typer(events_app, name="events")
events_app.command("import")(usage_cli.import_command)
events_app.command("cancel")(usage_cli.cancel_command)
app.add_typer(usage_cli.meters_app, name="meters")
app.add_typer(alerts_cli.usage_app, name="usage")
app.add_typer(alerts_cli.alerts_app, name="alerts")


@events_app.command("list")
@handle_errors
def events_list(
    limit: Limit = 50,
    type_: Annotated[
        str | None, typer.Option("--type", help='One type ("invoice.paid"), a family ("invoice.*") or "*".')
    ] = None,
    as_json: Json = False,
) -> None:
    """Domain events recorded with each change (the outbox), oldest first."""
    remit = _app()
    with remit.uow() as uow:
        rows = views.list_events(uow, page_size(limit), 0, type_)[:limit]
    show(rows, as_json, "Events", ["id", "type", "object_id", "customer_id", "created_at"])


def _json_arg(value: str | None, field: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            "invalid_json", f"--{field.replace('_', '-')} is not valid JSON: {exc.msg}.", field
        ) from None


prices_app = typer.Typer(help="Add-on and one-off prices, and per-customer overrides.", no_args_is_help=True)
coupons_app = typer.Typer(help="Coupons and promotion codes.", no_args_is_help=True)
items_app = typer.Typer(help="One-off charges for a customer's next invoice.", no_args_is_help=True)
app.add_typer(prices_app, name="prices")
app.add_typer(coupons_app, name="coupons")
app.add_typer(items_app, name="invoice-items")


@plans_app.command("publish-version")
@handle_errors
def plans_publish(
    code: Annotated[str, typer.Option()], prices: Annotated[str, typer.Option(help="JSON list")], as_json: Json = False
) -> None:
    """Publish a new version of a plan; current subscribers keep theirs until migrated."""
    specs = _json_arg(prices, "prices")
    if not isinstance(specs, list):
        raise ValidationError("invalid_json", "--prices must be a JSON list.", "prices")
    with _app().uow() as uow:
        result = catalog.publish_plan_version(uow, code, specs)
    show(result, as_json, "Version published")


@plans_app.command("migrate")
@handle_errors
def plans_migrate(
    code: Annotated[str, typer.Option()],
    to_version: Annotated[int, typer.Option("--to-version")],
    when: Annotated[str, typer.Option(help="now or period_end")] = "period_end",
    as_json: Json = False,
) -> None:
    """Move every subscriber of a plan to one of its versions."""
    with _app().uow() as uow:
        moved = subscriptions.migrate_plan_version(uow, code, to_version, when)
    show({"plan": code, "version": to_version, "subscriptions_moved": moved}, as_json, "Migrated")


@prices_app.command("create")
@handle_errors
def prices_create(
    product: Annotated[str, typer.Option(help="Product name (created if new).")],
    spec: Annotated[
        str,
        typer.Option(help='JSON, e.g. {"currency":"EUR","type":"one_off","model":"flat","config":{"amount":"500"}}'),
    ],
    kind: Annotated[str, typer.Option(help="add_on or one_off")] = "add_on",
    as_json: Json = False,
) -> None:
    data = _json_arg(spec, "spec")
    if not isinstance(data, dict):
        raise ValidationError("invalid_json", "--spec must be a JSON object.", "spec")
    with _app().uow() as uow:
        product_id = catalog.create_product(uow, product, kind)
        price_id = catalog.create_price(uow, product_id, data)
    show({"product_id": product_id, "price_id": price_id}, as_json, "Price created")


@prices_app.command("override")
@handle_errors
def prices_override(
    customer: Annotated[str, typer.Option()],
    price: Annotated[str, typer.Option()],
    model: Annotated[str, typer.Option()],
    config: Annotated[str, typer.Option(help="JSON")],
    as_json: Json = False,
) -> None:
    """A negotiated price for one customer, replacing the list price on their invoices."""
    cfg = _json_arg(config, "config")
    with _app().uow() as uow:
        override_id = catalog.set_price_override(uow, customer, price, model, cfg or {})
    show({"id": override_id}, as_json, "Override set")


@coupons_app.command("create")
@handle_errors
def coupons_create(
    code: Annotated[str, typer.Option()],
    name: Annotated[str, typer.Option()],
    percent_off: Annotated[str | None, typer.Option("--percent-off")] = None,
    amount_off: Annotated[str | None, typer.Option("--amount-off")] = None,
    currency: Annotated[str | None, typer.Option()] = None,
    duration: Annotated[str, typer.Option(help="once, repeating or forever")] = "once",
    duration_periods: Annotated[int | None, typer.Option("--duration-periods")] = None,
    max_redemptions: Annotated[int | None, typer.Option("--max-redemptions")] = None,
    redeem_by: Annotated[str | None, typer.Option("--redeem-by", help="ISO 8601 time")] = None,
    as_json: Json = False,
) -> None:
    with _app().uow() as uow:
        coupon_id = catalog.create_coupon(
            uow,
            code,
            name,
            percent_off=percent_off,
            amount_off=amount_off,
            currency_code=currency,
            duration=duration,
            duration_periods=duration_periods,
            max_redemptions=max_redemptions,
            redeem_by=_time(redeem_by, "redeem_by"),
        )
    show({"id": coupon_id, "code": code}, as_json, "Coupon created")


@coupons_app.command("promotion-code")
@handle_errors
def coupons_promo(
    coupon: Annotated[str, typer.Option()],
    code: Annotated[str, typer.Option()],
    max_redemptions: Annotated[int | None, typer.Option("--max-redemptions")] = None,
    expires_at: Annotated[str | None, typer.Option("--expires-at")] = None,
    as_json: Json = False,
) -> None:
    with _app().uow() as uow:
        promo_id = catalog.create_promotion_code(uow, coupon, code, max_redemptions, _time(expires_at, "expires_at"))
    show({"id": promo_id, "code": code}, as_json, "Promotion code created")


@subs_app.command("apply-coupon")
@handle_errors
def subs_apply_coupon(
    subscription_id: str,
    coupon: Annotated[str | None, typer.Option()] = None,
    promotion_code: Annotated[str | None, typer.Option("--promotion-code")] = None,
    as_json: Json = False,
) -> None:
    with _app().uow() as uow:
        subscriptions.apply_coupon(uow, subscription_id, coupon, promotion_code)
    show({"subscription_id": subscription_id, "applied": coupon or promotion_code}, as_json, "Coupon applied")


@subs_app.command("release-schedule")
@handle_errors
def subs_release(subscription_id: str, as_json: Json = False) -> None:
    """Withdraw changes that have not taken effect yet (scheduled plan changes, phases, a pending cancel)."""
    with _app().uow() as uow:
        released = subscriptions.release_scheduled(uow, subscription_id)
    show({"subscription_id": subscription_id, "released": released}, as_json, "Schedule released")


@items_app.command("create")
@handle_errors
def items_create(
    customer: Annotated[str, typer.Option()],
    price: Annotated[str | None, typer.Option()] = None,
    quantity: Annotated[str, typer.Option()] = "1",
    description: Annotated[str | None, typer.Option()] = None,
    unit_amount: Annotated[str | None, typer.Option("--unit-amount")] = None,
    as_json: Json = False,
) -> None:
    with _app().uow() as uow:
        item = credit_notes.add_one_off(
            uow, customer, price_id=price, quantity=quantity, description=description, unit_amount=unit_amount
        )
    show(views.invoice_public(item), as_json, "Charge added to the next invoice")


@invoices_app.command("add-line")
@handle_errors
def invoices_add_line(
    invoice_id: str,
    description: Annotated[str, typer.Option()],
    unit_price: Annotated[str, typer.Option("--unit-price")],
    quantity: Annotated[str, typer.Option()] = "1",
    as_json: Json = False,
) -> None:
    """Add a manual line to a draft invoice."""
    with _app().uow() as uow:
        data = invoices.add_draft_line(uow, invoice_id, description, quantity, unit_price)
    show(views.invoice_public(data), as_json, "Line added")


@invoices_app.command("remove-line")
@handle_errors
def invoices_remove_line(invoice_id: str, line: Annotated[str, typer.Option()], as_json: Json = False) -> None:
    with _app().uow() as uow:
        data = invoices.remove_draft_line(uow, invoice_id, line)
    show(views.invoice_public(data), as_json, "Line removed")


@invoices_app.command("delete-draft")
@handle_errors
def invoices_delete_draft(invoice_id: str, as_json: Json = False) -> None:
    with _app().uow() as uow:
        invoices.delete_draft(uow, invoice_id)
    show({"id": invoice_id, "deleted": True}, as_json, "Draft deleted")


keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
@handle_errors
def keys_create(
    scope: Annotated[list[str], typer.Option("--scope", help="read, write or admin; repeat for several.")],
    name: Annotated[str, typer.Option()] = "",
    legal_entity: Annotated[str | None, typer.Option("--legal-entity", help="Limit the key to one entity.")] = None,
    test: Annotated[bool, typer.Option("--test", help="A test-mode key (sees only test-clock customers).")] = False,
    expires_at: Annotated[str | None, typer.Option("--expires-at")] = None,
    as_json: Json = False,
) -> None:
    """Create an API key. The secret is printed once; Remit keeps only a hash."""
    from remit.service_layer import api_keys

    with _app().uow() as uow:
        key = api_keys.create_key(uow, name, scope, legal_entity, not test, _time(expires_at, "expires_at"))
    if as_json:
        show(
            {
                "id": key["id"],
                "secret": key["secret"],
                "scopes": key["scopes"],
                "legal_entity_id": key["legal_entity_id"],
                "livemode": key["livemode"],
            },
            True,
        )
        return
    show(key, False, "API key created: copy the secret now, it is not shown again")


@keys_app.command("revoke")
@handle_errors
def keys_revoke(key_id: str, as_json: Json = False) -> None:
    from remit.service_layer import api_keys

    with _app().uow() as uow:
        api_keys.revoke_key(uow, key_id)
    show({"id": key_id, "revoked": True}, as_json, "Revoked")


@app.command()
@handle_errors
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option(help="HTTP worker processes.")] = 1,
) -> None:
    """Serve the REST API (docs at /docs). On SQLite the webhook worker runs inside this process."""
    import uvicorn

    from remit.entrypoints.api.server import build_app

    remit = _app()  # create or migrate the schema before the server starts
    in_process = None
    if remit.engine.dialect.name == "sqlite":  # on PostgreSQL, run `remit worker` (any number of them)
        from remit.adapters.jobs.webhook_worker import start_in_thread

        in_process = start_in_thread(remit)
    # Access-log lines are info, below the warning level the server logs at; with the access log off uvicorn also
    # stops building each line's arguments (client address, path) on every request.
    try:
        if workers > 1:
            # One supervisor hands each connection to the worker holding fewest (see balancer.py for why).
            from remit.entrypoints.api.balancer import WorkerFailed
            from remit.entrypoints.api.balancer import serve as serve_balanced

            try:
                serve_balanced(host, port, workers, log_level="warning")
            except WorkerFailed as exc:
                typer.echo(f"error: {exc}; see its output above", err=True)
                raise typer.Exit(1) from None
        else:
            uvicorn.run(build_app(), host=host, port=port, log_level="warning", access_log=False)
    finally:
        if in_process is not None:
            in_process[1].set()
            in_process[0].join(timeout=15)


if __name__ == "__main__":  # pragma: no cover
    app()
