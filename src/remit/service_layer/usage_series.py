"""A customer's usage of one meter over time, day by day or hour by hour: for charts in a dashboard or a portal,
and for the engineer who asks when the usage came.

Each bucket is aggregated exactly as the bill run aggregates a window (the same set-wise statements, the same
filters; canceled events left out), over the customer's local days (or hours from its local midnight). Buckets are
aggregated on their own: the days of a month add up to the month for counts and sums, not for maxima, unique counts
or latest values; a time-weighted sum gives each bucket's average level. The quantities are as measured, before the
meter's rounding (which applies to a billing period's quantity) and before included units.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from remit.adapters.db.usage_queries import Window, aggregate_usage, weighted_series
from remit.domain.errors import NotFound, ValidationError
from remit.domain.rating.aggregations import Aggregate, Aggregation
from remit.domain.rating.alerts import combine
from remit.service_layer.accounts import local_midnight
from remit.service_layer.scoping import EVERYTHING, Visibility
from remit.service_layer.unit_of_work import UnitOfWork
from remit.service_layer.usage import meters_of, plain_text
from remit.service_layer.views import plain

GRANULARITIES = ("day", "hour")
MAX_BUCKETS = {"day": 366, "hour": 24 * 31 + 1}  # a 31-day month, with the hour a clock change adds
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(9998, 12, 31)
_QUARTER = timedelta(minutes=15)


def bucket_bounds(start_on: date, end_on: date, granularity: str, timezone: str) -> list[datetime]:
    """The instants (UTC) the buckets begin at, and the last one's end: local midnights, or the instants the local
    clock shows a whole hour. A day the clocks go forward an hour has 23 hourly buckets, back an hour 25 (the
    repeated hour is one of them); where they move half an hour (Lord Howe Island), the hour of the change is
    half an hour longer or shorter, and every bucket is still a local hour."""
    if granularity == "day":
        return [local_midnight(start_on + timedelta(days=k), timezone) for k in range((end_on - start_on).days + 1)]
    first, last = local_midnight(start_on, timezone), local_midnight(end_on, timezone)
    zone = ZoneInfo(timezone)
    bounds = [first]
    at = first + _QUARTER  # every UTC offset in use is a whole number of quarter hours
    while at < last:
        if at.astimezone(zone).minute == 0:
            bounds.append(at)
        at += _QUARTER
    bounds.append(last)
    return bounds


def usage_series(
    uow: UnitOfWork,
    customer_id: str,
    meter_code: str,
    start_on: date,
    end_on: date,
    granularity: str = "day",
    vis: Visibility = EVERYTHING,
) -> dict[str, Any]:
    """The customer's usage of the meter in each day (or hour) from ``start_on`` to ``end_on`` (excluded), in its
    time zone."""
    if not plain_text(customer_id, 40):
        raise NotFound("customer", customer_id, "customer_id")
    customer = vis.check_customer(uow, customer_id)
    if granularity not in GRANULARITIES:
        raise ValidationError("invalid_choice", "granularity is day or hour.", "granularity")
    meter = meters_of(uow.conn, [meter_code]).get(meter_code) if plain_text(meter_code, 100) else None
    if meter is None:
        raise NotFound("meter", meter_code, "meter", by="code")
    if end_on <= start_on:
        raise ValidationError("dates_out_of_order", "end_on must be after start_on.", "end_on")
    for day, name in ((start_on, "start_on"), (end_on, "end_on")):
        if not FIRST_DAY <= day <= LAST_DAY:
            raise ValidationError("date_out_of_range", f"{name} is a day from {FIRST_DAY} to {LAST_DAY}.", name)
    limit = MAX_BUCKETS[granularity]
    days = (end_on - start_on).days
    if days * (24 if granularity == "hour" else 1) > limit + 2:  # before computing bounds (+2: clock changes)
        raise ValidationError("too_many_buckets", f"At most {limit} buckets of one {granularity}.", "end_on")
    tz = customer["timezone"]
    bounds = bucket_bounds(start_on, end_on, granularity, tz)
    if len(bounds) - 1 > limit:
        raise ValidationError("too_many_buckets", f"At most {limit} buckets of one {granularity}.", "end_on")
    buckets: list[dict[tuple[str, ...], Aggregate]]
    if meter.aggregation is Aggregation.WEIGHTED_SUM:
        buckets = weighted_series(uow.conn, meter.code, customer_id, bounds)
    else:
        windows = [Window(customer_id, meter.code, s, e) for s, e in zip(bounds, bounds[1:], strict=False)]
        found = aggregate_usage(uow.conn, {meter.code: meter}, windows)
        buckets = [{} for _ in windows]
        position = {start: i for i, start in enumerate(bounds)}
        for (_c, _m, start, _end, group), agg in found.items():
            buckets[position[start]][group] = agg
    data = []
    for (start, end), groups in zip(zip(bounds, bounds[1:], strict=False), buckets, strict=True):
        entry: dict[str, Any] = {
            "start": plain(start),
            "end": plain(end),
            "quantity": plain(combine(meter.aggregation, [a.quantity for a in groups.values()])),
            "events": sum(a.events for a in groups.values()),
        }
        if meter.group_by:
            entry["groups"] = [
                {
                    "group": dict(zip(meter.group_by, group, strict=True)),
                    "quantity": plain(agg.quantity),
                    "events": agg.events,
                }
                for group, agg in sorted(groups.items())
                if len(group) == len(meter.group_by)
            ]
        data.append(entry)
    return {
        "object": "usage_series",
        "customer_id": customer_id,
        "meter": meter.code,
        "aggregation": meter.aggregation.value,
        "granularity": granularity,
        "timezone": tz,
        "data": data,
    }
