"""Reading usage events back: what Remit stored for a customer, as it will be aggregated.

For the engineer who sends usage and asks "did it arrive, and does it count?": each event with its meter, its
transaction id, its time and when it was received, the value and group its meter took from it, whether it counts
(it passes the meter's filters and was not canceled) and, if it was canceled, when and why. Found through the
index the aggregation reads (customer, meter, time), so asking for one meter and a time range reads only those
events.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, cast, or_, select

from remit.adapters import fastjson
from remit.adapters.db import tables as t
from remit.domain.clock import ensure_utc
from remit.domain.errors import NotFound, ValidationError
from remit.service_layer.scoping import EVERYTHING, Visibility
from remit.service_layer.unit_of_work import UnitOfWork
from remit.service_layer.usage import plain_text
from remit.service_layer.views import MAX_LIMIT, plain

_COLUMNS = ("id", "customer_id", "subscription_id", "meter_code", "transaction_id", "occurred_at", "received_at")


def list_usage_events(
    uow: UnitOfWork,
    customer_id: str,
    *,
    meter_code: str | None = None,
    occurred_gte: datetime | None = None,
    occurred_lt: datetime | None = None,
    transaction_id: str | None = None,
    group: Mapping[str, str] | None = None,
    limit: int | None = 20,
    after: str | None = None,
    vis: Visibility = EVERYTHING,
) -> list[dict[str, Any]]:
    """A customer's usage events, oldest first (by time, then id); ``after``: the id of the last event of the
    page before. ``occurred_gte`` and ``occurred_lt`` bound the events' time (the end excluded). ``group``: only
    the events of this group of the meter's dimensions (every dimension given; needs ``meter_code``)."""
    if not plain_text(customer_id, 40):
        raise NotFound("customer", customer_id, "customer_id")
    vis.check_customer(uow, customer_id)
    if after is not None and not plain_text(after, 40):
        raise NotFound("usage_event", after, "starting_after")
    if any(v is not None and not plain_text(v, 200) for v in (meter_code, transaction_id)):
        return []  # no meter code or transaction id holds such text: nothing matches
    gte = None if occurred_gte is None else _utc(occurred_gte, "occurred_gte")
    lt = None if occurred_lt is None else _utc(occurred_lt, "occurred_lt")
    if gte is not None and lt is not None and lt <= gte:
        raise ValidationError("dates_out_of_order", "occurred_lt must be after occurred_gte.", "occurred_lt")
    e = t.usage_events.c
    where = [e.customer_id == customer_id]
    if meter_code is not None:
        where.append(e.meter_code == meter_code)
    if gte is not None:
        where.append(e.occurred_at >= gte)
    if lt is not None:
        where.append(e.occurred_at < lt)
    if transaction_id is not None:
        where.append(e.transaction_id == transaction_id)
    if group:
        where.append(e.group_key == _group_key(uow, meter_code, group))
    if after:
        at = uow.conn.execute(select(e.occurred_at).where(e.customer_id == customer_id, e.id == after)).scalar()
        if at is None:
            raise NotFound("usage_event", after, "starting_after")
        where.append(or_(e.occurred_at > at, and_(e.occurred_at == at, e.id > after)))
    query = (
        select(
            *(e[name] for name in _COLUMNS),
            e.value,
            e.dimension,
            e.group_key,
            e.matched,
            # the stored text, read with its numbers exact (the JSON type would read them as floats)
            cast(e.properties, String).label("properties"),
        )
        .where(*where)
        .order_by(e.occurred_at, e.id)
    )
    if limit is not None:
        query = query.limit(min(limit, MAX_LIMIT + 1) if limit > 0 else MAX_LIMIT)
    rows = list(uow.conn.execute(query).mappings())
    group_by = {
        code: list(names or [])
        for code, names in uow.conn.execute(
            select(t.meters.c.code, t.meters.c.group_by).where(t.meters.c.code.in_({r["meter_code"] for r in rows}))
        )
    }
    canceled = _cancellations(uow, customer_id, [r["transaction_id"] for r in rows if not r["matched"]])
    return [_public(row, group_by.get(row["meter_code"], []), canceled.get(row["transaction_id"])) for row in rows]


def group_pairs(values: list[str] | None, separator: str, option: str) -> dict[str, str] | None:
    """A group of a meter's dimensions as people type it: ``region:eu`` (the API's query) or ``region=eu`` (the
    CLI), one per dimension; None when none is given."""
    if not values:
        return None
    out: dict[str, str] = {}
    for value in values:
        name, sep, val = value.partition(separator)
        if not sep or not name:
            raise ValidationError("invalid_group", f"{option} takes dimension{separator}value, not {value!r}.", "group")
        if name in out:
            raise ValidationError("invalid_group", f"{option} gives dimension {name!r} twice.", "group")
        out[name] = val
    return out


def _utc(at: datetime, field: str) -> datetime:
    try:
        return ensure_utc(at)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first instant a datetime holds
        raise ValidationError("invalid_date", f"{field} is out of range.", field) from None


def _group_key(uow: UnitOfWork, meter_code: str | None, group: Mapping[str, str]) -> str:
    """The stored form of a group of the meter's dimensions: its values in the meter's order, as JSON."""
    if meter_code is None:
        raise ValidationError("missing_meter", "A group is a group of one meter's dimensions: give the meter.", "meter")
    names = uow.conn.execute(select(t.meters.c.group_by).where(t.meters.c.code == meter_code)).scalar()
    if names is None:
        raise NotFound("meter", meter_code, "meter", by="code")
    if sorted(group) != sorted(names):
        wanted = ", ".join(names) if names else "none"
        raise ValidationError(
            "invalid_group", f"Give a value for each of meter {meter_code}'s dimensions ({wanted}).", "group"
        )
    return json.dumps([str(group[name]) for name in names])


def _cancellations(uow: UnitOfWork, customer_id: str, transaction_ids: list[str]) -> dict[str, Any]:
    """The cancellations of those of the page's events that do not count (only those can be canceled)."""
    c = t.usage_event_cancellations.c
    out: dict[str, Any] = {}
    ids = sorted(set(transaction_ids))
    for start in range(0, len(ids), 500):
        query = select(c.transaction_id, c.canceled_at, c.reason).where(
            c.customer_id == customer_id, c.transaction_id.in_(ids[start : start + 500])
        )
        out.update((row["transaction_id"], row) for row in uow.conn.execute(query).mappings())
    return out


def _public(row: Any, group_by: list[str], cancellation: Any) -> dict[str, Any]:
    values = json.loads(row["group_key"]) if row["group_key"] else []
    return {
        "object": "usage_event",
        **{name: plain(row[name]) for name in _COLUMNS if name != "meter_code"},
        "meter": row["meter_code"],
        "properties": fastjson.loads_numbers(row["properties"]),
        "value": plain(row["value"]),
        "dimension": row["dimension"],
        # The meter's group-by dimensions and this event's values of them (as they were when it was received).
        "group": dict(zip(group_by, values, strict=True)) if len(values) == len(group_by) else {},
        "counted": bool(row["matched"]),  # whether it is aggregated: it passes the filters and is not canceled
        "canceled_at": plain(cancellation["canceled_at"]) if cancellation else None,
        "cancellation_reason": cancellation["reason"] if cancellation else None,
    }
