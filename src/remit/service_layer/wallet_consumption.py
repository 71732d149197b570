"""Invoices consume prepaid credits when they are finalized, in the same transaction.

Order at finalization: the customer's balance (credit notes, negative invoices) is applied first, then wallets
pay what is still due: highest-priority wallet first, then the grants that expire first, then the oldest
(``remit.domain.wallets.consumption_order``). A wallet limited to some fees pays only their share of what is due
(``remit.domain.wallets.consume_scoped``). Invoices that sell credits are never paid with credits.

``WalletCredits`` is built once per set of invoices being finalized (one query; none when no wallet holds
credits at all), consumes per invoice in memory, and writes the ledger entries after the invoices are written.
The ledger's unique (grant, ``consume:<invoice>``) key makes a second consumption for one invoice impossible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Text, any_, bindparam, func, select, update

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id
from remit.domain.wallets import Fee, GrantBalance, WalletScope, below_threshold, consume_scoped, fee_of
from remit.service_layer.unit_of_work import UnitOfWork
from remit.service_layer.views import plain

PURCHASE_REASON = "wallet_purchase"  # billing reason of an invoice that sells credits

# An event as ``invoices.Event``: type, object type, object id, data, customer id, time.
WalletEvent = tuple[str, str, str, dict[str, Any], str | None, datetime | None]

_ANY_CREDITS = (
    select(t.wallet_grants.c.id)
    .where(t.wallet_grants.c.status == "active", t.wallet_grants.c.remaining_minor > 0)
    .limit(1)
)


def ledger_row(
    grant: Mapping[Any, Any],
    kind: str,
    cause_key: str,
    credits: Decimal,
    amount_minor: int,
    invoice_id: str | None,
    at: datetime,
) -> dict[str, Any]:
    """One wallet ledger entry against a grant (a ``wallet_grants`` row or anything with its id, wallet and
    customer)."""
    return {
        "id": new_id("wtx"),
        "wallet_id": grant["wallet_id"],
        "grant_id": grant["id"],
        "customer_id": grant["customer_id"],
        "kind": kind,
        "cause_key": cause_key,
        "credits": Decimal(credits).normalize() if credits else Decimal(0),
        "amount_minor": amount_minor,
        "invoice_id": invoice_id,
        "created_at": at,
    }


def in_ids(uow: UnitOfWork, column: Any, ids: Sequence[str]) -> Any:
    """``column IN ids``; on PostgreSQL one parameter whatever the batch size (as the bill run does: ids are
    ``prefix_hex``, never with a comma)."""
    if not uow.is_postgres:
        return column.in_(ids)
    return column == any_(func.string_to_array(bindparam(None, ",".join(ids), type_=Text), ","))


@dataclass
class WalletCredits:
    grants: dict[str, list[GrantBalance]] = field(default_factory=dict)  # per customer
    wallets: dict[str, Mapping[Any, Any]] = field(default_factory=dict)
    scopes: dict[str, WalletScope | None] = field(default_factory=dict)  # per wallet: the fees it may pay
    ledger: list[dict[str, Any]] = field(default_factory=list)
    remaining: dict[str, GrantBalance] = field(default_factory=dict)  # grants changed, as they end
    touched: list[tuple[str, str, str, datetime]] = field(default_factory=list)  # customer, wallet, invoice, at

    @classmethod
    def load(cls, uow: UnitOfWork, rows: Sequence[Mapping[Any, Any]]) -> WalletCredits:
        """The credits the customers of these invoices hold, for the invoices that may use them."""
        customers = sorted(
            {r["customer_id"] for r in rows if r["total_minor"] > 0 and r["billing_reason"] != PURCHASE_REASON}
        )
        if not customers or uow.conn.execute(_ANY_CREDITS).first() is None:
            return cls()
        g, w = t.wallet_grants.c, t.wallets.c
        found = cls()
        for row in uow.conn.execute(
            select(
                t.wallet_grants,
                w.priority,
                w.rate,
                w.currency,
                w.top_up_threshold,
                w.top_up_credits,
                w.applies_to,
                w.low_balance_threshold,
            )
            .join(t.wallets, w.id == g.wallet_id)
            .where(
                in_ids(uow, g.customer_id, customers), g.status == "active", g.remaining_minor > 0, w.status == "active"
            )
        ).mappings():
            found.grants.setdefault(row["customer_id"], []).append(
                GrantBalance(
                    row["id"],
                    row["wallet_id"],
                    row["priority"],
                    row["granted_at"],
                    row["expires_at"],
                    row["remaining_credits"],
                    row["remaining_minor"],
                )
            )
            found.wallets[row["wallet_id"]] = {
                "currency": row["currency"],
                "threshold": row["top_up_threshold"],
                "low": row["low_balance_threshold"],
            }
            found.scopes[row["wallet_id"]] = WalletScope.parse(row["applies_to"])
        return found

    def apply(
        self,
        invoice: Mapping[Any, Any],
        due_minor: int,
        at: datetime,
        fees: Callable[[], Iterable[tuple[Fee, int]]] | None = None,
    ) -> tuple[int, list[WalletEvent]]:
        """Pay up to ``due_minor`` of this invoice with credits. Returns the money paid and the events.
        ``fees``: the invoice's lines as (fee, amount), asked for only when a wallet is limited to some fees."""
        customer_id = invoice["customer_id"]
        held = self.grants.get(customer_id)
        if not held or due_minor <= 0 or invoice["billing_reason"] == PURCHASE_REASON:
            return 0, []
        usable = [g for g in held if self.wallets[g.wallet_id]["currency"] == invoice["currency"]]
        scopes = {g.wallet_id: self.scopes.get(g.wallet_id) for g in usable}
        limited = any(scope is not None for scope in scopes.values())
        if limited and fees is None:
            raise ValueError("a wallet limited to some fees needs the invoice's fees")
        taken, after = consume_scoped(usable, scopes, fees() if limited and fees else (), due_minor, at)
        if not taken:
            return 0, []
        changed = {g.grant_id: g for g in after}
        self.grants[customer_id] = [changed.get(g.grant_id, g) for g in held]
        per_wallet: dict[str, list[Any]] = {}
        for part in taken:
            self.remaining[part.grant_id] = changed[part.grant_id]
            grant = {"id": part.grant_id, "wallet_id": part.wallet_id, "customer_id": customer_id}
            self.ledger.append(
                ledger_row(
                    grant,
                    "consumption",
                    f"consume:{invoice['id']}",
                    -part.credits,
                    -part.amount_minor,
                    invoice["id"],
                    at,
                )
            )
            sums = per_wallet.setdefault(part.wallet_id, [Decimal(0), 0])
            sums[0] += part.credits
            sums[1] += part.amount_minor
        events: list[WalletEvent] = []
        for wallet_id, (credits, minor) in per_wallet.items():
            events.append(
                (
                    "wallet.credits_consumed",
                    "wallet",
                    wallet_id,
                    {
                        "invoice_id": invoice["id"],
                        "credits": plain(credits),
                        "amount_minor": minor,
                        "currency": invoice["currency"],
                    },
                    customer_id,
                    at,
                )
            )
            self.touched.append((customer_id, wallet_id, invoice["id"], at))
            balance = sum(
                (g.remaining_credits for g in self.grants[customer_id] if g.wallet_id == wallet_id and g.usable_at(at)),
                Decimal(0),
            )
            events.extend(
                balance_events(
                    wallet_id,
                    customer_id,
                    balance + credits,
                    balance,
                    self.wallets[wallet_id].get("low"),
                    {"invoice_id": invoice["id"]},
                    at,
                )
            )
        return sum(p.amount_minor for p in taken), events

    def write(self, uow: UnitOfWork) -> None:
        """Write the ledger entries and the grants' new balances (after the invoices exist), then buy the top-ups
        of wallets whose balance fell under their threshold."""
        if not self.ledger:
            return
        uow.insert_many(t.wallet_transactions, self.ledger)
        g = t.wallet_grants.c
        uow.conn.execute(
            update(t.wallet_grants)
            .where(g.id == bindparam("b_id"))
            .values(remaining_credits=bindparam("b_credits"), remaining_minor=bindparam("b_minor")),
            [
                {"b_id": gid, "b_credits": gr.remaining_credits, "b_minor": gr.remaining_minor}
                for gid, gr in self.remaining.items()
            ],
        )
        self.ledger, self.remaining = [], {}
        self._top_ups(uow)

    def _top_ups(self, uow: UnitOfWork) -> None:
        from remit.service_layer import wallets  # wallets buys credits with an invoice: it imports invoices

        wanted = []
        for customer_id, wallet_id, invoice_id, at in self.touched:
            threshold = self.wallets[wallet_id]["threshold"]
            if threshold is None:
                continue
            balance = sum(
                (g.remaining_credits for g in self.grants[customer_id] if g.wallet_id == wallet_id and g.usable_at(at)),
                Decimal(0),
            )
            if below_threshold(balance, threshold):
                wanted.append((wallet_id, invoice_id, at))
        wallets.top_up_many(uow, wanted)  # all of them together: one purchase invoice each, written at once
        self.touched = []


def line_fee(line: Mapping[str, Any]) -> tuple[Fee, int]:
    """An invoice line (a row of ``invoice_lines``) as the fee it belongs to, with its net amount."""
    usage = (line.get("details") or {}).get("usage")
    meter = usage.get("meter") if isinstance(usage, Mapping) else None
    return fee_of(line["kind"], line.get("price_id"), meter if isinstance(meter, str) else None), line["amount_minor"]


def balance_events(
    wallet_id: str,
    customer_id: str,
    before: Decimal,
    after: Decimal,
    low: Decimal | None,
    cause: dict[str, Any],
    at: datetime,
) -> list[WalletEvent]:
    """What a wallet's usable balance going from ``before`` to ``after`` credits announces: ``wallet.balance_low``
    when it falls under the wallet's ``low_balance_threshold`` (once per crossing), ``wallet.depleted`` when
    nothing is left. ``cause``: what took the credits (``invoice_id``, or ``reason``)."""
    events: list[WalletEvent] = []
    data = {**cause, "balance_credits": plain(after)}
    if low is not None and before >= low > after:
        events.append(("wallet.balance_low", "wallet", wallet_id, {**data, "threshold": plain(low)}, customer_id, at))
    if before > 0 and after == 0:
        events.append(("wallet.depleted", "wallet", wallet_id, data, customer_id, at))
    return events
