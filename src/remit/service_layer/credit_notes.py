"""Credit notes (against a finalized invoice) and one-off charges (billed on the next invoice)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, localcontext
from typing import Any

from sqlalchemy import func, select, update

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id
from remit.adapters.db.mappers import load_prices
from remit.domain.errors import Conflict, NotFound, ValidationError
from remit.domain.invoicing.invoice import (
    CreditableLine,
    CreditReason,
    credit_outcome,
    invoice_number,
    series_key,
    split_credit,
)
from remit.domain.lifecycle import InvoiceStatus
from remit.domain.money import Money, RoundingPolicy, currency
from remit.domain.rating.aggregations import WIDE
from remit.domain.rating.charge_models import parse_charge_model
from remit.service_layer import wallet_ledger
from remit.service_layer.accounts import customer_now, get_customer, local_date
from remit.service_layer.catalog import quantity as parse_quantity
from remit.service_layer.invoices import _invoice, paid_data, reserve_numbers
from remit.service_layer.unit_of_work import UnitOfWork
from remit.service_layer.wallet_consumption import PURCHASE_REASON


def _creditable_lines(uow: UnitOfWork, invoice_id: str) -> list[CreditableLine]:
    credited = dict(
        uow.conn.execute(
            select(t.credit_note_lines.c.invoice_line_id, func.sum(t.credit_note_lines.c.amount_minor))
            .join(t.invoice_lines, t.invoice_lines.c.id == t.credit_note_lines.c.invoice_line_id)
            .where(t.invoice_lines.c.invoice_id == invoice_id)
            .group_by(t.credit_note_lines.c.invoice_line_id)
        ).all()
    )
    rows = uow.conn.execute(
        select(t.invoice_lines.c.id, t.invoice_lines.c.amount_minor)
        .where(t.invoice_lines.c.invoice_id == invoice_id)
        .order_by(t.invoice_lines.c.id)
    )
    key_open = _key_open(uow, invoice_id)
    return [
        CreditableLine(line_id, amount, int(credited.get(line_id, 0)), key_open.get(line_id))
        for line_id, amount in rows
    ]


def _key_open(uow: UnitOfWork, invoice_id: str) -> dict[str, int]:
    """Per subscription line of the invoice, what its key (subscription, charge, period) still holds: every line
    of the key, on any invoice (a correction crediting it later, a late usage line), less what credit notes
    credited on them. A 100.00 line whose usage was corrected by -40.00 on a later invoice holds 60.00."""
    own, other, cnl = t.invoice_lines.alias("own"), t.invoice_lines.alias("other"), t.credit_note_lines.c
    same_key = (
        (other.c.subscription_id == own.c.subscription_id)
        & (other.c.charge_key == own.c.charge_key)
        & (other.c.period_start_on == own.c.period_start_on)
    )
    mine = (own.c.invoice_id == invoice_id) & own.c.subscription_id.is_not(None)
    billed = uow.conn.execute(
        select(own.c.id, func.sum(other.c.amount_minor)).join(other, same_key).where(mine).group_by(own.c.id)
    ).all()
    credited = dict(
        uow.conn.execute(
            select(own.c.id, func.sum(cnl.amount_minor))
            .join(other, same_key)
            .join(t.credit_note_lines, cnl.invoice_line_id == other.c.id)
            .where(mine)
            .group_by(own.c.id)
        ).all()
    )
    return {line_id: int(net) - int(credited.get(line_id, 0)) for line_id, net in billed}


def _line_keys(uow: UnitOfWork, invoice_id: str) -> dict[str, tuple[Any, ...]]:
    """The key (subscription, charge, period) of each subscription line of the invoice."""
    ln = t.invoice_lines.c
    rows = uow.conn.execute(
        select(ln.id, ln.subscription_id, ln.charge_key, ln.period_start_on).where(
            ln.invoice_id == invoice_id, ln.subscription_id.is_not(None)
        )
    )
    return {line_id: (sub_id, charge, start_on) for line_id, sub_id, charge, start_on in rows}


def issue_credit_note(
    uow: UnitOfWork,
    invoice_id: str,
    *,
    amount: object = None,
    lines: Sequence[Mapping[str, Any]] = (),
    reason: str = "other",
    memo: str | None = None,
) -> dict[str, Any]:
    """Credit a finalized invoice in whole (no amount, no lines), by a lump sum, or line by line.

    On an open invoice the credit reduces what is due; what exceeds it (and any credit on a paid invoice)
    becomes customer credit that later invoices consume.
    """
    inv = _invoice(uow, invoice_id)
    try:
        why = CreditReason(reason)
    except ValueError:
        raise ValidationError("invalid_choice", f"{reason!r} is not a credit note reason.", "reason") from None
    status = InvoiceStatus(inv["status"])
    cur = currency(inv["currency"])
    creditable = _creditable_lines(uow, invoice_id)
    # What the invoice still holds: its total less what was credited (negative lines count: an invoice of 49.00 and
    # a -10.00 correction holds 39.00, however its lines are credited).
    invoice_open = max(inv["total_minor"] - inv["credited_minor"], 0)
    if lines:
        if amount is not None:
            raise ValidationError("conflicting_fields", "Give an amount or lines, not both.", "amount")
        by_id = {c.line_id: c for c in creditable}
        parts = []
        taken: dict[str, int] = {}  # per line, over every part naming it
        keys = _line_keys(uow, invoice_id)
        taken_of_key: dict[tuple[Any, ...], int] = {}  # per key, over every line of it named
        for i, spec in enumerate(lines):
            line = by_id.get(str(spec.get("line_id")))
            if line is None:
                raise NotFound("invoice_line", spec.get("line_id"), f"lines[{i}].line_id")
            part = Money.of(spec.get("amount"), cur, f"lines[{i}].amount").minor
            taken[line.line_id] = taken.get(line.line_id, 0) + part
            key = keys.get(line.line_id)
            if key is not None:
                taken_of_key[key] = taken_of_key.get(key, 0) + part
            over_key = key is not None and line.key_open_minor is not None and taken_of_key[key] > line.key_open_minor
            if part <= 0 or taken[line.line_id] > line.open_minor or over_key:
                raise ValidationError(
                    "invalid_amount",
                    "Each line's credit must be positive and at most what remains on that line (a line named twice "
                    "counts both; corrections of its charge on later invoices, and credit notes on them, count too).",
                    f"lines[{i}].amount",
                )
            parts.append((line.line_id, part))
        total = sum(p for _, p in parts)
        if total > invoice_open:
            raise Conflict(
                "credit_exceeds_invoice", "The credit is more than what remains creditable on the invoice.", "lines"
            )
    else:
        # In whole: what the invoice holds, and its lines (a line corrected on a later invoice holds less).
        whole = min(invoice_open, sum(c.open_minor for c in creditable))
        total = Money.of(amount, cur).minor if amount is not None else whole
        parts = split_credit(total, creditable, invoice_open)
    outcome = credit_outcome(status, total, inv["amount_due_minor"])
    entity = (
        uow.conn.execute(select(t.legal_entities).where(t.legal_entities.c.id == inv["legal_entity_id"]))
        .mappings()
        .one()
    )
    customer = get_customer(uow, inv["customer_id"])
    at = customer_now(uow, customer)
    issued_on = local_date(at, customer["timezone"])
    series = series_key(entity["credit_note_prefix"], issued_on)
    number = invoice_number(entity["credit_note_prefix"], issued_on.year, reserve_numbers(uow, entity["id"], series, 1))
    note_id = new_id("cn")
    if inv["billing_reason"] == PURCHASE_REASON:  # credits sold: the unused ones it credits are taken back
        wallet_ledger.refund_purchase(uow, invoice_id, total, note_id, at)
    # What exceeds the amount due goes back first to the wallets whose credits paid the invoice, then to the balance.
    to_wallets = 0
    if outcome.to_balance_minor and inv["applied_credits_minor"]:
        to_wallets = wallet_ledger.give_back(uow, invoice_id, outcome.to_balance_minor, f"restore:{note_id}", at)
    to_balance = outcome.to_balance_minor - to_wallets
    uow.insert_many(
        t.credit_notes,
        [
            {
                "id": note_id,
                "number": number,
                "invoice_id": invoice_id,
                "customer_id": inv["customer_id"],
                "legal_entity_id": entity["id"],
                "currency": cur.code,
                "reason": why.value,
                "memo": memo,
                "amount_minor": total,
                "to_balance_minor": to_balance,
                "created_at": at,
            }
        ],
    )
    uow.insert_many(
        t.credit_note_lines,
        [
            {"id": new_id("cnl"), "credit_note_id": note_id, "invoice_line_id": lid, "amount_minor": part}
            for lid, part in parts
        ],
    )
    new_due = inv["amount_due_minor"] - outcome.reduces_due_minor
    values: dict[str, Any] = {"credited_minor": inv["credited_minor"] + total, "amount_due_minor": new_due}
    if status is InvoiceStatus.OPEN and new_due == 0:
        values.update(status=InvoiceStatus.PAID.value, paid_at=at)
    uow.conn.execute(update(t.invoices).where(t.invoices.c.id == invoice_id).values(**values))
    if to_balance:
        uow.insert_many(
            t.balance_transactions,
            [
                {
                    "id": new_id("cbtxn"),
                    "customer_id": inv["customer_id"],
                    "currency": cur.code,
                    "amount_minor": to_balance,
                    "kind": "credit_note",
                    "invoice_id": invoice_id,
                    "credit_note_id": note_id,
                    "created_at": at,
                }
            ],
        )
    uow.emit(
        "credit_note.issued",
        "credit_note",
        note_id,
        {"number": number, "invoice_id": invoice_id, "amount_minor": total, "currency": cur.code, "reason": why.value},
        inv["customer_id"],
        at=at,
    )
    if values.get("status") == InvoiceStatus.PAID.value:
        uow.emit(
            "invoice.paid",
            "invoice",
            invoice_id,
            paid_data({**inv, **values}, "credit_note", credit_note_id=note_id),
            inv["customer_id"],
            at=at,
        )
    return {
        "id": note_id,
        "number": number,
        "amount_minor": total,
        "currency": cur.code,
        "to_balance_minor": to_balance,
        "to_wallets_minor": to_wallets,
        "invoice_id": invoice_id,
        "reason": why.value,
    }


def add_one_off(
    uow: UnitOfWork,
    customer_id: str,
    *,
    price_id: str | None = None,
    quantity: object = 1,
    description: str | None = None,
    unit_amount: object = None,
) -> dict[str, Any]:
    """A one-off charge (set-up fee, hardware, services) billed on the customer's next invoice."""
    customer = get_customer(uow, customer_id)
    uow.lock_customer(customer_id)
    cur = currency(customer["currency"])
    qty = parse_quantity(quantity)
    if qty == 0:
        raise ValidationError("invalid_quantity", "Quantity must be above zero.", "quantity")
    policy = RoundingPolicy(
        uow.conn.execute(
            select(t.legal_entities.c.rounding_policy).where(t.legal_entities.c.id == customer["legal_entity_id"])
        ).scalar_one()
    )
    if price_id is not None:
        prices = load_prices(uow.conn, [price_id])
        if not prices:
            raise NotFound("price", price_id, "price_id")
        price = prices[price_id]
        if price.currency != cur:
            raise ValidationError(
                "currency_not_offered",
                f"Price {price_id} is in {price.currency.code}, the customer pays in {cur.code}.",
                "price_id",
            )
        o = t.price_overrides.c
        negotiated = (
            uow.conn.execute(select(o.model, o.config).where(o.customer_id == customer_id, o.price_id == price_id))
            .mappings()
            .first()
        )
        # The customer's negotiated price replaces the list price's model, as on every other line of the price.
        model = parse_charge_model(negotiated["model"], negotiated["config"]) if negotiated else price.model
        raw = model.rate(qty).amount
        text = description or price.name or price_id
    else:
        if unit_amount is None or not description:
            raise ValidationError(
                "missing_field",
                "Give a price_id, or a description and unit_amount.",
                "unit_amount" if description else "description",
            )
        unit = Money.of(unit_amount, cur, "unit_amount").amount
        raw = unit * qty
        text = description
    amount = policy.round_minor(raw, cur)
    with localcontext(WIDE):  # a flat price for a tiny quantity makes a huge unit price: 10^13 ÷ 10^-9
        unit_price = (raw / qty).quantize(Decimal("0.000000001"))
    item_id = new_id("ii")
    uow.insert_many(
        t.pending_items,
        [
            {
                "id": item_id,
                "customer_id": customer_id,
                "price_id": price_id,
                "description": text,
                "quantity": qty,
                "unit_price": unit_price.normalize(),  # (to 28 digits, as a line's unit price)
                "amount_minor": amount,
                "currency": cur.code,
                "invoice_id": None,
                "created_at": uow.now,
            }
        ],
    )
    uow.emit(
        "invoice_item.created", "invoice_item", item_id, {"amount_minor": amount, "currency": cur.code}, customer_id
    )
    return {"id": item_id, "amount_minor": amount, "currency": cur.code, "description": text}
