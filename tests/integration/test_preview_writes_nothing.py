import pytest
from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.adapters.db.tables import metadata
from remit.service_layer import clocks, subscriptions
from tests import builders as b


def _counts(app):
    with app.engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in metadata.sorted_tables}


def test_upcoming_invoice_matches_the_next_bill_and_writes_nothing(app):
    b.seller(app)
    b.plan(app, "basic", "10.00")
    b.plan(app, "pro", "31.00")
    clock_id = b.clock(app, b.utc(2026, 1, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 1, 10))
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "pro", when="period_end")
    before = _counts(app)
    with app.uow() as uow:
        preview = clocks.preview_upcoming(uow, cus)
    assert _counts(app) == before
    assert preview["as_of"].date().isoformat() == "2026-02-01"
    assert [(ln["description"], ln["amount_minor"]) for ln in preview["lines"]] == [("Pro", 3100)]
    clocks.advance(app.uow, clock_id, b.utc(2026, 2, 1))
    billed = b.invoices_of(app, cus)[-1]
    assert billed["total"] == "31.00"
    assert [ln["description"] for ln in billed["lines"]] == ["Pro"]


@pytest.mark.postgres
@pytest.mark.parametrize("app", ["postgresql"], indirect=True)  # SQLite has no row locks
def test_a_preview_takes_no_lock_and_waits_for_none(app):
    """A preview computes like the bill run but writes nothing, so it locks nothing: it answers while a bill run
    (or an ingestion reopening a period) holds the subscription's row, and never holds one itself."""
    b.seller(app)
    b.plan(app, "basic", "10.00")
    cus = b.customer(app, None)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    with app.engine.connect() as holder:
        holder.execute(select(t.subscriptions.c.id).where(t.subscriptions.c.id == sub).with_for_update())
        with app.uow(read_only=True) as uow:
            uow.conn.exec_driver_sql("SET lock_timeout = '2s'")  # fails here rather than waiting for the holder
            preview = clocks.preview_upcoming(uow, cus)
            uow.conn.exec_driver_sql("SET lock_timeout = 0")
        holder.rollback()
    assert [ln["amount_minor"] for ln in preview["lines"]] == [1000]
