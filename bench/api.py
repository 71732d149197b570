"""Benchmark of the REST API on PostgreSQL, beside a bare ASGI app doing the same database work.

    .venv/bin/python bench/api.py --requests 10000 --concurrency 32

What it does:

1. Creates a throwaway PostgreSQL database on 127.0.0.1:5432 (dropped at the end), migrates it, and creates a
   legal entity, a plan and a write key.
2. Starts `remit serve` (uvicorn, `--workers` processes, rate limit lifted) on that database, and a bare ASGI app
   (uvicorn, same number of workers, a psycopg connection pool, no framework, no validation, no auth) that does
   the same single-row write (`INSERT INTO customers`) and the same single-row read.
3. Drives each endpoint with `--concurrency` keep-alive connections on one event loop (a minimal client on raw
   asyncio streams), for `--requests` requests, and
   measures throughput and p50/p99 latency: create customer, create subscription, upcoming-invoice preview and
   get customer on Remit; insert and read on the bare app. The subscriptions go to the customers the first
   phase created, one each (the 10,000 customers of a default run, plus the bare app's), and the preview and
   the reads visit those customers in turn. Between phases the bench refreshes the planner's statistics
   (`ANALYZE`), as auto-analyze would on a server that runs autovacuum (this machine's does not).

The last line printed is one JSON object with every figure, including `write_ratio_to_bare` and
`read_ratio_to_bare` (Remit's throughput ÷ the bare app's). The client runs on the same 2-core machine as the
servers, so all figures include its cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg

PG = os.environ.get("REMIT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BARE_APP = """
import json, os, uuid
from datetime import UTC, datetime
from psycopg_pool import ConnectionPool

pool = ConnectionPool(os.environ["BARE_DSN"], min_size=4, max_size=16, open=True)
ENTITY = os.environ["BARE_ENTITY"]

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    if scope["method"] == "POST":
        data = json.loads(body)
        cid = "cus_" + uuid.uuid4().hex[:20]
        with pool.connection() as conn:
            conn.execute("INSERT INTO customers (id, legal_entity_id, name, email, currency, language, timezone, "
                         "country, address, tax_ids, created_at) VALUES (%s,%s,%s,%s,%s,'en','UTC',%s,'{}','[]',%s)",
                         (cid, ENTITY, data["name"], data.get("email"), data["currency"], data["country"],
                          datetime.now(UTC)))
        out = json.dumps({"id": cid}).encode()
        status = 201
    else:
        cid = scope["path"].rsplit("/", 1)[-1]
        with pool.connection() as conn:
            row = conn.execute("SELECT id, name, currency FROM customers WHERE id = %s", (cid,)).fetchone()
        out = json.dumps({"id": row[0], "name": row[1], "currency": row[2]}).encode()
        status = 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str) -> None:
    for _ in range(300):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not start")


class Conn:
    """A minimal HTTP/1.1 keep-alive client on raw asyncio streams: httpx's own overhead on this 2-core machine
    would cap the load (about 200 requests/s) far below what the servers can take."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
        extra = f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n" if body is not None else ""
        self.writer.write(f"{method} {path} HTTP/1.1\r\n{self.head}{extra}\r\n".encode() + data)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        chunked = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value:
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length)
        out = b""
        while True:
            size = int((await self.reader.readline()).strip(), 16)
            chunk = await self.reader.readexactly(size + 2)
            if size == 0:
                return status, out
            out += chunk[:-2]


async def drive(
    base: str, make: Callable[[int], tuple[str, str, Any]], total: int, concurrency: int, headers: dict[str, str]
) -> dict[str, float]:
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    failures: list[tuple[int, bytes]] = []
    counter = iter(range(total))

    async def worker() -> None:
        conn = Conn(host, int(port), headers)
        for i in counter:
            method, path, body = make(i)
            start = time.perf_counter()
            status, payload = await conn.request(method, path, body)
            latencies.append(time.perf_counter() - start)
            if status >= 300:
                failures.append((status, payload))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    q = statistics.quantiles(latencies, n=100)
    return {"rps": round(total / elapsed, 1), "p50_ms": round(q[49] * 1000, 2), "p99_ms": round(q[98] * 1000, 2)}


def customer_ids(base: str, auth: dict[str, str]) -> list[str]:
    """Every customer's id, a page of 100 at a time."""
    ids: list[str] = []
    while True:
        params: dict[str, Any] = {"limit": 100, **({"starting_after": ids[-1]} if ids else {})}
        page = httpx.get(f"{base}/v1/customers", params=params, headers=auth).json()
        ids += [r["id"] for r in page["data"]]
        if not page["has_more"]:
            return ids


def analyze(dsn: str) -> None:
    """Refresh the planner's statistics, as autovacuum's auto-analyze does on a production server after a table
    grows. This machine's PostgreSQL runs with `autovacuum = off`: without this, the tables the bench has just
    filled from empty are planned as if they were still empty (a nested loop over a sequential scan: 10 ms, not
    0.1 ms, for one customer's subscription timeline at 3,000 subscriptions)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 10,000: at 3,000 the fastest phase (the bare read, ~5,000 req/s) lasted 0.6 s, too short to be steady.
    parser.add_argument("--requests", type=int, default=10_000, help="requests per endpoint (default 10000)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="server processes for each app")
    args = parser.parse_args()
    name = f"remit_bench_api_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = PG.rsplit("/", 1)[0] + "/" + name
    url = dsn.replace("postgresql://", "postgresql+psycopg://")
    exe = str(Path(sys.executable).with_name("remit"))
    env = {
        **os.environ,
        "REMIT_DATABASE_URL": url,
        "REMIT_RATE_LIMIT_PER_S": "1000000",
        "REMIT_RATE_LIMIT_BURST": "1000000",
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([exe, "init", "--currency", "EUR", "--country", "DE"], env=env, check=True, capture_output=True)
        key = json.loads(
            subprocess.run(
                [exe, "keys", "create", "--scope", "write", "--json"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )["secret"]
        subprocess.run(
            [
                exe,
                "plans",
                "create",
                "--code",
                "pro",
                "--name",
                "Pro",
                "--prices",
                '[{"currency":"EUR","model":"per_unit","config":{"unit_price":"12"}}]',
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        with psycopg.connect(dsn) as conn:
            entity = conn.execute("SELECT id FROM legal_entities").fetchone()[0]  # type: ignore[index]
        remit_port, bare_port = free_port(), free_port()
        procs.append(
            subprocess.Popen(
                [exe, "serve", "--port", str(remit_port), "--workers", str(args.workers)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        bare_dir = Path(os.environ.get("TMPDIR", "/tmp")) / name
        bare_dir.mkdir(parents=True, exist_ok=True)
        (bare_dir / "bare_app.py").write_text(BARE_APP)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bare_app:app",
                    "--port",
                    str(bare_port),
                    "--workers",
                    str(args.workers),
                    "--log-level",
                    "warning",
                    "--app-dir",
                    str(bare_dir),
                ],
                env={**env, "BARE_DSN": dsn, "BARE_ENTITY": entity},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        remit_url, bare_url = f"http://127.0.0.1:{remit_port}", f"http://127.0.0.1:{bare_port}"
        wait_up(f"{remit_url}/openapi.json")
        wait_up(f"{bare_url}/x")
        auth = {"Authorization": f"Bearer {key}"}
        n, c = args.requests, args.concurrency
        customer = {"name": "Bench", "email": "b@example.com", "currency": "EUR", "country": "DE"}
        results: dict[str, Any] = {}
        results["bare_write"] = asyncio.run(drive(bare_url, lambda i: ("POST", "/customers", customer), n, c, {}))
        results["create_customer"] = asyncio.run(
            drive(remit_url, lambda i: ("POST", "/v1/customers", customer), n, c, auth)
        )
        ids = customer_ids(remit_url, auth)
        analyze(dsn)
        results["create_subscription"] = asyncio.run(
            drive(
                remit_url,
                lambda i: ("POST", "/v1/subscriptions", {"customer_id": ids[i % len(ids)], "plan": "pro"}),
                n,
                c,
                auth,
            )
        )
        analyze(dsn)
        results["upcoming_invoice"] = asyncio.run(
            drive(remit_url, lambda i: ("GET", f"/v1/customers/{ids[i % len(ids)]}/upcoming_invoice", None), n, c, auth)
        )
        results["get_customer"] = asyncio.run(
            drive(remit_url, lambda i: ("GET", f"/v1/customers/{ids[i % len(ids)]}", None), n, c, auth)
        )
        results["bare_read"] = asyncio.run(
            drive(bare_url, lambda i: ("GET", f"/customers/{ids[i % len(ids)]}", None), n, c, {})
        )
        for label, figures in results.items():
            print(
                f"{label:22} {figures['rps']:>9.1f} req/s   p50 {figures['p50_ms']:>7.2f} ms   "
                f"p99 {figures['p99_ms']:>7.2f} ms"
            )
        summary = {
            "requests": n,
            "concurrency": c,
            "workers": args.workers,
            **{k: v for k, v in results.items()},
            "write_ratio_to_bare": round(results["create_customer"]["rps"] / results["bare_write"]["rps"], 3),
            "read_ratio_to_bare": round(results["get_customer"]["rps"] / results["bare_read"]["rps"], 3),
        }
        print(json.dumps(summary))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
