"""Benchmark of aggregating a month of meters that look back before it, for customers with a long history.

    .venv/bin/python bench/usage_history.py --customers 2000 --months 24 --events-per-month 50
    .venv/bin/python bench/usage_history.py --customers 2000 --months 24 --events-per-month 50 --db postgresql

A time-weighted sum (e.g. GB held) starts each period from the level every event before it built up, and a
``latest`` meter that carries over takes the last value reported before the period when it has none of its own.
Both must look at events before the period. This measures what that costs when there is much history. Each
customer has ``--months`` months of events before the period measured (``--events-per-month`` each month, at
random times) and the same number in the period. The bench aggregates the period for every customer, in batches
of 5,000, through ``usage_queries.aggregate_usage``, the bill run's own call, for each of the two meters. Then it
aggregates a plain ``sum`` meter over the same events, which reads only the period, as the reference.

Set-up: a throwaway database (SQLite in a temporary directory, or a fresh PostgreSQL database on 127.0.0.1:5432
or REMIT_BENCH_POSTGRES_URL, dropped at the end), migrated, bulk-loaded as ``bench/usage_bill_run.py`` loads it.
Each meter is measured ``--repeat`` times (default 3) and the fastest time counts. The last line printed is one
JSON object with the seconds of each meter and ``ratio_to_reference`` for each (its seconds ÷ the sum's).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bill_run import Databases, Seconds, bulk_write, customer_row, legal_entity_row, log, rid, settle_loaded

PERIOD_START = datetime(2026, 6, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 7, 1, tzinfo=UTC)
BATCH = 5000
CHUNK = 50_000
METERS = {"gb": "weighted_sum", "seats": "latest", "calls": "sum"}


def _load(url: str, customers: int, months: int, per_month: int) -> list[str]:
    from remit.adapters.db import tables as t
    from remit.adapters.db.engine import make_engine, migrate

    engine = make_engine(url)
    migrate(engine)
    pg = engine.dialect.name == "postgresql"
    now = PERIOD_START - timedelta(days=31 * (months + 1))
    rng = random.Random(7)
    raw = engine.raw_connection()
    ids: list[str] = []
    try:
        db: Any = raw.driver_connection
        if not pg:
            db.execute("BEGIN")

        def write(table: Any, rows: list[dict[str, Any]]) -> None:
            bulk_write(db, engine.dialect, table, rows)

        le = rid("le")
        write(t.legal_entities, [legal_entity_row(le, now)])
        write(
            t.meters,
            [
                {
                    "id": rid("meter"),
                    "code": code,
                    "name": code,
                    "aggregation": aggregation,
                    "field": "n",
                    "expression": None,
                    "filters": {},
                    "group_by": [],
                    "carry_over": code == "seats",
                    "created_at": now,
                }
                for code, aggregation in METERS.items()
            ],
        )
        for lo in range(0, customers, CHUNK):
            rows = []
            for i in range(lo, min(customers, lo + CHUNK)):
                ids.append(rid("cus"))
                rows.append(customer_row(ids[-1], le, i, now))
            write(t.customers, rows)
        k = 0
        for code in METERS:
            usage_rows: list[dict[str, Any]] = []
            for cus in ids:
                for month in range(months + 1):  # the history, then the period itself
                    start = PERIOD_START - timedelta(days=31 * (months - month))
                    for _ in range(per_month):
                        at = start + timedelta(seconds=rng.randrange(30 * 86_400))
                        value = rng.randint(-5, 10) if code == "gb" else rng.randint(1, 100)
                        usage_rows.append(
                            {
                                "id": f"uev_{k:020x}",
                                "occurred_at": at,
                                "customer_id": cus,
                                "subscription_id": None,
                                "meter_code": code,
                                "transaction_id": f"{code}{k}",
                                "received_at": at,
                                "value": Decimal(value),
                                "dimension": None,
                                "group_key": "[]",
                                "matched": True,
                                "properties": {"n": 0},
                            }
                        )
                        k += 1
                if len(usage_rows) >= CHUNK:
                    write(t.usage_events, usage_rows)
                    usage_rows = []
            write(t.usage_events, usage_rows)
        settle_loaded(db, pg)
    finally:
        raw.close()
    engine.dispose()
    log(f"loaded {customers} customers, {k} events")
    return ids


def _measure(url: str, ids: list[str], code: str, repeat: int) -> Seconds:
    """The fastest of ``repeat`` aggregations of the period, in seconds of wall time (a timing, not money)."""
    from remit.adapters.db.engine import make_engine
    from remit.adapters.db.usage_queries import Window, aggregate_usage
    from remit.domain.rating.aggregations import Aggregation, Meter

    meter = Meter(code, Aggregation(METERS[code]), "n", carry_over=code == "seats")
    engine = make_engine(url)
    timings: list[Seconds] = []
    try:
        for _ in range(repeat):
            began = time.perf_counter()
            found = 0
            with engine.connect() as conn:
                for lo in range(0, len(ids), BATCH):
                    windows = [Window(c, code, PERIOD_START, PERIOD_END) for c in ids[lo : lo + BATCH]]
                    found += len(aggregate_usage(conn, {code: meter}, windows))
            timings.append(time.perf_counter() - began)
            if found != len(ids):
                raise SystemExit(f"{code}: {found} aggregates for {len(ids)} customers")
    finally:
        engine.dispose()
    return min(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--months", type=int, default=24, help="months of history before the period")
    parser.add_argument("--events-per-month", type=int, default=50, help="per customer and meter")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    dbs = Databases(args.db)  # a throwaway database, dropped at the end
    try:
        ids = _load(dbs.url, args.customers, args.months, args.events_per_month)
        seconds = {code: _measure(dbs.url, ids, code, args.repeat) for code in METERS}
    finally:
        dbs.drop()
    for code, s in seconds.items():
        log(f"{code} ({METERS[code]}{', carry over' if code == 'seats' else ''}): {s:.3f} s")
    print(
        json.dumps(
            {
                "db": args.db,
                "customers": args.customers,
                "months": args.months,
                "events_per_month": args.events_per_month,
                "seconds": {code: round(s, 4) for code, s in seconds.items()},
                "ratio_to_reference": {code: round(s / seconds["calls"], 2) for code, s in seconds.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
