"""Two credit notes on the same open invoice at once (4.00 then 6.00 of a 10.00 invoice): together they credit it
whole, so it ends paid with nothing due and credited 10.00, as when they are issued one after the other."""

import threading
import time
from datetime import UTC, datetime

import pytest

from remit.service_layer import bill_run, credit_notes
from tests import builders as b

pytestmark = pytest.mark.postgres


def _app(postgres_url):
    app = b.emptied_postgres(postgres_url, datetime(2026, 3, 1, tzinfo=UTC), pool_size=10)
    b.plan(app, "basic", "10.00")
    (cus,) = b.subscribed_customers(app, 1, "basic")
    bill_run.run(app.uow, datetime(2026, 3, 1, 1, tzinfo=UTC))
    (inv,) = b.invoices_of(app, cus)
    assert (inv["status"], inv["amount_due"]) == ("open", "10.00")
    return app, cus, inv["id"]


def test_control_one_after_the_other(postgres_url):
    app, cus, inv = _app(postgres_url)
    for amount in ("4.00", "6.00"):
        with app.uow() as uow:
            credit_notes.issue_credit_note(uow, inv, amount=amount)
    (got,) = b.invoices_of(app, cus)
    assert (got["status"], got["amount_due"], got["credited"]) == ("paid", "0.00", "10.00")
    app.engine.dispose()


@pytest.mark.parametrize("rep", range(1))
def test_two_credit_notes_at_once(postgres_url, rep):
    app, cus, inv = _app(postgres_url)
    holding = threading.Event()

    def first():
        with app.uow() as uow:
            credit_notes.issue_credit_note(uow, inv, amount="4.00")
            holding.set()
            time.sleep(0.5)

    def second():
        holding.wait(10)
        with app.uow() as uow:
            return credit_notes.issue_credit_note(uow, inv, amount="6.00")

    done, errors = b.at_once(first, second)
    assert errors == []
    (got,) = b.invoices_of(app, cus)
    assert (got["status"], got["amount_due"], got["credited"]) == ("paid", "0.00", "10.00")
    app.engine.dispose()
