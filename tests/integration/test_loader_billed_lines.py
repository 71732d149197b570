"""The bill run's loader reads what was already billed exactly: the subscriptions statement carries each
subscription's billed lines as JSON text, and the totals made from it equal those of the lines as stored."""

from collections import defaultdict
from decimal import Decimal

from sqlalchemy import select, update

from remit.adapters.db import tables as t
from remit.service_layer import bill_run, catalog, clocks, subscriptions, usage
from tests import builders as b


def test_billed_totals_match_the_stored_lines_to_the_last_digit(app):
    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "gb", "GB", "sum", "gb")
        catalog.create_plan(
            uow,
            "storage",
            "Storage",
            [
                {"currency": "EUR", "model": "flat", "config": {"amount": "12.00"}, "name": "Base"},
                {
                    "currency": "EUR",
                    "model": "per_unit",
                    "config": {"unit_price": "0.000000012"},
                    "name": "Storage",
                    "usage": {"meter": "gb"},
                },
            ],
        )
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "storage", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    tiny, huge = "0.000000000001", "123456789012345678.5"
    with app.uow() as uow:
        result = usage.ingest(
            uow,
            [
                {"customer_id": cus, "code": "gb", "transaction_id": f"t{i}", "timestamp": at, "properties": {"gb": v}}
                for i, (at, v) in enumerate((("2026-03-02T10:00:00Z", tiny), ("2026-03-05T10:00:00Z", huge)))
            ],
        )
    assert not result.rejected
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    with app.uow() as uow:  # every billed period may change again: the loader reads all of them
        uow.conn.execute(update(t.subscriptions).where(t.subscriptions.c.id == sub).values(reviewed_from_on=None))
    ln = t.invoice_lines.c
    with app.uow() as uow:
        stored = uow.conn.execute(
            select(
                ln.charge_key, ln.period_start_on, ln.period_end_on, ln.subtotal_minor, ln.discount_minor, ln.quantity
            ).where(ln.subscription_id == sub)
        ).all()
        batch = bill_run._load_batch(uow, [cus], lock=False)
    expected: dict[tuple[str, str, object], list[object]] = defaultdict(lambda: [0, 0, 0, None, None])
    for charge, start, end, subtotal, discount, quantity in stored:
        entry = expected[(sub, charge, start)]
        entry[0], entry[1], entry[2] = entry[0] + subtotal, entry[1] + discount, entry[2] + 1
        entry[3], entry[4] = end, quantity
    found = {
        key: [v.subtotal_minor, v.discount_minor, v.count, v.period_end_on, v.quantity]
        for key, v in batch.billed[sub].items()
    }
    assert found == dict(expected)
    quantities = {v.quantity for v in batch.billed[sub].values()}
    assert Decimal(huge) + Decimal(tiny) in quantities  # the March usage, exact (not through a float)
    assert len(stored) >= 4  # two periods of the fee, March's usage and April's
