"""A customer that cannot be billed does not stop the bill run, on both databases (and in worker processes on
PostgreSQL): everyone else is billed, with gapless numbers; the customer is recorded with why, announced as
``bill_run.customer_failed``, and tried again by every later run until it can be billed. An error that is not one
customer's stops the run, which is then marked failed."""

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from remit.adapters.db import tables as t
from remit.domain.clock import FixedClock
from remit.domain.errors import ValidationError
from remit.service_layer import (
    alerts,
    bill_run,
    usage,
    usage_cancellation,
    usage_monitor,
    views,
    wallet_ledger,
    wallets,
)
from tests import builders as b

ABSURD = "9" * 60  # a value the ingestion accepts; a thousand euros each gives an amount no invoice can hold


def _customers_with_usage(app: Any, count: int, absurd: set[int]) -> list[str]:
    """``count`` customers on 1,000 EUR per call, each with 2 calls in January; those in ``absurd`` also sent
    calls of 10^60 by mistake."""
    assert isinstance(app.clock, FixedClock)
    b.seller(app)
    b.usage_plan(app, "api", unit_price="1000")
    made = b.subscribed_customers(app, count, "api")
    app.clock.move_to(datetime(2026, 1, 20, tzinfo=UTC))
    events = []
    for i, cus in enumerate(made):
        events.append(_event(cus, f"ok-{i}", "2"))
        if i in absurd:
            events.append(_event(cus, f"mistake-{i}", ABSURD))
    with app.uow() as uow:
        assert not usage.ingest(uow, events).rejected
    app.clock.move_to(datetime(2026, 2, 1, 0, 5, tzinfo=UTC))
    return made


def _event(customer_id: str, txn: str, n: str) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "code": "calls",
        "transaction_id": txn,
        "timestamp": "2026-01-10T12:00:00Z",
        "properties": {"n": n},
    }


def _failing_for(monkeypatch: Any, customer_id: str, error: Exception) -> None:
    """Rating any batch that holds the customer raises ``error``."""
    real = bill_run.compute_drafts

    def drafts(batch: Any, as_of: Any) -> Any:
        if customer_id in batch.customers:
            raise error
        return real(batch, as_of)

    monkeypatch.setattr(bill_run, "compute_drafts", drafts)


def _numbers(app: Any) -> list[str]:
    with app.engine.connect() as conn:
        return sorted(conn.execute(select(t.invoices.c.number)).scalars())


@pytest.mark.parametrize("workers", [1, 2])
def test_customers_that_cannot_be_billed_are_set_aside_and_everyone_else_is_billed(app, workers):
    made = _customers_with_usage(app, 9, absurd={3, 7})
    failing = {made[3], made[7]}

    result = bill_run.run(app.uow, app.clock.now(), batch_size=4, workers=workers)

    assert result.customers_seen == 9
    assert result.invoices_created == 7
    assert {f.customer_id for f in result.failures} == failing
    assert {f.code for f in result.failures} == {"amount_out_of_range"}
    for cus in made:
        lines = b.lines_of(app, cus)
        assert lines == ([] if cus in failing else [("usage", "2026-01-01", "2026-02-01", "2000.00")])
    assert _numbers(app) == [f"INV-2026-{i:06d}" for i in range(1, 8)]  # gapless: the failed attempts used none
    with app.uow() as uow:
        run = views.get_bill_run(uow, result.id)
        failures = views.list_bill_run_failures(uow, result.id)
        events = views.list_events(uow, None, type_="bill_run.customer_failed")
    assert run is not None
    assert (run["status"], run["customers_seen"], run["invoices_created"], run["customers_failed"]) == (
        "done",
        9,
        7,
        2,
    )
    assert run["error"] is None and run["finished_at"] is not None
    assert [f["customer_id"] for f in failures] == sorted(failing)
    assert failures[0]["error"]["code"] == "amount_out_of_range"
    assert "beyond what Remit can bill" in failures[0]["error"]["message"]
    assert sorted(e["customer_id"] for e in events) == sorted(failing)
    assert {e["data"]["bill_run_id"] for e in events} == {result.id}

    # A later run tries them again (they are still due), and bills nobody twice.
    again = bill_run.run(app.uow, app.clock.now(), batch_size=4, workers=workers)
    assert (again.customers_seen, again.invoices_created) == (9, 0)
    assert {f.customer_id for f in again.failures} == failing

    # Once the mistaken usage is canceled, the next run bills the customer's January.
    with app.uow() as uow:
        canceled = usage_cancellation.cancel_events(
            uow, [{"customer_id": made[3], "transaction_id": "mistake-3"}], reason="sent by mistake"
        )
    assert len(canceled.canceled) == 1
    last = bill_run.run(app.uow, app.clock.now(), batch_size=4, workers=workers)
    assert (last.invoices_created, [f.customer_id for f in last.failures]) == (1, [made[7]])
    assert b.lines_of(app, made[3]) == [("usage", "2026-01-01", "2026-02-01", "2000.00")]
    assert _numbers(app) == [f"INV-2026-{i:06d}" for i in range(1, 9)]
    with app.engine.connect() as conn:
        per_run = conn.execute(
            select(t.bill_run_failures.c.bill_run_id, func.count()).group_by(t.bill_run_failures.c.bill_run_id)
        ).all()
    assert sorted(n for _run, n in per_run) == [1, 2, 2]


def test_an_unexpected_error_is_recorded_as_internal_and_the_others_are_billed(app, monkeypatch, caplog):
    b.seller(app)
    b.plan(app, "basic", "10.00")
    made = b.subscribed_customers(app, 5, "basic")
    broken = made[2]
    _failing_for(monkeypatch, broken, ZeroDivisionError("division by zero"))
    result = bill_run.run(app.uow, datetime(2026, 1, 1, 12, tzinfo=UTC))

    assert result.invoices_created == 4
    (failure,) = result.failures
    assert (failure.customer_id, failure.code, failure.field) == (broken, "internal_error", None)
    assert "ZeroDivisionError: division by zero" in failure.message
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)  # the traceback is logged
    assert b.invoices_of(app, broken) == []
    with app.uow() as uow:
        (sub,) = views.list_subscriptions(uow, None, customer_id=broken)
    assert sub["reviewed_from_on"] is None  # its review mark did not move: the next run tries again


def test_a_remit_error_keeps_its_code_message_and_field(app, monkeypatch):
    b.seller(app)
    b.plan(app, "basic", "10.00")
    made = b.subscribed_customers(app, 3, "basic")
    refused = ValidationError("formula_arithmetic", "The formula 'a / b' cannot be computed.", "properties")
    _failing_for(monkeypatch, made[0], refused)
    result = bill_run.run(app.uow, datetime(2026, 1, 1, 12, tzinfo=UTC))
    (failure,) = result.failures
    assert (failure.code, failure.message, failure.field) == (
        "formula_arithmetic",
        "The formula 'a / b' cannot be computed.",
        "properties",
    )
    assert result.invoices_created == 2


def test_an_error_of_the_database_stops_the_run_and_marks_it_failed(app, monkeypatch):
    b.seller(app)
    b.plan(app, "basic", "10.00")
    b.subscribed_customers(app, 6, "basic")
    calls: list[int] = []
    real = bill_run._bill_batch_with_retry

    def database_gone(make_uow: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(batch))
        if len(calls) == 2:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
        return real(make_uow, batch, *args, **kwargs)

    monkeypatch.setattr(bill_run, "_bill_batch_with_retry", database_gone)
    with pytest.raises(OperationalError):
        bill_run.run(app.uow, datetime(2026, 1, 1, 12, tzinfo=UTC), batch_size=3)

    assert calls == [3, 3]  # not split customer by customer: each would meet the same error
    with app.engine.connect() as conn:
        run = conn.execute(select(t.bill_runs)).mappings().one()
        failures = conn.execute(select(func.count()).select_from(t.bill_run_failures)).scalar_one()
    assert (run["status"], run["customers_seen"], run["invoices_created"], failures) == ("failed", 3, 3, 0)
    assert "OperationalError" in run["error"] and "server closed the connection" in run["error"]
    assert run["finished_at"] is not None
    # The next run bills the rest.
    assert bill_run.run(app.uow, datetime(2026, 1, 1, 12, tzinfo=UTC), batch_size=3).invoices_created == 3


def _watched_customers(app: Any, absurd_for_third: bool = False) -> list[str]:
    """5 customers at 1,000 EUR per call, each with a spend alert at 1,000.00 and 2 calls on 20 January; the
    third also sent calls of 10^60 by mistake if asked."""
    assert isinstance(app.clock, FixedClock)
    b.seller(app)
    b.usage_plan(app, "api", unit_price="1000")
    made = b.subscribed_customers(app, 5, "api")
    app.clock.move_to(datetime(2026, 1, 20, tzinfo=UTC))
    with app.uow() as uow:
        for cus in made:
            alerts.create_alert(uow, cus, "spend", ["1000.00"])
        events = [_event(cus, f"ok-{i}", "2") for i, cus in enumerate(made)]
        events += [_event(made[2], "oops", ABSURD)] if absurd_for_third else []
        assert not usage.ingest(uow, events).rejected
    return made


def test_the_usage_monitor_sets_aside_a_customer_whose_usage_cannot_be_rated(app, caplog):
    """Spend alerts rate the open period's usage: a customer with usage no invoice can hold is logged and left
    unwatched (its next events or a cancellation watch it again) while the others' alerts fire."""
    made = _watched_customers(app, absurd_for_third=True)

    result = usage_monitor.evaluate(app.uow, batch_size=5)

    assert result.customers == 4 and result.alerts_triggered == 4
    with app.uow() as uow:
        fired = views.list_events(uow, None, type_="usage.alert_triggered")
        dirty = uow.conn.execute(select(t.usage_watches.c.customer_id).where(t.usage_watches.c.dirty)).all()
    assert sorted(e["customer_id"] for e in fired) == sorted(c for c in made if c != made[2])
    assert dirty == []
    assert any(made[2] in r.getMessage() and "could not be evaluated" in r.getMessage() for r in caplog.records)
    # Canceling the mistake watches the customer again, and its alert fires.
    with app.uow() as uow:
        usage_cancellation.cancel_events(uow, [{"customer_id": made[2], "transaction_id": "oops"}])
    again = usage_monitor.evaluate(app.uow, batch_size=5)
    assert (again.customers, again.alerts_triggered) == (1, 1)


def test_customers_that_recent_runs_could_not_bill_are_billed_one_by_one_without_splitting_batches(app, monkeypatch):
    made = _customers_with_usage(app, 9, absurd={3, 7})
    sizes: list[list[str]] = []
    real = bill_run._bill_batch_with_retry

    def counted(make_uow: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(list(batch))
        return real(make_uow, batch, *args, **kwargs)

    monkeypatch.setattr(bill_run, "_bill_batch_with_retry", counted)
    bill_run.run(app.uow, app.clock.now(), batch_size=4)
    assert len(sizes) > 5  # the first run splits the batches holding them
    sizes.clear()

    again = bill_run.run(app.uow, app.clock.now(), batch_size=4)

    assert {f.customer_id for f in again.failures} == {made[3], made[7]}
    assert sizes == [made[0:3], [made[3]], made[4:7], [made[7]], [made[8]]]  # the others together, each suspect alone


def test_a_run_stopped_after_part_of_a_split_batch_committed_counts_the_invoices_it_wrote(app, monkeypatch):
    b.seller(app)
    b.plan(app, "basic", "10.00")
    made = b.subscribed_customers(app, 6, "basic")
    _failing_for(monkeypatch, made[5], ZeroDivisionError("boom"))
    calls: list[int] = []
    real = bill_run._bill_batch_with_retry

    def database_gone(make_uow: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(batch))
        if len(calls) == 3:  # the batch (fails), its first half (commits), then the database goes away
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
        return real(make_uow, batch, *args, **kwargs)

    monkeypatch.setattr(bill_run, "_bill_batch_with_retry", database_gone)
    with pytest.raises(OperationalError):
        bill_run.run(app.uow, datetime(2026, 1, 1, 12, tzinfo=UTC), batch_size=6)
    with app.engine.connect() as conn:
        run = conn.execute(select(t.bill_runs)).mappings().one()
        written = conn.execute(select(func.count()).where(t.invoices.c.bill_run_id == run["id"])).scalar_one()
    assert (run["status"], run["invoices_created"], written) == ("failed", 3, 3)


@pytest.mark.postgres
def test_a_lock_timeout_while_invoices_are_copied_stops_the_run(postgres_url):
    """Raised inside PostgreSQL's COPY (the invoices' foreign key waits for a row another session locked), a lock
    timeout is the database's error, as through any other statement: the run stops, no customer is blamed."""
    from sqlalchemy import text

    from remit.adapters.db.engine import make_engine
    from remit.bootstrap import Remit, read_engine
    from tests.conftest import _empty_tables

    engine = make_engine(postgres_url, connect_args={"options": "-c lock_timeout=200"})
    app = Remit(engine, FixedClock(datetime(2026, 1, 1, tzinfo=UTC)), read_engine(engine))
    _empty_tables(app)
    entity = b.seller(app)
    b.plan(app, "basic", "10.00")
    b.subscribed_customers(app, 4, "basic")
    with app.engine.begin() as conn:  # the year's series exists: the first wait is COPY's key check
        conn.execute(t.number_series.insert().values(legal_entity_id=entity, series="INV-2026", next_value=1))
    holder = make_engine(postgres_url)
    try:
        with holder.connect() as conn, conn.begin():
            conn.execute(text("SELECT id FROM legal_entities FOR UPDATE"))
            with pytest.raises(OperationalError):
                bill_run.run(app.uow, datetime(2026, 1, 1, 12, tzinfo=UTC))
        with app.engine.connect() as conn:
            run = conn.execute(select(t.bill_runs)).mappings().one()
        assert (run["status"], run["customers_failed"]) == ("failed", 0)
        assert "LockNotAvailable" in run["error"] or "lock timeout" in run["error"]
    finally:
        holder.dispose()
        app.dispose()


class _Deadlock(Exception):
    sqlstate = "40P01"  # as psycopg's DeadlockDetected carries it


def test_a_deadlocked_batch_is_billed_again_and_other_database_errors_stop_the_run(app, monkeypatch):
    """A deadlock or a serialization failure rolls the batch back whole: it is tried again (at most three times)
    rather than stopping the run; a lost connection is not."""
    b.seller(app)
    b.plan(app, "basic", "10.00")
    b.subscribed_customers(app, 3, "basic")
    real = bill_run.bill_customers
    calls: list[int] = []

    def deadlocks_once(uow: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(batch))
        if len(calls) == 1:
            raise OperationalError("UPDATE subscriptions ...", {}, _Deadlock("deadlock detected"))
        return real(uow, batch, *args, **kwargs)

    monkeypatch.setattr(bill_run, "bill_customers", deadlocks_once)
    result = bill_run.run(app.uow, datetime(2026, 1, 1, 12, tzinfo=UTC))
    assert (calls, result.invoices_created, result.failures) == ([3, 3], 3, [])
    assert _numbers(app) == [f"INV-2026-{i:06d}" for i in range(1, 4)]

    def always_deadlocks(uow: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(batch))
        raise OperationalError("UPDATE subscriptions ...", {}, _Deadlock("deadlock detected"))

    calls.clear()
    monkeypatch.setattr(bill_run, "bill_customers", always_deadlocks)
    b.subscribed_customers(app, 1, "basic")
    with pytest.raises(OperationalError):
        bill_run.run(app.uow, datetime(2026, 1, 1, 13, tzinfo=UTC))
    assert len(calls) == 3  # tried three times, then the run stops (not split: every customer would meet it)


@pytest.mark.parametrize("step", ["grant_recurring_due", "expire_due"])
def test_a_customer_whose_credits_cannot_be_brought_up_to_date_is_set_aside_and_the_others_are_billed(
    app, monkeypatch, step
):
    """Recurring grants and expiry run for everyone before the batches. One customer for whom they fail is
    recorded and not billed (its invoice would be paid by the wrong credits); the others get their credits, which
    pay their invoices; the next run, once the cause is gone, does both for the customer."""
    assert isinstance(app.clock, FixedClock)
    b.seller(app)
    b.plan(app, "basic", "10.00")
    made = b.subscribed_customers(app, 5, "basic")
    wallet_of = {}
    for cus in made:
        with app.uow() as uow:
            wallet_of[cus] = wallets.create_wallet(uow, cus)["id"]
        with app.uow() as uow:  # 15 credits on the 1st of every month, expiring after 40 days
            wallets.create_recurring_grant(uow, wallet_of[cus], "15", interval="month", expires_days=40)
    bill_run.run(app.uow, app.clock.now())
    # January's invoice took 10 of January's credits; on February 11 the 5 left have expired, February's are due.
    app.clock.move_to(datetime(2026, 2, 11, 0, 5, tzinfo=UTC))
    broken = made[3]
    real = getattr(wallets, step)

    def failing(uow: Any, as_of: Any, test_clock_id: Any = None, among: Any = None) -> Any:
        if among is not None and broken in among:
            raise ZeroDivisionError("division by zero")
        return real(uow, as_of, test_clock_id, among)

    monkeypatch.setattr(wallets if step == "grant_recurring_due" else wallet_ledger, step, failing)

    result = bill_run.run(app.uow, app.clock.now(), batch_size=2)

    (failure,) = result.failures
    assert (failure.customer_id, failure.code) == (broken, "internal_error")
    assert failure.message.startswith(bill_run.CREDITS_STEP)
    assert "ZeroDivisionError" in failure.message
    assert (result.customers_seen, result.invoices_created) == (5, 4)
    for cus in made:
        february = [i for i in b.invoices_of(app, cus) if i["issued_on"] == "2026-02-11"]
        if cus == broken:
            assert february == []
        else:
            assert [(i["total"], i["applied_credits"], i["status"]) for i in february] == [("10.00", "10.00", "paid")]
    with app.uow() as uow:
        run = views.get_bill_run(uow, result.id)
        grants = wallets.get_wallet(uow, wallet_of[broken], with_grants=True)["grants"]
    assert run is not None and (run["status"], run["customers_failed"]) == ("done", 1)
    # Nothing of the failed step was kept: January's grant with its 5 credits, not expired; no February grant.
    assert [(g["status"], g["remaining_credits"]) for g in grants] == [("active", "5")]

    monkeypatch.setattr(wallets if step == "grant_recurring_due" else wallet_ledger, step, real)
    again = bill_run.run(app.uow, app.clock.now(), batch_size=2)
    assert (again.failures, again.invoices_created) == ([], 1)
    (february,) = [i for i in b.invoices_of(app, broken) if i["issued_on"] == "2026-02-11"]
    assert (february["applied_credits"], february["status"]) == ("10.00", "paid")
    with app.uow() as uow:
        grants = wallets.get_wallet(uow, wallet_of[broken], with_grants=True)["grants"]
    assert sorted((g["status"], g["remaining_credits"]) for g in grants) == [("active", "5"), ("expired", "0")]


def test_the_usage_monitor_tries_a_unique_key_conflict_again_then_sets_the_customer_aside(app, monkeypatch, caplog):
    """A conflict on a unique key is usually a concurrent writer that got there first, and the next attempt sees
    what it wrote; one that comes back every time is the customer's own, and stops nobody else's alerts."""
    from sqlalchemy.exc import IntegrityError

    made = _watched_customers(app)
    real = usage_monitor._evaluate_batch
    attempts = {"once": 0, "always": 0}

    def conflicting(uow: Any, customer_ids: Any, result: Any) -> None:
        for name, cus in (("once", made[0]), ("always", made[2])):
            if cus in customer_ids and (name == "always" or attempts[name] == 0):
                attempts[name] += 1
                raise IntegrityError("INSERT ...", {}, Exception("duplicate key"))
        real(uow, customer_ids, result)

    monkeypatch.setattr(usage_monitor, "_evaluate_batch", conflicting)

    result = usage_monitor.evaluate(app.uow, batch_size=5)

    assert result.customers == 4 and result.alerts_triggered == 4
    assert attempts["once"] == 1  # made[0]'s conflict was gone on the next attempt; made[2]'s never was
    with app.uow() as uow:
        fired = views.list_events(uow, None, type_="usage.alert_triggered")
    assert sorted(e["customer_id"] for e in fired) == sorted(c for c in made if c != made[2])
    assert any(made[2] in r.getMessage() and "duplicate key" in r.getMessage() for r in caplog.records)
