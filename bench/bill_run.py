"""Benchmark of the recurring bill run, against the floor of the same work with no logic.

    .venv/bin/python bench/bill_run.py --subscriptions 100000 --db postgresql
    .venv/bin/python bench/bill_run.py --subscriptions 1000000 --db sqlite

What it does (each step in its own child process, see ``--child``):

1. Creates a throwaway database (PostgreSQL: a fresh database on 127.0.0.1:5432, or REMIT_BENCH_POSTGRES_URL,
   dropped at the end; SQLite: a file in a temporary directory, removed at the end), migrates it, and bulk-loads
   (COPY on PostgreSQL, executemany on SQLite, values bound by the columns' own SQLAlchemy types) one legal
   entity, one plan with a monthly flat price of 10.00 EUR, N real customers (no test clock), N subscriptions
   (one per customer, started 2026-01-01, calendar anchor 2026-01-01, monthly, billed in advance) with their
   start event, and a 20 %-forever coupon on every 10th subscription. January was billed by a prior run: setup
   writes its N invoices (INV-2026-000001..N) and N lines exactly as the bill run writes them, and sets each
   subscription's review mark to 2026-01-01. So the measured run is a real recurring run: it reads January's
   lines (a period that may still change) and must bill exactly one February line per subscription. On
   PostgreSQL setup ends with VACUUM ANALYZE (as autovacuum would have done on a live system).
2. Copies that database for the floor (PostgreSQL: CREATE DATABASE ... TEMPLATE; SQLite: a file copy).
3. The floor, on the copy: one SELECT streaming the same subscriptions, and for each one minimal invoice row
   and one invoice_lines row, bulk-written in batches of the bill run's batch size, one transaction per batch,
   with the plainest fast means of each driver (COPY on PostgreSQL, executemany on SQLite), no logic.
4. The bill run, on the original: ``bill_run.run(app.uow, as_of=2026-02-01T00:00Z)`` (system clock, default
   batch size unless ``--batch-size``).
5. Verifies that the run created exactly N invoices and N lines (N/10 of them discounted), that the invoice
   numbers are gapless (max - min + 1 == N, following the prior run's), and that the floor wrote N and N.
   Anything else fails loudly (exit 1).

Steps 3 and 4 each report their own wall time and peak RSS (``ru_maxrss``). The parent imports only the
standard library, so a child's peak is its own: Linux carries the parent's peak into a child's ru_maxrss.

The last line printed is one JSON object: invoices_per_s, floor_invoices_per_s, ratio_to_floor, peak_rss_mb
(the bill run's), and more figures.
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
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

# Only the standard library at module level: see the docstring on peak RSS.

PG_ADMIN = os.environ.get("REMIT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AS_OF = datetime(2026, 2, 1, tzinfo=UTC)
JAN = date(2026, 1, 1)
FEB = date(2026, 2, 1)
MAR = date(2026, 3, 1)
SETUP_CHUNK = 50_000
PRICE_MINOR = 1000
DISCOUNT_MINOR = 200  # 20 % of 10.00


class BenchFailure(Exception):
    pass


def log(msg: str) -> None:
    print(msg, flush=True)


def peak_rss_mb() -> float:
    """The largest resident set of this process and of its finished children (a bill run's worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # KiB on Linux


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (a bill run's worker processes), user and system."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def server_cpu_seconds() -> float | None:
    """CPU time, user and system, of the PostgreSQL server on this machine: every process named ``postgres``,
    with the time of the children its postmaster has reaped (backends of closed connections, parallel workers).
    What a step costs the server is the difference across it (the server's other work, such as autovacuum, counts
    too). None where no server process can be read (a server on another machine)."""
    total, seen = 0, False
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() != "postgres":
                    continue
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone, or not ours to read
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        seen = True
    return total / os.sysconf("SC_CLK_TCK") if seen else None


def default_workers() -> int:
    """The bill run's worker processes when not told: what ``remit bill-run`` uses (the machine's cores, at most 8)."""
    return min(os.cpu_count() or 1, 8)


_RID = [0, 0]  # last millisecond, next counter value


def rid(prefix: str) -> str:
    """An id in Remit's format (``adapters/db/ids.py``: 12 hex digits of milliseconds, 12 of a counter), so the
    loaded data has the key order Remit's own rows have: customers and subscriptions created one after another
    sort in that order. (Standard library only here: see the docstring on peak RSS.)"""
    ms = time.time_ns() // 1_000_000
    if ms > _RID[0]:
        _RID[0], _RID[1] = ms, int.from_bytes(os.urandom(6), "big") >> 1
    _RID[1] += 1
    return f"{prefix}_{_RID[0]:012x}{_RID[1]:012x}"


def bulk_write(dbapi: Any, dialect: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """Rows into a table with the plainest fast means of the driver (COPY on PostgreSQL, executemany on SQLite),
    each value bound by its column's own SQLAlchemy type (so it reads back exactly as the code wrote it)."""
    if not rows:
        return
    cols = [c for c in table.columns if c.name in rows[0]]
    procs = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in cols]
    names = [c.name for c in cols]
    tuples = [tuple(p(r[k]) if p else r[k] for k, p in zip(names, procs, strict=True)) for r in rows]
    cur = dbapi.cursor()
    if dialect.name == "postgresql":
        with cur.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
            for tup in tuples:
                copy.write_row(tup)
    else:
        marks = ", ".join("?" * len(names))
        cur.executemany(f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})", tuples)
    cur.close()


def settle_loaded(dbapi: Any, pg: bool) -> None:
    """End a bulk load's transaction and leave the database as a long-running one would be: PostgreSQL's
    statistics gathered (VACUUM ANALYZE) and its dirty pages written (CHECKPOINT: otherwise the checkpoint that
    the load's gigabytes of WAL set off writes them out while the steps measured run), SQLite's WAL checkpointed
    into the file."""
    if pg:
        dbapi.commit()
        dbapi.autocommit = True
        dbapi.execute("VACUUM ANALYZE")
        dbapi.execute("CHECKPOINT")
    else:
        dbapi.execute("COMMIT")
        dbapi.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def legal_entity_row(le: str, now: datetime) -> dict[str, Any]:
    """The one seller of every bench: a German GmbH in EUR, rounding half up, invoices finalized at once."""
    return {
        "id": le,
        "name": "Bench GmbH",
        "address": {},
        "country": "DE",
        "currency": "EUR",
        "tax_id": None,
        "rounding_policy": "half_up",
        "invoice_prefix": "INV",
        "credit_note_prefix": "CN",
        "auto_finalize": True,
        "payment_terms_days": 14,
        "created_at": now,
    }


def customer_row(cus: str, le: str, i: int, now: datetime) -> dict[str, Any]:
    return {
        "id": cus,
        "legal_entity_id": le,
        "external_id": None,
        "name": f"Customer {i}",
        "email": None,
        "currency": "EUR",
        "language": "en",
        "timezone": "UTC",
        "country": "DE",
        "address": {},
        "tax_ids": [],
        "test_clock_id": None,
        "created_at": now,
    }


def subscription_row(sub: str, cus: str, plan: str, now: datetime) -> dict[str, Any]:
    """Monthly, started and anchored on 1 January, reviewed up to then."""
    return {
        "id": sub,
        "customer_id": cus,
        "plan_id": plan,
        "currency": "EUR",
        "status": "active",
        "interval_unit": "month",
        "interval_count": 1,
        "anchor_kind": "calendar",
        "anchor_on": JAN,
        "started_on": JAN,
        "trial_end_on": None,
        "ended_on": None,
        "reviewed_from_on": JAN,
        "next_seq": 1,
        "created_at": now,
        "updated_at": now,
    }


def start_event_row(sub: str, price: str, now: datetime) -> dict[str, Any]:
    return {
        "id": rid("subev"),
        "subscription_id": sub,
        "seq": 0,
        "effective_on": JAN,
        "kind": "start",
        "items": [{"price_id": price, "quantity": "1"}],
        "source": "start",
        "recorded_at": now,
        "revoked_at": None,
    }


# ------------------------------------------------------------------------------------------------- the children


def child_setup(url: str, n: int) -> dict[str, Any]:
    """Migrate and load the data (see the module docstring)."""
    from remit.adapters.db import tables as t
    from remit.adapters.db.engine import make_engine, migrate

    engine = make_engine(url)
    migrate(engine)
    pg = engine.dialect.name == "postgresql"
    dialect = engine.dialect

    def write(dbapi: Any, table: Any, rows: list[dict[str, Any]]) -> None:
        bulk_write(dbapi, dialect, table, rows)

    now = datetime(2026, 1, 1, tzinfo=UTC)
    le, prod, plan, planv, price, coupon = (rid(p) for p in ("le", "prod", "plan", "planv", "price", "coupon"))
    jan_details = {
        "period": {"start_on": "2026-01-01", "end_on": "2026-02-01"},
        "slices": [
            {"start_on": "2026-01-01", "end_on": "2026-02-01", "quantity": "1", "fraction": "1/1", "amount": "10.00"}
        ],
        "breakdown": [
            {"description": "flat fee 10.00", "units": "0", "unit_price": "0", "flat_fee": "10.00", "amount": "10.00"}
        ],
        "billed_before_minor": 0,
    }
    raw = engine.raw_connection()
    try:
        dbapi: Any = raw.driver_connection
        if not pg:
            dbapi.execute("BEGIN")
        write(dbapi, t.legal_entities, [legal_entity_row(le, now)])
        write(dbapi, t.products, [{"id": prod, "name": "Pro", "kind": "plan", "description": "", "created_at": now}])
        write(dbapi, t.plans, [{"id": plan, "code": "pro", "name": "Pro", "product_id": prod, "created_at": now}])
        write(dbapi, t.plan_versions, [{"id": planv, "plan_id": plan, "version": 1, "created_at": now}])
        write(
            dbapi,
            t.prices,
            [
                {
                    "id": price,
                    "product_id": prod,
                    "plan_version_id": planv,
                    "name": "Pro",
                    "currency": "EUR",
                    "type": "recurring",
                    "model": "flat",
                    "config": {"amount": "10.00"},
                    "interval_unit": "month",
                    "interval_count": 1,
                    "timing": "in_advance",
                    "created_at": now,
                }
            ],
        )
        write(
            dbapi,
            t.coupons,
            [
                {
                    "id": coupon,
                    "code": "BENCH20",
                    "name": "20 % forever",
                    "percent_off": Decimal(20),
                    "amount_off_minor": None,
                    "currency": None,
                    "duration": "forever",
                    "duration_periods": None,
                    "max_redemptions": None,
                    "redeem_by": None,
                    "times_redeemed": (n + 9) // 10,
                    "created_at": now,
                }
            ],
        )
        write(dbapi, t.number_series, [{"legal_entity_id": le, "series": "INV-2026", "next_value": n + 1}])
        for lo in range(0, n, SETUP_CHUNK):
            customers, subs, events, coupons, invoices, lines = [], [], [], [], [], []
            for i in range(lo, min(n, lo + SETUP_CHUNK)):
                cus, sub, inv = rid("cus"), rid("sub"), rid("in")
                discount = DISCOUNT_MINOR if i % 10 == 0 else 0
                total = PRICE_MINOR - discount
                customers.append(customer_row(cus, le, i, now))
                subs.append(subscription_row(sub, cus, plan, now))
                events.append(start_event_row(sub, price, now))
                if discount:
                    coupons.append(
                        {
                            "id": rid("subcpn"),
                            "subscription_id": sub,
                            "coupon_id": coupon,
                            "promotion_code_id": None,
                            "applied_on": JAN,
                            "created_at": now,
                        }
                    )
                invoices.append(
                    {
                        "id": inv,
                        "customer_id": cus,
                        "legal_entity_id": le,
                        "number": f"INV-2026-{i + 1:06d}",
                        "status": "open",
                        "currency": "EUR",
                        "billing_reason": "subscription_cycle",
                        "subtotal_minor": PRICE_MINOR,
                        "discount_minor": discount,
                        "total_minor": total,
                        "applied_balance_minor": 0,
                        "credited_minor": 0,
                        "paid_minor": 0,
                        "amount_due_minor": total,
                        "period_start_on": JAN,
                        "period_end_on": FEB,
                        "issued_on": JAN,
                        "due_on": date(2026, 1, 15),
                        "memo": None,
                        "bill_run_id": "billrun_prior",
                        "created_at": now,
                        "finalized_at": now,
                        "paid_at": None,
                        "voided_at": None,
                    }
                )
                lines.append(
                    {
                        "id": rid("il"),
                        "invoice_id": inv,
                        "subscription_id": sub,
                        "price_id": price,
                        "pending_item_id": None,
                        "charge_key": price,
                        "period_start_on": JAN,
                        "period_end_on": FEB,
                        "revision": 0,
                        "kind": "subscription",
                        "description": "Pro",
                        "service_start_on": JAN,
                        "service_end_on": FEB,
                        "quantity": Decimal(1),
                        "unit_price": Decimal(10),
                        "subtotal_minor": PRICE_MINOR,
                        "discount_minor": discount,
                        "amount_minor": total,
                        "corrects_line_id": None,
                        "details": jan_details,
                    }
                )
            for table, rows in (
                (t.customers, customers),
                (t.subscriptions, subs),
                (t.subscription_events, events),
                (t.subscription_coupons, coupons),
                (t.invoices, invoices),
                (t.invoice_lines, lines),
            ):
                write(dbapi, table, rows)
        settle_loaded(dbapi, pg)
    finally:
        raw.close()
    engine.dispose()
    return {"peak_rss_mb": peak_rss_mb()}


def child_floor(url: str, batch_size: int) -> dict[str, Any]:
    """One streaming SELECT of the subscriptions; one minimal invoice and one line each, written in batches."""
    from remit.adapters.db.engine import make_engine

    engine = make_engine(url)
    pg = engine.dialect.name == "postgresql"
    writer_raw = engine.raw_connection()
    writer: Any = writer_raw.driver_connection
    le = writer.execute("SELECT id FROM legal_entities").fetchone()[0]
    price_id = writer.execute("SELECT id FROM prices").fetchone()[0]
    if pg:
        writer.commit()
    now = datetime.now(UTC)
    # SQLite stores what SQLAlchemy's types would bind: ISO dates, "YYYY-MM-DD HH:MM:SS.ffffff" UTC times.
    now_db: Any = now if pg else now.strftime("%Y-%m-%d %H:%M:%S.%f")
    feb: Any = FEB if pg else FEB.isoformat()
    mar: Any = MAR if pg else MAR.isoformat()
    inv_cols = (
        "id, customer_id, legal_entity_id, number, status, currency, billing_reason, subtotal_minor, discount_minor,"
        " total_minor, applied_balance_minor, credited_minor, paid_minor, amount_due_minor, created_at"
    )
    line_cols = (
        "id, invoice_id, subscription_id, price_id, charge_key, period_start_on, period_end_on, revision, kind,"
        " description, quantity, unit_price, subtotal_minor, discount_minor, amount_minor, details"
    )
    select_subs = "SELECT id, customer_id, currency FROM subscriptions ORDER BY customer_id"
    started, cpu_started = time.perf_counter(), time.process_time()
    reader_raw: Any
    reader: Any
    reader_cur: Any
    if pg:
        # A server-side cursor on its own connection: rows stream, and the writer commits batch by batch.
        reader_raw = engine.raw_connection()
        reader = reader_raw.driver_connection
        reader_cur = reader.cursor(name="floor_subscriptions")
        reader_cur.itersize = batch_size
        reader_cur.execute(select_subs)
        batches: Any = iter(lambda: reader_cur.fetchmany(batch_size), [])
    else:
        # On SQLite, a SELECT still open while batches commit pins the WAL (it cannot be reset while a reader
        # holds a snapshot: at 1M it grew past 15 GB), so the one SELECT is read to the end first; its time
        # counts. The bill run reads batch by batch and does not have that problem.
        reader_raw = reader = reader_cur = None
        rows = writer.execute(select_subs).fetchall()
        batches = (rows[i : i + batch_size] for i in range(0, len(rows), batch_size))
    number, written = 0, 0
    for batch in batches:
        invoices, lines = [], []
        for sub_id, cus_id, cur_code in batch:
            inv = rid("in")
            number += 1
            invoices.append(
                (
                    inv,
                    cus_id,
                    le,
                    f"FLOOR-{number:07d}",
                    "open",
                    cur_code,
                    "subscription_cycle",
                    PRICE_MINOR,
                    0,
                    PRICE_MINOR,
                    0,
                    0,
                    0,
                    PRICE_MINOR,
                    now_db,
                )
            )
            lines.append(
                (
                    rid("il"),
                    inv,
                    sub_id,
                    price_id,
                    price_id,
                    feb,
                    mar,
                    0,
                    "subscription",
                    "Pro",
                    "1",
                    "10",
                    PRICE_MINOR,
                    0,
                    PRICE_MINOR,
                    "{}",
                )
            )
        wcur = writer.cursor()
        if pg:
            with wcur.copy(f"COPY invoices ({inv_cols}) FROM STDIN") as copy:
                for invoice in invoices:
                    copy.write_row(invoice)
            with wcur.copy(f"COPY invoice_lines ({line_cols}) FROM STDIN") as copy:
                for line in lines:
                    copy.write_row(line)
            writer.commit()
        else:
            wcur.execute("BEGIN IMMEDIATE")
            wcur.executemany(f"INSERT INTO invoices ({inv_cols}) VALUES ({', '.join('?' * 15)})", invoices)
            wcur.executemany(f"INSERT INTO invoice_lines ({line_cols}) VALUES ({', '.join('?' * 16)})", lines)
            wcur.execute("COMMIT")
        wcur.close()
        written += len(batch)
    if reader_raw is not None:
        reader_cur.close()
        reader.commit()
        reader_raw.close()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    writer_raw.close()
    engine.dispose()
    return {"seconds": seconds, "cpu_seconds": cpu, "written": written, "peak_rss_mb": peak_rss_mb()}


def child_run(url: str, batch_size: int | None, workers: int) -> dict[str, Any]:
    """The measured bill run, as ``remit bill-run`` would start it."""
    from remit.adapters.db.engine import make_engine
    from remit.bootstrap import Remit
    from remit.domain.clock import SystemClock
    from remit.service_layer import bill_run

    app = Remit(make_engine(url), SystemClock())
    kwargs: dict[str, Any] = {} if batch_size is None else {"batch_size": batch_size}
    started, cpu_started = time.perf_counter(), cpu_seconds()
    result = bill_run.run(app.uow, as_of=AS_OF, workers=workers, **kwargs)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    app.engine.dispose()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "workers": workers if app.engine.dialect.name == "postgresql" else 1,  # SQLite bills batches in turn
        "run_id": result.id,
        "invoices_created": result.invoices_created,
        "customers_seen": result.customers_seen,
        "batch_size": batch_size or bill_run.BATCH_SIZE,
        "peak_rss_mb": peak_rss_mb(),
    }


def child_check(url: str, floor_url: str, run_id: str, n: int) -> dict[str, Any]:
    """Exactly N invoices and N lines, gapless numbers; the floor wrote N and N."""
    from sqlalchemy import func, select

    from remit.adapters.db import tables as t
    from remit.adapters.db.engine import make_engine

    i, ln = t.invoices, t.invoice_lines
    engine = make_engine(url)
    with engine.connect() as conn:
        invoices, lo, hi, distinct = conn.execute(
            select(
                func.count(), func.min(i.c.number), func.max(i.c.number), func.count(func.distinct(i.c.number))
            ).where(i.c.bill_run_id == run_id)
        ).one()
        lines, discounted, in_february = conn.execute(
            select(
                func.count(),
                func.count().filter(ln.c.discount_minor == DISCOUNT_MINOR),
                func.count().filter(ln.c.period_start_on == FEB, ln.c.subtotal_minor == PRICE_MINOR),
            )
            .select_from(ln.join(i, i.c.id == ln.c.invoice_id))
            .where(i.c.bill_run_id == run_id)
        ).one()
        statuses: dict[str, int] = dict(
            conn.execute(select(i.c.status, func.count()).where(i.c.bill_run_id == run_id).group_by(i.c.status)).all()
        )
        all_lines = conn.execute(select(func.count()).select_from(ln)).scalar_one()
    engine.dispose()
    problems = []
    if invoices != n:
        problems.append(f"{invoices} invoices, expected {n}")
    if lines != n or in_february != n:
        problems.append(f"{lines} lines ({in_february} of 10.00 for February), expected {n}")
    if all_lines != 2 * n:
        problems.append(f"{all_lines} lines in all, expected {2 * n} (January's and February's)")
    if discounted != (n + 9) // 10:
        problems.append(f"{discounted} discounted lines, expected {(n + 9) // 10}")
    if statuses != {"open": n}:
        problems.append(f"statuses {statuses}, expected {n} open")
    if distinct != n or lo is None:
        problems.append(f"{distinct} distinct numbers, expected {n}")
    else:
        first, last = int(lo.rsplit("-", 1)[1]), int(hi.rsplit("-", 1)[1])
        if last - first + 1 != n:
            problems.append(f"numbers {lo}..{hi} are not gapless over {n} invoices")
        if first != n + 1:
            problems.append(f"numbers start at {first}, expected {n + 1} (after the prior run's)")
    engine = make_engine(floor_url)
    with engine.connect() as conn:
        floor_invoices = conn.execute(
            select(func.count()).select_from(i).where(i.c.number.like("FLOOR-%"))
        ).scalar_one()
        floor_lines = conn.execute(select(func.count()).select_from(ln).where(ln.c.period_start_on == FEB)).scalar_one()
    engine.dispose()
    if floor_invoices != n or floor_lines != n:
        problems.append(f"the floor wrote {floor_invoices} invoices and {floor_lines} lines, expected {n} and {n}")
    return {"problems": problems}


def child_admin(statements: Sequence[str]) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)
    return {}


def child(mode: str, *args: str) -> dict[str, Any]:
    """Run one step in a fresh interpreter; returns the JSON object it prints last."""
    proc = subprocess.run([sys.executable, __file__, "--child", mode, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise BenchFailure(f"the {mode} step failed (exit {proc.returncode})")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# ------------------------------------------------------------------------------------------------- the parent


def seller_app(engine: Any, at: datetime) -> tuple[Any, Any]:
    """The schema migrated into ``engine``, a Remit on a fixed clock at ``at`` and a legal entity (EUR, Germany):
    where the wallet and history benches start. Returns the app and its clock."""
    from remit.adapters.db.engine import migrate
    from remit.bootstrap import Remit
    from remit.domain.clock import FixedClock
    from remit.service_layer import accounts

    migrate(engine)
    clock = FixedClock(at)
    app = Remit(engine, clock)
    with app.uow() as uow:
        accounts.create_legal_entity(uow, "Bench GmbH", "DE", "EUR")
    return app, clock


# A timing's wall-clock seconds (time.perf_counter), the one float the benches keep: never money or a quantity.
Seconds = float


class Databases:
    """The database under test and the floor's copy of it; both removed by ``drop``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.tmp = tempfile.mkdtemp(prefix="remit_bench_")
        self.names: list[str] = []
        if kind == "sqlite":
            self.url = f"sqlite:///{self.tmp}/run.db"
            self.floor_url = f"sqlite:///{self.tmp}/floor.db"
        else:
            base = f"remit_bench_{uuid.uuid4().hex[:10]}"
            self.names = [base, f"{base}_floor"]
            root = PG_ADMIN.rsplit("/", 1)[0]
            self.url, self.floor_url = f"{root}/{base}", f"{root}/{base}_floor"
            child("admin", f'CREATE DATABASE "{base}"')

    def copy_for_floor(self) -> None:
        if self.kind == "sqlite":
            shutil.copy(Path(self.tmp) / "run.db", Path(self.tmp) / "floor.db")
        else:
            child("admin", f'CREATE DATABASE "{self.names[1]}" TEMPLATE "{self.names[0]}" STRATEGY FILE_COPY')

    def copy(self, label: str) -> str:
        """A fresh copy of the database under test, for one repetition of steps that change it; its URL."""
        if self.kind == "sqlite":
            shutil.copy(Path(self.tmp) / "run.db", Path(self.tmp) / f"{label}.db")
            return f"sqlite:///{self.tmp}/{label}.db"
        name = f"{self.names[0]}_{label}"
        self.names.append(name)
        child("admin", f'CREATE DATABASE "{name}" TEMPLATE "{self.names[0]}" STRATEGY FILE_COPY')
        return f"{self.url.rsplit('/', 1)[0]}/{name}"

    def remove(self, url: str) -> None:
        """Remove a copy made by ``copy``."""
        if self.kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
        else:
            name = url.rsplit("/", 1)[1]
            child("admin", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.names.remove(name)

    def drop(self) -> None:
        try:
            if self.names:
                child("admin", *(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in self.names))
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--subscriptions", type=int, default=100_000, help="how many (default 100000)")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--batch-size", type=int, default=None, help="bill run batch size (default: the code's)")
    parser.add_argument(
        "--workers", type=int, default=None, help="bill run worker processes (default: as remit bill-run, the cores)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        a = args.args
        if args.child == "setup":
            out = child_setup(a[0], int(a[1]))
        elif args.child == "floor":
            out = child_floor(a[0], int(a[1]))
        elif args.child == "run":
            out = child_run(a[0], int(a[1]) if a[1] != "default" else None, int(a[2]))
        elif args.child == "check":
            out = child_check(a[0], a[1], a[2], int(a[3]))
        elif args.child == "admin":
            out = child_admin(a)
        else:
            parser.error(f"unknown step {args.child}")
        print(json.dumps(out), flush=True)
        return 0

    n = args.subscriptions
    if n < 10:
        parser.error("--subscriptions must be at least 10")
    log(f"bench: {n:,} subscriptions on {args.db} ({os.cpu_count()} cores, Python {sys.version.split()[0]})")
    dbs: Databases | None = None
    try:
        dbs = Databases(args.db)
        started = time.perf_counter()
        child("setup", dbs.url, str(n))
        dbs.copy_for_floor()
        log(f"setup: {time.perf_counter() - started:.1f} s (data loaded, and copied for the floor)")

        run_batch = "default" if args.batch_size is None else str(args.batch_size)
        if args.batch_size is None:
            # The floor writes in the bill run's batches; ask the code for its default without importing it here.
            probe = subprocess.run(
                [sys.executable, "-c", "from remit.service_layer.bill_run import BATCH_SIZE; print(BATCH_SIZE)"],
                capture_output=True,
                text=True,
                check=True,
            )
            floor_batch = int(probe.stdout.strip())
        else:
            floor_batch = args.batch_size
        load_before = os.getloadavg()[0]
        floor = child("floor", dbs.floor_url, str(floor_batch))
        floor_ips = n / floor["seconds"]
        log(
            f"floor: {floor['seconds']:.2f} s, {floor_ips:,.0f} invoices/s (batch {floor_batch}), "
            f"peak RSS {floor['peak_rss_mb']:.0f} MB"
        )
        workers = args.workers or default_workers()
        run = child("run", dbs.url, run_batch, str(workers))
        load_after = os.getloadavg()[0]
        ips = n / run["seconds"]
        log(
            f"bill run: {run['seconds']:.2f} s, {ips:,.0f} invoices/s (batch {run['batch_size']}, "
            f"{run['workers']} billing process(es)), "
            f"peak RSS {run['peak_rss_mb']:.0f} MB"
        )
        if run["invoices_created"] != n:
            raise BenchFailure(f"the run reports {run['invoices_created']} invoices, expected {n}")
        problems = child("check", dbs.url, dbs.floor_url, run["run_id"], str(n))["problems"]
        if problems:
            raise BenchFailure("; ".join(problems))
        log(f"checks: {n:,} invoices and {n:,} lines, numbers gapless; the floor wrote {n:,} and {n:,}")
        log(f"ratio to floor: {floor_ips / ips:.2f}x")
        print(
            json.dumps(
                {
                    "db": args.db,
                    "subscriptions": n,
                    "batch_size": run["batch_size"],
                    "workers": run["workers"],
                    "invoices_per_s": round(ips, 1),
                    "floor_invoices_per_s": round(floor_ips, 1),
                    "ratio_to_floor": round(floor_ips / ips, 2),
                    "peak_rss_mb": round(run["peak_rss_mb"], 1),
                    "us_per_subscription": round(run["seconds"] / n * 1e6, 1),
                    "run_seconds": round(run["seconds"], 2),
                    "floor_seconds": round(floor["seconds"], 2),
                    "floor_peak_rss_mb": round(floor["peak_rss_mb"], 1),
                    # Python CPU of each step (the database server's own work is not in it), and the machine's
                    # 1-minute load average before the floor and after the run: other work slows the wall times.
                    "run_cpu_seconds": round(run["cpu_seconds"], 2),
                    "floor_cpu_seconds": round(floor["cpu_seconds"], 2),
                    "load_avg": [round(load_before, 2), round(load_after, 2)],
                }
            ),
            flush=True,
        )
        return 0
    except BenchFailure as exc:
        print(f"BENCH FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if dbs is not None:
            dbs.drop()


if __name__ == "__main__":
    sys.exit(main())
