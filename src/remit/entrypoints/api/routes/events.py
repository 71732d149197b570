"""Domain events: every money-moving change, recorded in the same transaction as the change."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.domain.errors import NotFound
from remit.entrypoints.api import present
from remit.entrypoints.api.deps import Ctx, Read
from remit.entrypoints.api.routes.common import (
    CreatedGte,
    CreatedLte,
    CustomerFilter,
    Limit,
    StartingAfter,
    filters,
    page,
)
from remit.entrypoints.api.schemas import EventPublic, ListOf
from remit.service_layer import views

router = APIRouter(tags=["events"])


@router.get("/events", response_model=ListOf[EventPublic])
def list_events(
    ctx: Read,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
    type: Annotated[
        str | None,
        Query(max_length=64, description='One event type ("invoice.paid"), a family ("invoice.*") or "*".'),
    ] = None,
    customer: CustomerFilter = None,
    created_gte: CreatedGte = None,
    created_lte: CreatedLte = None,
) -> Any:
    """Oldest first. `starting_after` takes an event id (`evt_...`). `customer`: only that customer's events."""
    after = 0
    with ctx.uow() as uow:
        if starting_after:
            # A cursor that does not exist (or that the key may not see): not the first page again, which a client
            # would loop on.
            after = _seen(uow, ctx, starting_after, "starting_after")["id"]
        rows = views.list_events(
            uow,
            limit + 1,
            after,
            type,
            vis=ctx.vis,
            filters=filters(customer, None, created_gte, created_lte),
            shared=ctx.principal.legal_entity_id is None,
        )
    return page([present.event(r) for r in rows], limit)


@router.get("/events/{event_id}", response_model=EventPublic)
def get_event(event_id: str, ctx: Read) -> Any:
    with ctx.uow() as uow:
        row = _seen(uow, ctx, event_id, "event_id")
    return present.event(row)


def _seen(uow: Any, ctx: Ctx, event_id: str, field: str) -> Any:
    """The event, if the key may see it: one of a customer it sees, or (keys not limited to a legal entity) of
    no customer. Otherwise ``event_not_found``, exactly as for an event that does not exist."""
    row = uow.conn.execute(select(t.events).where(t.events.c.public_id == event_id)).mappings().first()
    if row is None:
        raise NotFound("event", event_id, field)
    if row["customer_id"] is None:
        seen = ctx.principal.legal_entity_id is None
    else:
        customer = uow.conn.execute(select(t.customers).where(t.customers.c.id == row["customer_id"])).mappings()
        found = customer.first()
        seen = found is not None and ctx.vis.sees_customer(found)
    if not seen:
        raise NotFound("event", event_id, field)
    return row
