"""The process-level wiring for `remit serve`: settings from the environment, the app, background workers."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import FastAPI
from sqlalchemy import Engine

from remit.bootstrap import Settings, bootstrap
from remit.entrypoints.api.app import create_app
from remit.entrypoints.api.threads import THREADS, in_thread


def build_app() -> FastAPI:
    remit = bootstrap(Settings())
    app = create_app(remit)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        # The routes not run by threads.in_thread (plain `def` routes) run on anyio's worker threads: as many.
        to_thread.current_default_thread_limiter().total_tokens = THREADS
        await in_thread(_open_connections, remit.engine, THREADS)
        if remit.readers is not None:
            await in_thread(_open_connections, remit.readers, THREADS)
        await _match_no_route(app)
        _settle_garbage_collector()
        async with inner(app_) as state:
            yield state

    app.router.lifespan_context = lifespan
    return app


# Collections of the young generations, less often than CPython's default (700, 10, 10). Requests allocate many
# short-lived containers (parsed bodies, rows, result dicts) that die by reference counting, not by collection: in
# a run of 300,000 events every collection found nothing to free (collected 0), while a generation-1 collection
# every ~50 ms cost 2-6 ms and a generation-2 one 4-12 ms, each holding every request of the process. Measured
# with `bench/ingest.py --mode http` (two runs each, interleaved): batches of 100 at 31,160-39,290 events/s
# with the default, 32,290-43,620 with these; single events 3,133-3,425/s and 4,203-5,161/s.
GC_THRESHOLDS = (10_000, 20, 10)


def _settle_garbage_collector() -> None:
    """Exempt everything built at start-up (modules, routes, models, schema) from garbage collection. A full
    collection walks every tracked object; with these included it paused a worker for 0.1-0.7 s at a time under
    load, holding every request in it. Collections now walk only what requests allocate, and less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _open_connections(engine: Engine, n: int) -> None:
    """Fill the pool before the first request, as a connection pool with a minimum size would: the first burst of
    requests after a start then waits for none of them to be opened."""
    if engine.dialect.name == "sqlite":
        return
    size = getattr(engine.pool, "size", None)
    if callable(size):
        n = min(n, size())  # no more than the pool keeps
    connections = [engine.connect() for _ in range(n)]
    for connection in connections:
        connection.close()


async def _match_no_route(app: FastAPI) -> None:
    """Send the app one request that no route matches, before the first real one. FastAPI prepares the routes of
    an included router when a request first tries them (hundreds of milliseconds for all of ours), and every
    request arriving meanwhile waits; trying every route once at start-up prepares them all."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: Any) -> None:
        pass

    path = "/.well-known/remit-start-up"
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": None,
        "server": None,
    }
    await app(scope, receive, send)
