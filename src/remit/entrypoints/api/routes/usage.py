"""Usage metering: meters, and usage events in one by one or in batches."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from remit.adapters import fastjson
from remit.adapters.db import tables as t
from remit.domain.errors import NotFound, ValidationError
from remit.entrypoints.api.deps import Ctx, Read, Write
from remit.entrypoints.api.routes.common import Limit, StartingAfter, page
from remit.entrypoints.api.schemas import ListOf
from remit.entrypoints.api.usage_schemas import (
    MeterCreate,
    MeterPublic,
    MeterUpdate,
    UsageBatchIn,
    UsageBatchResult,
    UsageCancelIn,
    UsageCancelResult,
    UsageEventIn,
    UsageEventPublic,
    UsageEventResult,
)
from remit.service_layer import meters, usage, usage_cancellation, usage_events, views

router = APIRouter(tags=["usage"])


@router.post("/meters", response_model=MeterPublic, status_code=201)
def create_meter(body: MeterCreate, ctx: Write) -> Any:
    with ctx.uow() as uow:
        meter_id = usage.create_meter(
            uow,
            body.code,
            body.name,
            body.aggregation,
            body.field,
            body.filters,
            body.group_by,
            body.expression,
            body.rounding,
            body.rounding_precision,
            body.carry_over,
        )
        return _meter(uow.conn.execute(select(t.meters).where(t.meters.c.id == meter_id)).mappings().one())


def _meter(row: Any) -> dict[str, Any]:
    return {**row, "active": row["deactivated_at"] is None}


@router.get("/meters", response_model=ListOf[MeterPublic])
def list_meters(ctx: Read, limit: Limit = 20, starting_after: StartingAfter = None) -> Any:
    with ctx.uow() as uow:
        rows = views.page(uow, select(t.meters), t.meters.c.id, limit + 1, starting_after)
        return page([_meter(r) for r in rows], limit)


@router.get("/meters/{code}", response_model=MeterPublic)
def get_meter(code: str, ctx: Read) -> Any:
    """One meter, by its code."""
    with ctx.uow() as uow:
        row = uow.conn.execute(select(t.meters).where(t.meters.c.code == code)).mappings().first()
    if row is None:
        raise NotFound("meter", code, "code", by="code")
    return _meter(row)


@router.post("/meters/{code}", response_model=MeterPublic)
def update_meter(code: str, body: MeterUpdate, ctx: Write) -> Any:
    """Rename a meter. What it measures never changes: create another meter to measure differently."""
    ctx.require_catalog_owner("Renaming a meter")
    with ctx.uow() as uow:
        return _meter(meters.rename_meter(uow, code, body.name))


@router.post("/meters/{code}/deactivate", response_model=MeterPublic)
def deactivate_meter(code: str, ctx: Write) -> Any:
    """Refuse the meter's new events (`meter_deactivated`) and new prices; the events it has are still billed."""
    ctx.require_catalog_owner("Deactivating a meter")
    with ctx.uow() as uow:
        return _meter(meters.deactivate_meter(uow, code))


@router.post("/meters/{code}/reactivate", response_model=MeterPublic)
def reactivate_meter(code: str, ctx: Write) -> Any:
    ctx.require_catalog_owner("Reactivating a meter")
    with ctx.uow() as uow:
        return _meter(meters.reactivate_meter(uow, code))


@router.get("/usage_events", response_model=ListOf[UsageEventPublic])
def list_usage_events(
    ctx: Read,
    customer_id: Annotated[str, Query(max_length=40)],
    meter: Annotated[str | None, Query(max_length=100, description="A meter's code.")] = None,
    occurred_gte: Annotated[datetime | None, Query(description="Events at or after this time.")] = None,
    occurred_lt: Annotated[datetime | None, Query(description="Events before this time.")] = None,
    transaction_id: Annotated[str | None, Query(max_length=200)] = None,
    group: Annotated[
        list[str] | None,
        Query(description="With `meter`: one `dimension:value` per dimension of the meter, e.g. `region:eu`."),
    ] = None,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
) -> Any:
    """The usage events stored for a customer, oldest first (by time): what the meters will aggregate.
    `starting_after` takes an event's id."""
    with ctx.uow(read_only=True) as uow:
        rows = usage_events.list_usage_events(
            uow,
            customer_id,
            meter_code=meter,
            occurred_gte=occurred_gte,
            occurred_lt=occurred_lt,
            transaction_id=transaction_id,
            group=usage_events.group_pairs(group, ":", "group"),
            limit=limit + 1,
            after=starting_after,
            vis=ctx.vis,
        )
    # Written here, not by the response model: the properties' numbers go out as stored, digit for digit
    # (``fastjson.Number``), where the model would write them as strings (or, read as floats, round them).
    return Response(fastjson.dumps_numbers(page(rows, limit)), media_type="application/json")


async def _exact_body(request: Request) -> Any:
    """The body as usage events are read on every path: numbers exactly as sent (``fastjson.loads_exact``). FastAPI
    parsed it already (the body model checks its shape), but into floats."""
    return fastjson.loads_events(await request.body())


@router.post("/events", response_model=UsageEventResult)
async def ingest_event(body: UsageEventIn, request: Request, ctx: Write) -> Any:
    """Record one usage event. Sending the same transaction id again is not an error: it answers `duplicate`."""
    return await run_in_threadpool(_ingest_event, body, await _exact_body(request), ctx)


def _ingest_event(body: UsageEventIn, raw: dict[str, Any], ctx: Ctx) -> Any:
    with ctx.uow() as uow:
        result = usage.ingest(uow, [raw], vis=ctx.vis)
    if result.rejected:
        error = result.rejected[0]["error"]
        raise ValidationError(error["code"], error["message"], error["field"])
    if result.accepted:
        return {"status": "accepted", "transaction_id": body.transaction_id, "id": result.accepted[0]["id"]}
    return {"status": "duplicate", "transaction_id": body.transaction_id}


@router.post("/events/batch", response_model=UsageBatchResult)
async def ingest_batch(body: UsageBatchIn, request: Request, ctx: Write) -> Any:
    """Record up to 1,000 usage events. Each is reported on its own: accepted, duplicate, or rejected with the
    reason; the valid ones are kept even when others are refused."""
    events = (await _exact_body(request))["events"]
    result = await run_in_threadpool(_ingest_batch, events, ctx)
    # The answer as the response model would serialise it, without validating a thousand outcomes again.
    outcomes = {
        "object": "usage_batch_result",
        "accepted": [{**_OUTCOME, **e} for e in result.accepted],
        "duplicates": [{**_OUTCOME, **e} for e in result.duplicates],
        "rejected": [{**_OUTCOME, **e} for e in result.rejected],
    }
    return Response(json.dumps(outcomes, separators=(",", ":")), media_type="application/json")


_OUTCOME: dict[str, Any] = {"index": None, "transaction_id": None, "id": None, "error": None}


def _ingest_batch(events: list[Any], ctx: Ctx) -> usage.IngestResult:
    with ctx.uow() as uow:
        return usage.ingest(uow, events, vis=ctx.vis)


@router.post("/events/cancel", response_model=UsageCancelResult)
def cancel_events(body: UsageCancelIn, ctx: Write) -> Any:
    """Cancel usage events sent by mistake, each named by its customer and transaction id. A canceled event stops
    counting; if its period was already billed, the next invoice corrects it. Possible while the period can still
    be corrected (its meter's open billing period, or the grace period for late events). Canceling an event
    again answers `already_canceled`; each event is answered on its own, and the others are canceled even when
    some are refused."""
    with ctx.uow() as uow:
        result = usage_cancellation.cancel_events(uow, body.events, reason=body.reason, vis=ctx.vis)
    return {
        "canceled": result.canceled,
        "already_canceled": result.already_canceled,
        "rejected": result.rejected,
    }
