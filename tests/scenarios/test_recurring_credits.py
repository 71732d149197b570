"""Recurring grants on the test clock and the real one: credits given (or sold) every interval, each occurrence
granted once, at the start of its day, however late or often the bill run looks."""

import pytest
from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.domain.errors import Conflict, NotFound, ValidationError
from remit.service_layer import alerts, bill_run, clocks, invoices, subscriptions, usage, usage_monitor, views, wallets
from tests import builders as b


def _ledger(app, wallet_id):
    with app.uow() as uow:
        wallets.check_ledger(uow, wallet_id)
        return [(x["kind"], x["credits"], x["created_at"]) for x in wallets.list_transactions(uow, wallet_id, None)]


def _real_wallet(app, **kwargs):
    """A seller, a real-clock customer and a wallet of theirs; the wallet's id."""
    b.seller(app)
    cus = b.customer(app, None, **kwargs)
    with app.uow() as uow:
        return wallets.create_wallet(uow, cus)["id"]


def _schedule(app, wallet_id):
    with app.uow() as uow:
        (found,) = wallets.list_recurring_grants(uow, wallet_id)
    return found


def _grants(app, wallet_id):
    with app.uow() as uow:
        return wallets.get_wallet(uow, wallet_id, with_grants=True)["grants"]


def test_monthly__in_advance__calendar__monthly_credits_pay_each_invoice_and_what_is_left_expires(app):
    """20 credits on the 1st of every month, each grant expiring after 10 days; a 15.00 plan: every invoice is
    paid by that month's credits (granted before the invoice of the same moment), and the 5 left expire on the
    11th."""
    b.seller(app)
    b.plan(app, "basic", "15.00")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus, name="Monthly allowance")["id"]
    with app.uow() as uow:
        made = wallets.create_recurring_grant(uow, wallet, "20", interval="month", expires_days=10)
    assert (made["status"], made["starts_on"], made["next_grant_on"], made["grants_made"]) == (
        "active",
        "2026-03-01",
        "2026-04-01",
        1,  # it starts today: the first credits are granted at once
    )
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 6, 1))
    assert [(i["issued_on"], i["total"], i["applied_credits"], i["status"]) for i in b.invoices_of(app, cus)] == [
        ("2026-03-01", "15.00", "15.00", "paid"),
        ("2026-04-01", "15.00", "15.00", "paid"),
        ("2026-05-01", "15.00", "15.00", "paid"),
        ("2026-06-01", "15.00", "15.00", "paid"),
    ]
    assert _ledger(app, wallet) == [
        ("grant", "20", "2026-03-01T00:00:00Z"),
        ("consumption", "-15", "2026-03-01T00:00:00Z"),
        ("grant", "20", "2026-04-01T00:00:00Z"),  # the run of 1 April: grants first,
        ("expiry", "-5", "2026-03-11T00:00:00Z"),  # then expiry (dated when the credits expired),
        ("consumption", "-15", "2026-04-01T00:00:00Z"),  # then the invoice
        ("grant", "20", "2026-05-01T00:00:00Z"),
        ("expiry", "-5", "2026-04-11T00:00:00Z"),
        ("consumption", "-15", "2026-05-01T00:00:00Z"),
        ("grant", "20", "2026-06-01T00:00:00Z"),
        ("expiry", "-5", "2026-05-11T00:00:00Z"),
        ("consumption", "-15", "2026-06-01T00:00:00Z"),
    ]
    grants = _grants(app, wallet)
    assert {(g["source"], g["kind"], g["recurring_grant_id"]) for g in grants} == {("recurring", "free", made["id"])}
    assert [g["expires_at"] for g in grants] == [f"2026-0{m}-11T00:00:00Z" for m in (3, 4, 5, 6)]
    assert (_schedule(app, wallet)["grants_made"], _schedule(app, wallet)["next_grant_on"]) == (4, "2026-07-01")
    with app.uow() as uow:
        granted = [e["data"]["grant_id"] for e in views.list_events(uow, None, type_="wallet.credits_granted")]
        created = views.list_events(uow, None, type_="wallet.recurring_grant_created")
    assert granted == [g["id"] for g in grants]
    assert created[0]["data"]["interval"] == "month" and created[0]["data"]["recurring_grant_id"] == made["id"]


def test_bought_every_month__an_invoice_per_occurrence__credits_granted_when_each_is_paid(app):
    """A schedule that starts later and sells its credits: one purchase invoice per occurrence, issued on the
    occurrence's day even when the run that makes it comes later; credits only for the invoices paid."""
    b.seller(app)
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus, rate="0.5")["id"]
    with app.uow() as uow:
        made = wallets.create_recurring_grant(uow, wallet, "60", starts_on=b.utc(2026, 3, 15).date(), paid=True)
    assert (made["grants_made"], made["next_grant_on"]) == (0, "2026-03-15")
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 20))
    bought = b.invoices_of(app, cus)
    assert [(i["billing_reason"], i["issued_on"], i["total"], i["status"]) for i in bought] == [
        ("wallet_purchase", "2026-03-15", "30.00", "open"),
        ("wallet_purchase", "2026-04-15", "30.00", "open"),
        ("wallet_purchase", "2026-05-15", "30.00", "open"),
    ]
    with app.uow() as uow:
        shown = wallets.get_wallet(uow, wallet)
    assert (shown["balance_credits"], shown["pending_credits"]) == ("0", "180")
    with app.uow() as uow:
        invoices.mark_paid(uow, bought[1]["id"])
    with app.uow() as uow:
        shown = wallets.get_wallet(uow, wallet)
    assert (shown["balance_credits"], shown["balance"], shown["pending_credits"]) == ("60", "30.00", "120")
    assert [g["status"] for g in _grants(app, wallet)] == ["pending", "active", "pending"]
    _ledger(app, wallet)


def test_real_clock__late_and_repeated_runs_grant_each_occurrence_once_at_its_own_time(app):
    """Weekly from Monday 5 January to 2 February (excluded), for a customer in New York: a run on the 20th
    grants the three occurrences due, each at 05:00 UTC (midnight in New York); running again grants nothing;
    a run after the end grants the last and ends the schedule."""
    wallet = _real_wallet(app, timezone="America/New_York")
    with app.uow() as uow:
        made = wallets.create_recurring_grant(
            uow,
            wallet,
            "5",
            interval="week",
            starts_on=b.utc(2026, 1, 5).date(),
            ends_on=b.utc(2026, 2, 2).date(),
        )
    assert made["grants_made"] == 0
    assert wallets.grant_recurring(app.uow, b.utc(2026, 1, 20)) == 3
    assert wallets.grant_recurring(app.uow, b.utc(2026, 1, 20)) == 0
    assert [g["granted_at"] for g in _grants(app, wallet)] == [
        "2026-01-05T05:00:00Z",
        "2026-01-12T05:00:00Z",
        "2026-01-19T05:00:00Z",
    ]
    bill_run.run(app.uow, b.utc(2026, 3, 1))  # the bill run grants what is due first
    bill_run.run(app.uow, b.utc(2026, 3, 1))
    assert [g["granted_at"] for g in _grants(app, wallet)][3:] == ["2026-01-26T05:00:00Z"]
    shown = _schedule(app, wallet)
    assert (shown["status"], shown["grants_made"], shown["next_grant_on"]) == ("ended", 4, None)
    with app.uow() as uow:
        assert wallets.get_wallet(uow, wallet)["balance_credits"] == "20"


def test_real_clock__cancel_grants_what_is_due_then_stops(app):
    wallet = _real_wallet(app)
    with app.uow() as uow:
        made = wallets.create_recurring_grant(uow, wallet, "1", interval="day", starts_on=b.utc(2026, 1, 2).date())
    app.clock.move_to(b.utc(2026, 1, 3, 12))  # no bill run since: 2 and 3 January are due
    with app.uow() as uow:
        canceled = wallets.cancel_recurring_grant(uow, wallet, made["id"])
    assert (canceled["status"], canceled["grants_made"], canceled["next_grant_on"], canceled["canceled_at"]) == (
        "canceled",
        2,
        None,
        "2026-01-03T12:00:00Z",
    )
    app.clock.move_to(b.utc(2026, 1, 10))
    bill_run.run(app.uow, b.utc(2026, 1, 10))
    assert len(_grants(app, wallet)) == 2
    with app.uow() as uow, pytest.raises(Conflict) as ended:
        wallets.cancel_recurring_grant(uow, wallet, made["id"])
    assert ended.value.code == "recurring_grant_ended"


def test_voiding_the_wallet_cancels_its_recurring_grants(app):
    wallet = _real_wallet(app)
    with app.uow() as uow:
        wallets.create_recurring_grant(uow, wallet, "10", starts_on=b.utc(2026, 2, 1).date())
    with app.uow() as uow:
        wallets.void_wallet(uow, wallet)
    bill_run.run(app.uow, b.utc(2026, 6, 1))
    shown = _schedule(app, wallet)
    assert (shown["status"], shown["grants_made"], shown["canceled_at"]) == ("canceled", 0, "2026-01-01T00:00:00Z")
    assert _grants(app, wallet) == []


@pytest.mark.parametrize(
    ("kwargs", "code", "field"),
    [
        ({"credits": "0"}, "invalid_amount", "credits"),
        ({"credits": "0.001", "rate": "0.001"}, "amount_too_small", "credits"),
        ({"interval": "fortnight"}, "invalid_interval", "interval"),
        ({"interval_count": 0}, "invalid_interval", "interval_count"),
        ({"starts_on": (2025, 12, 31)}, "start_in_past", "starts_on"),
        ({"starts_on": (2026, 2, 1), "ends_on": (2026, 2, 1)}, "dates_out_of_order", "ends_on"),
        ({"expires_days": 0}, "invalid_expiry", "expires_days"),
        ({"grant_before_payment": True}, "invalid_choice", "grant_before_payment"),
    ],
)
def test_bad_schedules_are_refused_and_change_nothing(app, kwargs, code, field):
    kwargs = dict(kwargs)  # shared by both databases' runs
    b.seller(app)
    cus = b.customer(app, None)
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus, rate=kwargs.pop("rate", "1"))["id"]
    args = {"credits": kwargs.pop("credits", "10"), **kwargs}
    for name in ("starts_on", "ends_on"):
        if name in args:
            args[name] = b.utc(*args[name]).date()
    before = _counts(app)
    with app.uow() as uow, pytest.raises(ValidationError) as refused:
        wallets.create_recurring_grant(uow, wallet, args.pop("credits"), **args)
    assert (refused.value.code, refused.value.field) == (code, field)
    assert _counts(app) == before


def test_conflicts_and_unknown_ids(app):
    wallet = _real_wallet(app)
    for _ in range(wallets.MAX_RECURRING_GRANTS_PER_WALLET):
        with app.uow() as uow:
            wallets.create_recurring_grant(uow, wallet, "1", starts_on=b.utc(2026, 2, 1).date())
    before = _counts(app)
    with app.uow() as uow, pytest.raises(Conflict) as full:
        wallets.create_recurring_grant(uow, wallet, "1")
    assert full.value.code == "too_many_recurring_grants"
    with app.uow() as uow, pytest.raises(NotFound):
        wallets.cancel_recurring_grant(uow, wallet, "wrg_nope")
    with app.uow() as uow, pytest.raises(NotFound):
        wallets.create_recurring_grant(uow, "wal_nope", "1")
    with app.uow() as uow:
        wallets.void_wallet(uow, wallet)
    with app.uow() as uow, pytest.raises(Conflict) as voided:
        wallets.create_recurring_grant(uow, wallet, "1")
    assert voided.value.code == "wallet_voided"
    assert _counts(app)["wallet_recurring_grants"] == before["wallet_recurring_grants"]


def _counts(app):
    with app.engine.connect() as conn:
        return {
            tb.name: conn.execute(select(func.count()).select_from(tb)).scalar_one() for tb in t.metadata.sorted_tables
        }


def test_monthly__in_advance__calendar__the_upcoming_invoice_counts_the_credits_due_by_then(app):
    """The preview of 1 April's invoice counts the 20 credits a free schedule gives on 1 April, not those a
    bought one gives (granted when paid); and the invoice of 1 April takes what the preview said."""
    b.seller(app)
    b.plan(app, "basic", "30.00")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus)["id"]
    with app.uow() as uow:
        april = b.utc(2026, 4, 1).date()
        wallets.create_recurring_grant(uow, wallet, "20", starts_on=april, expires_days=5)
        wallets.create_recurring_grant(uow, wallet, "50", starts_on=april, paid=True)
        subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    with app.uow(read_only=True) as uow:
        preview = clocks.preview_upcoming(uow, cus)
    assert [preview[k] for k in ("total_minor", "applied_credits_minor", "amount_due_minor")] == [3000, 2000, 1000]
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    cycle = [i for i in b.invoices_of(app, cus) if i["billing_reason"] == "subscription_cycle"]
    assert [(i["issued_on"], i["applied_credits"], i["amount_due"]) for i in cycle] == [
        ("2026-03-01", "0.00", "30.00"),
        ("2026-04-01", "20.00", "10.00"),  # as the preview said
    ]


def test_real_clock__changes_apply_to_the_occurrences_to_come(app):
    """Weekly 10 credits from 5 January; on 13 January (5 and 12 due, no run since) the credits become 25 and an
    end day is set: the two due are granted at 10 first, the next ones at 25 with the new expiry, up to the end."""
    wallet = _real_wallet(app)
    with app.uow() as uow:
        made = wallets.create_recurring_grant(uow, wallet, "10", interval="week", starts_on=b.utc(2026, 1, 5).date())
    app.clock.move_to(b.utc(2026, 1, 13, 9))
    before = _counts(app)
    for changes, code in (
        ({"ends_on": b.utc(2026, 1, 12).date()}, "dates_out_of_order"),  # 12 January is granted (now, first)
        ({"expires_days": 0}, "invalid_expiry"),
        ({"credits": "-1"}, "invalid_amount"),
        ({"interval": "day"}, "unknown_field"),
    ):
        with app.uow() as uow, pytest.raises(ValidationError) as refused:
            wallets.update_recurring_grant(uow, wallet, made["id"], changes)
        assert refused.value.code == code
    assert _counts(app) == before  # nothing of a refused change is done, not even the grants that were due
    with app.uow() as uow:
        changed = wallets.update_recurring_grant(
            uow, wallet, made["id"], {"credits": "25", "ends_on": b.utc(2026, 2, 1).date(), "expires_days": 30}
        )
    assert (changed["credits"], changed["grants_made"], changed["next_grant_on"], changed["ends_on"]) == (
        "25",
        2,
        "2026-01-19",
        "2026-02-01",
    )
    bill_run.run(app.uow, b.utc(2026, 3, 1))
    grants = _grants(app, wallet)
    assert [(g["credits"], g["granted_at"][:10], g["expires_at"]) for g in grants] == [
        ("10", "2026-01-05", None),
        ("10", "2026-01-12", None),
        ("25", "2026-01-19", "2026-02-18T00:00:00Z"),
        ("25", "2026-01-26", "2026-02-25T00:00:00Z"),
    ]
    assert _schedule(app, wallet)["status"] == "ended"
    with app.uow() as uow:
        events = views.list_events(uow, None, type_="wallet.recurring_grant_updated")
    assert events[0]["data"] == {
        "recurring_grant_id": made["id"],
        "credits": "25",
        "ends_on": "2026-02-01",
        "expires_days": 30,
    }


def test_an_end_day_on_or_before_the_next_occurrence_ends_the_schedule(app):
    wallet = _real_wallet(app)
    with app.uow() as uow:
        made = wallets.create_recurring_grant(uow, wallet, "10")  # 1 January, at once
    with app.uow() as uow:
        ended = wallets.update_recurring_grant(uow, wallet, made["id"], {"ends_on": b.utc(2026, 1, 20).date()})
    assert (ended["status"], ended["next_grant_on"], ended["grants_made"]) == ("ended", None, 1)
    with app.uow() as uow, pytest.raises(Conflict):
        wallets.update_recurring_grant(uow, wallet, made["id"], {"ends_on": None})


def test_real_clock__a_late_run_issues_the_purchase_invoice_when_it_runs_never_back_dated(app):
    """Credits bought on the 1st of each month; the bill run only runs on 10 February: the grant is dated
    1 February (when it fell due), its purchase invoice is issued on 10 February (invoice series stay in date
    order)."""
    wallet = _real_wallet(app)
    with app.uow() as uow:
        wallets.create_recurring_grant(uow, wallet, "5", starts_on=b.utc(2026, 2, 1).date(), paid=True)
    app.clock.move_to(b.utc(2026, 2, 10, 8))
    bill_run.run(app.uow, b.utc(2026, 2, 10, 8))
    (bought,) = _grants(app, wallet)
    assert (bought["created_at"], bought["status"]) == ("2026-02-01T00:00:00Z", "pending")
    with app.uow() as uow:
        invoice = invoices.get_invoice(uow, bought["invoice_id"])
    assert (invoice["issued_on"].isoformat(), invoice["billing_reason"]) == ("2026-02-10", "wallet_purchase")


def test_real_clock__credits_due_pay_a_threshold_invoice_made_before_the_next_bill_run(app):
    """30 credits every month from 2 January; usage reaches the 20.00 threshold on 2 January at 10:00, before any
    bill run that day: the usage monitor grants what is due first, so the credits pay the threshold invoice."""
    b.seller(app)
    b.usage_plan(app)
    (cus,) = b.subscribed_customers(app, 1, "api")
    with app.uow() as uow:
        sub = uow.conn.execute(select(t.subscriptions.c.id).where(t.subscriptions.c.customer_id == cus)).scalar_one()
        alerts.set_usage_threshold(uow, sub, "20.00")
        wallet = wallets.create_wallet(uow, cus)["id"]
    with app.uow() as uow:
        wallets.create_recurring_grant(uow, wallet, "30", starts_on=b.utc(2026, 1, 2).date())
    app.clock.move_to(b.utc(2026, 1, 2, 10))
    with app.uow() as uow:
        event = {"customer_id": cus, "code": "calls", "transaction_id": "t1", "properties": {"n": 2500}}
        assert usage.ingest(uow, [{**event, "timestamp": b.utc(2026, 1, 2, 9).isoformat()}]).accepted
    assert len(usage_monitor.evaluate(app.uow).invoice_ids) == 1
    (threshold,) = [i for i in b.invoices_of(app, cus) if i["billing_reason"] == "threshold"]
    assert (threshold["total"], threshold["applied_credits"], threshold["amount_due"]) == ("25.00", "25.00", "0.00")
    assert [g["granted_at"] for g in _grants(app, wallet)] == ["2026-01-02T00:00:00Z"]


def test_real_clock__one_run_sells_the_occurrences_of_many_customers_each_grant_with_its_own_invoice(app):
    """Three customers buy credits on the 1st of each month (the first two granted before payment); a run on
    10 March makes February's and March's occurrences of all three at once: six purchase invoices, numbered
    without gaps, each linked to its grant; the credits granted before payment are in the ledger, the others wait
    for their invoice to be paid."""
    b.seller(app)
    made = []
    for i, credits in enumerate(("5", "7", "9")):
        cus = b.customer(app, None)
        with app.uow() as uow:
            wallet = wallets.create_wallet(uow, cus)["id"]
        with app.uow() as uow:
            wallets.create_recurring_grant(
                uow, wallet, credits, starts_on=b.utc(2026, 2, 1).date(), paid=True, grant_before_payment=i < 2
            )
        made.append((cus, wallet, credits))
    app.clock.move_to(b.utc(2026, 3, 10, 8))
    bill_run.run(app.uow, b.utc(2026, 3, 10, 8))

    numbers = []
    for i, (cus, wallet, credits) in enumerate(made):
        grants = _grants(app, wallet)
        assert [(g["created_at"], g["credits"]) for g in grants] == [
            ("2026-02-01T00:00:00Z", credits),
            ("2026-03-01T00:00:00Z", credits),
        ]
        assert {g["status"] for g in grants} == ({"active"} if i < 2 else {"pending"})
        with app.uow() as uow:
            bought = [invoices.get_invoice(uow, g["invoice_id"]) for g in grants]
        assert {(inv["customer_id"], inv["billing_reason"], inv["total_minor"]) for inv in bought} == {
            (cus, "wallet_purchase", int(credits) * 100)
        }
        numbers += [inv["number"] for inv in bought]
        ledger = _ledger(app, wallet)
        assert ledger == (
            [("grant", credits, "2026-02-01T00:00:00Z"), ("grant", credits, "2026-03-01T00:00:00Z")] if i < 2 else []
        )
    assert sorted(numbers) == [f"INV-2026-{n:06d}" for n in range(1, 7)]
    with app.uow() as uow:
        granted = views.list_events(uow, None, type_="wallet.credits_granted")
    assert len(granted) == 4
    last_wallet = made[2][1]
    for g in _grants(app, last_wallet):
        with app.uow() as uow:
            invoices.mark_paid(uow, g["invoice_id"])
    assert [x[0] for x in _ledger(app, last_wallet)] == ["grant", "grant"]


def test_bought_credits_that_last_some_days_count_them_from_the_payment(app):
    """Recurring credits sold on the 1st, lasting 5 days: paid on the 10th, they are good until the 15th (counted
    from the occurrence, they would be bought already expired)."""
    b.seller(app)
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus)["id"]
    with app.uow() as uow:
        wallets.create_recurring_grant(uow, wallet, "20", interval="month", paid=True, expires_days=5)
    (waiting,) = _grants(app, wallet)
    assert (waiting["status"], waiting["expires_at"], waiting["expires_days"]) == ("pending", None, 5)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    (purchase,) = b.invoices_of(app, cus)
    with app.uow() as uow:
        invoices.mark_paid(uow, purchase["id"])
    (granted,) = _grants(app, wallet)
    assert (granted["granted_at"], granted["expires_at"], granted["expires_days"]) == (
        "2026-03-10T00:00:00Z",
        "2026-03-15T00:00:00Z",
        None,
    )
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 16))
    assert [(kind, credits) for kind, credits, _at in _ledger(app, wallet)] == [("grant", "20"), ("expiry", "-20")]
