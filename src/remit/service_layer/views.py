"""Read models: lists with keyset paging, and public representations (money as exact strings)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Context, Decimal
from typing import Any

from sqlalchemy import Select, or_, select

from remit.adapters.db import tables as t
from remit.domain import event_types
from remit.domain.clock import ensure_utc
from remit.domain.errors import NotFound, ValidationError
from remit.domain.money import Money
from remit.service_layer.scoping import EVERYTHING, Visibility
from remit.service_layer.unit_of_work import UnitOfWork

MAX_LIMIT = 1000


def money(minor: int | None, code: str) -> str | None:
    return None if minor is None else str(Money.from_minor(int(minor), code).amount)


def plain(value: Any) -> Any:
    """JSON-safe values: dates ISO 8601, datetimes in UTC with Z, decimals as strings."""
    if isinstance(value, datetime):  # (not strftime: its %Y writes the year 999 as "999", which no parser reads)
        return value.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        if value != value.to_integral():
            return format(value, "f")
        # Trailing zeros dropped exactly: the default context (28 digits) would round a longer whole number.
        return format(value.normalize(Context(prec=max(len(value.as_tuple().digits), 1))), "f")
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _with_money(row: Mapping[str, Any], code: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key.endswith("_minor"):
            out[key[: -len("_minor")]] = money(value, code)
        else:
            out[key] = plain(value)
    return out


def invoice_public(inv: Mapping[str, Any]) -> dict[str, Any]:
    code = inv["currency"]
    out = _with_money({k: v for k, v in inv.items() if k != "lines"}, code)
    if "lines" in inv:
        out["lines"] = [_with_money(ln, code) for ln in inv["lines"]]
    return out


def customer_public(row: Mapping[str, Any]) -> dict[str, Any]:
    return _with_money(row, row["currency"])


def page(
    uow: UnitOfWork,
    query: Select[Any],
    id_column: Any,
    limit: int | None,
    after: str | None,
    cursor: Select[Any] | None = None,
) -> list[Any]:
    """A page of ``query`` by ``id_column``, after the id ``after``: one that does not exist is ``..._not_found``
    (404), not the first page again (or an empty one), which a client holding a stale cursor would loop on.
    ``cursor``: the rows a cursor may name, the caller's view before any filter (by default every row): an id
    outside it is not found either, like one that does not exist."""
    if after:
        named = select(id_column) if cursor is None else cursor.with_only_columns(id_column)
        if uow.conn.execute(named.where(id_column == after).limit(1)).first() is None:
            name = id_column.table.name
            kind = name[:-3] + "y" if name.endswith("ies") else name.removesuffix("s")
            raise NotFound(kind, after, "starting_after")
        query = query.where(id_column > after)
    query = query.order_by(id_column)
    if limit is not None:
        query = query.limit(min(limit, MAX_LIMIT + 1) if limit > 0 else MAX_LIMIT)
    return [dict(r) for r in uow.conn.execute(query).mappings()]


def utc_time(at: datetime, field: str) -> datetime:
    """``at`` in UTC; without an offset, taken as UTC. ``invalid_time`` when it is out of range once in UTC."""
    try:
        return ensure_utc(at)
    except OverflowError:
        raise ValidationError("invalid_time", f"{field} is out of range.", field) from None


@dataclass(frozen=True)
class Filters:
    customer_id: str | None = None
    status: str | None = None
    created_gte: datetime | None = None
    created_lte: datetime | None = None

    def __post_init__(self) -> None:
        # A time without an offset is UTC (as stored); one that cannot be one (year 1 at +01:00) is refused.
        for name in ("created_gte", "created_lte"):
            at = getattr(self, name)
            if at is not None:
                object.__setattr__(self, name, utc_time(at, name))

    def apply(self, query: Select[Any], table: Any) -> Select[Any]:
        if self.customer_id and "customer_id" in table.c:
            query = query.where(table.c.customer_id == self.customer_id)
        if self.status and "status" in table.c:
            query = query.where(table.c.status == self.status)
        if self.created_gte is not None:
            query = query.where(table.c.created_at >= self.created_gte)
        if self.created_lte is not None:
            query = query.where(table.c.created_at <= self.created_lte)
        return query


def _owned(table: Any, vis: Visibility) -> Select[Any]:
    """Rows of a customer-owned table that the visibility allows."""
    query = select(table)
    if vis != EVERYTHING:
        query = query.join(t.customers, t.customers.c.id == table.c.customer_id).where(vis.customers_clause())
    return query


def list_customers(
    uow: UnitOfWork,
    limit: int | None = 20,
    after: str | None = None,
    *,
    vis: Visibility = EVERYTHING,
    filters: Filters = Filters(),
) -> list[dict[str, Any]]:
    seen = select(t.customers).where(vis.customers_clause())
    query = filters.apply(seen, t.customers)
    return [customer_public(r) for r in page(uow, query, t.customers.c.id, limit, after, seen)]


def list_subscriptions(
    uow: UnitOfWork,
    limit: int | None = 20,
    after: str | None = None,
    customer_id: str | None = None,
    status: str | None = None,
    *,
    vis: Visibility = EVERYTHING,
    filters: Filters | None = None,
) -> list[dict[str, Any]]:
    f = filters or Filters(customer_id=customer_id, status=status)
    seen = _owned(t.subscriptions, vis)
    query = f.apply(seen, t.subscriptions)
    query = query.add_columns(t.plans.c.code.label("plan")).outerjoin(
        t.plans, t.plans.c.id == t.subscriptions.c.plan_id
    )
    return [plain(r) for r in page(uow, query, t.subscriptions.c.id, limit, after, seen)]


def list_invoices(
    uow: UnitOfWork,
    limit: int | None = 20,
    after: str | None = None,
    customer_id: str | None = None,
    status: str | None = None,
    *,
    vis: Visibility = EVERYTHING,
    filters: Filters | None = None,
) -> list[dict[str, Any]]:
    f = filters or Filters(customer_id=customer_id, status=status)
    seen = _owned(t.invoices, vis)
    query = f.apply(seen, t.invoices)
    return [invoice_public(r) for r in page(uow, query, t.invoices.c.id, limit, after, seen)]


def list_credit_notes(
    uow: UnitOfWork,
    limit: int | None = 20,
    after: str | None = None,
    *,
    vis: Visibility = EVERYTHING,
    filters: Filters = Filters(),
) -> list[dict[str, Any]]:
    seen = _owned(t.credit_notes, vis)
    query = filters.apply(seen, t.credit_notes)
    return [_with_money(r, r["currency"]) for r in page(uow, query, t.credit_notes.c.id, limit, after, seen)]


def list_events(
    uow: UnitOfWork,
    limit: int | None = 50,
    after_id: int = 0,
    type_: str | None = None,
    *,
    vis: Visibility = EVERYTHING,
    filters: Filters = Filters(),
    shared: bool = True,
) -> list[dict[str, Any]]:
    """Events in order. ``vis``: those of the customers it lets see; and, with ``shared``, those of no customer
    (the catalog's: meters, plans), as ``GET /v1/events/{id}`` shows them to a key not limited to a legal entity.
    ``type_``: one type (``invoice.paid``), a family (``invoice.*``) or ``*``; a type Remit never records is
    refused (``invalid_event_type``) rather than answered with an empty list."""
    if type_:
        event_types.check_pattern(type_, "type")
    e = t.events.c
    query = select(t.events).where(e.id > after_id)
    if vis != EVERYTHING:
        query = query.outerjoin(t.customers, t.customers.c.id == e.customer_id)
        seen = vis.customers_clause()
        query = query.where(or_(e.customer_id.is_(None), seen) if shared else seen)
    if type_ and type_.endswith("*"):
        if type_ != "*":  # "invoice.*": "invoice.paid", not "invoice_item.created" ("_" is no wildcard here)
            query = query.where(e.type.startswith(type_[:-1], autoescape=True))
    elif type_:
        query = query.where(e.type == type_)
    query = filters.apply(query, t.events).order_by(t.events.c.id)
    if limit:
        query = query.limit(min(limit, MAX_LIMIT + 1))
    return [plain(dict(r)) for r in uow.conn.execute(query).mappings()]


_R = t.bill_runs.c
_BILL_RUN = select(
    _R.id,
    _R.as_of,
    _R.status,
    _R.customers_seen,
    _R.invoices_created,
    _R.customers_failed,
    _R.error,
    _R.started_at,
    _R.finished_at,
    _R.test_clock_id,
)


def get_bill_run(uow: UnitOfWork, run_id: str, *, livemode: bool = True) -> dict[str, Any] | None:
    """A bill run of real customers, or (``livemode`` False) of a test clock's."""
    mode = _R.test_clock_id.is_(None) if livemode else _R.test_clock_id.is_not(None)
    row = uow.conn.execute(_BILL_RUN.where(_R.id == run_id, mode)).mappings().first()
    return None if row is None else plain(dict(row))


def list_bill_runs(
    uow: UnitOfWork,
    limit: int | None = 20,
    after: str | None = None,
    *,
    livemode: bool = True,
    test_clock_id: str | None = None,
) -> list[dict[str, Any]]:
    """Bill runs of real customers, or (``livemode`` False) of test clocks (``test_clock_id``: of that one),
    oldest first (ids grow with time)."""
    seen = _BILL_RUN.where(_R.test_clock_id.is_(None) if livemode else _R.test_clock_id.is_not(None))
    query = seen if livemode or test_clock_id is None else seen.where(_R.test_clock_id == test_clock_id)
    return [plain(r) for r in page(uow, query, _R.id, limit, after, seen)]


def list_bill_run_failures(
    uow: UnitOfWork,
    run_id: str,
    limit: int | None = 20,
    after: str | None = None,
    *,
    vis: Visibility = EVERYTHING,
) -> list[dict[str, Any]]:
    """The customers a bill run could not bill (those ``vis`` sees), by customer id, each with its error."""
    f = t.bill_run_failures.c
    query = select(f.customer_id, f.code, f.message, f.field, f.failed_at).where(f.bill_run_id == run_id)
    if vis != EVERYTHING:
        query = query.join(t.customers, t.customers.c.id == f.customer_id).where(vis.customers_clause())
    return [
        {
            "customer_id": row["customer_id"],
            "error": {"code": row["code"], "message": row["message"], "field": row["field"]},
            "failed_at": plain(row["failed_at"]),
        }
        for row in page(uow, query, f.customer_id, limit, after, query)
    ]
