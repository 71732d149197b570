"""Prepaid credits on the test clock: monthly invoices consume them in order, and what is left expires."""

from remit.service_layer import clocks, credit_notes, invoices, subscriptions, views, wallets
from tests import builders as b


def _world(app, amount="30.00", start=(2026, 3, 1)):
    b.seller(app)
    b.plan(app, "basic", amount)
    clock_id = b.clock(app, b.utc(*start))
    cus = b.customer(app, clock_id)
    return clock_id, cus


def _subscribe(app, cus):
    with app.uow() as uow:
        return subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")


def _summary(inv):
    return tuple(inv[k] for k in ("issued_on", "status", "total", "applied_credits", "amount_due"))


def _ledger(app, wallet_id):
    with app.uow() as uow:
        wallets.check_ledger(uow, wallet_id)
        return [
            (x["kind"], x["credits"], x["amount"], x["created_at"])
            for x in wallets.list_transactions(uow, wallet_id, None)
        ]


def _events(app, type_):
    with app.uow() as uow:
        return [e["data"] for e in views.list_events(uow, None, type_=type_)]


def test_monthly__in_advance__calendar__credits_consumed_by_priority_then_expiry_and_the_rest_expires(app):
    """Promo (priority 1, 1 credit = 0.30) pays first; then the prepaid wallet's grant that expires first; what
    is left of that grant expires on 15 May; the grant without expiry pays June and part of July."""
    clock_id, cus = _world(app)
    with app.uow() as uow:
        promo = wallets.create_wallet(uow, cus, name="Promo", priority=1, rate="0.3")["id"]
        prepaid = wallets.create_wallet(uow, cus, name="Prepaid", priority=2)["id"]
    with app.uow() as uow:
        wallets.grant(uow, promo, "60")  # 18.00
        expiring = wallets.grant(uow, prepaid, "100", expires_at=b.utc(2026, 5, 15))["id"]
        wallets.grant(uow, prepaid, "40", paid=True, grant_before_payment=True)  # bought: its invoice comes first
    _subscribe(app, cus)
    clocks.advance(app.uow, clock_id, b.utc(2026, 7, 1))
    assert [_summary(i) for i in b.invoices_of(app, cus)] == [
        ("2026-03-01", "open", "40.00", "0.00", "40.00"),  # the purchase: paid with money only
        ("2026-03-01", "paid", "30.00", "30.00", "0.00"),  # promo 18.00 + 12.00 of the expiring grant
        ("2026-04-01", "paid", "30.00", "30.00", "0.00"),
        ("2026-05-01", "paid", "30.00", "30.00", "0.00"),
        ("2026-06-01", "paid", "30.00", "30.00", "0.00"),  # 28.00 expired on 15 May: the 40 bought pay
        ("2026-07-01", "open", "30.00", "10.00", "20.00"),
    ]
    march = b.invoices_of(app, cus)[1]["id"]
    assert _ledger(app, promo) == [
        ("grant", "60", "18.00", "2026-03-01T00:00:00Z"),
        ("consumption", "-60", "-18.00", "2026-03-01T00:00:00Z"),
    ]
    ledger = _ledger(app, prepaid)
    assert [(k, c, a) for k, c, a, _ in ledger] == [
        ("grant", "100", "100.00"),
        ("grant", "40", "40.00"),
        ("consumption", "-12", "-12.00"),
        ("consumption", "-30", "-30.00"),
        ("consumption", "-30", "-30.00"),
        ("expiry", "-28", "-28.00"),
        ("consumption", "-30", "-30.00"),
        ("consumption", "-10", "-10.00"),
    ]
    assert ledger[5][3] == "2026-05-15T00:00:00Z"
    assert _events(app, "wallet.credits_expired") == [
        {"grant_id": expiring, "credits": "28", "amount_minor": 2800, "currency": "EUR"}
    ]
    consumed = _events(app, "wallet.credits_consumed")
    assert [(e["invoice_id"] == march, e["credits"], e["amount_minor"]) for e in consumed[:2]] == [
        (True, "60", 1800),
        (True, "12", 1200),
    ]
    with app.uow() as uow:
        assert wallets.get_wallet(uow, prepaid)["balance"] == "0.00"
        assert wallets.get_wallet(uow, promo)["balance_credits"] == "0"
    # Advancing again expires nothing twice and consumes nothing twice.
    clocks.advance(app.uow, clock_id, b.utc(2026, 7, 2))
    assert len(_ledger(app, prepaid)) == 8


def test_monthly__in_advance__calendar__customer_balance_first_then_credits(app):
    """A credit note's balance is applied before wallet credits (documented order)."""
    clock_id, cus = _world(app)
    _subscribe(app, cus)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    first = b.invoices_of(app, cus)[0]["id"]
    with app.uow() as uow:
        invoices.mark_paid(uow, first)
    with app.uow() as uow:
        credit_notes.issue_credit_note(uow, first, amount="10.00")
        wallet = wallets.create_wallet(uow, cus)["id"]
    with app.uow() as uow:
        wallets.grant(uow, wallet, "50")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    april = b.invoices_of(app, cus)[-1]
    assert (april["applied_balance"], april["applied_credits"], april["amount_due"], april["status"]) == (
        "10.00",
        "20.00",
        "0.00",
        "paid",
    )


def test_monthly__in_advance__calendar__top_up_once_per_crossing_granted_when_paid(app):
    clock_id, cus = _world(app)
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus, top_up_threshold="25", top_up_credits="50", top_up_expires_days=90)[
            "id"
        ]
    with app.uow() as uow:
        wallets.grant(uow, wallet, "70")
    _subscribe(app, cus)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    # March: 70 -> 40 (no top-up). April: 40 -> 10, under 25: one purchase of 50 credits.
    rows = b.invoices_of(app, cus)
    assert [(i["billing_reason"], i["total"], i["applied_credits"], i["status"]) for i in rows] == [
        ("subscription_cycle", "30.00", "30.00", "paid"),
        ("subscription_cycle", "30.00", "30.00", "paid"),
        ("wallet_purchase", "50.00", "0.00", "open"),
    ]
    with app.uow() as uow:
        waiting = wallets.get_wallet(uow, wallet, with_grants=True)["grants"][-1]
    assert (waiting["status"], waiting["expires_at"], waiting["expires_days"]) == ("pending", None, 90)
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    rows = b.invoices_of(app, cus)
    # May consumed the 10 left; the top-up is still unpaid, so no second purchase.
    assert [(i["billing_reason"], i["amount_due"]) for i in rows[3:]] == [("subscription_cycle", "20.00")]
    with app.uow() as uow:
        invoices.mark_paid(uow, rows[2]["id"])
    with app.uow() as uow:
        shown = wallets.get_wallet(uow, wallet)
    assert (shown["balance_credits"], shown["pending_credits"]) == ("50", "0")
    with app.uow() as uow:
        top_up = wallets.get_wallet(uow, wallet, with_grants=True)["grants"][-1]
    assert (top_up["source"], top_up["expires_at"], top_up["granted_at"]) == (
        "top_up",
        "2026-07-30T00:00:00Z",  # 90 days after they were paid for and granted (not after the crossing invoice)
        "2026-05-01T00:00:00Z",
    )
    assert len(_events(app, "wallet.topped_up")) == 1
    _ledger(app, wallet)


def test_monthly__in_advance__calendar__the_upcoming_invoice_shows_what_the_credits_will_pay(app):
    """The preview consumes credits as finalizing will (nothing written); a customer without any pays it all.
    Whether to read wallets at all comes from the bill run's loader, which asks per customer."""
    clock_id, cus = _world(app)
    other = b.customer(app, clock_id)
    with app.uow() as uow:
        prepaid = wallets.create_wallet(uow, cus, name="Prepaid")["id"]
        wallets.grant(uow, prepaid, "50")
    _subscribe(app, cus)
    _subscribe(app, other)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    assert [_summary(i)[3:] for i in b.invoices_of(app, cus)] == [("30.00", "0.00")]  # March: 20.00 left
    with app.uow(read_only=True) as uow:
        with_credits = clocks.preview_upcoming(uow, cus)
        without = clocks.preview_upcoming(uow, other)
    assert [with_credits[k] for k in ("total_minor", "applied_credits_minor", "amount_due_minor")] == [3000, 2000, 1000]
    assert [without[k] for k in ("total_minor", "applied_credits_minor", "amount_due_minor")] == [3000, 0, 3000]
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert _summary(b.invoices_of(app, cus)[-1])[2:] == ("30.00", "20.00", "10.00")  # as the preview said


def test_monthly__in_advance__calendar__low_balance_and_depletion_announced_once_per_crossing(app):
    """70 credits, low under 25, 30.00 a month: April leaves 10 (low), May takes the 10 left (depleted); a new
    grant re-arms both: June leaves 20 (low again). A promo wallet whose credits expire is depleted by expiry."""
    clock_id, cus = _world(app)
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus, low_balance_threshold="25")["id"]
        promo = wallets.create_wallet(uow, cus, name="Promo", priority=2)["id"]
    with app.uow() as uow:
        wallets.grant(uow, wallet, "70")
        wallets.grant(uow, promo, "5", expires_at=b.utc(2026, 3, 1, 12))
    _subscribe(app, cus)
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    with app.uow() as uow:
        wallets.grant(uow, wallet, "50")
    clocks.advance(app.uow, clock_id, b.utc(2026, 6, 1))
    invoices_ = b.invoices_of(app, cus)
    low = [
        (e["invoice_id"] in {i["id"] for i in invoices_}, e["balance_credits"], e["threshold"])
        for e in _events(app, "wallet.balance_low")
    ]
    assert low == [(True, "10", "25"), (True, "20", "25")]
    depleted = _events(app, "wallet.depleted")
    assert [sorted(d) for d in depleted] == [["balance_credits", "reason"], ["balance_credits", "invoice_id"]]
    assert depleted[0]["reason"] == "expired" and depleted[1]["invoice_id"] == invoices_[2]["id"]  # May's
    with app.uow() as uow:
        shown = wallets.update_wallet(uow, wallet, {"low_balance_threshold": None})
    assert shown["low_balance_threshold"] is None
