"""Crashes in the middle of work that moves money (an error injected at one step), and the retry after them:
the retry finishes the job, with nothing done twice and nothing lost."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from remit.adapters.db import tables as t
from remit.bootstrap import Remit
from remit.service_layer import bill_run, clocks
from tests import builders as b


def _dropped(*_args: Any, **_kwargs: Any) -> Any:
    raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))


def _clock_row(app: Remit, clock_id: str) -> tuple[datetime, str]:
    with app.engine.connect() as conn:
        frozen, status = conn.execute(
            select(t.test_clocks.c.frozen_at, t.test_clocks.c.status).where(t.test_clocks.c.id == clock_id)
        ).one()
    return frozen, status


@pytest.mark.parametrize("failing_step", ["last", "middle"])
def test_an_advance_that_failed_on_a_step_is_finished_by_the_same_request_again(
    app: Remit, monkeypatch: pytest.MonkeyPatch, failing_step: str
) -> None:
    b.seller(app)
    b.plan(app, "basic", "10.00")
    clock_id = b.clock(app, b.utc(2026, 1, 15))
    (cus,) = b.subscribed_customers(app, 1, "basic", clock_id, anchor="calendar")
    to = b.utc(2026, 3, 1, 12)
    failing_at = to if failing_step == "last" else b.utc(2026, 2, 1)
    real = bill_run.run

    def run(make_uow: Any, as_of: datetime, **kwargs: Any) -> Any:
        if as_of == failing_at:
            _dropped()
        return real(make_uow, as_of, **kwargs)

    monkeypatch.setattr(bill_run, "run", run)
    with pytest.raises(OperationalError):
        clocks.advance(app.uow, clock_id, to)
    assert _clock_row(app, clock_id) == (failing_at, "ready")  # the clock stands where the failed step moved it
    monkeypatch.setattr(bill_run, "run", real)

    again = clocks.advance(app.uow, clock_id, to)  # the same request, tried again

    assert again["frozen_at"] == to and _clock_row(app, clock_id) == (to, "ready")
    periods = [ln[1] for ln in b.lines_of(app, cus)]
    assert periods == ["2026-01-15", "2026-02-01", "2026-03-01"]  # each month billed once, none lost
    assert clocks.advance(app.uow, clock_id, to)["invoices_created"] == 0  # and a third time, nothing more


def test_a_test_clock_still_only_moves_forward(app: Remit) -> None:
    b.seller(app)
    clock_id = b.clock(app, b.utc(2026, 1, 15))
    from remit.domain.errors import ValidationError

    with pytest.raises(ValidationError) as exc:
        clocks.advance(app.uow, clock_id, datetime(2026, 1, 14, 23, 59, tzinfo=UTC))
    assert exc.value.code == "dates_out_of_order"
    assert _clock_row(app, clock_id) == (b.utc(2026, 1, 15), "ready")


def test_customers_claimed_by_an_evaluation_that_lost_the_database_are_evaluated_by_the_next(
    app: Remit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluation clears a customer's mark when it claims it; if the evaluation fails and the database is
    still away when the mark is put back, the next evaluation puts it back: the alert fires and the threshold
    invoice is issued, once."""
    from remit.service_layer import alerts, subscriptions, usage_monitor, usage_watch

    b.seller(app)
    cus = b.customer(app, None)
    b.usage_plan(app)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "api", anchor="calendar")
        alerts.set_usage_threshold(uow, sub, "5.00")
        alerts.create_alert(uow, cus, "spend", ["8.00"])
    usage_monitor.evaluate(app.uow)
    b.send_calls(app, cus, ("t1", "2026-01-01T00:00:00Z", 1000))  # 10.00 EUR: past the threshold and the alert
    with monkeypatch.context() as patch:
        patch.setattr(usage_monitor, "_evaluate_isolating", _dropped)
        patch.setattr(usage_watch, "remark", _dropped)
        with pytest.raises(OperationalError):
            usage_monitor.evaluate(app.uow)
    with monkeypatch.context() as patch:  # still away at the start of the next round: kept for the one after
        patch.setattr(usage_watch, "remark", _dropped)
        with pytest.raises(OperationalError):
            usage_monitor.evaluate(app.uow)

    result = usage_monitor.evaluate(app.uow)

    assert (result.customers, result.alerts_triggered, len(result.invoice_ids)) == (1, 1, 1)
    assert [inv["total"] for inv in b.invoices_of(app, cus)] == ["10.00"]
    again = usage_monitor.evaluate(app.uow)
    assert (again.customers, again.alerts_triggered, again.invoice_ids) == (0, 0, [])


class _Killed:
    """A process killed in the middle of some work, played by a thread that stops at ``owner.name`` (at its first
    call for which ``when`` holds): what it had claimed stays claimed and its clean-up does not run, until
    ``goes_on``. Then it goes on, as a process that had only stalled would, and must find what it held taken
    over."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        owner: Any,
        name: str,
        work: Callable[[], Any],
        when: Callable[..., bool] = lambda *_a, **_k: True,
    ) -> None:
        self.stopped = threading.Event()
        self.wake = threading.Event()
        self.errors: list[BaseException] = []
        real = getattr(owner, name)

        def stopping(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is self.thread and not self.stopped.is_set() and when(*args, **kwargs):
                self.stopped.set()
                assert self.wake.wait(60)
            return real(*args, **kwargs)

        def run() -> None:
            try:
                work()
            except BaseException as exc:  # reported to the test
                self.errors.append(exc)

        monkeypatch.setattr(owner, name, stopping)
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.stopped.wait(60), self.errors

    def goes_on(self) -> list[BaseException]:
        self.wake.set()
        self.thread.join(60)
        return self.errors


def _past(app: Remit, lease: timedelta) -> None:
    clock: Any = app.clock
    clock.move_to(clock.now() + lease + timedelta(seconds=1))


def test_customers_claimed_by_a_killed_evaluation_are_evaluated_once_its_lease_has_passed(app: Remit) -> None:
    """A process claims customers for evaluation (their marks cleared) and is killed before evaluating them: once
    the claim's lease has passed, the next evaluation takes them; the alert fires and the threshold invoice is
    issued, once, and an evaluated customer's claim ends (it is not evaluated again when the lease would pass)."""
    from remit.service_layer import alerts, subscriptions, usage_monitor, usage_watch

    b.seller(app)
    cus = b.customer(app, None)
    b.usage_plan(app)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "api", anchor="calendar")
        alerts.set_usage_threshold(uow, sub, "5.00")
        alerts.create_alert(uow, cus, "spend", ["8.00"])
    usage_monitor.evaluate(app.uow)
    b.send_calls(app, cus, ("t1", "2026-01-01T00:00:00Z", 1000))  # 10.00 EUR: past the threshold and the alert
    usage_watch.claim(app.uow, None, usage_monitor.BATCH_SIZE)  # ... and the process that claimed them dies

    assert usage_monitor.evaluate(app.uow).customers == 0  # still claimed: its lease runs
    _past(app, usage_watch.LEASE)
    result = usage_monitor.evaluate(app.uow)

    assert (result.customers, result.alerts_triggered, len(result.invoice_ids)) == (1, 1, 1)
    assert [inv["total"] for inv in b.invoices_of(app, cus)] == ["10.00"]
    _past(app, usage_watch.LEASE)
    again = usage_monitor.evaluate(app.uow)
    assert (again.customers, again.alerts_triggered, again.invoice_ids) == (0, 0, [])


def test_an_advance_whose_process_died_is_taken_over_once_its_lease_has_passed(
    app: Remit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process advancing a clock dies at a step (before its bill run): the clock stays busy while the lease
    runs, then the next advance takes it over and finishes the work, each month billed once. The dead advance,
    were it to wake, can neither move the clock nor set it ready under the one that took it."""
    from remit.domain.errors import Conflict

    b.seller(app)
    b.plan(app, "basic", "10.00")
    clock_id = b.clock(app, b.utc(2026, 1, 15))
    (cus,) = b.subscribed_customers(app, 1, "basic", clock_id, anchor="calendar")
    to = b.utc(2026, 3, 1, 12)
    dies_at = b.utc(2026, 2, 1)
    dead = _Killed(
        monkeypatch,
        bill_run,
        "run",
        lambda: clocks.advance(app.uow, clock_id, to),
        when=lambda _make_uow, as_of, **_kw: as_of == dies_at,
    )
    assert _clock_row(app, clock_id) == (dies_at, "advancing")
    with pytest.raises(Conflict) as busy:
        clocks.advance(app.uow, clock_id, to)
    assert busy.value.code == "test_clock_busy"  # while its lease runs

    _past(app, clocks.LEASE)
    taken = clocks.advance(app.uow, clock_id, to)

    assert taken["frozen_at"] == to and _clock_row(app, clock_id) == (to, "ready")
    periods = [ln[1] for ln in b.lines_of(app, cus)]
    assert periods == ["2026-01-15", "2026-02-01", "2026-03-01"]  # each month billed once, none lost
    [error] = dead.goes_on()
    assert getattr(error, "code", None) == "test_clock_busy"  # it finds its lease taken over, and stops
    assert _clock_row(app, clock_id) == (to, "ready")
    assert [ln[1] for ln in b.lines_of(app, cus)] == periods


def test_a_live_advance_renews_its_lease_as_it_goes(app: Remit, monkeypatch: pytest.MonkeyPatch) -> None:
    """An advance that takes longer than its lease, step after step, keeps its clock: each step renews it."""
    from remit.domain.errors import Conflict

    b.seller(app)
    b.plan(app, "basic", "10.00")
    clock_id = b.clock(app, b.utc(2026, 1, 15))
    b.subscribed_customers(app, 1, "basic", clock_id, anchor="calendar")
    real = bill_run.run
    refused: list[str] = []

    def slow(make_uow: Any, as_of: datetime, **kwargs: Any) -> Any:
        _past(app, clocks.LEASE * 3 / 4)  # each step takes three quarters of a lease
        try:
            clocks.advance(app.uow, clock_id, b.utc(2027, 1, 1))
        except Conflict as exc:
            refused.append(exc.code)
        return real(make_uow, as_of, **kwargs)

    monkeypatch.setattr(bill_run, "run", slow)
    result = clocks.advance(app.uow, clock_id, b.utc(2026, 6, 1, 12))

    assert result["steps"] == 6 and refused == ["test_clock_busy"] * 7  # the first bill run catches up
    assert _clock_row(app, clock_id) == (b.utc(2026, 6, 1, 12), "ready")


def test_customers_a_dead_advance_had_claimed_for_evaluation_are_evaluated_by_the_advance_that_takes_over(
    app: Remit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The advance's process dies once it has claimed the clock's customers for evaluation. Only an advance
    evaluates a clock's customers, so the one that takes the clock over evaluates them at once (not when their
    own claim's lease passes): the threshold invoice is issued at the clock's time, once."""
    from remit.service_layer import alerts, subscriptions, usage_monitor

    b.seller(app)
    b.usage_plan(app)
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "api", anchor="calendar")
        alerts.set_usage_threshold(uow, sub, "5.00")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    b.send_calls(app, cus, ("t1", "2026-03-10T00:00:00Z", 1000))  # 10.00 EUR: past the threshold
    dead = _Killed(
        monkeypatch, usage_monitor, "_evaluate_isolating", lambda: clocks.advance(app.uow, clock_id, b.utc(2026, 3, 11))
    )

    _past(app, clocks.LEASE)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 11))

    [invoice] = b.invoices_of(app, cus)
    assert (invoice["billing_reason"], invoice["total"], invoice["issued_on"]) == ("threshold", "10.00", "2026-03-10")
    dead.goes_on()
    assert len(b.invoices_of(app, cus)) == 1
