"""Schemas of live usage, usage alerts and usage thresholds."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, StringConstraints

from remit.entrypoints.api.schemas import Code, Id, Input, Output

# A sign is let through so that a negative threshold gets Remit's own error (invalid_threshold), not a pattern's.
Threshold = StrictInt | Annotated[str, StringConstraints(pattern=r"^-?\d{1,15}(\.\d{1,9})?$")]
Dimension = Annotated[str, StringConstraints(min_length=1, max_length=100)]
DimensionValue = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class AlertCreate(Input):
    customer_id: Id
    subscription_id: Id | None = Field(
        default=None, description="Watch one subscription; by default each of the customer's subscriptions."
    )
    kind: Literal["usage", "spend"] = Field(
        description="`usage`: a meter's quantity in the current billing period; `spend`: the amount the period's "
        "usage comes to."
    )
    meter: Code | None = Field(default=None, description="The meter's code (usage alerts).")
    group: dict[Dimension, DimensionValue] | None = Field(
        default=None, description='Usage alerts: only the usage of this group, e.g. `{"region": "eu"}`.'
    )
    thresholds: list[Threshold] = Field(
        min_length=1,
        max_length=20,
        description="Ascending. Quantities for usage alerts; amounts in the customer's currency for spend alerts "
        '(`"50.00"`). Each fires once per billing period.',
    )


class AlertPublic(Output):
    id: str
    object: Literal["alert"] = "alert"
    customer_id: str
    subscription_id: str | None
    kind: str
    meter: str | None
    group: dict[str, str] | None
    thresholds: list[str]
    currency: str | None
    created_at: datetime


class AlertDeleted(Output):
    id: str
    object: Literal["alert"] = "alert"
    deleted: bool


class UsageThresholdSet(Input):
    amount: Annotated[str, StringConstraints(pattern=r"^-?\d{1,15}(\.\d{1,4})?$")] | None = Field(
        description="Invoice the usage as soon as the open period's unbilled usage reaches this amount (in the "
        "subscription's currency); `null` stops threshold billing.",
        examples=["100.00"],
    )


class UsageThresholdPublic(Output):
    object: Literal["usage_threshold"] = "usage_threshold"
    subscription_id: str
    usage_threshold: str | None
    currency: str


class PeriodPublic(Output):
    start_on: date
    end_on: date


class UsageItemPublic(Output):
    price_id: str
    price_name: str
    meter: str
    group: dict[str, str]
    events: int
    quantity: str = Field(description="The meter's quantity so far in the period.")
    included_units: str
    billable_units: str
    subtotal: str
    discount: str
    amount: str = Field(description="What this usage would cost if the period ended now.")
    billed: str = Field(description="Already invoiced by threshold invoices.")
    unbilled: str


class SubscriptionUsagePublic(Output):
    subscription_id: str
    period: PeriodPublic
    usage_threshold: str | None
    items: list[UsageItemPublic]
    amount: str
    billed: str
    unbilled: str


class LiveUsagePublic(Output):
    object: Literal["live_usage"] = "live_usage"
    customer_id: str
    currency: str
    as_of: datetime
    subscriptions: list[SubscriptionUsagePublic]
    amount: str
    billed: str
    unbilled: str


class SeriesGroup(Output):
    group: dict[str, Any]
    quantity: str
    events: int


class SeriesBucket(Output):
    start: datetime
    end: datetime
    quantity: str = Field(description="The meter's aggregate over the bucket (groups combined as alerts combine them).")
    events: int
    groups: list[SeriesGroup] | None = Field(default=None, description="Per group, for a meter with dimensions.")


class UsageSeriesPublic(Output):
    object: Literal["usage_series"] = "usage_series"
    customer_id: str
    meter: str
    aggregation: str
    granularity: Literal["day", "hour"]
    timezone: str = Field(description="The customer's: days begin at its local midnight.")
    data: list[SeriesBucket]
