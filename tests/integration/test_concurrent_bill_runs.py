"""Two bill runs started together on PostgreSQL: each invoice exactly once, invoice numbers gapless."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.adapters.db.engine import make_engine
from remit.bootstrap import Remit
from remit.domain.clock import FixedClock
from remit.service_layer import bill_run
from tests import builders as b

pytestmark = pytest.mark.postgres


def test_two_bill_runs_at_once_bill_each_subscription_once_with_gapless_numbers(postgres_url):
    clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
    app = Remit(make_engine(postgres_url, pool_size=10), clock)
    with app.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())
    b.seller(app)
    b.plan(app, "basic", "10.00")
    customers = 60
    b.subscribed_customers(app, customers, "basic")
    results, errors = b.at_once(
        *[lambda: bill_run.run(app.uow, datetime(2026, 1, 1, 12, tzinfo=UTC), batch_size=7)] * 2
    )
    assert errors == []
    assert sum(r.invoices_created for r in results) == customers
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.invoices)).scalar_one() == customers
        assert conn.execute(select(func.count()).select_from(t.invoice_lines)).scalar_one() == customers
        numbers = sorted(conn.execute(select(t.invoices.c.number)).scalars())
    assert numbers == [f"INV-2026-{i:06d}" for i in range(1, customers + 1)]
    # And a third run finds nothing left to do.
    assert bill_run.run(app.uow, datetime(2026, 1, 1, 12, tzinfo=UTC)).invoices_created == 0
    app.engine.dispose()
