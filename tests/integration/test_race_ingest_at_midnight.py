"""An event for the period being billed, sent just before midnight, whose transaction commits after the midnight
bill run read the period's usage: it must be billed (by the next run, as a correction), never lost."""

import threading
from datetime import UTC, datetime

import pytest

from remit.bootstrap import Remit
from remit.domain.clock import FixedClock
from remit.service_layer import bill_run, usage
from tests import builders as b

pytestmark = pytest.mark.postgres
RUN_AT = datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC)


def _app(postgres_url):
    app, cus = b.usage_customer_on_postgres(postgres_url, datetime(2026, 3, 1, tzinfo=UTC))
    app.clock.move_to(datetime(2026, 3, 31, 13, tzinfo=UTC))
    assert b.send_calls(app, cus, ("a", "2026-03-10T00:00:00Z", 100)).accepted
    bill_run.run(app.uow, datetime(2026, 3, 31, 13, tzinfo=UTC))
    app.clock.move_to(RUN_AT)
    return app, cus


def _next_runs(app):
    for at in (datetime(2026, 4, 1, 1, tzinfo=UTC), datetime(2026, 4, 2, 1, tzinfo=UTC)):
        app.clock.move_to(at)
        bill_run.run(app.uow, at)


LATE = {"code": "calls", "transaction_id": "late", "timestamp": "2026-03-31T23:59:58Z", "properties": {"n": 50}}


@pytest.mark.parametrize("rep", range(1))
def test_event_sent_before_midnight_committing_after_the_run_read_usage(postgres_url, monkeypatch, rep):
    app, cus = _app(postgres_url)
    api = Remit(app.engine, FixedClock(datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)))
    loaded, stored, outcome = threading.Event(), threading.Event(), {}
    real = bill_run.load_usage

    def slow(uow, batch, as_of, *args, **kwargs):
        stored.wait(10)
        r = real(uow, batch, as_of, *args, **kwargs)
        loaded.set()
        return r

    def send():
        with api.uow() as uow:  # the request (or a group commit / import chunk) began a second before midnight
            outcome["r"] = usage.ingest(uow, [{"customer_id": cus, **LATE}])
            stored.set()
            loaded.wait(10)  # it commits just after the run read March's usage

    monkeypatch.setattr(bill_run, "load_usage", slow)
    th = threading.Thread(target=send)
    th.start()
    bill_run.run(app.uow, RUN_AT)
    th.join(10)
    monkeypatch.setattr(bill_run, "load_usage", real)
    assert len(outcome["r"].accepted) == 1
    # The event of the day ending took the subscription's lock (REOPEN_MARGIN): the run waited for it and billed it.
    assert [(ln[0], ln[3]) for ln in b.lines_of(app, cus)] == [("usage", "1.50")]
    _next_runs(app)
    assert [(ln[0], ln[3]) for ln in b.lines_of(app, cus)] == [("usage", "1.50")]
    app.engine.dispose()
