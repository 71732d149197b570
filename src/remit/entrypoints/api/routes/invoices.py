"""Invoices and their lifecycle, one-off charges, credit notes and bill runs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from remit.adapters.db import tables as t
from remit.domain.errors import NotFound, ValidationError
from remit.entrypoints.api import present
from remit.entrypoints.api.deps import Admin, Read, Write
from remit.entrypoints.api.routes.common import (
    CreatedGte,
    CreatedLte,
    CustomerFilter,
    Expand,
    Limit,
    StartingAfter,
    StatusFilter,
    filters,
    page,
)
from remit.entrypoints.api.schemas import (
    BillRunCreate,
    BillRunFailurePublic,
    BillRunPublic,
    CreditNoteCreate,
    CreditNotePublic,
    InvoiceItemCreate,
    InvoiceItemPublic,
    InvoiceLineExplanation,
    InvoicePublic,
    ListOf,
)
from remit.service_layer import bill_run, credit_notes, explain, invoices, views

router = APIRouter()


def _show(uow: Any, invoice_id: str, expand: list[str] | None = None) -> dict[str, Any]:
    data = present.invoice(invoices.get_invoice(uow, invoice_id))
    if expand and "customer" in expand:
        data["customer"] = present.customer_by_id(uow, data["customer_id"])
    return data


@router.get("/invoices", response_model=ListOf[InvoicePublic], tags=["invoices"])
def list_invoices(
    ctx: Read,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
    customer: CustomerFilter = None,
    status: StatusFilter = None,
    created_gte: CreatedGte = None,
    created_lte: CreatedLte = None,
    expand: Expand = None,
) -> Any:
    with ctx.uow() as uow:
        rows = views.list_invoices(
            uow, limit + 1, starting_after, vis=ctx.vis, filters=filters(customer, status, created_gte, created_lte)
        )
        data = [present.invoice(r) for r in rows]
        present.expand_customers(uow, data[:limit], expand)
    return page(data, limit)


@router.get("/invoices/{invoice_id}", response_model=InvoicePublic, tags=["invoices"])
def get_invoice(invoice_id: str, ctx: Read, expand: Expand = None) -> Any:
    with ctx.uow() as uow:
        ctx.vis.check_owned(uow, t.invoices, invoice_id, "invoice", "invoice_id")
        return _show(uow, invoice_id, expand)


@router.get(
    "/invoices/{invoice_id}/lines/{line_id}/explain",
    response_model=InvoiceLineExplanation,
    tags=["invoices"],
    summary="Explain an invoice line",
)
def explain_line(invoice_id: str, line_id: str, ctx: Read) -> Any:
    """How a line's amount came about: the period, the price and its model's breakdown, and for usage the
    meter, its aggregation, the time measured, the quantity, included and billable units; the line it corrects
    and the lines that corrected it. Read from what was recorded when the line was written."""
    with ctx.uow() as uow:
        ctx.vis.check_owned(uow, t.invoices, invoice_id, "invoice", "invoice_id")
        return explain.explain_line(uow, invoice_id, line_id)


def _action(ctx: Any, invoice_id: str, action: Any) -> Any:
    with ctx.uow() as uow:
        ctx.vis.check_owned(uow, t.invoices, invoice_id, "invoice", "invoice_id")
        return present.invoice(action(uow, invoice_id))


@router.post("/invoices/{invoice_id}/finalize", response_model=InvoicePublic, tags=["invoices"])
def finalize(invoice_id: str, ctx: Write) -> Any:
    """Number the draft, apply customer credit and open it for payment."""
    return _action(ctx, invoice_id, invoices.finalize)


@router.post("/invoices/{invoice_id}/void", response_model=InvoicePublic, tags=["invoices"])
def void(invoice_id: str, ctx: Write) -> Any:
    return _action(ctx, invoice_id, invoices.void)


@router.post("/invoices/{invoice_id}/mark_uncollectible", response_model=InvoicePublic, tags=["invoices"])
def mark_uncollectible(invoice_id: str, ctx: Write) -> Any:
    return _action(ctx, invoice_id, invoices.mark_uncollectible)


@router.post("/invoices/{invoice_id}/pay", response_model=InvoicePublic, tags=["invoices"])
def pay(invoice_id: str, ctx: Write) -> Any:
    """Record a payment received outside Remit."""
    return _action(ctx, invoice_id, invoices.mark_paid)


@router.post("/invoice_items", response_model=InvoiceItemPublic, status_code=201, tags=["invoices"])
def create_invoice_item(body: InvoiceItemCreate, ctx: Write) -> Any:
    """A one-off charge billed on the customer's next invoice."""
    with ctx.uow() as uow:
        ctx.vis.check_customer(uow, body.customer_id)
        item = credit_notes.add_one_off(
            uow,
            body.customer_id,
            price_id=body.price_id,
            quantity=body.quantity,
            description=body.description,
            unit_amount=body.unit_amount,
        )
    return {**item, "amount": views.money(item["amount_minor"], item["currency"])}


@router.post("/credit_notes", response_model=CreditNotePublic, status_code=201, tags=["credit notes"])
def create_credit_note(body: CreditNoteCreate, ctx: Write) -> Any:
    """Credit a finalized invoice in whole (no amount, no lines), by a lump sum, or line by line."""
    if body.amount is not None and body.lines:
        raise ValidationError("ambiguous_credit", "Give an amount or lines, not both.", "amount")
    with ctx.uow() as uow:
        ctx.vis.check_owned(uow, t.invoices, body.invoice_id, "invoice", "invoice_id")
        note = credit_notes.issue_credit_note(
            uow,
            body.invoice_id,
            amount=body.amount,
            lines=[ln.model_dump() for ln in body.lines],
            reason=body.reason,
            memo=body.memo,
        )
    return views.invoice_public(note)


@router.get("/credit_notes", response_model=ListOf[CreditNotePublic], tags=["credit notes"])
def list_credit_notes(
    ctx: Read,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
    customer: CustomerFilter = None,
    created_gte: CreatedGte = None,
    created_lte: CreatedLte = None,
) -> Any:
    with ctx.uow() as uow:
        return page(
            views.list_credit_notes(
                uow, limit + 1, starting_after, vis=ctx.vis, filters=filters(customer, None, created_gte, created_lte)
            ),
            limit,
        )


@router.post("/bill_runs", response_model=BillRunPublic, status_code=201, tags=["bill runs"])
def create_bill_run(body: BillRunCreate, ctx: Admin) -> Any:
    """Bill everything due for customers on the real clock, as of now or an earlier time."""
    ctx.require_unscoped("A bill run")
    ctx.require_live("A bill run")
    now = ctx.remit.clock.now()
    as_of = views.utc_time(body.as_of, "as_of") if body.as_of else now  # without an offset: UTC
    if as_of > now:
        raise ValidationError("as_of_in_future", "A bill run cannot look into the future; use a test clock.", "as_of")
    result = bill_run.run(ctx.remit.uow, as_of)
    return _bill_run(ctx, result.id)


def _bill_run(ctx: Any, run_id: str) -> Any:
    """A bill run spans every legal entity of its world (the real one for a live key, test clocks for a test
    key): keys limited to one entity see only the failures of their own customers (``/failures``)."""
    ctx.require_unscoped("A bill run")
    with ctx.uow() as uow:
        row = views.get_bill_run(uow, run_id, livemode=ctx.principal.livemode)
    if row is None:
        raise NotFound("bill_run", run_id, "run_id")
    return row


@router.get("/bill_runs", response_model=ListOf[BillRunPublic], tags=["bill runs"])
def list_bill_runs(
    ctx: Admin,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
    test_clock: Annotated[
        str | None, Query(max_length=40, description="Test-mode keys: only the runs of this test clock's advances.")
    ] = None,
) -> Any:
    """Bill runs, oldest first: of real customers for a live key; of test clocks (each advance bills its
    clock's customers) for a test key."""
    ctx.require_unscoped("A bill run")
    with ctx.uow() as uow:
        if test_clock is not None:
            ctx.vis.check_clock(uow, test_clock, "test_clock")
        runs = views.list_bill_runs(
            uow, limit + 1, starting_after, livemode=ctx.principal.livemode, test_clock_id=test_clock
        )
        return page(runs, limit)


@router.get("/bill_runs/{run_id}", response_model=BillRunPublic, tags=["bill runs"])
def get_bill_run(run_id: str, ctx: Admin) -> Any:
    return _bill_run(ctx, run_id)


@router.get("/bill_runs/{run_id}/failures", response_model=ListOf[BillRunFailurePublic], tags=["bill runs"])
def list_bill_run_failures(run_id: str, ctx: Admin, limit: Limit = 20, starting_after: StartingAfter = None) -> Any:
    """The customers the run could not bill (of the key's legal entity, for a key limited to one), with why;
    paged by customer id. Nothing of their attempt was written, and every later run tries them again."""
    with ctx.uow() as uow:
        if views.get_bill_run(uow, run_id, livemode=ctx.principal.livemode) is None:
            raise NotFound("bill_run", run_id, "run_id")
        return page(views.list_bill_run_failures(uow, run_id, limit + 1, starting_after, vis=ctx.vis), limit)
