"""Webhooks: endpoints subscribe to event types; the outbox's events reach them signed, at least once, in order per
object.

Two steps, each safe to run in any number of processes at once:

* ``fan_out`` turns new rows of ``events`` into one ``webhook_deliveries`` row per matching endpoint and moves the
  ``outbox_cursors`` row named "webhooks" past them, in one transaction (see ``webhook_outbox``).
* ``deliver_due`` claims due deliveries with a short lease, POSTs them outside any transaction, then records the
  attempt and either marks the delivery succeeded or schedules the next try (exponential backoff for 3 days).

Endpoint management (create, list, disable), delivery listing and ``resend`` take a unit of work like every other
use case. The signature scheme lives in ``webhook_signing``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Select, select, update

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id
from remit.domain import event_types as event_types_catalog
from remit.domain.errors import Conflict, NotFound, ValidationError
from remit.service_layer.scoping import EVERYTHING, Visibility
from remit.service_layer.unit_of_work import UnitOfWork
from remit.service_layer.views import MAX_LIMIT, plain
from remit.service_layer.webhook_delivery import (
    BASE_DELAY_S,
    GIVE_UP_AFTER,
    MAX_DELAY_S,
    backoff_s,
    claim,
    deliver_due,
)
from remit.service_layer.webhook_outbox import CURSOR, ensure_cursor, fan_out
from remit.service_layer.webhook_signing import sign, verify_signature

__all__ = [
    "BASE_DELAY_S",
    "CURSOR",
    "GIVE_UP_AFTER",
    "MAX_DELAY_S",
    "backoff_s",
    "claim",
    "create_endpoint",
    "deliver_due",
    "disable_endpoint",
    "fan_out",
    "get_endpoint",
    "list_deliveries",
    "list_endpoints",
    "resend",
    "sign",
    "verify_signature",
]

SECRET_PREFIX = "whsec_"
MAX_EVENT_TYPES = 100
_PUBLIC = ("id", "url", "event_types", "legal_entity_id", "livemode", "active", "created_at")


def _check_url(url: str) -> str:
    url = url.strip()
    try:
        parts = urlsplit(url)
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL):
        raise ValidationError("invalid_url", f"{url!r} is not a valid URL.", "url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("invalid_url", "A webhook URL must be http:// or https:// with a host.", "url")
    if len(url) > 2000 or any(ch.isspace() for ch in url):
        raise ValidationError("invalid_url", "A webhook URL has at most 2000 characters and no spaces.", "url")
    return url


def _check_types(event_types: Sequence[str]) -> list[str]:
    wanted = list(dict.fromkeys(event_types))
    if not wanted:
        raise ValidationError("missing_field", 'Give at least one event type, or "*" for every type.', "event_types")
    if len(wanted) > MAX_EVENT_TYPES:
        raise ValidationError("too_many_event_types", f"At most {MAX_EVENT_TYPES} event types.", "event_types")
    event_types_catalog.check_patterns(wanted, "event_types")  # known types only: a typo would match nothing
    return ["*"] if "*" in wanted else wanted


def create_endpoint(
    uow: UnitOfWork,
    url: str,
    event_types: Sequence[str],
    legal_entity_id: str | None = None,
    livemode: bool = True,
) -> dict[str, Any]:
    """Register an endpoint. Its signing secret is in the result; keep it, it is not shown again."""
    url = _check_url(url)
    types = _check_types(event_types)
    if legal_entity_id is not None:
        found = uow.conn.execute(select(t.legal_entities.c.id).where(t.legal_entities.c.id == legal_entity_id))
        if found.first() is None:
            raise NotFound("legal_entity", legal_entity_id, "legal_entity_id")
    ensure_cursor(uow.conn)  # webhooks start with the events after the first endpoint, not the whole history
    row = {
        "id": new_id("we"),
        "url": url,
        "event_types": types,
        "secret": SECRET_PREFIX + secrets.token_hex(24),
        "legal_entity_id": legal_entity_id,
        "livemode": livemode,
        "active": True,
        "created_at": uow.now,
    }
    uow.insert_many(t.webhook_endpoints, [row])
    return {**{k: row[k] for k in _PUBLIC}, "secret": row["secret"]}


def _sees_endpoint(vis: Visibility, row: Mapping[Any, Any]) -> bool:
    if vis.legal_entity_id is not None and row["legal_entity_id"] != vis.legal_entity_id:
        return False
    return vis.livemode is None or bool(row["livemode"]) == vis.livemode


def _endpoint_row(uow: UnitOfWork, endpoint_id: str, vis: Visibility, field: str) -> Mapping[Any, Any]:
    row = uow.conn.execute(select(t.webhook_endpoints).where(t.webhook_endpoints.c.id == endpoint_id)).mappings()
    found = row.first()
    if found is None or not _sees_endpoint(vis, found):
        raise NotFound("webhook_endpoint", endpoint_id, field)
    return found


def get_endpoint(uow: UnitOfWork, endpoint_id: str, vis: Visibility = EVERYTHING) -> dict[str, Any]:
    row = _endpoint_row(uow, endpoint_id, vis, "endpoint_id")
    return {k: row[k] for k in _PUBLIC}


def list_endpoints(
    uow: UnitOfWork, vis: Visibility = EVERYTHING, include_disabled: bool = True
) -> list[dict[str, Any]]:
    e = t.webhook_endpoints.c
    query = select(t.webhook_endpoints).order_by(e.created_at, e.id)
    if vis.legal_entity_id is not None:
        query = query.where(e.legal_entity_id == vis.legal_entity_id)
    if vis.livemode is not None:
        query = query.where(e.livemode.is_(vis.livemode))
    if not include_disabled:
        query = query.where(e.active.is_(True))
    return [{k: r[k] for k in _PUBLIC} for r in uow.conn.execute(query).mappings()]


def disable_endpoint(uow: UnitOfWork, endpoint_id: str, vis: Visibility = EVERYTHING) -> dict[str, Any]:
    """No new deliveries are made for it; its pending ones wait (nothing is sent to a disabled endpoint)."""
    _endpoint_row(uow, endpoint_id, vis, "endpoint_id")
    e = t.webhook_endpoints
    uow.conn.execute(update(e).where(e.c.id == endpoint_id).values(active=False))
    return get_endpoint(uow, endpoint_id, vis)


# --- deliveries -----------------------------------------------------------------------------------------------------


def _deliveries_query() -> Select[Any]:
    d, ev = t.webhook_deliveries, t.events
    return select(
        d.c.id,
        d.c.endpoint_id,
        ev.c.public_id.label("event_id"),
        ev.c.type.label("event_type"),
        d.c.object_id,
        d.c.status,
        d.c.attempts.label("attempt_count"),
        d.c.next_attempt_at,
        d.c.last_status_code,
        d.c.last_error,
        d.c.created_at,
        d.c.delivered_at,
        d.c.event_id.label("sequence"),
    ).join(ev, ev.c.id == d.c.event_id)


def _with_attempts(uow: UnitOfWork, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    a = t.webhook_attempts.c
    ids = [r["id"] for r in rows]
    by_delivery: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        query = select(a.id, a.delivery_id, a.attempted_at, a.status_code, a.error, a.duration_ms)
        for att in uow.conn.execute(query.where(a.delivery_id.in_(ids)).order_by(a.attempted_at, a.id)).mappings():
            by_delivery[att["delivery_id"]].append({k: v for k, v in att.items() if k != "delivery_id"})
    return [{**r, "attempts": by_delivery[r["id"]]} for r in rows]


DELIVERY_STATUSES = ("pending", "succeeded", "failed")


def list_deliveries(
    uow: UnitOfWork,
    endpoint_id: str,
    vis: Visibility = EVERYTHING,
    limit: int = 20,
    status: str | None = None,
    starting_after: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first, each with its attempts (oldest first). ``starting_after`` takes a delivery id."""
    if status is not None and status not in DELIVERY_STATUSES:
        raise ValidationError("invalid_choice", "status is pending, succeeded or failed.", "status")
    _endpoint_row(uow, endpoint_id, vis, "endpoint_id")
    d = t.webhook_deliveries.c
    query = _deliveries_query().where(d.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(d.status == status)
    if starting_after is not None:
        after = uow.conn.execute(select(d.event_id).where(d.id == starting_after, d.endpoint_id == endpoint_id))
        event_id = after.scalar()
        if event_id is None:
            raise NotFound("webhook_delivery", starting_after, "starting_after")
        query = query.where(d.event_id < event_id)
    query = query.order_by(d.event_id.desc()).limit(max(1, min(limit, MAX_LIMIT + 1)))
    return _with_attempts(uow, [dict(r) for r in uow.conn.execute(query).mappings()])


def get_delivery(uow: UnitOfWork, delivery_id: str, vis: Visibility = EVERYTHING) -> dict[str, Any]:
    d = t.webhook_deliveries.c
    row = uow.conn.execute(_deliveries_query().where(d.id == delivery_id)).mappings().first()
    if row is None:
        raise NotFound("webhook_delivery", delivery_id, "delivery_id")
    try:
        _endpoint_row(uow, row["endpoint_id"], vis, "delivery_id")
    except NotFound:
        raise NotFound("webhook_delivery", delivery_id, "delivery_id") from None
    return _with_attempts(uow, [dict(row)])[0]


def resend(uow: UnitOfWork, delivery_id: str, vis: Visibility = EVERYTHING) -> dict[str, Any]:
    """Send a delivery again (whatever its status): pending from now, with a fresh 3-day retry window.

    Its earlier attempts stay in the log; ``attempt_count`` counts the attempts since this resend.
    """
    current = get_delivery(uow, delivery_id, vis)
    endpoint = _endpoint_row(uow, current["endpoint_id"], vis, "delivery_id")
    if not endpoint["active"]:
        raise Conflict("webhook_endpoint_disabled", "The delivery's endpoint is disabled.", "delivery_id")
    d = t.webhook_deliveries
    uow.conn.execute(
        update(d)
        .where(d.c.id == delivery_id)
        .values(status="pending", attempts=0, next_attempt_at=uow.now, delivered_at=None, last_error=None)
    )
    return get_delivery(uow, delivery_id, vis)


def public(row: Mapping[Any, Any]) -> dict[str, Any]:
    """JSON-safe (for the CLI)."""
    return dict(plain(dict(row)))
