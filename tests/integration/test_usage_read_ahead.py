"""SQLite's read-ahead: a sequential bill run aggregates the next batch's usage on another connection while it
bills the current batch, and uses it only while nothing else was committed in between."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.adapters.db import usage_read_ahead
from remit.adapters.db.engine import make_engine
from remit.adapters.db.usage_queries import Window, aggregate_usage
from remit.adapters.db.usage_read_ahead import UsageReadAhead
from remit.bootstrap import Remit
from remit.domain.clock import FixedClock
from remit.service_layer import bill_run, subscriptions, usage
from remit.service_layer.usage import meter_from_row
from tests import builders as b

JAN, FEB = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
AS_OF = datetime(2026, 2, 1, 0, 5, tzinfo=UTC)


def _setup(app: Remit, customers: int) -> list[str]:
    """A seller, a meter summing ``n``, a plan of 0.01 EUR per unit billed monthly in arrears, and ``customers``
    subscribed on January 1st (calendar billing), in id order."""
    b.seller(app)
    b.usage_plan(app)
    made = []
    for _ in range(customers):
        cus = b.customer(app, None)
        with app.uow() as uow:
            subscriptions.create_subscription(uow, cus, "api", anchor="calendar")
        made.append(cus)
    return sorted(made)


def _move(app: Remit, at: datetime) -> None:
    assert isinstance(app.clock, FixedClock)
    app.clock.move_to(at)


def _send(app: Remit, customer_id: str, transaction_id: str, n: Any, at: str = "2026-01-15T10:00:00Z") -> None:
    with app.uow() as uow:
        result = usage.ingest(
            uow,
            [
                {
                    "customer_id": customer_id,
                    "code": "calls",
                    "transaction_id": transaction_id,
                    "timestamp": at,
                    "properties": {"n": n},
                }
            ],
        )
    assert len(result.accepted) == 1


def _usage_quantities(app: Remit) -> dict[str, Decimal]:
    i, ln = t.invoices.c, t.invoice_lines.c
    with app.engine.connect() as conn:
        rows = conn.execute(
            select(i.customer_id, ln.quantity).join_from(t.invoice_lines, t.invoices).where(ln.kind == "usage")
        ).all()
    return {customer_id: Decimal(str(quantity)) for customer_id, quantity in rows}


@pytest.fixture
def takes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many customers' rows each batch found read ahead (0: none, or none still valid)."""
    seen: list[int] = []
    real = UsageReadAhead.take

    def spy(self: UsageReadAhead, at: Any) -> Any:
        found = real(self, at)
        seen.append(sum(len(span.rows) for span in found.values()))
        return found

    monkeypatch.setattr(UsageReadAhead, "take", spy)
    return seen


def test_a_sqlite_bill_run_reads_the_next_batch_ahead_and_bills_the_same(sqlite_app: Remit, takes: list[int]) -> None:
    app = sqlite_app
    customers = _setup(app, 7)
    _move(app, datetime(2026, 1, 20, tzinfo=UTC))
    expected: dict[str, Decimal] = {}
    for k, cus in enumerate(customers):
        if k == 4:
            continue  # no usage at all: nothing to bill
        values = [10 * (k + 1), k + 1] if k != 3 else ["2.5", 7]  # one customer's sum is not whole
        for j, n in enumerate(values):
            _send(app, cus, f"e{k}-{j}", n)
        expected[cus] = sum((Decimal(str(n)) for n in values), Decimal(0))
    _move(app, AS_OF)

    result = bill_run.run(app.uow, AS_OF, batch_size=2)

    assert result.invoices_created == 6
    assert _usage_quantities(app) == expected
    # Four batches: the first finds nothing read ahead; each of the others finds the rows of its customers with
    # usage (batch 3 holds the one without any).
    assert takes == [0, 2, 1, 1]


@pytest.mark.parametrize("through", ["the bill run's pooled connection", "another connection"])
def test_usage_committed_between_two_batches_is_billed_not_read_ahead(
    sqlite_app: Remit, takes: list[int], through: str
) -> None:
    """The second batch's usage was read ahead while the first was billed; an event for January that arrives
    between the two (not late: January is not billed yet for that customer) makes the read-ahead stale, and the
    second batch aggregates its usage itself. Through the pool, the event is written on the very connection the
    bill run uses, which its data version does not see: the count of rows changed does."""
    app = sqlite_app
    customers = _setup(app, 4)
    _move(app, datetime(2026, 1, 20, tzinfo=UTC))
    for k, cus in enumerate(customers):
        _send(app, cus, f"e{k}", 100)
    _move(app, AS_OF)
    other = Remit(make_engine(str(app.engine.url)), app.clock)
    sender = app if through == "the bill run's pooled connection" else other
    batches_done: list[int] = []

    def between(billed: int) -> None:
        batches_done.append(billed)
        if len(batches_done) == 1:
            _send(sender, customers[2], "arrived-between", 23, at="2026-01-31T23:59:00Z")

    try:
        bill_run.run(app.uow, AS_OF, batch_size=2, progress=between)
    finally:
        other.engine.dispose()

    assert takes == [0, 0]  # the second batch did not use what was read ahead
    quantities = _usage_quantities(app)
    assert quantities[customers[2]] == Decimal(123)
    assert [quantities[c] for c in customers] == [Decimal(100), Decimal(100), Decimal(123), Decimal(100)]


def test_a_read_ahead_that_fails_leaves_the_batch_to_aggregate_exactly(sqlite_app: Remit) -> None:
    """A sum past SQLite's 64-bit integers fails in the read-ahead's thread: the batch gets nothing read ahead,
    and its own aggregation takes the exact path."""
    app = sqlite_app
    customers = _setup(app, 2)
    _move(app, datetime(2026, 1, 20, tzinfo=UTC))
    _send(app, customers[0], "big-1", 9_000_000_000_000_000_000)
    _send(app, customers[0], "big-2", 9_000_000_000_000_000_000)
    _send(app, customers[1], "small", 5)
    with app.uow() as uow:
        meters = {r["code"]: meter_from_row(r) for r in uow.conn.execute(select(t.meters)).mappings()}
    read_ahead = UsageReadAhead(app.engine)
    try:
        for ids in (customers, customers[1:]):  # with the sum that overflows, then without
            windows = [Window(c, "calls", JAN, FEB) for c in ids]
            with app.uow() as uow:
                read_ahead.start(usage_read_ahead.version(uow.conn), ids, meters, windows)
                read_ahead.ended(uow.conn)
            with app.uow() as uow:
                found = read_ahead.take(usage_read_ahead.version(uow.conn))
                assert bool(found) is (ids == customers[1:])
                aggregates = aggregate_usage(uow.conn, meters, windows, read_ahead=found)
                assert aggregates == aggregate_usage(uow.conn, meters, windows)
            assert aggregates[(customers[1], "calls", JAN, FEB, ())].quantity == Decimal(5)
        assert aggregates.keys() == {(customers[1], "calls", JAN, FEB, ())}
    finally:
        read_ahead.close()
    with app.uow() as uow:  # and the batch's own aggregation, which the failed read-ahead left it to, is exact
        both = aggregate_usage(uow.conn, meters, [Window(c, "calls", JAN, FEB) for c in customers])
    assert both[(customers[0], "calls", JAN, FEB, ())].quantity == Decimal(18_000_000_000_000_000_000)


def test_read_ahead_needs_a_database_file(sqlite_app: Remit) -> None:
    assert usage_read_ahead.available(sqlite_app.engine)
    assert not usage_read_ahead.available(make_engine("sqlite://"))
