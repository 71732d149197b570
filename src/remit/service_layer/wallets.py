"""Prepaid credits: wallets, their grants (free or bought), top-ups, and what a paid purchase grants.

The ledger (``wallet_transactions``) is append-only; each grant's remaining credits and money are kept on the
grant too, for the consumption order, and equal the sum of its ledger entries (``check_ledger``). Every entry has
a unique (grant, cause) key, so repeating a consumption, an expiry or a void is refused by the database rather
than done twice. Consumption at finalization is in ``wallet_consumption.py``; expiry, voids and restores in
``wallet_ledger.py``; this module is the rest, recurring grants included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, or_, select, tuple_, update

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id
from remit.domain.clock import ensure_utc
from remit.domain.errors import Conflict, NotFound, ValidationError
from remit.domain.money import RoundingPolicy, currency
from remit.domain.subscriptions.periods import Interval
from remit.domain.wallets import (
    GrantBalance,
    WalletScope,
    credits_value_minor,
    due_occurrences,
    first_occurrence_after,
    occurrence_on,
    parse_credits,
    parse_wallet_rate,
)
from remit.service_layer.accounts import customer_now, local_date
from remit.service_layer.invoices import InvoiceDraft, write_invoices
from remit.service_layer.scoping import EVERYTHING, Visibility
from remit.service_layer.unit_of_work import UnitOfWork
from remit.service_layer.views import Filters, money, page, plain
from remit.service_layer.wallet_consumption import PURCHASE_REASON, in_ids, ledger_row
from remit.service_layer.wallet_ledger import (
    check_ledger,
    expire_credits,
    expire_due,
    invoice_deleted,
    invoice_voided,
    void_grant,
)

MAX_WALLETS_PER_CUSTOMER = 100
MAX_RECURRING_GRANTS_PER_WALLET = 20
PRIORITY_MIN, PRIORITY_MAX = 1, 100

__all__ = [
    "PURCHASE_REASON",
    "cancel_recurring_grant",
    "check_ledger",
    "create_recurring_grant",
    "create_wallet",
    "expire_credits",
    "expire_due",
    "get_wallet",
    "grant",
    "grant_recurring",
    "grant_recurring_due",
    "invoice_deleted",
    "invoice_voided",
    "list_recurring_grants",
    "next_occurrence",
    "upcoming_grants",
    "update_recurring_grant",
    "update_wallet",
    "void_wallet",
]


# --- wallets -----------------------------------------------------------------------------------------------------


def _top_up_terms(
    threshold: object, credits: object, expires_days: int | None
) -> tuple[Decimal | None, Decimal | None, int | None]:
    if threshold is None and credits is None:
        if expires_days is not None:
            raise ValidationError(
                "top_up_incomplete", "An automatic top-up needs a threshold and credits.", "top_up_threshold"
            )
        return None, None, None
    if threshold is None or credits is None:
        raise ValidationError(
            "top_up_incomplete",
            "An automatic top-up needs both a threshold and the credits to buy.",
            "top_up_threshold" if threshold is None else "top_up_credits",
        )
    if expires_days is not None and not 1 <= expires_days <= 3650:
        raise ValidationError("invalid_expiry", "Top-up credits expire after 1 to 3650 days.", "top_up_expires_days")
    return (
        parse_credits(threshold, "top_up_threshold", allow_zero=True),
        parse_credits(credits, "top_up_credits"),
        expires_days,
    )


def create_wallet(
    uow: UnitOfWork,
    customer_id: str,
    *,
    name: str | None = None,
    priority: int = 1,
    rate: object = "1",
    currency_code: str | None = None,
    top_up_threshold: object = None,
    top_up_credits: object = None,
    top_up_expires_days: int | None = None,
    applies_to: object = None,
    low_balance_threshold: object = None,
) -> dict[str, Any]:
    """A wallet for a customer, in the customer's currency. ``rate``: money per credit (1: credits are money).
    ``applies_to``: the fees it may pay (``WalletScope.parse``); None: any. ``low_balance_threshold``: credits;
    when the balance falls under it, a ``wallet.balance_low`` event."""
    customer = uow.locked_customer(customer_id)
    if customer is None:
        raise NotFound("customer", customer_id, "customer_id")
    cur = currency(customer["currency"])
    if currency_code is not None and currency(currency_code).code != cur.code:
        raise ValidationError(
            "currency_mismatch", f"The customer pays in {cur.code}: a wallet is in the customer's currency.", "currency"
        )
    _check_priority(priority)
    wallet_rate = parse_wallet_rate(rate)
    threshold, top_up, expires_days = _top_up_terms(top_up_threshold, top_up_credits, top_up_expires_days)
    if top_up is not None:
        credits_value_minor(top_up, wallet_rate, _policy(uow, customer["legal_entity_id"]), cur)
    scope = _scope(uow, applies_to)
    low = _low(low_balance_threshold)
    label = _name(name if name is not None else "Prepaid credits")
    count = uow.conn.execute(
        select(func.count()).where(t.wallets.c.customer_id == customer_id, t.wallets.c.status == "active")
    ).scalar_one()
    if count >= MAX_WALLETS_PER_CUSTOMER:
        raise Conflict("too_many_wallets", f"A customer has at most {MAX_WALLETS_PER_CUSTOMER} wallets.", "customer_id")
    wallet_id = new_id("wal")
    uow.insert_many(
        t.wallets,
        [
            {
                "id": wallet_id,
                "customer_id": customer_id,
                "name": label,
                "currency": cur.code,
                "priority": priority,
                "rate": wallet_rate,
                "status": "active",
                "top_up_threshold": threshold,
                "top_up_credits": top_up,
                "top_up_expires_days": expires_days,
                "created_at": customer_now(uow, customer),
                "voided_at": None,
                "applies_to": None if scope is None else scope.public(),
                "low_balance_threshold": low,
            }
        ],
    )
    uow.emit(
        "wallet.created",
        "wallet",
        wallet_id,
        {"currency": cur.code, "rate": plain(wallet_rate), "priority": priority},
        customer_id,
        at=customer_now(uow, customer),
    )
    return get_wallet(uow, wallet_id)


def _check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValidationError(
            "invalid_priority", f"Priority is {PRIORITY_MIN} (consumed first) to {PRIORITY_MAX}.", "priority"
        )
    return priority


def _name(name: object) -> str:
    label = name.strip() if isinstance(name, str) else ""
    if not label or len(label) > 200:
        raise ValidationError("invalid_name", "A wallet's name has 1 to 200 characters.", "name")
    return label


_TOP_UP_FIELDS = ("top_up_threshold", "top_up_credits", "top_up_expires_days")
UPDATABLE = ("name", "priority", "applies_to", "low_balance_threshold", *_TOP_UP_FIELDS)


def _low(value: object) -> Decimal | None:
    return None if value is None else parse_credits(value, "low_balance_threshold")


def _scope(uow: UnitOfWork, value: object) -> WalletScope | None:
    """``applies_to``, checked: known fee types, and meters and prices that exist."""
    scope = WalletScope.parse(value)
    if scope is None:
        return None
    for code in sorted(scope.meters):
        if uow.conn.execute(select(t.meters.c.id).where(t.meters.c.code == code)).first() is None:
            raise NotFound("meter", code, "applies_to.meters", by="code")
    for price_id in sorted(scope.prices):
        if uow.conn.execute(select(t.prices.c.id).where(t.prices.c.id == price_id)).first() is None:
            raise NotFound("price", price_id, "applies_to.prices")
    return scope


def update_wallet(uow: UnitOfWork, wallet_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Rename a wallet, change its priority or the fees it may pay (``applies_to``; None: any), or replace its
    top-up terms (give any top-up field: the three are replaced together; all None turns automatic top-up off).
    The rate never changes: grants keep their value."""
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise ValidationError("unknown_field", f"{unknown[0]!r} cannot be changed.", unknown[0])
    wallet = _wallet(uow, wallet_id, lock=True)
    values: dict[str, Any] = {}
    if "name" in changes:
        values["name"] = _name(changes["name"])
    if "priority" in changes:
        values["priority"] = _check_priority(changes["priority"])
    if "applies_to" in changes:
        scope = _scope(uow, changes["applies_to"])
        values["applies_to"] = None if scope is None else scope.public()
    if "low_balance_threshold" in changes:
        values["low_balance_threshold"] = _low(changes["low_balance_threshold"])
    if any(k in changes for k in _TOP_UP_FIELDS):
        terms = _top_up_terms(
            changes.get("top_up_threshold"), changes.get("top_up_credits"), changes.get("top_up_expires_days")
        )
        if terms[1] is not None:
            customer = _owner(uow, wallet)
            credits_value_minor(
                terms[1], wallet["rate"], _policy(uow, customer["legal_entity_id"]), currency(wallet["currency"])
            )
        values.update(zip(_TOP_UP_FIELDS, terms, strict=True))
    if wallet["status"] != "active":
        raise Conflict("wallet_voided", "A voided wallet cannot be changed.", "wallet_id")
    if values:
        uow.conn.execute(update(t.wallets).where(t.wallets.c.id == wallet_id).values(**values))
        customer = _owner(uow, wallet)
        uow.emit(
            "wallet.updated", "wallet", wallet_id, plain(values), wallet["customer_id"], at=customer_now(uow, customer)
        )
    return get_wallet(uow, wallet_id)


def _policy(uow: UnitOfWork, entity_id: str) -> RoundingPolicy:
    return RoundingPolicy(
        uow.conn.execute(
            select(t.legal_entities.c.rounding_policy).where(t.legal_entities.c.id == entity_id)
        ).scalar_one()
    )


def _wallet(uow: UnitOfWork, wallet_id: str, lock: bool = False) -> dict[str, Any]:
    """The wallet; with ``lock``, its customer is locked first (one writer per account) and the row read after."""
    query = select(t.wallets).where(t.wallets.c.id == wallet_id)
    row = uow.conn.execute(query).mappings().first()
    if row is None:
        raise NotFound("wallet", wallet_id, "wallet_id")
    if lock:
        uow.lock_customer(row["customer_id"])
        row = uow.conn.execute(query).mappings().one()
    return dict(row)


def _owner(uow: UnitOfWork, wallet: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """The wallet's customer."""
    return uow.conn.execute(select(t.customers).where(t.customers.c.id == wallet["customer_id"])).mappings().one()


def _check_paid_choice(paid: bool, grant_before_payment: bool) -> None:
    if grant_before_payment and not paid:
        raise ValidationError(
            "invalid_choice",
            "grant_before_payment is for credits bought (paid), not free ones.",
            "grant_before_payment",
        )


def get_wallet(uow: UnitOfWork, wallet_id: str, *, with_grants: bool = False) -> dict[str, Any]:
    """The wallet with its balance: credits and money held (what its grants have left, which ``check_ledger``
    holds equal to the sum of the ledger); and credits bought but not paid for yet."""
    wallet = _wallet(uow, wallet_id)
    return _with_balances(uow, [wallet], with_grants)[0]


def _with_balances(uow: UnitOfWork, wallets: list[dict[str, Any]], with_grants: bool) -> list[dict[str, Any]]:
    if not wallets:
        return []
    g = t.wallet_grants.c
    grants = list(
        uow.conn.execute(
            select(t.wallet_grants).where(g.wallet_id.in_([w["id"] for w in wallets])).order_by(g.created_at, g.id)
        ).mappings()
    )
    out = []
    for wallet in wallets:
        mine = [gr for gr in grants if gr["wallet_id"] == wallet["id"]]
        held = [gr for gr in mine if gr["status"] == "active"]
        pending = [gr for gr in mine if gr["status"] == "pending"]
        row = {
            **wallet,
            "object": "wallet",
            "balance_credits": sum((gr["remaining_credits"] for gr in held), Decimal(0)),
            "balance_minor": sum(gr["remaining_minor"] for gr in held),
            "pending_credits": sum((gr["credits"] for gr in pending), Decimal(0)),
        }
        if with_grants:
            row["grants"] = [grant_public(gr, wallet["currency"]) for gr in mine]
        out.append(wallet_public(row))
    return out


def wallet_public(row: Mapping[Any, Any]) -> dict[str, Any]:
    code = row["currency"]
    out = {k: (plain(v) if k != "grants" else v) for k, v in row.items() if k != "balance_minor"}
    out["balance"] = money(row["balance_minor"], code)
    return out


def grant_public(row: Mapping[Any, Any], code: str) -> dict[str, Any]:
    out = {k: plain(v) for k, v in row.items() if not k.endswith("_minor") and k != "cause_key"}
    out["object"] = "wallet_grant"
    cause = row.get("cause_key") or ""
    out["recurring_grant_id"] = cause.split(":")[1] if cause.startswith(RECURRING_CAUSE) else None
    out["amount"] = money(row["amount_minor"], code)
    out["remaining"] = money(row["remaining_minor"], code)
    return out


def list_wallets(
    uow: UnitOfWork,
    limit: int | None = 20,
    after: str | None = None,
    *,
    vis: Visibility = EVERYTHING,
    filters: Filters | None = None,
) -> list[dict[str, Any]]:
    seen = select(t.wallets)
    if vis != EVERYTHING:
        seen = seen.join(t.customers, t.customers.c.id == t.wallets.c.customer_id).where(vis.customers_clause())
    query = (filters or Filters()).apply(seen, t.wallets)
    return _with_balances(uow, page(uow, query, t.wallets.c.id, limit, after, seen), False)


def list_transactions(
    uow: UnitOfWork, wallet_id: str, limit: int | None = 20, after: str | None = None
) -> list[dict[str, Any]]:
    """The wallet's ledger in the order it was recorded; ``after``: the id of the last entry of the page before."""
    wallet = _wallet(uow, wallet_id)
    x = t.wallet_transactions.c
    query = select(t.wallet_transactions).where(x.wallet_id == wallet_id)
    if after:
        seq = uow.conn.execute(select(x.seq).where(x.id == after, x.wallet_id == wallet_id)).scalar()
        if seq is None:
            raise NotFound("wallet_transaction", after, "starting_after")
        query = query.where(x.seq > seq)
    query = query.order_by(x.seq).limit(min(limit, 1001) if limit else 1000)
    return [transaction_public(r, wallet["currency"]) for r in uow.conn.execute(query).mappings()]


def transaction_public(row: Mapping[Any, Any], code: str) -> dict[str, Any]:
    out = {k: plain(v) for k, v in row.items() if k not in ("seq", "amount_minor", "cause_key")}
    out["object"] = "wallet_transaction"
    out["amount"] = money(row["amount_minor"], code)
    out["currency"] = code
    return out


# --- grants and purchases ----------------------------------------------------------------------------------------


def grant(
    uow: UnitOfWork,
    wallet_id: str,
    credits: object,
    *,
    paid: bool = False,
    expires_at: datetime | None = None,
    grant_before_payment: bool = False,
) -> dict[str, Any]:
    """Add credits to a wallet: free (granted now), or bought (an invoice for them, granted when it is paid, or
    now with ``grant_before_payment``). Returns the grant."""
    wallet = _wallet(uow, wallet_id, lock=True)
    _check_paid_choice(paid, grant_before_payment)
    amount = parse_credits(credits)
    customer = _owner(uow, wallet)
    now = customer_now(uow, customer)
    if expires_at is not None:
        try:
            expires_at = ensure_utc(expires_at)
        except OverflowError:
            raise ValidationError("invalid_time", "expires_at is out of range.", "expires_at") from None
        if expires_at <= now:
            raise ValidationError("expiry_in_past", "Credits must expire after now.", "expires_at")
    if wallet["status"] != "active":
        raise Conflict("wallet_voided", "A voided wallet takes no more credits.", "wallet_id")
    granting = _Granting()
    kind = "paid" if paid else "free"
    row = granting.add(uow, wallet, customer, amount, now, kind, "manual", expires_at, not paid or grant_before_payment)
    granting.flush(uow)
    return grant_public(row, wallet["currency"])


def _value(wallet: Mapping[Any, Any], entity: Mapping[Any, Any], amount: Decimal) -> int:
    """What ``amount`` credits of the wallet are worth, rounded by its seller's policy: a grant's rounding point."""
    return credits_value_minor(
        amount, wallet["rate"], RoundingPolicy(entity["rounding_policy"]), currency(wallet["currency"])
    )


def _grant_row(
    wallet: Mapping[Any, Any],
    amount: Decimal,
    value: int,
    at: datetime,
    kind: str,
    source: str,
    expires_at: datetime | None,
    granted: bool,
    cause_key: str | None,
    invoice_id: str | None,
    expires_days: int | None = None,
) -> dict[str, Any]:
    """``expires_days``: the credits last that many days from when they are granted: from ``at`` if they are
    granted now, else from the payment (``invoice_paid`` sets ``expires_at`` then)."""
    if expires_days is not None and granted:
        expires_at = at + timedelta(days=expires_days)
    return {
        "id": new_id("wgr"),
        "wallet_id": wallet["id"],
        "customer_id": wallet["customer_id"],
        "kind": kind,
        "source": source,
        "status": "active" if granted else "pending",
        "credits": amount,
        "amount_minor": value,
        "remaining_credits": amount if granted else Decimal(0),
        "remaining_minor": value if granted else 0,
        "expires_at": expires_at,
        "expires_days": None if granted else expires_days,
        "invoice_id": invoice_id,
        "cause_key": cause_key,
        "created_at": at,
        "granted_at": at if granted else None,
    }


def _record_granted(uow: UnitOfWork, grant_rows: Sequence[Mapping[Any, Any]], code: str | Mapping[str, str]) -> None:
    """The ledger's ``grant`` entries and ``wallet.credits_granted`` of grants made active, each at its
    ``granted_at``; ``code``: their currency, or each wallet's."""
    uow.insert_many(
        t.wallet_transactions,
        [ledger_row(r, "grant", "grant", r["credits"], r["amount_minor"], None, r["granted_at"]) for r in grant_rows],
    )
    for row in grant_rows:
        uow.emit(
            "wallet.credits_granted",
            "wallet",
            row["wallet_id"],
            {
                "grant_id": row["id"],
                "kind": row["kind"],
                "credits": plain(row["credits"]),
                "amount_minor": row["amount_minor"],
                "currency": code if isinstance(code, str) else code[row["wallet_id"]],
                "expires_at": plain(row["expires_at"]),
            },
            row["customer_id"],
            at=row["granted_at"],
        )


def _purchase_draft(
    wallet: Mapping[Any, Any], customer: Mapping[Any, Any], amount: Decimal, value_minor: int, at: datetime
) -> tuple[dict[str, Any], InvoiceDraft]:
    """The pending item and the invoice draft of an invoice of its own for ``amount`` credits bought: one line,
    paid with money only (neither the customer's balance nor other credits pay for credits)."""
    item = {
        "id": new_id("ii"),
        "customer_id": customer["id"],
        "price_id": None,
        "description": f"{plain(amount)} credits: {wallet['name']}"[:500],
        "quantity": amount,
        "unit_price": wallet["rate"],
        "amount_minor": value_minor,
        "currency": wallet["currency"],
        "invoice_id": None,
        "created_at": at,
    }
    draft = InvoiceDraft(
        customer=customer,
        lines=[],
        pending_items=[item],
        issued_on=local_date(at, customer["timezone"]),
        at=at,
        reason=PURCHASE_REASON,
    )
    return item, draft


def top_up_many(uow: UnitOfWork, wanted: Sequence[tuple[str, str, datetime]]) -> list[str]:
    """Buy the top-up credits of wallets whose balance an invoice took under their threshold: for each (wallet id,
    cause invoice id, time), once per cause, and only if no top-up of the wallet is waiting for payment (nor
    bought just before in this call). In a few statements whatever their number: a bill run buys its batch's
    top-ups together, their purchase invoices written by one ``write_invoices``. Returns the new grants' ids."""
    if not wanted:
        return []
    g, w, c = t.wallet_grants.c, t.wallets.c, t.customers.c
    wallet_ids = sorted({wallet_id for wallet_id, _cause, _at in wanted})
    found = {r["id"]: r for r in uow.conn.execute(select(t.wallets).where(in_ids(uow, w.id, wallet_ids))).mappings()}
    waiting = set(
        uow.conn.execute(
            select(g.wallet_id)
            .where(in_ids(uow, g.wallet_id, wallet_ids), g.source == "top_up", g.status == "pending")
            .distinct()
        ).scalars()
    )
    pairs = sorted({(wallet_id, f"top_up:{cause}") for wallet_id, cause, _at in wanted})
    # One probe of the unique (wallet, cause) index per pair (two separate INs made SQLite try every combination).
    done = {
        (wallet_id, key)
        for wallet_id, key in uow.conn.execute(
            select(g.wallet_id, g.cause_key).where(tuple_(g.wallet_id, g.cause_key).in_(pairs))
        )
    }
    customer_ids = sorted({found[wallet_id]["customer_id"] for wallet_id in wallet_ids})
    customers = {
        r["id"]: r for r in uow.conn.execute(select(t.customers).where(in_ids(uow, c.id, customer_ids))).mappings()
    }
    granting = _Granting()
    bought: list[tuple[Mapping[Any, Any], dict[str, Any]]] = []
    for wallet_id, cause, at in wanted:
        wallet, key = found[wallet_id], f"top_up:{cause}"
        if wallet_id in waiting or (wallet_id, key) in done or wallet["top_up_credits"] is None:
            continue
        waiting.add(wallet_id)  # one top-up at a time per wallet, even within these
        customer = customers[wallet["customer_id"]]
        days, credits = wallet["top_up_expires_days"], wallet["top_up_credits"]
        row = granting.add(uow, wallet, customer, credits, at, "paid", "top_up", None, False, key, expires_days=days)
        bought.append((wallet, row))
    granting.flush(uow)
    for topped, row in bought:
        uow.emit(
            "wallet.topped_up",
            "wallet",
            topped["id"],
            {
                "grant_id": row["id"],
                "credits": plain(row["credits"]),
                "invoice_id": row["invoice_id"],
                "threshold": plain(topped["top_up_threshold"]),
            },
            topped["customer_id"],
            at=row["created_at"],
        )
    return [row["id"] for _topped, row in bought]


# --- what happens to invoices ------------------------------------------------------------------------------------


def invoice_paid(uow: UnitOfWork, invoice_id: str, at: datetime) -> None:
    """A purchase invoice was paid: its credits are granted."""
    g = t.wallet_grants.c
    for row in uow.conn.execute(
        select(t.wallet_grants, t.wallets.c.currency)
        .join(t.wallets, t.wallets.c.id == g.wallet_id)
        .where(g.invoice_id == invoice_id, g.status == "pending")
    ).mappings():
        # Credits that last some days count them from now: paid late, they are not bought already expired.
        days = row["expires_days"]
        expires_at = at + timedelta(days=days) if days is not None else row["expires_at"]
        values = {
            "status": "active",
            "remaining_credits": row["credits"],
            "remaining_minor": row["amount_minor"],
            "granted_at": at,
            "expires_at": expires_at,
            "expires_days": None,
        }
        granted = {**row, **values}
        uow.conn.execute(update(t.wallet_grants).where(g.id == row["id"]).values(**values))
        _record_granted(uow, [granted], row["currency"])


def void_wallet(uow: UnitOfWork, wallet_id: str) -> dict[str, Any]:
    """Close a wallet: what remains of its credits is voided (in the ledger), purchases not yet paid will not be
    granted (their invoices stay: void them if they should not be collected)."""
    wallet = _wallet(uow, wallet_id, lock=True)
    if wallet["status"] != "active":
        raise Conflict("wallet_voided", "The wallet is voided already.", "wallet_id")
    customer = _owner(uow, wallet)
    at = customer_now(uow, customer)
    g = t.wallet_grants.c
    for row in uow.conn.execute(
        select(t.wallet_grants).where(g.wallet_id == wallet_id, g.status.in_(("active", "pending"))).order_by(g.id)
    ).mappings():
        if row["status"] == "pending":
            uow.conn.execute(update(t.wallet_grants).where(g.id == row["id"]).values(status="voided"))
        else:
            void_grant(uow, row, at, "wallet_voided")
    r = t.wallet_recurring_grants.c
    uow.conn.execute(
        update(t.wallet_recurring_grants)
        .where(r.wallet_id == wallet_id, r.status == "active")
        .values(status="canceled", canceled_at=at, next_on=None)
    )
    uow.conn.execute(update(t.wallets).where(t.wallets.c.id == wallet_id).values(status="voided", voided_at=at))
    uow.emit("wallet.voided", "wallet", wallet_id, {}, wallet["customer_id"], at=at)
    return get_wallet(uow, wallet_id)


# --- recurring grants --------------------------------------------------------------------------------------------

RECURRING_CAUSE = "recurring:"  # a recurring grant's occurrence: "recurring:<schedule id>:<index>"


def create_recurring_grant(
    uow: UnitOfWork,
    wallet_id: str,
    credits: object,
    *,
    interval: str = "month",
    interval_count: int = 1,
    starts_on: date | None = None,
    ends_on: date | None = None,
    paid: bool = False,
    grant_before_payment: bool = False,
    expires_days: int | None = None,
) -> dict[str, Any]:
    """Give (or sell, with ``paid``) the same credits every interval, from ``starts_on`` (the customer's today by
    default: the first credits are then granted at once) up to ``ends_on`` (excluded; default: until canceled).
    Each occurrence is a grant of its own, made by the bill run that follows its day (or by a test clock's advance)
    and dated at the start of that day in the customer's time zone; ``expires_days``: each occurrence's credits
    expire that many days after they are granted. Returns the schedule."""
    wallet = _wallet(uow, wallet_id, lock=True)
    _check_paid_choice(paid, grant_before_payment)
    amount = parse_credits(credits)
    if isinstance(interval_count, bool) or not isinstance(interval_count, int) or not 1 <= interval_count <= 365:
        raise ValidationError(
            "invalid_interval", "The interval count is a whole number from 1 to 365.", "interval_count"
        )
    every = Interval.parse(interval, interval_count)
    if expires_days is not None and (
        isinstance(expires_days, bool) or not isinstance(expires_days, int) or not 1 <= expires_days <= 3650
    ):
        raise ValidationError("invalid_expiry", "Recurring credits expire after 1 to 3650 days.", "expires_days")
    customer = _owner(uow, wallet)
    now = customer_now(uow, customer)
    today = local_date(now, customer["timezone"])
    first = today if starts_on is None else starts_on
    if first < today:
        raise ValidationError(
            "start_in_past", f"A recurring grant starts today ({today.isoformat()}) or later.", "starts_on"
        )
    if ends_on is not None and ends_on <= first:
        raise ValidationError("dates_out_of_order", "ends_on must be after starts_on.", "ends_on")
    credits_value_minor(amount, wallet["rate"], _policy(uow, customer["legal_entity_id"]), currency(wallet["currency"]))
    if wallet["status"] != "active":
        raise Conflict("wallet_voided", "A voided wallet takes no more credits.", "wallet_id")
    r = t.wallet_recurring_grants.c
    active = uow.conn.execute(select(func.count()).where(r.wallet_id == wallet_id, r.status == "active")).scalar_one()
    if active >= MAX_RECURRING_GRANTS_PER_WALLET:
        raise Conflict(
            "too_many_recurring_grants",
            f"A wallet has at most {MAX_RECURRING_GRANTS_PER_WALLET} active recurring grants.",
            "wallet_id",
        )
    schedule_id = new_id("wrg")
    row = {
        "id": schedule_id,
        "wallet_id": wallet_id,
        "customer_id": wallet["customer_id"],
        "credits": amount,
        "paid": paid,
        "grant_before_payment": grant_before_payment,
        "interval_unit": every.unit.value,
        "interval_count": every.count,
        "starts_on": first,
        "ends_on": ends_on,
        "expires_days": expires_days,
        "next_index": 0,
        "next_on": first,
        "status": "active",
        "created_at": now,
        "canceled_at": None,
    }
    uow.insert_many(t.wallet_recurring_grants, [row])
    uow.emit(
        "wallet.recurring_grant_created",
        "wallet",
        wallet_id,
        {
            "recurring_grant_id": schedule_id,
            "credits": plain(amount),
            "interval": str(every),
            "starts_on": first.isoformat(),
            "ends_on": ends_on.isoformat() if ends_on else None,
            "paid": paid,
        },
        wallet["customer_id"],
        at=now,
    )
    _grant_occurrences(uow, row, wallet, customer, now)  # one that starts today gives its first credits now
    return _recurring(uow, schedule_id)


def list_recurring_grants(uow: UnitOfWork, wallet_id: str) -> list[dict[str, Any]]:
    """The wallet's recurring grants, oldest first: active, ended and canceled."""
    _wallet(uow, wallet_id)
    r = t.wallet_recurring_grants.c
    rows = uow.conn.execute(
        select(t.wallet_recurring_grants).where(r.wallet_id == wallet_id).order_by(r.created_at, r.id)
    ).mappings()
    return [recurring_public(row) for row in rows]


def _active_schedule(
    uow: UnitOfWork, wallet_id: str, schedule_id: str
) -> tuple[dict[str, Any], Mapping[Any, Any], Mapping[Any, Any], datetime]:
    """The wallet (its customer locked), the schedule (active), the customer and the customer's now."""
    wallet = _wallet(uow, wallet_id, lock=True)
    r = t.wallet_recurring_grants.c
    row = (
        uow.conn.execute(select(t.wallet_recurring_grants).where(r.id == schedule_id, r.wallet_id == wallet_id))
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("wallet_recurring_grant", schedule_id, "recurring_grant_id")
    if row["status"] != "active":
        raise Conflict(
            "recurring_grant_ended", f"This recurring grant is {row['status']} already.", "recurring_grant_id"
        )
    customer = _owner(uow, wallet)
    return wallet, row, customer, customer_now(uow, customer)


def cancel_recurring_grant(uow: UnitOfWork, wallet_id: str, schedule_id: str) -> dict[str, Any]:
    """Stop a recurring grant. Occurrences already due (today's, if the bill run has not run yet) are granted
    first; credits granted stay."""
    wallet, row, customer, now = _active_schedule(uow, wallet_id, schedule_id)
    _grant_occurrences(uow, row, wallet, customer, now)
    r = t.wallet_recurring_grants.c
    uow.conn.execute(
        update(t.wallet_recurring_grants)
        .where(r.id == schedule_id, r.status == "active")
        .values(status="canceled", canceled_at=now, next_on=None)
    )
    uow.emit(
        "wallet.recurring_grant_canceled",
        "wallet",
        wallet_id,
        {"recurring_grant_id": schedule_id},
        wallet["customer_id"],
        at=now,
    )
    return _recurring(uow, schedule_id)


RECURRING_UPDATABLE = ("credits", "ends_on", "expires_days")


def update_recurring_grant(
    uow: UnitOfWork, wallet_id: str, schedule_id: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Change what a recurring grant gives from now on: its ``credits``, its end day (``ends_on``; None: no end)
    or how long each occurrence's credits last (``expires_days``; None: no expiry). Occurrences already due are
    granted first, on the old terms; credits granted stay as they are. An end day on or before the next
    occurrence ends the schedule."""
    unknown = sorted(set(changes) - set(RECURRING_UPDATABLE))
    if unknown:
        raise ValidationError("unknown_field", f"{unknown[0]!r} cannot be changed.", unknown[0])
    wallet, row, customer, now = _active_schedule(uow, wallet_id, schedule_id)
    values: dict[str, Any] = {}
    if "credits" in changes:
        values["credits"] = parse_credits(changes["credits"])
        policy = _policy(uow, customer["legal_entity_id"])
        credits_value_minor(values["credits"], wallet["rate"], policy, currency(wallet["currency"]))
    if "expires_days" in changes:
        days = changes["expires_days"]
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650):
            raise ValidationError("invalid_expiry", "Recurring credits expire after 1 to 3650 days.", "expires_days")
        values["expires_days"] = days
    every = Interval.parse(row["interval_unit"], row["interval_count"])
    due = due_occurrences(
        row["starts_on"], every, row["next_index"], row["ends_on"], customer["timezone"], row["created_at"], now
    )
    next_index = row["next_index"] + len(due)
    if "ends_on" in changes:
        ends_on = changes["ends_on"]
        last = occurrence_on(row["starts_on"], every, next_index - 1) if next_index else None
        if ends_on is not None and (ends_on <= row["starts_on"] or (last is not None and ends_on <= last)):
            what = "the last occurrence granted" if last else "the first day"
            raise ValidationError(
                "dates_out_of_order",
                f"ends_on must be after {(last or row['starts_on']).isoformat()} ({what}).",
                "ends_on",
            )
        values["ends_on"] = ends_on
    if not values:
        return recurring_public(row)
    _grant_occurrences(uow, row, wallet, customer, now)  # what is due is granted on the terms it fell due under
    r = t.wallet_recurring_grants.c
    if "ends_on" in values:
        next_on = occurrence_on(row["starts_on"], every, next_index)
        ended = values["ends_on"] is not None and next_on >= values["ends_on"]
        values.update(status="ended" if ended else "active", next_on=None if ended else next_on)
    uow.conn.execute(update(t.wallet_recurring_grants).where(r.id == schedule_id).values(**values))
    changed = {k: plain(values[k]) for k in RECURRING_UPDATABLE if k in values}
    uow.emit(
        "wallet.recurring_grant_updated",
        "wallet",
        wallet_id,
        {"recurring_grant_id": schedule_id, **changed},
        wallet["customer_id"],
        at=now,
    )
    return _recurring(uow, schedule_id)


def _recurring(uow: UnitOfWork, schedule_id: str) -> dict[str, Any]:
    r = t.wallet_recurring_grants.c
    return recurring_public(
        uow.conn.execute(select(t.wallet_recurring_grants).where(r.id == schedule_id)).mappings().one()
    )


def recurring_public(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = {k: plain(v) for k, v in row.items() if k not in ("interval_unit", "next_index", "next_on")}
    out["object"] = "wallet_recurring_grant"
    out["interval"] = row["interval_unit"]
    out["next_grant_on"] = plain(row["next_on"]) if row["status"] == "active" else None
    out["grants_made"] = row["next_index"]
    return out


def grant_recurring(make_uow: Callable[[], UnitOfWork], as_of: datetime, *, test_clock_id: str | None = None) -> int:
    """Grant every occurrence of a recurring grant due by ``as_of``, for real customers or one test clock's, in one
    transaction. Returns how many were granted; a second run finds nothing to do."""
    with make_uow() as uow:
        return grant_recurring_due(uow, as_of, test_clock_id)


def _due_schedules(as_of: datetime, test_clock_id: str | None, customer_ids: list[str] | None = None) -> Any:
    r, c = t.wallet_recurring_grants.c, t.customers.c
    clock = (c.test_clock_id == test_clock_id) if test_clock_id else c.test_clock_id.is_(None)
    # A day starts before its UTC date ends in every time zone: a wider net, narrowed by each customer's zone.
    latest = as_of.date() + timedelta(days=1)
    query = (
        select(t.wallet_recurring_grants)
        .join(t.customers, c.id == r.customer_id)
        .where(r.status == "active", r.next_on <= latest, clock)
    )
    if customer_ids is not None:
        query = query.where(r.customer_id.in_(customer_ids))
    return query.order_by(r.customer_id, r.created_at, r.id)


def customers_with_grants_due(uow: UnitOfWork, as_of: datetime, test_clock_id: str | None = None) -> set[str]:
    """The customers with a recurring grant that may fall due by ``as_of`` (a wider net: see ``_due_schedules``)."""
    due = _due_schedules(as_of, test_clock_id).order_by(None).subquery()
    return set(uow.conn.execute(select(due.c.customer_id).distinct()).scalars())


def grant_recurring_due(
    uow: UnitOfWork, as_of: datetime, test_clock_id: str | None = None, among: Sequence[str] | None = None
) -> int:
    """``grant_recurring`` in this unit of work; ``among``: only these customers."""
    due = _due_schedules(as_of, test_clock_id, list(among) if among is not None else None)
    customer_ids = sorted({row["customer_id"] for row in uow.conn.execute(due).mappings()})
    if not customer_ids:
        return 0
    uow.lock_customers(customer_ids)  # then read again: a cancel may have come meanwhile
    schedules = list(uow.conn.execute(_due_schedules(as_of, test_clock_id, customer_ids)).mappings())
    customers = {
        row["id"]: row
        for row in uow.conn.execute(select(t.customers).where(t.customers.c.id.in_(customer_ids))).mappings()
    }
    wallet_ids = sorted({row["wallet_id"] for row in schedules})
    found = {
        row["id"]: row for row in uow.conn.execute(select(t.wallets).where(t.wallets.c.id.in_(wallet_ids))).mappings()
    }
    granting = _Granting()
    made = sum(
        _grant_occurrences(uow, row, found[row["wallet_id"]], customers[row["customer_id"]], as_of, granting)
        for row in schedules
    )
    granting.flush(uow)
    return made


_MOVE_SCHEDULE = (
    update(t.wallet_recurring_grants)
    .where(
        t.wallet_recurring_grants.c.id == bindparam("b_id"),
        t.wallet_recurring_grants.c.next_index == bindparam("b_from"),
    )
    .values(next_index=bindparam("b_next"), next_on=bindparam("b_on"), status=bindparam("b_status"))
)


@dataclass
class _Granting:
    """Occurrences of recurring grants (free ones, and bought ones with their purchase invoices) and the
    schedules moved on, gathered across many schedules and written together by ``flush``: a run on the 1st that
    gives thousands of customers their monthly credits writes them in a few statements, not a few per customer."""

    entities: dict[str, Mapping[Any, Any]] = field(default_factory=dict)
    grants: list[dict[str, Any]] = field(default_factory=list)
    codes: dict[str, str] = field(default_factory=dict)
    moves: list[dict[str, Any]] = field(default_factory=list)
    # Bought occurrences: the pending item and draft of each one's purchase invoice, and its grant (whose
    # invoice_id is set once the invoices are written, together).
    purchases: list[tuple[dict[str, Any], InvoiceDraft, dict[str, Any]]] = field(default_factory=list)

    def entity(self, uow: UnitOfWork, entity_id: str) -> Mapping[Any, Any]:
        if entity_id not in self.entities:
            row = uow.conn.execute(select(t.legal_entities).where(t.legal_entities.c.id == entity_id)).mappings().one()
            self.entities[entity_id] = row
        return self.entities[entity_id]

    def add(
        self,
        uow: UnitOfWork,
        wallet: Mapping[Any, Any],
        customer: Mapping[Any, Any],
        amount: Decimal,
        at: datetime,
        kind: str,
        source: str,
        expires_at: datetime | None,
        granted: bool,
        cause_key: str | None = None,
        invoice_at: datetime | None = None,
        expires_days: int | None = None,
    ) -> dict[str, Any]:
        """A grant made at ``at``, to be written by ``flush``; a paid one with its purchase invoice, issued at
        ``invoice_at`` (default ``at``), whose id ``flush`` sets in the returned row. ``expires_days`` (instead
        of ``expires_at``): the credits last that many days from when they are granted."""
        value = _value(wallet, self.entity(uow, customer["legal_entity_id"]), amount)
        row = _grant_row(wallet, amount, value, at, kind, source, expires_at, granted, cause_key, None, expires_days)
        self.codes[wallet["id"]] = wallet["currency"]
        if kind == "paid":
            item, draft = _purchase_draft(wallet, customer, amount, value, invoice_at or at)
            self.purchases.append((item, draft, row))
        else:
            self.grants.append(row)
        return row

    def flush(self, uow: UnitOfWork) -> None:
        if self.purchases:
            uow.insert_many(t.pending_items, [item for item, _draft, _row in self.purchases])
            drafts = [draft for _item, draft, _row in self.purchases]
            invoice_ids = write_invoices(uow, drafts, self.entities, {}, None)
            for (_item, _draft, row), invoice_id in zip(self.purchases, invoice_ids, strict=True):
                row["invoice_id"] = invoice_id
                self.grants.append(row)
        if self.grants:
            uow.insert_many(t.wallet_grants, self.grants)
            _record_granted(uow, [g for g in self.grants if g["status"] == "active"], self.codes)
        if self.moves:
            uow.conn.execute(_MOVE_SCHEDULE, self.moves)
        self.grants, self.moves, self.purchases = [], [], []


def _grant_occurrences(
    uow: UnitOfWork,
    schedule: Mapping[Any, Any],
    wallet: Mapping[Any, Any],
    customer: Mapping[Any, Any],
    as_of: datetime,
    granting: _Granting | None = None,
) -> int:
    """Grant the schedule's occurrences due by ``as_of``, each at its own time, and move the schedule on. A bought
    occurrence's purchase invoice is issued at ``as_of`` (the time of the run that makes it), as the bill run
    issues its invoices: a run that comes late does not back-date invoices. ``granting``: gather the
    occurrences and the move there, for the caller to write with others' (else written now)."""
    if wallet["status"] != "active":
        return 0  # a voided wallet's schedules are canceled with it
    every = Interval.parse(schedule["interval_unit"], schedule["interval_count"])
    due = due_occurrences(
        schedule["starts_on"],
        every,
        schedule["next_index"],
        schedule["ends_on"],
        customer["timezone"],
        schedule["created_at"],
        as_of,
    )
    if not due:
        return 0
    now = granting is None
    gather = _Granting() if granting is None else granting
    days = schedule["expires_days"]
    paid = schedule["paid"]
    for occurrence in due:
        gather.add(
            uow,
            wallet,
            customer,
            schedule["credits"],
            occurrence.at,
            "paid" if paid else "free",
            "recurring",
            None,
            not paid or schedule["grant_before_payment"],
            f"{RECURRING_CAUSE}{schedule['id']}:{occurrence.index}",
            invoice_at=as_of,  # issued when it is made: never back-dated into an invoice series
            expires_days=days or None,  # from when the credits are granted: at once, or when paid
        )
    next_index = due[-1].index + 1
    next_on = occurrence_on(schedule["starts_on"], every, next_index)
    ended = schedule["ends_on"] is not None and next_on >= schedule["ends_on"]
    gather.moves.append(
        {
            "b_id": schedule["id"],
            "b_from": schedule["next_index"],
            "b_next": next_index,
            "b_on": None if ended else next_on,
            "b_status": "ended" if ended else "active",
        }
    )
    if now:
        gather.flush(uow)
    return len(due)


def upcoming_grants(uow: UnitOfWork, customer_id: str, until: datetime) -> list[tuple[GrantBalance, Mapping[Any, Any]]]:
    """The credits the customer's recurring grants will have granted by ``until`` and not yet (free ones, and
    bought ones granted before payment; the others wait for a payment), as the balances they will start with,
    each with its wallet. For the upcoming-invoice preview: nothing is written."""
    r, w = t.wallet_recurring_grants.c, t.wallets.c
    rows = list(
        uow.conn.execute(
            select(t.wallet_recurring_grants, w.priority, w.rate, w.currency, w.top_up_threshold, w.applies_to)
            .join(t.wallets, w.id == r.wallet_id)
            .where(r.customer_id == customer_id, r.status == "active", w.status == "active")
            .where(or_(r.paid.is_(False), r.grant_before_payment.is_(True)))
        ).mappings()
    )
    if not rows:
        return []
    customer = uow.conn.execute(select(t.customers).where(t.customers.c.id == customer_id)).mappings().one()
    policy = _policy(uow, customer["legal_entity_id"])
    out: list[tuple[GrantBalance, Mapping[Any, Any]]] = []
    for row in rows:
        every = Interval.parse(row["interval_unit"], row["interval_count"])
        value = credits_value_minor(row["credits"], row["rate"], policy, currency(row["currency"]))
        days = row["expires_days"]
        for occurrence in due_occurrences(
            row["starts_on"], every, row["next_index"], row["ends_on"], customer["timezone"], row["created_at"], until
        ):
            grant = GrantBalance(
                f"upcoming:{row['id']}:{occurrence.index}",
                row["wallet_id"],
                row["priority"],
                occurrence.at,
                occurrence.at + timedelta(days=days) if days else None,
                row["credits"],
                value,
            )
            out.append((grant, row))
    return out


def next_occurrence(uow: UnitOfWork, customer_ids: list[str], after: datetime) -> datetime | None:
    """The earliest moment after ``after`` at which one of these customers' recurring grants falls due (a test
    clock stops there, as it stops at period boundaries)."""
    r, c = t.wallet_recurring_grants.c, t.customers.c
    best: datetime | None = None
    for row in uow.conn.execute(
        select(t.wallet_recurring_grants, c.timezone)
        .join(t.customers, c.id == r.customer_id)
        .where(r.customer_id.in_(customer_ids), r.status == "active")
    ).mappings():
        found = first_occurrence_after(
            row["starts_on"],
            Interval.parse(row["interval_unit"], row["interval_count"]),
            row["next_index"],
            row["ends_on"],
            row["timezone"],
            row["created_at"],
            after,
        )
        if found is not None and (best is None or found.at < best):
            best = found.at
    return best
