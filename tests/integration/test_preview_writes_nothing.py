from sqlalchemy import func, select

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
