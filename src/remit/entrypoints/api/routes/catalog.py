"""Plans and their versions, standalone prices, per-customer overrides, coupons and promotion codes.

The catalog is shared by every legal entity and both modes: any key may read it, write keys may add to it; changing
what exists (a plan's new version, which new subscriptions take) needs a live key of every legal entity.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.domain.errors import NotFound
from remit.entrypoints.api import present
from remit.entrypoints.api.deps import Read, Write
from remit.entrypoints.api.routes.common import Limit, StartingAfter, page
from remit.entrypoints.api.schemas import (
    CouponCreate,
    CouponPublic,
    ListOf,
    OverridePublic,
    PlanCreate,
    PlanPublic,
    PlanVersionCreate,
    PriceOverrideCreate,
    PricePublic,
    PromotionCodeCreate,
    PromotionCodePublic,
    StandalonePriceCreate,
)
from remit.service_layer import catalog, views

router = APIRouter()


def _plan(uow: Any, code: str) -> Any:
    row = uow.conn.execute(select(t.plans).where(t.plans.c.code == code)).mappings().first()
    if row is None:
        raise NotFound("plan", code, "code", by="code")
    return present.plan(uow, row)


@router.post("/plans", response_model=PlanPublic, status_code=201, tags=["catalog"])
def create_plan(body: PlanCreate, ctx: Write) -> Any:
    with ctx.uow() as uow:
        catalog.create_plan(uow, body.code, body.name, [p.as_spec() for p in body.prices])
        return _plan(uow, body.code)


@router.get("/plans", response_model=ListOf[PlanPublic], tags=["catalog"])
def list_plans(ctx: Read, limit: Limit = 20, starting_after: StartingAfter = None) -> Any:
    with ctx.uow() as uow:
        rows = views.page(uow, select(t.plans), t.plans.c.id, limit + 1, starting_after)
        return page([present.plan(uow, r) for r in rows], limit)


@router.get("/plans/{code}", response_model=PlanPublic, tags=["catalog"])
def get_plan(code: str, ctx: Read) -> Any:
    with ctx.uow() as uow:
        return _plan(uow, code)


@router.post("/plans/{code}/versions", response_model=PlanPublic, status_code=201, tags=["catalog"])
def publish_version(code: str, body: PlanVersionCreate, ctx: Write) -> Any:
    """A new version of the plan; existing subscribers keep theirs until migrated."""
    ctx.require_catalog_owner("Publishing a plan version")
    with ctx.uow() as uow:
        catalog.publish_plan_version(uow, code, [p.as_spec() for p in body.prices])
        return _plan(uow, code)


@router.post("/prices", response_model=PricePublic, status_code=201, tags=["catalog"])
def create_price(body: StandalonePriceCreate, ctx: Write) -> Any:
    """An add-on or one-off price with its own product."""
    with ctx.uow() as uow:
        product_id = catalog.create_product(uow, body.product_name, body.product_kind)
        spec = body.as_spec()
        spec.pop("product_name")
        spec.pop("product_kind")
        price_id = catalog.create_price(uow, product_id, spec)
        return present.price(uow.conn.execute(select(t.prices).where(t.prices.c.id == price_id)).mappings().one())


@router.get("/prices/{price_id}", response_model=PricePublic, tags=["catalog"])
def get_price(price_id: str, ctx: Read) -> Any:
    with ctx.uow() as uow:
        row = uow.conn.execute(select(t.prices).where(t.prices.c.id == price_id)).mappings().first()
    if row is None:
        raise NotFound("price", price_id, "price_id")
    return present.price(row)


@router.post("/price_overrides", response_model=OverridePublic, status_code=201, tags=["catalog"])
def set_override(body: PriceOverrideCreate, ctx: Write) -> Any:
    """A negotiated price for one customer; it replaces the list price's model on their invoices."""
    with ctx.uow() as uow:
        ctx.vis.check_customer(uow, body.customer_id)
        return {
            "id": catalog.set_price_override(uow, body.customer_id, body.price_id, body.model, body.config.as_config())
        }


@router.post("/coupons", response_model=CouponPublic, status_code=201, tags=["catalog"])
def create_coupon(body: CouponCreate, ctx: Write) -> Any:
    with ctx.uow() as uow:
        coupon_id = catalog.create_coupon(
            uow,
            body.code,
            body.name,
            percent_off=body.percent_off,
            amount_off=body.amount_off,
            currency_code=body.currency,
            duration=body.duration,
            duration_periods=body.duration_periods,
            max_redemptions=body.max_redemptions,
            redeem_by=body.redeem_by,
        )
        return present.coupon(uow.conn.execute(select(t.coupons).where(t.coupons.c.id == coupon_id)).mappings().one())


@router.get("/coupons", response_model=ListOf[CouponPublic], tags=["catalog"])
def list_coupons(ctx: Read, limit: Limit = 20, starting_after: StartingAfter = None) -> Any:
    with ctx.uow() as uow:
        rows = views.page(uow, select(t.coupons), t.coupons.c.id, limit + 1, starting_after)
    return page([present.coupon(r) for r in rows], limit)


@router.post("/promotion_codes", response_model=PromotionCodePublic, status_code=201, tags=["catalog"])
def create_promotion_code(body: PromotionCodeCreate, ctx: Write) -> Any:
    with ctx.uow() as uow:
        promo_id = catalog.create_promotion_code(uow, body.coupon, body.code, body.max_redemptions, body.expires_at)
        return uow.conn.execute(select(t.promotion_codes).where(t.promotion_codes.c.id == promo_id)).mappings().one()


@router.get("/promotion_codes", response_model=ListOf[PromotionCodePublic], tags=["catalog"])
def list_promotion_codes(ctx: Read, limit: Limit = 20, starting_after: StartingAfter = None) -> Any:
    with ctx.uow() as uow:
        return page(
            views.page(uow, select(t.promotion_codes), t.promotion_codes.c.id, limit + 1, starting_after), limit
        )
