"""Benchmark of a usage bill run, against the floor of one GROUP BY and a bulk write of its result.

    .venv/bin/python bench/usage_bill_run.py --customers 100000 --events 10000000 --db postgresql
    .venv/bin/python bench/usage_bill_run.py --customers 10000 --events 1000000 --db sqlite
    .venv/bin/python bench/usage_bill_run.py --customers 100000 --events 10000000 --db sqlite --repeat 3

What it does (each step in its own child process, as in ``bench/bill_run.py``, so each peak RSS is its own):

1. Creates a throwaway database (PostgreSQL: a fresh database on 127.0.0.1:5432 or REMIT_BENCH_POSTGRES_URL,
   dropped at the end; SQLite: a file in a temporary directory, removed at the end), migrates it, and bulk-loads
   (COPY on PostgreSQL, executemany on SQLite) one legal entity, a meter ``calls`` (sum of ``n``), a plan whose only
   price is a usage price of 0.001 EUR per call (monthly, in arrears), N real customers with one subscription each
   (started 2026-01-01, calendar anchor), and E usage events spread evenly over the customers at random times in
   January 2026 (``n`` from 1 to 100), with their deduplication keys. On PostgreSQL: VACUUM ANALYZE.
2. The floor: one ``SELECT customer_id, SUM(value) ... GROUP BY customer_id`` over January's events of the meter
   (the plainest exact aggregate of each database: NUMERIC on PostgreSQL, SQLite's own SUM of the integer values),
   and a bulk write of the result (customer, quantity, amount) into a scratch table (COPY / executemany), in one
   transaction. Measured twice, before and after the bill run; the faster counts (a warm cache helps the floor).
3. The bill run: ``bill_run.run(app.uow, as_of=2026-02-01T00:00Z)``: it finds the customers, aggregates their
   January usage set-wise, rates it, writes and finalizes one invoice (numbered) with one usage line per customer,
   and its domain events.
4. Checks: N invoices and N usage lines, and the sum of their amounts equals the floor's (each customer's quantity
   × 0.001 rounded half-up to the cent). Anything else fails loudly (exit 1).

``--repeat N`` runs steps 2 to 4 N times, each time on a fresh copy of the set-up database (PostgreSQL: a
database made from it as a template; SQLite: a copy of the file), removed after; the figures reported are those
of the repetition with the median ratio, and ``repetitions`` lists every one. On a machine whose speed drifts
(docs/performance.md), the median of alternating repetitions says more than one run.

The last line printed is one JSON object: seconds, floor_seconds, ratio_to_reference (the bill run's time ÷ the
floor's), invoices_per_s, events_per_s, peak_rss_mb (the bill run's), and more figures. Among them the CPU time
each step used: cpu_seconds and floor_cpu_seconds (the step's own processes), server_cpu_seconds and
floor_server_cpu_seconds (the PostgreSQL server's, read from /proc across the step; null on SQLite or when the
server's processes cannot be read), and cpu_ratio_to_reference (all of the bill run's CPU ÷ all of the floor's).
On two cores both steps keep both cores busy, so the CPU ratio says what the time ratio says with less noise,
and where the time goes.

``--phases`` (SQLite, or PostgreSQL with ``--workers 1``: batches billed in the bench's own process) also times
each step of billing a batch, in all batches: lock, load, usage (the meter windows and their aggregates), rate
(propose, rate and diff), review_marks, write_invoices (numbered and finalized, with their lines), write_events,
commit_and_rest, and between_batches (finding each batch's customers); on SQLite, also how much of each was spent
inside SQLite's own calls (statements, fetches, commits) on the billing thread, the rest being Python; on
PostgreSQL, the server's CPU across each step (server_cpu; the reads of /proc are not timed). It prints
them and adds ``phases`` to the JSON line (null without the option). The wrappers cost little, but a run with
them is not the one to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from bill_run import (
    BenchFailure,
    Databases,
    bulk_write,
    cpu_seconds,
    customer_row,
    default_workers,
    legal_entity_row,
    log,
    peak_rss_mb,
    rid,
    server_cpu_seconds,
    settle_loaded,
    start_event_row,
    subscription_row,
)

AS_OF = datetime(2026, 2, 1, tzinfo=UTC)
JAN = date(2026, 1, 1)
JAN_START = datetime(2026, 1, 1, tzinfo=UTC)
CHUNK = 100_000
UNIT_PRICE = Decimal("0.001")


def child_setup(url: str, customers: int, events: int) -> dict[str, Any]:
    from remit.adapters.db import tables as t
    from remit.adapters.db.engine import make_engine, migrate

    engine = make_engine(url)
    migrate(engine)
    pg = engine.dialect.name == "postgresql"
    now = JAN_START
    le, prod, plan, planv, price, meter = (rid(p) for p in ("le", "prod", "plan", "planv", "price", "meter"))
    rng = random.Random(42)
    raw = engine.raw_connection()
    try:
        db: Any = raw.driver_connection
        if not pg:
            db.execute("BEGIN")

        def write(table: Any, rows: list[dict[str, Any]]) -> None:
            bulk_write(db, engine.dialect, table, rows)

        write(t.legal_entities, [legal_entity_row(le, now)])
        write(
            t.meters,
            [
                {
                    "id": meter,
                    "code": "calls",
                    "name": "Calls",
                    "aggregation": "sum",
                    "field": "n",
                    "expression": None,
                    "filters": {},
                    "group_by": [],
                    "created_at": now,
                }
            ],
        )
        write(t.products, [{"id": prod, "name": "API", "kind": "plan", "description": "", "created_at": now}])
        write(t.plans, [{"id": plan, "code": "api", "name": "API", "product_id": prod, "created_at": now}])
        write(t.plan_versions, [{"id": planv, "plan_id": plan, "version": 1, "created_at": now}])
        write(
            t.prices,
            [
                {
                    "id": price,
                    "product_id": prod,
                    "plan_version_id": planv,
                    "name": "API calls",
                    "currency": "EUR",
                    "type": "recurring",
                    "model": "per_unit",
                    "config": {"unit_price": str(UNIT_PRICE)},
                    "interval_unit": "month",
                    "interval_count": 1,
                    "timing": "in_arrears",
                    "usage": {"meter": "calls"},
                    "created_at": now,
                }
            ],
        )
        ids: list[str] = []
        for lo in range(0, customers, CHUNK):
            cus_rows, sub_rows, ev_rows = [], [], []
            for i in range(lo, min(customers, lo + CHUNK)):
                cus, sub = rid("cus"), rid("sub")
                ids.append(cus)
                cus_rows.append(customer_row(cus, le, i, now))
                sub_rows.append(subscription_row(sub, cus, plan, now))
                ev_rows.append(start_event_row(sub, price, now))
            write(t.customers, cus_rows)
            write(t.subscriptions, sub_rows)
            write(t.subscription_events, ev_rows)
        # Events: the same number per customer (the rest to the first ones), at random times in January.
        seconds_in_january = 31 * 86_400
        sent = 0
        while sent < events:
            usage_rows, key_rows = [], []
            for k in range(sent, min(events, sent + CHUNK)):
                cus = ids[k % customers]
                at = JAN_START + timedelta(seconds=rng.randrange(seconds_in_january), microseconds=rng.randrange(10**6))
                txn = f"e{k}"
                usage_rows.append(
                    {
                        "id": f"uev_{k:020x}",
                        "occurred_at": at,
                        "customer_id": cus,
                        "subscription_id": None,
                        "meter_code": "calls",
                        "transaction_id": txn,
                        "received_at": at,
                        "value": Decimal(rng.randint(1, 100)),
                        "dimension": None,
                        "group_key": "[]",
                        "matched": True,
                        "properties": {"n": 0},
                    }
                )
                key_rows.append({"customer_id": cus, "transaction_id": txn, "received_at": at})
            write(t.usage_events, usage_rows)
            write(t.usage_event_keys, key_rows)
            sent += len(usage_rows)
        settle_loaded(db, pg)
    finally:
        raw.close()
    engine.dispose()
    return {"peak_rss_mb": peak_rss_mb()}


def child_floor(url: str, attempt: str) -> dict[str, Any]:
    """One GROUP BY over January's events of the meter, and a bulk write of the result, in one transaction."""
    from remit.adapters.db.engine import make_engine

    engine = make_engine(url)
    pg = engine.dialect.name == "postgresql"
    raw = engine.raw_connection()
    db: Any = raw.driver_connection
    if pg:  # the server's own settings (Remit's engines turn JIT off for their sessions; the floor keeps the default)
        import psycopg

        db = psycopg.connect(engine.url.set(drivername="postgresql").render_as_string(hide_password=False))
    table = f"floor_result_{attempt}"
    started, cpu_started = time.perf_counter(), time.process_time()
    if pg:
        rows = db.execute(
            "SELECT customer_id, SUM(CAST(value AS NUMERIC)) FROM usage_events "
            "WHERE meter_code = 'calls' AND matched AND occurred_at >= %s AND occurred_at < %s GROUP BY customer_id",
            (JAN_START, AS_OF),
        ).fetchall()
        db.execute(f"CREATE TABLE {table} (customer_id varchar(40), quantity numeric, amount_minor bigint)")
        cur = db.cursor()
        with cur.copy(f"COPY {table} (customer_id, quantity, amount_minor) FROM STDIN") as copy:
            for cus, qty in rows:
                copy.write_row((cus, qty, _minor(qty)))
        db.commit()
    else:
        db.execute("BEGIN IMMEDIATE")
        rows = db.execute(
            "SELECT customer_id, SUM(value) FROM usage_events "
            "WHERE meter_code = 'calls' AND matched AND occurred_at >= ? AND occurred_at < ? GROUP BY customer_id",
            ("2026-01-01 00:00:00.000000", "2026-02-01 00:00:00.000000"),
        ).fetchall()
        db.execute(f"CREATE TABLE {table} (customer_id varchar(40), quantity text, amount_minor bigint)")
        db.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", [(c, str(q), _minor(Decimal(q))) for c, q in rows])
        db.execute("COMMIT")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    total_minor = sum(_minor(Decimal(q)) for _c, q in rows)
    if pg:
        db.close()
    raw.close()
    engine.dispose()
    return {"seconds": seconds, "cpu_seconds": cpu, "customers": len(rows), "total_minor": total_minor}


def _minor(quantity: Decimal) -> int:
    return int((Decimal(quantity) * UNIT_PRICE * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


# The steps of billing one batch (``bill_run.bill_customers``), timed by ``--phases``: (label, module, function).
PHASES = (
    ("lock", "remit.service_layer.unit_of_work", "UnitOfWork.lock_customers"),
    ("load", "remit.service_layer.bill_run", "_load_batch"),
    ("usage", "remit.service_layer.bill_run", "load_usage"),
    ("rate", "remit.service_layer.bill_run", "compute_drafts"),
    ("review_marks", "remit.service_layer.bill_run", "_mark_reviewed"),
    ("write_invoices", "remit.service_layer.bill_run", "write_invoices"),
    ("write_events", "remit.service_layer.bill_run", "write_events"),
)


class _Phases:
    """Wall time per step of ``PHASES`` (and per batch), and of it the time spent in the database's calls made by
    the billing thread: statements, fetches and commits, timed where SQLAlchemy hands them to the driver. That
    splits SQLite's own work (which runs in this process) from Python's; PostgreSQL's COPY and plain statements
    go to the driver directly (``invoices.bulk_insert``, ``driver.rows``), so there that split would be partial
    and is not reported. On PostgreSQL (``server``): the server's CPU across each step instead, read from /proc
    (``server_cpu_seconds``) outside the step's own timing, and the reads' time counted in no step. Only for a
    run that bills its batches in this process (SQLite, or PostgreSQL with ``--workers 1``, when the bill run's
    connection is the only busy one)."""

    def __init__(self, server: bool) -> None:
        import importlib
        import threading

        from sqlalchemy.engine import cursor, default

        labels = [label for label, _m, _f in PHASES]
        self.seconds = dict.fromkeys([*labels, "batch"], 0.0)
        self.in_database = dict.fromkeys([*labels, "batch", "between_batches"], 0.0)
        self.in_server = dict.fromkeys([*labels, "batch"], 0.0)
        self.reading = {"batch": 0.0, "run": 0.0}  # time spent reading /proc: inside batches, and outside them
        self.current = ["between_batches"]
        billing = threading.current_thread()  # not the usage read-ahead's thread

        def server_now(label: str) -> float | None:
            """The server's CPU so far, with the time the read took kept apart from the step it belongs to."""
            if not server:
                return None
            started = time.perf_counter()
            try:
                return server_cpu_seconds()
            finally:
                self.reading["run" if label == "batch" else "batch"] += time.perf_counter() - started

        def phase(label: str, owner: Any, name: str) -> None:
            inner = getattr(owner, name)

            def timed(*args: Any, **kwargs: Any) -> Any:
                self.current.append(label)
                server_before = server_now(label)
                started = time.perf_counter()
                try:
                    return inner(*args, **kwargs)
                finally:
                    self.seconds[label] += time.perf_counter() - started
                    server_after = server_now(label)
                    if server_before is not None and server_after is not None:
                        self.in_server[label] += server_after - server_before
                    self.current.pop()

            setattr(owner, name, timed)

        def database(owner: Any, name: str) -> None:
            inner = getattr(owner, name)

            def timed(*args: Any, **kwargs: Any) -> Any:
                if threading.current_thread() is not billing:
                    return inner(*args, **kwargs)
                started = time.perf_counter()
                try:
                    return inner(*args, **kwargs)
                finally:
                    self.in_database[self.current[-1]] += time.perf_counter() - started

            setattr(owner, name, timed)

        for label, module_name, qualname in (
            *PHASES,
            ("batch", "remit.service_layer.bill_run", "_bill_batch_with_retry"),
        ):
            owner: Any = importlib.import_module(module_name)
            *path, name = qualname.split(".")
            for part in path:
                owner = getattr(owner, part)
            phase(label, owner, name)
        for name in ("do_execute", "do_executemany", "do_commit"):
            database(default.DefaultDialect, name)
        for name in ("fetchone", "fetchmany", "fetchall"):
            database(cursor.CursorFetchStrategy, name)

    def report(self, seconds: float, sqlite: bool, server_seconds: float | None) -> dict[str, Any]:
        """Per step: seconds and, on SQLite, in_sqlite, or on PostgreSQL, server_cpu (``server_seconds``: the
        server's CPU across the whole run); commit_and_rest is the batches' time outside the steps (the
        transaction's begin and commit, bookkeeping), between_batches the run's time outside its batches (finding
        each batch's customers, the run's own row)."""
        spent, in_db, in_server = dict(self.seconds), dict(self.in_database), dict(self.in_server)
        batch, batch_db, batch_server = spent.pop("batch"), in_db.pop("batch"), in_server.pop("batch")
        batch -= self.reading["batch"]  # the steps' reads of /proc fall inside their batch
        spent["commit_and_rest"] = batch - sum(spent.values())
        in_db["commit_and_rest"] = batch_db
        in_server["commit_and_rest"] = batch_server - sum(in_server.values())
        spent["between_batches"] = seconds - batch - sum(self.reading.values())
        if server_seconds is not None:
            in_server["between_batches"] = server_seconds - batch_server
        out: dict[str, Any] = {}
        for label, value in spent.items():
            step: dict[str, Any] = {"seconds": round(value, 3)}
            if sqlite:
                step["in_sqlite"] = round(in_db.get(label, 0.0), 3)
            elif server_seconds is not None:
                step["server_cpu"] = round(in_server.get(label, 0.0), 2)
            out[label] = step
        return out


def child_run(url: str, workers: int, phases: bool = False) -> dict[str, Any]:
    from remit.adapters.db.engine import make_engine
    from remit.bootstrap import Remit
    from remit.domain.clock import SystemClock
    from remit.service_layer import bill_run

    app = Remit(make_engine(url), SystemClock())
    sqlite = app.engine.dialect.name == "sqlite"
    timer = _Phases(server=not sqlite) if phases else None
    server_started = None if sqlite or not phases else server_cpu_seconds()
    started, cpu_started = time.perf_counter(), cpu_seconds()
    result = bill_run.run(app.uow, as_of=AS_OF, workers=workers)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    server_ended = None if server_started is None else server_cpu_seconds()
    app.engine.dispose()
    server = None if server_started is None or server_ended is None else server_ended - server_started
    return {
        "phases": None if timer is None else timer.report(seconds, sqlite, server),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "workers": workers if app.engine.dialect.name == "postgresql" else 1,  # SQLite bills batches in turn
        "run_id": result.id,
        "invoices_created": result.invoices_created,
        "batch_size": bill_run.BATCH_SIZE,
        "peak_rss_mb": peak_rss_mb(),
    }


def child_check(url: str, run_id: str, customers: int, floor_total_minor: int) -> dict[str, Any]:
    from sqlalchemy import func, select

    from remit.adapters.db import tables as t
    from remit.adapters.db.engine import make_engine

    i, ln = t.invoices, t.invoice_lines
    engine = make_engine(url)
    with engine.connect() as conn:
        invoices = conn.execute(select(func.count()).where(i.c.bill_run_id == run_id)).scalar_one()
        lines, total = conn.execute(
            select(func.count(), func.sum(ln.c.amount_minor))
            .select_from(ln.join(i, i.c.id == ln.c.invoice_id))
            .where(i.c.bill_run_id == run_id, ln.c.kind == "usage")
        ).one()
    engine.dispose()
    problems = []
    if invoices != customers or lines != customers:
        problems.append(f"{invoices} invoices and {lines} usage lines, expected {customers} of each")
    if int(total or 0) != floor_total_minor:
        problems.append(f"the usage lines come to {total} cents, the floor's result to {floor_total_minor}")
    return {"problems": problems}


def child(mode: str, *args: str) -> dict[str, Any]:
    """Run one step in its own process; its figures, with ``server_cpu_seconds``: the PostgreSQL server's CPU
    time across the step (None on SQLite, or with a server whose processes cannot be read)."""
    server_before = server_cpu_seconds()
    proc = subprocess.run([sys.executable, __file__, "--child", mode, *args], capture_output=True, text=True)
    server_after = server_cpu_seconds()
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise BenchFailure(f"the {mode} step failed (exit {proc.returncode})")
    out = dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    server = None if server_before is None or server_after is None else server_after - server_before
    out["server_cpu_seconds"] = None if args[0].startswith("sqlite") else server  # SQLite runs in the process
    return out


def _all_cpu(step: dict[str, Any]) -> float:
    """A step's CPU time: its processes' and, on PostgreSQL, the server's."""
    return float(step["cpu_seconds"] + (step["server_cpu_seconds"] or 0))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _repetition(dbs: Databases, index: int, repeat: int, workers: str, n: int, phases: bool) -> dict[str, Any]:
    """The floor, the bill run and the floor again on the set-up database (or, when repeating, on a fresh copy of
    it, removed after), checked; the run's ratio to the faster floor."""
    label = f"repetition {index + 1} of {repeat}: " if repeat > 1 else ""
    url = dbs.url if repeat == 1 else dbs.copy(f"r{index + 1}")
    try:
        floors = [child("floor", url, "before")]
        log(f"{label}floor (before the run): {floors[0]['seconds']:.2f} s for {floors[0]['customers']:,} customers")
        run = child("run", url, workers, "phases" if phases else "-")
        log(
            f"{label}bill run: {run['seconds']:.2f} s ({run['workers']} billing process(es)), "
            f"{n / run['seconds']:,.0f} invoices/s, peak RSS {run['peak_rss_mb']:.0f} MB"
        )
        if run["phases"]:
            spent = ", ".join(
                f"{k} {v['seconds']:.2f} s"
                + (f" ({v['in_sqlite']:.2f} in SQLite)" if "in_sqlite" in v else "")
                + (f" ({v['server_cpu']:.2f} s of server CPU)" if "server_cpu" in v else "")
                for k, v in run["phases"].items()
            )
            log(f"{label}where the bill run's time went: {spent}")
        floors.append(child("floor", url, "after"))
        log(f"{label}floor (after the run): {floors[1]['seconds']:.2f} s")
        floor = min(floors, key=lambda f: f["seconds"])
        if run["invoices_created"] != n:
            raise BenchFailure(f"the run reports {run['invoices_created']} invoices, expected {n}")
        problems = child("check", url, run["run_id"], str(n), str(floor["total_minor"]))["problems"]
        if problems:
            raise BenchFailure("; ".join(problems))
    finally:
        if repeat > 1:
            dbs.remove(url)
    ratio = run["seconds"] / floor["seconds"]
    log(f"{label}checks: {n:,} invoices and usage lines; their total equals the floor's ({floor['total_minor']} cents)")
    log(f"{label}ratio to the floor: {ratio:.2f}x (bill run time / floor time)")
    for name, step in (("bill run", run), ("floor", floor)):
        server = step["server_cpu_seconds"]
        on_server = "" if server is None else f" + {server:.2f} s in PostgreSQL"
        log(f"{label}CPU of the {name}: {step['cpu_seconds']:.2f} s in Python{on_server}")
    return {"run": run, "floor": floor, "floors": floors, "ratio": ratio}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000, help="how many (default 100000)")
    parser.add_argument("--events", type=int, default=10_000_000, help="how many usage events (default 10000000)")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--workers", type=int, default=None, help="bill run worker processes (default: as remit bill-run, the cores)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure the floor and the bill run this many times, each time on a fresh copy of the set-up database, "
        "and report the repetition with the median ratio (default 1: once, on the database itself)",
    )
    parser.add_argument(
        "--phases",
        action="store_true",
        help="time each step of billing a batch (lock, load, usage, rate, review marks, write invoices, write "
        "events, commit and the rest) and print the seconds each took in all; only where batches are billed in the "
        "bench's process: SQLite, or PostgreSQL with --workers 1",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        a = args.args
        if args.child == "setup":
            out = child_setup(a[0], int(a[1]), int(a[2]))
        elif args.child == "floor":
            out = child_floor(a[0], a[1])
        elif args.child == "run":
            out = child_run(a[0], int(a[1]), a[2] == "phases")
        elif args.child == "check":
            out = child_check(a[0], a[1], int(a[2]), int(a[3]))
        else:
            parser.error(f"unknown step {args.child}")
        print(json.dumps(out, default=str))
        return 0

    workers = str(args.workers or default_workers())
    if args.phases and args.db == "postgresql" and workers != "1":
        parser.error("--phases times batches billed in the bench's own process: on PostgreSQL, add --workers 1")
    n, e = args.customers, args.events
    log(f"bench: usage bill run, {n:,} customers, {e:,} events on {args.db} ({os.cpu_count()} cores)")
    dbs: Databases | None = None
    try:
        dbs = Databases(args.db)
        started = time.perf_counter()
        child("setup", dbs.url, str(n), str(e))
        log(f"setup: {time.perf_counter() - started:.1f} s")
        load_before = os.getloadavg()[0]
        reps = [_repetition(dbs, i, args.repeat, workers, n, args.phases) for i in range(args.repeat)]
        load_after = os.getloadavg()[0]
        rep = sorted(reps, key=lambda r: r["ratio"])[len(reps) // 2]  # the median (the upper one of two)
        run, floor, floors, ratio = rep["run"], rep["floor"], rep["floors"], rep["ratio"]
        if args.repeat > 1:
            listed = ", ".join(f"{r['ratio']:.2f}x" for r in reps)
            log(f"ratios to the floor: {listed}; median {ratio:.2f}x")
        print(
            json.dumps(
                {
                    "db": args.db,
                    "customers": n,
                    "events": e,
                    "seconds": round(run["seconds"], 2),
                    "cpu_seconds": round(run["cpu_seconds"], 2),
                    "server_cpu_seconds": _round(run["server_cpu_seconds"]),
                    "floor_seconds": round(floor["seconds"], 2),
                    "floor_cpu_seconds": round(floor["cpu_seconds"], 2),
                    "floor_server_cpu_seconds": _round(floor["server_cpu_seconds"]),
                    "cpu_ratio_to_reference": _round(_all_cpu(run) / _all_cpu(floor)),
                    "floor_seconds_before_after": [round(f["seconds"], 2) for f in floors],
                    "ratio_to_reference": round(ratio, 2),
                    "invoices_per_s": round(n / run["seconds"], 1),
                    "events_per_s": round(e / run["seconds"], 1),
                    "peak_rss_mb": round(run["peak_rss_mb"], 1),
                    "batch_size": run["batch_size"],
                    "phases": run["phases"],
                    "workers": run["workers"],
                    "repetitions": [
                        {
                            "seconds": round(r["run"]["seconds"], 2),
                            "floor_seconds": round(r["floor"]["seconds"], 2),
                            "ratio_to_reference": round(r["ratio"], 2),
                            "cpu_ratio_to_reference": _round(_all_cpu(r["run"]) / _all_cpu(r["floor"])),
                        }
                        for r in reps
                    ],
                    "load_before": round(load_before, 2),
                    "load_after": round(load_after, 2),
                }
            )
        )
        return 0
    except BenchFailure as exc:
        log(f"FAILED: {exc}")
        return 1
    finally:
        if dbs is not None:
            dbs.drop()


if __name__ == "__main__":
    sys.exit(main())
