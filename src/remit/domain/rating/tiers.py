"""Price tiers and the plumbing the charge models share: results, exact arithmetic, config checks, wording.

Everything here is pure and Decimal-only. ``charge_models`` builds the six price models on top of it and
re-exports the public names (``Tier``, ``BreakdownItem``, ``ChargeResult``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Any

from remit.domain.errors import ValidationError
from remit.domain.money import bounded, parse_rate, to_decimal

ZERO = Decimal(0)

# Rating never rounds: every product and sum is exact, and anything that would need rounding is refused.
_EXACT = Context(prec=200, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])


@dataclass(frozen=True, slots=True)
class Tier:
    up_to: Decimal | None  # inclusive upper bound in units; None = no upper bound (must be last)
    unit_price: Decimal  # per unit in this tier (a rate, up to 9 decimals)
    flat_fee: Decimal = ZERO  # charged when the tier is entered (graduated) / applies (volume)

    def to_config(self) -> dict[str, object]:
        return {
            "up_to": None if self.up_to is None else decimal_str(self.up_to),
            "unit_price": decimal_str(self.unit_price),
            "flat_fee": decimal_str(self.flat_fee),
        }


@dataclass(frozen=True, slots=True)
class BreakdownItem:
    """One line of a rating: ``amount == units * unit_price + flat_fee`` always holds.

    ``units`` is what ``unit_price`` is multiplied by: units of the tier, packages for the package model, the
    transaction volume for the percentage model. Nothing is rounded.
    """

    description: str
    units: Decimal
    unit_price: Decimal
    flat_fee: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class ChargeResult:
    model: str  # the model kind
    units: Decimal  # the quantity rated
    amount: Decimal  # UNROUNDED, in the price currency; equals the sum of the breakdown amounts exactly
    breakdown: tuple[BreakdownItem, ...]


# --- exact arithmetic -------------------------------------------------------------------------------------


@contextmanager
def exact_arithmetic() -> Iterator[None]:
    """Run Decimal arithmetic with 200 digits and every inexact result trapped, as a ValidationError."""
    with localcontext(_EXACT):
        try:
            yield
        except DecimalException:
            raise ValidationError(
                "quantity_out_of_range",
                "The quantity is too large or too precise to rate exactly.",
                "quantity",
            ) from None


def quantity(value: object, field: str = "quantity") -> Decimal:
    """A quantity to rate: an exact, non-negative number (never a float)."""
    result = to_decimal(value, field)
    if result < 0:
        raise ValidationError("negative_quantity", f"The quantity {result} is negative.", field)
    return result.copy_abs() if result == 0 else result


def item(description: str, units: Decimal, unit_price: Decimal, flat_fee: Decimal = ZERO) -> BreakdownItem:
    """A breakdown line; call inside ``exact_arithmetic``."""
    return BreakdownItem(description, units, unit_price, flat_fee, units * unit_price + flat_fee)


def result(kind: str, units: Decimal, items: Iterable[BreakdownItem]) -> ChargeResult:
    """The result whose amount is the exact sum of its items; call inside ``exact_arithmetic``."""
    lines = tuple(items)
    return ChargeResult(kind, units, sum((line.amount for line in lines), ZERO), lines)


# --- wording ----------------------------------------------------------------------------------------------
# Prices, fees and amounts are shown as configured ("0.10" stays "0.10"); quantities computed while rating are
# shown without trailing zeros. Both get thousands separators. Call these inside ``exact_arithmetic``.


def decimal_str(value: Decimal) -> str:
    """JSON-safe, plain notation, exactly as stored (``1E+3`` becomes ``"1000"``)."""
    return format(value, "f")


def num(value: Decimal) -> str:
    return f"{value:,f}"


def qty(value: Decimal) -> str:
    return f"{value.normalize():,f}"


def plural(count: Decimal, word: str) -> str:
    return f"{qty(count)} {word}" + ("" if count == 1 else "s")


def fee_suffix(flat_fee: Decimal) -> str:
    return f" + flat fee {num(flat_fee)}" if flat_fee else ""


def unit_range(lower: Decimal, top: Decimal) -> str:
    """The units above ``lower`` up to and including ``top``: "1,001–10,000", "unit 7", "over 0.5 up to 2"."""
    if lower == lower.to_integral_value() and top == top.to_integral_value():
        first = lower + 1
        return f"unit {qty(top)}" if first == top else f"{qty(first)}–{qty(top)}"
    return f"over {qty(lower)} up to {qty(top)}"


def tier_label(tiers: Sequence[Tier], index: int) -> str:
    lower = ZERO if index == 0 else tiers[index - 1].up_to
    assert lower is not None
    up_to = tiers[index].up_to
    if up_to is not None:
        return f"tier {index + 1}, {unit_range(lower, up_to)}"
    return f"tier {index + 1}" + (f", above {qty(lower)}" if index else "")


# --- config checks ----------------------------------------------------------------------------------------


def _setting(value: object, field: str) -> Decimal:
    """A price, fee, bound or size: at most 15 digits before the point and 9 decimals."""
    return parse_rate(value, field)


def check_keys(config: Mapping[Any, object], required: Sequence[str], optional: Sequence[str], path: str) -> None:
    for key in config:
        if key not in required and key not in optional:
            raise ValidationError("unknown_field", f"{key!r} is not a setting of this price.", f"{path}.{key}")
    for key in required:
        if key not in config:
            raise ValidationError("missing_field", f"{key!r} is required.", f"{path}.{key}")


def non_negative(value: object, field: str) -> Decimal:
    """A price, fee or count from config or a constructor: exact, at most 9 decimals, not below zero."""
    number = _setting(value, field)
    if number < 0:
        raise ValidationError("negative_amount", f"{field.rsplit('.', 1)[-1]} must not be negative.", field)
    return number.copy_abs() if number == 0 else number


def optional_non_negative(config: Mapping[Any, object], key: str, path: str) -> Decimal | None:
    """An optional setting: absent or null is None."""
    value = config.get(key)
    return None if value is None else non_negative(value, f"{path}.{key}")


def non_negative_or_zero(config: Mapping[Any, object], key: str, path: str) -> Decimal:
    """An optional setting: absent or null is zero."""
    value = config.get(key)
    return ZERO if value is None else non_negative(value, f"{path}.{key}")


def _invalid_tiers(message: str, field: str) -> ValidationError:
    return ValidationError("invalid_tiers", message, field)


def check_tiers(tiers: Sequence[Tier], path: str) -> None:
    """Tiers are non-empty, strictly increasing from above 0, and only the last one is open-ended."""
    if not tiers:
        raise _invalid_tiers("Give at least one tier.", f"{path}.tiers")
    previous = ZERO
    for index, tier in enumerate(tiers):
        at = f"{path}.tiers[{index}]"
        if not isinstance(tier, Tier):
            raise _invalid_tiers("Each tier needs up_to and unit_price.", at)
        non_negative(tier.unit_price, f"{at}.unit_price")
        non_negative(tier.flat_fee, f"{at}.flat_fee")
        last = index == len(tiers) - 1
        if tier.up_to is None:
            if not last:
                raise _invalid_tiers("Only the last tier can be open-ended (up_to null).", f"{at}.up_to")
            continue
        _setting(tier.up_to, f"{at}.up_to")
        if tier.up_to <= previous:
            raise _invalid_tiers(
                f"up_to must be above {previous}: tiers go strictly up, starting above 0.", f"{at}.up_to"
            )
        if last:
            raise _invalid_tiers(
                "The last tier must be open-ended (up_to null) so every quantity has a price.", f"{at}.up_to"
            )
        previous = tier.up_to


def parse_tiers(config: Mapping[str, object], path: str) -> tuple[Tier, ...]:
    raw = config["tiers"]
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise _invalid_tiers("tiers must be a list of tiers.", f"{path}.tiers")
    tiers: list[Tier] = []
    for index, entry in enumerate(raw):
        at = f"{path}.tiers[{index}]"
        if not isinstance(entry, Mapping):
            raise _invalid_tiers("Each tier is an object with up_to and unit_price.", at)
        check_keys(entry, ("up_to", "unit_price"), ("flat_fee",), at)
        up_to = entry["up_to"]
        tiers.append(
            Tier(
                up_to=None if up_to is None else _setting(up_to, f"{at}.up_to"),
                unit_price=non_negative(entry["unit_price"], f"{at}.unit_price"),
                flat_fee=non_negative_or_zero(entry, "flat_fee", at),
            )
        )
    check_tiers(tiers, path)
    return tuple(tiers)


def check_package_size(value: object, field: str) -> Decimal:
    size = _setting(value, field)
    if size <= 0:
        raise ValidationError("invalid_package_size", "package_size must be above 0.", field)
    return size


def check_rate(value: object, field: str) -> Decimal:
    fraction = _setting(value, field)
    if not 0 <= fraction <= 1:
        raise ValidationError(
            "invalid_rate", f"rate is a fraction between 0 and 1 (1.2% is 0.012), not {fraction}.", field
        )
    return fraction.copy_abs() if fraction == 0 else fraction


def check_count(value: object, field: str) -> int:
    count = bounded(value, field)
    if count != count.to_integral_value():
        raise ValidationError("invalid_number", f"{value!r} is not a whole number.", field)
    if count < 0:
        raise ValidationError("negative_amount", "free_transactions must not be negative.", field)
    return int(count)


def check_range(low: Decimal | None, high: Decimal | None, path: str) -> None:
    if low is not None and high is not None and low > high:
        raise ValidationError(
            "invalid_range",
            f"min_per_transaction ({low}) is above max_per_transaction ({high}).",
            f"{path}.min_per_transaction",
        )
