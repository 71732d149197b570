"""Usage aggregation in SQL: one query per batch of customers, never one per subscription or meter.

The figures equal the reference semantics of ``remit.domain.rating.aggregations`` (tests hold them to each
other). Values are stored as exact decimal text; PostgreSQL aggregates them as NUMERIC, SQLite through small
exact aggregate functions registered on the connection (SQLite's own SUM would go through binary floats).
Time-weighted sums need each group's events in order, so for those meters the same single query returns the
ordered events and the weighting is done while streaming them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Numeric, and_, case, cast, column, func, select, values
from sqlalchemy import String as SqlString

from remit.adapters.db import tables as t
from remit.adapters.db.types import UTCDateTime
from remit.domain.rating.aggregations import Aggregate, Aggregation, Meter, UsageEvent, aggregate


@dataclass(frozen=True, slots=True)
class Window:
    """Aggregate one customer's events of one meter over [start, end)."""

    customer_id: str
    meter_code: str
    start: datetime
    end: datetime


Key = tuple[str, str, datetime, datetime, tuple[str, ...]]  # (customer, meter, window start, window end, group)


class _DecimalSum:
    def __init__(self) -> None:
        self.total = Decimal(0)

    def step(self, value: str | None) -> None:
        if value is not None:
            self.total += Decimal(value)

    def finalize(self) -> str:
        return str(self.total)


class _DecimalMax:
    def __init__(self) -> None:
        self.best: Decimal | None = None

    def step(self, value: str | None) -> None:
        if value is not None and (self.best is None or Decimal(value) > self.best):
            self.best = Decimal(value)

    def finalize(self) -> str | None:
        return None if self.best is None else str(self.best)


def _sqlite_functions(conn: Connection) -> None:
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.create_aggregate("decimal_sum", 1, _DecimalSum)
    raw.create_aggregate("decimal_max", 1, _DecimalMax)


def aggregate_usage(
    conn: Connection,
    meters: Mapping[str, Meter],
    windows: Sequence[Window],
    starting_levels: Mapping[tuple[str, str, tuple[str, ...]], Decimal] | None = None,
) -> dict[Key, Aggregate]:
    """Aggregate every window's events, per group, in one statement (two when weighted meters are present)."""
    if not windows:
        return {}
    pg = conn.dialect.name == "postgresql"
    if not pg:
        _sqlite_functions(conn)
    simple = [w for w in windows if meters[w.meter_code].aggregation is not Aggregation.WEIGHTED_SUM]
    weighted = [w for w in windows if meters[w.meter_code].aggregation is Aggregation.WEIGHTED_SUM]
    result: dict[Key, Aggregate] = {}
    if simple:
        result.update(_simple(conn, meters, simple, pg))
    if weighted:
        result.update(_weighted(conn, meters, weighted, starting_levels or {}))
    return result


def _windows_cte(windows: Sequence[Window]) -> Any:
    rows = [(w.customer_id, w.meter_code, w.start, w.end) for w in windows]
    return (
        values(
            column("w_customer", SqlString(40)),
            column("w_meter", SqlString(100)),
            column("w_start", UTCDateTime()),
            column("w_end", UTCDateTime()),
            name="w",
        )
        .data(rows)
        .cte("w")
    )


def _joined(windows: Sequence[Window], from_start: bool = True) -> tuple[Any, Any]:
    """The windows as a VALUES list, and the join condition of events to them. ``from_start=False`` also takes
    the events before each window (a time-weighted level starts from everything before it)."""
    w = _windows_cte(windows)
    e = t.usage_events.c
    condition = and_(
        e.customer_id == w.c.w_customer,
        e.meter_code == w.c.w_meter,
        *([e.occurred_at >= w.c.w_start] if from_start else []),
        e.occurred_at < w.c.w_end,
        e.matched.is_(True),
    )
    return w, condition


def _simple(conn: Connection, meters: Mapping[str, Meter], windows: Sequence[Window], pg: bool) -> dict[Key, Aggregate]:
    w, condition = _joined(windows)
    e = t.usage_events.c
    latest_rank = func.row_number().over(
        partition_by=(e.customer_id, e.meter_code, w.c.w_start, w.c.w_end, e.group_key),
        order_by=(e.occurred_at.desc(), e.transaction_id.desc()),
    )
    inner = (
        select(
            e.customer_id,
            e.meter_code,
            w.c.w_start.label("w_start"),
            w.c.w_end.label("w_end"),
            e.group_key,
            e.value,
            e.dimension,
            latest_rank.label("rank"),
        )
        .select_from(t.usage_events.join(w, condition))
        .subquery()
    )
    i = inner.c
    latest_value = (
        (func.max(case((i.rank == 1, cast(i.value, Numeric(38, 12))))))
        if pg
        else func.decimal_max(case((i.rank == 1, i.value)))
    )
    query = select(
        i.customer_id,
        i.meter_code,
        i.w_start,
        i.w_end,
        i.group_key,
        func.count().label("events"),
        (func.sum(cast(i.value, Numeric(38, 12))) if pg else func.decimal_sum(i.value)).label("total"),
        (func.max(cast(i.value, Numeric(38, 12))) if pg else func.decimal_max(i.value)).label("biggest"),
        func.count(i.dimension.distinct()).label("distinct"),
        latest_value.label("latest"),
    ).group_by(i.customer_id, i.meter_code, i.w_start, i.w_end, i.group_key)
    out: dict[Key, Aggregate] = {}
    for row in conn.execute(query):
        meter = meters[row.meter_code]
        quantity = {
            Aggregation.COUNT: Decimal(row.events),
            Aggregation.SUM: _dec(row.total),
            Aggregation.MAX: _dec(row.biggest),
            Aggregation.UNIQUE_COUNT: Decimal(row.distinct),
            Aggregation.LATEST: _dec(row.latest),
        }[meter.aggregation]
        start, end = _when(row.w_start, conn), _when(row.w_end, conn)
        out[(row.customer_id, row.meter_code, start, end, tuple(json.loads(row.group_key)))] = Aggregate(
            quantity, int(row.events)
        )
    return out


def _when(value: Any, conn: Connection) -> datetime:
    return _utc(value if isinstance(value, datetime) else UTCDateTime().process_result_value(value, conn.dialect))


def _weighted(
    conn: Connection,
    meters: Mapping[str, Meter],
    windows: Sequence[Window],
    starting_levels: Mapping[tuple[str, str, tuple[str, ...]], Decimal],
) -> dict[Key, Aggregate]:
    """Time-weighted sums: each window's events in order, streamed, after the level everything before the window
    built up (events before the window only move the starting level)."""
    w, condition = _joined(windows, from_start=False)
    e = t.usage_events.c
    query = (
        select(
            e.customer_id, e.meter_code, w.c.w_start, w.c.w_end, e.group_key, e.occurred_at, e.transaction_id, e.value
        )
        .select_from(t.usage_events.join(w, condition))
        .order_by(e.customer_id, e.meter_code, w.c.w_start, w.c.w_end, e.group_key, e.occurred_at, e.transaction_id)
    )
    by_window: dict[tuple[str, str, datetime, datetime], list[UsageEvent]] = {}
    before: dict[tuple[str, str, datetime, datetime, str], Decimal] = {}
    for row in conn.execute(query):
        start, end = _when(row.w_start, conn), _when(row.w_end, conn)
        at = _utc(row.occurred_at)
        if at < start:
            key = (row.customer_id, row.meter_code, start, end, row.group_key)
            before[key] = before.get(key, Decimal(0)) + _dec(row.value)
            continue
        props = {"__value": row.value, "__group": row.group_key}
        by_window.setdefault((row.customer_id, row.meter_code, start, end), []).append(
            UsageEvent(at, props, row.transaction_id)
        )
    out: dict[Key, Aggregate] = {}
    for win in windows:
        meter = meters[win.meter_code]
        start, end = _utc(win.start), _utc(win.end)
        reader = Meter(meter.code, Aggregation.WEIGHTED_SUM, "__value", group_by=("__group",))
        levels: dict[tuple[str, ...], Decimal] = {
            (json.dumps(list(g)),): v
            for (c, m, g), v in starting_levels.items()
            if c == win.customer_id and m == win.meter_code
        }
        for (c, m, s_, e_, group_json), level in before.items():
            if (c, m, s_, e_) == (win.customer_id, win.meter_code, start, end):
                levels[(group_json,)] = levels.get((group_json,), Decimal(0)) + level
        events = by_window.get((win.customer_id, win.meter_code, start, end), [])
        for (group_json,), agg in aggregate(reader, events, start, end, levels).items():
            out[(win.customer_id, win.meter_code, start, end, tuple(json.loads(group_json)))] = agg
    return out


def transaction_values(conn: Connection, windows: Sequence[Window]) -> dict[Key, list[Decimal]]:
    """Each window's event values in time order, per group: the transactions a percentage price charges one by
    one (its fixed fee, free transactions, minimum and maximum apply per transaction). One query."""
    if not windows:
        return {}
    w, condition = _joined(windows)
    e = t.usage_events.c
    query = (
        select(e.customer_id, e.meter_code, w.c.w_start, w.c.w_end, e.group_key, e.value)
        .select_from(t.usage_events.join(w, condition))
        .order_by(e.customer_id, e.meter_code, w.c.w_start, w.c.w_end, e.group_key, e.occurred_at, e.transaction_id)
    )
    out: dict[Key, list[Decimal]] = {}
    for row in conn.execute(query):
        key = (row.customer_id, row.meter_code, _when(row.w_start, conn), _when(row.w_end, conn))
        out.setdefault((*key, tuple(json.loads(row.group_key))), []).append(_dec(row.value))
    return out


def _dec(value: object) -> Decimal:
    if value is None:
        return Decimal(0)
    if isinstance(value, Decimal):
        return Decimal(int(value)) if value == value.to_integral() else value.normalize()
    return Decimal(str(value))


def _utc(at: datetime | None) -> datetime:
    assert at is not None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def reference(
    meters: Mapping[str, Meter], rows: Iterable[Mapping[str, Any]], windows: Sequence[Window]
) -> dict[Key, Aggregate]:
    """The same figures from the pure aggregations (used by tests to hold the SQL to the reference)."""
    out: dict[Key, Aggregate] = {}
    rows = list(rows)
    for win in windows:
        meter = meters[win.meter_code]
        events = [
            UsageEvent(r["occurred_at"], r["properties"], r["transaction_id"])
            for r in rows
            if r["customer_id"] == win.customer_id and r["meter_code"] == win.meter_code
        ]
        levels: dict[tuple[str, ...], Decimal] = {}
        if meter.aggregation is Aggregation.WEIGHTED_SUM:  # the level everything before the window built up
            for event in events:
                if event.timestamp < win.start and meter.matches(event):
                    group = meter.group_of(event)
                    levels[group] = levels.get(group, Decimal(0)) + meter.value_of(event)
        for group, agg in aggregate(meter, events, win.start, win.end, levels).items():
            out[(win.customer_id, win.meter_code, win.start, win.end, group)] = agg
    return out
