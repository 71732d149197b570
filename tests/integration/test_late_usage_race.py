"""A late event that arrives while the bill run is billing its period is billed: not in that run, then as a
correction in the next, never lost (PostgreSQL, where the two really run at once)."""

import threading
import time
from datetime import UTC, datetime

import pytest

from remit.service_layer import bill_run, usage
from tests import builders as b

pytestmark = pytest.mark.postgres


def test_a_late_event_during_the_run_is_billed_by_the_next_run(postgres_url, monkeypatch):
    app, cus = b.usage_customer_on_postgres(postgres_url, datetime(2026, 3, 1, tzinfo=UTC))
    app.clock.move_to(datetime(2026, 3, 20, tzinfo=UTC))
    b.send_calls(app, cus, ("a", "2026-03-10T00:00:00Z", 100))
    bill_run.run(app.uow, datetime(2026, 3, 20, tzinfo=UTC))  # nothing due yet; the review mark is set
    app.clock.move_to(datetime(2026, 4, 1, 0, 5, tzinfo=UTC))

    locked, done = threading.Event(), threading.Event()
    real_load_usage = bill_run.load_usage

    def slow_load_usage(uow, batch, as_of, *args, **kwargs):
        result = real_load_usage(uow, batch, as_of, *args, **kwargs)
        locked.set()  # March's usage is read and the subscription locked: a late event for March arrives now
        time.sleep(1.0)
        return result

    def late_event():
        locked.wait(10)
        with app.uow() as uow:
            usage.ingest(
                uow,
                [
                    {
                        "customer_id": cus,
                        "code": "calls",
                        "transaction_id": "late",
                        "timestamp": "2026-03-31T23:00:00Z",
                        "properties": {"n": 50},
                    }
                ],
            )
        done.set()

    monkeypatch.setattr(bill_run, "load_usage", slow_load_usage)
    thread = threading.Thread(target=late_event)
    thread.start()
    bill_run.run(app.uow, datetime(2026, 4, 1, 0, 5, tzinfo=UTC))
    thread.join(10)
    assert done.is_set()
    monkeypatch.setattr(bill_run, "load_usage", real_load_usage)
    first = [(ln[0], ln[3]) for ln in b.lines_of(app, cus)]
    assert first == [("usage", "1.00")]  # the run read March before the late event committed
    bill_run.run(app.uow, datetime(2026, 4, 1, 0, 10, tzinfo=UTC))
    assert [(ln[0], ln[3]) for ln in b.lines_of(app, cus)] == [("usage", "1.00"), ("usage_correction", "0.50")]
    app.engine.dispose()
