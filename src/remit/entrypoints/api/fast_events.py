"""The usual usage-event requests answered by the gate itself, without FastAPI's routing, dependency and model
layers: on this 2-core machine those cost more CPU per request than recording the event does.

Only the plain case is taken here: `POST /v1/events` or `/v1/events/batch`, a key with the write scope, no
Idempotency-Key, a body of the documented shape, and (for one event) an event that is accepted or a duplicate.
Anything else is declined before anything is stored, and the request goes on to the FastAPI routes in
`routes/usage.py`, which answer it (errors included) as they always have; a refused single event is simply
checked again there (nothing of it was stored). Both paths call `usage.ingest`, and answer the same JSON.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from anyio import to_thread
from pydantic import ValidationError as PydanticError

from remit.bootstrap import Remit
from remit.entrypoints.api.usage_schemas import UsageEventIn
from remit.service_layer import usage
from remit.service_layer.api_keys import Principal
from remit.service_layer.scoping import Visibility
from remit.service_layer.unit_of_work import UnitOfWork

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
PATHS = ("/v1/events", "/v1/events/batch")
_OUTCOME: dict[str, Any] = {"index": None, "transaction_id": None, "id": None, "error": None}


async def answer(remit: Remit, path: str, principal: Principal, body: Any, send: Send, request_id: str) -> bool:
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
        result = await to_thread.run_sync(_ingest, remit, events, vis)
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
        result = await to_thread.run_sync(_ingest, remit, [event.model_dump(mode="json")], vis)
        if result.rejected:
            return False  # nothing was stored; the route checks it again and answers the error
        accepted = result.accepted[0]["id"] if result.accepted else None
        out = {
            "object": "usage_event_result",
            "status": "accepted" if accepted else "duplicate",
            "transaction_id": event.transaction_id,
            "id": accepted,
        }
    data = json.dumps(out, separators=(",", ":")).encode()
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
