"""A customer's usage of a meter over time: buckets of the customer's local days (or hours from its local
midnight, 23 of them on the day clocks go forward), each aggregated as the bill run aggregates a window; canceled
events left out; a time-weighted meter's level carried from before the first bucket; groups listed; bad requests
refused with the field at fault."""

from datetime import UTC, date, datetime

import pytest

from remit.domain.errors import NotFound, ValidationError
from remit.service_layer import usage, usage_cancellation, usage_series
from remit.service_layer.scoping import Visibility
from tests import builders as b


def _setup(app, at=datetime(2026, 3, 6, tzinfo=UTC)):
    b.seller(app)
    clock_id = b.clock(app, at)
    cus = b.customer(app, clock_id, timezone="Europe/Berlin")
    with app.uow() as uow:
        usage.create_meter(uow, "calls", "Calls", "sum", "n", group_by=["region"])
        usage.create_meter(uow, "storage", "Storage", "weighted_sum", "gb")
    return cus


def _send(app, cus, code, *events):
    batch = [
        {"customer_id": cus, "code": code, "transaction_id": f"{code}-{i}", "timestamp": at, "properties": props}
        for i, (at, props) in enumerate(events)
    ]
    with app.uow() as uow:
        result = usage.ingest(uow, batch)
    assert not result.rejected, result.rejected


def _series(app, cus, meter, start_on, end_on, granularity="day", **kwargs):
    with app.uow(read_only=True) as uow:
        return usage_series.usage_series(uow, cus, meter, start_on, end_on, granularity, **kwargs)


def test_days_are_the_customers_local_days_and_groups_are_listed(app):
    cus = _setup(app)
    _send(
        app,
        cus,
        "calls",
        ("2026-03-02T09:00:00Z", {"n": 5, "region": "eu"}),  # 10:00 in Berlin
        ("2026-03-02T22:30:00Z", {"n": 7, "region": "us"}),  # 23:30 in Berlin: still 2 March there
        ("2026-03-02T23:30:00Z", {"n": 11, "region": "eu"}),  # 00:30 on 3 March in Berlin
    )
    got = _series(app, cus, "calls", date(2026, 3, 1), date(2026, 3, 4))
    assert (got["timezone"], got["aggregation"], got["granularity"]) == ("Europe/Berlin", "sum", "day")
    assert [(d["start"], d["quantity"], d["events"]) for d in got["data"]] == [
        ("2026-02-28T23:00:00Z", "0", 0),
        ("2026-03-01T23:00:00Z", "12", 2),
        ("2026-03-02T23:00:00Z", "11", 1),
    ]
    assert got["data"][1]["groups"] == [
        {"group": {"region": "eu"}, "quantity": "5", "events": 1},
        {"group": {"region": "us"}, "quantity": "7", "events": 1},
    ]
    hours = _series(app, cus, "calls", date(2026, 3, 2), date(2026, 3, 3), "hour")["data"]
    assert len(hours) == 24 and sum(d["events"] for d in hours) == 2
    assert [(h["start"], h["quantity"]) for h in hours if h["events"]] == [
        ("2026-03-02T09:00:00Z", "5"),
        ("2026-03-02T22:00:00Z", "7"),
    ]
    with app.uow() as uow:  # a canceled event no longer counts
        usage_cancellation.cancel_events(uow, [{"customer_id": cus, "transaction_id": "calls-1"}])
    assert _series(app, cus, "calls", date(2026, 3, 2), date(2026, 3, 3))["data"][0]["quantity"] == "5"


def test_the_day_clocks_go_forward_has_23_hours(app):
    cus = _setup(app, at=datetime(2026, 3, 30, tzinfo=UTC))
    _send(app, cus, "calls", ("2026-03-29T01:30:00Z", {"n": 1, "region": "eu"}))  # 03:30 CEST
    hours = _series(app, cus, "calls", date(2026, 3, 29), date(2026, 3, 30), "hour")["data"]
    assert len(hours) == 23
    assert (hours[0]["start"], hours[-1]["end"]) == ("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z")
    assert [h["start"] for h in hours if h["events"]] == ["2026-03-29T01:00:00Z"]


def test_a_time_weighted_meter_gives_each_days_average_level_from_the_level_before(app):
    cus = _setup(app)
    _send(
        app,
        cus,
        "storage",
        ("2026-03-01T23:00:00Z", {"gb": 10}),  # 10 GB from midnight on 2 March (Berlin)
        ("2026-03-03T11:00:00Z", {"gb": -4}),  # 6 GB from noon on 3 March
    )
    got = _series(app, cus, "storage", date(2026, 3, 1), date(2026, 3, 5))["data"]
    assert [d["quantity"] for d in got] == ["0", "10", "8", "6"]
    assert [d["quantity"] for d in _series(app, cus, "storage", date(2026, 3, 4), date(2026, 3, 5))["data"]] == ["6"]
    assert "groups" not in got[0]


def test_bad_requests_are_refused_with_the_field(app):
    cus = _setup(app)
    for args, code, field in (
        (("nope", date(2026, 3, 1), date(2026, 3, 2)), "meter_not_found", "meter"),
        (("calls", date(2026, 3, 2), date(2026, 3, 2)), "dates_out_of_order", "end_on"),
        (("calls", date(2026, 1, 1), date(2027, 1, 3)), "too_many_buckets", "end_on"),
        (("calls", date(2026, 1, 1), date(2026, 2, 2), "hour"), "too_many_buckets", "end_on"),
        (("calls", date(2026, 3, 1), date(2026, 3, 2), "week"), "invalid_choice", "granularity"),
    ):
        with pytest.raises((ValidationError, NotFound)) as exc:
            _series(app, cus, *args)
        assert (exc.value.code, exc.value.field) == (code, field)
    assert len(_series(app, cus, "calls", date(2026, 1, 1), date(2027, 1, 2))["data"]) == 366
    with pytest.raises(NotFound) as exc:
        _series(app, cus, "calls", date(2026, 3, 1), date(2026, 3, 2), vis=Visibility(legal_entity_id="le_other"))
    assert exc.value.code == "customer_not_found"


def test_hours_are_local_hours_even_where_clocks_move_half_an_hour(app):
    """Lord Howe Island turns its clocks back half an hour at 02:00 on 5 April 2026 (UTC+11 to UTC+10:30): the
    day has 24.5 hours and 24 local hours, the one of the change 1.5 hours long; an event at 23:45 local time falls
    in the bucket of 23:00."""
    b.seller(app)
    clock_id = b.clock(app, datetime(2026, 4, 6, tzinfo=UTC))
    cus = b.customer(app, clock_id, timezone="Australia/Lord_Howe")
    with app.uow() as uow:
        usage.create_meter(uow, "calls", "Calls", "count")
    _send(app, cus, "calls", ("2026-04-05T13:15:00Z", {}))  # 23:45 at UTC+10:30
    hours = _series(app, cus, "calls", date(2026, 4, 5), date(2026, 4, 6), "hour")["data"]
    assert len(hours) == 24 and (hours[0]["start"], hours[-1]["end"]) == (
        "2026-04-04T13:00:00Z",
        "2026-04-05T13:30:00Z",
    )
    assert (hours[1]["start"], hours[2]["start"]) == ("2026-04-04T14:00:00Z", "2026-04-04T15:30:00Z")  # 01:00, 02:00
    assert [h["start"] for h in hours if h["events"]] == ["2026-04-05T12:30:00Z"]


def test_berlins_clock_changes_give_23_and_25_hours(app):
    cus = _setup(app, at=datetime(2026, 11, 2, tzinfo=UTC))
    assert len(_series(app, cus, "calls", date(2026, 3, 29), date(2026, 3, 30), "hour")["data"]) == 23
    autumn = _series(app, cus, "calls", date(2026, 10, 25), date(2026, 10, 26), "hour")["data"]
    assert len(autumn) == 25 and autumn[2]["start"] == "2026-10-25T00:00:00Z"  # 02:00 summer time, then again


def test_a_31_day_month_with_the_extra_autumn_hour_fits_by_hour(app):
    cus = _setup(app, at=datetime(2026, 11, 2, tzinfo=UTC))
    assert len(_series(app, cus, "calls", date(2026, 10, 1), date(2026, 11, 1), "hour")["data"]) == 745


def test_days_out_of_range_are_refused(app):
    cus = _setup(app)
    for start, end, field in (
        (date(1, 1, 1), date(1, 1, 2), "start_on"),
        (date(9999, 12, 30), date(9999, 12, 31), "start_on"),
    ):
        with pytest.raises(ValidationError) as exc:
            _series(app, cus, "calls", start, end)
        assert (exc.value.code, exc.value.field) == ("date_out_of_range", field)
