"""Meters and usage-event ingestion: validate each event on its own, keep the valid ones, count each once.

A batch answers event by event: which were new, which were duplicates of events already received (same customer
and client transaction id: not an error, not counted twice), and which were refused and why. Nothing of a refused
event is stored. Deduplication lives in the database (a primary key on customer and transaction id), so the same
batch posted twice at once still counts once.
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id
from remit.domain.clock import ensure_utc
from remit.domain.errors import Conflict, RemitError, ValidationError
from remit.domain.rating.aggregations import Aggregation, Meter, UsageEvent
from remit.domain.rating.expressions import Formula, parse_formula
from remit.service_layer.scoping import EVERYTHING, Visibility
from remit.service_layer.unit_of_work import UnitOfWork

MAX_BATCH = 1000
MAX_PROPERTIES = 50
MAX_PROPERTIES_BYTES = 8192
FUTURE_SKEW = timedelta(minutes=5)
MAX_VALUE_CHARS = 64  # usage_events.value is text of at most 64 characters


@dataclass(frozen=True)
class UsageSettings:
    grace: timedelta = timedelta(days=7)  # how late an event may arrive


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


def _occurred_at(raw: object, now: datetime, settings: UsageSettings) -> datetime:
    if isinstance(raw, str):
        try:
            at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError("invalid_timestamp", f"{raw!r} is not an ISO 8601 time.", "timestamp") from None
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    elif isinstance(raw, datetime):
        at = ensure_utc(raw)
    else:
        raise ValidationError("invalid_timestamp", "timestamp is an ISO 8601 time.", "timestamp")
    if at > now + FUTURE_SKEW:
        raise ValidationError("timestamp_in_future", "The event is dated in the future.", "timestamp")
    if at < now - settings.grace:
        raise ValidationError(
            "event_too_old", f"Events may arrive at most {settings.grace.days} days late.", "timestamp"
        )
    return at


# One encoder, built once (json.dumps with options builds a new one per call).
_encode = json.JSONEncoder(default=str).encode
_GROUP_KEYS: dict[tuple[str, ...], str] = {}


def _group_key(group: tuple[str, ...]) -> str:
    found = _GROUP_KEYS.get(group)
    if found is None:
        found = json.dumps(list(group))
        if len(_GROUP_KEYS) < 10_000:  # the same few groups recur; the cache stays small
            _GROUP_KEYS[group] = found
    return found


class CheckedEvent(NamedTuple):
    """A valid event, in the form it is stored in: ``value`` as exact decimal text, ``properties`` as JSON."""

    customer_id: str
    subscription_id: str | None
    meter_code: str
    transaction_id: str
    occurred_at: datetime
    value: str | None
    dimension: str | None
    group_key: str
    matched: bool
    properties: str


def check_event(
    raw: Mapping[str, Any],
    meters: Mapping[str, Meter],
    customers: Container[str],
    now: datetime,
    settings: UsageSettings,
) -> CheckedEvent:
    """The rules every event is held to, on every path in (API, batch, import); raises ValidationError."""
    txn = raw.get("transaction_id")
    if not isinstance(txn, str) or not 1 <= len(txn) <= 200 or "\x00" in txn:
        raise ValidationError(
            "invalid_transaction_id", "transaction_id is a string of 1 to 200 characters.", "transaction_id"
        )
    customer_id = raw.get("customer_id")
    if not isinstance(customer_id, str) or customer_id not in customers:
        raise ValidationError("unknown_customer", f"No customer with id {customer_id!r}.", "customer_id")
    subscription_id = raw.get("subscription_id")
    if subscription_id is not None and (
        not isinstance(subscription_id, str) or not 1 <= len(subscription_id) <= 40 or "\x00" in subscription_id
    ):
        raise ValidationError("invalid_subscription_id", "subscription_id is an id.", "subscription_id")
    code = raw.get("code")
    meter = meters.get(code) if isinstance(code, str) else None
    if meter is None:
        raise ValidationError("unknown_meter", f"No meter with code {code!r}.", "code")
    props = raw.get("properties", {})
    if not isinstance(props, dict) or len(props) > MAX_PROPERTIES or not all(isinstance(k, str) for k in props):
        raise ValidationError(
            "invalid_properties", f"properties is an object of at most {MAX_PROPERTIES} keys.", "properties"
        )
    encoded = _encode(props)
    if len(encoded) > MAX_PROPERTIES_BYTES:
        raise ValidationError("invalid_properties", "properties are too large.", "properties")
    at = _occurred_at(raw.get("timestamp"), now, settings)
    event = UsageEvent(at, props, txn)
    meter.check(event)
    value = dimension = None
    if meter.aggregation.numeric:
        value = format(meter.value_of(event), "f")
        if len(value) > MAX_VALUE_CHARS:
            field_name = f"properties.{meter.field}" if meter.field else "properties"
            raise ValidationError("not_numeric", "The event's value is too large.", field_name)
    elif meter.field is not None:
        dimension = str(props[meter.field])[:200]
        if "\x00" in dimension:
            raise ValidationError("invalid_properties", "A property holds a NUL character.", f"properties.{meter.field}")
    return CheckedEvent(
        customer_id,
        subscription_id,
        meter.code,
        txn,
        at,
        value,
        dimension,
        _group_key(meter.group_of(event)) if meter.group_by else "[]",
        meter.matches(event) if meter.filters else True,
        encoded,
    )


def _row(
    raw: Mapping[str, Any],
    meters: Mapping[str, Meter],
    customers: Mapping[str, Mapping[Any, Any]],
    now: datetime,
    settings: UsageSettings,
) -> dict[str, Any]:
    e = check_event(raw, meters, customers, now, settings)
    return {
        "id": new_id("uev"),
        "occurred_at": e.occurred_at,
        "customer_id": e.customer_id,
        "subscription_id": e.subscription_id,
        "meter_code": e.meter_code,
        "transaction_id": e.transaction_id,
        "received_at": now,
        "value": None if e.value is None else Decimal(e.value),
        "dimension": e.dimension,
        "group_key": e.group_key,
        "matched": e.matched,
        "properties": json.loads(e.properties),
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
    result = IngestResult()
    rows: list[tuple[int, dict[str, Any]]] = []
    seen: set[tuple[str, str]] = set()
    for index, raw in enumerate(events):
        if not isinstance(raw, dict):
            _reject(result, index, None, ValidationError("invalid_event", "Each event is an object.", "events"))
            continue
        try:
            row = _row(raw, meters, customers, now, settings)
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
    return result


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
    # In sorted order, as the import claims them: writers that take keys in one order never deadlock.
    params = sorted(
        ({"customer_id": r["customer_id"], "transaction_id": r["transaction_id"], "received_at": now} for r in rows),
        key=lambda p: (p["customer_id"], p["transaction_id"]),
    )
    returned = conn.execute(stmt, params).all()
    return {(c, txn) for c, txn in returned}
