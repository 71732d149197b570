"""An event cancellation that starts just before midnight and waits for the bill run that bills that period (it
holds the customer's lock): once it goes through, the next run must credit the canceled event (as it does when the
cancellation starts after midnight, or waits for the run on any other day)."""

import threading
import time
from datetime import UTC, datetime

import pytest

from remit.bootstrap import Remit
from remit.domain.clock import FixedClock
from remit.service_layer import bill_run, usage_cancellation
from tests import builders as b

pytestmark = pytest.mark.postgres
RUN_AT = datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC)


def _app(postgres_url):
    app, cus = b.usage_customer_on_postgres(postgres_url, datetime(2026, 3, 1, tzinfo=UTC))
    app.clock.move_to(datetime(2026, 3, 31, 13, tzinfo=UTC))
    sent = b.send_calls(app, cus, ("kept", "2026-03-10T00:00:00Z", 100), ("mistake", "2026-03-31T12:00:00Z", 50))
    assert len(sent.accepted) == 2
    bill_run.run(app.uow, datetime(2026, 3, 31, 13, tzinfo=UTC))
    app.clock.move_to(RUN_AT)
    return app, cus


def _lines(app, cus):
    return [(ln[0], ln[3]) for ln in b.lines_of(app, cus)]


def _next_runs(app):
    for at in (datetime(2026, 4, 1, 1, tzinfo=UTC), datetime(2026, 4, 2, 1, tzinfo=UTC)):
        app.clock.move_to(at)
        bill_run.run(app.uow, at)


def test_control_cancellation_just_after_the_run(postgres_url):
    app, cus = _app(postgres_url)
    bill_run.run(app.uow, RUN_AT)
    with app.uow() as uow:
        assert (
            len(usage_cancellation.cancel_events(uow, [{"customer_id": cus, "transaction_id": "mistake"}]).canceled)
            == 1
        )
    _next_runs(app)
    assert _lines(app, cus) == [("usage", "1.50"), ("usage_correction", "-0.50")]
    app.engine.dispose()


@pytest.mark.parametrize("rep", range(1))
def test_cancellation_started_before_midnight_waits_for_the_run(postgres_url, monkeypatch, rep):
    app, cus = _app(postgres_url)
    # The API process serving the cancellation: same database, its request began a second before midnight.
    api = Remit(app.engine, FixedClock(datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)))
    loaded, outcome = threading.Event(), {}
    real = bill_run.load_usage

    def slow(uow, batch, as_of, *args, **kwargs):
        r = real(uow, batch, as_of, *args, **kwargs)
        loaded.set()
        time.sleep(1.0)
        return r

    def cancel():
        with api.uow() as uow:  # the request starts before midnight...
            loaded.wait(10)  # ...and waits for the customer's lock, held by the midnight run
            outcome["r"] = usage_cancellation.cancel_events(uow, [{"customer_id": cus, "transaction_id": "mistake"}])

    monkeypatch.setattr(bill_run, "load_usage", slow)
    th = threading.Thread(target=cancel)
    th.start()
    bill_run.run(app.uow, RUN_AT)
    th.join(10)
    monkeypatch.setattr(bill_run, "load_usage", real)
    assert len(outcome["r"].canceled) == 1
    assert _lines(app, cus) == [("usage", "1.50")]  # billed with the event, read before the cancellation
    _next_runs(app)
    assert _lines(app, cus) == [("usage", "1.50"), ("usage_correction", "-0.50")]
    app.engine.dispose()
