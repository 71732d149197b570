"""Invoice arithmetic: totals, customer credit, numbering and credit-note splits. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import Enum

from remit.domain.errors import Conflict, ValidationError
from remit.domain.lifecycle import InvoiceStatus
from remit.domain.money import allocate


@dataclass(frozen=True, slots=True)
class Settlement:
    """How an invoice's total meets the customer's credit balance when it is finalized.

    ``applied_balance_minor`` is positive when credit was consumed, negative when a negative invoice (a net
    credit, e.g. after a downgrade) was moved to the customer's balance. ``amount_due`` is what the customer owes.
    """

    total_minor: int
    applied_balance_minor: int
    amount_due_minor: int

    @property
    def balance_change_minor(self) -> int:
        return -self.applied_balance_minor

    @property
    def status(self) -> InvoiceStatus:
        return InvoiceStatus.PAID if self.amount_due_minor == 0 else InvoiceStatus.OPEN


def settle(total_minor: int, balance_minor: int) -> Settlement:
    if total_minor <= 0:
        return Settlement(total_minor, total_minor, 0)
    applied = min(max(balance_minor, 0), total_minor)
    return Settlement(total_minor, applied, total_minor - applied)


def invoice_number(prefix: str, year: int, value: int) -> str:
    """Legal numbers per entity and series, restarting each year: INV-2026-000123."""
    return f"{prefix}-{year}-{value:06d}"


def series_key(prefix: str, issued_on: date) -> str:
    return f"{prefix}-{issued_on.year}"


class CreditReason(str, Enum):
    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"
    ORDER_CHANGE = "order_change"
    PRODUCT_UNSATISFACTORY = "product_unsatisfactory"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class CreditableLine:
    line_id: str
    amount_minor: int  # the line's amount on the invoice
    credited_minor: int  # already credited by earlier credit notes
    # A subscription line: what its key (subscription, charge, period) still holds over all its lines, on every
    # invoice (a correction elsewhere lowers it), less what credit notes credited on them. None: no key.
    key_open_minor: int | None = None

    @property
    def open_minor(self) -> int:
        held = self.amount_minor - self.credited_minor
        if self.key_open_minor is not None:
            held = min(held, self.key_open_minor)
        return max(held, 0)


def split_credit(
    amount_minor: int, lines: Sequence[CreditableLine], invoice_open_minor: int | None = None
) -> list[tuple[str, int]]:
    """Spread a lump-sum credit over the lines still creditable, in proportion, by largest remainder. At most
    what the lines hold, and (``invoice_open_minor``) what the invoice's total holds: a negative line (a credit for
    unused time, a usage correction) lowers what can be credited, though no credit goes on it."""
    if amount_minor <= 0:
        raise ValidationError("invalid_amount", "A credit note must credit a positive amount.", "amount")
    open_total = sum(line.open_minor for line in lines)
    if invoice_open_minor is not None:
        open_total = min(open_total, invoice_open_minor)
    if amount_minor > open_total:
        raise Conflict(
            "credit_exceeds_invoice", "The credit is more than what remains creditable on the invoice.", "amount"
        )
    parts = allocate(amount_minor, [line.open_minor for line in lines])
    return [(line.line_id, part) for line, part in zip(lines, parts, strict=True) if part]


@dataclass(frozen=True, slots=True)
class CreditOutcome:
    reduces_due_minor: int  # taken off what the customer still owes
    to_balance_minor: int  # becomes customer credit for later invoices


def credit_outcome(status: InvoiceStatus, amount_minor: int, amount_due_minor: int) -> CreditOutcome:
    if status is InvoiceStatus.OPEN:
        reduce = min(amount_minor, amount_due_minor)
        return CreditOutcome(reduce, amount_minor - reduce)
    if status is InvoiceStatus.PAID:
        return CreditOutcome(0, amount_minor)
    raise Conflict("invoice_not_creditable", f"A {status.value} invoice cannot be credited.", "invoice_id")
