"""The catalog: products, plans and their versions, prices, coupons and promotion codes.

A plan is a name customers recognise ("Pro"); what it costs lives in *plan versions*. Publishing a new version
never touches existing subscribers: their subscription items point at the prices of the version they bought
until someone migrates them. A version carries one price per product and currency, so a plan can be sold in
several currencies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum

from remit.domain.errors import Conflict, ValidationError
from remit.domain.money import Currency, bounded
from remit.domain.rating.charge_models import ChargeModel, parse_charge_model
from remit.domain.subscriptions.periods import Interval


class PriceType(str, Enum):
    RECURRING = "recurring"
    ONE_OFF = "one_off"


class Timing(str, Enum):
    """When a recurring price is billed: at the start of the period it pays for, or after it."""

    IN_ADVANCE = "in_advance"
    IN_ARREARS = "in_arrears"


class ProductKind(str, Enum):
    PLAN = "plan"  # the main thing a subscription buys
    ADD_ON = "add_on"  # recurring extras (support, extra storage)
    ONE_OFF = "one_off"  # set-up fees, hardware, services


@dataclass(frozen=True, slots=True)
class UsageTerms:
    """What makes a recurring price a usage price, billed in arrears from a meter's aggregate.

    - ``meter``: the meter whose quantity for the billed time the price rates. A meter with group-by dimensions
      gives one line per group (e.g. per region); ``dimensions`` may give a group its own model (keyed by
      ``dimension_key``: the group's values joined with ``|``, e.g. ``"eu"`` or ``"eu|gpt-4"``, or a JSON list of
      them where a value holds ``|``); other groups use the price's model.
    - ``included_units``: units included in the plan's fee, billed at nothing (per group; prorated when the
      price applies to part of a period).
    - ``minimum``: instead of a meter, a minimum commitment: the price's flat amount per period, less what the
      subscription's usage lines of the period come to; a true-up line bills the shortfall.
    """

    meter: str | None = None
    included_units: Decimal = Decimal(0)
    dimensions: Mapping[str, ChargeModel] = field(default_factory=dict, hash=False)
    minimum: bool = False

    def model_for(self, group: tuple[str, ...], default: ChargeModel) -> ChargeModel:
        if not self.dimensions:
            return default
        return self.dimensions.get(dimension_key(group), default)


def dimension_key(group: Sequence[str]) -> str:
    """The key a group's own price has in ``UsageTerms.dimensions``: its values joined with ``|`` ("eu",
    "eu|gpt-4"); but where that is ambiguous, a meter of two or more dimensions with a value holding ``|``
    (("a|b", "c") and ("a", "b|c") would both be "a|b|c"), the values as a JSON list ('["a|b", "c"]')."""
    if len(group) > 1 and any("|" in value for value in group):
        return json.dumps(list(group))
    return "|".join(group)


def group_of_key(key: str) -> tuple[str, ...] | None:
    """The values of a dimension key written as a JSON list of strings ('["a|b", "c"]'); ``None`` for a key of
    values joined with ``|`` (or anything else, as any key was taken before the list form existed)."""
    if not key.startswith("["):
        return None
    try:
        values = json.loads(key)
    except ValueError:
        return None
    if not isinstance(values, list) or not values or not all(isinstance(value, str) for value in values):
        return None
    return tuple(values)


@dataclass(frozen=True, slots=True)
class Price:
    id: str
    product_id: str
    currency: Currency
    model: ChargeModel
    type: PriceType
    interval: Interval | None
    timing: Timing
    plan_version_id: str | None = None
    name: str = ""
    usage: UsageTerms | None = None
    override_id: str | None = None  # the customer's negotiated price whose model replaces the list price's

    @property
    def recurring(self) -> bool:
        return self.type is PriceType.RECURRING

    @property
    def metered(self) -> bool:
        """Billed from a meter's usage."""
        return self.usage is not None and self.usage.meter is not None

    @property
    def meter(self) -> str | None:
        """The code of the meter it bills, if any."""
        return self.usage.meter if self.usage is not None else None

    @property
    def is_minimum(self) -> bool:
        return self.usage is not None and self.usage.minimum


def validate_price_shape(type_: PriceType, interval: Interval | None, timing: Timing) -> None:
    if type_ is PriceType.RECURRING and interval is None:
        raise ValidationError("missing_field", "A recurring price needs a billing interval.", "interval")
    if type_ is PriceType.ONE_OFF and interval is not None:
        raise ValidationError("invalid_interval", "A one-off price has no billing interval.", "interval")
    if type_ is PriceType.ONE_OFF and timing is not Timing.IN_ADVANCE:
        raise ValidationError("invalid_timing", "A one-off price is billed when it is added.", "timing")


def parse_usage_terms(
    raw: object,
    type_: PriceType,
    timing: Timing | None,
    model: ChargeModel,
    field_name: str = "usage",
    timing_field: str = "timing",
) -> UsageTerms | None:
    """Validate a price's ``usage`` settings (``None``: not a usage price). Usage is billed in arrears."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValidationError("invalid_usage", "usage is an object.", field_name)
    unknown = set(raw) - {"meter", "included_units", "dimensions", "minimum"}
    if unknown:
        name = sorted(unknown)[0]
        raise ValidationError("unknown_field", f"usage has no setting {name!r}.", f"{field_name}.{name}")
    if type_ is not PriceType.RECURRING:
        raise ValidationError("invalid_usage", "Only a recurring price can bill usage.", f"{field_name}")
    if timing is Timing.IN_ADVANCE:
        raise ValidationError(
            "invalid_timing", "Usage is billed in arrears, after the period it measures.", timing_field
        )
    minimum = raw.get("minimum", False)
    if not isinstance(minimum, bool):
        raise ValidationError("invalid_usage", "minimum is true or false.", f"{field_name}.minimum")
    meter = raw.get("meter")
    if minimum:
        if meter is not None or raw.get("dimensions") or raw.get("included_units") is not None:
            raise ValidationError(
                "invalid_usage",
                "A minimum commitment has no meter, dimensions or included units: it applies to the usage "
                "lines of the period.",
                f"{field_name}.minimum",
            )
        if model.kind != "flat":
            raise ValidationError(
                "invalid_usage", "A minimum commitment is a flat amount per period.", f"{field_name}.minimum"
            )
        return UsageTerms(minimum=True)
    if not isinstance(meter, str) or not meter:
        raise ValidationError("missing_field", "A usage price names its meter.", f"{field_name}.meter")
    included = raw.get("included_units")
    included_units = Decimal(0)
    if included is not None:
        try:
            included_units = Decimal(str(included)) if not isinstance(included, bool) else Decimal("NaN")
        except ArithmeticError:
            included_units = Decimal("NaN")
        if not included_units.is_finite() or included_units < 0 or isinstance(included, float):
            raise ValidationError(
                "invalid_number",
                'included_units is a number of at least 0, as a string ("1000").',
                f"{field_name}.included_units",
            )
        bounded(included_units, f"{field_name}.included_units")  # 1e999999999 would overflow at bill time
    if included_units and model.kind == "percentage":
        raise ValidationError(
            "invalid_usage",
            "A percentage price charges transactions; use free_transactions instead of included_units.",
            f"{field_name}.included_units",
        )
    dimensions_raw = raw.get("dimensions") or {}
    if not isinstance(dimensions_raw, Mapping):
        raise ValidationError("invalid_usage", "dimensions maps a group to a price model.", f"{field_name}.dimensions")
    dimensions: dict[str, ChargeModel] = {}
    for key, spec in dimensions_raw.items():
        where = f"{field_name}.dimensions.{key}"
        if not isinstance(spec, Mapping) or "model" not in spec:
            raise ValidationError("invalid_usage", 'Each dimension has {"model": ..., "config": {...}}.', where)
        model_of_group = parse_charge_model(str(spec["model"]), spec.get("config", {}), f"{where}.config")
        values = group_of_key(str(key))
        canonical = str(key) if values is None else dimension_key(values)
        if values is None or canonical not in dimensions:  # one group twice (refused when made): the plain key wins
            dimensions[canonical] = model_of_group
        if included_units and model_of_group.kind == "percentage":
            raise ValidationError(
                "invalid_usage",
                "A percentage model charges transactions, which included units cannot be taken from: give this "
                "price no included_units, or the dimension another model.",
                f"{where}.model",
            )
    return UsageTerms(meter=meter, included_units=included_units, dimensions=dimensions)


def usage_terms_to_json(terms: UsageTerms | None) -> dict[str, object] | None:
    if terms is None:
        return None
    if terms.minimum:
        return {"minimum": True}
    out: dict[str, object] = {"meter": terms.meter}
    if terms.included_units:
        out["included_units"] = str(terms.included_units)
    if terms.dimensions:
        out["dimensions"] = {k: {"model": m.kind, "config": m.to_config()} for k, m in terms.dimensions.items()}
    return out


class CouponDuration(str, Enum):
    ONCE = "once"
    REPEATING = "repeating"  # for `duration_periods` billing periods
    FOREVER = "forever"


@dataclass(frozen=True, slots=True)
class Coupon:
    id: str
    code: str
    name: str
    percent_off: Decimal | None  # 0 < p <= 100
    amount_off_minor: int | None  # with currency
    currency: Currency | None
    duration: CouponDuration
    duration_periods: int | None
    max_redemptions: int | None
    redeem_by: datetime | None
    times_redeemed: int = 0

    def check_redeemable(self, at: datetime, currency: Currency, field: str = "coupon") -> None:
        if self.redeem_by is not None and at > self.redeem_by:
            raise Conflict("coupon_expired", f"Coupon {self.code} expired on {self.redeem_by:%Y-%m-%d}.", field)
        if self.max_redemptions is not None and self.times_redeemed >= self.max_redemptions:
            raise Conflict(
                "coupon_exhausted",
                f"Coupon {self.code} has been redeemed {self.times_redeemed} times, its limit.",
                field,
            )
        if self.currency is not None and self.currency != currency:
            raise ValidationError(
                "coupon_currency_mismatch",
                f"Coupon {self.code} is in {self.currency.code}, the subscription in {currency.code}.",
                field,
            )


def validate_coupon_terms(
    percent_off: Decimal | None,
    amount_off_minor: int | None,
    currency: Currency | None,
    duration: CouponDuration,
    duration_periods: int | None,
    max_redemptions: int | None,
) -> None:
    if (percent_off is None) == (amount_off_minor is None):
        raise ValidationError("invalid_coupon", "Give either percent_off or amount_off, not both.", "percent_off")
    if percent_off is not None and not (0 < percent_off <= 100):
        raise ValidationError("invalid_percent", "percent_off must be above 0 and at most 100.", "percent_off")
    if amount_off_minor is not None:
        if amount_off_minor <= 0:
            raise ValidationError("negative_amount", "amount_off must be positive.", "amount_off")
        if currency is None:
            raise ValidationError("missing_field", "A fixed-amount coupon needs a currency.", "currency")
    if duration is CouponDuration.REPEATING and (
        duration_periods is None or not 1 <= duration_periods <= MAX_DURATION_PERIODS
    ):
        raise ValidationError(
            "invalid_duration",
            f"A repeating coupon needs duration_periods from 1 to {MAX_DURATION_PERIODS}.",
            "duration_periods",
        )
    if duration is not CouponDuration.REPEATING and duration_periods is not None:
        raise ValidationError(
            "invalid_duration", "duration_periods only applies to repeating coupons.", "duration_periods"
        )
    check_max_redemptions(max_redemptions)


# The most redemptions a coupon or a promotion code may be limited to, and the most periods a repeating coupon may
# last (as the API takes them): beyond, the counts would not fit their columns (PostgreSQL's integer).
MAX_REDEMPTIONS = 1_000_000_000
MAX_DURATION_PERIODS = 1000


def check_max_redemptions(max_redemptions: int | None) -> None:
    if max_redemptions is not None and not 1 <= max_redemptions <= MAX_REDEMPTIONS:
        raise ValidationError("invalid_limit", f"max_redemptions is from 1 to {MAX_REDEMPTIONS:,}.", "max_redemptions")


@dataclass(frozen=True, slots=True)
class PromotionCode:
    """A customer-facing code for a coupon, with limits of its own."""

    id: str
    code: str
    coupon_id: str
    active: bool
    max_redemptions: int | None
    expires_at: datetime | None
    times_redeemed: int = 0

    def check_redeemable(self, at: datetime, field: str = "promotion_code") -> None:
        if not self.active:
            raise Conflict("promotion_code_inactive", f"Promotion code {self.code} is not active.", field)
        if self.expires_at is not None and at > self.expires_at:
            raise Conflict(
                "promotion_code_expired", f"Promotion code {self.code} expired on {self.expires_at:%Y-%m-%d}.", field
            )
        if self.max_redemptions is not None and self.times_redeemed >= self.max_redemptions:
            raise Conflict(
                "promotion_code_exhausted", f"Promotion code {self.code} has reached its redemption limit.", field
            )
