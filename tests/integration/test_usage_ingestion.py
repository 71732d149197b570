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


def _codes(result):
    return {r["index"]: (r["error"]["code"], r["error"]["field"]) for r in result.rejected}


def test_bad_values_are_refused_event_by_event_and_the_rest_kept(app):
    cus = _setup(app)
    with app.uow() as uow:
        usage.create_meter(uow, "by_plan", "By plan", "count", filters={"paid": ["true"]}, group_by=["plan"])
    long_id = "https://idp.example.com/" + "a" * 190  # two such ids differ only past 200 characters
    batch = [
        _event(cus, "ok"),
        _event(cus, "u1", code="users", user=long_id + "/alice"),
        _event(cus, "g1", tokens="1", model="small", region="x" * 600),  # the group key past 500 characters
        {**_event(cus, "c1"), "code": ["tokens"]},
        {**_event(cus, "c2"), "code": {"a": 1}},
        {**_event(cus, "c3"), "customer_id": [cus]},
        {**_event(cus, "c4"), "customer_id": None, "external_customer_id": {"id": 1}},
        {**_event(cus, "c5"), "subscription_id": ["sub"]},
        {**_event(cus, "c6"), "transaction_id": ["t"]},
        {**_event(cus, "ts1"), "timestamp": "0001-01-01T00:00:00+01:00"},  # before year 1 in UTC
        {**_event(cus, "ts2"), "timestamp": "9999-12-31T23:59:59-01:00"},  # after year 9999 in UTC
        _event(cus, "n1", tokens="1e999999999999999999", model="small", region="eu"),
        _event(cus, "n2", tokens="1e100000000", model="small", region="eu"),
        _event(cus, "p1", code="by_plan", paid=True, plan={"name": "pro"}),
        _event(cus, "p2", code="by_plan", paid=True, plan=None),
        _event(cus, "k1", code="api_calls", **{"": 1}),
        _event(cus, "k2", code="api_calls", **{"k" * 101: 1}),
        _event(cus, "u2", code="users", user=long_id[:200]),  # 200 characters: counted
    ]
    with app.uow() as uow:
        result = usage.ingest(uow, batch)
    assert [a["transaction_id"] for a in result.accepted] == ["ok", "u2"]
    assert _codes(result) == {
        1: ("invalid_value", "properties.user"),
        2: ("invalid_value", "properties.region"),
        3: ("unknown_meter", "code"),
        4: ("unknown_meter", "code"),
        5: ("unknown_customer", "customer_id"),
        6: ("unknown_customer", "external_customer_id"),
        7: ("invalid_subscription_id", "subscription_id"),
        8: ("invalid_transaction_id", "transaction_id"),
        9: ("invalid_timestamp", "timestamp"),
        10: ("invalid_timestamp", "timestamp"),
        11: ("not_numeric", "properties.tokens"),
        12: ("not_numeric", "properties.tokens"),
        13: ("invalid_value", "properties.plan"),
        14: ("missing_property", "properties.plan"),
        15: ("invalid_properties", "properties"),
        16: ("invalid_properties", "properties"),
    }
    assert _stored(app) == 2


def test_filters_groups_and_unique_counts_read_json_values_as_json_writes_them(app):
    cus = _setup(app)
    with app.uow() as uow:
        usage.create_meter(uow, "paid", "Paid", "count", filters={"billable": ["true"], "tier": ["1"]}, group_by=["p"])
    batch = [
        _event(cus, "a", code="paid", billable=True, tier=1, p=False),
        _event(cus, "b", code="paid", billable="true", tier=1.0, p=2.50),
        _event(cus, "c", code="paid", billable="True", tier="1", p="x"),
        _event(cus, "d", code="users", user=7),
        _event(cus, "e", code="users", user=7.0),
    ]
    with app.uow() as uow:
        assert len(usage.ingest(uow, batch).accepted) == 5
    with app.engine.connect() as conn:
        rows = conn.execute(
            select(
                t.usage_events.c.transaction_id,
                t.usage_events.c.matched,
                t.usage_events.c.group_key,
                t.usage_events.c.dimension,
            ).order_by(t.usage_events.c.transaction_id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("a", True, '["false"]', None),
        ("b", True, '["2.5"]', None),
        ("c", False, '["x"]', None),
        ("d", True, "[]", "7"),
        ("e", True, "[]", "7"),
    ]


@pytest.mark.parametrize(
    ("stamp", "stored"),
    [
        ("2026-01-01T15:00:00+16:00", datetime(2025, 12, 31, 23, 0, tzinfo=UTC)),  # PostgreSQL reads no such offset
        ("2026-01-01T19:30:00+20:30", datetime(2025, 12, 31, 23, 0, tzinfo=UTC)),
        ("2025-12-31t23:00:00.123456789z", datetime(2025, 12, 31, 23, 0, 0, 123456, tzinfo=UTC)),
        ("2025-12-31 23:00Z", datetime(2025, 12, 31, 23, 0, tzinfo=UTC)),
    ],
)
def test_every_accepted_time_is_stored_as_the_same_instant_on_both_databases(app, stamp, stored):
    cus = _setup(app)
    batch = [_event(cus, "before"), {**_event(cus, "odd", code="api_calls"), "timestamp": stamp}, _event(cus, "after")]
    with app.uow() as uow:
        assert len(usage.ingest(uow, batch).accepted) == 3
    with app.engine.connect() as conn:
        at = conn.execute(select(t.usage_events.c.occurred_at).where(t.usage_events.c.transaction_id == "odd")).scalar()
    assert at.replace(tzinfo=UTC) == stored


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-01-01T00:00:00+00:60",
        "2026-01-01T00:00:00+24:00",
        "20251231T235900Z",
        "2025-12-31T23Z",
        "2025-12-31",
        "1767225540",
        1767225540,
        "2025-W53-3T23:59:00",
    ],
)
def test_a_time_not_in_the_documented_form_is_refused_alone(app, stamp):
    cus = _setup(app)
    batch = [_event(cus, "ok"), {**_event(cus, "odd"), "timestamp": stamp}]
    with app.uow() as uow:
        result = usage.ingest(uow, batch)
    assert [a["transaction_id"] for a in result.accepted] == ["ok"]
    assert _codes(result) == {1: ("invalid_timestamp", "timestamp")}
