"""Rows to domain objects. Prices never change once written, so they are cached per process."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select

from remit.adapters.db import tables as t
from remit.domain.billing_events import ChangeKind, Item, TimelineEvent
from remit.domain.catalog.model import (
    Coupon,
    CouponDuration,
    Price,
    PriceType,
    PromotionCode,
    Timing,
    parse_usage_terms,
)
from remit.domain.money import currency
from remit.domain.rating.charge_models import parse_charge_model
from remit.domain.subscriptions.periods import Interval

_PRICE_CACHE: dict[str, Price] = {}


def price_from_row(row: Mapping[Any, Any]) -> Price:
    interval = Interval.parse(row["interval_unit"], row["interval_count"]) if row["interval_unit"] else None
    model = parse_charge_model(row["model"], row["config"])
    type_ = PriceType(row["type"])
    return Price(
        id=row["id"],
        product_id=row["product_id"],
        currency=currency(row["currency"]),
        model=model,
        type=type_,
        interval=interval,
        timing=Timing(row["timing"]),
        plan_version_id=row["plan_version_id"],
        name=row["name"],
        usage=parse_usage_terms(row.get("usage"), type_, None, model),
    )


def load_prices(conn: Connection, ids: Iterable[str]) -> dict[str, Price]:
    wanted = set(ids)
    missing = wanted - _PRICE_CACHE.keys()
    if missing:
        for row in conn.execute(select(t.prices).where(t.prices.c.id.in_(sorted(missing)))).mappings():
            _PRICE_CACHE[row["id"]] = price_from_row(row)
    return {i: _PRICE_CACHE[i] for i in wanted if i in _PRICE_CACHE}


def with_overrides(prices: Mapping[str, Price], overrides: Iterable[Mapping[str, Any]]) -> dict[str, Price]:
    """The customer's view of the catalog: negotiated models replace list models for the same price."""
    result = dict(prices)
    for row in overrides:
        base = result.get(row["price_id"])
        if base is not None:
            result[base.id] = negotiated(base, row["id"], row["model"], row["config"])
    return result


def negotiated(base: Price, override_id: str, model: str, config: Any) -> Price:
    """The list price ``base`` with a negotiated model (an override's, now or as a line recorded it)."""
    return Price(
        id=base.id,
        product_id=base.product_id,
        currency=base.currency,
        model=parse_charge_model(model, config),
        type=base.type,
        interval=base.interval,
        timing=base.timing,
        plan_version_id=base.plan_version_id,
        name=base.name,
        usage=base.usage,
        override_id=override_id,
    )


def coupon_from_row(row: Mapping[Any, Any]) -> Coupon:
    return Coupon(
        id=row["id"],
        code=row["code"],
        name=row["name"],
        percent_off=row["percent_off"],
        amount_off_minor=row["amount_off_minor"],
        currency=currency(row["currency"]) if row["currency"] else None,
        duration=CouponDuration(row["duration"]),
        duration_periods=row["duration_periods"],
        max_redemptions=row["max_redemptions"],
        redeem_by=row["redeem_by"],
        times_redeemed=row["times_redeemed"],
    )


def promotion_code_from_row(row: Mapping[Any, Any]) -> PromotionCode:
    return PromotionCode(
        id=row["id"],
        code=row["code"],
        coupon_id=row["coupon_id"],
        active=row["active"],
        max_redemptions=row["max_redemptions"],
        expires_at=row["expires_at"],
        times_redeemed=row["times_redeemed"],
    )


def items_to_json(items: Iterable[Item]) -> list[dict[str, str]]:
    return [{"price_id": i.price_id, "quantity": format(i.quantity, "f")} for i in items]


def items_from_json(raw: Iterable[Mapping[str, str]]) -> tuple[Item, ...]:
    return tuple(Item(r["price_id"], Decimal(r["quantity"])) for r in raw)


def timeline_event_from_row(row: Mapping[Any, Any]) -> TimelineEvent:
    return TimelineEvent(
        effective_on=row["effective_on"],
        kind=ChangeKind(row["kind"]),
        items=items_from_json(row["items"]),
        seq=row["seq"],
    )
