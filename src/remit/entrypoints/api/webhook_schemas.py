"""API schemas for webhook endpoints and deliveries (same conventions as schemas.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from remit.entrypoints.api.schemas import Id, Input, Output

WebhookUrl = Annotated[
    str,
    StringConstraints(min_length=8, max_length=2000, pattern=r"^https?://[\x21-\x7e]+$"),
    Field(examples=["https://example.com/remit/webhooks"]),
]
EventType = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$"),
    Field(examples=["invoice.finalized", "invoice.*", "*"]),
]


class WebhookEndpointCreate(Input):
    url: WebhookUrl
    event_types: list[EventType] = Field(
        min_length=1, max_length=100, description='Event types to receive; "invoice.*" for a family, "*" for all.'
    )
    legal_entity_id: Id | None = Field(
        None, description="Only events of this entity's customers (a key limited to an entity implies it)."
    )


class WebhookEndpointPublic(Output):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    event_types: list[str]
    legal_entity_id: str | None
    livemode: bool = Field(description="Live endpoints get live customers' events; test ones test-clock customers'.")
    active: bool
    created_at: datetime
    secret: str | None = Field(None, description="The signing secret (`whsec_...`). Shown once, at creation.")


class WebhookAttemptPublic(Output):
    id: str
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class WebhookDeliveryPublic(Output):
    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    endpoint_id: str
    event_id: str
    event_type: str
    object_id: str
    status: Literal["pending", "succeeded", "failed"]
    attempt_count: int = Field(description="Attempts since the delivery was created or last re-sent.")
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    attempts: list[WebhookAttemptPublic] = Field(description="Every attempt, oldest first.")
