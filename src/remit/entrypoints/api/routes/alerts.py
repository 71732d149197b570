"""Live usage, usage alerts and usage thresholds."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.entrypoints.api.alert_schemas import (
    AlertCreate,
    AlertDeleted,
    AlertPublic,
    LiveUsagePublic,
    UsageSeriesPublic,
    UsageThresholdPublic,
    UsageThresholdSet,
)
from remit.entrypoints.api.deps import Read, Write
from remit.entrypoints.api.direct import threaded
from remit.entrypoints.api.routes.common import CustomerFilter, Limit, StartingAfter, page
from remit.entrypoints.api.schemas import ListOf
from remit.service_layer import alerts, live_usage, usage_series

router = APIRouter(tags=["usage"])
SubscriptionFilter = Annotated[str | None, Query(max_length=40, description="Only this subscription.")]


@router.get("/customers/{customer_id}/usage", response_model=LiveUsagePublic)
@threaded
def customer_usage(customer_id: str, ctx: Read, subscription_id: SubscriptionFilter = None) -> Any:
    """The current billing period's usage of each of the customer's subscriptions, and what it would cost right
    now, computed like the bill run. Nothing is written."""
    with ctx.uow(read_only=True) as uow:
        ctx.vis.check_customer(uow, customer_id)
        return live_usage.live_usage(uow, customer_id, subscription_id)


@router.get("/customers/{customer_id}/usage_series", response_model=UsageSeriesPublic)
def customer_usage_series(
    customer_id: str,
    ctx: Read,
    meter: Annotated[str, Query(max_length=100, description="The meter's code.")],
    start_on: Annotated[date, Query(description="The first day (the customer's local day).")],
    end_on: Annotated[date, Query(description="The day after the last.")],
    granularity: Annotated[Literal["day", "hour"], Query()] = "day",
) -> Any:
    """The customer's usage of one meter, day by day (at most 366) or hour by hour (at most 745), aggregated like
    the bill run aggregates (canceled events left out), before rounding and included units."""
    with ctx.uow(read_only=True) as uow:
        return usage_series.usage_series(uow, customer_id, meter, start_on, end_on, granularity, ctx.vis)


@router.get("/subscriptions/{sub_id}/usage", response_model=LiveUsagePublic)
@threaded
def subscription_usage(sub_id: str, ctx: Read) -> Any:
    """The subscription's usage in its current billing period and what it would cost right now."""
    with ctx.uow(read_only=True) as uow:
        ctx.vis.check_owned(uow, t.subscriptions, sub_id, "subscription", "sub_id")
        customer_id = uow.conn.execute(
            select(t.subscriptions.c.customer_id).where(t.subscriptions.c.id == sub_id)
        ).scalar_one()
        return live_usage.live_usage(uow, customer_id, sub_id)


@router.post("/subscriptions/{sub_id}/usage_threshold", response_model=UsageThresholdPublic)
def set_usage_threshold(sub_id: str, body: UsageThresholdSet, ctx: Write) -> Any:
    """Threshold billing: invoice the usage at once when the open period's unbilled usage reaches the amount;
    the period-end invoice then bills the rest. `null` stops it."""
    with ctx.uow() as uow:
        return alerts.set_usage_threshold(uow, sub_id, body.amount, ctx.vis)


@router.post("/alerts", response_model=AlertPublic, status_code=201)
def create_alert(body: AlertCreate, ctx: Write) -> Any:
    """Alert when usage or spend crosses thresholds: `usage.alert_triggered` is emitted (and sent to webhooks)
    once per threshold per billing period."""
    with ctx.uow() as uow:
        return alerts.create_alert(
            uow,
            body.customer_id,
            body.kind,
            body.thresholds,
            meter=body.meter,
            group=body.group,
            subscription_id=body.subscription_id,
            vis=ctx.vis,
        )


@router.get("/alerts", response_model=ListOf[AlertPublic])
def list_alerts(
    ctx: Read, limit: Limit = 20, starting_after: StartingAfter = None, customer_id: CustomerFilter = None
) -> Any:
    with ctx.uow(read_only=True) as uow:
        return page(alerts.list_alerts(uow, limit + 1, starting_after, customer_id, ctx.vis), limit)


@router.get("/alerts/{alert_id}", response_model=AlertPublic)
def get_alert(alert_id: str, ctx: Read) -> Any:
    with ctx.uow(read_only=True) as uow:
        return alerts.get_alert(uow, alert_id, ctx.vis)


@router.delete("/alerts/{alert_id}", response_model=AlertDeleted)
def delete_alert(alert_id: str, ctx: Write) -> Any:
    with ctx.uow() as uow:
        return alerts.delete_alert(uow, alert_id, ctx.vis)
