"""API schemas: `XCreate` for input (unknown fields refused), `XPublic` for output. Money is a decimal string
next to its currency, never a number; times are ISO 8601 UTC; dates are YYYY-MM-DD."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

MoneyStr = Annotated[str, StringConstraints(pattern=r"^-?\d{1,15}(\.\d{1,4})?$"), Field(examples=["49.00"])]
Decimal9 = Annotated[str, StringConstraints(pattern=r"^-?\d{1,15}(\.\d{1,9})?$"), Field(examples=["0.000125"])]
Quantity = StrictInt | Annotated[str, StringConstraints(pattern=r"^\d{1,12}(\.\d{1,9})?$")]
Code = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$"), Field(examples=["EUR"])]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$"), Field(examples=["DE"])]
Id = Annotated[str, StringConstraints(min_length=1, max_length=40)]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


T = TypeVar("T")


class ListOf(Output, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool


# --- legal entities, customers, keys ---------------------------------------------------------------------------------


class LegalEntityCreate(Input):
    name: Name
    country: CountryCode
    currency: CurrencyCode
    address: dict[str, Annotated[str, StringConstraints(max_length=200)]] = {}
    tax_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    rounding_policy: Literal["half_up", "half_even"] = "half_up"
    invoice_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,16}$")] = "INV"
    credit_note_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,16}$")] = "CN"
    auto_finalize: bool = True
    payment_terms_days: Annotated[int, Field(ge=0, le=365)] = 14


class LegalEntityPublic(Output):
    id: str
    object: Literal["legal_entity"] = "legal_entity"
    name: str
    country: str
    currency: str
    address: dict[str, Any]
    tax_id: str | None
    rounding_policy: str
    invoice_prefix: str
    credit_note_prefix: str
    auto_finalize: bool
    payment_terms_days: int
    created_at: datetime


class TaxId(Input):
    type: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    value: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class CustomerCreate(Input):
    name: Name
    email: Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    currency: CurrencyCode
    country: CountryCode
    legal_entity_id: Id | None = None
    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] = "en"
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "UTC"
    address: dict[str, Annotated[str, StringConstraints(max_length=200)]] = {}
    tax_ids: list[TaxId] = []
    external_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    test_clock_id: Id | None = None


class CustomerPublic(Output):
    id: str
    object: Literal["customer"] = "customer"
    legal_entity_id: str
    external_id: str | None
    name: str
    email: str | None
    currency: str
    language: str
    timezone: str
    country: str
    address: dict[str, Any]
    tax_ids: list[dict[str, Any]]
    test_clock_id: str | None
    livemode: bool
    balance: str = Field(description="Credit the customer holds, consumed by later invoices.")
    created_at: datetime


class ApiKeyCreate(Input):
    name: Annotated[str, StringConstraints(max_length=200)] = ""
    scopes: list[Literal["read", "write", "admin"]] = Field(min_length=1)
    legal_entity_id: Id | None = None
    livemode: bool | None = Field(
        None,
        description="Live (true) or test (false). Default: the mode of the key creating it; a test-mode key "
        "creates only test-mode keys.",
    )
    expires_at: datetime | None = Field(
        None, description="When the key stops working. A key that expires creates only keys that expire no later."
    )


class ApiKeyPublic(Output):
    id: str
    object: Literal["api_key"] = "api_key"
    scopes: list[str]
    legal_entity_id: str | None
    livemode: bool
    expires_at: datetime | None
    secret: str | None = Field(None, description="Shown once, at creation.")


# --- catalog -------------------------------------------------------------------------------------------------------


class Tier(Input):
    up_to: Decimal9 | None
    unit_price: Decimal9 | None = Field(None, description="graduated and volume tiers")
    rate: Decimal9 | None = Field(None, description="graduated_percentage tiers: a fraction (0.03 is 3%)")
    flat_fee: Decimal9 | None = None


class PriceModelConfig(Input):
    amount: Decimal9 | None = None
    unit_price: Decimal9 | None = None
    tiers: list[Tier] | None = None
    package_size: Decimal9 | None = None
    package_price: Decimal9 | None = None
    free_units: Decimal9 | None = None
    rate: Decimal9 | None = None
    fixed_fee: Decimal9 | None = None
    free_transactions: Annotated[int, Field(ge=0)] | None = None
    min_per_transaction: Decimal9 | None = None
    max_per_transaction: Decimal9 | None = None

    def as_config(self) -> dict[str, Any]:
        out = self.model_dump(exclude_none=True, exclude={"tiers"})
        if self.tiers is not None:  # the last tier's "up_to": null is meaningful ("and beyond")
            out["tiers"] = [{**tier.model_dump(exclude_none=True), "up_to": tier.up_to} for tier in self.tiers]
        return out


PriceModelName = Literal["flat", "per_unit", "graduated", "volume", "package", "percentage", "graduated_percentage"]


class DimensionPrice(Input):
    model: PriceModelName
    config: PriceModelConfig


class UsageTermsIn(Input):
    meter: Code | None = Field(None, description="The meter whose usage this price bills (in arrears).")
    included_units: Decimal9 | None = Field(None, description="Units included at no charge, per period.")
    dimensions: dict[Annotated[str, StringConstraints(min_length=1, max_length=200)], DimensionPrice] = Field(
        {},
        max_length=100,
        description="A price model per group of the meter's group-by values (joined with `|`), e.g. `eu`.",
    )
    minimum: bool = Field(False, description="A minimum commitment per period instead of a meter (flat model).")

    def as_spec(self) -> dict[str, Any]:
        spec = self.model_dump(exclude={"dimensions"}, exclude_none=True, exclude_defaults=True)
        if self.dimensions:
            spec["dimensions"] = {
                k: {"model": d.model, "config": d.config.as_config()} for k, d in self.dimensions.items()
            }
        return spec


class PriceCreate(Input):
    currency: CurrencyCode
    model: PriceModelName
    config: PriceModelConfig
    type: Literal["recurring", "one_off"] = "recurring"
    interval: Literal["day", "week", "month", "quarter", "year"] = "month"
    interval_count: Annotated[int, Field(ge=1, le=366)] = 1
    timing: Literal["in_advance", "in_arrears"] | None = Field(
        None, description="Default: in_advance; usage prices are always in_arrears."
    )
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    usage: UsageTermsIn | None = Field(None, description="Makes this a usage price (see docs/usage.md).")

    def as_spec(self) -> dict[str, Any]:
        spec = self.model_dump(exclude={"config", "usage"}, exclude_none=True)
        spec["config"] = self.config.as_config()
        if self.usage is not None:
            spec["usage"] = self.usage.as_spec()
        return spec


class StandalonePriceCreate(PriceCreate):
    product_name: Name
    product_kind: Literal["add_on", "one_off"] = "add_on"


class PricePublic(Output):
    id: str
    object: Literal["price"] = "price"
    product_id: str
    plan_version_id: str | None
    name: str
    currency: str
    type: str
    model: str
    config: dict[str, Any]
    interval: str | None
    interval_count: int | None
    timing: str
    usage: dict[str, Any] | None = None
    created_at: datetime


class PlanCreate(Input):
    code: Code
    name: Name
    prices: list[PriceCreate] = Field(min_length=1, max_length=50)


class PlanVersionCreate(Input):
    prices: list[PriceCreate] = Field(min_length=1, max_length=50)


class PlanVersionPublic(Output):
    id: str
    version: int
    created_at: datetime
    prices: list[PricePublic]


class PlanPublic(Output):
    id: str
    object: Literal["plan"] = "plan"
    code: str
    name: str
    product_id: str
    created_at: datetime
    versions: list[PlanVersionPublic]


class PriceOverrideCreate(Input):
    customer_id: Id
    price_id: Id
    model: PriceModelName
    config: PriceModelConfig


class OverridePublic(Output):
    id: str
    object: Literal["price_override"] = "price_override"


class CouponCreate(Input):
    code: Code
    name: Name
    percent_off: Decimal9 | None = None
    amount_off: MoneyStr | None = None
    currency: CurrencyCode | None = None
    duration: Literal["once", "repeating", "forever"] = "once"
    duration_periods: Annotated[int, Field(ge=1, le=1000)] | None = None
    max_redemptions: Annotated[int, Field(ge=1)] | None = None
    redeem_by: datetime | None = None


class CouponPublic(Output):
    id: str
    object: Literal["coupon"] = "coupon"
    code: str
    name: str
    percent_off: str | None
    amount_off: str | None
    currency: str | None
    duration: str
    duration_periods: int | None
    max_redemptions: int | None
    redeem_by: datetime | None
    times_redeemed: int
    created_at: datetime


class PromotionCodeCreate(Input):
    coupon: Code
    code: Code
    max_redemptions: Annotated[int, Field(ge=1)] | None = None
    expires_at: datetime | None = None


class PromotionCodePublic(Output):
    id: str
    object: Literal["promotion_code"] = "promotion_code"
    code: str
    coupon_id: str
    active: bool
    max_redemptions: int | None
    expires_at: datetime | None
    times_redeemed: int


# --- subscriptions -------------------------------------------------------------------------------------------------


class AddOn(Input):
    price_id: Id
    quantity: Quantity = 1


class Phase(Input):
    on: date
    plan: Code
    quantity: Quantity | None = None
    version: Annotated[int, Field(ge=1)] | None = None


class SubscriptionCreate(Input):
    customer_id: Id
    plan: Code
    plan_version: Annotated[int, Field(ge=1)] | None = None
    quantity: Quantity = 1
    start_on: date | None = None
    trial_days: Annotated[int, Field(ge=0, le=730)] | None = None
    anchor: Literal["anniversary", "calendar", "day_of_month"] = "anniversary"
    anchor_day: Annotated[int, Field(ge=1, le=31)] | None = None
    add_ons: list[AddOn] = Field(default=[], max_length=20)
    coupon: Code | None = None
    promotion_code: Code | None = None
    phases: list[Phase] = Field(default=[], max_length=20)


When = Literal["now", "period_end"] | date


class ChangePlan(Input):
    plan: Code
    version: Annotated[int, Field(ge=1)] | None = None
    quantity: Quantity | None = None
    when: When = "now"


class ChangeQuantity(Input):
    quantity: Quantity
    when: When = "now"


class PauseResume(Input):
    when: When = "now"


class Cancel(Input):
    at_period_end: bool = False


class ApplyCoupon(Input):
    coupon: Code | None = None
    promotion_code: Code | None = None


class TimelineEventPublic(Output):
    seq: int
    effective_on: date
    kind: str
    items: list[dict[str, Any]]
    source: str
    recorded_at: datetime
    revoked_at: datetime | None


class SubscriptionPublic(Output):
    id: str
    object: Literal["subscription"] = "subscription"
    customer_id: str
    plan_id: str | None
    currency: str
    status: str
    interval: str
    interval_count: int
    anchor_kind: str
    anchor_on: date
    started_on: date
    trial_end_on: date | None
    ended_on: date | None
    created_at: datetime
    events: list[TimelineEventPublic] | None = None
    coupons: list[dict[str, Any]] | None = None
    customer: CustomerPublic | None = None


class ChangeResult(Output):
    subscription_id: str
    effective_on: date


# --- invoices ------------------------------------------------------------------------------------------------------


class InvoiceLinePublic(Output):
    id: str | None = None
    kind: str
    description: str
    subscription_id: str | None = None
    price_id: str | None = None
    period_start_on: date | None = None
    period_end_on: date | None = None
    service_start_on: date | None
    service_end_on: date | None
    quantity: str
    unit_price: str
    subtotal: str
    discount: str
    amount: str
    corrects_line_id: str | None = None
    details: dict[str, Any] | None = None


class DateRange(Output):
    start_on: date | None
    end_on: date | None


class CorrectionRef(Output):
    id: str
    invoice_id: str
    kind: str
    amount: str


class UsageWindowEvents(Output):
    occurred_gte: datetime = Field(description="When the window's first day began, in the customer's time zone.")
    occurred_lt: datetime = Field(description="When its last day ended.")
    list: str = Field(description="The `GET /v1/usage_events` request that lists its events.")


class InvoiceLineExplanation(Output):
    object: Literal["invoice_line_explanation"] = "invoice_line_explanation"
    invoice_id: str
    invoice_number: str | None
    line_id: str
    kind: str
    description: str
    currency: str
    subscription_id: str | None
    period: DateRange
    service: DateRange
    quantity: str
    unit_price: str
    subtotal: str
    discount: str
    amount: str
    billed_before: str | None
    price: dict[str, Any] | None = Field(description="The price as configured: model, config, usage terms.")
    negotiated_price: dict[str, Any] | None = Field(
        None,
        description="When the customer's negotiated price (a price override) rated the line: its id, model and "
        "config as they were when the line was billed; they replace the list price's model and config.",
    )
    meter: dict[str, Any] | None = Field(description="For usage lines: the meter and its aggregation.")
    usage: dict[str, Any] | None = Field(
        description="For usage lines: windows measured, events, quantity, included and billable units, group; "
        "for a true-up: the minimum and what usage came to (a prorated one: also the commitment per period and "
        "the share of the period it applied to, `minimum_per_period` and `share`)."
    )
    usage_events: list[UsageWindowEvents] = Field(
        default=[], description="For usage lines: where to list the events measured, window by window."
    )
    canceled_events: list[dict[str, Any]] = Field(
        default=[],
        description="For usage lines: the canceled events dated in its windows (not counted), with when and why "
        "they were canceled; at most 100.",
    )
    slices: list[dict[str, Any]] = Field(description="Time slices of the period with their proration fractions.")
    breakdown: list[dict[str, Any]] = Field(description="The price model's breakdown: tiers, units, unit prices.")
    corrects_line_id: str | None
    corrected_by: list[CorrectionRef]
    explanation: list[str] = Field(description="The same, in sentences.")


class InvoicePublic(Output):
    id: str
    object: Literal["invoice"] = "invoice"
    customer_id: str
    legal_entity_id: str
    number: str | None
    status: str
    currency: str
    billing_reason: str
    subtotal: str
    discount: str
    total: str
    applied_balance: str
    applied_credits: str = Field(description="Paid by prepaid credits from the customer's wallets.")
    credited: str
    paid: str
    amount_due: str
    period_start_on: date | None
    period_end_on: date | None
    issued_on: date | None
    due_on: date | None
    created_at: datetime
    finalized_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None
    lines: list[InvoiceLinePublic] | None = None
    customer: CustomerPublic | None = None


class UpcomingInvoicePublic(Output):
    object: Literal["upcoming_invoice"] = "upcoming_invoice"
    customer_id: str
    currency: str
    as_of: datetime | None
    lines: list[InvoiceLinePublic]
    subtotal: str | None = None
    discount: str | None = None
    total: str
    applied_balance: str | None = Field(default=None, description="What the customer's balance would pay.")
    applied_credits: str | None = Field(default=None, description="What prepaid credits would pay.")
    amount_due: str


class InvoiceItemCreate(Input):
    customer_id: Id
    price_id: Id | None = None
    quantity: Quantity = 1
    description: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    unit_amount: MoneyStr | None = None


class InvoiceItemPublic(Output):
    id: str
    object: Literal["invoice_item"] = "invoice_item"
    description: str
    amount: str
    currency: str


class CreditNoteLine(Input):
    line_id: Id
    amount: MoneyStr


class CreditNoteCreate(Input):
    invoice_id: Id
    amount: MoneyStr | None = None
    lines: list[CreditNoteLine] = Field(default=[], max_length=500)
    reason: Literal["duplicate", "fraudulent", "order_change", "product_unsatisfactory", "other"] = "other"
    memo: Annotated[str, StringConstraints(max_length=2000)] | None = None


class CreditNotePublic(Output):
    id: str
    object: Literal["credit_note"] = "credit_note"
    number: str
    invoice_id: str
    currency: str
    reason: str
    amount: str
    to_balance: str
    to_wallets: str | None = Field(default=None, description="Given back to the wallets whose credits paid it.")


class BillRunCreate(Input):
    as_of: datetime | None = None


class BillRunPublic(Output):
    id: str
    object: Literal["bill_run"] = "bill_run"
    as_of: datetime
    status: str = Field(
        description="`running`; `done` (everyone it could bill is billed; see `customers_failed`); or `failed`: "
        "the run stopped on an error that was not one customer's (see `error`), and a later run bills the rest."
    )
    customers_seen: int
    invoices_created: int
    customers_failed: int = Field(
        description="Customers it could not bill (`GET /v1/bill_runs/{id}/failures`); later runs try them again."
    )
    error: str | None = Field(default=None, description="Why the run stopped, when its status is `failed`.")
    started_at: datetime
    finished_at: datetime | None = None
    test_clock_id: str | None = Field(
        default=None, description="The test clock whose customers it billed (test-mode keys); null for real ones."
    )


class BillRunFailurePublic(Output):
    object: Literal["bill_run_failure"] = "bill_run_failure"
    customer_id: str
    error: dict[str, str | None] = Field(description="`code`, `message` and `field`, as in an error response.")
    failed_at: datetime


class TestClockCreate(Input):
    name: Name
    frozen_at: datetime
    legal_entity_id: str | None = Field(
        default=None,
        max_length=40,
        description="The legal entity whose customers it holds (default: the key's, if it is limited to one; "
        "none: any entity's customers, and only keys of every entity see it).",
    )


class TestClockAdvance(Input):
    to: datetime


class TestClockPublic(Output):
    id: str
    object: Literal["test_clock"] = "test_clock"
    name: str
    frozen_at: datetime
    status: str
    created_at: datetime
    legal_entity_id: str | None


class EventPublic(Output):
    id: str
    object: Literal["event"] = "event"
    sequence: int
    type: str
    object_type: str
    object_id: str
    customer_id: str | None
    data: dict[str, Any]
    created_at: datetime
