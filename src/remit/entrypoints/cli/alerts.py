"""`remit usage ...` (live usage, usage over time, stored events, usage thresholds) and `remit alerts ...` (usage
and spend alerts)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from remit.bootstrap import Settings, bootstrap
from remit.domain.errors import ValidationError
from remit.entrypoints.cli.output import MAX_PAGE, console, handle_errors, page_size, parse_date, parse_time, show
from remit.service_layer import alerts, live_usage, usage_events, usage_monitor, usage_series

usage_app = typer.Typer(help="Live usage, the events stored, and threshold billing.", no_args_is_help=True)
alerts_app = typer.Typer(help="Usage and spend alerts.", no_args_is_help=True)
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ALERT_COLUMNS = ["id", "customer_id", "subscription_id", "kind", "meter", "group", "thresholds", "currency"]


@usage_app.command("show")
@handle_errors
def usage_show(
    customer_id: str,
    subscription: Annotated[str | None, typer.Option("--subscription", help="Only this subscription.")] = None,
    as_json: Json = False,
) -> None:
    """The current period's usage and what it would cost right now (computed like the bill run; writes nothing)."""
    with bootstrap(Settings()).uow() as uow:
        data = live_usage.live_usage(uow, customer_id, subscription)
    if as_json:
        show(data, True)
        return
    rows = [
        {"subscription": s["subscription_id"], "period": f"{s['period']['start_on']} – {s['period']['end_on']}", **i}
        for s in data["subscriptions"]
        for i in s["items"]
    ]
    columns = ["subscription", "period", "meter", "group", "quantity", "billable_units", "amount", "billed"]
    show(rows, False, f"Usage as of {data['as_of']}", columns)
    console.print(f"Total {data['amount']} {data['currency']} ({data['unbilled']} not invoiced yet)")


@usage_app.command("events")
@handle_errors
def usage_events_(
    customer_id: str,
    meter: Annotated[str | None, typer.Option(help="Only this meter's events (its code).")] = None,
    since: Annotated[str | None, typer.Option(help="Events at or after this ISO 8601 time.")] = None,
    until: Annotated[str | None, typer.Option(help="Events before this ISO 8601 time.")] = None,
    transaction_id: Annotated[str | None, typer.Option(help="The event sent with this transaction id.")] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="With --meter: dimension=value, one per dimension.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Events per page (at most 1000).")] = 20,
    every: Annotated[bool, typer.Option("--all", help="Every event, not one page.")] = False,
    after: Annotated[str | None, typer.Option("--starting-after", help="Page after this event id.")] = None,
    as_json: Json = False,
) -> None:
    """The usage events stored for a customer, oldest first: what the meters will aggregate, and whether each
    passes its meter's filters."""
    gte, lt = parse_time(since, "since"), parse_time(until, "until")
    size = MAX_PAGE if every else page_size(limit)
    rows: list[dict[str, Any]] = []
    with bootstrap(Settings()).uow(read_only=True) as uow:
        while True:
            page = usage_events.list_usage_events(
                uow,
                customer_id,
                meter_code=meter,
                occurred_gte=gte,
                occurred_lt=lt,
                transaction_id=transaction_id,
                group=usage_events.group_pairs(group, "=", "--group"),
                limit=size,
                after=after,
            )
            rows.extend(page)
            if not every or len(page) < size:
                break
            after = page[-1]["id"]
    columns = ["occurred_at", "meter", "transaction_id", "value", "group", "counted", "id"]
    show(rows, as_json, f"Usage events of {customer_id}", columns)


@usage_app.command("threshold")
@handle_errors
def usage_threshold(
    subscription_id: str,
    amount: Annotated[
        str | None, typer.Option(help='Invoice usage at once when it reaches this, e.g. "100.00".')
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Stop threshold billing.")] = False,
    as_json: Json = False,
) -> None:
    """Set (or --clear) a subscription's usage threshold."""
    if (amount is None) == (not clear):
        raise ValidationError("invalid_option", "Give --amount or --clear.", "amount")
    with bootstrap(Settings()).uow() as uow:
        data = alerts.set_usage_threshold(uow, subscription_id, None if clear else amount)
    show(data, as_json, "Usage threshold")


@alerts_app.command("create")
@handle_errors
def alerts_create(
    customer: Annotated[str, typer.Option("--customer")],
    kind: Annotated[str, typer.Option(help="usage (a meter's quantity) or spend (the usage amount)")],
    threshold: Annotated[list[str], typer.Option("--threshold", help="Repeat for several, ascending.")],
    meter: Annotated[str | None, typer.Option(help="The meter (usage alerts).")] = None,
    group: Annotated[list[str] | None, typer.Option("--group", help="dimension=value; repeat for several.")] = None,
    subscription: Annotated[str | None, typer.Option("--subscription")] = None,
    as_json: Json = False,
) -> None:
    """Alert (event usage.alert_triggered, sent to webhooks) when usage or spend crosses thresholds."""
    with bootstrap(Settings()).uow() as uow:
        data = alerts.create_alert(
            uow,
            customer,
            kind,
            threshold,
            meter=meter,
            group=usage_events.group_pairs(group, "=", "--group"),
            subscription_id=subscription,
        )
    show(data, as_json, "Alert created")


@alerts_app.command("list")
@handle_errors
def alerts_list(
    customer: Annotated[str | None, typer.Option("--customer")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Rows per page (at most 1000).")] = 20,
    after: Annotated[str | None, typer.Option("--starting-after", help="Page after this id.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every row, not one page.")] = False,
    as_json: Json = False,
) -> None:
    size = MAX_PAGE if every else page_size(limit)  # --all reads pages of 1000, as every --all listing does
    rows: list[dict[str, Any]] = []
    with bootstrap(Settings()).uow() as uow:
        while True:
            found = alerts.list_alerts(uow, size, after, customer)
            rows.extend(found)
            if not every or len(found) < size:
                break
            after = found[-1]["id"]
    show(rows, as_json, "Alerts", ALERT_COLUMNS)


@alerts_app.command("delete")
@handle_errors
def alerts_delete(alert_id: str, as_json: Json = False) -> None:
    with bootstrap(Settings()).uow() as uow:
        data = alerts.delete_alert(uow, alert_id)
    show(data, as_json, "Alert deleted")


@alerts_app.command("evaluate")
@handle_errors
def alerts_evaluate(as_json: Json = False) -> None:
    """Evaluate alerts and usage thresholds now for real customers that received usage (what `remit worker`
    does continuously; useful from cron on SQLite without `remit serve`). Test clocks do it when advanced."""
    remit = bootstrap(Settings())
    result = usage_monitor.evaluate(remit.uow)
    show(
        {
            "customers": result.customers,
            "alerts_triggered": result.alerts_triggered,
            "invoices_created": len(result.invoice_ids),
        },
        as_json,
        "Usage evaluated",
    )


@usage_app.command("series")
@handle_errors
def usage_series_(
    customer_id: str,
    meter: Annotated[str, typer.Option(help="The meter's code.")],
    since: Annotated[str, typer.Option(help="The first day (YYYY-MM-DD, the customer's local day).")],
    until: Annotated[str, typer.Option(help="The day after the last.")],
    granularity: Annotated[str, typer.Option(help="day or hour.")] = "day",
    as_json: Json = False,
) -> None:
    """A customer's usage of one meter, day by day or hour by hour (as measured: before rounding and included
    units)."""
    start_on, end_on = parse_date(since, "since"), parse_date(until, "until")
    assert start_on is not None and end_on is not None  # both options are required
    with bootstrap(Settings()).uow(read_only=True) as uow:
        data = usage_series.usage_series(uow, customer_id, meter, start_on, end_on, granularity)
    if as_json:
        show(data, True)
        return
    title = f"{data['meter']} ({data['aggregation']}) by {granularity}, {data['timezone']}"
    show(data["data"], False, title, ["start", "end", "quantity", "events"])
