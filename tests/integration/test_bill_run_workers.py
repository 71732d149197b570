"""A bill run in several worker processes (PostgreSQL) bills what one process would: each customer once, numbers
gapless, every batch reported; on SQLite the same call bills the batches one after the other."""

from datetime import UTC, datetime

from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.service_layer import bill_run
from tests import builders as b

AS_OF = datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_a_bill_run_in_worker_processes_bills_each_customer_once_with_gapless_numbers(app, monkeypatch):
    b.seller(app)
    b.plan(app, "basic", "10.00")
    customers = 23
    b.subscribed_customers(app, customers, "basic")
    reported: list[int] = []
    in_processes = []
    real = bill_run._bill_in_processes
    monkeypatch.setattr(bill_run, "_bill_in_processes", lambda *a: in_processes.append(1) or real(*a))

    result = bill_run.run(app.uow, AS_OF, batch_size=5, workers=2, progress=reported.append)

    assert (result.customers_seen, result.invoices_created) == (customers, customers)
    assert sorted(reported) == [3, 5, 5, 5, 5]
    assert in_processes == ([1] if app.engine.dialect.name == "postgresql" else [])
    with app.engine.connect() as conn:
        rows = conn.execute(select(t.invoices.c.id, t.invoices.c.number, t.invoices.c.bill_run_id)).all()
        assert conn.execute(select(func.count()).select_from(t.invoice_lines)).scalar_one() == customers
        run_row = conn.execute(select(t.bill_runs).where(t.bill_runs.c.id == result.id)).mappings().one()
    assert sorted(r.id for r in rows) == sorted(result.invoice_ids)
    assert {r.bill_run_id for r in rows} == {result.id}
    assert sorted(r.number for r in rows) == [f"INV-2026-{i:06d}" for i in range(1, customers + 1)]
    assert (run_row["status"], run_row["customers_seen"], run_row["invoices_created"]) == ("done", 23, 23)
    # A second run finds nothing left to do.
    assert bill_run.run(app.uow, AS_OF, batch_size=5, workers=2).invoices_created == 0


def test_locking_customers_finds_exactly_the_ids_given(app):
    """On PostgreSQL the ids travel as one parameter, and an id holding a comma is not split into other ids. SQLite
    has one writer, so there is nothing to lock: the ids come back sorted, as given."""
    b.seller(app)
    first, second = sorted([b.customer(app, None), b.customer(app, None)])
    joined = f"{first},{second}"
    with app.uow() as uow:
        if app.engine.dialect.name == "postgresql":
            assert uow.lock_customers([second, first, "cus_missing"]) == [first, second]
            assert uow.lock_customers([joined]) == []
            assert uow.lock_customers([joined, second]) == [second]
        else:
            assert uow.lock_customers([second, first]) == [first, second]
        assert uow.lock_customers([]) == []
