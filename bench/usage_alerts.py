"""Rough cost of usage alerts for ingestion and of one evaluation batch (the figures in docs/usage.md).

    .venv/bin/python bench/usage_alerts.py --db sqlite
    .venv/bin/python bench/usage_alerts.py --db postgresql

Creates a throwaway database (PostgreSQL: a fresh database on 127.0.0.1:5432, or REMIT_BENCH_POSTGRES_URL, dropped
at the end; SQLite: a file in a temporary directory), with 200 customers nobody watches and 200 with a spend alert,
each on a metered subscription. Then ingests batches of 1,000 events alternately for the two groups (30 each,
interleaved so that a growing table does not favour either), and reports the median time of a batch per group,
the time of marking the 200 watched customers in a transaction of its own, and the time of one evaluation of the
watched customers (one batch of 200). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from remit.adapters.db.engine import make_engine, migrate
from remit.bootstrap import Remit
from remit.domain.clock import FixedClock
from remit.service_layer import accounts, alerts, catalog, subscriptions, usage, usage_monitor, usage_watch

PRICE = {"currency": "EUR", "model": "per_unit", "config": {"unit_price": "0.01"}, "usage": {"meter": "calls"}}
CUSTOMERS, BATCH, ROUNDS = 200, 1000, 30


def _setup(app: Remit) -> dict[str, list[str]]:
    with app.uow() as uow:
        accounts.create_legal_entity(uow, "Bench GmbH", "DE", "EUR")
        usage.create_meter(uow, "calls", "Calls", "sum", "n")
        catalog.create_plan(uow, "api", "API", [PRICE])
    groups: dict[str, list[str]] = {"unwatched": [], "watched": []}
    for group, ids in groups.items():
        for i in range(CUSTOMERS):
            with app.uow() as uow:
                cid = accounts.create_customer(uow, f"{group}{i}", currency_code="EUR", country="DE")
                subscriptions.create_subscription(uow, cid, "api")
                if group == "watched":
                    alerts.create_alert(uow, cid, "spend", ["1000.00"])
            ids.append(cid)
    usage_monitor.evaluate(app.uow)  # the new watches are looked at once
    return groups


def _batch(ids: list[str], tag: str) -> list[dict[str, object]]:
    return [
        {
            "customer_id": ids[j % len(ids)],
            "code": "calls",
            "transaction_id": f"{tag}-{j}",
            "timestamp": "2026-01-01T11:00:00Z",
            "properties": {"n": 1},
        }
        for j in range(BATCH)
    ]


def measure(app: Remit) -> dict[str, float]:
    groups = _setup(app)
    times: dict[str, list[float]] = {g: [] for g in groups}
    for r in range(ROUNDS):
        for group in ("unwatched", "watched") if r % 2 else ("watched", "unwatched"):
            start = time.perf_counter()
            with app.uow() as uow:
                usage.ingest(uow, _batch(groups[group], f"{group}{r}"))
            times[group].append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(20):
        with app.uow() as uow:
            usage_watch.mark(uow, groups["watched"])
    mark_ms = (time.perf_counter() - start) / 20 * 1000
    start = time.perf_counter()
    evaluated = usage_monitor.evaluate(app.uow).customers
    evaluate_ms = (time.perf_counter() - start) * 1000
    return {
        "batch_ms_unwatched": round(sorted(times["unwatched"])[ROUNDS // 2] * 1000, 1),
        "batch_ms_watched": round(sorted(times["watched"])[ROUNDS // 2] * 1000, 1),
        "mark_200_ms": round(mark_ms, 1),
        "evaluate_ms": round(evaluate_ms),
        "customers_evaluated": evaluated,
        "events_per_customer": ROUNDS * BATCH // 2 // CUSTOMERS,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    clock = FixedClock(datetime(2026, 1, 1, 12, tzinfo=UTC))
    if args.db == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
            migrate(engine)
            print(json.dumps({"db": "sqlite", **measure(Remit(engine, clock))}))
            engine.dispose()
        return
    import psycopg

    admin = os.environ.get("REMIT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"remit_bench_alerts_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        engine = make_engine(admin.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + "/" + name)
        migrate(engine)
        print(json.dumps({"db": "postgresql", **measure(Remit(engine, clock))}))
        engine.dispose()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
