"""Schemas of the usage-metering endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from remit.entrypoints.api.schemas import Code, Id, Input, Name, Output

PropertyName = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class MeterCreate(Input):
    code: Code
    name: Name
    aggregation: Literal["count", "sum", "max", "unique_count", "latest", "weighted_sum"]
    field: PropertyName | None = Field(default=None, description="The property to aggregate.")
    expression: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = Field(
        default=None,
        description="Instead of a field: a formula over the event's properties giving its value, e.g. "
        "`tokens_in * 0.000003 + tokens_out * 0.000015` (see docs/usage.md).",
    )
    filters: dict[PropertyName, list[Annotated[str, StringConstraints(max_length=200)]]] = {}
    group_by: list[PropertyName] = Field(default=[], max_length=5)
    rounding: Literal["ceil", "floor", "round"] | None = Field(
        default=None,
        description="Round each period's quantity before pricing: up, down, or to the nearest (halves away from 0).",
    )
    rounding_precision: int = Field(
        default=0, ge=-9, le=12, description="Decimals kept when rounding; negative rounds to tens, hundreds..."
    )
    carry_over: bool = Field(
        default=False,
        description="`latest` only: a period without events takes the last value reported before it (a level "
        "sent only when it changes).",
    )


class MeterPublic(Output):
    id: str
    object: Literal["meter"] = "meter"
    code: str
    name: str
    aggregation: str
    field: str | None
    expression: str | None
    filters: dict[str, list[str]]
    group_by: list[str]
    rounding: str | None
    rounding_precision: int
    carry_over: bool
    active: bool = Field(description="False: deactivated, it takes no new events (what it has still bills).")
    created_at: datetime
    deactivated_at: datetime | None


class MeterUpdate(Input):
    name: Name


class UsageEventIn(Input):
    customer_id: Id | None = Field(default=None, description="The customer (or give `external_customer_id`).")
    external_customer_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="Instead of `customer_id`: the customer's id in your system (its `external_id`)."
    )
    subscription_id: Id | None = Field(
        default=None, description="One of the customer's subscriptions; alone, it names the customer too."
    )
    code: Code = Field(description="The meter's code.")
    transaction_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="Your id for the event: the same id twice counts once."
    )
    # Checked as a batch's events are (usage.check_event), so one event and a batch take the same times and
    # properties, and refuse the others with the same errors.
    timestamp: Any = Field(
        description="ISO 8601: `2026-03-01T12:00:00Z`, or with an offset (`+01:00`) instead of `Z` (none: UTC).",
        json_schema_extra={"type": "string", "format": "date-time"},
    )
    properties: dict[str, Any] = Field(
        default={}, description="At most 50 properties, named by 1 to 100 characters; 8 KiB in all."
    )


class UsageBatchIn(Input):
    events: list[dict[str, Any]] = Field(description="At most 1,000 events; each is checked on its own.")


class EventOutcome(Output):
    index: int
    transaction_id: str | None
    id: str | None = None
    error: dict[str, Any] | None = None


class UsageBatchResult(Output):
    object: Literal["usage_batch_result"] = "usage_batch_result"
    accepted: list[EventOutcome]
    duplicates: list[EventOutcome]
    rejected: list[EventOutcome]


class UsageEventResult(Output):
    object: Literal["usage_event_result"] = "usage_event_result"
    status: Literal["accepted", "duplicate"]
    transaction_id: str
    id: str | None = None


class UsageEventPublic(Output):
    id: str
    object: Literal["usage_event"] = "usage_event"
    customer_id: str
    subscription_id: str | None
    meter: str = Field(description="The meter's code.")
    transaction_id: str
    occurred_at: datetime = Field(description="The event's time (the `timestamp` it was sent with).")
    received_at: datetime
    properties: dict[str, Any]
    value: str | None = Field(description="What the meter aggregates of it (sum, max, latest...), exactly.")
    dimension: str | None = Field(description="What a unique count counts of it.")
    group: dict[str, Any] = Field(description="Its values of the meter's group-by dimensions.")
    counted: bool = Field(description="Whether it is aggregated: it passes the meter's filters and was not canceled.")
    canceled_at: datetime | None = Field(description="When it was canceled (`POST /v1/events/cancel`), if it was.")
    cancellation_reason: str | None


class UsageCancelIn(Input):
    events: list[dict[str, Any]] = Field(
        description="At most 1,000 events, each `{customer_id, transaction_id}`; each is answered on its own."
    )
    reason: str | None = Field(
        default=None,
        description="Why (1 to 500 characters; `invalid_reason` otherwise): kept with each cancellation and sent in "
        "`usage.events_canceled`.",
    )


class CancelOutcome(Output):
    index: int
    customer_id: str | None
    transaction_id: str | None
    id: str | None = Field(default=None, description="The canceled event's id.")
    error: dict[str, Any] | None = None


class UsageCancelResult(Output):
    object: Literal["usage_cancellation_result"] = "usage_cancellation_result"
    canceled: list[CancelOutcome]
    already_canceled: list[CancelOutcome]
    rejected: list[CancelOutcome]
