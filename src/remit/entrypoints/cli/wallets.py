"""`remit wallets ...`: prepaid credits from the command line."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from remit.bootstrap import Settings, bootstrap
from remit.domain.errors import ValidationError
from remit.entrypoints.cli.output import all_pages, handle_errors, parse_date, parse_time, show
from remit.service_layer import wallets
from remit.service_layer.views import Filters

wallets_app = typer.Typer(help="Wallets: prepaid credits, their grants and their ledger.", no_args_is_help=True)
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Limit = Annotated[int, typer.Option("--limit", help="Rows per page (at most 1000).")]
All = Annotated[bool, typer.Option("--all", help="Every row, not one page.")]
After = Annotated[str | None, typer.Option("--starting-after", help="Page after this id.")]
FeeTypes = Annotated[
    list[str] | None,
    typer.Option("--fee-type", help="Pay only fees of this type: fixed, usage, commitment, one_off (repeat for more)."),
]
LowBalance = Annotated[
    str | None, typer.Option(help="A wallet.balance_low event when the balance falls under this many credits.")
]
Meters = Annotated[list[str] | None, typer.Option("--meter", help="Pay only usage of this meter (repeat for more).")]
Prices = Annotated[list[str] | None, typer.Option("--price", help="Pay only fees of this price (repeat for more).")]


def _applies_to(fee_types: list[str] | None, meters: list[str] | None, prices: list[str] | None) -> Any:
    if not (fee_types or meters or prices):
        return None
    return {"fee_types": fee_types or [], "meters": meters or [], "prices": prices or []}


WALLET_COLUMNS = ["id", "customer_id", "name", "priority", "rate", "status", "balance_credits", "balance", "currency"]


@wallets_app.command("create")
@handle_errors
def create(
    customer: Annotated[str, typer.Option(help="The customer's id.")],
    name: Annotated[str | None, typer.Option()] = None,
    priority: Annotated[int, typer.Option(help="1 (consumed first) to 100.")] = 1,
    rate: Annotated[str, typer.Option(help="Money per credit: 1 for credits that are money.")] = "1",
    top_up_threshold: Annotated[str | None, typer.Option(help="Buy --top-up-credits under this balance.")] = None,
    top_up_credits: Annotated[str | None, typer.Option()] = None,
    top_up_expires_days: Annotated[int | None, typer.Option()] = None,
    fee_type: FeeTypes = None,
    meter: Meters = None,
    price: Prices = None,
    low_balance_threshold: LowBalance = None,
    as_json: Json = False,
) -> None:
    """A wallet for a customer, in the customer's currency; limited to some fees with --fee-type, --meter or
    --price (a fee matching any of them)."""
    with bootstrap(Settings()).uow() as uow:
        data = wallets.create_wallet(
            uow,
            customer,
            name=name,
            priority=priority,
            rate=rate,
            top_up_threshold=top_up_threshold,
            top_up_credits=top_up_credits,
            top_up_expires_days=top_up_expires_days,
            applies_to=_applies_to(fee_type, meter, price),
            low_balance_threshold=low_balance_threshold,
        )
    show(data, as_json, "Wallet created")


@wallets_app.command("update")
@handle_errors
def update_(
    wallet_id: str,
    name: Annotated[str | None, typer.Option()] = None,
    priority: Annotated[int | None, typer.Option(help="1 (consumed first) to 100.")] = None,
    top_up_threshold: Annotated[str | None, typer.Option()] = None,
    top_up_credits: Annotated[str | None, typer.Option()] = None,
    top_up_expires_days: Annotated[int | None, typer.Option()] = None,
    no_top_up: Annotated[bool, typer.Option("--no-top-up", help="Turn automatic top-up off.")] = False,
    fee_type: FeeTypes = None,
    meter: Meters = None,
    price: Prices = None,
    any_fee: Annotated[bool, typer.Option("--any-fee", help="Let it pay any fee again.")] = False,
    low_balance_threshold: LowBalance = None,
    no_low_balance: Annotated[bool, typer.Option("--no-low-balance", help="No low-balance event.")] = False,
    as_json: Json = False,
) -> None:
    """Rename a wallet, change its priority, the fees it may pay (the options replace the old limit; --any-fee
    lifts it) or its automatic top-up (the top-up options replace the old ones)."""
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if priority is not None:
        changes["priority"] = priority
    top_up = {
        "top_up_threshold": top_up_threshold,
        "top_up_credits": top_up_credits,
        "top_up_expires_days": top_up_expires_days,
    }
    given = any(v is not None for v in top_up.values())
    if no_top_up and given:
        raise ValidationError("invalid_choice", "--no-top-up takes no other top-up option.", "no_top_up")
    if no_top_up or given:
        changes.update(top_up)
    scope = _applies_to(fee_type, meter, price)
    if any_fee and scope is not None:
        raise ValidationError("invalid_choice", "--any-fee takes no --fee-type, --meter or --price.", "any_fee")
    if any_fee or scope is not None:
        changes["applies_to"] = scope
    if no_low_balance and low_balance_threshold is not None:
        raise ValidationError(
            "invalid_choice", "--no-low-balance takes no --low-balance-threshold.", "low_balance_threshold"
        )
    if no_low_balance or low_balance_threshold is not None:
        changes["low_balance_threshold"] = low_balance_threshold
    with bootstrap(Settings()).uow() as uow:
        data = wallets.update_wallet(uow, wallet_id, changes)
    show(data, as_json, "Wallet updated")


@wallets_app.command("list")
@handle_errors
def list_(
    customer: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option(help="active or voided")] = None,
    limit: Limit = 20,
    every: All = False,
    after: After = None,
    as_json: Json = False,
) -> None:
    with bootstrap(Settings()).uow() as uow:
        rows = all_pages(
            lambda n, a: wallets.list_wallets(uow, n, a or after, filters=Filters(customer_id=customer, status=status)),
            limit,
            every,
        )
    show(rows, as_json, "Wallets", WALLET_COLUMNS)


@wallets_app.command("show")
@handle_errors
def show_(wallet_id: str, as_json: Json = False) -> None:
    """The wallet, its balance and its grants."""
    with bootstrap(Settings()).uow() as uow:
        data = wallets.get_wallet(uow, wallet_id, with_grants=True)
    show(data, as_json, f"Wallet {data['name']}")
    if not as_json:
        columns = ["id", "kind", "status", "credits", "remaining_credits", "remaining", "expires_at", "invoice_id"]
        show(data["grants"], False, "Grants", columns)


@wallets_app.command("grant")
@handle_errors
def grant(
    wallet_id: str,
    credits: Annotated[str, typer.Option(help="How many credits, e.g. 100 or 2500.5.")],
    paid: Annotated[bool, typer.Option("--paid", help="Sell them: an invoice; granted when it is paid.")] = False,
    grant_before_payment: Annotated[
        bool, typer.Option("--grant-before-payment", help="With --paid: grant them now.")
    ] = False,
    expires_at: Annotated[str | None, typer.Option(help="ISO 8601 time when what is left expires.")] = None,
    as_json: Json = False,
) -> None:
    """Give credits (free, now) or sell them (--paid)."""
    with bootstrap(Settings()).uow() as uow:
        data = wallets.grant(
            uow,
            wallet_id,
            credits,
            paid=paid,
            expires_at=parse_time(expires_at, "expires_at"),
            grant_before_payment=grant_before_payment,
        )
    show(data, as_json, "Credits granted" if data["status"] == "active" else "Credits sold: granted when paid")


@wallets_app.command("transactions")
@handle_errors
def transactions(
    wallet_id: str, limit: Limit = 20, every: All = False, after: After = None, as_json: Json = False
) -> None:
    """The wallet's ledger: grants, consumptions by invoices, expiries and voids, in the order recorded."""
    with bootstrap(Settings()).uow() as uow:
        rows = all_pages(lambda n, a: wallets.list_transactions(uow, wallet_id, n, a or after), limit, every)
    show(rows, as_json, "Wallet ledger", ["id", "created_at", "kind", "credits", "amount", "invoice_id", "grant_id"])


@wallets_app.command("void")
@handle_errors
def void(wallet_id: str, as_json: Json = False) -> None:
    """Close the wallet; what remains of its credits is voided."""
    with bootstrap(Settings()).uow() as uow:
        data = wallets.void_wallet(uow, wallet_id)
    show(data, as_json, "Wallet voided")


# --- recurring grants ------------------------------------------------------------------------------------------------

recurring_app = typer.Typer(help="Recurring grants: the same credits every interval.", no_args_is_help=True)
wallets_app.add_typer(recurring_app, name="recurring")
RECURRING_COLUMNS = ["id", "credits", "interval", "interval_count", "paid", "status", "next_grant_on", "grants_made"]


@recurring_app.command("create")
@handle_errors
def recurring_create(
    wallet_id: str,
    credits: Annotated[str, typer.Option(help="Credits per occurrence, e.g. 1000.")],
    every: Annotated[str, typer.Option(help="day, week, month, quarter or year.")] = "month",
    count: Annotated[int, typer.Option(help="Every COUNT intervals (2 with month: every other month).")] = 1,
    starts_on: Annotated[
        str | None, typer.Option(help="First day (YYYY-MM-DD), today or later; default today.")
    ] = None,
    ends_on: Annotated[str | None, typer.Option(help="No occurrence on or after this day.")] = None,
    paid: Annotated[bool, typer.Option("--paid", help="Sell them: an invoice each time; granted when paid.")] = False,
    grant_before_payment: Annotated[
        bool, typer.Option("--grant-before-payment", help="With --paid: grant them at once.")
    ] = False,
    expires_days: Annotated[
        int | None, typer.Option(help="Each grant expires this many days after it is made.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Give (or sell) the same credits every interval, from today or a later day."""
    with bootstrap(Settings()).uow() as uow:
        data = wallets.create_recurring_grant(
            uow,
            wallet_id,
            credits,
            interval=every,
            interval_count=count,
            starts_on=parse_date(starts_on, "starts_on"),
            ends_on=parse_date(ends_on, "ends_on"),
            paid=paid,
            grant_before_payment=grant_before_payment,
            expires_days=expires_days,
        )
    show(data, as_json, "Recurring grant created")


@recurring_app.command("update")
@handle_errors
def recurring_update(
    wallet_id: str,
    recurring_grant_id: str,
    credits: Annotated[str | None, typer.Option(help="Credits per occurrence from now on.")] = None,
    ends_on: Annotated[str | None, typer.Option(help="No occurrence on or after this day.")] = None,
    no_end: Annotated[bool, typer.Option("--no-end", help="Remove the end day.")] = False,
    expires_days: Annotated[
        int | None, typer.Option(help="Each grant expires this many days after it is made.")
    ] = None,
    no_expiry: Annotated[bool, typer.Option("--no-expiry", help="Grants from now on never expire.")] = False,
    as_json: Json = False,
) -> None:
    """Change what a recurring grant gives from now on (occurrences already due are granted first)."""
    changes: dict[str, Any] = {}
    if credits is not None:
        changes["credits"] = credits
    for flag, value, name, field in (
        (no_end, ends_on, "--no-end", "ends_on"),
        (no_expiry, expires_days, "--no-expiry", "expires_days"),
    ):
        if flag and value is not None:
            raise ValidationError("invalid_choice", f"{name} takes no value for {field}.", field)
        if flag:
            changes[field] = None
    if ends_on is not None:
        changes["ends_on"] = parse_date(ends_on, "ends_on")
    if expires_days is not None:
        changes["expires_days"] = expires_days
    with bootstrap(Settings()).uow() as uow:
        data = wallets.update_recurring_grant(uow, wallet_id, recurring_grant_id, changes)
    show(data, as_json, "Recurring grant updated")


@recurring_app.command("list")
@handle_errors
def recurring_list(wallet_id: str, as_json: Json = False) -> None:
    """The wallet's recurring grants: active, ended and canceled."""
    with bootstrap(Settings()).uow() as uow:
        rows = wallets.list_recurring_grants(uow, wallet_id)
    show(rows, as_json, "Recurring grants", RECURRING_COLUMNS)


@recurring_app.command("cancel")
@handle_errors
def recurring_cancel(wallet_id: str, recurring_grant_id: str, as_json: Json = False) -> None:
    """Stop a recurring grant (occurrences already due are granted first; credits granted stay)."""
    with bootstrap(Settings()).uow() as uow:
        data = wallets.cancel_recurring_grant(uow, wallet_id, recurring_grant_id)
    show(data, as_json, "Recurring grant canceled")
