"""Group commit of usage events: concurrent requests written in shared transactions, each answered with its own
events' outcomes, as if it had been written alone."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.entrypoints.api import fast_events
from remit.service_layer import usage


def _setup(api) -> str:
    meter = {"code": "tokens", "name": "Tokens", "aggregation": "sum", "field": "tokens", "group_by": ["model"]}
    assert api.post("/meters", meter).status_code == 201
    return api.post("/customers", {"name": "Hooli", "currency": "EUR", "country": "DE"}).json()["id"]


def _stored(api) -> int:
    with api.remit.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.usage_events)).scalar_one()


def _event(api, cus: str, txn: str, **extra: Any) -> dict[str, Any]:
    at = (api.remit.clock.now() - timedelta(minutes=1)).isoformat()
    return {"customer_id": cus, "code": "tokens", "transaction_id": txn, "timestamp": at,
            "properties": {"tokens": 5, "model": "s"}, **extra}  # fmt: skip


async def _send_all(api, requests: list[tuple[str, Any]], before_answers=None) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=api.client.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://remit") as client:
        tasks = [
            asyncio.ensure_future(client.post(f"/v1{path}", json=body, headers=api.h("write")))
            for path, body in requests
        ]
        if before_answers is not None:
            await before_answers()
        return list(await asyncio.gather(*tasks))


def test_concurrent_requests_share_a_transaction_and_get_their_own_answers(api, monkeypatch):
    cus = _setup(api)
    sizes: list[int] = []
    release = threading.Event()
    real = fast_events._ingest

    def held(remit, events, vis):
        sizes.append(len(events))
        if len(sizes) <= fast_events.FLUSHES:  # the first transactions wait until every request is queued
            assert release.wait(10)
        return real(remit, events, vis)

    arrived = 0
    queue_up = fast_events.GroupCommit.ingest

    async def counted(self, events, vis):
        nonlocal arrived
        arrived += 1
        return await queue_up(self, events, vis)

    monkeypatch.setattr(fast_events, "_ingest", held)
    monkeypatch.setattr(fast_events.GroupCommit, "ingest", counted)
    singles = [("/events", _event(api, cus, f"s{i}")) for i in range(20)]
    requests = [
        *singles,
        ("/events", _event(api, cus, "s3")),  # the same transaction id as another request in the group
        ("/events", _event(api, cus, "bad", code="nope")),  # refused in the group: the route answers it
        ("/events/batch", {"events": [_event(api, cus, "b1"), _event(api, cus, "b1"), _event(api, cus, "b2")]}),
    ]

    async def when_all_queued():
        for _ in range(1000):
            if arrived == len(requests):
                break
            await asyncio.sleep(0.005)
        release.set()

    answers = asyncio.run(_send_all(api, requests, when_all_queued))

    # The first two transactions took the requests queued when they started; they were held until all 23
    # requests (25 events) were queued, so the rest went together in one more.
    assert sum(sizes) == 25 and len(sizes) <= fast_events.FLUSHES + 1
    by_txn = {}
    for (_, body), answer in zip(requests[:21], answers[:21], strict=True):
        assert answer.status_code == 200, answer.text
        by_txn.setdefault(body["transaction_id"], []).append(answer.json())
    assert all(len(v) == 1 and v[0]["status"] == "accepted" and v[0]["id"] for k, v in by_txn.items() if k != "s3")
    assert sorted(a["status"] for a in by_txn["s3"]) == ["accepted", "duplicate"]
    refused = answers[21]
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_meter"
    batch = answers[22].json()
    assert [(e["index"], e["transaction_id"]) for e in batch["accepted"]] == [(0, "b1"), (2, "b2")]
    assert [(e["index"], e["transaction_id"]) for e in batch["duplicates"]] == [(1, "b1")]
    assert batch["rejected"] == []
    assert _stored(api) == 20 + 2


def test_a_group_whose_transaction_fails_is_written_request_by_request(api, monkeypatch):
    cus = _setup(api)
    failed: list[int] = []
    monkeypatch.setattr(fast_events, "_ingest", _rolled_back_once(failed))
    answers = asyncio.run(_send_all(api, [("/events", _event(api, cus, f"f{i}")) for i in range(6)]))
    assert failed
    assert [a.status_code for a in answers] == [200] * 6
    assert [a.json()["status"] for a in answers] == ["accepted"] * 6
    assert _stored(api) == 6


def _rolled_back_once(failed: list[int]):
    """An _ingest whose first transaction stores its events and then fails before committing."""

    def ingest(remit, events, vis):
        with remit.uow() as uow:
            result = usage.ingest(uow, events, vis=vis)
            if not failed:
                failed.append(len(result.accepted))
                raise RuntimeError("the connection broke before the commit")
        return result

    return ingest
