"""The usual usage-event requests answered by the gate itself, without FastAPI's routing, dependency and model
layers: on this 2-core machine those cost more CPU per request than recording the event does.

Only the plain case is taken here: `POST /v1/events` or `/v1/events/batch`, a key with the write scope, no
Idempotency-Key, a body of the documented shape, and (for one event) an event that is accepted or a duplicate.
Anything else is declined before anything is stored, and the request goes on to the FastAPI routes in
`routes/usage.py`, which answer it (errors included) as they always have; a refused single event is simply
checked again there (nothing of it was stored). Both paths call `usage.ingest`, and answer the same JSON.

**Group commit.** Requests that arrive while earlier ones are being written wait, and are then written together:
one transaction (one statement, one commit, one flush of the write-ahead log) for all of them, up to
``usage.MAX_BATCH`` events, each request answered with its own events' outcomes once that transaction has
committed. Under load this turns 32 concurrent single-event requests into a few transactions of many events
instead of 32 of one; an idle server writes each request at once, as before (nothing waits on a timer). At most
``FLUSHES`` such transactions run at a time per process. If a group's transaction fails, nothing of it was stored,
and each of its requests is declined here and goes on to the routes, which write it alone.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NamedTuple

from pydantic import ValidationError as PydanticError

from remit.adapters import fastjson
from remit.bootstrap import Remit
from remit.entrypoints.api.threads import in_thread
from remit.entrypoints.api.usage_schemas import UsageEventIn
from remit.service_layer import usage
from remit.service_layer.api_keys import Principal
from remit.service_layer.scoping import Visibility
from remit.service_layer.unit_of_work import UnitOfWork

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
PATHS = ("/v1/events", "/v1/events/batch")
_OUTCOME: dict[str, Any] = {"index": None, "transaction_id": None, "id": None, "error": None}


# Transactions of grouped events in flight at a time, per process: one writes while the other commits. Measured
# with 32 clients sending single events: one, 1,576 events/s; two, 1,719-1,821; four, 1,389.
FLUSHES = 2


class _Waiting(NamedTuple):
    events: list[Any]
    outcome: asyncio.Future[usage.IngestResult]


class GroupCommit:
    """Writes the events of concurrent requests in shared transactions (see the module's docstring). One per
    gate; its state belongs to the event loop it was first used on (a test client may start a new loop)."""

    def __init__(self, remit: Remit, flushes: int = FLUSHES) -> None:
        self.remit, self.flushes = remit, flushes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[Visibility, deque[_Waiting]] = {}
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def ingest(self, events: list[Any], vis: Visibility) -> usage.IngestResult:
        """The request's events written (with others', perhaps); raises what writing them raised."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._waiting, self._running, self._tasks = loop, {}, 0, set()
        outcome: asyncio.Future[usage.IngestResult] = loop.create_future()
        self._waiting.setdefault(vis, deque()).append(_Waiting(events, outcome))
        if self._running < self.flushes:
            self._running += 1
            task = loop.create_task(self._flush())
            self._tasks.add(task)  # a reference, so the task is not collected before it ends
            task.add_done_callback(self._tasks.discard)
        return await outcome

    def _take(self) -> tuple[Visibility, list[_Waiting]]:
        """The oldest waiting requests of one visibility, as many as fit in one batch (at least one)."""
        vis, queue = next(iter(self._waiting.items()))
        group = [queue.popleft()]
        size = len(group[0].events)
        while queue and size + len(queue[0].events) <= usage.MAX_BATCH:
            size += len(queue[0].events)
            group.append(queue.popleft())
        del self._waiting[vis]
        if queue:
            self._waiting[vis] = queue  # to the back: the keys of different legal entities or modes take turns
        return vis, group

    async def _flush(self) -> None:
        try:
            while self._waiting:
                vis, group = self._take()
                events = group[0].events if len(group) == 1 else [e for w in group for e in w.events]
                try:
                    result = await in_thread(_ingest, self.remit, events, vis)
                except asyncio.CancelledError:  # the server is stopping
                    for w in group:
                        w.outcome.cancel()
                    raise
                except Exception as exc:  # nothing was stored: each request is answered by the routes
                    for w in group:
                        if not w.outcome.done():
                            w.outcome.set_exception(exc)
                    continue
                parts = [result] if len(group) == 1 else _split(result, [len(w.events) for w in group])
                for w, part in zip(group, parts, strict=True):
                    if not w.outcome.done():  # a request whose client went away is not answered
                        w.outcome.set_result(part)
        finally:
            self._running -= 1


def _split(result: usage.IngestResult, sizes: list[int]) -> list[usage.IngestResult]:
    """A grouped result cut back into each request's, with indexes into each request's own events."""
    starts = [0]
    for size in sizes[:-1]:
        starts.append(starts[-1] + size)
    parts = [usage.IngestResult() for _ in sizes]
    for name in ("accepted", "duplicates", "rejected"):
        for entry in getattr(result, name):
            owner = bisect.bisect_right(starts, entry["index"]) - 1
            getattr(parts[owner], name).append({**entry, "index": entry["index"] - starts[owner]})
    return parts


async def answer(
    remit: Remit, path: str, principal: Principal, body: Any, send: Send, request_id: str, group: GroupCommit
) -> bool:
    """Answer the request and return True, or return False having done nothing."""
    if not principal.allows("write") or not isinstance(body, dict):
        return False
    vis = Visibility(principal.legal_entity_id, principal.livemode)
    if path == "/v1/events/batch":
        events = body.get("events")
        if (
            len(body) != 1
            or not isinstance(events, list)
            or len(events) > usage.MAX_BATCH
            or not all(isinstance(e, dict) for e in events)
        ):
            return False
        try:
            result = await group.ingest(events, vis)
        except Exception:
            return False
        out: dict[str, Any] = {
            "object": "usage_batch_result",
            "accepted": [{**_OUTCOME, **e} for e in result.accepted],
            "duplicates": [{**_OUTCOME, **e} for e in result.duplicates],
            "rejected": [{**_OUTCOME, **e} for e in result.rejected],
        }
    else:
        try:
            event = UsageEventIn.model_validate(body)
        except PydanticError:
            return False
        try:
            # The event as sent (its numbers exact), once its shape is known to be right: check_event checks it.
            result = await group.ingest([body], vis)
        except Exception:
            return False
        if result.rejected:
            return False  # nothing was stored; the route checks it again and answers the error
        accepted = result.accepted[0]["id"] if result.accepted else None
        out = {
            "object": "usage_event_result",
            "status": "accepted" if accepted else "duplicate",
            "transaction_id": event.transaction_id,
            "id": accepted,
        }
    data = fastjson.dumps_bytes(out)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
    return True


def _ingest(remit: Remit, events: list[Any], vis: Visibility) -> usage.IngestResult:
    """In one transaction: the events, and what storing them entails (a late event reopens a billed period; a
    watched customer is flagged for alerts), together or not at all."""
    with UnitOfWork(remit.engine, remit.clock) as uow:
        return usage.ingest(uow, events, vis=vis)
