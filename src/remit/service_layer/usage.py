"""Meters and usage-event ingestion: validate each event on its own, keep the valid ones, count each once.

A batch answers event by event: which were new, which were duplicates of events already received (same customer
and client transaction id: not an error, not counted twice), and which were refused and why. Nothing of a refused
event is stored. Deduplication lives in the database (a primary key on customer and transaction id), so the same
batch posted twice at once still counts once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id
from remit.domain.clock import ensure_utc
from remit.domain.errors import Conflict, RemitError, ValidationError
from remit.domain.rating.aggregations import Aggregation, Meter, UsageEvent
from remit.domain.rating.expressions import Formula, parse_formula
from remit.domain.subscriptions.periods import Interval, period_containing
from remit.service_layer import usage_watch
from remit.service_layer.accounts import local_date, local_midnight
from remit.service_layer.scoping import EVERYTHING, Visibility
from remit.service_layer.unit_of_work import UnitOfWork

MAX_BATCH = 1000
MAX_PROPERTIES = 50
MAX_PROPERTIES_BYTES = 8192
FUTURE_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class UsageSettings:
    """How late an event may arrive, before the customer's open period: ``REMIT_USAGE_GRACE_DAYS`` (default 7)."""

    grace: timedelta = field(default_factory=lambda: timedelta(days=_grace_days()))


def _grace_days() -> int:
    raw = os.environ.get("REMIT_USAGE_GRACE_DAYS", "7")
    if not raw.isdigit() or int(raw) > 366:
        raise ValidationError(
            "invalid_setting", f"REMIT_USAGE_GRACE_DAYS is a number of days from 0 to 366, not {raw!r}.", "grace"
        )
    return int(raw)


def create_meter(
    uow: UnitOfWork,
    code: str,
    name: str,
    aggregation: str,
    field_name: str | None = None,
    filters: Mapping[str, Sequence[str]] | None = None,
    group_by: Sequence[str] = (),
    expression: str | None = None,
) -> str:
    try:
        agg = Aggregation(aggregation)
    except ValueError:
        raise ValidationError(
            "invalid_choice",
            f"{aggregation!r} is not an aggregation: " + ", ".join(a.value for a in Aggregation) + ".",
            "aggregation",
        ) from None
    formula = parse_formula(expression, "expression") if expression is not None else None
    meter = Meter(
        code,
        agg,
        field_name,
        {k: tuple(str(v) for v in vs) for k, vs in (filters or {}).items()},
        tuple(group_by),
        formula,
    )
    if uow.conn.execute(select(t.meters.c.id).where(t.meters.c.code == code)).first() is not None:
        raise Conflict("meter_code_taken", f"A meter with code {code!r} exists already.", "code")
    meter_id = new_id("meter")
    uow.insert_many(
        t.meters,
        [
            {
                "id": meter_id,
                "code": meter.code,
                "name": name or code,
                "aggregation": agg.value,
                "field": field_name,
                "expression": formula.source if formula else None,
                "filters": {k: list(v) for k, v in meter.filters.items()},
                "group_by": list(meter.group_by),
                "created_at": uow.now,
            }
        ],
    )
    return meter_id


def meter_from_row(row: Mapping[Any, Any]) -> Meter:
    return Meter(
        row["code"],
        Aggregation(row["aggregation"]),
        row["field"],
        {k: tuple(v) for k, v in row["filters"].items()},
        tuple(row["group_by"]),
        _formula(row.get("expression")),
    )


_FORMULAS: dict[str, Formula] = {}


def _formula(source: str | None) -> Formula | None:
    if source is None:
        return None
    found = _FORMULAS.get(source)
    if found is None:
        found = _FORMULAS[source] = parse_formula(source, "expression")
    return found


@dataclass
class IngestResult:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _reject(result: IngestResult, index: int, txn: object, exc: RemitError) -> None:
    result.rejected.append(
        {"index": index, "transaction_id": txn if isinstance(txn, str) else None, "error": exc.to_dict()}
    )


def _occurred_at(raw: object, now: datetime, settings: UsageSettings, open_since: datetime | None) -> datetime:
    """The event's time. Any time in the customer's open billing period is fine; before it, at most ``grace``
    before now (such late events are billed as corrections). Not in the future beyond a small clock skew."""
    if isinstance(raw, datetime):
        at = ensure_utc(raw)
    elif isinstance(raw, str):
        try:
            at = ensure_utc(datetime.fromisoformat(raw.replace("Z", "+00:00")))
        except ValueError:
            raise ValidationError("invalid_timestamp", f"{raw!r} is not an ISO 8601 time.", "timestamp") from None
    else:
        raise ValidationError("invalid_timestamp", "timestamp is an ISO 8601 time.", "timestamp")
    if at > now + FUTURE_SKEW:
        raise ValidationError("timestamp_in_future", "The event is dated in the future.", "timestamp")
    if at < now - settings.grace and (open_since is None or at < open_since):
        raise ValidationError(
            "event_too_old", f"Events may arrive at most {settings.grace.days} days late.", "timestamp"
        )
    return at


def _row(
    raw: Mapping[str, Any],
    meters: Mapping[str, Meter],
    customers: Mapping[str, Mapping[Any, Any]],
    now: datetime,
    settings: UsageSettings,
    clock_times: Mapping[str, datetime],
    open_since: Mapping[str, datetime],
) -> dict[str, Any]:
    txn = raw.get("transaction_id")
    if not isinstance(txn, str) or not 1 <= len(txn) <= 200:
        raise ValidationError(
            "invalid_transaction_id", "transaction_id is a string of 1 to 200 characters.", "transaction_id"
        )
    customer_id = raw.get("customer_id")
    if not isinstance(customer_id, str) or customer_id not in customers:
        raise ValidationError("unknown_customer", f"No customer with id {customer_id!r}.", "customer_id")
    code = raw.get("code")
    meter = meters.get(code) if isinstance(code, str) else None
    if meter is None:
        raise ValidationError("unknown_meter", f"No meter with code {code!r}.", "code")
    props = raw.get("properties", {})
    if not isinstance(props, dict) or len(props) > MAX_PROPERTIES or not all(isinstance(k, str) for k in props):
        raise ValidationError(
            "invalid_properties", f"properties is an object of at most {MAX_PROPERTIES} keys.", "properties"
        )
    encoded = json.dumps(props, default=str)
    if len(encoded) > MAX_PROPERTIES_BYTES:
        raise ValidationError("invalid_properties", "properties are too large.", "properties")
    clock_id = customers[customer_id]["test_clock_id"]
    if clock_id:  # a test-mode customer lives at its test clock's time
        now = clock_times.get(clock_id, now)
    at = _occurred_at(raw.get("timestamp"), now, settings, open_since.get(customer_id))
    event = UsageEvent(at, props, txn)
    meter.check(event)
    value = dimension = None
    if meter.aggregation.numeric:
        value = meter.value_of(event)
    elif meter.field is not None:
        dimension = str(props[meter.field])[:200]
    return {
        "id": new_id("uev"),
        "occurred_at": at,
        "customer_id": customer_id,
        "subscription_id": raw.get("subscription_id"),
        "meter_code": meter.code,
        "transaction_id": txn,
        "received_at": now,
        "value": value,
        "dimension": dimension,
        "group_key": json.dumps(list(meter.group_of(event))),
        "matched": meter.matches(event),
        "properties": json.loads(encoded),
    }


def ingest(
    uow: UnitOfWork, events: Sequence[Any], *, vis: Visibility = EVERYTHING, settings: UsageSettings | None = None
) -> IngestResult:
    """Validate and store a batch of usage events (at most 1,000)."""
    settings = settings or UsageSettings()
    if len(events) > MAX_BATCH:
        raise ValidationError("batch_too_large", f"A batch holds at most {MAX_BATCH} events.", "events")
    now = uow.now
    meters = {r["code"]: meter_from_row(r) for r in uow.conn.execute(select(t.meters)).mappings()}
    wanted = {e.get("customer_id") for e in events if isinstance(e, dict) and isinstance(e.get("customer_id"), str)}
    customers = {
        r["id"]: r
        for r in uow.conn.execute(select(t.customers).where(t.customers.c.id.in_(wanted))).mappings()
        if vis.sees_customer(r)
    }
    clock_ids = {r["test_clock_id"] for r in customers.values() if r["test_clock_id"]}
    clock_times: dict[str, datetime] = (
        {
            r.id: r.frozen_at
            for r in uow.conn.execute(
                select(t.test_clocks.c.id, t.test_clocks.c.frozen_at).where(t.test_clocks.c.id.in_(clock_ids))
            )
        }
        if clock_ids
        else {}
    )
    open_since = _open_since(uow, customers, clock_times)
    result = IngestResult()
    rows: list[tuple[int, dict[str, Any]]] = []
    seen: set[tuple[str, str]] = set()
    for index, raw in enumerate(events):
        if not isinstance(raw, dict):
            _reject(result, index, None, ValidationError("invalid_event", "Each event is an object.", "events"))
            continue
        try:
            row = _row(raw, meters, customers, now, settings, clock_times, open_since)
        except RemitError as exc:
            _reject(result, index, raw.get("transaction_id"), exc)
            continue
        key = (row["customer_id"], row["transaction_id"])
        if key in seen:
            result.duplicates.append({"index": index, "transaction_id": row["transaction_id"]})
            continue
        seen.add(key)
        rows.append((index, row))
    new_keys = _claim_keys(uow.conn, [r for _, r in rows], now)
    fresh = []
    for index, row in rows:
        entry = {"index": index, "transaction_id": row["transaction_id"]}
        if (row["customer_id"], row["transaction_id"]) in new_keys:
            result.accepted.append({**entry, "id": row["id"]})
            fresh.append(row)
        else:
            result.duplicates.append(entry)
    uow.insert_many(t.usage_events, fresh)
    reopen_for_late_usage(uow, [(r["customer_id"], r["occurred_at"]) for r in fresh], customers, clock_times)
    usage_watch.mark(uow, {r["customer_id"] for r in fresh})  # alerts and thresholds look at these customers
    return result


def _open_since(
    uow: UnitOfWork, customers: Mapping[str, Mapping[Any, Any]], clock_times: Mapping[str, datetime]
) -> dict[str, datetime]:
    """Per customer, when the earliest billing period still open today began (events from then on are never
    late). One query for the batch."""
    if not customers:
        return {}
    s = t.subscriptions.c
    rows = uow.conn.execute(
        select(s.customer_id, s.anchor_on, s.interval_unit, s.interval_count, s.started_on).where(
            s.customer_id.in_(list(customers)), s.ended_on.is_(None)
        )
    ).all()
    out: dict[str, datetime] = {}
    for customer_id, anchor_on, unit, count, started_on in rows:
        customer = customers[customer_id]
        clock_id = customer["test_clock_id"]
        now = clock_times.get(clock_id, uow.now) if clock_id else uow.now
        tz = customer["timezone"]
        today = local_date(now, tz)
        start_on = max(period_containing(anchor_on, Interval.parse(unit, count), today).start_on, started_on)
        since = local_midnight(start_on, tz)
        if customer_id not in out or since < out[customer_id]:
            out[customer_id] = since
    return out


_REOPEN = (
    update(t.subscriptions)
    .where(
        t.subscriptions.c.customer_id == bindparam("b_customer"),
        t.subscriptions.c.reviewed_from_on > bindparam("b_day"),
    )
    .values(reviewed_from_on=bindparam("b_day"))
)


def reopen_for_late_usage(
    uow: UnitOfWork,
    events: Sequence[tuple[str, datetime]],
    customers: Mapping[str, Mapping[Any, Any]],
    clock_times: Mapping[str, datetime],
) -> None:
    """Events dated before the day the bill run has reviewed up to (late arrivals, inside the grace period) move
    that mark back to the event's day, so the next bill run looks at the period again and bills the difference
    as a correction. Events dated today (the usual case) cost nothing here."""
    earliest: dict[str, date] = {}
    for customer_id, at in events:
        customer = customers[customer_id]
        clock_id = customer["test_clock_id"]
        now = clock_times.get(clock_id, uow.now) if clock_id else uow.now
        day = local_date(at, customer["timezone"])
        if day < local_date(now, customer["timezone"]) and day < earliest.get(customer_id, date.max):
            earliest[customer_id] = day
    if earliest:
        uow.conn.execute(_REOPEN, [{"b_customer": c, "b_day": d} for c, d in earliest.items()])


def _claim_keys(conn: Connection, rows: Sequence[Mapping[str, Any]], now: datetime) -> set[tuple[str, str]]:
    """Insert the dedup keys; the ones that were new come back. A key another transaction holds is a duplicate."""
    if not rows:
        return set()
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(t.usage_event_keys)
        .on_conflict_do_nothing()
        .returning(t.usage_event_keys.c.customer_id, t.usage_event_keys.c.transaction_id)
    )
    params = [
        {"customer_id": r["customer_id"], "transaction_id": r["transaction_id"], "received_at": now} for r in rows
    ]
    returned = conn.execute(stmt, params).all()
    return {(c, txn) for c, txn in returned}
