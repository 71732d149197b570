"""Refunding bought credits, on both databases: a credit note on the invoice that sold them takes back unused
credits of the same value, so the customer never keeps both the credits and the money; credits already used,
expired or voided are not bought back, and a purchase not paid yet is canceled by voiding its invoice."""

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.domain.errors import Conflict
from remit.service_layer import clocks, credit_notes, invoices, subscriptions, views, wallets
from tests import builders as b


def _customer(app):
    """A seller with a 30.00 monthly plan, and a customer on a test clock at 2026-03-01."""
    b.seller(app)
    b.plan(app, "basic", "30.00")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    return clock_id, b.customer(app, clock_id)


def _ledger(app, wallet_id):
    with app.uow() as uow:
        wallets.check_ledger(uow, wallet_id)
        return [(x["kind"], x["credits"], x["amount"]) for x in wallets.list_transactions(uow, wallet_id, None)]


def _bought(app, cus, credits, *, rate="1", pay=True, **kwargs):
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus, rate=rate)["id"]
    with app.uow() as uow:
        grant = wallets.grant(uow, wallet, credits, paid=True, **kwargs)
    if pay:
        with app.uow() as uow:
            invoices.mark_paid(uow, grant["invoice_id"])
    return wallet, grant


def _written(app):
    with app.uow() as uow:
        return [
            uow.conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (t.credit_notes, t.wallet_transactions, t.balance_transactions, t.events)
        ]


def _refused(app, invoice_id, code, **kwargs):
    before = _written(app)
    with pytest.raises(Conflict) as refused, app.uow() as uow:
        credit_notes.issue_credit_note(uow, invoice_id, **kwargs)
    assert refused.value.code == code
    assert _written(app) == before  # nothing written: no credit note, no ledger entry, no event
    return refused.value


def test_a_credit_note_on_a_paid_purchase_takes_back_the_unused_credits_and_only_those(app):
    """100 credits bought for 100.00 and paid; an invoice of 30.00 uses 30. Crediting the whole purchase is
    refused (30 were used); crediting 70.00 takes the 70 left, and the 70.00 become customer balance."""
    clock_id, cus = _customer(app)
    wallet, grant = _bought(app, cus, "100")
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    assert [i["applied_credits"] for i in b.invoices_of(app, cus) if i["billing_reason"] != "wallet_purchase"] == [
        "30.00"
    ]

    error = _refused(app, grant["invoice_id"], "credits_already_used")
    assert error.field == "amount" and "70.00 EUR" in error.message
    _refused(app, grant["invoice_id"], "credits_already_used", amount="70.01")

    with app.uow() as uow:
        note = credit_notes.issue_credit_note(uow, grant["invoice_id"], amount="70.00", reason="order_change")
    assert (note["amount_minor"], note["to_balance_minor"], note["to_wallets_minor"]) == (7000, 7000, 0)
    assert note["number"].endswith("000001")  # the refused attempts used no number
    assert _ledger(app, wallet) == [
        ("grant", "100", "100.00"),
        ("consumption", "-30", "-30.00"),
        ("refund", "-70", "-70.00"),
    ]
    with app.uow() as uow:
        assert wallets.get_wallet(uow, wallet)["balance"] == "0.00"
        assert invoices.customer_balance(uow, cus) == 7000
        (event,) = views.list_events(uow, None, type_="wallet.credits_refunded")
    assert event["data"] == {
        "grant_id": grant["id"],
        "credits": "70",
        "amount_minor": 7000,
        "currency": "EUR",
        "invoice_id": grant["invoice_id"],
        "credit_note_id": note["id"],
    }
    _refused(app, grant["invoice_id"], "credits_already_used", amount="0.01")  # nothing unused is left


def test_refunds_split_credits_exactly_and_credits_given_back_can_be_refunded(app):
    """10 credits at 3.00 each (30.00); refunding 10.00 takes 3.333333333 credits, the next 10.00 3.333333334:
    credits and money always sum back to the grant. Credits an invoice used, given back by a credit note on that
    invoice, are unused again."""
    clock_id, cus = _customer(app)
    wallet, grant = _bought(app, cus, "10", rate="3")
    for _ in range(2):
        with app.uow() as uow:
            credit_notes.issue_credit_note(uow, grant["invoice_id"], amount="10.00")
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    (used,) = [i for i in b.invoices_of(app, cus) if i["billing_reason"] != "wallet_purchase"]
    assert (used["applied_credits"], used["applied_balance"]) == ("10.00", "20.00")  # the refunds' money
    with app.uow() as uow:  # the used credits' part of that invoice credited: they go back to their grant
        back = credit_notes.issue_credit_note(uow, used["id"], amount="10.00")
    assert (back["to_wallets_minor"], back["to_balance_minor"]) == (1000, 0)
    with app.uow() as uow:
        credit_notes.issue_credit_note(uow, grant["invoice_id"], amount="10.00")
    ledger = _ledger(app, wallet)
    assert [(k, c) for k, c, _ in ledger] == [
        ("grant", "10"),
        ("refund", "-3.333333333"),
        ("refund", "-3.333333334"),
        ("consumption", "-3.333333333"),
        ("restore", "3.333333333"),
        ("refund", "-3.333333333"),
    ]
    assert sum(Decimal(c) for _, c, _ in ledger) == 0
    with app.uow() as uow:
        assert invoices.customer_balance(uow, cus) == 1000  # 20.00 of the first refunds paid the invoice


def test_a_purchase_not_paid_yet_is_canceled_by_voiding_not_credited(app):
    _clock, cus = _customer(app)
    wallet, grant = _bought(app, cus, "50", pay=False)
    error = _refused(app, grant["invoice_id"], "purchase_not_granted")
    assert error.field == "invoice_id" and "void the invoice" in error.message
    with app.uow() as uow:
        invoices.void(uow, grant["invoice_id"])
        (found,) = wallets.get_wallet(uow, wallet, with_grants=True)["grants"]
    assert found["status"] == "voided" and _ledger(app, wallet) == []


def test_credits_granted_before_payment_are_taken_back_and_what_is_due_goes_down(app):
    _clock, cus = _customer(app)
    wallet, grant = _bought(app, cus, "50", pay=False, grant_before_payment=True)
    with app.uow() as uow:
        note = credit_notes.issue_credit_note(uow, grant["invoice_id"], amount="20.00")
        inv = invoices.get_invoice(uow, grant["invoice_id"])
    assert (note["to_balance_minor"], inv["amount_due_minor"], inv["status"]) == (0, 3000, "open")
    assert _ledger(app, wallet) == [("grant", "50", "50.00"), ("refund", "-20", "-20.00")]


def test_expired_or_voided_credits_are_not_bought_back(app):
    clock_id, cus = _customer(app)
    wallet, grant = _bought(app, cus, "20", expires_at=b.utc(2026, 3, 10))
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 11))
    error = _refused(app, grant["invoice_id"], "credits_already_used", amount="1.00")
    assert "0.00 EUR" in error.message
    other, bought = _bought(app, cus, "20")
    with app.uow() as uow:
        wallets.void_wallet(uow, other)
    _refused(app, bought["invoice_id"], "credits_already_used", amount="1.00")


def test_credits_past_their_time_are_not_bought_back_before_a_run_expires_them(app):
    """A real-clock customer: expiry is written by the next bill run; until then the credits pay nothing, and
    are not refunded either."""
    b.seller(app)
    cus = b.customer(app, None)
    wallet, grant = _bought(app, cus, "50", expires_at=b.utc(2026, 1, 10))
    app.clock.move_to(b.utc(2026, 1, 10))  # exactly at the expiry; no run has written it yet
    error = _refused(app, grant["invoice_id"], "credits_already_used", amount="1.00")
    assert "0.00 EUR" in error.message
    assert _ledger(app, wallet) == [("grant", "50", "50.00")]


def test_a_purchase_canceled_before_it_was_granted_and_paid_anyway_is_credited_in_full(app):
    """Voiding the wallet cancels a purchase not paid yet (its invoice stays open). If the customer pays it all
    the same, no credits were ever delivered: a credit note gives the whole payment back as balance."""
    _clock, cus = _customer(app)
    wallet, grant = _bought(app, cus, "50", pay=False)
    with app.uow() as uow:
        wallets.void_wallet(uow, wallet)
    with app.uow() as uow:
        invoices.mark_paid(uow, grant["invoice_id"])
    with app.uow() as uow:
        note = credit_notes.issue_credit_note(uow, grant["invoice_id"])
    assert note["to_balance_minor"] == 5000
    assert _ledger(app, wallet) == []  # nothing granted, nothing taken back
