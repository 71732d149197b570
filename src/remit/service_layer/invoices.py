"""Writing and finalizing invoices, and what people do with them afterwards.

Finalizing assigns the legal number (gapless per legal entity and year: numbers are reserved from a locked
counter row in the same transaction, so a rollback returns them and a commit uses every one), applies the
customer's credit balance, then prepaid credits from wallets (``wallet_consumption.py``), and emits
``invoice.finalized``.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy import Date, DateTime, Dialect, Table, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id, new_ids
from remit.adapters.db.sqlite_bulk import insert_statements, parameter_limit
from remit.adapters.db.types import UTCDateTime, sqlite_utc_text
from remit.domain.errors import Conflict, NotFound, ValidationError
from remit.domain.event_types import check_recorded
from remit.domain.invoicing.generator import NewLine
from remit.domain.invoicing.invoice import invoice_number, series_key, settle
from remit.domain.lifecycle import INVOICE_TRANSITIONS, InvoiceStatus, transition
from remit.domain.wallets import Fee
from remit.service_layer import wallet_ledger
from remit.service_layer.unit_of_work import UnitOfWork
from remit.service_layer.wallet_consumption import PURCHASE_REASON, WalletCredits, line_fee


@dataclass
class InvoiceDraft:
    customer: Mapping[str, Any]
    lines: list[NewLine]
    pending_items: list[Mapping[str, Any]] = field(default_factory=list)
    issued_on: date | None = None
    at: datetime | None = None
    reason: str = "subscription_cycle"


def reserve_numbers(uow: UnitOfWork, entity_id: str, series: str, count: int) -> int:
    """Reserve ``count`` consecutive numbers; returns the first. The counter row is locked until commit."""
    c = t.number_series.c
    where = (c.legal_entity_id == entity_id) & (c.series == series)
    query = select(c.next_value).where(where)
    if uow.is_postgres:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        uow.conn.execute(
            pg_insert(t.number_series)
            .values(legal_entity_id=entity_id, series=series, next_value=1)
            .on_conflict_do_nothing()
        )
        query = query.with_for_update()
    current = uow.conn.execute(query).scalar()
    if current is None:
        uow.conn.execute(insert(t.number_series).values(legal_entity_id=entity_id, series=series, next_value=1))
        current = 1
    uow.conn.execute(update(t.number_series).where(where).values(next_value=current + count))
    return int(current)


# (statement, the row's values in column order, per column needing it: (index, bind processor, memoizable))
_BulkPlan = tuple[str, Callable[[Mapping[str, Any]], tuple[Any, ...]], list[tuple[int, Callable[[Any], Any], bool]]]
_BULK_PLANS: dict[tuple[str, str, tuple[str, ...]], _BulkPlan] = {}


def _bulk_plan(dialect: Dialect, table: Table, names: tuple[str, ...]) -> _BulkPlan:
    key = (dialect.name, table.name, names)
    plan = _BULK_PLANS.get(key)
    if plan is None:
        quote = dialect.identifier_preparer.quote
        cols = ", ".join(quote(n) for n in names)
        if dialect.name == "postgresql":
            sql = f"COPY {quote(table.name)} ({cols}) FROM STDIN"
        else:  # the head of multi-row inserts (``sqlite_bulk``)
            sql = f"INSERT INTO {quote(table.name)} ({cols}) VALUES"
        getter = itemgetter(*names)
        values: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
            getter if len(names) > 1 else (lambda row: (getter(row),))
        )
        processors: list[tuple[int, Callable[[Any], Any], bool]] = []
        for i, name in enumerate(names):
            column_type = table.c[name].type
            process = column_type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                own = _sqlite_text(column_type, process) if dialect.name == "sqlite" else process
                processors.append((i, own, _memoizable(column_type)))
        plan = (sql, values, processors)
        _BULK_PLANS[key] = plan
    return plan


def _sqlite_text(column_type: Any, process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A faster bind processor for SQLite's dates and UTC times, giving the same text as SQLAlchemy's own
    (``process``, which formats each value through a dict and ``%``): ``date.isoformat`` for a date
    (YYYY-MM-DD), and for an aware time, in UTC and without its offset, ``isoformat`` to the microsecond
    (YYYY-MM-DD HH:MM:SS.ffffff). Any other value (None, a naive time...) goes to ``process``, which handles or
    refuses it as before."""
    if isinstance(column_type, UTCDateTime):

        def utc_text(value: Any) -> Any:
            if type(value) is datetime and value.tzinfo is not None:
                return sqlite_utc_text(value)
            return process(value)

        return utc_text
    if isinstance(column_type, Date) and not isinstance(column_type, DateTime):

        def date_text(value: Any) -> Any:
            return value.isoformat() if type(value) is date else process(value)

        return date_text
    return process


def _memoizable(column_type: Any) -> bool:
    """Whether a column's bound values can be processed once per distinct value in a bulk insert: dates and UTC
    times, whose values that compare equal (the same day; the same instant, in any zone) are stored alike. Not
    decimals (1.0 equals 1 but is stored as "1.0") nor JSON (unhashable)."""
    return isinstance(column_type, UTCDateTime) or (
        isinstance(column_type, Date) and not isinstance(column_type, DateTime)
    )


def bulk_insert(uow: UnitOfWork, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert many rows at once: COPY on PostgreSQL, multi-row INSERTs on SQLite (``sqlite_bulk``), in the unit
    of work's transaction.

    The columns are the table's columns among the first row's keys (other keys are ignored; every row has the
    same keys). Each value goes through its column type's own bind processing, so rows are stored exactly as
    ``insert(table)`` would store them, without SQLAlchemy's per-row statement machinery.
    """
    if not rows:
        return
    dialect = uow.conn.dialect
    names = tuple(k for k in rows[0] if k in table.c)
    sql, values, processors = _bulk_plan(dialect, table, names)
    data: list[Any] = [values(row) for row in rows]
    if processors:
        # Column by column: a batch's invoices share a handful of dates and times, each formatted once.
        columns: list[Any] = list(zip(*data, strict=True))
        for i, process, memoizable in processors:
            if memoizable:
                memo = {v: process(v) for v in set(columns[i])}
                columns[i] = [memo[v] for v in columns[i]]
            else:
                columns[i] = [process(v) for v in columns[i]]
        data = list(zip(*columns, strict=True))
    driver: Any = uow.conn.connection.driver_connection
    if dialect.name == "postgresql":
        try:
            with driver.cursor() as cursor, cursor.copy(sql) as copy:
                write = copy.write_row
                for vals in data:
                    write(vals)
        except driver.Error as exc:
            # As SQLAlchemy raises the driver's errors elsewhere: the bill run retries an IntegrityError, and stops
            # on an OperationalError (a lock or statement timeout, a deadlock, the connection lost).
            raise DBAPIError.instance(sql, None, exc, driver.Error) from exc
    else:
        for statement, params in insert_statements(sql, len(names), data, parameter_limit(driver)):
            uow.conn.exec_driver_sql(statement, params)  # through SQLAlchemy: its errors (IntegrityError...)


# A domain event as ``UnitOfWork.emit`` takes it: type, object type, object id, data, customer id, time (None: now).
Event = tuple[str, str, str, dict[str, Any], str | None, datetime | None]


def paid_data(inv: Mapping[str, Any], by: str, **extra: Any) -> dict[str, Any]:
    """The data of ``invoice.paid``, the same fields whatever paid the invoice (``by``: ``finalization`` when the
    customer's balance or prepaid credits covered it as it was finalized, or it was for nothing;
    ``out_of_band``; ``credit_note``): the invoice's amounts, in minor units, as they are once it is paid."""
    return {
        "number": inv["number"],
        "currency": inv["currency"],
        "total_minor": inv["total_minor"],
        "paid_minor": inv["paid_minor"],
        "credited_minor": inv["credited_minor"],
        "applied_balance_minor": inv["applied_balance_minor"],
        "applied_credits_minor": inv["applied_credits_minor"],
        "amount_due_minor": inv["amount_due_minor"],
        "by": by,
        **extra,
    }


def write_events(uow: UnitOfWork, events: Sequence[Event]) -> None:
    """Write events to the outbox now, in order, in bulk: the rows ``UnitOfWork.emit`` would have queued."""
    for event in events:
        check_recorded(event[0])
    now = uow.now
    bulk_insert(
        uow,
        t.events,
        [
            {
                "public_id": public_id,
                "type": type_,
                "object_type": object_type,
                "object_id": object_id,
                "customer_id": customer_id,
                "data": data,
                "created_at": at or now,
            }
            for (type_, object_type, object_id, data, customer_id, at), public_id in zip(
                events, new_ids("evt", len(events)), strict=True
            )
        ],
    )


def write_invoices(
    uow: UnitOfWork,
    drafts: Sequence[InvoiceDraft],
    entities: Mapping[str, Mapping[Any, Any]],
    balances: Mapping[str, int],
    run_id: str | None,
    *,
    events: list[Event] | None = None,
) -> list[str]:
    """Insert invoices and their lines in bulk; finalize those whose entity finalizes automatically.

    Invoices that finalize right away are numbered and settled before they are written, so each row is written
    once, final; the events are the same and in the same order as creating then finalizing them would give.
    They are emitted on the unit of work, or appended to ``events`` for the caller to write (``write_events``).
    """
    invoice_rows: list[dict[str, Any]] = []
    line_rows: list[dict[str, Any]] = []
    pending_updates: list[dict[str, str]] = []
    draft_status = InvoiceStatus.DRAFT.value
    line_ids = iter(new_ids("il", sum(len(d.lines) for d in drafts)))
    for draft, invoice_id in zip(drafts, new_ids("in", len(drafts)), strict=True):
        customer = draft.customer
        at = draft.at or uow.now
        rows = [_line_row(invoice_id, ln, next(line_ids)) for ln in draft.lines]
        for item in draft.pending_items:
            rows.append(_pending_line_row(invoice_id, item))
            pending_updates.append({"b_id": item["id"], "b_invoice_id": invoice_id})
        if len(rows) == 1:
            row = rows[0]
            subtotal, discount = row["subtotal_minor"], row["discount_minor"]
            period_start, period_end = row["service_start_on"] or None, row["service_end_on"] or None
        else:
            subtotal = sum(r["subtotal_minor"] for r in rows)
            discount = sum(r["discount_minor"] for r in rows)
            starts = [r["service_start_on"] for r in rows if r["service_start_on"]]
            ends = [r["service_end_on"] for r in rows if r["service_end_on"]]
            period_start, period_end = (min(starts) if starts else None), (max(ends) if ends else None)
        invoice_rows.append(
            {
                "id": invoice_id,
                "customer_id": customer["id"],
                "legal_entity_id": customer["legal_entity_id"],
                "number": None,
                "status": draft_status,
                "currency": customer["currency"],
                "billing_reason": draft.reason,
                "subtotal_minor": subtotal,
                "discount_minor": discount,
                "total_minor": subtotal - discount,
                "applied_balance_minor": 0,
                "applied_credits_minor": 0,
                "credited_minor": 0,
                "paid_minor": 0,
                "amount_due_minor": subtotal - discount,
                "period_start_on": period_start,
                "period_end_on": period_end,
                "issued_on": None,
                "due_on": None,
                "memo": None,
                "bill_run_id": run_id,
                "created_at": at,
                "finalized_at": None,
                "paid_at": None,
                "voided_at": None,
                "_issued_on": draft.issued_on or at.date(),
            }
        )
        line_rows.extend(rows)
    if not invoice_rows:
        return []
    auto = [r for r in invoice_rows if entities[r["legal_entity_id"]]["auto_finalize"]]
    final, balance_rows, finalize_events, credits = _finalization(
        uow, auto, entities, dict(balances), _fees_in(line_rows)
    )
    for row, values in zip(auto, final, strict=True):
        row.update(values)
    bulk_insert(uow, t.invoices, invoice_rows)
    bulk_insert(uow, t.invoice_lines, line_rows)
    if pending_updates:
        from sqlalchemy import bindparam

        uow.conn.execute(
            update(t.pending_items)
            .where(t.pending_items.c.id == bindparam("b_id"))
            .values(invoice_id=bindparam("b_invoice_id")),
            pending_updates,
        )
    credits.write(uow)
    created: list[Event] = [
        (
            "invoice.created",
            "invoice",
            row["id"],
            {"total_minor": row["total_minor"], "currency": row["currency"]},
            row["customer_id"],
            row["created_at"],
        )
        for row in invoice_rows
    ]
    if events is None:
        for event in (*created, *finalize_events):
            uow.emit(*event[:5], at=event[5])
    else:
        events.extend(created)
        events.extend(finalize_events)
    bulk_insert(uow, t.balance_transactions, balance_rows)
    return [r["id"] for r in invoice_rows]


def _line_row(invoice_id: str, ln: NewLine, line_id: str) -> dict[str, Any]:
    period = ln.period
    subtotal, discount = ln.subtotal_minor, ln.discount_minor
    return {
        "id": line_id,
        "invoice_id": invoice_id,
        "subscription_id": ln.subscription_id,
        "price_id": ln.price_id,
        "pending_item_id": None,
        "charge_key": ln.charge_key,
        "period_start_on": period.start_on,
        "period_end_on": period.end_on,
        "revision": ln.revision,
        "kind": ln.kind,
        "description": ln.description,
        "service_start_on": ln.service_start_on,
        "service_end_on": ln.service_end_on,
        "quantity": ln.quantity,
        "unit_price": ln.unit_price,
        "subtotal_minor": subtotal,
        "discount_minor": discount,
        "amount_minor": subtotal - discount,
        "corrects_line_id": ln.corrects_line_id,
        "details": ln.details,
    }


def _pending_line_row(invoice_id: str, item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": new_id("il"),
        "invoice_id": invoice_id,
        "subscription_id": None,
        "price_id": item["price_id"],
        "pending_item_id": item["id"],
        "charge_key": f"item:{item['id']}",
        "period_start_on": None,
        "period_end_on": None,
        "revision": 0,
        "kind": "one_off",
        "description": item["description"],
        "service_start_on": None,
        "service_end_on": None,
        "quantity": item["quantity"],
        "unit_price": item["unit_price"],
        "subtotal_minor": item["amount_minor"],
        "discount_minor": 0,
        "amount_minor": item["amount_minor"],
        "corrects_line_id": None,
        "details": {},
    }


FeesOf = Callable[[str], list[tuple[Fee, int]]]


def _fees_in(line_rows: Sequence[Mapping[str, Any]]) -> FeesOf:
    """An invoice's fees, from these line rows: indexed by invoice the first time one is asked for (only wallets
    limited to some fees ask)."""
    index: dict[str, list[tuple[Fee, int]]] = {}

    def fees_of(invoice_id: str) -> list[tuple[Fee, int]]:
        if not index:
            for line in line_rows:
                index.setdefault(line["invoice_id"], []).append(line_fee(line))
        return index.get(invoice_id, [])

    return fees_of


def _fees_stored(uow: UnitOfWork) -> FeesOf:
    """An invoice's fees, from its stored lines."""

    def fees_of(invoice_id: str) -> list[tuple[Fee, int]]:
        ln = t.invoice_lines.c
        query = select(ln.kind, ln.price_id, ln.amount_minor, ln.details).where(ln.invoice_id == invoice_id)
        return [line_fee(dict(row)) for row in uow.conn.execute(query).mappings()]

    return fees_of


def _finalization(
    uow: UnitOfWork,
    rows: Sequence[dict[str, Any]],
    entities: Mapping[str, Mapping[Any, Any]],
    balances: dict[str, int],
    fees_of: FeesOf,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Event], WalletCredits]:
    """Number and settle a set of draft invoices, with one counter update per series. ``fees_of``: an invoice's
    lines as fees, for wallets limited to some.

    Returns, per row (in the order given), the values that make it final; the balance transactions to write;
    the events to emit, in order; and the wallet credits consumed, to write (``write``) once the invoices exist.
    Numbers are reserved here, so the caller must write what it gets.
    """
    credits = WalletCredits.load(uow, rows)
    by_series: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        entity = entities[row["legal_entity_id"]]
        by_series[(entity["id"], series_key(entity["invoice_prefix"], row["_issued_on"]))].append(index)
    final: list[dict[str, Any]] = [{} for _ in rows]
    balance_rows: list[dict[str, Any]] = []
    events: list[Event] = []
    paid, open_ = InvoiceStatus.PAID, InvoiceStatus.OPEN
    for (entity_id, series), group in sorted(by_series.items()):
        entity = entities[entity_id]
        prefix, terms = entity["invoice_prefix"], timedelta(days=entity["payment_terms_days"])
        first = reserve_numbers(uow, entity_id, series, len(group))
        for offset, index in enumerate(sorted(group, key=lambda i: rows[i]["id"])):
            row = rows[index]
            customer_id = row["customer_id"]
            issued_on: date = row["_issued_on"]
            total = row["total_minor"]
            # Credits are bought with money: neither the balance nor other credits pay for them.
            balance = balances.get(customer_id, 0) if row["billing_reason"] != PURCHASE_REASON else 0
            if total > 0 and balance <= 0:  # the common case, as settle() would decide it
                applied, due, status = 0, total, open_
            else:
                settlement = settle(total, balance)
                applied, due, status = settlement.applied_balance_minor, settlement.amount_due_minor, settlement.status
                balances[customer_id] = balance - applied
            at = row["created_at"]
            credited, wallet_events = (
                credits.apply(row, due, at, functools.partial(fees_of, row["id"])) if credits.grants else (0, [])
            )
            if credited:
                due -= credited
                status = paid if due == 0 else open_
            number = invoice_number(prefix, issued_on.year, first + offset)
            final[index] = {
                "number": number,
                "status": status.value,
                "applied_balance_minor": applied,
                "applied_credits_minor": credited,
                "amount_due_minor": due,
                "issued_on": issued_on,
                "due_on": issued_on + terms,
                "finalized_at": at,
                "paid_at": at if status is paid else None,
            }
            if applied:
                balance_rows.append(
                    {
                        "id": new_id("cbtxn"),
                        "customer_id": customer_id,
                        "currency": row["currency"],
                        "amount_minor": -applied,
                        "kind": "applied_to_invoice" if -applied < 0 else "invoice_credit",
                        "invoice_id": row["id"],
                        "credit_note_id": None,
                        "created_at": at,
                    }
                )
            data = {"number": number, "total_minor": total, "currency": row["currency"], "amount_due_minor": due}
            events.append(("invoice.finalized", "invoice", row["id"], data, customer_id, at))
            events.extend(wallet_events)
            if status is paid:
                paid_now = paid_data({**row, **final[index]}, "finalization")
                events.append(("invoice.paid", "invoice", row["id"], paid_now, customer_id, at))
    return final, balance_rows, events, credits


def _finalize_rows(
    uow: UnitOfWork, rows: Sequence[dict[str, Any]], entities: Mapping[str, Mapping[Any, Any]], balances: dict[str, int]
) -> None:
    """Number, settle and open (or close) a set of written draft invoices."""
    final, balance_rows, events, credits = _finalization(uow, rows, entities, balances, _fees_stored(uow))
    if final:
        from sqlalchemy import bindparam

        i = t.invoices.c
        uow.conn.execute(
            update(t.invoices)
            .where(i.id == bindparam("b_id"))
            .values(
                number=bindparam("number"),
                status=bindparam("status"),
                applied_balance_minor=bindparam("applied_balance_minor"),
                applied_credits_minor=bindparam("applied_credits_minor"),
                amount_due_minor=bindparam("amount_due_minor"),
                issued_on=bindparam("issued_on"),
                due_on=bindparam("due_on"),
                finalized_at=bindparam("finalized_at"),
                paid_at=bindparam("paid_at"),
            ),
            [{"b_id": row["id"], **values} for row, values in zip(rows, final, strict=True)],
        )
    for event in events:
        uow.emit(*event[:5], at=event[5])
    uow.insert_many(t.balance_transactions, balance_rows)
    credits.write(uow)


def _invoice(uow: UnitOfWork, invoice_id: str) -> dict[str, Any]:
    query = select(t.invoices).where(t.invoices.c.id == invoice_id)
    row = uow.conn.execute(query).mappings().first()
    if row is None:
        raise NotFound("invoice", invoice_id, "invoice_id")
    uow.lock_customer(row["customer_id"])
    # Read again under the lock (and the time after waiting for it): a credit note or a payment that held it
    # has changed the invoice since (two credit notes at once each wrote totals from the row before the other).
    uow.now = uow.clock.now()
    row = uow.conn.execute(query).mappings().one()
    return dict(row)


def customer_balance(uow: UnitOfWork, customer_id: str) -> int:
    return int(
        uow.conn.execute(
            select(func.coalesce(func.sum(t.balance_transactions.c.amount_minor), 0)).where(
                t.balance_transactions.c.customer_id == customer_id
            )
        ).scalar_one()
    )


def finalize(uow: UnitOfWork, invoice_id: str) -> dict[str, Any]:
    inv = _invoice(uow, invoice_id)
    transition(INVOICE_TRANSITIONS, InvoiceStatus(inv["status"]), "finalize", what="invoice")
    entity = (
        uow.conn.execute(select(t.legal_entities).where(t.legal_entities.c.id == inv["legal_entity_id"]))
        .mappings()
        .one()
    )
    customer = uow.conn.execute(select(t.customers).where(t.customers.c.id == inv["customer_id"])).mappings().one()
    from remit.service_layer.accounts import customer_now, local_date

    at = customer_now(uow, customer)
    inv["created_at"] = at
    inv["_issued_on"] = local_date(at, customer["timezone"])
    _finalize_rows(uow, [inv], {entity["id"]: entity}, {inv["customer_id"]: customer_balance(uow, inv["customer_id"])})
    return get_invoice(uow, invoice_id)


def _customer_time(uow: UnitOfWork, customer_id: str) -> datetime:
    """The time as the invoice's customer lives it: their test clock's, or the real one."""
    from remit.service_layer.accounts import customer_now, get_customer

    return customer_now(uow, get_customer(uow, customer_id))


def _move(uow: UnitOfWork, invoice_id: str, action: str, **values: Any) -> dict[str, Any]:
    inv = _invoice(uow, invoice_id)
    new_status = transition(INVOICE_TRANSITIONS, InvoiceStatus(inv["status"]), action, what="invoice")
    uow.conn.execute(update(t.invoices).where(t.invoices.c.id == invoice_id).values(status=new_status.value, **values))
    return inv


def void(uow: UnitOfWork, invoice_id: str) -> dict[str, Any]:
    """Void an open or uncollectible invoice. Credit it consumed goes back to the customer."""
    inv = _invoice(uow, invoice_id)
    at = _customer_time(uow, inv["customer_id"])
    inv = _move(uow, invoice_id, "void", voided_at=at, amount_due_minor=0)
    if inv["applied_balance_minor"] > 0:
        uow.insert_many(
            t.balance_transactions,
            [
                {
                    "id": new_id("cbtxn"),
                    "customer_id": inv["customer_id"],
                    "currency": inv["currency"],
                    "amount_minor": inv["applied_balance_minor"],
                    "kind": "invoice_voided",
                    "invoice_id": invoice_id,
                    "credit_note_id": None,
                    "created_at": at,
                }
            ],
        )
    if inv["applied_credits_minor"] or inv["billing_reason"] == PURCHASE_REASON:
        wallet_ledger.invoice_voided(uow, invoice_id, at)
    uow.emit("invoice.voided", "invoice", invoice_id, {"number": inv["number"]}, inv["customer_id"], at=at)
    return get_invoice(uow, invoice_id)


def mark_uncollectible(uow: UnitOfWork, invoice_id: str) -> dict[str, Any]:
    inv = _move(uow, invoice_id, "mark_uncollectible")
    uow.emit("invoice.marked_uncollectible", "invoice", invoice_id, {"number": inv["number"]}, inv["customer_id"])
    return get_invoice(uow, invoice_id)


def mark_paid(uow: UnitOfWork, invoice_id: str) -> dict[str, Any]:
    """Record that an invoice was paid outside Remit (a bank transfer, a cheque)."""
    inv = _invoice(uow, invoice_id)
    at = _customer_time(uow, inv["customer_id"])
    paid = {"paid_at": at, "paid_minor": inv["paid_minor"] + inv["amount_due_minor"], "amount_due_minor": 0}
    _move(uow, invoice_id, "pay", **paid)
    uow.emit(
        "invoice.paid",
        "invoice",
        invoice_id,
        paid_data({**inv, **paid}, "out_of_band", amount_minor=inv["amount_due_minor"], out_of_band=True),
        inv["customer_id"],
        at=at,
    )
    if inv["billing_reason"] == PURCHASE_REASON:  # credits bought: granted now
        from remit.service_layer import wallets  # wallets writes invoices: imported here, not at the top

        wallets.invoice_paid(uow, invoice_id, at)
    return get_invoice(uow, invoice_id)


def _draft(uow: UnitOfWork, invoice_id: str, editing: bool = False) -> dict[str, Any]:
    inv = _invoice(uow, invoice_id)
    if inv["status"] != InvoiceStatus.DRAFT.value:
        raise Conflict("invoice_not_draft", "Only a draft invoice can be edited.", "invoice_id")
    if editing and inv["billing_reason"] == PURCHASE_REASON:  # its line is what the credits are worth
        raise Conflict("invoice_sells_credits", "A draft that sells credits is not edited: delete it.", "invoice_id")
    return inv


def _recompute_draft(uow: UnitOfWork, invoice_id: str) -> None:
    sums = uow.conn.execute(
        select(
            func.coalesce(func.sum(t.invoice_lines.c.subtotal_minor), 0),
            func.coalesce(func.sum(t.invoice_lines.c.discount_minor), 0),
        ).where(t.invoice_lines.c.invoice_id == invoice_id)
    ).one()
    subtotal, discount = int(sums[0]), int(sums[1])
    uow.conn.execute(
        update(t.invoices)
        .where(t.invoices.c.id == invoice_id)
        .values(
            subtotal_minor=subtotal,
            discount_minor=discount,
            total_minor=subtotal - discount,
            amount_due_minor=subtotal - discount,
        )
    )


def add_draft_line(
    uow: UnitOfWork, invoice_id: str, description: str, quantity: object, unit_price: object
) -> dict[str, Any]:
    """Add a manual line to a draft (a one-off service, a correction the reviewer wants). The quantity and the unit
    price are exact numbers of at most 15 digits before the point and 9 decimals (a unit price may be negative)."""
    from remit.domain.money import RoundingPolicy, currency, parse_rate
    from remit.domain.rating.tiers import exact_arithmetic
    from remit.service_layer.catalog import quantity as parse_quantity

    inv = _draft(uow, invoice_id, editing=True)
    if not description.strip():
        raise ValidationError("missing_field", "A line needs a description.", "description")
    qty = parse_quantity(quantity)
    price = parse_rate(unit_price, "unit_price")
    if qty <= 0:
        raise ValidationError("negative_quantity", "Quantity must be positive.", "quantity")
    entity = uow.conn.execute(
        select(t.legal_entities.c.rounding_policy).where(t.legal_entities.c.id == inv["legal_entity_id"])
    ).scalar_one()
    with exact_arithmetic():  # up to 48 digits: the default context's 28 would round once before the policy does
        raw = qty * price
    amount = RoundingPolicy(entity).round_minor(raw, currency(inv["currency"]))
    item_id = new_id("ii")
    uow.insert_many(
        t.pending_items,
        [
            {
                "id": item_id,
                "customer_id": inv["customer_id"],
                "price_id": None,
                "description": description,
                "quantity": qty,
                "unit_price": price,
                "amount_minor": amount,
                "currency": inv["currency"],
                "invoice_id": invoice_id,
                "created_at": uow.now,
            }
        ],
    )
    row = _pending_line_row(
        invoice_id,
        {
            "id": item_id,
            "price_id": None,
            "description": description,
            "quantity": qty,
            "unit_price": price,
            "amount_minor": amount,
        },
    )
    uow.insert_many(t.invoice_lines, [row])
    _recompute_draft(uow, invoice_id)
    return get_invoice(uow, invoice_id)


def remove_draft_line(uow: UnitOfWork, invoice_id: str, line_id: str) -> dict[str, Any]:
    """Take a line off a draft. A subscription line comes back at the next bill run unless its cause changed."""
    _draft(uow, invoice_id, editing=True)
    line = (
        uow.conn.execute(
            select(t.invoice_lines).where(t.invoice_lines.c.id == line_id, t.invoice_lines.c.invoice_id == invoice_id)
        )
        .mappings()
        .first()
    )
    if line is None:
        raise NotFound("invoice_line", line_id, "line_id")
    uow.conn.execute(delete(t.invoice_lines).where(t.invoice_lines.c.id == line_id))
    _reopen_billed_periods(uow, [line])
    if line["pending_item_id"]:
        uow.conn.execute(delete(t.pending_items).where(t.pending_items.c.id == line["pending_item_id"]))
    _recompute_draft(uow, invoice_id)
    return get_invoice(uow, invoice_id)


def _reopen_billed_periods(uow: UnitOfWork, lines: Sequence[Mapping[Any, Any]]) -> None:
    """Subscription lines taken off a draft come back at the next bill run: each subscription's review mark moves
    back to the earliest period whose line went, so that the run proposes that period again (a period before the
    mark is never looked at again, and its line would be lost). Never forward; a subscription never billed (no
    mark) is reviewed from its start anyway."""
    earliest: dict[str, date] = {}
    for line in lines:
        sub_id, start = line["subscription_id"], line["period_start_on"]
        if sub_id is not None and start is not None and (sub_id not in earliest or start < earliest[sub_id]):
            earliest[sub_id] = start
    s = t.subscriptions.c
    for sub_id, start in sorted(earliest.items()):
        uow.conn.execute(
            update(t.subscriptions)
            .where(s.id == sub_id, s.reviewed_from_on > start)
            .values(reviewed_from_on=start, updated_at=uow.now)
        )


def delete_draft(uow: UnitOfWork, invoice_id: str) -> None:
    inv = _draft(uow, invoice_id)
    if inv["billing_reason"] == PURCHASE_REASON:
        wallet_ledger.invoice_deleted(uow, invoice_id, _customer_time(uow, inv["customer_id"]))
    uow.conn.execute(update(t.pending_items).where(t.pending_items.c.invoice_id == invoice_id).values(invoice_id=None))
    lines = list(
        uow.conn.execute(
            select(t.invoice_lines.c.subscription_id, t.invoice_lines.c.period_start_on).where(
                t.invoice_lines.c.invoice_id == invoice_id
            )
        ).mappings()
    )
    uow.conn.execute(delete(t.invoice_lines).where(t.invoice_lines.c.invoice_id == invoice_id))
    _reopen_billed_periods(uow, lines)
    uow.conn.execute(delete(t.invoices).where(t.invoices.c.id == invoice_id))


def get_invoice(uow: UnitOfWork, invoice_id: str) -> dict[str, Any]:
    row = uow.conn.execute(select(t.invoices).where(t.invoices.c.id == invoice_id)).mappings().first()
    if row is None:
        raise NotFound("invoice", invoice_id, "invoice_id")
    lines = uow.conn.execute(
        select(t.invoice_lines)
        .where(t.invoice_lines.c.invoice_id == invoice_id)
        .order_by(
            t.invoice_lines.c.service_start_on.asc().nulls_last(),
            t.invoice_lines.c.kind == "true_up",  # a true-up follows the usage lines it tops up
            t.invoice_lines.c.kind,
            t.invoice_lines.c.charge_key,
            t.invoice_lines.c.id,
        )
    ).mappings()
    return {**dict(row), "lines": [dict(ln) for ln in lines]}
