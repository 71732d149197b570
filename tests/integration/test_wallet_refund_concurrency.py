"""A refund of bought credits at the same time as an invoice that consumes them, on PostgreSQL: the customer's lock
puts one after the other, so the credits are never both refunded and consumed, and the ledger never goes
negative."""

import threading
import time
from datetime import UTC, datetime

import pytest

from remit.adapters.db import tables as t
from remit.adapters.db.engine import make_engine
from remit.bootstrap import Remit
from remit.domain.clock import FixedClock
from remit.domain.errors import Conflict
from remit.service_layer import clocks, credit_notes, invoices, subscriptions, wallets
from tests import builders as b

pytestmark = pytest.mark.postgres


def test_a_refund_waits_for_an_invoice_consuming_the_credits_and_sees_what_it_took(postgres_url):
    app = Remit(make_engine(postgres_url, pool_size=10), FixedClock(datetime(2026, 3, 1, tzinfo=UTC)))
    with app.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())
    b.seller(app, auto_finalize=False)
    b.plan(app, "basic", "40.00")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus)["id"]
    with app.uow() as uow:
        bought = wallets.grant(uow, wallet, "100", paid=True)
    with app.uow() as uow:  # the seller reviews drafts: the purchase is finalized by hand, then paid
        invoices.finalize(uow, bought["invoice_id"])
        invoices.mark_paid(uow, bought["invoice_id"])
        subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    (draft,) = [i for i in b.invoices_of(app, cus) if i["status"] == "draft"]

    holding = threading.Event()

    def finalize() -> object:
        with app.uow() as uow:
            uow.lock_customers([cus])  # as a bill run or a hand finalization holds the customer while it works
            holding.set()
            time.sleep(0.5)
            return invoices.finalize(uow, draft["id"])

    def refund() -> object:
        holding.wait()
        with app.uow() as uow:
            return credit_notes.issue_credit_note(uow, bought["invoice_id"], amount="70.00")

    done, errors = b.at_once(finalize, refund)

    # The refund waited for the finalization, then found only 60 credits unused: refused, nothing written.
    (error,) = errors
    assert isinstance(error, Conflict) and error.code == "credits_already_used", error
    assert "60.00 EUR" in error.message
    (used,) = [i for i in b.invoices_of(app, cus) if i["id"] == draft["id"]]
    with app.uow() as uow:
        wallets.check_ledger(uow, wallet)  # every grant's remains are its entries' sum, never negative
        balance = wallets.get_wallet(uow, wallet)["balance"]
    assert (used["applied_credits"], balance, len(done)) == ("40.00", "60.00", 1)
    app.engine.dispose()
