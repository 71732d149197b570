"""Webhook endpoints and their deliveries: register, list, disable, inspect attempts, re-send."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from remit.domain.errors import Forbidden
from remit.entrypoints.api.deps import Admin
from remit.entrypoints.api.routes.common import Limit, StartingAfter, page
from remit.entrypoints.api.schemas import ListOf
from remit.entrypoints.api.webhook_schemas import (
    WebhookDeliveryPublic,
    WebhookEndpointCreate,
    WebhookEndpointPublic,
)
from remit.service_layer import webhooks

router = APIRouter(tags=["webhooks"])


@router.post("/webhook_endpoints", response_model=WebhookEndpointPublic, status_code=201)
def create_endpoint(body: WebhookEndpointCreate, ctx: Admin) -> Any:
    """Register an endpoint. The response holds its signing `secret`, shown this once. The endpoint's mode is the
    key's: a test-mode key registers an endpoint for test-clock customers' events."""
    scoped = ctx.principal.legal_entity_id
    if scoped and body.legal_entity_id not in (None, scoped):
        raise Forbidden(
            "entity_scoped_key", "A key limited to one legal entity can only add endpoints for it.", "legal_entity_id"
        )
    with ctx.uow() as uow:
        return webhooks.create_endpoint(
            uow, body.url, body.event_types, scoped or body.legal_entity_id, ctx.principal.livemode
        )


@router.get("/webhook_endpoints", response_model=ListOf[WebhookEndpointPublic])
def list_endpoints(ctx: Admin) -> Any:
    """Every endpoint this key may see (its entity, its mode), oldest first. Secrets are not shown."""
    with ctx.uow() as uow:
        rows = webhooks.list_endpoints(uow, ctx.vis)
    return page(rows, len(rows))


@router.get("/webhook_endpoints/{endpoint_id}", response_model=WebhookEndpointPublic)
def get_endpoint(endpoint_id: str, ctx: Admin) -> Any:
    with ctx.uow() as uow:
        return webhooks.get_endpoint(uow, endpoint_id, ctx.vis)


@router.post("/webhook_endpoints/{endpoint_id}/disable", response_model=WebhookEndpointPublic)
def disable_endpoint(endpoint_id: str, ctx: Admin) -> Any:
    """Stop sending to it. Deliveries already made wait, unsent, in the log."""
    with ctx.uow() as uow:
        return webhooks.disable_endpoint(uow, endpoint_id, ctx.vis)


@router.get("/webhook_endpoints/{endpoint_id}/deliveries", response_model=ListOf[WebhookDeliveryPublic])
def list_deliveries(
    endpoint_id: str,
    ctx: Admin,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
    status: Annotated[Literal["pending", "succeeded", "failed"] | None, Query()] = None,
) -> Any:
    """Newest first, each with every attempt. `starting_after` takes a delivery id."""
    with ctx.uow() as uow:
        rows = webhooks.list_deliveries(uow, endpoint_id, ctx.vis, limit + 1, status, starting_after)
    return page(rows, limit)


@router.post("/webhook_deliveries/{delivery_id}/resend", response_model=WebhookDeliveryPublic)
def resend_delivery(delivery_id: str, ctx: Admin) -> Any:
    """Send it again now, whatever its status, with a fresh 3-day retry window."""
    with ctx.uow() as uow:
        return webhooks.resend(uow, delivery_id, ctx.vis)
