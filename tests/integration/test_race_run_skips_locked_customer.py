"""A bill run while an API request (here a wallet grant) holds the customer's lock: the customer is due and must
be billed by that run, or recorded as one it could not bill; not silently passed over with status 'done'."""

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.service_layer import bill_run, clocks, subscriptions, wallets
from tests import builders as b

pytestmark = pytest.mark.postgres


def _app(postgres_url, clock_at=None):
    app = b.emptied_postgres(postgres_url, datetime(2026, 3, 1, tzinfo=UTC), pool_size=10)
    b.plan(app, "basic", "10.00")
    clock_id = b.clock(app, clock_at) if clock_at else None
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        wallet = wallets.create_wallet(uow, cus)["id"]
        subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    return app, cus, wallet, clock_id


def _hold_with_grant(app, wallet, holding):
    def grant():
        with app.uow() as uow:
            wallets.grant(uow, wallet, "5")  # locks the customer
            holding.set()
            time.sleep(1.5)  # the request is still working (or waiting on the network) when the run comes

    return grant


@pytest.mark.parametrize("rep", range(1))
def test_a_real_bill_run_waits_for_a_customer_an_api_request_holds_and_bills_it(postgres_url, rep):
    app, cus, wallet, _ = _app(postgres_url)
    app.clock.move_to(datetime(2026, 4, 1, 0, 5, tzinfo=UTC))
    holding = threading.Event()
    th = threading.Thread(target=_hold_with_grant(app, wallet, holding))
    th.start()
    holding.wait(10)
    result = bill_run.run(app.uow, datetime(2026, 4, 1, 0, 5, tzinfo=UTC))
    th.join()
    with app.engine.connect() as conn:
        status, failed = conn.execute(
            select(t.bill_runs.c.status, t.bill_runs.c.customers_failed).where(t.bill_runs.c.id == result.id)
        ).one()
        failures = conn.execute(select(func.count()).select_from(t.bill_run_failures)).scalar_one()
    billed = [ln for ln in b.lines_of(app, cus) if ln[1] == "2026-04-01"]
    assert billed or failures or result.failures, (status, result.customers_seen, result.invoices_created, failed)
    app.engine.dispose()


@pytest.mark.parametrize("rep", range(1))
def test_a_test_clock_advance_waits_for_a_customer_an_api_request_holds_and_bills_it(postgres_url, rep):
    app, cus, wallet, clock_id = _app(postgres_url, datetime(2026, 3, 1, tzinfo=UTC))
    clocks.advance(app.uow, clock_id, datetime(2026, 3, 2, tzinfo=UTC))  # March billed
    holding = threading.Event()
    th = threading.Thread(target=_hold_with_grant(app, wallet, holding))
    th.start()
    holding.wait(10)
    out = clocks.advance(app.uow, clock_id, datetime(2026, 4, 1, 12, tzinfo=UTC))
    th.join()
    billed = [ln for ln in b.lines_of(app, cus) if ln[1] == "2026-04-01"]
    assert billed or out["customers_failed"], (out, b.lines_of(app, cus))
    app.engine.dispose()
