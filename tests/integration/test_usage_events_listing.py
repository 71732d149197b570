"""Reading usage events back: a customer's events oldest first, filtered by meter, time and transaction id, paged
by id across equal times, with what each meter takes from them; unknown ids and bad ranges refused."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from remit.domain.errors import NotFound, ValidationError
from remit.service_layer import usage, usage_events
from tests import builders as b

NOW = datetime(2026, 1, 1, tzinfo=UTC)
T1, T2 = NOW - timedelta(hours=2), NOW - timedelta(hours=1)


def _setup(app):
    b.seller(app)
    cus, other = b.customer(app, None), b.customer(app, None)
    with app.uow() as uow:
        usage.create_meter(uow, "api_calls", "API calls", "count")
        usage.create_meter(
            uow, "tokens", "Tokens", "sum", "tokens", filters={"model": ["small", "large"]}, group_by=["region"]
        )

    def event(customer, txn, code, at, **props):
        return {"customer_id": customer, "code": code, "transaction_id": txn, "timestamp": at.isoformat(), **props}

    with app.uow() as uow:
        result = usage.ingest(
            uow,
            [
                event(cus, "t-2", "tokens", T2, properties={"tokens": "1.50", "model": "small", "region": "eu"}),
                event(cus, "t-1", "tokens", T1, properties={"tokens": "7", "model": "medium", "region": "us"}),
                event(cus, "c-1", "api_calls", T1, properties={"path": "/v1/x"}),
                event(cus, "c-2", "api_calls", T1, properties={}),
                event(other, "c-1", "api_calls", T1, properties={}),
            ],
        )
    assert len(result.accepted) == 5
    return cus


def _list(app, cus, **kwargs):
    with app.uow(read_only=True) as uow:
        return usage_events.list_usage_events(uow, cus, **kwargs)


def test_a_customers_events_oldest_first_with_what_their_meter_takes_from_them(app):
    cus = _setup(app)
    rows = _list(app, cus)
    assert [(r["meter"], r["transaction_id"], r["occurred_at"]) for r in rows][-1] == (
        "tokens",
        "t-2",
        "2025-12-31T23:00:00Z",
    )
    assert sorted(r["transaction_id"] for r in rows[:3]) == ["c-1", "c-2", "t-1"]  # at T1: ordered by id
    assert [r["id"] for r in rows[:3]] == sorted(r["id"] for r in rows[:3])
    tokens = {r["transaction_id"]: r for r in rows if r["meter"] == "tokens"}
    assert (tokens["t-2"]["value"], tokens["t-2"]["group"], tokens["t-2"]["counted"]) == (
        "1.50",
        {"region": "eu"},
        True,
    )
    assert (tokens["t-1"]["value"], tokens["t-1"]["counted"]) == ("7", False)  # "medium" is not in the filter
    assert tokens["t-2"]["properties"] == {"tokens": "1.50", "model": "small", "region": "eu"}
    assert all(r["object"] == "usage_event" and r["customer_id"] == cus and r["received_at"] for r in rows)


def test_filters_and_paging(app):
    cus = _setup(app)
    assert [r["transaction_id"] for r in _list(app, cus, meter_code="tokens")] == ["t-1", "t-2"]
    assert [r["transaction_id"] for r in _list(app, cus, occurred_gte=T2)] == ["t-2"]
    assert len(_list(app, cus, occurred_lt=T2)) == 3
    assert [r["meter"] for r in _list(app, cus, transaction_id="c-1")] == ["api_calls"]  # not the other customer's
    everything = [r["id"] for r in _list(app, cus)]
    paged, after = [], None
    while True:
        page = _list(app, cus, limit=1, after=after)
        if not page:
            break
        paged.append(page[0]["id"])
        after = page[0]["id"]
    assert paged == everything  # one by one, through three events at the same time


def test_unknown_ids_and_bad_ranges_are_refused(app):
    cus = _setup(app)
    with pytest.raises(NotFound) as nobody:
        _list(app, "cus_nobody")
    assert (nobody.value.code, nobody.value.field) == ("customer_not_found", "customer_id")
    with pytest.raises(NotFound) as cursor:
        _list(app, cus, after="uev_nope")
    assert (cursor.value.code, cursor.value.field) == ("usage_event_not_found", "starting_after")
    with pytest.raises(ValidationError) as order:
        _list(app, cus, occurred_gte=T2, occurred_lt=T1)
    assert (order.value.code, order.value.field) == ("dates_out_of_order", "occurred_lt")


def test_the_events_of_one_group_of_a_meters_dimensions(app):
    cus = _setup(app)
    assert [r["transaction_id"] for r in _list(app, cus, meter_code="tokens", group={"region": "us"})] == ["t-1"]
    assert [r["transaction_id"] for r in _list(app, cus, meter_code="tokens", group={"region": "eu"})] == ["t-2"]
    assert _list(app, cus, meter_code="tokens", group={"region": "apac"}) == []
    for kwargs, code, field in (
        ({"group": {"region": "eu"}}, "missing_meter", "meter"),
        ({"meter_code": "tokens", "group": {"model": "small"}}, "invalid_group", "group"),
        ({"meter_code": "tokens", "group": {"region": "eu", "model": "small"}}, "invalid_group", "group"),
        ({"meter_code": "api_calls", "group": {"region": "eu"}}, "invalid_group", "group"),
        ({"meter_code": "nope", "group": {"region": "eu"}}, "meter_not_found", "meter"),
    ):
        with pytest.raises((ValidationError, NotFound)) as exc:
            _list(app, cus, **kwargs)
        assert (exc.value.code, exc.value.field) == (code, field)


def test_text_no_database_holds_and_times_out_of_range(app):
    cus = _setup(app)
    assert _list(app, cus, meter_code="tok\x00ens") == []
    assert _list(app, cus, transaction_id="t\ud800") == []
    with pytest.raises(NotFound) as exc:
        _list(app, "cus_\x00")
    assert exc.value.field == "customer_id"
    with pytest.raises(NotFound) as exc:
        _list(app, cus, after="uev_\x00")
    assert exc.value.field == "starting_after"
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    with pytest.raises(ValidationError) as invalid:
        _list(app, cus, occurred_gte=early)
    assert (invalid.value.code, invalid.value.field) == ("invalid_date", "occurred_gte")
