"""Ledger entries that take credits back: expiry, voids, and what a voided invoice gives back; and the check
that every grant's balance is the sum of its ledger entries.

Expiry runs at the start of every bill run (and so at every step of a test clock's advance), for the real
customers or one test clock's, in one transaction; it is dated when the credits expired. A second run finds
nothing to do: it only looks at active grants with something left, and the ledger's unique (grant, "expire") key
would refuse a second entry anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, or_, select, update

from remit.adapters.db import tables as t
from remit.domain.errors import Conflict
from remit.domain.wallets import split_credits
from remit.service_layer.unit_of_work import UnitOfWork
from remit.service_layer.views import money, plain
from remit.service_layer.wallet_consumption import balance_events, in_ids, ledger_row


def invoice_voided(uow: UnitOfWork, invoice_id: str, at: datetime) -> None:
    """An invoice was voided. Credits it consumed go back to their grants (and expire again at once if their grant
    has expired or was voided meanwhile); credits it sold are not granted, or are voided if already granted."""
    give_back(uow, invoice_id, None, f"restore:{invoice_id}", at)
    g = t.wallet_grants.c
    for row in uow.conn.execute(select(t.wallet_grants).where(g.invoice_id == invoice_id)).mappings():
        if row["status"] == "pending":
            uow.conn.execute(update(t.wallet_grants).where(g.id == row["id"]).values(status="voided"))
        elif row["status"] == "active":
            void_grant(uow, row, at, "invoice_voided")


def refund_purchase(uow: UnitOfWork, invoice_id: str, amount_minor: int, note_id: str, at: datetime) -> None:
    """A credit note of ``amount_minor`` on an invoice that sold credits: it takes back unused credits of the
    same value from their grant (a ``refund`` entry), so that the customer does not keep both the credits and the
    money. Refused, before anything is written, when the credits are not granted yet (the purchase is not paid:
    voiding the invoice cancels it) or when less than that is unused (used, expired or voided credits were
    delivered; they are not bought back). Under the customer's lock, as consumption and expiry are: the credit
    note took it when it read the invoice."""
    g = t.wallet_grants.c
    row = uow.conn.execute(select(t.wallet_grants).where(g.invoice_id == invoice_id)).mappings().first()
    if row is None:
        return
    if row["status"] == "pending":
        raise Conflict(
            "purchase_not_granted",
            "The credits this invoice sells are not granted yet (it is not paid): void the invoice to cancel the "
            "purchase instead.",
            "invoice_id",
        )
    if row["granted_at"] is None:  # canceled before it was granted (its wallet was voided): nothing to take back
        return
    usable = row["status"] == "active" and (row["expires_at"] is None or row["expires_at"] > at)
    unused = row["remaining_minor"] if usable else 0  # credits past their time are not bought back, expired or not
    if amount_minor > unused:
        code = uow.conn.execute(select(t.wallets.c.currency).where(t.wallets.c.id == row["wallet_id"])).scalar_one()
        raise Conflict(
            "credits_already_used",
            f"Only unused credits can be credited back: {money(unused, code)} {code} of these credits are unused; "
            "the rest was used, expired or voided.",
            "amount",
        )
    credits = split_credits(row["remaining_credits"], row["remaining_minor"], amount_minor)
    uow.insert_many(
        t.wallet_transactions,
        [ledger_row(row, "refund", f"refund:{note_id}", -credits, -amount_minor, invoice_id, at)],
    )
    uow.conn.execute(
        update(t.wallet_grants)
        .where(g.id == row["id"])
        .values(remaining_credits=row["remaining_credits"] - credits, remaining_minor=unused - amount_minor)
    )
    uow.emit(
        "wallet.credits_refunded",
        "wallet",
        row["wallet_id"],
        {
            "grant_id": row["id"],
            "credits": plain(credits),
            "amount_minor": amount_minor,
            "currency": _currency_of(uow, row["wallet_id"]),
            "invoice_id": invoice_id,
            "credit_note_id": note_id,
        },
        row["customer_id"],
        at=at,
    )


def invoice_deleted(uow: UnitOfWork, invoice_id: str, at: datetime) -> None:
    """A draft purchase invoice was deleted: its credits will never be granted, and what is left of those granted
    before payment is voided (a ``void`` entry, as when the invoice is voided)."""
    g = t.wallet_grants.c
    for row in uow.conn.execute(select(t.wallet_grants).where(g.invoice_id == invoice_id)).mappings().all():
        if row["status"] == "active":
            void_grant(uow, row, at, "invoice_deleted")
    uow.conn.execute(update(t.wallet_grants).where(g.invoice_id == invoice_id).values(status="voided", invoice_id=None))


def give_back(uow: UnitOfWork, invoice_id: str, amount_minor: int | None, cause: str, at: datetime) -> int:
    """Return to their grants up to ``amount_minor`` (None: all) of the credits an invoice consumed and that have
    not come back yet, the latest consumption first. ``cause`` keys the entries (``restore:<invoice>`` for a void,
    ``restore:<credit note>`` for a credit note). Returns the money given back."""
    x = t.wallet_transactions.c
    entries = list(
        uow.conn.execute(
            select(x.grant_id, x.credits, x.amount_minor)
            .where(x.invoice_id == invoice_id, x.kind.in_(("consumption", "restore")))
            .order_by(x.seq)
        ).all()
    )
    open_: dict[str, list[Any]] = {}  # grant -> [credits, minor] consumed and not given back, in consumption order
    for grant_id, credits, minor in entries:
        acc = open_.setdefault(grant_id, [Decimal(0), 0])
        acc[0] -= credits
        acc[1] -= minor
    left = amount_minor
    given = 0
    for grant_id, (credits, minor) in reversed(list(open_.items())):
        if minor <= 0 or left == 0:
            continue
        take = minor if left is None else min(left, minor)
        part = split_credits(credits, minor, take)
        _restore_one(uow, grant_id, part, take, invoice_id, cause, at)
        given += take
        left = None if left is None else left - take
    return given


def _restore_one(
    uow: UnitOfWork, grant_id: str, credits: Decimal, minor: int, invoice_id: str, cause: str, at: datetime
) -> None:
    g = t.wallet_grants.c
    grant_row = uow.conn.execute(select(t.wallet_grants).where(g.id == grant_id)).mappings().one()
    rows = [ledger_row(grant_row, "restore", cause, credits, minor, invoice_id, at)]
    expires_at = grant_row["expires_at"]
    if grant_row["status"] != "active":  # the grant is gone: what comes back goes again, the ledger says why
        kind = "void" if grant_row["status"] == "voided" else "expiry"
        rows.append(ledger_row(grant_row, kind, f"{kind}:{cause}", -credits, -minor, invoice_id, at))
    elif expires_at is not None and expires_at <= at:  # its time is up: it expires now, with what came back
        all_credits, all_minor = grant_row["remaining_credits"] + credits, grant_row["remaining_minor"] + minor
        rows.append(ledger_row(grant_row, "expiry", "expire", -all_credits, -all_minor, None, at))
        uow.conn.execute(
            update(t.wallet_grants)
            .where(g.id == grant_id)
            .values(status="expired", remaining_credits=Decimal(0), remaining_minor=0)
        )
        _emit_expired(uow, grant_row, all_credits, all_minor, at)
    else:
        uow.conn.execute(
            update(t.wallet_grants)
            .where(g.id == grant_id)
            .values(
                remaining_credits=grant_row["remaining_credits"] + credits,
                remaining_minor=grant_row["remaining_minor"] + minor,
            )
        )
    uow.insert_many(t.wallet_transactions, rows)
    uow.emit(
        "wallet.credits_restored",
        "wallet",
        grant_row["wallet_id"],
        {
            "grant_id": grant_id,
            "invoice_id": invoice_id,
            "credits": plain(credits),
            "amount_minor": minor,
            "currency": _currency_of(uow, grant_row["wallet_id"]),
        },
        grant_row["customer_id"],
        at=at,
    )


def void_grant(uow: UnitOfWork, row: Mapping[Any, Any], at: datetime, reason: str) -> None:
    g = t.wallet_grants.c
    if row["remaining_minor"] or row["remaining_credits"]:
        uow.insert_many(
            t.wallet_transactions,
            [ledger_row(row, "void", "void", -row["remaining_credits"], -row["remaining_minor"], None, at)],
        )
        uow.emit(
            "wallet.credits_voided",
            "wallet",
            row["wallet_id"],
            {
                "grant_id": row["id"],
                "credits": plain(row["remaining_credits"]),
                "amount_minor": row["remaining_minor"],
                "currency": _currency_of(uow, row["wallet_id"]),
                "reason": reason,
            },
            row["customer_id"],
            at=at,
        )
    uow.conn.execute(
        update(t.wallet_grants)
        .where(g.id == row["id"])
        .values(status="voided", remaining_credits=Decimal(0), remaining_minor=0)
    )


# --- expiry ------------------------------------------------------------------------------------------------------


def expire_credits(make_uow: Callable[[], UnitOfWork], as_of: datetime, *, test_clock_id: str | None = None) -> int:
    """Expire what remains of every grant whose time is up by ``as_of``, for real customers or one test clock's,
    in one transaction. Returns the number of grants expired; a second run finds nothing to do."""
    with make_uow() as uow:
        return expire_due(uow, as_of, test_clock_id)


def _due_for_expiry(as_of: datetime, test_clock_id: str | None, customer_ids: Sequence[str] | None = None) -> Any:
    g, c = t.wallet_grants.c, t.customers.c
    clock = (c.test_clock_id == test_clock_id) if test_clock_id else c.test_clock_id.is_(None)
    query = (
        select(t.wallet_grants)
        .join(t.customers, c.id == g.customer_id)
        .where(g.status == "active", g.expires_at <= as_of, g.remaining_minor > 0, clock)
    )
    if customer_ids is not None:
        query = query.where(g.customer_id.in_(customer_ids))
    return query.order_by(g.customer_id, g.expires_at, g.id)


def customers_with_expiry_due(uow: UnitOfWork, as_of: datetime, test_clock_id: str | None = None) -> set[str]:
    """The customers holding credits whose time is up by ``as_of``."""
    due = _due_for_expiry(as_of, test_clock_id).order_by(None).subquery()
    return set(uow.conn.execute(select(due.c.customer_id).distinct()).scalars())


def expire_due(
    uow: UnitOfWork, as_of: datetime, test_clock_id: str | None = None, among: Sequence[str] | None = None
) -> int:
    """``expire_credits`` in this unit of work; ``among``: only these customers."""
    query = _due_for_expiry(as_of, test_clock_id, among)
    customer_ids = sorted({r["customer_id"] for r in uow.conn.execute(query).mappings()})
    if not customer_ids:
        return 0
    uow.lock_customers(customer_ids)  # then read again: a finalization may have consumed some meanwhile
    due = list(uow.conn.execute(_due_for_expiry(as_of, test_clock_id, customer_ids)).mappings())
    if not due:
        return 0
    # Set-wise: one statement per table for all the grants, however many customers the batch holds.
    wallet_ids = sorted({row["wallet_id"] for row in due})
    w = t.wallets.c
    wallets = {
        row["id"]: row
        for row in uow.conn.execute(
            select(w.id, w.currency, w.low_balance_threshold).where(in_ids(uow, w.id, wallet_ids))
        ).mappings()
    }
    uow.insert_many(
        t.wallet_transactions,
        [
            ledger_row(r, "expiry", "expire", -r["remaining_credits"], -r["remaining_minor"], None, r["expires_at"])
            for r in due
        ],
    )
    g = t.wallet_grants.c
    uow.conn.execute(
        update(t.wallet_grants)
        .where(g.id == bindparam("b_id"))
        .values(status="expired", remaining_credits=Decimal(0), remaining_minor=0),
        [{"b_id": row["id"]} for row in due],
    )
    for row in due:
        code = wallets[row["wallet_id"]]["currency"]
        _emit_expired(uow, row, row["remaining_credits"], row["remaining_minor"], row["expires_at"], code)
    _announce_balances(uow, due, as_of, wallets)
    return len(due)


def _announce_balances(
    uow: UnitOfWork, expired: Sequence[Mapping[Any, Any]], as_of: datetime, wallets: Mapping[str, Mapping[Any, Any]]
) -> None:
    """A low or empty balance that expiry left (``balance_events``), per wallet, at its last expiry."""
    per_wallet: dict[str, tuple[Decimal, datetime, str]] = {}
    for row in expired:
        credits, at, _customer = per_wallet.get(row["wallet_id"], (Decimal(0), row["expires_at"], ""))
        per_wallet[row["wallet_id"]] = (
            credits + row["remaining_credits"],
            max(at, row["expires_at"]),
            row["customer_id"],
        )
    g = t.wallet_grants.c
    left: dict[str, Decimal] = {}
    for wallet_id, remaining in uow.conn.execute(
        select(g.wallet_id, g.remaining_credits).where(
            in_ids(uow, g.wallet_id, sorted(per_wallet)),
            g.status == "active",
            g.remaining_minor > 0,
            or_(g.expires_at.is_(None), g.expires_at > as_of),
        )
    ):
        left[wallet_id] = left.get(wallet_id, Decimal(0)) + remaining
    for wallet_id, (credits, at, customer_id) in per_wallet.items():
        after = left.get(wallet_id, Decimal(0))
        low = wallets[wallet_id]["low_balance_threshold"]
        for event in balance_events(wallet_id, customer_id, after + credits, after, low, {"reason": "expired"}, at):
            uow.emit(*event[:5], at=event[5])


def _emit_expired(
    uow: UnitOfWork,
    grant_row: Mapping[Any, Any],
    credits: Decimal,
    minor: int,
    at: datetime,
    code: str | None = None,
) -> None:
    """``wallet.credits_expired``; ``code``: the wallet's currency, if the caller has it."""
    if code is None:
        code = _currency_of(uow, grant_row["wallet_id"])
    uow.emit(
        "wallet.credits_expired",
        "wallet",
        grant_row["wallet_id"],
        {"grant_id": grant_row["id"], "credits": plain(credits), "amount_minor": minor, "currency": code},
        grant_row["customer_id"],
        at=at,
    )


def _currency_of(uow: UnitOfWork, wallet_id: str) -> str:
    """The wallet's currency: every wallet event with an ``amount_minor`` names it (minor units mean nothing
    without it)."""
    return str(uow.conn.execute(select(t.wallets.c.currency).where(t.wallets.c.id == wallet_id)).scalar_one())


def check_ledger(uow: UnitOfWork, wallet_id: str) -> None:
    """Every grant's remaining credits and money are the sum of its ledger entries, never negative, and nothing
    unless the grant is active (the balance counts active grants only)."""
    x, g = t.wallet_transactions.c, t.wallet_grants.c
    sums: dict[str, tuple[Decimal, int]] = {}
    for grant_id, credits, minor in uow.conn.execute(
        select(x.grant_id, x.credits, x.amount_minor).where(x.wallet_id == wallet_id)
    ).all():
        c, m = sums.get(grant_id, (Decimal(0), 0))
        sums[grant_id] = (c + credits, m + minor)
    for row in uow.conn.execute(select(t.wallet_grants).where(g.wallet_id == wallet_id)).mappings():
        credits, minor = sums.get(row["id"], (Decimal(0), 0))
        assert (credits, minor) == (row["remaining_credits"], row["remaining_minor"]), (row["id"], credits, minor)
        assert row["remaining_credits"] >= 0 and row["remaining_minor"] >= 0, row["id"]
        assert row["status"] == "active" or (credits, minor) == (Decimal(0), 0), (
            row["id"],
            row["status"],
            credits,
            minor,
        )
