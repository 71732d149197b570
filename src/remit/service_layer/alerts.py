"""Usage alerts and usage thresholds: creating, listing and deleting alerts; setting a subscription's threshold.

Both make the customer *watched* (``usage_watch``), so that ``usage_monitor`` looks at its usage when some
arrives. Bad input is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select, update

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id
from remit.domain.errors import NotFound, ValidationError
from remit.domain.money import Money, currency
from remit.domain.rating.alerts import AlertKind, canonical, parse_group, parse_kind, parse_thresholds
from remit.service_layer import usage_watch
from remit.service_layer.scoping import EVERYTHING, Visibility
from remit.service_layer.unit_of_work import UnitOfWork
from remit.service_layer.usage import meter_from_row
from remit.service_layer.views import money, plain


def create_alert(
    uow: UnitOfWork,
    customer_id: str,
    kind: str,
    thresholds: Any,
    *,
    meter: str | None = None,
    group: Mapping[str, Any] | None = None,
    subscription_id: str | None = None,
    vis: Visibility = EVERYTHING,
) -> dict[str, Any]:
    """Create an alert; returns it in public form. Emits ``alert.created``."""
    customer = uow.locked_customer(customer_id)
    if customer is None or not vis.sees_customer(customer):
        raise NotFound("customer", customer_id, "customer_id")
    alert_kind = parse_kind(kind)
    if subscription_id is not None:
        owner = uow.conn.execute(
            select(t.subscriptions.c.customer_id).where(t.subscriptions.c.id == subscription_id)
        ).scalar()
        if owner != customer_id:
            raise NotFound("subscription", subscription_id, "subscription_id")
    group_values: dict[str, str] | None = None
    cur = None
    if alert_kind is AlertKind.USAGE:
        if not meter:
            raise ValidationError("missing_field", "A usage alert names the meter it watches.", "meter")
        row = uow.conn.execute(select(t.meters).where(t.meters.c.code == meter)).mappings().first()
        if row is None:
            raise ValidationError("unknown_meter", f"No meter with code {meter!r}.", "meter")
        group_values = parse_group(group, meter_from_row(row))
    else:
        if meter is not None or group:
            raise ValidationError(
                "invalid_alert", "A spend alert watches the usage amount: it takes no meter or group.", "meter"
            )
        cur = currency(customer["currency"])
    values = parse_thresholds(thresholds, alert_kind, cur)
    alert_id = new_id("alrt")
    row_out: dict[str, Any] = {
        "id": alert_id,
        "customer_id": customer_id,
        "subscription_id": subscription_id,
        "kind": alert_kind.value,
        "meter_code": meter if alert_kind is AlertKind.USAGE else None,
        "group_values": group_values,
        "thresholds": [canonical(v) for v in values],
        "currency": cur.code if cur else None,
        "created_at": uow.now,
    }
    uow.insert_many(t.alerts, [row_out])
    usage_watch.watch(uow, customer_id)
    public = alert_public(row_out)
    uow.emit("alert.created", "alert", alert_id, public, customer_id)
    return public


def get_alert(uow: UnitOfWork, alert_id: str, vis: Visibility = EVERYTHING) -> dict[str, Any]:
    row = _alert(uow, alert_id, vis)
    return alert_public(row)


def _alert(uow: UnitOfWork, alert_id: str, vis: Visibility) -> Mapping[Any, Any]:
    row = (
        uow.conn.execute(
            select(t.alerts, t.customers.c.legal_entity_id, t.customers.c.test_clock_id)
            .join(t.customers, t.customers.c.id == t.alerts.c.customer_id)
            .where(t.alerts.c.id == alert_id)
        )
        .mappings()
        .first()
    )
    if row is None or not vis.sees_customer(row):
        raise NotFound("alert", alert_id, "alert_id")
    return row


def list_alerts(
    uow: UnitOfWork,
    limit: int,
    starting_after: str | None = None,
    customer_id: str | None = None,
    vis: Visibility = EVERYTHING,
) -> list[dict[str, Any]]:
    """Alerts in id order (cursor paging), of one customer or of every customer the caller sees."""
    a = t.alerts.c
    query = select(t.alerts).join(t.customers, t.customers.c.id == a.customer_id).where(vis.customers_clause())
    if customer_id is not None:
        query = query.where(a.customer_id == customer_id)
    if starting_after:
        # A cursor that does not exist, or that the caller may not see, is not found: never a page after it.
        seen = select(a.id).join(t.customers, t.customers.c.id == a.customer_id).where(vis.customers_clause())
        if uow.conn.execute(seen.where(a.id == starting_after)).first() is None:
            raise NotFound("alert", starting_after, "starting_after")
        query = query.where(a.id > starting_after)
    rows = uow.conn.execute(query.order_by(a.id).limit(max(1, min(limit, 1001)))).mappings()
    return [alert_public(r) for r in rows]


def delete_alert(uow: UnitOfWork, alert_id: str, vis: Visibility = EVERYTHING) -> dict[str, Any]:
    """Delete an alert and the record of its triggers. Emits ``alert.deleted``."""
    row = _alert(uow, alert_id, vis)
    uow.lock_customer(row["customer_id"])
    uow.conn.execute(delete(t.alert_triggers).where(t.alert_triggers.c.alert_id == alert_id))
    uow.conn.execute(delete(t.alerts).where(t.alerts.c.id == alert_id))
    uow.emit("alert.deleted", "alert", alert_id, {"kind": row["kind"]}, row["customer_id"])
    return {"id": alert_id, "object": "alert", "deleted": True}


def alert_public(row: Mapping[Any, Any]) -> dict[str, Any]:
    cur = row["currency"]
    thresholds = [
        money(int(v), cur) if row["kind"] == AlertKind.SPEND.value else plain(Decimal(v)) for v in row["thresholds"]
    ]
    return {
        "id": row["id"],
        "object": "alert",
        "customer_id": row["customer_id"],
        "subscription_id": row["subscription_id"],
        "kind": row["kind"],
        "meter": row["meter_code"],
        "group": row["group_values"],
        "thresholds": thresholds,
        "currency": cur,
        "created_at": plain(row["created_at"]),
    }


def set_usage_threshold(
    uow: UnitOfWork, subscription_id: str, amount: Any, vis: Visibility = EVERYTHING
) -> dict[str, Any]:
    """Invoice the subscription's usage as soon as its open period's unbilled usage reaches ``amount`` (a decimal
    string in the subscription's currency); ``None`` stops threshold billing."""
    sub = uow.conn.execute(select(t.subscriptions).where(t.subscriptions.c.id == subscription_id)).mappings().first()
    if sub is None:
        raise NotFound("subscription", subscription_id, "subscription_id")
    customer = uow.locked_customer(sub["customer_id"])
    if customer is None or not vis.sees_customer(customer):
        raise NotFound("subscription", subscription_id, "subscription_id")
    minor: int | None = None
    if amount is not None:
        minor = Money.of(amount, sub["currency"], "amount").minor
        if minor <= 0:
            raise ValidationError("invalid_threshold", "A usage threshold is an amount above 0.", "amount")
    uow.conn.execute(
        update(t.subscriptions)
        .where(t.subscriptions.c.id == subscription_id)
        .values(usage_threshold_minor=minor, updated_at=uow.now)
    )
    if minor is not None:
        usage_watch.watch(uow, sub["customer_id"])
    public = threshold_public(subscription_id, minor, sub["currency"])
    uow.emit(
        "subscription.updated",
        "subscription",
        subscription_id,
        {"usage_threshold": public["usage_threshold"]},
        sub["customer_id"],
    )
    return public


def threshold_public(subscription_id: str, minor: int | None, cur: str) -> dict[str, Any]:
    return {
        "object": "usage_threshold",
        "subscription_id": subscription_id,
        "usage_threshold": money(minor, cur),
        "currency": cur,
    }
