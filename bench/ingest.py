"""Benchmark of usage ingestion: the import path against raw bulk loading, and the HTTP API under load.

    .venv/bin/python bench/ingest.py --mode import --events 10000000 --db postgresql
    .venv/bin/python bench/ingest.py --mode import --events 1000000 --db sqlite
    .venv/bin/python bench/ingest.py --mode http --events 300000 --single 20000

``--mode import`` (PostgreSQL or SQLite):

1. Creates a throwaway database (PostgreSQL: a fresh database on 127.0.0.1:5432, or REMIT_BENCH_POSTGRES_URL,
   dropped at the end; SQLite: a file in a temporary directory, removed at the end), with `remit init`,
   ``--customers`` customers and two meters (``tokens``: sum of a property, grouped by model; ``calls``: count).
2. Writes, in a temporary directory, ``--events`` events as JSON lines (the file imported), spread over the last
   30 days, a ``--duplicates`` fraction of them repeating an earlier transaction id, with random (UUID-like) or
   sequential transaction ids (``--key-order``). From the same events it writes the reference's input: the
   distinct events exactly as they are stored (every column of ``usage_events``), in COPY text format.
3. The reference, in the same run and the same database: a scratch table like usage_events (the same columns
   and the same indexes: its primary key, which aggregation reads) with a unique index on (customer_id,
   transaction_id), loaded with one raw ``COPY ... FROM STDIN`` of
   that file (PostgreSQL), or an ``executemany`` of a plain INSERT in chunks of ``--chunk-size``, one
   transaction each (SQLite). No parsing, no checks, no dedup: the database's bulk rate for these rows.
4. Ours: `remit events import FILE --grace-days 31 --json` as a child process, timed from start to exit (Python
   start-up included), its peak RSS from wait4.
5. Checks the report (accepted = distinct events, duplicates = repeats, nothing refused) and that usage_events
   holds exactly the distinct events; anything else fails loudly (exit 1).

``--mode http`` (PostgreSQL): the same set-up plus a write API key, then one `remit serve` process (``--workers``,
default 1; rate limit lifted) driven by ``--concurrency`` keep-alive connections (bench/api.py's raw asyncio
client): ``--events`` events in batches of ``--batch`` per ``POST /v1/events/batch``, then ``--single`` single
``POST /v1/events``. Checks that usage_events holds every event. The HTTP figures are compared with the goals
(30,000 events/s in batches, 2,500 single events/s), not with a reference.

The last line printed is one JSON object with every figure: events_per_s, reference_events_per_s,
ratio_to_reference, peak_rss_mb (the import's; the server's for http), batch and single throughput with p50/p99
(http), and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import insert, text

sys.path.insert(0, str(Path(__file__).parent))
from api import drive, free_port, wait_up  # noqa: E402  (bench/api.py: the raw asyncio HTTP client)

from remit.adapters.db import tables as t  # noqa: E402
from remit.adapters.db.engine import make_engine  # noqa: E402

PG_ADMIN = os.environ.get("REMIT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
EXE = str(Path(sys.executable).with_name("remit"))
MODELS = ("small", "medium", "large")
BLOCK = 1 << 20


def log(msg: str) -> None:
    print(msg, flush=True)


def load() -> float:
    return round(os.getloadavg()[0], 2)


class Database:
    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        if kind == "postgresql":
            self.name = f"remit_bench_ingest_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
            self.dsn = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.name
            self.url = self.dsn.replace("postgresql://", "postgresql+psycopg://")
        else:
            self.path = tmp / "bench.db"
            self.url = f"sqlite:///{self.path}"

    def drop(self) -> None:
        if self.kind == "postgresql":
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def remit_cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run([EXE, *args], env=env, check=True, capture_output=True, text=True).stdout


def set_up(db: Database, customers: int, env: dict[str, str]) -> list[str]:
    remit_cli(env, "init", "--currency", "EUR", "--country", "DE")
    remit_cli(env, "meters", "create", "--code", "tokens", "--aggregation", "sum", "--field", "tokens", "--group-by",
              "model")  # fmt: skip
    remit_cli(env, "meters", "create", "--code", "calls", "--aggregation", "count")
    engine = make_engine(db.url)
    now = datetime.now(UTC)
    ids = [f"cus_{os.urandom(10).hex()}" for _ in range(customers)]
    with engine.begin() as conn:
        entity = conn.execute(text("SELECT id FROM legal_entities")).scalar_one()
        rows = [
            {
                "id": cid,
                "legal_entity_id": entity,
                "name": f"Customer {i}",
                "currency": "EUR",
                "language": "en",
                "timezone": "UTC",
                "country": "DE",
                "address": {},
                "tax_ids": [],
                "created_at": now,
            }
            for i, cid in enumerate(ids)
        ]
        conn.execute(insert(t.customers), rows)
    engine.dispose()
    return ids


def generate(
    tmp: Path, n: int, customers: list[str], duplicates: float, key_order: str, seed: int
) -> tuple[Path, Path, int]:
    """The JSON-lines file to import, and the reference's COPY-text file of the distinct events."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    received = now.isoformat()
    start = now - timedelta(days=30)
    span = 30 * 86_400 - 3_600
    jsonl, tsv = tmp / "events.jsonl", tmp / "reference.tsv"
    distinct = 0
    recent: list[str] = []
    with jsonl.open("w") as out, tsv.open("w") as ref:
        lines: list[str] = []
        refs: list[str] = []
        for i in range(n):
            cus = customers[rng.randrange(len(customers))] if key_order == "random" else customers[i % len(customers)]
            if recent and rng.random() < duplicates:
                line = recent[rng.randrange(len(recent))]  # a repeat: same customer, same transaction id
                lines.append(line)
            else:
                txn = uuid.UUID(int=rng.getrandbits(128)).hex if key_order == "random" else f"txn-{i:012d}"
                at = (start + timedelta(seconds=span * i // n)).isoformat()
                if i % 4 == 3:
                    code, props, value, group = "calls", '{"path": "/v1/things"}', "\\N", "[]"
                else:
                    code, tokens, model = "calls", 0, ""
                    tokens, model = rng.randrange(1, 5000), MODELS[i % 3]
                    code = "tokens"
                    props = f'{{"tokens": {tokens}, "model": "{model}"}}'
                    value, group = str(tokens), f'["{model}"]'
                line = (
                    f'{{"customer_id": "{cus}", "code": "{code}", "transaction_id": "{txn}", "timestamp": "{at}", '
                    f'"properties": {props}}}\n'
                )
                lines.append(line)
                if len(recent) < 10_000:
                    recent.append(line)
                else:
                    recent[rng.randrange(10_000)] = line
                refs.append(
                    f"uev_{os.urandom(10).hex()}\t{at}\t{cus}\t\\N\t{code}\t{txn}\t{received}\t{value}\t\\N\t"
                    f"{group}\tt\t{props}\n"
                )
                distinct += 1
            if len(lines) >= 50_000:
                out.write("".join(lines))
                ref.write("".join(refs))
                lines, refs = [], []
        out.write("".join(lines))
        ref.write("".join(refs))
    return jsonl, tsv, distinct


def reference(db: Database, tsv: Path, chunk: int) -> float:
    """Seconds to bulk-load the distinct events into a scratch table like usage_events, with its indexes, and a
    unique index on (customer_id, transaction_id)."""
    if db.kind == "postgresql":
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE ingest_reference (LIKE usage_events INCLUDING DEFAULTS INCLUDING INDEXES)")
            conn.execute("CREATE UNIQUE INDEX ON ingest_reference (customer_id, transaction_id)")
            conn.execute("CHECKPOINT")
            started = time.perf_counter()
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy("COPY ingest_reference FROM STDIN") as copy,
                tsv.open("rb") as fh,
            ):
                while block := fh.read(BLOCK):
                    copy.write(block)
            seconds = time.perf_counter() - started
            conn.execute("DROP TABLE ingest_reference")
            conn.execute("CHECKPOINT")
        return seconds
    import sqlite3

    lite = sqlite3.connect(db.path, isolation_level=None)
    lite.execute("PRAGMA journal_mode=WAL")
    lite.execute("PRAGMA synchronous=NORMAL")
    lite.execute("PRAGMA cache_size=-262144")  # as the import's connection (usage_import.SQLITE_CACHE_KIB)
    columns = [c.name for c in t.usage_events.columns]
    # The table and its indexes as the migrations made them, renamed.
    for (ddl,) in lite.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'usage_events' AND sql IS NOT NULL ORDER BY type DESC"
    ).fetchall():
        lite.execute(ddl.replace("usage_events", "ingest_reference"))
    lite.execute("CREATE UNIQUE INDEX ix_ingest_reference ON ingest_reference (customer_id, transaction_id)")
    sql = f"INSERT INTO ingest_reference VALUES ({', '.join('?' * len(columns))})"
    started = time.perf_counter()
    with tsv.open() as fh:
        rows: list[list[Any]] = []
        for line in fh:
            row: list[Any] = line.rstrip("\n").split("\t")
            rows.append([None if v == "\\N" else v for v in row])
            if len(rows) >= chunk:
                lite.execute("BEGIN IMMEDIATE")
                lite.executemany(sql, rows)
                lite.execute("COMMIT")
                rows = []
        if rows:
            lite.execute("BEGIN IMMEDIATE")
            lite.executemany(sql, rows)
            lite.execute("COMMIT")
    seconds = time.perf_counter() - started
    lite.execute("DROP TABLE ingest_reference")
    lite.close()
    return seconds


def run_import(env: dict[str, str], jsonl: Path, chunk: int) -> tuple[float, float, dict[str, Any]]:
    """`remit events import` in a child process: seconds, peak RSS (MB) and its JSON report."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [EXE, "events", "import", str(jsonl), "--grace-days", "31", "--chunk-size", str(chunk), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    # communicate() reaped the child; its rusage is the maximum over reaped children, and it is the only one.
    import resource

    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        raise SystemExit(f"import failed ({proc.returncode}): {err.decode()[-2000:]} {out.decode()[-2000:]}")
    return seconds, rss, json.loads(out)


def peak_rss_of_tree(pid: int) -> float:
    """The largest peak RSS (VmHWM, MB) of a process and its children: the server's workers, if it has any."""
    pids = [pid]
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"\nPPid:\t{pid}\n" in status.read_text():
                pids.append(int(status.parent.name))
        except OSError:
            continue
    peak = 0.0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return round(peak, 1)


def stored(db: Database) -> int:
    engine = make_engine(db.url)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM usage_events")).scalar_one()
    engine.dispose()
    return int(n)


def mode_import(args: argparse.Namespace, db: Database, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    customers = set_up(db, args.customers, env)
    started = time.perf_counter()
    jsonl, tsv, distinct = generate(tmp, args.events, customers, args.duplicates, args.key_order, args.seed)
    log(
        f"data: {args.events:,} events ({distinct:,} distinct, {args.key_order} keys), "
        f"{jsonl.stat().st_size / 1e6:,.0f} MB of JSON lines, written in {time.perf_counter() - started:.1f} s"
    )
    load_ref = load()
    ref_s = reference(db, tsv, args.chunk_size)
    ref_rate = distinct / ref_s
    log(f"reference: raw {'COPY' if db.kind == 'postgresql' else 'executemany'} of {distinct:,} rows in "
        f"{ref_s:.1f} s = {ref_rate:,.0f} rows/s (load {load_ref} before)")  # fmt: skip
    tsv.unlink()
    load_ours = load()
    ours_s, rss, report = run_import(env, jsonl, args.chunk_size)
    rate = args.events / ours_s
    log(
        f"remit events import: {args.events:,} events in {ours_s:.1f} s = {rate:,.0f} events/s, peak RSS {rss:.0f} MB "
        f"(load {load_ours} before, {load()} after): accepted {report['accepted']:,}, duplicates "
        f"{report['duplicates']:,}, refused {report['rejected']:,}"
    )
    problems = []
    if report["rejected"]:
        problems.append(f"{report['rejected']} refused, e.g. {report['rejected_events'][:3]}")
    if report["accepted"] != distinct or report["duplicates"] != args.events - distinct:
        problems.append(f"accepted {report['accepted']} / duplicates {report['duplicates']}, expected {distinct}")
    if (n := stored(db)) != distinct:
        problems.append(f"usage_events holds {n}, expected {distinct}")
    if problems:
        raise SystemExit("CHECK FAILED: " + "; ".join(problems))
    return {
        "mode": "import",
        "db": db.kind,
        "events": args.events,
        "distinct_events": distinct,
        "customers": args.customers,
        "key_order": args.key_order,
        "chunk_size": args.chunk_size,
        "seconds": round(ours_s, 2),
        "events_per_s": round(rate),
        "reference_seconds": round(ref_s, 2),
        "reference_events_per_s": round(ref_rate),
        "ratio_to_reference": round(rate / ref_rate, 3),
        "peak_rss_mb": round(rss, 1),
        "load_before": load_ours,
    }


def mode_http(args: argparse.Namespace, db: Database, env: dict[str, str]) -> dict[str, Any]:
    customers = set_up(db, args.customers, env)
    key = json.loads(remit_cli(env, "keys", "create", "--scope", "write", "--json"))["secret"]
    port = free_port()
    server = subprocess.Popen(
        [EXE, "serve", "--port", str(port), "--workers", str(args.workers)],
        env={**env, "REMIT_RATE_LIMIT_PER_S": "1000000", "REMIT_RATE_LIMIT_BURST": "1000000"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_up(f"{base}/openapi.json")
        auth = {"Authorization": f"Bearer {key}"}
        rng = random.Random(args.seed)
        run = uuid.uuid4().hex[:8]
        at = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()

        def event(i: int) -> dict[str, Any]:
            return {
                "customer_id": customers[rng.randrange(len(customers))],
                "code": "tokens",
                "transaction_id": f"{run}-{i}",
                "timestamp": at,
                "properties": {"tokens": rng.randrange(1, 5000), "model": MODELS[i % 3]},
            }

        requests = args.events // args.batch
        bodies = [
            json.dumps({"events": [event(r * args.batch + j) for j in range(args.batch)]}).encode()
            for r in range(requests)
        ]
        singles = [json.dumps(event(requests * args.batch + i)).encode() for i in range(args.single)]
        # A short warm-up (connections, the key's cache), not counted and not stored twice: other ids.
        asyncio.run(drive(base, lambda i: ("POST", "/v1/events", {**event(-1 - i)}), 64, args.concurrency, auth))
        load_batch = load()
        batch = asyncio.run(
            drive(base, lambda i: ("POST", "/v1/events/batch", bodies[i]), requests, args.concurrency, auth)
        )
        batch_rate = batch["rps"] * args.batch
        log(
            f"batches of {args.batch}: {requests:,} requests, {batch_rate:,.0f} events/s ({batch['rps']:,.0f} req/s), "
            f"p50 {batch['p50_ms']:.1f} ms, p99 {batch['p99_ms']:.1f} ms (load {load_batch} before)"
        )
        load_single = load()
        single = asyncio.run(
            drive(base, lambda i: ("POST", "/v1/events", singles[i]), args.single, args.concurrency, auth)
        )
        log(
            f"single events: {args.single:,} requests, {single['rps']:,.0f} events/s, p50 {single['p50_ms']:.1f} ms, "
            f"p99 {single['p99_ms']:.1f} ms (load {load_single} before)"
        )
        server_rss = peak_rss_of_tree(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    expected = requests * args.batch + args.single + 64
    if (n := stored(db)) != expected:
        raise SystemExit(f"CHECK FAILED: usage_events holds {n}, expected {expected}")
    return {
        "mode": "http",
        "db": db.kind,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "batch_size": args.batch,
        "events": requests * args.batch,
        "events_per_s": round(batch_rate),
        "batch_p50_ms": batch["p50_ms"],
        "batch_p99_ms": batch["p99_ms"],
        "single_requests": args.single,
        "single_events_per_s": round(single["rps"]),
        "single_p50_ms": single["p50_ms"],
        "single_p99_ms": single["p99_ms"],
        # No reference server is run for HTTP: the figures are held to the goals instead.
        "reference_events_per_s": None,
        "ratio_to_reference": None,
        "peak_rss_mb": server_rss,
        "goal_events_per_s": 30_000,
        "ratio_to_goal": round(batch_rate / 30_000, 3),
        "single_goal_per_s": 2_500,
        "single_ratio_to_goal": round(single["rps"] / 2_500, 3),
        "load_before": load_batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["import", "http", "all"], default="import")
    parser.add_argument("--events", type=int, default=1_000_000, help="events to ingest (default 1,000,000)")
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql", help="import mode")
    parser.add_argument("--duplicates", type=float, default=0.01, help="fraction of repeated events (import)")
    parser.add_argument("--key-order", choices=["random", "sequential"], default="random")
    parser.add_argument("--chunk-size", type=int, default=20_000, help="events per import transaction")
    parser.add_argument("--batch", type=int, default=100, help="events per HTTP batch")
    parser.add_argument("--single", type=int, default=10_000, help="single-event requests (http)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="`remit serve` processes")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    log(f"bench: ingestion, mode {args.mode} ({os.cpu_count()} cores, Python {sys.version.split()[0]}), load {load()}")
    summary: dict[str, Any] = {}
    for mode in ["import", "http"] if args.mode == "all" else [args.mode]:
        tmp = Path(tempfile.mkdtemp(prefix="remit_bench_ingest_"))
        db = Database(args.db if mode == "import" else "postgresql", tmp)
        env = {**os.environ, "REMIT_DATABASE_URL": db.url}
        try:
            result = mode_import(args, db, tmp, env) if mode == "import" else mode_http(args, db, env)
        finally:
            db.drop()
            shutil.rmtree(tmp, ignore_errors=True)
        summary = {**summary, **result} if args.mode != "all" else {**summary, mode: result}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
