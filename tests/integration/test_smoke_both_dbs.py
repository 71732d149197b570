from remit.service_layer import clocks, subscriptions
from tests import builders as b


def test_monthly_subscription_bills_each_month_on_both_databases(app):
    b.seller(app)
    b.plan(app, "basic", "10.00")
    clock_id = b.clock(app, b.utc(2026, 4, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 6, 15))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-04-01", "2026-05-01", "10.00"),
        ("subscription", "2026-05-01", "2026-06-01", "10.00"),
        ("subscription", "2026-06-01", "2026-07-01", "10.00"),
    ]
    numbers = [i["number"] for i in b.invoices_of(app, cus)]
    assert numbers == ["INV-2026-000001", "INV-2026-000002", "INV-2026-000003"]
