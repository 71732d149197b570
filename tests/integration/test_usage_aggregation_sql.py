"""The set-wise SQL aggregation equals the pure reference aggregation, on both databases."""

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, event, select

from remit.adapters.db import tables as t
from remit.adapters.db.usage_queries import Window, aggregate_usage, reference
from remit.bootstrap import Remit
from remit.domain.rating.aggregations import Aggregate, Aggregation, Meter
from remit.service_layer import usage
from tests import builders as b

START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)
METERS = {
    "calls": Meter("calls", Aggregation.COUNT),
    "tokens": Meter("tokens", Aggregation.SUM, "n", filters={"model": ("a", "b")}, group_by=("region",)),
    "bytes": Meter("bytes", Aggregation.SUM, "n"),  # one group: SQLite's per-customer path when all are whole
    "peak": Meter("peak", Aggregation.MAX, "n"),
    "users": Meter("users", Aggregation.UNIQUE_COUNT, "user"),
    "last": Meter("last", Aggregation.LATEST, "n"),
    "gb": Meter("gb", Aggregation.WEIGHTED_SUM, "n", group_by=("region",)),
    # the last value before each window's end, however old (windows start after some events)
    "seats": Meter("seats", Aggregation.LATEST, "n", group_by=("region",), carry_over=True),
}
EVENT = st.tuples(
    st.sampled_from(sorted(METERS)),
    st.integers(0, 40 * 24),  # hour offset: some fall after the window
    st.decimals(min_value=-1000, max_value=1000, places=3, allow_nan=False, allow_infinity=False),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(["eu", "us"]),
    st.sampled_from(["u1", "u2", "u3"]),
)


def _load(app: Remit, customers: list[str], events: list[tuple[Any, ...]]) -> None:
    """Insert through the real ingestion path so stored rows are exactly what production stores."""
    with app.engine.begin() as conn:
        conn.execute(t.usage_events.delete())
        conn.execute(t.usage_event_keys.delete())
    rows = []
    for i, (code, hour, n, model, region, user) in enumerate(events):
        rows.append(
            {
                "customer_id": customers[i % len(customers)],
                "code": code,
                "transaction_id": f"t{i}",
                "timestamp": (START + timedelta(hours=hour)).isoformat(),
                "properties": {"n": str(n), "model": model, "region": region, "user": user},
            }
        )
    clock_at = START + timedelta(days=41)
    app.clock.move_to(clock_at)
    with app.uow() as uow:
        result = usage.ingest(uow, rows, settings=usage.UsageSettings(grace=timedelta(days=60)))
    assert not [r for r in result.rejected if r["error"]["code"] != "missing_property"], result.rejected


def _create_meters(app: Remit, codes: Iterable[str]) -> None:
    with app.uow() as uow:
        for code in codes:
            m = METERS[code]
            filters = {k: list(v) for k, v in m.filters.items()}
            usage.create_meter(
                uow, m.code, m.code, m.aggregation.value, m.field, filters, m.group_by, carry_over=m.carry_over
            )


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(events=st.lists(EVENT, max_size=60))
def test_sql_aggregation_equals_the_reference(app: Remit, events: list[tuple[Any, ...]]) -> None:
    if not getattr(app, "_usage_ready", False):
        b.seller(app)
        app._customers = [b.customer(app, None), b.customer(app, None)]
        _create_meters(app, METERS)
        app._usage_ready = True
    _load(app, app._customers, events)
    # Windows of different spans: the second customer's month starts later, and the first customer has a second,
    # overlapping window (as after a mid-period plan change), so spans are grouped and told apart correctly.
    first, second = app._customers
    windows = [Window(first, code, START, END) for code in METERS]
    windows += [Window(first, code, START + timedelta(days=5), START + timedelta(days=20)) for code in METERS]
    windows += [Window(second, code, START + timedelta(days=10), END + timedelta(days=10)) for code in METERS]
    with app.engine.connect() as conn:
        got = aggregate_usage(conn, METERS, windows)
        stored = [dict(r) for r in conn.execute(select(t.usage_events)).mappings()]
    expected = reference(METERS, stored, windows)
    # The weighted reference also yields groups for windows with no events only when a starting level exists.
    assert {k: (v.quantity, v.events) for k, v in got.items()} == {
        k: (v.quantity, v.events) for k, v in expected.items()
    }
    for key, agg in got.items():
        assert isinstance(agg.quantity, Decimal), key


def test_the_latest_of_events_at_the_same_moment_is_the_one_with_the_greatest_transaction_id(app: Remit) -> None:
    """Ties in time go to the greater transaction id, compared by code point as the reference does ("a" after
    "B"), with and without carry-over. (PostgreSQL compares them with COLLATE "C", so a database created with
    another collation than this one's C.UTF-8 orders them the same.)"""
    b.seller(app)
    customer = b.customer(app, None)
    _create_meters(app, ["last", "seats"])
    rows = [
        {
            "customer_id": customer,
            "code": code,
            "transaction_id": f"{code}-{txn}",  # one customer's ids are unique across meters
            "timestamp": (START + timedelta(hours=hour)).isoformat(),
            "properties": {"n": n, "model": "a", "region": "eu", "user": "u1"},
        }
        for code in ("last", "seats")
        for txn, hour, n in (("B", 30, "2"), ("a", 30, "3"), ("A", 30, "1"), ("Z", 2, "9"))
    ]
    app.clock.move_to(START + timedelta(days=41))
    with app.uow() as uow:
        assert not usage.ingest(uow, rows, settings=usage.UsageSettings(grace=timedelta(days=60))).rejected
    later = START + timedelta(days=5)
    windows = [Window(customer, code, START, END) for code in ("last", "seats")]
    windows += [Window(customer, "seats", later, END)]  # no events of its own: carried in
    with app.engine.connect() as conn:
        got = aggregate_usage(conn, METERS, windows)
        stored = [dict(r) for r in conn.execute(select(t.usage_events)).mappings()]
    assert got == reference(METERS, stored, windows)
    assert got[(customer, "last", START, END, ())].quantity == Decimal(3)
    assert got[(customer, "seats", START, END, ("eu",))] == Aggregate(Decimal(3), 4)
    assert got[(customer, "seats", later, END, ("eu",))] == Aggregate(Decimal(3), 0)


def test_sums_and_maximums_keep_every_decimal_place(app: Remit) -> None:
    """Values finer than a fixed scale of 12 places, and wider than 26 integer digits, aggregate exactly (a cast
    to NUMERIC(38, 12) rounded the first and overflowed on the second)."""
    b.seller(app)
    customer = b.customer(app, None)
    _create_meters(app, ["tokens", "peak"])
    fine = [Decimal("0.000000000000001"), Decimal("0.000000000000002"), Decimal("7.5")]
    wide = Decimal("123456789012345678901234567")
    events = [("tokens", hour, n, "a", "eu", "u1") for hour, n in enumerate(fine)]
    events += [("peak", 1, wide, "a", "eu", "u1"), ("peak", 2, Decimal(3), "a", "eu", "u1")]
    _load(app, [customer], events)
    windows = [Window(customer, "tokens", START, END), Window(customer, "peak", START, END)]
    with app.engine.connect() as conn:
        got = aggregate_usage(conn, METERS, windows)
    assert got[(customer, "tokens", START, END, ("eu",))].quantity == Decimal("7.500000000000003")
    assert got[(customer, "peak", START, END, ())].quantity == wide


def test_a_sum_past_64_bits_is_still_exact(app: Remit) -> None:
    """SQLite adds whole numbers natively, in 64 bits; a sum past that is done again exactly, value by value."""
    b.seller(app)
    customer = b.customer(app, None)
    _create_meters(app, ["tokens"])
    big = Decimal("999999999999999999")  # 18 digits: each fits in 64 bits, twenty of them do not
    _load(app, [customer], [("tokens", hour, big, "a", "eu", "u1") for hour in range(20)])
    with app.engine.connect() as conn:
        got = aggregate_usage(conn, METERS, [Window(customer, "tokens", START, END)])
    assert got[(customer, "tokens", START, END, ("eu",))].quantity == big * 20


def test_a_time_weighted_level_built_before_the_window_past_64_bits_is_still_exact(app: Remit) -> None:
    """The level a time-weighted sum starts from is summed by the database (SQLite natively for whole numbers);
    past 64 bits it is summed again exactly, and the window's sum is the reference's."""
    b.seller(app)
    customer = b.customer(app, None)
    _create_meters(app, ["gb"])
    big = Decimal("999999999999999999")
    events = [("gb", hour, big, "a", "eu", "u1") for hour in range(20)] + [
        ("gb", 24 * 7, Decimal("-1.5"), "a", "eu", "u1")
    ]
    _load(app, [customer], events)
    window = Window(customer, "gb", START + timedelta(days=5), END)
    with app.engine.connect() as conn:
        got = aggregate_usage(conn, METERS, [window])
        stored = [dict(r) for r in conn.execute(select(t.usage_events)).mappings()]
    expected = reference(METERS, stored, [window])
    key = (customer, "gb", window.start, window.end, ("eu",))
    assert got[key] == expected[key] and got[key].events == 1
    assert got[key].quantity > big * 19  # most of the window at 20 times ``big``


def test_sums_without_dimensions_past_64_bits_are_still_exact(app: Remit) -> None:
    """Per customer first, SQLite sums whole numbers natively: a value too large for 64 bits makes its sum a
    float, and that customer is summed again exactly; a total past 64 bits is an overflow, and the whole span is
    summed again exactly."""
    b.seller(app)
    customers = [b.customer(app, None) for _ in range(3)]
    _create_meters(app, ["bytes"])
    wide, big = Decimal("123456789012345678901234567"), Decimal("999999999999999999")
    wide_one, overflowing, plain = customers
    owners = [wide_one, wide_one, plain] + [overflowing] * 20  # one owner per event
    values = [wide, Decimal(3), Decimal(5)] + [big] * 20
    _load(app, owners, [("bytes", hour, n, "a", "eu", "u1") for hour, n in enumerate(values)])
    with app.engine.connect() as conn:
        alone = aggregate_usage(conn, METERS, [Window(c, "bytes", START, END) for c in (wide_one, plain)])
        together = aggregate_usage(conn, METERS, [Window(c, "bytes", START, END) for c in customers])
    for got in (alone, together):
        assert got[(wide_one, "bytes", START, END, ())].quantity == wide + 3
        assert got[(plain, "bytes", START, END, ())].quantity == 5
    assert together[(overflowing, "bytes", START, END, ())].quantity == big * 20


def _per_group_statements(conn: Connection, customers: list[str]) -> list[set[str]]:
    """Record, for each statement that groups events by customer and group, the customers it was asked about."""
    seen: list[set[str]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if "GROUP BY usage_events.customer_id, usage_events.group_key" in statement:
            seen.append({c for c in customers if c in str(parameters)})

    event.listen(conn, "before_cursor_execute", record)
    return seen


def test_counts_and_sums_per_customer_and_per_group_agree(app: Remit) -> None:
    """A batch mixing customers whose sums are final per customer (one group, and on SQLite whole numbers) with
    customers that need the exact per-group path sums each one exactly; only the latter are asked per group. A
    meter with group-by dimensions goes per group at once."""
    b.seller(app)
    customers = [b.customer(app, None) for _ in range(4)]
    _create_meters(app, ["bytes", "tokens", "calls"])
    events = [
        ("bytes", 1, Decimal(40), "a", "eu", "u1"),  # customer 0: whole numbers, one group
        ("bytes", 1, Decimal("2.5"), "a", "eu", "u1"),  # customer 1: a decimal
        ("tokens", 1, Decimal(3), "a", "eu", "u1"),  # customer 2: two groups of a meter with dimensions
        ("bytes", 1, Decimal(-7), "a", "eu", "u1"),  # customer 3: a negative whole number
        ("bytes", 2, Decimal(2), "a", "eu", "u1"),
        ("bytes", 2, Decimal(3), "a", "eu", "u1"),
        ("tokens", 2, Decimal(4), "a", "us", "u1"),
        ("bytes", 2, Decimal(10), "a", "eu", "u1"),
        ("calls", 3, Decimal(1), "a", "eu", "u1"),
        ("calls", 3, Decimal(1), "a", "eu", "u1"),
    ]
    _load(app, customers, events)
    codes = ("bytes", "tokens", "calls")
    windows = [Window(c, code, START, END) for c in customers for code in codes]
    with app.engine.connect() as conn:
        per_group = _per_group_statements(conn, customers)
        got = aggregate_usage(conn, METERS, windows)
        stored = [dict(r) for r in conn.execute(select(t.usage_events)).mappings()]
    expected = reference(METERS, stored, windows)
    assert {k: (v.quantity, v.events) for k, v in got.items()} == {
        k: (v.quantity, v.events) for k, v in expected.items()
    }
    c0, c1, c2, c3 = customers
    assert got[(c0, "bytes", START, END, ())].quantity == 42
    assert got[(c1, "bytes", START, END, ())].quantity == Decimal("5.5")
    assert got[(c2, "tokens", START, END, ("eu",))].quantity == 3
    assert got[(c2, "tokens", START, END, ("us",))].quantity == 4
    assert got[(c3, "bytes", START, END, ())].quantity == 3
    assert got[(c0, "calls", START, END, ())].quantity == 1  # events 8 and 9: customers 0 and 1
    asked = sorted(map(sorted, per_group))
    if app.engine.dialect.name == "sqlite":
        assert asked == sorted([[c1], sorted(customers)])  # bytes: the decimal only; tokens: everyone
    else:
        assert asked == [sorted(customers)]  # PostgreSQL sums decimals per customer too; tokens: everyone


def test_events_of_another_group_are_kept_apart(app: Remit) -> None:
    """Events kept from before a meter's dimensions were removed carry their old group: a customer with such
    events is summed per group, and the others per customer."""
    b.seller(app)
    customers = [b.customer(app, None) for _ in range(2)]
    _create_meters(app, ["bytes"])
    events = [("bytes", hour, Decimal(n), "a", "eu", "u1") for hour, n in enumerate([5, 6, 7, 8])]
    _load(app, customers, events)  # customer 0: 5 and 7; customer 1: 6 and 8
    first, second = customers
    with app.engine.begin() as conn:
        old = conn.execute(
            select(t.usage_events.c.id).where(
                t.usage_events.c.customer_id == first, t.usage_events.c.value == Decimal(7)
            )
        ).scalar_one()
        conn.execute(t.usage_events.update().where(t.usage_events.c.id == old).values(group_key='["eu"]'))
    windows = [Window(c, "bytes", START, END) for c in customers]
    with app.engine.connect() as conn:
        per_group = _per_group_statements(conn, customers)
        got = aggregate_usage(conn, METERS, windows)
    assert {k: (v.quantity, v.events) for k, v in got.items()} == {
        (first, "bytes", START, END, ()): (Decimal(5), 1),
        (first, "bytes", START, END, ("eu",)): (Decimal(7), 1),
        (second, "bytes", START, END, ()): (Decimal(14), 2),
    }
    assert per_group == [{first}]
