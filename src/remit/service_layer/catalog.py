"""Catalog use cases: products, plans and versions, prices, overrides, coupons and promotion codes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, select, update

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id
from remit.domain.catalog.model import (
    CouponDuration,
    PriceType,
    ProductKind,
    Timing,
    check_max_redemptions,
    dimension_key,
    group_of_key,
    parse_usage_terms,
    usage_terms_to_json,
    validate_coupon_terms,
    validate_price_shape,
)
from remit.domain.errors import Conflict, NotFound, ValidationError
from remit.domain.money import RATE_MAX_DECIMALS, Money, bounded, currency, decimals, parse_rate
from remit.domain.rating.charge_models import parse_charge_model
from remit.domain.subscriptions.periods import Interval
from remit.service_layer.unit_of_work import UnitOfWork


def _enum(kind: type[Any], value: object, field: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ValidationError("invalid_choice", f"{value!r} is not one of: {allowed}.", field) from None


def create_product(uow: UnitOfWork, name: str, kind: str = "plan", description: str = "") -> str:
    if not name.strip():
        raise ValidationError("missing_field", "A product needs a name.", "name")
    product_id = new_id("prod")
    uow.insert_many(
        t.products,
        [
            {
                "id": product_id,
                "name": name,
                "kind": _enum(ProductKind, kind, "kind").value,
                "description": description,
                "created_at": uow.now,
            }
        ],
    )
    return product_id


def _price_row(
    uow: UnitOfWork, product_id: str, spec: Mapping[str, Any], index: int, version_id: str | None
) -> dict[str, Any]:
    field = f"prices[{index}]"
    if "currency" not in spec:
        raise ValidationError("missing_field", "A price needs a currency.", f"{field}.currency")
    cur = currency(str(spec["currency"]), f"{field}.currency")
    type_ = _enum(PriceType, spec.get("type", "recurring"), f"{field}.type")
    interval = None
    if type_ is PriceType.RECURRING:
        interval = Interval.parse(str(spec.get("interval", "month")), int(spec.get("interval_count", 1)))
    usage_raw = spec.get("usage")
    given_timing = _enum(Timing, spec["timing"], f"{field}.timing") if spec.get("timing") is not None else None
    timing = given_timing or (Timing.IN_ARREARS if usage_raw is not None else Timing.IN_ADVANCE)
    model = parse_charge_model(str(spec.get("model", "flat")), spec.get("config", {}), f"{field}.config")
    terms = parse_usage_terms(usage_raw, type_, given_timing, model, f"{field}.usage", f"{field}.timing")
    validate_price_shape(type_, interval, timing)
    if terms is not None and terms.meter is not None:
        meter = uow.conn.execute(
            select(t.meters.c.group_by, t.meters.c.deactivated_at).where(t.meters.c.code == terms.meter)
        ).first()
        if meter is None:
            raise ValidationError("unknown_meter", f"No meter with code {terms.meter!r}.", f"{field}.usage.meter")
        if meter[1] is not None:
            raise ValidationError(
                "meter_deactivated", f"Meter {terms.meter} is deactivated: reactivate it first.", f"{field}.usage.meter"
            )
        if terms.dimensions and not meter[0]:
            raise ValidationError(
                "invalid_usage",
                f"Meter {terms.meter} has no group-by dimensions to price by.",
                f"{field}.usage.dimensions",
            )
        if terms.dimensions and isinstance(usage_raw, Mapping):
            _check_dimension_keys(terms.meter, list(meter[0]), usage_raw["dimensions"], field)
    return {
        "id": new_id("price"),
        "product_id": product_id,
        "plan_version_id": version_id,
        "name": str(spec.get("name") or _product_name(uow, product_id)),
        "currency": cur.code,
        "type": type_.value,
        "model": model.kind,
        "config": model.to_config(),
        "interval_unit": interval.unit.value if interval else None,
        "interval_count": interval.count if interval else None,
        "timing": timing.value,
        "usage": usage_terms_to_json(terms),
        "created_at": uow.now,
    }


def _check_dimension_keys(meter: str, group_by: list[str], keys: Mapping[Any, Any], field: str) -> None:
    """Each key of a usage price's ``dimensions`` names one group of the meter: values joined with ``|``, one per
    dimension at most (on a meter of two or more, "a|b|c" would name both ("a|b", "c") and ("a", "b|c")), or a JSON
    list of exactly one value per dimension; and no group twice."""
    seen: set[str] = set()
    for key in map(str, keys):
        where = f"{field}.usage.dimensions.{key}"
        values = group_of_key(key)
        if values is not None and len(values) != len(group_by):
            raise ValidationError(
                "invalid_usage",
                f"A group of meter {meter} is a list of {len(group_by)} values, one per dimension "
                f"({', '.join(group_by)}).",
                where,
            )
        if values is None and len(group_by) > 1 and key.count("|") >= len(group_by):
            example = json.dumps(key.rsplit("|", len(group_by) - 1))
            raise ValidationError(
                "invalid_usage",
                f"{key!r} names more values than meter {meter} has dimensions ({', '.join(group_by)}): which "
                f"group it means is ambiguous. Give a group whose values hold '|' as a JSON list, e.g. {example}.",
                where,
            )
        canonical = key if values is None else dimension_key(values)
        if canonical in seen:
            raise ValidationError("invalid_usage", f"{key!r} names a group priced by another key too.", where)
        seen.add(canonical)


def _product_name(uow: UnitOfWork, product_id: str) -> str:
    return str(uow.conn.execute(select(t.products.c.name).where(t.products.c.id == product_id)).scalar() or "")


def create_price(uow: UnitOfWork, product_id: str, spec: Mapping[str, Any]) -> str:
    """A price outside any plan: an add-on or a one-off charge."""
    if uow.conn.execute(select(t.products.c.id).where(t.products.c.id == product_id)).first() is None:
        raise NotFound("product", product_id, "product_id")
    row = _price_row(uow, product_id, spec, 0, None)
    uow.insert_many(t.prices, [row])
    return str(row["id"])


def create_plan(uow: UnitOfWork, code: str, name: str, prices: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A plan with its first version. Its prices may be in several currencies, one per currency and product."""
    if not code.strip():
        raise ValidationError("missing_field", "A plan needs a code.", "code")
    if uow.conn.execute(select(t.plans.c.id).where(t.plans.c.code == code)).first() is not None:
        raise Conflict("plan_code_taken", f"A plan with code {code!r} exists already.", "code")
    product_id = create_product(uow, name, "plan")
    plan_id = new_id("plan")
    uow.insert_many(
        t.plans, [{"id": plan_id, "code": code, "name": name, "product_id": product_id, "created_at": uow.now}]
    )
    version = _add_version(uow, plan_id, product_id, 1, prices)
    uow.emit("plan.created", "plan", plan_id, {"code": code, "version": 1})
    return {"id": plan_id, "code": code, "version_id": version, "product_id": product_id}


def publish_plan_version(uow: UnitOfWork, plan_code: str, prices: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A new version of a plan; existing subscribers keep theirs until migrated."""
    plan = uow.conn.execute(select(t.plans).where(t.plans.c.code == plan_code)).mappings().first()
    if plan is None:
        raise NotFound("plan", plan_code, "plan", by="code")
    latest = uow.conn.execute(
        select(func.max(t.plan_versions.c.version)).where(t.plan_versions.c.plan_id == plan["id"])
    ).scalar_one()
    version_id = _add_version(uow, plan["id"], plan["product_id"], int(latest) + 1, prices)
    uow.emit("plan.version_published", "plan", plan["id"], {"code": plan_code, "version": int(latest) + 1})
    return {"id": plan["id"], "code": plan_code, "version": int(latest) + 1, "version_id": version_id}


def _add_version(
    uow: UnitOfWork, plan_id: str, product_id: str, version: int, prices: Sequence[Mapping[str, Any]]
) -> str:
    if not prices:
        raise ValidationError("missing_field", "A plan version needs at least one price.", "prices")
    version_id = new_id("planv")
    uow.insert_many(
        t.plan_versions, [{"id": version_id, "plan_id": plan_id, "version": version, "created_at": uow.now}]
    )
    rows = [_price_row(uow, product_id, spec, i, version_id) for i, spec in enumerate(prices)]
    # Per currency: one fixed price (the plan fee), any number of usage prices on distinct meters, and at most
    # one minimum commitment.
    seen: set[tuple[str, str]] = set()
    for i, row in enumerate(rows):
        usage = row["usage"] or {}
        role = "minimum" if usage.get("minimum") else f"meter:{usage['meter']}" if usage else "fixed"
        if (row["currency"], role) in seen:
            what = {"fixed": "fixed prices", "minimum": "minimum commitments"}.get(role, f"prices for meter {role[6:]}")
            raise ValidationError("duplicate_currency", f"Two {what} in {row['currency']}.", f"prices[{i}].currency")
        seen.add((row["currency"], role))
    intervals = {(r["interval_unit"], r["interval_count"]) for r in rows}
    if len(intervals) > 1:
        raise ValidationError("interval_mismatch", "All prices of a plan version bill on one interval.", "prices")
    uow.insert_many(t.prices, rows)
    return version_id


def plan_price(
    uow: UnitOfWork, plan_code: str, currency_code: str, version: int | None = None, field: str = "plan"
) -> Mapping[Any, Any]:
    """The price of a plan (latest version unless one is named) in a currency; an error if it lacks one."""
    return plan_and_price(uow, plan_code, currency_code, version, field)[1]


def _plan_price_query(with_version: bool) -> Select[Any]:
    """Every price of the plan's latest (or named) version in the currency, its main price first: its fixed price
    when it has one (usage prices and a minimum commitment come beside it), then in the order they were made. A
    version without a price in the currency gives one row whose price columns are NULL."""
    pv, latest = t.plan_versions, t.plan_versions.alias("latest")
    chosen = (
        pv.c.version == bindparam("version")
        if with_version
        else pv.c.version
        == select(func.max(latest.c.version)).where(latest.c.plan_id == pv.c.plan_id).scalar_subquery()
    )
    return (
        select(t.plans.c.id.label("plan_id_"), *t.prices.c)
        .select_from(
            t.plans.join(pv, pv.c.plan_id == t.plans.c.id).outerjoin(
                t.prices,
                and_(t.prices.c.plan_version_id == pv.c.id, t.prices.c.currency == bindparam("currency_code")),
            )
        )
        .where(t.plans.c.code == bindparam("plan_code"), chosen)
        .order_by(t.prices.c.usage.is_(None).desc(), t.prices.c.created_at, t.prices.c.id)
    )


# Built once: a statement object's cache key is computed once, not on every call.
_PLAN_PRICE = {False: _plan_price_query(False), True: _plan_price_query(True)}
_PRICE_COLUMNS = tuple(column.key for column in t.prices.c)


def plan_and_price(
    uow: UnitOfWork, plan_code: str, currency_code: str, version: int | None = None, field: str = "plan"
) -> tuple[str, Mapping[Any, Any]]:
    """The plan's id and ``plan_price``."""
    plan_id, price, _beside = plan_prices(uow, plan_code, currency_code, version, field)
    return plan_id, price


def plan_prices(
    uow: UnitOfWork, plan_code: str, currency_code: str, version: int | None = None, field: str = "plan"
) -> tuple[str, Mapping[Any, Any], list[str]]:
    """The plan's id, its main price (``plan_price``) and the ids of the version's other prices in the currency
    (its usage prices and minimum commitment): one query for the latest or named version, then, only when
    something is missing, the step-by-step lookup that says what."""
    params: dict[str, Any] = {"plan_code": plan_code, "currency_code": currency_code}
    if version is not None:
        params["version"] = version
    rows = uow.conn.execute(_PLAN_PRICE[version is not None], params).mappings().all()
    if not rows or rows[0]["id"] is None:
        _say_what_is_missing(uow, plan_code, currency_code, version, field)
        # Nothing was missing any more: it was created since the first read.
        rows = uow.conn.execute(_PLAN_PRICE[version is not None], params).mappings().all()
    main = {name: rows[0][name] for name in _PRICE_COLUMNS}
    return str(rows[0]["plan_id_"]), main, [str(r["id"]) for r in rows[1:]]


def _say_what_is_missing(uow: UnitOfWork, plan_code: str, currency_code: str, version: int | None, field: str) -> None:
    """Step by step, raise what is missing: the plan, the version or its price in this currency."""
    plan = uow.conn.execute(select(t.plans).where(t.plans.c.code == plan_code)).mappings().first()
    if plan is None:
        raise NotFound("plan", plan_code, field, by="code")
    query = select(t.plan_versions).where(t.plan_versions.c.plan_id == plan["id"])
    if version is not None:
        query = query.where(t.plan_versions.c.version == version)
    pv = uow.conn.execute(query.order_by(t.plan_versions.c.version.desc()).limit(1)).mappings().first()
    if pv is None:
        raise NotFound("plan_version", f"{plan_code} v{version}", field)
    priced = uow.conn.execute(
        select(t.prices.c.id).where(t.prices.c.plan_version_id == pv["id"], t.prices.c.currency == currency_code)
    ).first()
    if priced is None:
        raise ValidationError(
            "currency_not_offered",
            f"Plan {plan_code} (version {pv['version']}) has no price in {currency_code}.",
            "currency",
        )


def set_price_override(uow: UnitOfWork, customer_id: str, price_id: str, model: str, config: Mapping[str, Any]) -> str:
    """A negotiated price for one customer; it replaces the list price's model on their invoices."""
    customer = uow.conn.execute(select(t.customers.c.currency).where(t.customers.c.id == customer_id)).first()
    if customer is None:
        raise NotFound("customer", customer_id, "customer_id")
    p = t.prices.c
    price = uow.conn.execute(select(p.id, p.usage, p.currency).where(p.id == price_id)).first()
    if price is None:
        raise NotFound("price", price_id, "price_id")
    if price.currency != customer.currency:  # it would never bill: the customer is billed in their currency only
        raise ValidationError(
            "currency_mismatch",
            f"Price {price_id} is in {price.currency}, the customer pays in {customer.currency}.",
            "price_id",
        )
    parsed = parse_charge_model(model, config, "config")
    if (price.usage or {}).get("minimum") and parsed.kind != "flat":  # as when such a price is made
        raise ValidationError("invalid_usage", "A minimum commitment is a flat amount per period.", "model")
    if parsed.kind == "percentage" and (price.usage or {}).get("included_units") not in (None, "0"):
        raise ValidationError(
            "invalid_usage",
            "A percentage model charges transactions, which this price's included units cannot be taken from.",
            "model",
        )
    uow.lock_customer(customer_id)
    o = t.price_overrides.c
    existing = (
        uow.conn.execute(select(o.id, o.model, o.config).where(o.customer_id == customer_id, o.price_id == price_id))
        .mappings()
        .first()
    )
    kind, settings = parsed.kind, parsed.to_config()
    if existing and (existing["model"], existing["config"]) == (kind, settings):
        return str(existing["id"])  # set again as it is (a request retried): nothing changes, nothing to record
    if existing:
        # Changed in place; the event keeps what it replaced (periods already invoiced keep the price they were
        # invoiced at, as their lines recorded it).
        override_id = str(existing["id"])
        uow.conn.execute(update(t.price_overrides).where(o.id == override_id).values(model=kind, config=settings))
        previous = {"previous_model": existing["model"], "previous_config": existing["config"]}
    else:
        override_id = new_id("ovr")
        uow.insert_many(
            t.price_overrides,
            [
                {
                    "id": override_id,
                    "customer_id": customer_id,
                    "price_id": price_id,
                    "model": kind,
                    "config": settings,
                    "created_at": uow.now,
                }
            ],
        )
        previous = {}
    data = {"price_id": price_id, "override_id": override_id, "model": kind, "config": settings, **previous}
    uow.emit("price_override.set", "customer", customer_id, data, customer_id)
    return override_id


def create_coupon(
    uow: UnitOfWork,
    code: str,
    name: str,
    *,
    percent_off: object = None,
    amount_off: object = None,
    currency_code: str | None = None,
    duration: str = "once",
    duration_periods: int | None = None,
    max_redemptions: int | None = None,
    redeem_by: datetime | None = None,
) -> str:
    dur = _enum(CouponDuration, duration, "duration")
    pct = parse_rate(percent_off, "percent_off") if percent_off is not None else None
    cur = currency(currency_code) if currency_code else None
    off_minor = Money.of(amount_off, cur, "amount_off").minor if amount_off is not None and cur else None
    if amount_off is not None and cur is None:
        raise ValidationError("missing_field", "A fixed-amount coupon needs a currency.", "currency")
    validate_coupon_terms(pct, off_minor, cur, dur, duration_periods, max_redemptions)
    if uow.conn.execute(select(t.coupons.c.id).where(t.coupons.c.code == code)).first() is not None:
        raise Conflict("coupon_code_taken", f"A coupon with code {code!r} exists already.", "code")
    coupon_id = new_id("coupon")
    uow.insert_many(
        t.coupons,
        [
            {
                "id": coupon_id,
                "code": code,
                "name": name,
                "percent_off": pct,
                "amount_off_minor": off_minor,
                "currency": cur.code if cur else None,
                "duration": dur.value,
                "duration_periods": duration_periods,
                "max_redemptions": max_redemptions,
                "redeem_by": redeem_by,
                "times_redeemed": 0,
                "created_at": uow.now,
            }
        ],
    )
    return coupon_id


def create_promotion_code(
    uow: UnitOfWork, coupon_code: str, code: str, max_redemptions: int | None = None, expires_at: datetime | None = None
) -> str:
    coupon = uow.conn.execute(select(t.coupons.c.id).where(t.coupons.c.code == coupon_code)).scalar()
    if coupon is None:
        raise NotFound("coupon", coupon_code, "coupon", by="code")
    if uow.conn.execute(select(t.promotion_codes.c.id).where(t.promotion_codes.c.code == code)).first():
        raise Conflict("promotion_code_taken", f"Promotion code {code!r} exists already.", "code")
    check_max_redemptions(max_redemptions)
    promo_id = new_id("promo")
    uow.insert_many(
        t.promotion_codes,
        [
            {
                "id": promo_id,
                "code": code,
                "coupon_id": coupon,
                "active": True,
                "max_redemptions": max_redemptions,
                "expires_at": expires_at,
                "times_redeemed": 0,
                "created_at": uow.now,
            }
        ],
    )
    return promo_id


def quantity(value: object, field: str = "quantity") -> Decimal:
    """A quantity a user gives (a subscription's, an add-on's, a one-off charge's, a manual line's): exact, not
    negative, at most 15 digits before the point and 9 decimals, as the API takes it."""
    q = bounded(value, field)
    if q < 0:
        raise ValidationError("negative_quantity", "Quantity cannot be negative.", field)
    if decimals(q) > RATE_MAX_DECIMALS:
        raise ValidationError("too_many_decimals", f"A quantity has at most {RATE_MAX_DECIMALS} decimals.", field)
    return q
