"""Delivery: claim due webhook deliveries, POST them outside any transaction, record each attempt, retry.

* **Claim.** One short transaction picks due deliveries (pending, ``next_attempt_at`` passed; on PostgreSQL ``FOR
  UPDATE SKIP LOCKED``, so workers never take the same one) and moves their ``next_attempt_at`` a lease ahead. A
  worker killed after that simply lets the lease run out: another worker then claims the delivery again, so every
  event is delivered at least once (and, rarely, twice: receivers dedupe on ``Remit-Event-Id``).
* **Order per object.** A delivery is not claimed while an earlier one (lower event id) of the same endpoint and
  object is still pending, so a receiver sees ``invoice.created`` succeed before ``invoice.paid`` is sent.
* **Send.** No transaction is open during the HTTP call. 2xx is success; anything else, a timeout or a connection
  error is a failed attempt.
* **Record.** Every attempt is written to ``webhook_attempts``. Success marks the delivery succeeded (whoever sent
  it); a failure reschedules it only if this worker's claim is still the current one (its lease time unchanged):
  30 s × 2^(n-1) after the n-th failure, ±20 % jitter, at most 6 h a step, for 3 days after the first attempt;
  then the delivery is failed. ``resend`` starts a fresh 3-day window.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, Engine, Select, func, insert, select, update

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id
from remit.domain.clock import Clock
from remit.service_layer.views import plain
from remit.service_layer.webhook_signing import HEADER, sign

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
BASE_DELAY_S = 30
MAX_DELAY_S = 6 * 3600
JITTER = 0.2
GIVE_UP_AFTER = timedelta(days=3)
DEFAULT_TIMEOUT_S = 10.0
LEASE_MARGIN_S = 30.0
USER_AGENT = "Remit-Webhooks/1"
_random = random.Random()


@dataclass(frozen=True, slots=True)
class Claim:
    delivery_id: str
    url: str
    secret: str
    event_id: str  # the event's public id (evt_...)
    body: bytes
    lease_until: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def backoff_s(failures: int, rand: float = 0.5) -> float:
    """Seconds to wait after the n-th failed attempt; ``rand`` in [0, 1) places it in the jitter band."""
    base = BASE_DELAY_S * 2 ** (min(max(failures, 1), 32) - 1)
    return float(min(MAX_DELAY_S, base * (1 - JITTER + 2 * JITTER * rand)))


def payload(event: Mapping[Any, Any]) -> bytes:
    """The JSON body: the event, its data with the object and customer it concerns."""
    data = {
        **(event["data"] or {}),
        "object_id": event["object_id"],
        "object_type": event["object_type"],
        "customer_id": event["customer_id"],
    }
    body = {"id": event["public_id"], "type": event["type"], "created_at": event["created_at"], "data": data}
    return json.dumps(plain(body), separators=(",", ":"), ensure_ascii=False).encode()


def _due(now: datetime, limit: int) -> Select[Any]:
    d, ep, ev = t.webhook_deliveries, t.webhook_endpoints, t.events
    earlier = d.alias("earlier")
    blocked = (
        select(earlier.c.id)
        .where(
            earlier.c.endpoint_id == d.c.endpoint_id,
            earlier.c.object_id == d.c.object_id,
            earlier.c.status == PENDING,
            earlier.c.event_id < d.c.event_id,
        )
        .exists()
    )
    return (
        select(
            d.c.id,
            ep.c.url,
            ep.c.secret,
            ev.c.public_id,
            ev.c.type,
            ev.c.object_type,
            ev.c.object_id,
            ev.c.customer_id,
            ev.c.data,
            ev.c.created_at,
        )
        .join(ep, ep.c.id == d.c.endpoint_id)
        .join(ev, ev.c.id == d.c.event_id)
        .where(d.c.status == PENDING, d.c.next_attempt_at <= now, ep.c.active.is_(True), ~blocked)
        .order_by(d.c.event_id)
        .limit(limit)
        .with_for_update(of=d, skip_locked=True)
    )


def claim(engine: Engine, now: datetime, limit: int, lease: timedelta) -> list[Claim]:
    """Take up to ``limit`` due deliveries for ``lease``; nobody else claims them until it runs out."""
    lease_until = now + lease
    with engine.begin() as conn:
        rows = list(conn.execute(_due(now, limit)).mappings())
        if not rows:
            return []
        d = t.webhook_deliveries
        ids = [r["id"] for r in rows]
        conn.execute(update(d).where(d.c.id.in_(ids)).values(next_attempt_at=lease_until))
    return [Claim(r["id"], r["url"], r["secret"], r["public_id"], payload(r), lease_until) for r in rows]


def _snippet(response: httpx.Response, limit: int = 300) -> str:
    data = b""
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= limit:
            break
    return data[:limit].decode(errors="replace")


def send(client: httpx.Client, clock: Clock, item: Claim, timeout_s: float = DEFAULT_TIMEOUT_S) -> Outcome:
    """POST one delivery, signed with the time of sending; never raises."""
    at = clock.now()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Remit-Event-Id": item.event_id,
        HEADER: sign(item.secret, int(at.timestamp()), item.body),
    }
    started = time.monotonic()
    code: int | None = None
    error: str | None = None
    try:
        with client.stream("POST", item.url, content=item.body, headers=headers, timeout=timeout_s) as response:
            code = response.status_code
            if not 200 <= code < 300:
                error = f"HTTP {code}: {_snippet(response)}".strip()
    except httpx.TimeoutException:
        error = f"timed out after {timeout_s:g} s"
    except Exception as exc:  # refused, DNS, TLS, a URL httpx rejects: all are failed attempts, recorded
        error = f"{type(exc).__name__}: {exc}"[:500]
    return Outcome(at, code, error, int((time.monotonic() - started) * 1000))


def _series_start(conn: Connection, delivery_id: str, attempts: int) -> datetime:
    """When the current retry window began: the oldest of the delivery's latest ``attempts`` attempts."""
    a = t.webhook_attempts.c
    recent = (
        select(a.attempted_at)
        .where(a.delivery_id == delivery_id)
        .order_by(a.attempted_at.desc(), a.id.desc())
        .limit(max(attempts, 1))
        .subquery()
    )
    start: datetime = conn.execute(select(func.min(recent.c.attempted_at))).scalar_one()
    return start


def _after_failure(conn: Connection, delivery_id: str, attempts: int, now: datetime) -> dict[str, Any]:
    give_up_at = _series_start(conn, delivery_id, attempts) + GIVE_UP_AFTER
    if now >= give_up_at:
        return {"status": FAILED, "next_attempt_at": None}
    delay = timedelta(seconds=backoff_s(attempts, _random.random()))
    return {"next_attempt_at": min(now + delay, give_up_at)}


def record(engine: Engine, clock: Clock, item: Claim, outcome: Outcome) -> str:
    """Write the attempt and the delivery's new state; returns that status."""
    now = clock.now()
    d = t.webhook_deliveries
    with engine.begin() as conn:
        conn.execute(
            insert(t.webhook_attempts).values(
                id=new_id("wha"),
                delivery_id=item.delivery_id,
                attempted_at=outcome.attempted_at,
                status_code=outcome.status_code,
                error=outcome.error,
                duration_ms=outcome.duration_ms,
            )
        )
        query = select(d.c.status, d.c.attempts, d.c.next_attempt_at).where(d.c.id == item.delivery_id)
        row = conn.execute(query.with_for_update()).one()
        values: dict[str, Any] = {"attempts": row.attempts + 1}
        last = {"last_status_code": outcome.status_code, "last_error": outcome.error}
        if row.status == PENDING and outcome.ok:
            values |= {**last, "status": SUCCEEDED, "delivered_at": now, "next_attempt_at": None}
        elif row.status == PENDING and row.next_attempt_at == item.lease_until:
            values |= {**last, **_after_failure(conn, item.delivery_id, row.attempts + 1, now)}
        conn.execute(update(d).where(d.c.id == item.delivery_id).values(**values))
    return str(values.get("status", row.status))


def deliver_due(
    engine: Engine,
    clock: Clock,
    http_client: httpx.Client,
    limit: int = 20,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    lease_s: float | None = None,
    concurrency: int = 8,
) -> int:
    """Claim and send up to ``limit`` due deliveries, ``concurrency`` at a time; the number attempted.

    The lease covers every wave of requests at the timeout, plus a margin, unless ``lease_s`` is given.
    """
    concurrency = max(1, concurrency)
    if lease_s is None:
        lease_s = math.ceil(limit / concurrency) * timeout_s + LEASE_MARGIN_S
    items = claim(engine, clock.now(), limit, timedelta(seconds=lease_s))

    def one(item: Claim) -> str:
        return record(engine, clock, item, send(http_client, clock, item, timeout_s))

    if len(items) <= 1 or concurrency == 1:
        for item in items:
            one(item)
    else:
        with ThreadPoolExecutor(max_workers=min(concurrency, len(items))) as pool:
            list(pool.map(one, items))
    return len(items)
