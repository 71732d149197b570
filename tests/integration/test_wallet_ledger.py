"""Wallets on both databases: finalizing by hand, voiding invoices that used credits, drafts of purchases,
expiry that runs twice, and the ledger's unique keys."""

from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from remit.adapters.db import tables as t
from remit.domain.errors import Conflict
from remit.service_layer import bill_run, clocks, invoices, subscriptions, views, wallets
from remit.service_layer.wallet_consumption import ledger_row
from tests import builders as b


def _setup(app, *, auto_finalize=True):
    b.seller(app, auto_finalize=auto_finalize)
    b.plan(app, "basic", "30.00")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    return clock_id, cus


def _ledger(app, wallet_id):
    with app.uow() as uow:
        wallets.check_ledger(uow, wallet_id)
        return [(x["kind"], x["amount"]) for x in wallets.list_transactions(uow, wallet_id, None)]


def _balance(app, wallet_id):
    with app.uow() as uow:
        return wallets.get_wallet(uow, wallet_id)["balance"]


def test_a_draft_finalized_by_hand_consumes_credits_and_voiding_it_gives_them_back(app):
    clock_id, cus = _setup(app, auto_finalize=False)
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus)["id"]
    with app.uow() as uow:
        wallets.grant(uow, wallet, "20")
        subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    draft = b.invoices_of(app, cus)[0]
    assert (draft["status"], draft["applied_credits"]) == ("draft", "0.00")
    with app.uow() as uow:
        final = invoices.finalize(uow, draft["id"])
    assert (final["applied_credits_minor"], final["amount_due_minor"], final["status"]) == (2000, 1000, "open")
    assert _balance(app, wallet) == "0.00"
    with app.uow() as uow:
        invoices.void(uow, draft["id"])
    assert _ledger(app, wallet) == [("grant", "20.00"), ("consumption", "-20.00"), ("restore", "20.00")]
    assert _balance(app, wallet) == "20.00"
    with app.uow() as uow:
        (restored,) = [e["data"] for e in views.list_events(uow, None, type_="wallet.credits_restored")]
    # like every wallet event with an amount_minor, it names the currency that amount is in
    assert (restored["invoice_id"], restored["amount_minor"], restored["currency"]) == (draft["id"], 2000, "EUR")


def test_voiding_after_the_grant_expired_restores_and_expires_again(app):
    clock_id, cus = _setup(app)
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus)["id"]
    with app.uow() as uow:
        wallets.grant(uow, wallet, "50", expires_at=b.utc(2026, 3, 10))
        subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 20))
    march = b.invoices_of(app, cus)[0]
    assert (march["applied_credits"], march["status"]) == ("30.00", "paid")
    # A paid invoice cannot be voided; credit it with a credit note instead. An open one can:
    with app.uow() as uow:
        wallet2 = wallets.create_wallet(uow, cus, name="Second")["id"]
    with app.uow() as uow:
        wallets.grant(uow, wallet2, "10", expires_at=b.utc(2026, 4, 10))
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 20))
    april = b.invoices_of(app, cus)[1]
    assert (april["applied_credits"], april["amount_due"]) == ("10.00", "20.00")
    with app.uow() as uow:
        invoices.void(uow, april["id"])
    assert _ledger(app, wallet) == [("grant", "50.00"), ("consumption", "-30.00"), ("expiry", "-20.00")]
    assert _ledger(app, wallet2) == [
        ("grant", "10.00"),
        ("consumption", "-10.00"),
        ("restore", "10.00"),
        ("expiry", "-10.00"),  # the grant expired on 10 April: what came back is gone again
    ]
    assert _balance(app, wallet2) == "0.00"


def test_a_purchase_draft_deleted_or_voided_grants_nothing_and_a_voided_wallet_ignores_payment(app):
    _clock, cus = _setup(app, auto_finalize=False)
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus)["id"]
    with app.uow() as uow:
        deleted = wallets.grant(uow, wallet, "10", paid=True)
        voided = wallets.grant(uow, wallet, "20", paid=True)
        ignored = wallets.grant(uow, wallet, "30", paid=True)
    with pytest.raises(Conflict) as refused, app.uow() as uow:
        invoices.add_draft_line(uow, deleted["invoice_id"], "Extra", Decimal(1), Decimal(1))
    assert refused.value.code == "invoice_sells_credits"
    with app.uow() as uow:
        invoices.delete_draft(uow, deleted["invoice_id"])
        invoices.finalize(uow, voided["invoice_id"])
        invoices.finalize(uow, ignored["invoice_id"])
    with app.uow() as uow:
        invoices.void(uow, voided["invoice_id"])
        wallets.void_wallet(uow, wallet)
    with app.uow() as uow:
        invoices.mark_paid(uow, ignored["invoice_id"])
        shown = wallets.get_wallet(uow, wallet, with_grants=True)
    assert sorted(g["status"] for g in shown["grants"]) == ["voided", "voided", "voided"]
    assert (shown["balance"], shown["pending_credits"]) == ("0.00", "0")
    assert _ledger(app, wallet) == []


def test_deleting_a_draft_purchase_granted_before_payment_voids_what_is_left_in_the_ledger(app):
    """The credits were granted at once: deleting the purchase's draft voids the rest with a
    ledger entry and an event, so that the balance is still the sum of the ledger."""
    _clock, cus = _setup(app, auto_finalize=False)
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus)["id"]
    with app.uow() as uow:
        bought = wallets.grant(uow, wallet, "50", paid=True, grant_before_payment=True)
    with app.uow() as uow:
        invoices.delete_draft(uow, bought["invoice_id"])
        shown = wallets.get_wallet(uow, wallet, with_grants=True)
    assert [(g["status"], g["remaining"]) for g in shown["grants"]] == [("voided", "0.00")]
    assert shown["balance"] == "0.00"
    assert [(kind, amount) for kind, amount, *_ in _ledger(app, wallet)] == [("grant", "50.00"), ("void", "-50.00")]
    with app.uow() as uow:
        (voided,) = [e["data"] for e in views.list_events(uow, None, type_="wallet.credits_voided")]
    assert (voided["amount_minor"], voided["currency"], voided["reason"]) == (5000, "EUR", "invoice_deleted")


def test_purchase_invoices_are_paid_with_money_not_with_the_customer_balance(app):
    _clock, cus = _setup(app)
    with app.uow() as uow:
        uow.insert_many(
            t.balance_transactions,
            [
                {
                    "id": "cbtxn_test",
                    "customer_id": cus,
                    "currency": "EUR",
                    "amount_minor": 5000,
                    "kind": "credit_note",
                    "invoice_id": None,
                    "credit_note_id": None,
                    "created_at": uow.now,
                }
            ],
        )
        wallet = wallets.create_wallet(uow, cus)["id"]
    with app.uow() as uow:
        bought = wallets.grant(uow, wallet, "10", paid=True)
        inv = invoices.get_invoice(uow, bought["invoice_id"])
    assert (inv["applied_balance_minor"], inv["amount_due_minor"], inv["status"]) == (0, 1000, "open")


def test_expiry_twice_expires_once_and_the_ledger_refuses_a_second_consumption(app):
    _clock, cus = _setup(app)
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus)["id"]
    with app.uow() as uow:
        grant = wallets.grant(uow, wallet, "5", expires_at=b.utc(2026, 3, 5))
    clock_id = b.clock(app, b.utc(2026, 1, 1))  # another clock's run touches nothing of this customer
    assert wallets.expire_credits(app.uow, b.utc(2026, 4, 1), test_clock_id=clock_id) == 0
    customer_clock = _customer_clock(app, cus)
    assert wallets.expire_credits(app.uow, b.utc(2026, 3, 4), test_clock_id=customer_clock) == 0
    assert bill_run.run(app.uow, b.utc(2026, 3, 6), test_clock_id=customer_clock).invoices_created == 0
    assert wallets.expire_credits(app.uow, b.utc(2026, 3, 6), test_clock_id=customer_clock) == 0
    assert _ledger(app, wallet) == [("grant", "5.00"), ("expiry", "-5.00")]
    row = {"id": grant["id"], "wallet_id": wallet, "customer_id": cus}
    with pytest.raises(IntegrityError), app.uow() as uow:
        uow.insert_many(
            t.wallet_transactions,
            [ledger_row(row, "expiry", "expire", -1, -100, None, b.utc(2026, 3, 6))],
        )
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.wallet_transactions)).scalar_one() == 2


def _customer_clock(app, cus):
    with app.engine.connect() as conn:
        return conn.execute(select(t.customers.c.test_clock_id).where(t.customers.c.id == cus)).scalar_one()


def test_a_voided_wallet_takes_no_credits_and_pays_nothing(app):
    clock_id, cus = _setup(app)
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus)["id"]
    with app.uow() as uow:
        wallets.grant(uow, wallet, "100")
    with app.uow() as uow:
        wallets.void_wallet(uow, wallet)
    with pytest.raises(Conflict), app.uow() as uow:
        wallets.grant(uow, wallet, "1")
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    assert b.invoices_of(app, cus)[0]["applied_credits"] == "0.00"
    assert _ledger(app, wallet) == [("grant", "100.00"), ("void", "-100.00")]


def test_two_invoices_finalized_at_once_never_spend_the_same_credits_twice(app):
    """Both finalizations lock the customer first: the second sees what the first consumed."""

    from remit.service_layer import credit_notes

    b.seller(app, auto_finalize=False)
    cus = b.customer(app, None)
    drafts = []
    for _ in range(2):
        with app.uow() as uow:
            credit_notes.add_one_off(uow, cus, description="Work", unit_amount="30.00")
        drafts += bill_run.run(app.uow, b.utc(2026, 1, 1)).invoice_ids
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus)["id"]
    with app.uow() as uow:
        wallets.grant(uow, wallet, "40")

    def finalize(invoice_id):
        with app.uow() as uow:
            invoices.finalize(uow, invoice_id)

    _results, errors = b.at_once(*[lambda d=d: finalize(d) for d in drafts])
    assert errors == []
    applied = sorted(i["applied_credits"] for i in b.invoices_of(app, cus))
    assert applied == ["10.00", "30.00"]
    assert _ledger(app, wallet) == [("grant", "40.00"), ("consumption", "-30.00"), ("consumption", "-10.00")]


def test_a_credit_note_gives_credits_back_to_the_wallets_before_money_to_the_balance(app):
    """30.00 invoice: 27.00 paid by credits (two wallets), 3.00 due. A credit note of 10.00 takes the 3.00 off what
    is due and gives 7.00 back to the wallet consumed last; a second of 20.00 gives back the rest of both."""
    from remit.service_layer import credit_notes

    clock_id, cus = _setup(app)
    with app.uow() as uow:
        first = wallets.create_wallet(uow, cus, name="First", priority=1)["id"]
        second = wallets.create_wallet(uow, cus, name="Second", priority=2, rate="0.3")["id"]
    with app.uow() as uow:
        wallets.grant(uow, first, "12")
        wallets.grant(uow, second, "50")  # 15.00
        subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    inv = b.invoices_of(app, cus)[0]
    assert (inv["applied_credits"], inv["amount_due"]) == ("27.00", "3.00")
    with app.uow() as uow:
        note = credit_notes.issue_credit_note(uow, inv["id"], amount="10.00")
    assert (note["to_wallets_minor"], note["to_balance_minor"]) == (700, 0)
    with app.uow() as uow:
        last = credit_notes.issue_credit_note(uow, inv["id"], amount="20.00")
    assert (last["to_wallets_minor"], last["to_balance_minor"]) == (2000, 0)
    assert _ledger(app, second) == [
        ("grant", "15.00"),
        ("consumption", "-15.00"),
        ("restore", "7.00"),
        ("restore", "8.00"),
    ]
    assert _ledger(app, first) == [("grant", "12.00"), ("consumption", "-12.00"), ("restore", "12.00")]
    with app.uow() as uow:
        x = t.wallet_transactions.c
        back = list(
            uow.conn.execute(
                select(x.credits).where(x.wallet_id == second, x.kind == "restore").order_by(x.seq)
            ).scalars()
        )
    assert back == [Decimal("23.333333333"), Decimal("26.666666667")]  # 7.00 and 8.00 at 0.30; 50 in all
    assert _balance(app, first) == "12.00" and _balance(app, second) == "15.00"
    with app.uow() as uow:
        assert invoices.customer_balance(uow, cus) == 0


def test_top_ups_bought_together_are_one_per_wallet_and_cause_each_with_its_own_invoice(app):
    """``top_up_many`` (a bill run's batch): one purchase per wallet even if two of its invoices crossed the
    threshold, none for a cause already bought or while one is unpaid, none for a wallet without top-up terms;
    the purchase invoices numbered without gaps."""
    b.seller(app)
    made = []
    for terms in ({"top_up_threshold": "5", "top_up_credits": "20"},) * 3 + ({},):
        cus = b.customer(app, None)
        with app.uow() as uow:
            made.append(wallets.create_wallet(uow, cus, **terms)["id"])
    at = b.utc(2026, 1, 1, 12)
    with app.uow() as uow:
        first = wallets.top_up_many(uow, [(made[0], "in_a", at)])  # already bought before the batch
    wanted = [(made[0], "in_a", at), (made[1], "in_b", at), (made[1], "in_c", at), (made[2], "in_d", at)]
    wanted.append((made[3], "in_e", at))  # no top-up terms
    with app.uow() as uow:
        bought = wallets.top_up_many(uow, wanted)
    assert len(first) == 1 and len(bought) == 2  # made[1] once (in_c waits for in_b's to be paid), made[2] once
    with app.uow() as uow:
        grants = {w: wallets.get_wallet(uow, w, with_grants=True)["grants"] for w in made}
        events = views.list_events(uow, None, type_="wallet.topped_up")
        numbers = sorted(invoices.get_invoice(uow, g["invoice_id"])["number"] for gs in grants.values() for g in gs)
    assert [len(grants[w]) for w in made] == [1, 1, 1, 0]
    assert {g["status"] for gs in grants.values() for g in gs} == {"pending"}
    assert sorted(e["data"]["grant_id"] for e in events) == sorted(first + bought)
    assert numbers == [f"INV-2026-{n:06d}" for n in range(1, 4)]
