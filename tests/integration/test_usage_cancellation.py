"""Canceling usage events: a canceled event stops counting everywhere the meters aggregate (live usage, read
back), is answered `already_canceled` when canceled again, keeps its transaction id taken, and is recorded with its
reason; unknown, too old or malformed references are refused one by one and change nothing."""

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.domain.errors import ValidationError
from remit.service_layer import clocks, live_usage, subscriptions, usage, usage_cancellation, usage_events, usage_series
from remit.service_layer.scoping import Visibility
from remit.service_layer.usage_import import import_events
from tests import builders as b

START = datetime(2026, 3, 1, tzinfo=UTC)


def _setup(app):
    clock_id = b.clock(app, START)
    b.seller(app)
    cus = b.customer(app, clock_id)
    b.usage_plan(app)
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "api", anchor="calendar")
    clocks.advance(app.uow, clock_id, START + timedelta(days=9))
    return clock_id, cus


def _send(app, cus, *events):
    batch = [
        {
            "customer_id": cus,
            "code": "calls",
            "transaction_id": txn,
            "timestamp": at.isoformat(),
            "properties": {"n": n},
        }
        for txn, at, n in events
    ]
    with app.uow() as uow:
        result = usage.ingest(uow, batch)
    assert not result.rejected
    return result


def _cancel(app, *items, reason=None, **kwargs):
    with app.uow() as uow:
        return usage_cancellation.cancel_events(uow, list(items), reason=reason, **kwargs)


def _quantity(app, cus):
    with app.uow(read_only=True) as uow:
        shown = live_usage.live_usage(uow, cus)
    (sub,) = shown["subscriptions"]
    return sub["items"][0]["quantity"] if sub["items"] else "0"


def _canceled_events(app):
    with app.engine.connect() as conn:
        return [
            e["data"]
            for e in conn.execute(select(t.events).where(t.events.c.type == "usage.events_canceled")).mappings()
        ]


def test_a_canceled_event_stops_counting_and_is_shown_as_canceled(app):
    _, cus = _setup(app)
    _send(app, cus, ("a", START + timedelta(days=2), 100), ("b", START + timedelta(days=3), 40))
    assert _quantity(app, cus) == "140"
    result = _cancel(app, {"customer_id": cus, "transaction_id": "a"}, reason="sent by a test run")
    assert [(o["index"], o["transaction_id"]) for o in result.canceled] == [(0, "a")]
    assert result.canceled[0]["id"].startswith("uev_")
    assert not result.rejected and not result.already_canceled
    assert _quantity(app, cus) == "40"

    with app.uow(read_only=True) as uow:
        rows = {r["transaction_id"]: r for r in usage_events.list_usage_events(uow, cus)}
    assert (rows["a"]["counted"], rows["a"]["canceled_at"], rows["a"]["cancellation_reason"]) == (
        False,
        "2026-03-10T00:00:00Z",
        "sent by a test run",
    )
    assert (rows["b"]["counted"], rows["b"]["canceled_at"]) == (True, None)
    (event,) = _canceled_events(app)
    assert event["customer_id"] == cus and event["count"] == 1 and event["reason"] == "sent by a test run"
    assert [(e["transaction_id"], e["meter"], e["occurred_at"]) for e in event["events"]] == [
        ("a", "calls", "2026-03-03T00:00:00Z")
    ]


def test_canceling_again_changes_nothing_and_the_transaction_id_stays_taken(app):
    _, cus = _setup(app)
    _send(app, cus, ("a", START + timedelta(days=2), 100))
    first = _cancel(app, {"customer_id": cus, "transaction_id": "a"})
    again = _cancel(app, {"customer_id": cus, "transaction_id": "a"}, {"customer_id": cus, "transaction_id": "a"})
    assert len(first.canceled) == 1
    assert (again.canceled, [o["index"] for o in again.already_canceled]) == ([], [0, 1])
    assert len(_canceled_events(app)) == 1
    with app.uow() as uow:
        resent = usage.ingest(
            uow,
            [
                {
                    "customer_id": cus,
                    "code": "calls",
                    "transaction_id": "a",
                    "timestamp": "2026-03-04T00:00:00Z",
                    "properties": {"n": 7},
                }
            ],
        )
    assert [d["transaction_id"] for d in resent.duplicates] == ["a"]
    assert _quantity(app, cus) == "0"


def test_each_reference_is_answered_on_its_own_and_refused_ones_change_nothing(app):
    _, cus = _setup(app)
    _send(app, cus, ("ok", START + timedelta(days=2), 5), ("kept", START + timedelta(days=3), 6))
    result = _cancel(
        app,
        {"customer_id": cus, "transaction_id": "nope"},
        "not an object",
        {"customer_id": "cus_unknown", "transaction_id": "ok"},
        {"customer_id": cus, "transaction_id": ""},
        {"customer_id": cus, "transaction_id": "ok"},
        {"customer_id": cus},
    )
    assert [o["transaction_id"] for o in result.canceled] == ["ok"]
    assert [(o["index"], o["error"]["code"], o["error"]["field"]) for o in result.rejected] == [
        (0, "usage_event_not_found", "transaction_id"),
        (1, "invalid_event", "events"),
        (2, "unknown_customer", "customer_id"),
        (3, "invalid_transaction_id", "transaction_id"),
        (5, "invalid_transaction_id", "transaction_id"),
    ]
    assert _quantity(app, cus) == "6"
    # A customer the caller may not see is unknown to it.
    hidden = _cancel(
        app, {"customer_id": cus, "transaction_id": "kept"}, vis=Visibility(legal_entity_id="le_elsewhere")
    )
    assert [o["error"]["code"] for o in hidden.rejected] == ["unknown_customer"]
    assert _quantity(app, cus) == "6"


def test_a_whole_request_that_is_refused_changes_nothing(app):
    _, cus = _setup(app)
    _send(app, cus, ("a", START + timedelta(days=2), 5))
    too_many = [{"customer_id": cus, "transaction_id": f"x{i}"} for i in range(1001)]
    with pytest.raises(ValidationError) as exc:
        _cancel(app, *too_many)
    assert (exc.value.code, exc.value.field) == ("batch_too_large", "events")
    for bad in ("", "x" * 501, 5):
        with pytest.raises(ValidationError) as exc:
            _cancel(app, {"customer_id": cus, "transaction_id": "a"}, reason=bad)
        assert (exc.value.code, exc.value.field) == ("invalid_reason", "reason")
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.usage_event_cancellations)).scalar_one() == 0
    assert _quantity(app, cus) == "5"


def test_an_event_whose_period_can_no_longer_be_corrected_cannot_be_canceled(app):
    """March closed on 1 April; on 9 April (grace 7 days) an event of 25 March is too old to cancel, one of
    3 April (in the open period) is not."""
    clock_id, cus = _setup(app)
    clocks.advance(app.uow, clock_id, START + timedelta(days=25))
    _send(app, cus, ("march", START + timedelta(days=24), 5))
    clocks.advance(app.uow, clock_id, datetime(2026, 4, 3, tzinfo=UTC))
    _send(app, cus, ("april", datetime(2026, 4, 2, tzinfo=UTC), 9))
    clocks.advance(app.uow, clock_id, datetime(2026, 4, 9, tzinfo=UTC))
    result = _cancel(
        app, {"customer_id": cus, "transaction_id": "march"}, {"customer_id": cus, "transaction_id": "april"}
    )
    assert [o["transaction_id"] for o in result.canceled] == ["april"]
    ((refused),) = result.rejected
    assert (refused["transaction_id"], refused["error"]["code"]) == ("march", "too_late_to_cancel")
    assert "7 days" in refused["error"]["message"]


def test_events_are_canceled_by_the_customers_external_id_too(app):
    clock_id = b.clock(app, START)
    b.seller(app)
    b.usage_plan(app)
    cus = b.customer(app, clock_id, external_id="acme-42")
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "api", anchor="calendar")
    clocks.advance(app.uow, clock_id, START + timedelta(days=9))
    _send(app, cus, ("a", START + timedelta(days=2), 100), ("b", START + timedelta(days=3), 40))
    result = _cancel(
        app,
        {"external_customer_id": "acme-42", "transaction_id": "a"},
        {"external_customer_id": "nobody", "transaction_id": "b"},
        {"external_customer_id": "acme-42", "customer_id": cus, "transaction_id": "b"},
    )
    assert [(o["customer_id"], o["transaction_id"]) for o in result.canceled] == [(cus, "a")]
    assert [(o["index"], o["error"]["code"], o["error"]["field"]) for o in result.rejected] == [
        (1, "unknown_customer", "external_customer_id"),
        (2, "conflicting_customer_references", "external_customer_id"),
    ]
    hidden = _cancel(
        app,
        {"external_customer_id": "acme-42", "transaction_id": "b"},
        vis=Visibility(legal_entity_id="le_elsewhere"),
    )
    assert [(o["customer_id"], o["error"]["field"]) for o in hidden.rejected] == [(None, "external_customer_id")]
    assert _quantity(app, cus) == "40"


def test_an_event_imported_at_a_whole_second_counts_in_its_own_day_and_is_canceled(app):
    """SQLite compares times as text: the import must write them as every other path does (it once wrote
    ``2026-03-03 00:00:00`` for ``...00:00:00.000000``, which sorted into the day before and matched no
    cancellation)."""
    _, cus = _setup(app)
    at = "2026-03-03T00:00:00Z"  # a day's first instant, to the second
    event = {"customer_id": cus, "code": "calls", "transaction_id": "imp", "timestamp": at, "properties": {"n": 5}}
    assert import_events(app.engine, app.clock, [(1, event)]).accepted == 1
    with app.uow(read_only=True) as uow:
        days = usage_series.usage_series(uow, cus, "calls", date(2026, 3, 2), date(2026, 3, 4))["data"]
    assert [d["quantity"] for d in days] == ["0", "5"]
    assert len(_cancel(app, {"customer_id": cus, "transaction_id": "imp"}).canceled) == 1
    assert _quantity(app, cus) == "0"


def test_an_event_named_twice_in_a_request_is_answered_as_its_first_mention(app):
    _, cus = _setup(app)
    _send(app, cus, ("a", START + timedelta(days=2), 100))
    result = _cancel(
        app,
        {"customer_id": cus, "transaction_id": "nope"},
        {"customer_id": cus, "transaction_id": "nope"},
        {"customer_id": cus, "transaction_id": "a"},
        {"customer_id": cus, "transaction_id": "a"},
        {"customer_id": "cus_\x00", "transaction_id": "a"},
        {"customer_id": cus, "transaction_id": "\ud800"},
    )
    assert [o["index"] for o in result.canceled] == [2]
    assert [o["index"] for o in result.already_canceled] == [3]
    assert [(o["index"], o["error"]["code"]) for o in result.rejected] == [
        (0, "usage_event_not_found"),
        (1, "usage_event_not_found"),
        (4, "unknown_customer"),
        (5, "invalid_transaction_id"),
    ]
