"""Subscriptions and their actions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from remit.adapters.db import tables as t
from remit.domain.errors import NotFound
from remit.entrypoints.api import present
from remit.entrypoints.api.deps import Read, Write
from remit.entrypoints.api.direct import threaded
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
    ApplyCoupon,
    Cancel,
    ChangePlan,
    ChangeQuantity,
    ChangeResult,
    ListOf,
    PauseResume,
    SubscriptionCreate,
    SubscriptionPublic,
)
from remit.service_layer import subscriptions, views

router = APIRouter(tags=["subscriptions"])


def _show(uow: Any, sub_id: str, expand: list[str] | None = None) -> dict[str, Any]:
    data = present.subscription(subscriptions.get_subscription(uow, sub_id))
    if expand and "customer" in expand:
        data["customer"] = present.customer_by_id(uow, data["customer_id"])
    return data


@router.post("/subscriptions", response_model=SubscriptionPublic, status_code=201)
@threaded
def create_subscription(body: SubscriptionCreate, ctx: Write) -> Any:
    with ctx.uow() as uow:
        # Lock and read the customer once: the service works on this row.
        customer = uow.locked_customer(body.customer_id)
        if customer is None or not ctx.vis.sees_customer(customer):
            raise NotFound("customer", body.customer_id, "customer_id")
        created = subscriptions.create_subscription_record(
            uow,
            body.customer_id,
            body.plan,
            quantity=body.quantity,
            plan_version=body.plan_version,
            start_on=body.start_on,
            trial_days=body.trial_days,
            anchor=body.anchor,
            anchor_day=body.anchor_day,
            add_ons=[a.model_dump() for a in body.add_ons],
            coupon=body.coupon,
            promotion_code=body.promotion_code,
            phases=[p.model_dump(exclude_none=True) for p in body.phases],
            customer=customer,
        )
        return present.subscription(created)


@router.get("/subscriptions", response_model=ListOf[SubscriptionPublic])
def list_subscriptions(
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
        rows = views.list_subscriptions(
            uow, limit + 1, starting_after, vis=ctx.vis, filters=filters(customer, status, created_gte, created_lte)
        )
        data = [present.subscription(r) for r in rows]
        present.expand_customers(uow, data[:limit], expand)
    return page(data, limit)


@router.get("/subscriptions/{sub_id}", response_model=SubscriptionPublic)
def get_subscription(sub_id: str, ctx: Read, expand: Expand = None) -> Any:
    with ctx.uow() as uow:
        ctx.vis.check_owned(uow, t.subscriptions, sub_id, "subscription", "sub_id")
        return _show(uow, sub_id, expand)


def _act(ctx: Any, sub_id: str, action: Any) -> Any:
    with ctx.uow() as uow:
        ctx.vis.check_owned(uow, t.subscriptions, sub_id, "subscription", "sub_id")
        return action(uow)


@router.post("/subscriptions/{sub_id}/change_plan", response_model=ChangeResult)
def change_plan(sub_id: str, body: ChangePlan, ctx: Write) -> Any:
    """Upgrade or downgrade: now (unused time credited, the rest charged) or at period end."""
    return _act(
        ctx,
        sub_id,
        lambda uow: subscriptions.change_plan(
            uow, sub_id, body.plan, quantity=body.quantity, version=body.version, when=body.when
        ),
    )


@router.post("/subscriptions/{sub_id}/change_quantity", response_model=ChangeResult)
def change_quantity(sub_id: str, body: ChangeQuantity, ctx: Write) -> Any:
    return _act(ctx, sub_id, lambda uow: subscriptions.change_quantity(uow, sub_id, body.quantity, when=body.when))


@router.post("/subscriptions/{sub_id}/pause", response_model=ChangeResult)
def pause(sub_id: str, body: PauseResume, ctx: Write) -> Any:
    return _act(ctx, sub_id, lambda uow: subscriptions.pause(uow, sub_id, when=body.when))


@router.post("/subscriptions/{sub_id}/resume", response_model=ChangeResult)
def resume(sub_id: str, body: PauseResume, ctx: Write) -> Any:
    return _act(ctx, sub_id, lambda uow: subscriptions.resume(uow, sub_id, when=body.when))


@router.post("/subscriptions/{sub_id}/cancel", response_model=ChangeResult)
def cancel(sub_id: str, body: Cancel, ctx: Write) -> Any:
    return _act(ctx, sub_id, lambda uow: subscriptions.cancel(uow, sub_id, at_period_end=body.at_period_end))


@router.post("/subscriptions/{sub_id}/apply_coupon", response_model=SubscriptionPublic)
def apply_coupon(sub_id: str, body: ApplyCoupon, ctx: Write) -> Any:
    def action(uow: Any) -> Any:
        subscriptions.apply_coupon(uow, sub_id, body.coupon, body.promotion_code)
        return _show(uow, sub_id)

    return _act(ctx, sub_id, action)


@router.post("/subscriptions/{sub_id}/release_schedule", response_model=SubscriptionPublic)
def release_schedule(sub_id: str, ctx: Write) -> Any:
    """Withdraw every change that has not taken effect yet."""

    def action(uow: Any) -> Any:
        subscriptions.release_scheduled(uow, sub_id)
        return _show(uow, sub_id)

    return _act(ctx, sub_id, action)
