"""Usage events: per-event validation, deduplication per (customer, transaction id), nothing of a refused event
stored, and the same batch posted twice at once counted once."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.domain.errors import RemitError
from remit.service_layer import usage
from remit.service_layer.unit_of_work import UnitOfWork
from tests import builders as b

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _setup(app):
    b.seller(app)
    cus = b.customer(app, None)
    with app.uow() as uow:
        usage.create_meter(uow, "api_calls", "API calls", "count")
        usage.create_meter(
            uow, "tokens", "Tokens", "sum", "tokens", filters={"model": ["small", "large"]}, group_by=["region"]
        )
        usage.create_meter(uow, "users", "Active users", "unique_count", "user")
    return cus


def _event(cus, txn, code="tokens", at=NOW - timedelta(minutes=1), **props):
    props = props or {"tokens": "1500", "model": "small", "region": "eu"}
    return {"customer_id": cus, "code": code, "transaction_id": txn, "timestamp": at.isoformat(), "properties": props}


def _stored(app):
    with app.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.usage_events)).scalar_one()


def test_a_batch_reports_new_duplicate_and_refused_events_one_by_one(app):
    cus = _setup(app)
    batch = [
        _event(cus, "a"),
        _event(cus, "b", code="api_calls", path="/v1/x"),
        _event(cus, "a"),  # repeated inside the batch
        _event(cus, "c", tokens="lots", model="small", region="eu"),  # not numeric
        _event(cus, "d", tokens="5", region="eu"),  # missing the filter property
        _event("cus_nobody", "e"),
        _event(cus, "f", code="nope"),
        _event(cus, "g", at=NOW + timedelta(hours=1)),
        _event(cus, "h", at=NOW - timedelta(days=30)),
        _event(cus, "i", code="users", user="u1"),
        "not an object",
    ]
    with app.uow() as uow:
        result = usage.ingest(uow, batch)
    assert [a["transaction_id"] for a in result.accepted] == ["a", "b", "i"]
    assert [d["index"] for d in result.duplicates] == [2]
    codes = {r["index"]: (r["error"]["code"], r["error"]["field"]) for r in result.rejected}
    assert codes == {
        3: ("not_numeric", "properties.tokens"),
        4: ("missing_property", "properties.model"),
        5: ("unknown_customer", "customer_id"),
        6: ("unknown_meter", "code"),
        7: ("timestamp_in_future", "timestamp"),
        8: ("event_too_old", "timestamp"),
        10: ("invalid_event", "events"),
    }
    assert _stored(app) == 3
    with app.engine.connect() as conn:
        row = conn.execute(select(t.usage_events).where(t.usage_events.c.transaction_id == "a")).mappings().one()
    assert str(row["value"]) == "1500" and row["group_key"] == '["eu"]' and row["matched"] is True


def test_posting_the_same_batch_again_counts_nothing_twice(app):
    cus = _setup(app)
    batch = [_event(cus, f"t{i}") for i in range(20)]
    with app.uow() as uow:
        first = usage.ingest(uow, batch)
    with app.uow() as uow:
        second = usage.ingest(uow, batch)
    assert len(first.accepted) == 20 and second.accepted == []
    assert len(second.duplicates) == 20
    assert _stored(app) == 20


def test_a_batch_over_the_limit_is_refused_whole(app):
    cus = _setup(app)
    with pytest.raises(RemitError) as exc, app.uow() as uow:
        usage.ingest(uow, [_event(cus, str(i)) for i in range(1001)])
    assert exc.value.code == "batch_too_large"
    assert _stored(app) == 0


@pytest.mark.postgres
def test_the_same_batch_posted_twice_at_once_counts_once(postgres_url):
    from remit.adapters.db.engine import make_engine
    from remit.bootstrap import Remit
    from remit.domain.clock import FixedClock

    app = Remit(make_engine(postgres_url), FixedClock(NOW))
    with app.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())
    cus = _setup(app)
    batch = [_event(cus, f"race{i}") for i in range(300)]
    barrier = threading.Barrier(2)
    results = []

    def post() -> None:
        barrier.wait()
        with app.uow() as uow:
            results.append(usage.ingest(uow, batch))

    threads = [threading.Thread(target=post) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(len(r.accepted) for r in results) == 300
    assert sum(len(r.duplicates) for r in results) == 300
    assert _stored(app) == 300
    app.engine.dispose()


def test_a_single_event_is_stored_as_in_a_batch_and_once(app):
    cus = _setup(app)
    with app.uow() as uow:
        first = usage.ingest(uow, [_event(cus, "one", tokens="7", model="large", region='e"u\\')])
    with app.uow() as uow:
        again = usage.ingest(uow, [_event(cus, "one")])
    with app.uow() as uow:
        usage.ingest(uow, [_event(cus, "two", tokens="7", model="large", region='e"u\\'), _event(cus, "three")])
    assert len(first.accepted) == 1 and [d["index"] for d in again.duplicates] == [0] and again.accepted == []
    columns = [c for c in t.usage_events.c if c.name not in ("id", "transaction_id")]
    with app.engine.connect() as conn:
        one, two = (
            conn.execute(select(*columns).where(t.usage_events.c.transaction_id == txn)).mappings().one()
            for txn in ("one", "two")
        )
    assert one == two and _stored(app) == 3


@pytest.mark.postgres
def test_the_same_single_event_sent_at_once_counts_once(postgres_url):
    from remit.adapters.db.engine import make_engine
    from remit.bootstrap import Remit
    from remit.domain.clock import FixedClock

    app = Remit(make_engine(postgres_url), FixedClock(NOW))
    with app.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())
    cus = _setup(app)
    barrier = threading.Barrier(4)
    results = []

    def post() -> None:
        barrier.wait()
        with UnitOfWork(app.engine, app.clock) as uow:
            results.append(usage.ingest(uow, [_event(cus, "solo")]))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(len(r.accepted) for r in results) == 1
    assert sum(len(r.duplicates) for r in results) == 3
    assert _stored(app) == 1
    app.engine.dispose()
