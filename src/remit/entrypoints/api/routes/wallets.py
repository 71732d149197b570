"""Wallets: prepaid credits, their grants and purchases, and their ledger."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from remit.adapters.db import tables as t
from remit.domain.errors import ValidationError
from remit.entrypoints.api.deps import Read, Write
from remit.entrypoints.api.routes.common import CustomerFilter, Limit, StartingAfter, StatusFilter, page
from remit.entrypoints.api.schemas import ListOf
from remit.entrypoints.api.wallet_schemas import (
    RecurringGrantCreate,
    RecurringGrantPublic,
    RecurringGrantUpdate,
    WalletCreate,
    WalletGrantCreate,
    WalletGrantPublic,
    WalletPublic,
    WalletTransactionPublic,
    WalletUpdate,
)
from remit.service_layer import wallets
from remit.service_layer.views import Filters

router = APIRouter(tags=["wallets"])


@router.post("/wallets", response_model=WalletPublic, status_code=201)
def create_wallet(body: WalletCreate, ctx: Write) -> Any:
    """A wallet of prepaid credits for a customer, in the customer's currency."""
    with ctx.uow() as uow:
        ctx.vis.check_customer(uow, body.customer_id)
        return wallets.create_wallet(
            uow,
            body.customer_id,
            name=body.name,
            priority=body.priority,
            rate=body.rate,
            currency_code=body.currency,
            top_up_threshold=body.top_up_threshold,
            top_up_credits=body.top_up_credits,
            top_up_expires_days=body.top_up_expires_days,
            applies_to=body.applies_to.model_dump() if body.applies_to else None,
            low_balance_threshold=body.low_balance_threshold,
        )


@router.get("/wallets", response_model=ListOf[WalletPublic])
def list_wallets(
    ctx: Read,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
    customer: CustomerFilter = None,
    status: StatusFilter = None,
) -> Any:
    with ctx.uow() as uow:
        rows = wallets.list_wallets(
            uow, limit + 1, starting_after, vis=ctx.vis, filters=Filters(customer_id=customer, status=status)
        )
    return page(rows, limit)


@router.get("/wallets/{wallet_id}", response_model=WalletPublic)
def get_wallet(wallet_id: str, ctx: Read) -> Any:
    """The wallet, its balance and its grants."""
    with ctx.uow() as uow:
        ctx.vis.check_owned(uow, t.wallets, wallet_id, "wallet", "wallet_id")
        return wallets.get_wallet(uow, wallet_id, with_grants=True)


@router.post("/wallets/{wallet_id}", response_model=WalletPublic)
def update_wallet(wallet_id: str, body: WalletUpdate, ctx: Write) -> Any:
    """Rename the wallet, change its priority or its automatic top-up. The rate never changes."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    if body.applies_to is not None:
        changes["applies_to"] = body.applies_to.model_dump()
    if changes.get("name", "") is None or changes.get("priority", 1) is None:
        raise ValidationError(
            "invalid_value", "name and priority cannot be null.", "name" if "name" in changes else "priority"
        )
    with ctx.uow() as uow:
        ctx.vis.check_owned(uow, t.wallets, wallet_id, "wallet", "wallet_id")
        return wallets.update_wallet(uow, wallet_id, changes)


@router.post("/wallets/{wallet_id}/grants", response_model=WalletGrantPublic, status_code=201)
def grant_credits(wallet_id: str, body: WalletGrantCreate, ctx: Write) -> Any:
    """Give credits (free, granted now) or sell them (`paid`: an invoice, granted when it is paid)."""
    with ctx.uow() as uow:
        ctx.vis.check_owned(uow, t.wallets, wallet_id, "wallet", "wallet_id")
        return wallets.grant(
            uow,
            wallet_id,
            body.credits,
            paid=body.paid,
            expires_at=body.expires_at,
            grant_before_payment=body.grant_before_payment,
        )


@router.get("/wallets/{wallet_id}/transactions", response_model=ListOf[WalletTransactionPublic])
def list_transactions(wallet_id: str, ctx: Read, limit: Limit = 20, starting_after: StartingAfter = None) -> Any:
    """The wallet's ledger, in the order it was recorded: grants, consumptions by invoices, expiries, voids."""
    with ctx.uow() as uow:
        ctx.vis.check_owned(uow, t.wallets, wallet_id, "wallet", "wallet_id")
        return page(wallets.list_transactions(uow, wallet_id, limit + 1, starting_after), limit)


@router.post("/wallets/{wallet_id}/void", response_model=WalletPublic)
def void_wallet(wallet_id: str, ctx: Write) -> Any:
    """Close the wallet; what remains of its credits is voided."""
    with ctx.uow() as uow:
        ctx.vis.check_owned(uow, t.wallets, wallet_id, "wallet", "wallet_id")
        return wallets.void_wallet(uow, wallet_id)


@router.post("/wallets/{wallet_id}/recurring_grants", response_model=RecurringGrantPublic, status_code=201)
def create_recurring_grant(wallet_id: str, body: RecurringGrantCreate, ctx: Write) -> Any:
    """Give (or sell, `paid`) the same credits every interval: each occurrence is a grant of its own, made at the
    start of its day in the customer's time zone (by the bill run that follows)."""
    with ctx.uow() as uow:
        ctx.vis.check_owned(uow, t.wallets, wallet_id, "wallet", "wallet_id")
        return wallets.create_recurring_grant(
            uow,
            wallet_id,
            body.credits,
            interval=body.interval,
            interval_count=body.interval_count,
            starts_on=body.starts_on,
            ends_on=body.ends_on,
            paid=body.paid,
            grant_before_payment=body.grant_before_payment,
            expires_days=body.expires_days,
        )


@router.get("/wallets/{wallet_id}/recurring_grants", response_model=ListOf[RecurringGrantPublic])
def list_recurring_grants(wallet_id: str, ctx: Read) -> Any:
    """The wallet's recurring grants, oldest first, all in one list: active, ended and canceled."""
    with ctx.uow() as uow:
        ctx.vis.check_owned(uow, t.wallets, wallet_id, "wallet", "wallet_id")
        return {"object": "list", "data": wallets.list_recurring_grants(uow, wallet_id), "has_more": False}


@router.post("/wallets/{wallet_id}/recurring_grants/{recurring_grant_id}", response_model=RecurringGrantPublic)
def update_recurring_grant(wallet_id: str, recurring_grant_id: str, body: RecurringGrantUpdate, ctx: Write) -> Any:
    """Change the credits, the end day or the expiry of the occurrences to come."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    if "credits" in changes and changes["credits"] is None:
        raise ValidationError("invalid_value", "credits cannot be null.", "credits")
    with ctx.uow() as uow:
        ctx.vis.check_owned(uow, t.wallets, wallet_id, "wallet", "wallet_id")
        return wallets.update_recurring_grant(uow, wallet_id, recurring_grant_id, changes)


@router.delete("/wallets/{wallet_id}/recurring_grants/{recurring_grant_id}", response_model=RecurringGrantPublic)
def cancel_recurring_grant(wallet_id: str, recurring_grant_id: str, ctx: Write) -> Any:
    """Stop a recurring grant. Occurrences already due are granted first; credits granted stay."""
    with ctx.uow() as uow:
        ctx.vis.check_owned(uow, t.wallets, wallet_id, "wallet", "wallet_id")
        return wallets.cancel_recurring_grant(uow, wallet_id, recurring_grant_id)
