"""Crashes in the middle of work that moves money (an error injected at one step), and the retry after them:
the retry finishes the job, with nothing done twice and nothing lost."""

from __future__ import annotations

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

