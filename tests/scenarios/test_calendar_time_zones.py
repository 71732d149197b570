"""Calendar edges of usage billing on the test clock: customers in time zones with DST changes, 30-minute shifts,
+14 and negative offsets; events sent with offsets or as Z at the first and last instants of a local month."""

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from remit.service_layer import catalog, clocks, live_usage, subscriptions, usage
from tests import builders as b

ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "America/Santiago",
]


def _local(tz, *args):
    return datetime(*args, tzinfo=ZoneInfo(tz))


def _setup(
    app, tz, start, meter="api_calls", aggregation="sum", field="calls", unit_price="1.00", interval="month", **sub
):
    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, meter, meter, aggregation, field)
    with app.uow() as uow:
        catalog.create_plan(
            uow,
            "api",
            "Api",
            [
                {
                    "currency": "EUR",
                    "model": "per_unit",
                    "config": {"unit_price": unit_price},
                    "name": "Usage",
                    "interval": interval,
                    "usage": {"meter": meter},
                }
            ],
        )
    clock_id = b.clock(app, start.astimezone(ZoneInfo("UTC")))
    cus = b.customer(app, clock_id, timezone=tz)
    with app.uow() as uow:
        sub_id = subscriptions.create_subscription(uow, cus, "api", **({"anchor": "calendar"} | sub))
    return clock_id, cus, sub_id


def _send(app, cus, stamp, value, code="api_calls", field="calls"):
    with app.uow() as uow:
        result = usage.ingest(
            uow,
            [
                {
                    "customer_id": cus,
                    "code": code,
                    "transaction_id": f"t-{stamp}",
                    "timestamp": stamp,
                    "properties": {field: value},
                }
            ],
        )
    assert not result.rejected, result.rejected
    return result


def _advance(app, clock_id, at):
    clocks.advance(app.uow, clock_id, at.astimezone(ZoneInfo("UTC")))


@pytest.mark.parametrize("tz", ZONES)
def test_the_last_second_of_a_local_month_is_billed_in_it_and_the_first_half_hour_of_the_next_in_that(app, tz):
    """23:59:59 local on 31 March (sent as Z) belongs to March; 00:30 local on 1 April (sent with the local offset)
    to April; the clock advanced exactly to local midnight bills the month that ends then, no more."""
    clock_id, cus, sub = _setup(app, tz, _local(tz, 2026, 3, 1))
    last = _local(tz, 2026, 3, 31, 23, 59, 59)
    _advance(app, clock_id, last)
    _send(app, cus, last.astimezone(ZoneInfo("UTC")).isoformat().replace("+00:00", "Z"), 7)
    first = _local(tz, 2026, 4, 1, 0, 30)
    _advance(app, clock_id, first)
    _send(app, cus, first.isoformat(), 5)
    with app.uow() as uow:
        live = live_usage.live_usage(uow, cus)
    (current,) = live["subscriptions"]
    assert current["period"] == {"start_on": "2026-04-01", "end_on": "2026-05-01"}
    assert current["amount"] == "5.00"
    _advance(app, clock_id, _local(tz, 2026, 5, 1))
    assert b.lines_of(app, cus) == [
        ("usage", "2026-03-01", "2026-04-01", "7.00"),
        ("usage", "2026-04-01", "2026-05-01", "5.00"),
    ]


@pytest.mark.parametrize(
    ("tz", "month", "expected"),
    [
        # March 2026 in New York has a day of 23 hours (8 March): 15 of 31 days, as a fee would be prorated,
        # 100 GB × 15/31 × 2.00 = 96.77 (by the clock's hours it would be 359/743: 96.64).
        ("America/New_York", 3, "96.77"),
        # October 2026 in Berlin has a day of 25 hours (25 October): the first 15 days hold no clock change.
        ("Europe/Berlin", 10, "96.77"),
        # April 2026 on Lord Howe Island has a day of 24.5 hours (5 April): 100 × 15/30 × 2.00 = 100.00.
        ("Australia/Lord_Howe", 4, "100.00"),
        # November 2026 in New York: 1 November has 25 hours, inside the 15 days: still 15/30.
        ("America/New_York", 11, "100.00"),
    ],
)
def test_a_level_held_for_whole_local_days_bills_those_days_share_even_across_a_clock_change(app, tz, month, expected):
    """A time-weighted meter prorates by local days, as fees are: 100 GB held from the 1st to the 16th (local
    midnight) of a month with a clock change bills 15 days' share of the month, not its share of the hours."""
    start = _local(tz, 2026, month - 1, 20)
    clock_id, cus, _sub = _setup(
        app, tz, start, meter="storage", aggregation="weighted_sum", field="gb", unit_price="2.00"
    )
    _send(app, cus, start.isoformat(), 100, code="storage", field="gb")
    drop = _local(tz, 2026, month, 16)
    _advance(app, clock_id, drop)
    _send(app, cus, drop.isoformat(), -100, code="storage", field="gb")
    _advance(app, clock_id, _local(tz, 2026, month + 1, 1))
    assert b.lines_of(app, cus)[1] == ("usage", f"2026-{month:02d}-01", f"2026-{month + 1:02d}-01", expected)


@pytest.mark.parametrize("tz", ["Europe/Berlin", "Pacific/Kiritimati", "America/Los_Angeles"])
def test_an_anniversary_on_the_31st_bills_usage_up_to_the_last_second_before_28_february_local(app, tz):
    """Started 31 January: the periods are [31 Jan, 28 Feb) and [28 Feb, 31 Mar) in local days."""
    clock_id, cus, _sub = _setup(app, tz, _local(tz, 2026, 1, 31, 9), anchor="anniversary")
    last = _local(tz, 2026, 2, 27, 23, 59, 59)
    _advance(app, clock_id, last)
    _send(app, cus, last.isoformat(), 3)
    first = _local(tz, 2026, 2, 28, 0, 0, 1)
    _advance(app, clock_id, first)
    _send(app, cus, first.astimezone(ZoneInfo("UTC")).isoformat().replace("+00:00", "Z"), 4)
    _advance(app, clock_id, _local(tz, 2026, 3, 31))
    assert b.lines_of(app, cus) == [
        ("usage", "2026-01-31", "2026-02-28", "3.00"),
        ("usage", "2026-02-28", "2026-03-31", "4.00"),
    ]


def test_a_yearly_anniversary_on_29_february_bills_each_year_to_the_end_of_february_plus_fourteen(app):
    """Kiritimati (+14): started 29 Feb 2028 local, the years are [29 Feb 2028, 28 Feb 2029), [28 Feb 2029, ...)."""
    tz = "Pacific/Kiritimati"
    clock_id, cus, _sub = _setup(app, tz, _local(tz, 2028, 2, 29, 0, 10), anchor="anniversary", interval="year")
    last = _local(tz, 2029, 2, 27, 23, 59, 59)
    _advance(app, clock_id, last)
    _send(app, cus, last.isoformat(), 2)
    _advance(app, clock_id, _local(tz, 2029, 2, 28))
    _send(app, cus, _local(tz, 2029, 2, 28).isoformat(), 6)
    _advance(app, clock_id, _local(tz, 2030, 2, 28))
    assert b.lines_of(app, cus) == [
        ("usage", "2028-02-29", "2029-02-28", "2.00"),
        ("usage", "2029-02-28", "2030-02-28", "6.00"),
    ]


def test_a_level_dropped_on_the_16th_bills_as_a_pause_from_the_16th_does_across_a_clock_change(app):
    """New York, March 2026 (8 March has 23 hours): 100 GB until a pause from 16 March bills 15 of 31 days, as
    100 GB that drops to 0 on 16 March does (the pause splits the period by days; the drop is inside one window)."""
    tz = "America/New_York"
    start = _local(tz, 2026, 2, 20)
    clock_id, cus, sub = _setup(
        app, tz, start, meter="storage", aggregation="weighted_sum", field="gb", unit_price="2.00"
    )
    _send(app, cus, start.isoformat(), 100, code="storage", field="gb")
    with app.uow() as uow:
        subscriptions.pause(uow, sub, when=date(2026, 3, 16))
    _advance(app, clock_id, _local(tz, 2026, 4, 1))
    assert b.lines_of(app, cus)[1] == ("usage", "2026-03-01", "2026-03-16", "96.77")
