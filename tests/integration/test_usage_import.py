"""The bulk import path (`remit events import`): the API's rules and deduplication, chunk by chunk, on both
databases; refused lines reported with their line and reason; concurrent imports of one file count each event
once (PostgreSQL)."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.service_layer import usage
from remit.service_layer.usage_import import import_events
from tests import builders as b

NOW = datetime(2026, 1, 1, tzinfo=UTC)
WIDE = usage.UsageSettings(grace=timedelta(days=60))


def _setup(app):
    b.seller(app)
    customers = [b.customer(app, None), b.customer(app, None)]
    with app.uow() as uow:
        usage.create_meter(uow, "api_calls", "API calls", "count")
        usage.create_meter(
            uow, "tokens", "Tokens", "sum", "tokens", filters={"model": ["small", "large"]}, group_by=["region"]
        )
        usage.create_meter(uow, "users", "Active users", "unique_count", "user")
    return customers


def _event(cus, txn, code="tokens", at=NOW - timedelta(minutes=1), **props):
    props = props or {"tokens": "1500", "model": "small", "region": "eu"}
    return {"customer_id": cus, "code": code, "transaction_id": txn, "timestamp": at.isoformat(), "properties": props}


def _lines(events):
    return [(i + 1, e) for i, e in enumerate(events)]


def _stored(app):
    with app.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.usage_events)).scalar_one()


def _rows(app):
    """Every stored event, without what differs between two receptions of it (its id and reception time)."""
    columns = [c for c in t.usage_events.c if c.name not in ("id", "received_at")]
    with app.engine.connect() as conn:
        rows = conn.execute(select(*columns)).mappings().all()
        keys = conn.execute(select(t.usage_event_keys.c.customer_id, t.usage_event_keys.c.transaction_id)).all()
    return sorted(repr(sorted(r.items())) for r in rows), sorted(keys)


def _mixed(cus, other):
    return [
        _event(cus, "a"),
        _event(cus, "b", code="api_calls", path="/v1/x"),
        _event(cus, "a"),  # repeated in the same chunk
        _event(cus, "c", tokens="lots", model="small", region="eu"),  # not numeric
        _event(cus, "d", tokens="5", region="eu"),  # missing the filter property
        _event("cus_nobody", "e"),
        _event(cus, "f", code="nope"),
        _event(cus, "g", at=NOW + timedelta(hours=1)),
        _event(cus, "h", at=NOW - timedelta(days=90)),
        _event(cus, "i", code="users", user='u\t1\\\n"é'),
        "not an object",
        None,  # a line that did not parse
        _event(other, "a", tokens=7.25, model="large", region='e"u\\'),  # same id, another customer: its own
        _event(cus, 'tab\there\nnewline\\back"quote', code="api_calls", note="ünïcødé ✓", nested={"x": [1, None]}),
        _event(cus, "late", at=NOW - timedelta(days=30)),  # within the import's wider grace
        _event(cus, "a", tokens="9", model="large", region="us"),  # repeated in a later chunk (chunk size 4)
        _event(other, "a"),  # repeated in a later chunk
        {**_event(cus, "z1"), "timestamp": "2025-12-31T23:00:00Z"},  # times in other notations: the same instant
        {**_event(cus, "z2"), "timestamp": "2026-01-01T04:29:00.25+05:30"},
        {**_event(cus, "z3"), "timestamp": "2025-12-31T23:00:00"},  # no offset: UTC
    ]


def test_import_checks_each_line_and_counts_each_event_once(app):
    cus, other = _setup(app)
    report = import_events(app.engine, app.clock, _lines(_mixed(cus, other)), settings=WIDE, chunk_size=4)
    assert (report.lines, report.accepted, report.duplicates, report.rejected) == (20, 9, 3, 8)
    assert [(r["line"], r["code"], r["field"]) for r in report.rejected_events] == [
        (4, "not_numeric", "properties.tokens"),
        (5, "missing_property", "properties.model"),
        (6, "unknown_customer", "customer_id"),
        (7, "unknown_meter", "code"),
        (8, "timestamp_in_future", "timestamp"),
        (9, "event_too_old", "timestamp"),
        (11, "invalid_event", "events"),
        (12, "invalid_json", None),
    ]
    assert report.rejected_events[0]["transaction_id"] == "c"
    assert _stored(app) == 9
    with app.engine.connect() as conn:
        times = conn.execute(
            select(t.usage_events.c.occurred_at).where(t.usage_events.c.transaction_id.in_(["z1", "z2", "z3"]))
        ).scalars()
        assert sorted(times) == [
            datetime(2025, 12, 31, 22, 59, 0, 250000, tzinfo=UTC),
            datetime(2025, 12, 31, 23, tzinfo=UTC),
            datetime(2025, 12, 31, 23, tzinfo=UTC),
        ]
    with app.engine.connect() as conn:
        row = (
            conn.execute(
                select(t.usage_events).where(
                    t.usage_events.c.transaction_id == "a", t.usage_events.c.customer_id == cus
                )
            )
            .mappings()
            .one()
        )
    assert str(row["value"]) == "1500" and row["group_key"] == '["eu"]' and row["matched"] is True


def test_the_default_grace_is_the_apis(app):
    cus, _ = _setup(app)
    report = import_events(app.engine, app.clock, _lines([_event(cus, "late", at=NOW - timedelta(days=8))]))
    assert report.rejected_events[0]["code"] == "event_too_old"


def test_importing_again_stores_nothing_twice(app):
    cus, other = _setup(app)
    events = [_event(cus if i % 2 else other, f"t{i}") for i in range(50)]
    first = import_events(app.engine, app.clock, _lines(events), chunk_size=16)
    second = import_events(app.engine, app.clock, _lines(list(reversed(events))), chunk_size=7)
    assert (first.accepted, first.duplicates) == (50, 0)
    assert (second.accepted, second.duplicates) == (0, 50)
    with app.uow() as uow:  # and the API agrees: they were received already
        assert len(usage.ingest(uow, events[:10]).duplicates) == 10
    assert _stored(app) == 50


def test_events_sent_to_the_api_first_are_duplicates_on_import(app):
    cus, _ = _setup(app)
    events = [_event(cus, f"t{i}") for i in range(10)]
    with app.uow() as uow:
        usage.ingest(uow, events[:4])
    report = import_events(app.engine, app.clock, _lines(events), chunk_size=3)
    assert (report.accepted, report.duplicates) == (6, 4)
    assert _stored(app) == 10


def test_import_stores_exactly_what_the_api_stores(app):
    cus, other = _setup(app)
    events = _mixed(cus, other)
    api = usage.IngestResult()
    for start in range(0, len(events), 4):  # the same chunks, through ingest()
        with app.uow() as uow:
            part = usage.ingest(uow, events[start : start + 4], settings=WIDE)
        api.accepted += part.accepted
        api.duplicates += part.duplicates
        api.rejected += [{**r, "index": start + r["index"]} for r in part.rejected]
    through_api = _rows(app)
    with app.engine.begin() as conn:
        conn.execute(t.usage_events.delete())
        conn.execute(t.usage_event_keys.delete())
    report = import_events(app.engine, app.clock, _lines(events), settings=WIDE, chunk_size=4)
    assert (report.accepted, report.duplicates, report.rejected) == (
        len(api.accepted),
        len(api.duplicates),
        len(api.rejected),
    )
    assert sorted(r["code"] for r in report.rejected_events) == sorted(
        "invalid_json" if events[r["index"]] is None else r["error"]["code"] for r in api.rejected
    )
    assert _rows(app) == through_api


@pytest.mark.postgres
def test_concurrent_imports_of_one_file_count_each_event_once(postgres_url):
    from remit.adapters.db.engine import make_engine
    from remit.bootstrap import Remit
    from remit.domain.clock import FixedClock

    app = Remit(make_engine(postgres_url), FixedClock(NOW))
    with app.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())
    cus, other = _setup(app)
    events = [_event(cus if i % 3 else other, f"race{i}") for i in range(3000)]
    orders = [events, events, list(reversed(events))]  # the same file twice, and once backwards
    barrier = threading.Barrier(len(orders))
    reports = []
    errors = []

    def run(items) -> None:
        barrier.wait()
        try:
            reports.append(import_events(app.engine, app.clock, _lines(items), chunk_size=500))
        except Exception as exc:  # e.g. a deadlock: reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(o,)) for o in orders]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert sum(r.accepted for r in reports) == 3000
    assert sum(r.duplicates for r in reports) == 6000
    assert _stored(app) == 3000
    app.engine.dispose()


def test_an_import_stores_odd_offsets_as_the_api_does_and_refuses_bad_times_alone(app):
    cus, _ = _setup(app)
    events = [
        _event(cus, "a"),
        {**_event(cus, "sixteen"), "timestamp": "2026-01-01T15:00:00+16:00"},  # PostgreSQL reads no such offset
        {**_event(cus, "sixty"), "timestamp": "2026-01-01T00:00:00+00:60"},
        {**_event(cus, "overflow"), "timestamp": "0001-01-01T00:00:00+01:00"},
        {**_event(cus, "listed"), "customer_id": [cus]},
        _event(cus, "b"),
    ]
    report = import_events(app.engine, app.clock, _lines(events))
    assert (report.accepted, report.rejected) == (3, 3)
    assert [(e["line"], e["code"]) for e in report.rejected_events] == [
        (3, "invalid_timestamp"),
        (4, "invalid_timestamp"),
        (5, "unknown_customer"),
    ]
    with app.engine.connect() as conn:
        at = conn.execute(select(t.usage_events.c.occurred_at).where(t.usage_events.c.transaction_id == "sixteen"))
        assert at.scalar().replace(tzinfo=UTC) == datetime(2025, 12, 31, 23, tzinfo=UTC)
