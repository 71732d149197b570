"""The worker threads that do the API's database work, so the event loop never waits on the database.

One pool per server process, `THREADS` threads (`REMIT_API_THREADS`, default 4). Each holds a pooled connection
while it runs, so this is also about how many connections the process uses at once (see the pool in
adapters/db/engine.py). Threads beyond what keeps the CPU busy while some wait on PostgreSQL only queue on the GIL,
and the GIL does not serve them in turn: the more threads, the longer the slowest requests. Measured with
`bench/api.py` (two processes, 32 connections, balanced): p99 of creating a subscription 118 ms with 8 threads,
90-94 ms with 4, 88-102 ms with 3; the preview 122, 81-99 and 78-86 ms; throughput the same within the runs'
spread, except creating customers, which fell with 2 threads (806/s against 1,180-1,200 with 4). HTTP ingestion
(one process) was the same with 4 as with 8.

`in_thread` hands work to the pool with asyncio's own executor hand-off: about 25 µs of CPU each, against 70-80
µs for anyio's `to_thread.run_sync` (measured on this machine, 32 concurrent hand-offs of a no-op), which is a
tenth of what a whole `GET /v1/customers/{id}` costs. Like anyio's, a hand-off is not abandoned when the task
waiting on it is cancelled (a server stopping): the task waits for the thread's work to end, commit or roll
back, before the cancellation goes on, so nothing that runs after it (an idempotency key released) acts on a
request whose transaction is still open.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

THREADS = int(os.environ.get("REMIT_API_THREADS", 4))
T = TypeVar("T")

_POOL = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="remit-api")  # threads start on first use


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on a worker thread; its result or its exception."""
    # In the caller's context (as anyio's hand-off does): the request's idempotency key goes with its work.
    work = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    future = asyncio.get_running_loop().run_in_executor(_POOL, work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():  # the thread cannot be stopped: let its work end first
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                continue
        raise
