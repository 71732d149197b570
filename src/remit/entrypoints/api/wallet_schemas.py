"""Schemas of the wallet (prepaid credits) endpoints."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from remit.entrypoints.api.schemas import Code, CurrencyCode, Id, Input, Name, Output

Credits = Annotated[str, StringConstraints(pattern=r"^\d{1,12}(\.\d{1,9})?$"), Field(examples=["100", "2500.5"])]
Rate = Annotated[str, StringConstraints(pattern=r"^\d{1,12}(\.\d{1,9})?$"), Field(examples=["1", "0.01"])]


class AppliesTo(Input):
    """The fees a wallet's credits may pay: a fee matching any of these. Nothing listed: any fee."""

    fee_types: list[Literal["fixed", "usage", "commitment", "one_off"]] = Field(
        default=[],
        max_length=4,
        description="fixed: subscription fees and their prorations; usage: usage charges and their corrections; "
        "commitment: minimum-commitment true-ups; one_off: one-off charges.",
    )
    meters: list[Code] = Field(default=[], max_length=50, description="Usage charges of these meters (codes).")
    prices: list[Id] = Field(default=[], max_length=50, description="Fees of these prices (ids).")


class WalletCreate(Input):
    customer_id: Id
    name: Name | None = Field(default=None, description='Default: "Prepaid credits".')
    currency: CurrencyCode | None = Field(default=None, description="The customer's currency (the default).")
    priority: Annotated[int, Field(ge=1, le=100)] = Field(default=1, description="Lower is consumed first.")
    rate: Rate = Field(default="1", description="Money per credit: 1 for credits that are money.")
    top_up_threshold: Credits | None = Field(
        default=None, description="When a consumption leaves fewer credits than this, buy `top_up_credits`."
    )
    top_up_credits: Credits | None = None
    top_up_expires_days: Annotated[int, Field(ge=1, le=3650)] | None = Field(
        default=None, description="Credits bought by a top-up expire after this many days (default: never)."
    )
    applies_to: AppliesTo | None = Field(default=None, description="Limit the fees it pays (default: any fee).")
    low_balance_threshold: Credits | None = Field(
        default=None, description="When the balance falls under this many credits: a `wallet.balance_low` event."
    )


class WalletUpdate(Input):
    """Only the fields given change. Top-up terms are replaced together: give `top_up_threshold` and
    `top_up_credits` (and optionally `top_up_expires_days`), or both as null to turn automatic top-up off."""

    # Not null (refused): absent keeps them. SkipJsonSchema keeps null out of the OpenAPI document.
    name: Name | SkipJsonSchema[None] = None
    priority: Annotated[int, Field(ge=1, le=100)] | SkipJsonSchema[None] = None
    top_up_threshold: Credits | None = None
    top_up_credits: Credits | None = None
    top_up_expires_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    applies_to: AppliesTo | None = Field(default=None, description="The fees it may pay; null: any fee.")
    low_balance_threshold: Credits | None = Field(default=None, description="null: no low-balance event.")


class WalletGrantCreate(Input):
    credits: Credits
    paid: bool = Field(
        default=False, description="Bought: an invoice is issued and the credits are granted when it is paid."
    )
    grant_before_payment: bool = Field(default=False, description="For paid credits: grant them now.")
    expires_at: datetime | None = Field(default=None, description="When what is left of them expires.")


class WalletGrantPublic(Output):
    id: str
    object: Literal["wallet_grant"] = "wallet_grant"
    wallet_id: str
    customer_id: str
    kind: str
    source: str
    status: str
    credits: str
    amount: str
    remaining_credits: str
    remaining: str
    expires_at: datetime | None
    expires_days: int | None = Field(
        default=None,
        description="Bought credits not paid yet that last some days: they expire that many days after the payment.",
    )
    invoice_id: str | None
    recurring_grant_id: str | None = Field(default=None, description="The recurring grant that made it, if any.")
    created_at: datetime
    granted_at: datetime | None


class WalletPublic(Output):
    id: str
    object: Literal["wallet"] = "wallet"
    customer_id: str
    name: str
    currency: str
    priority: int
    rate: str
    status: str
    balance_credits: str
    balance: str = Field(description="What the credits held are worth, in the wallet's currency.")
    pending_credits: str = Field(description="Credits bought whose invoice is not paid yet.")
    top_up_threshold: str | None
    top_up_credits: str | None
    top_up_expires_days: int | None
    applies_to: dict[str, list[str]] | None = Field(description="The fees it may pay; null: any fee.")
    low_balance_threshold: str | None
    created_at: datetime
    voided_at: datetime | None
    grants: list[WalletGrantPublic] | None = None


class WalletTransactionPublic(Output):
    id: str
    object: Literal["wallet_transaction"] = "wallet_transaction"
    wallet_id: str
    grant_id: str
    customer_id: str
    kind: Literal["grant", "consumption", "expiry", "void", "restore", "refund"]
    credits: str
    amount: str
    currency: str
    invoice_id: str | None
    created_at: datetime


class RecurringGrantCreate(Input):
    credits: Credits
    interval: Literal["day", "week", "month", "quarter", "year"] = "month"
    interval_count: Annotated[int, Field(ge=1, le=365)] = Field(default=1, description="Every 2 months: 2.")
    starts_on: date | None = Field(
        default=None,
        description="The first occurrence's day, in the customer's time zone: today (the default: the first "
        "credits are granted at once) or later. Month-based intervals keep its day of the month (clamped).",
    )
    ends_on: date | None = Field(default=None, description="No occurrence on or after this day (default: none).")
    paid: bool = Field(
        default=False, description="Bought: each occurrence is an invoice, and its credits are granted when paid."
    )
    grant_before_payment: bool = Field(default=False, description="For paid credits: grant them at once.")
    expires_days: Annotated[int, Field(ge=1, le=3650)] | None = Field(
        default=None, description="Each occurrence's credits expire this many days after they are granted."
    )


class RecurringGrantUpdate(Input):
    """Only the fields given change, for the occurrences to come (those already due are granted first)."""

    credits: Credits | SkipJsonSchema[None] = None  # not null (refused): absent keeps them
    ends_on: date | None = Field(default=None, description="null: no end. On or before the next occurrence: ends it.")
    expires_days: Annotated[int, Field(ge=1, le=3650)] | None = Field(default=None, description="null: no expiry.")


class RecurringGrantPublic(Output):
    id: str
    object: Literal["wallet_recurring_grant"] = "wallet_recurring_grant"
    wallet_id: str
    customer_id: str
    credits: str
    interval: str
    interval_count: int
    starts_on: date
    ends_on: date | None
    paid: bool
    grant_before_payment: bool
    expires_days: int | None
    status: Literal["active", "ended", "canceled"]
    next_grant_on: date | None = Field(description="The next occurrence's day; null once ended or canceled.")
    grants_made: int
    created_at: datetime
    canceled_at: datetime | None
