"""Domain events: every money-moving change, recorded in the same transaction as the change."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.domain.errors import NotFound
from remit.entrypoints.api import present
from remit.entrypoints.api.deps import Read
from remit.entrypoints.api.routes.common import CreatedGte, CreatedLte, Limit, StartingAfter, filters, page
from remit.entrypoints.api.schemas import EventPublic, ListOf
from remit.service_layer import views

router = APIRouter(tags=["events"])


@router.get("/events", response_model=ListOf[EventPublic])
def list_events(
    ctx: Read,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
    type: Annotated[str | None, Query(max_length=64)] = None,
    created_gte: CreatedGte = None,
    created_lte: CreatedLte = None,
) -> Any:
    """Oldest first. `starting_after` takes an event id (`evt_...`)."""
    after = 0
    with ctx.uow() as uow:
        if starting_after:
            found = uow.conn.execute(select(t.events.c.id).where(t.events.c.public_id == starting_after)).scalar()
            if found is None:  # a cursor that does not exist: not the first page again, which a client would loop on
                raise NotFound("event", starting_after, "starting_after")
            after = found
        rows = views.list_events(
            uow,
            limit + 1,
            after,
            type,
            vis=ctx.vis,
            filters=filters(None, None, created_gte, created_lte),
            shared=ctx.principal.legal_entity_id is None,
        )
    return page([present.event(r) for r in rows], limit)


@router.get("/events/{event_id}", response_model=EventPublic)
def get_event(event_id: str, ctx: Read) -> Any:
    with ctx.uow() as uow:
        row = uow.conn.execute(select(t.events).where(t.events.c.public_id == event_id)).mappings().first()
        if row is None or (row["customer_id"] is None and ctx.principal.legal_entity_id is not None):
            raise NotFound("event", event_id, "event_id")
        if row["customer_id"] is not None:
            ctx.vis.check_customer(uow, row["customer_id"], "event_id")
    return present.event(row)
