"""Benchmark of the recurring bill run, against the floor of the same work with no logic.

    .venv/bin/python bench/bill_run.py --subscriptions 100000 --db postgresql
    .venv/bin/python bench/bill_run.py --subscriptions 1000000 --db sqlite

What it does, in one process tree:

1. Creates a throwaway database (PostgreSQL: a fresh database on 127.0.0.1:5432, dropped at the end; SQLite: a
   file in a temporary directory), migrates it, and bulk-loads (COPY on PostgreSQL, executemany on SQLite) one
   legal entity, one plan with a monthly flat price of 10.00 EUR, N real customers (no test clock), N
   subscriptions (one per customer, started 2026-01-01, calendar anchor 2026-01-01, monthly, in advance) with
   their start event, and a 20 %-forever coupon on every 10th subscription. January was billed by a prior run:
   setup writes its N invoices (numbered INV-2026-000001..N) and N lines as that run would have, and sets each
   subscription's review mark to 2026-01-01. So the measured run is a real recurring run: it reads the
   January lines (the period that may still change) and must bill exactly one February line per subscription.
2. Copies that database (PostgreSQL: CREATE DATABASE ... TEMPLATE; SQLite: a file copy).
3. The floor, in a child process on the copy: one SELECT streaming the same subscriptions, and one minimal
   invoice row plus one invoice_lines row per subscription bulk-written in the same batch size as the bill run,
   one transaction per batch, with the fastest plain means of each driver (COPY on PostgreSQL, executemany on
   SQLite), no logic.
4. The bill run, in another child process on the original: ``bill_run.run(app.uow, as_of=2026-02-01T00:00Z)``.
   Each child reports its own wall time and its own peak RSS (``ru_maxrss``), so the memory figure is the bill
   run's alone, not setup's.
5. Verifies that the run created exactly N invoices and N lines (N/10 of them discounted), that the invoice
   numbers are gapless (max - min + 1 == N), and that the floor wrote N and N. Anything else fails loudly.

The last line printed is one JSON object: invoices_per_s, floor_invoices_per_s, ratio_to_floor, peak_rss_mb
(of the bill run), plus a few more figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, func, select, text

from remit.adapters.db import tables as t
from remit.adapters.db.engine import make_engine, migrate

PG_ADMIN = os.environ.get("REMIT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AS_OF = datetime(2026, 2, 1, tzinfo=UTC)
JAN = date(2026, 1, 1)
FEB = date(2026, 2, 1)
SETUP_CHUNK = 50_000
PRICE_MINOR = 1000
COUPON_PERCENT = Decimal(20)


def log(msg: str) -> None:
    print(msg, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rid(prefix: str) -> str:
    return f"{prefix}_{os.urandom(10).hex()}"


# --------------------------------------------------------------------------------------------------------- setup


class BulkWriter:
    """Rows as dicts straight into a table, with SQLAlchemy's own bind processing of each column (so values are
    stored exactly as the application stores them), through COPY on PostgreSQL and executemany on SQLite."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self.pg = engine.dialect.name == "postgresql"

    def write(self, dbapi_conn: Any, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        cols = [c for c in table.columns if c.name in rows[0]]
        procs = [c.type._cached_bind_processor(self.dialect) for c in cols]
        names = [c.name for c in cols]
        tuples = (tuple(p(r[n]) if p else r[n] for n, p in zip(names, procs, strict=True)) for r in rows)
        cur = dbapi_conn.cursor()
        if self.pg:
            with cur.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
                for tup in tuples:
                    copy.write_row(tup)
        else:
            marks = ", ".join("?" * len(names))
            cur.executemany(f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})", list(tuples))
        cur.close()


def setup_data(engine: Engine, n: int) -> dict[str, Any]:
    """Everything the run reads, bulk-loaded. Returns the ids the checks need."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    le, prod, plan, planv, price, coupon = (
        rid("le"),
        rid("prod"),
        rid("plan"),
        rid("planv"),
        rid("price"),
        rid("coupon"),
    )
    w = BulkWriter(engine)
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        if not w.pg:
            dbapi.execute("BEGIN")
        w.write(dbapi, t.legal_entities, [{
            "id": le, "name": "Bench GmbH", "address": {}, "country": "DE", "currency": "EUR", "tax_id": None,
            "rounding_policy": "half_up", "invoice_prefix": "INV", "credit_note_prefix": "CN", "auto_finalize": True,
            "payment_terms_days": 14, "created_at": now,
        }])
        w.write(dbapi, t.products, [{"id": prod, "name": "Pro", "kind": "plan", "description": "", "created_at": now}])
        w.write(dbapi, t.plans, [{"id": plan, "code": "pro", "name": "Pro", "product_id": prod, "created_at": now}])
        w.write(dbapi, t.plan_versions, [{"id": planv, "plan_id": plan, "version": 1, "created_at": now}])
        w.write(dbapi, t.prices, [{
            "id": price, "product_id": prod, "plan_version_id": planv, "name": "Pro", "currency": "EUR",
            "type": "recurring", "model": "flat", "config": {"amount": "10.00"}, "interval_unit": "month",
            "interval_count": 1, "timing": "in_advance", "created_at": now,
        }])
        w.write(dbapi, t.coupons, [{
            "id": coupon, "code": "BENCH20", "name": "20 % forever", "percent_off": COUPON_PERCENT,
            "amount_off_minor": None, "currency": None, "duration": "forever", "duration_periods": None,
            "max_redemptions": None, "redeem_by": None, "times_redeemed": n // 10, "created_at": now,
        }])
        w.write(dbapi, t.number_series, [{"legal_entity_id": le, "series": "INV-2026", "next_value": n + 1}])
        jan_details = {
            "period": {"start_on": "2026-01-01", "end_on": "2026-02-01"},
            "slices": [{"start_on": "2026-01-01", "end_on": "2026-02-01", "quantity": "1", "fraction": "1/1",
                        "amount": "10.00"}],
            "breakdown": [],
            "billed_before_minor": 0,
        }
        for lo in range(0, n, SETUP_CHUNK):
            hi = min(n, lo + SETUP_CHUNK)
            customers, subs, events, coupons, invoices, lines = [], [], [], [], [], []
            for i in range(lo, hi):
                cus, sub, inv = rid("cus"), rid("sub"), rid("in")
                discounted = i % 10 == 0
                discount = PRICE_MINOR * 20 // 100 if discounted else 0
                customers.append({
                    "id": cus, "legal_entity_id": le, "external_id": None, "name": f"Customer {i}", "email": None,
                    "currency": "EUR", "language": "en", "timezone": "UTC", "country": "DE", "address": {},
                    "tax_ids": [], "test_clock_id": None, "created_at": now,
                })
                subs.append({
                    "id": sub, "customer_id": cus, "plan_id": plan, "currency": "EUR", "status": "active",
                    "interval_unit": "month", "interval_count": 1, "anchor_kind": "calendar", "anchor_on": JAN,
                    "started_on": JAN, "trial_end_on": None, "ended_on": None, "reviewed_from_on": JAN,
                    "next_seq": 1, "created_at": now, "updated_at": now,
                })
                events.append({
                    "id": rid("subev"), "subscription_id": sub, "seq": 0, "effective_on": JAN, "kind": "start",
                    "items": [{"price_id": price, "quantity": "1"}], "source": "start", "recorded_at": now,
                    "revoked_at": None,
                })
                if discounted:
                    coupons.append({
                        "id": rid("subcpn"), "subscription_id": sub, "coupon_id": coupon, "promotion_code_id": None,
                        "applied_on": JAN, "created_at": now,
                    })
                total = PRICE_MINOR - discount
                invoices.append({
                    "id": inv, "customer_id": cus, "legal_entity_id": le, "number": f"INV-2026-{i + 1:06d}",
                    "status": "open", "currency": "EUR", "billing_reason": "subscription_cycle",
                    "subtotal_minor": PRICE_MINOR, "discount_minor": discount, "total_minor": total,
                    "applied_balance_minor": 0, "credited_minor": 0, "paid_minor": 0, "amount_due_minor": total,
                    "period_start_on": JAN, "period_end_on": FEB, "issued_on": JAN, "due_on": date(2026, 1, 15),
                    "memo": None, "bill_run_id": "billrun_prior", "created_at": now, "finalized_at": now,
                    "paid_at": None, "voided_at": None,
                })
                lines.append({
                    "id": rid("il"), "invoice_id": inv, "subscription_id": sub, "price_id": price,
                    "pending_item_id": None, "charge_key": price, "period_start_on": JAN, "period_end_on": FEB,
                    "revision": 0, "kind": "subscription", "description": "Pro", "service_start_on": JAN,
                    "service_end_on": FEB, "quantity": Decimal(1), "unit_price": Decimal(10), "subtotal_minor": PRICE_MINOR,
                    "discount_minor": discount, "amount_minor": total, "corrects_line_id": None,
                    "details": jan_details,
                })
            for table, rows in (
                (t.customers, customers),
                (t.subscriptions, subs),
                (t.subscription_events, events),
                (t.subscription_coupons, coupons),
                (t.invoices, invoices),
                (t.invoice_lines, lines),
            ):
                w.write(dbapi, table, rows)
        dbapi.commit() if w.pg else dbapi.execute("COMMIT")
    finally:
        raw.close()
    if w.pg:
        # Fresh statistics, as autovacuum would have them on a live system (and not in the middle of the run).
        raw = engine.raw_connection()
        try:
            raw.driver_connection.autocommit = True
            raw.driver_connection.execute("VACUUM ANALYZE")
        finally:
            raw.close()
    return {"legal_entity_id": le, "price_id": price}


# --------------------------------------------------------------------------------------------------------- floor


def floor_child(url: str, batch_size: int) -> dict[str, Any]:
    """Read the subscriptions in one streaming SELECT, write one minimal invoice and one line for each."""
    engine = make_engine(url)
    pg = engine.dialect.name == "postgresql"
    reader_raw, writer_raw = engine.raw_connection(), engine.raw_connection()
    reader, writer = reader_raw.driver_connection, writer_raw.driver_connection
    le = writer.execute("SELECT id FROM legal_entities").fetchone()[0]
    writer.commit() if pg else None
    now = datetime.now(UTC)
    now_db: Any = now if pg else now.strftime("%Y-%m-%d %H:%M:%S.%f")
    feb: Any = FEB if pg else FEB.isoformat()
    mar: Any = date(2026, 3, 1) if pg else "2026-03-01"
    inv_cols = (
        "id, customer_id, legal_entity_id, number, status, currency, billing_reason, subtotal_minor, discount_minor,"
        " total_minor, applied_balance_minor, credited_minor, paid_minor, amount_due_minor, created_at"
    )
    line_cols = (
        "id, invoice_id, subscription_id, price_id, charge_key, period_start_on, period_end_on, revision, kind,"
        " description, quantity, unit_price, subtotal_minor, discount_minor, amount_minor, details"
    )
    price_id = writer.execute("SELECT id FROM prices").fetchone()[0]
    writer.commit() if pg else None
    started = time.perf_counter()
    if pg:
        reader_cur = reader.cursor(name="floor_subs")  # server-side: rows stream, never all in memory
        reader_cur.itersize = batch_size
    else:
        reader_cur = reader.cursor()
    reader_cur.execute("SELECT id, customer_id, currency FROM subscriptions ORDER BY customer_id")
    number = 10_000_000
    written = 0
    while True:
        batch = reader_cur.fetchmany(batch_size)
        if not batch:
            break
        invoices, lines = [], []
        for sub_id, cus_id, cur_code in batch:
            inv = rid("in")
            number += 1
            invoices.append((inv, cus_id, le, f"INV-FLOOR-{number}", "open", cur_code, "subscription_cycle",
                             1000, 0, 1000, 0, 0, 0, 1000, now_db))
            lines.append((rid("il"), inv, sub_id, price_id, price_id, feb, mar, 0, "subscription", "Pro", "1", "10",
                          1000, 0, 1000, "{}"))
        wcur = writer.cursor()
        if pg:
            with wcur.copy(f"COPY invoices ({inv_cols}) FROM STDIN") as copy:
                for row in invoices:
                    copy.write_row(row)
            with wcur.copy(f"COPY invoice_lines ({line_cols}) FROM STDIN") as copy:
                for row in lines:
                    copy.write_row(row)
            writer.commit()
        else:
            writer.execute("BEGIN IMMEDIATE")
            wcur.executemany(f"INSERT INTO invoices ({inv_cols}) VALUES ({', '.join('?' * 15)})", invoices)
            wcur.executemany(f"INSERT INTO invoice_lines ({line_cols}) VALUES ({', '.join('?' * 16)})", lines)
            writer.execute("COMMIT")
        wcur.close()
        written += len(batch)
    reader_cur.close()
    if pg:
        reader.commit()
    seconds = time.perf_counter() - started
    reader_raw.close()
    writer_raw.close()
    engine.dispose()
    return {"seconds": seconds, "written": written, "peak_rss_mb": peak_rss_mb()}


# ------------------------------------------------------------------------------------------------------ bill run


def run_child(url: str, batch_size: int | None) -> dict[str, Any]:
    from remit.bootstrap import Remit
    from remit.domain.clock import SystemClock
    from remit.service_layer import bill_run

    app = Remit(make_engine(url), SystemClock())
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    started = time.perf_counter()
    result = bill_run.run(app.uow, as_of=AS_OF, **kwargs)
    seconds = time.perf_counter() - started
    out = {
        "seconds": seconds,
        "run_id": result.id,
        "invoices_created": result.invoices_created,
        "customers_seen": result.customers_seen,
        "peak_rss_mb": peak_rss_mb(),
        "batch_size": batch_size or bill_run.BATCH_SIZE,
    }
    app.engine.dispose()
    return out


def child(mode: str, url: str, batch_size: int | None) -> dict[str, Any]:
    """Run one measured part in a fresh interpreter; its peak RSS is its own."""
    cmd = [sys.executable, __file__, "--child", mode, "--url", url]
    if batch_size is not None:
        cmd += ["--batch-size", str(batch_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"the {mode} child failed (exit {proc.returncode})")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# ---------------------------------------------------------------------------------------------------- checks


class BenchFailure(Exception):
    pass


def check_run(engine: Engine, run_id: str, n: int) -> None:
    with engine.connect() as conn:
        i, ln = t.invoices, t.invoice_lines
        invoices, lo, hi, numbered = conn.execute(
            select(
                func.count(),
                func.min(i.c.number),
                func.max(i.c.number),
                func.count(func.distinct(i.c.number)),
            ).where(i.c.bill_run_id == run_id)
        ).one()
        lines, discounted, febs = conn.execute(
            select(
                func.count(),
                func.count().filter(ln.c.discount_minor > 0),
                func.count().filter(ln.c.period_start_on == FEB),
            )
            .select_from(ln.join(i, i.c.id == ln.c.invoice_id))
            .where(i.c.bill_run_id == run_id)
        ).one()
        statuses = dict(conn.execute(select(i.c.status, func.count()).where(i.c.bill_run_id == run_id)
                                     .group_by(i.c.status)).all())
    problems = []
    if invoices != n:
        problems.append(f"{invoices} invoices, expected {n}")
    if lines != n or febs != n:
        problems.append(f"{lines} lines ({febs} for February), expected {n}")
    if discounted != (n + 9) // 10:
        problems.append(f"{discounted} discounted lines, expected {(n + 9) // 10}")
    if statuses != {"open": n}:
        problems.append(f"statuses {statuses}, expected all open")
    if numbered != n or lo is None:
        problems.append(f"{numbered} distinct numbers, expected {n}")
    else:
        first, last = int(lo.rsplit("-", 1)[1]), int(hi.rsplit("-", 1)[1])
        if last - first + 1 != n:
            problems.append(f"numbers {lo}..{hi} are not gapless over {n} invoices")
        if first != n + 1:
            problems.append(f"numbering starts at {first}, expected {n + 1} (after the prior run's)")
    if problems:
        raise BenchFailure("bill run check failed: " + "; ".join(problems))


def check_floor(engine: Engine, n: int) -> None:
    with engine.connect() as conn:
        invoices = conn.execute(
            select(func.count()).select_from(t.invoices).where(t.invoices.c.number.like("INV-FLOOR-%"))
        ).scalar_one()
        lines = conn.execute(
            select(func.count()).select_from(t.invoice_lines).where(t.invoice_lines.c.period_start_on == FEB)
        ).scalar_one()
    if invoices != n or lines != n:
        raise BenchFailure(f"floor check failed: {invoices} invoices and {lines} lines, expected {n} and {n}")


# --------------------------------------------------------------------------------------------------- databases


class Databases:
    """The database under test and the floor's copy of it; removed on exit."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.tmp = tempfile.mkdtemp(prefix="remit_bench_")
        self.names: list[str] = []
        if kind == "sqlite":
            self.url = f"sqlite:///{self.tmp}/run.db"
            self.floor_url = f"sqlite:///{self.tmp}/floor.db"
        else:
            import psycopg

            base = f"remit_bench_{uuid.uuid4().hex[:10]}"
            self.names = [base, base + "_floor"]
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{base}"')
            root = PG_ADMIN.rsplit("/", 1)[0]
            self.url = f"{root}/{base}"
            self.floor_url = f"{root}/{base}_floor"

    def copy_for_floor(self) -> None:
        if self.kind == "sqlite":
            src = Path(self.tmp) / "run.db"
            shutil.copy(src, Path(self.tmp) / "floor.db")
            return
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.names[1]}" TEMPLATE "{self.names[0]}" STRATEGY FILE_COPY')

    def drop(self) -> None:
        if self.names:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                for name in self.names:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(self.tmp, ignore_errors=True)


def sqlite_checkpoint(url: str) -> None:
    engine = make_engine(url)
    raw = engine.raw_connection()
    try:
        raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()
    engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--batch-size", type=int, default=None, help="bill run batch size (default: the code's)")
    parser.add_argument("--child", choices=["run", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        if args.child == "run":
            out = run_child(args.url, args.batch_size)
        else:
            from remit.service_layer.bill_run import BATCH_SIZE

            out = floor_child(args.url, args.batch_size or BATCH_SIZE)
        print(json.dumps(out))
        return 0

    n = args.subscriptions
    if n < 10:
        parser.error("--subscriptions must be at least 10")
    dbs = Databases(args.db)
    try:
        log(f"bench: {n:,} subscriptions on {args.db} ({os.cpu_count()} cores, Python {sys.version.split()[0]})")
        started = time.perf_counter()
        engine = make_engine(dbs.url)
        migrate(engine)
        setup_data(engine, n)
        engine.dispose()
        if args.db == "sqlite":
            sqlite_checkpoint(dbs.url)
        dbs.copy_for_floor()
        log(f"setup: {time.perf_counter() - started:.1f} s (data loaded and copied for the floor)")

        floor = child("floor", dbs.floor_url, args.batch_size)
        engine = make_engine(dbs.floor_url)
        check_floor(engine, n)
        engine.dispose()
        floor_ips = n / floor["seconds"]
        log(f"floor: {floor['seconds']:.2f} s, {floor_ips:,.0f} invoices/s, peak RSS {floor['peak_rss_mb']:.0f} MB")

        run = child("run", dbs.url, args.batch_size)
        if run["invoices_created"] != n:
            raise BenchFailure(f"the run reports {run['invoices_created']} invoices, expected {n}")
        engine = make_engine(dbs.url)
        check_run(engine, run["run_id"], n)
        engine.dispose()
        ips = n / run["seconds"]
        log(
            f"bill run: {run['seconds']:.2f} s, {ips:,.0f} invoices/s (batch {run['batch_size']}), "
            f"peak RSS {run['peak_rss_mb']:.0f} MB"
        )
        log(f"checks: {n:,} invoices, {n:,} lines, gapless numbers; ratio to floor {floor_ips / ips:.2f}x")
        print(
            json.dumps(
                {
                    "db": args.db,
                    "subscriptions": n,
                    "batch_size": run["batch_size"],
                    "invoices_per_s": round(ips, 1),
                    "floor_invoices_per_s": round(floor_ips, 1),
                    "ratio_to_floor": round(floor_ips / ips, 2),
                    "peak_rss_mb": round(run["peak_rss_mb"], 1),
                    "floor_peak_rss_mb": round(floor["peak_rss_mb"], 1),
                    "run_seconds": round(run["seconds"], 2),
                    "floor_seconds": round(floor["seconds"], 2),
                    "us_per_subscription": round(run["seconds"] / n * 1e6, 2),
                }
            ),
            flush=True,
        )
        return 0
    except BenchFailure as exc:
        print(f"BENCH FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        dbs.drop()


if __name__ == "__main__":
    sys.exit(main())
