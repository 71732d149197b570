"""Charge models: how a price turns a quantity into an amount.

Six models, each a frozen dataclass with a ``kind``, ``rate(units) -> ChargeResult`` and ``to_config()``:

- ``flat``       a fixed amount per period, whatever the quantity.
- ``per_unit``   units × unit_price.
- ``graduated``  each unit priced in the tier it falls in; a tier's flat fee is charged once if it is entered.
- ``volume``     all units priced at the tier the total falls in, plus that tier's flat fee.
- ``package``    units beyond the free ones, in packages; a started package is charged in full.
- ``percentage`` a fraction of transaction amounts, with a fixed fee per transaction, free transactions and a
  per-transaction minimum and maximum.
- ``graduated_percentage`` a fraction of a volume that falls as the volume grows: each slice of the volume at
  its tier's rate (e.g. 3% of the first 10,000, 2% above), a tier's flat fee charged once if entered.

Rating is pure and exact: Decimal only, never a float, never rounded. The amount is in the price currency
and becomes money later, at a named rounding point. Products and sums run with 200 digits and inexact results
trapped, so a quantity that cannot be rated exactly is refused (``quantity_out_of_range``), never rounded.

Configs are JSON objects with Decimals as strings; ``parse_charge_model`` validates them and reports errors
with the field at fault ("price.tiers[1].up_to"). Counts and quantities below zero in a config are reported
as ``negative_amount`` like prices and fees. ``parse_charge_model(m.kind, m.to_config()) == m`` always.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Protocol, runtime_checkable

from remit.domain.errors import ValidationError
from remit.domain.money import to_decimal
from remit.domain.rating.tiers import (
    ZERO,
    BreakdownItem,
    ChargeResult,
    Tier,
    check_count,
    check_keys,
    check_package_size,
    check_range,
    check_rate,
    check_tiers,
    decimal_str,
    exact_arithmetic,
    fee_suffix,
    item,
    non_negative,
    non_negative_or_zero,
    num,
    optional_non_negative,
    parse_tiers,
    plural,
    qty,
    quantity,
    result,
    tier_label,
    unit_range,
)

__all__ = [
    "KINDS",
    "BreakdownItem",
    "ChargeModel",
    "ChargeResult",
    "FlatCharge",
    "GraduatedCharge",
    "GraduatedPercentageCharge",
    "PackageCharge",
    "PerUnitCharge",
    "PercentageCharge",
    "Tier",
    "VolumeCharge",
    "parse_charge_model",
]

KINDS: tuple[str, ...] = ("flat", "per_unit", "graduated", "volume", "package", "percentage", "graduated_percentage")

# Constructors validate too, with paths under "price"; parse_charge_model reports paths under its ``field``.
_PATH = "price"


@runtime_checkable
class ChargeModel(Protocol):
    @property
    def kind(self) -> str: ...

    def rate(self, units: Decimal) -> ChargeResult: ...

    def to_config(self) -> dict[str, object]: ...


@dataclass(frozen=True, slots=True)
class FlatCharge:
    """A fixed amount per period. The quantity is reported in the result but not multiplied."""

    kind: ClassVar[str] = "flat"
    amount: Decimal

    def __post_init__(self) -> None:
        non_negative(self.amount, f"{_PATH}.amount")

    def rate(self, units: Decimal) -> ChargeResult:
        q = quantity(units)
        with exact_arithmetic():
            return result(self.kind, q, [item(f"flat fee {num(self.amount)}", ZERO, ZERO, self.amount)])

    def to_config(self) -> dict[str, object]:
        return {"amount": decimal_str(self.amount)}


@dataclass(frozen=True, slots=True)
class PerUnitCharge:
    """units × unit_price."""

    kind: ClassVar[str] = "per_unit"
    unit_price: Decimal

    def __post_init__(self) -> None:
        non_negative(self.unit_price, f"{_PATH}.unit_price")

    def rate(self, units: Decimal) -> ChargeResult:
        q = quantity(units)
        with exact_arithmetic():
            return result(self.kind, q, [item(f"{qty(q)} × {num(self.unit_price)}", q, self.unit_price)])

    def to_config(self) -> dict[str, object]:
        return {"unit_price": decimal_str(self.unit_price)}


def _graduated(kind: str, tiers: Sequence[Tier], units: Decimal, describe: Callable[[str, Tier], str]) -> ChargeResult:
    """Each unit at the price of the tier it falls in; a tier's flat fee once when it is entered. ``describe``
    words a tier's line from its span of units ("1–1,000") and the tier."""
    q = quantity(units)
    with exact_arithmetic():
        lines: list[BreakdownItem] = []
        lower = ZERO
        for tier in tiers:
            if q <= lower:
                break
            top = q if tier.up_to is None or q < tier.up_to else tier.up_to
            description = describe(unit_range(lower, top), tier) + fee_suffix(tier.flat_fee)
            lines.append(item(description, top - lower, tier.unit_price, tier.flat_fee))
            if tier.up_to is None:
                break
            lower = tier.up_to
        return result(kind, q, lines)


@dataclass(frozen=True, slots=True)
class GraduatedCharge:
    """Each unit is priced in the tier it falls in (tier ``i`` holds the units above ``tiers[i-1].up_to`` up
    to and including its own ``up_to``). A tier's flat fee is charged once when at least one unit falls in it,
    so zero units cost nothing. One breakdown line per tier entered."""

    kind: ClassVar[str] = "graduated"
    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", tuple(self.tiers))
        check_tiers(self.tiers, _PATH)

    def rate(self, units: Decimal) -> ChargeResult:
        return _graduated(self.kind, self.tiers, units, lambda span, tier: f"{span} × {num(tier.unit_price)}")

    def to_config(self) -> dict[str, object]:
        return {"tiers": [tier.to_config() for tier in self.tiers]}


@dataclass(frozen=True, slots=True)
class VolumeCharge:
    """All units are priced at the tier the total falls in, plus that tier's flat fee.

    Zero units cost nothing: no tier applies, so no flat fee is charged either (a fee for merely having the
    price belongs in a separate ``flat`` price).
    """

    kind: ClassVar[str] = "volume"
    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", tuple(self.tiers))
        check_tiers(self.tiers, _PATH)

    def rate(self, units: Decimal) -> ChargeResult:
        q = quantity(units)
        with exact_arithmetic():
            if q == 0:
                return result(self.kind, q, [])
            index = next(i for i, t in enumerate(self.tiers) if t.up_to is None or q <= t.up_to)
            tier = self.tiers[index]
            label, fee = tier_label(self.tiers, index), fee_suffix(tier.flat_fee)
            description = f"{qty(q)} × {num(tier.unit_price)} ({label}){fee}"
            return result(self.kind, q, [item(description, q, tier.unit_price, tier.flat_fee)])

    def to_config(self) -> dict[str, object]:
        return {"tiers": [tier.to_config() for tier in self.tiers]}


@dataclass(frozen=True, slots=True)
class PackageCharge:
    """Units beyond ``free_units`` are sold in packages of ``package_size`` at ``package_price`` each;
    packages = ceil(billable / package_size), so a started package is charged in full. The package line's
    ``units`` is the number of packages."""

    kind: ClassVar[str] = "package"
    package_size: Decimal
    package_price: Decimal
    free_units: Decimal = ZERO

    def __post_init__(self) -> None:
        check_package_size(self.package_size, f"{_PATH}.package_size")
        non_negative(self.package_price, f"{_PATH}.package_price")
        non_negative(self.free_units, f"{_PATH}.free_units")

    def rate(self, units: Decimal) -> ChargeResult:
        q = quantity(units)
        with exact_arithmetic():
            lines: list[BreakdownItem] = []
            free = min(q, self.free_units)
            if free > 0:
                lines.append(item(f"first {plural(free, 'unit')} free", free, ZERO))
            billable = q - free
            if billable > 0:
                packages, rest = divmod(billable, self.package_size)
                packages += 1 if rest else 0
                description = (
                    f"{plural(packages, 'package')} of {qty(self.package_size)} × {num(self.package_price)}"
                    f" ({plural(billable, 'billable unit')})"
                )
                lines.append(item(description, packages, self.package_price))
            return result(self.kind, q, lines)

    def to_config(self) -> dict[str, object]:
        return {
            "package_size": decimal_str(self.package_size),
            "package_price": decimal_str(self.package_price),
            "free_units": decimal_str(self.free_units),
        }


@dataclass(frozen=True, slots=True)
class PercentageCharge:
    """A fraction of transaction amounts (``rate`` 0.012 is 1.2%).

    ``rate_transactions`` rates the period's transactions in order: the first ``free_transactions`` cost
    nothing; each other one costs amount × rate + fixed_fee, clamped to [min, max] when those are set. A negative
    amount is a refund: it is credited amount × rate, with no fixed fee, free transaction, minimum or maximum,
    and nets within the line, whose refunds are credited at most what its transactions are charged, so it never
    comes below zero (as a negative quantity bills nothing in the other models).

    ``rate(units)`` treats ``units`` as a total transaction volume whose transaction count is unknown, so it
    is just units × rate: no fixed fee, no free transactions, no minimum or maximum.

    Breakdown lines group transactions (free, charged, at the minimum, at the maximum); a line's ``units`` is
    the volume of its transactions and its ``flat_fee`` the fixed fees (or the clamped amounts) of the group;
    refunds are one more line, of their (negative) volume.
    """

    kind: ClassVar[str] = "percentage"
    rate_fraction: Decimal
    fixed_fee: Decimal = ZERO
    free_transactions: int = 0
    min_per_transaction: Decimal | None = None
    max_per_transaction: Decimal | None = None

    def __post_init__(self) -> None:
        check_rate(self.rate_fraction, f"{_PATH}.rate")
        non_negative(self.fixed_fee, f"{_PATH}.fixed_fee")
        if type(self.free_transactions) is not int:
            raise ValidationError("invalid_number", "free_transactions must be an int.", f"{_PATH}.free_transactions")
        check_count(self.free_transactions, f"{_PATH}.free_transactions")
        for key in ("min_per_transaction", "max_per_transaction"):
            value = getattr(self, key)
            if value is not None:
                non_negative(value, f"{_PATH}.{key}")
        check_range(self.min_per_transaction, self.max_per_transaction, _PATH)

    def rate(self, units: Decimal) -> ChargeResult:
        q = quantity(units)
        with exact_arithmetic():
            return result(self.kind, q, [item(f"{self._pct()} of {num(q)}", q, self.rate_fraction)])

    def rate_transactions(self, amounts: Sequence[Decimal]) -> ChargeResult:
        values = [to_decimal(a, f"transactions[{i}]") for i, a in enumerate(amounts)]
        refunds = [v for v in values if v < 0]
        sales = [quantity(v) for v in values if not v < 0]
        with exact_arithmetic():
            free, charged = sales[: self.free_transactions], sales[self.free_transactions :]
            plain: list[Decimal] = []
            at_min: list[Decimal] = []
            at_max: list[Decimal] = []
            for amount in charged:
                fee = amount * self.rate_fraction + self.fixed_fee
                if self.min_per_transaction is not None and fee < self.min_per_transaction:
                    at_min.append(amount)
                elif self.max_per_transaction is not None and fee > self.max_per_transaction:
                    at_max.append(amount)
                else:
                    plain.append(amount)
            lines: list[BreakdownItem] = []
            if free:
                volume = sum(free, ZERO)
                lines.append(item(f"{_txns(free)} free (volume {num(volume)})", volume, ZERO))
            if plain:
                volume, fees = sum(plain, ZERO), len(plain) * self.fixed_fee
                each = f" + {num(self.fixed_fee)} each" if self.fixed_fee else ""
                description = f"{_txns(plain)}, volume {num(volume)} × {self._pct()}{each}"
                lines.append(item(description, volume, self.rate_fraction, fees))
            for group, bound, word in (
                (at_min, self.min_per_transaction, "minimum"),
                (at_max, self.max_per_transaction, "maximum"),
            ):
                if group and bound is not None:
                    volume = sum(group, ZERO)
                    description = f"{_txns(group)} at the {word} of {num(bound)} (volume {num(volume)})"
                    lines.append(item(description, volume, ZERO, len(group) * bound))
            if refunds:
                lines.append(self._refunds(refunds, sum((line.amount for line in lines), ZERO)))
            return result(self.kind, sum(values, ZERO), lines)

    def _refunds(self, refunds: Sequence[Decimal], charged: Decimal) -> BreakdownItem:
        """The refunds' line: their volume × rate, credited up to what the line charged (call inside
        ``exact_arithmetic``)."""
        volume = sum(refunds, ZERO)
        description = f"{plural(Decimal(len(refunds)), 'refund')}, volume {num(volume)} × {self._pct()} credited"
        if volume * self.rate_fraction + charged >= 0:
            return item(description, volume, self.rate_fraction)
        return item(f"{description} up to the {qty(charged)} charged", volume, ZERO, ZERO - charged)  # not -0

    def to_config(self) -> dict[str, object]:
        def optional(value: Decimal | None) -> str | None:
            return None if value is None else decimal_str(value)

        return {
            "rate": decimal_str(self.rate_fraction),
            "fixed_fee": decimal_str(self.fixed_fee),
            "free_transactions": self.free_transactions,
            "min_per_transaction": optional(self.min_per_transaction),
            "max_per_transaction": optional(self.max_per_transaction),
        }

    def _pct(self) -> str:
        return f"{qty(self.rate_fraction * 100)}%"


@dataclass(frozen=True, slots=True)
class GraduatedPercentageCharge:
    """A volume (an amount of money processed, say) charged by tiers of rates: the part of the volume in each
    tier at that tier's rate, plus the tier's flat fee once when entered. The tiers are those of ``graduated``
    with ``rate`` (a fraction: 0.03 is 3%) in place of ``unit_price``."""

    kind: ClassVar[str] = "graduated_percentage"
    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", tuple(self.tiers))
        check_tiers(self.tiers, _PATH)
        for i, tier in enumerate(self.tiers):
            check_rate(tier.unit_price, f"{_PATH}.tiers[{i}].rate")

    def rate(self, units: Decimal) -> ChargeResult:
        return _graduated(self.kind, self.tiers, units, lambda span, tier: f"{qty(tier.unit_price * 100)}% of {span}")

    def to_config(self) -> dict[str, object]:
        out = []
        for tier in self.tiers:
            config = tier.to_config()
            config["rate"] = config.pop("unit_price")
            out.append(config)
        return {"tiers": out}


def _txns(group: Sequence[Decimal]) -> str:
    return plural(Decimal(len(group)), "transaction")


# --- parsing ----------------------------------------------------------------------------------------------


def _parse_flat(config: Mapping[str, object], path: str) -> FlatCharge:
    check_keys(config, ("amount",), (), path)
    return FlatCharge(non_negative(config["amount"], f"{path}.amount"))


def _parse_per_unit(config: Mapping[str, object], path: str) -> PerUnitCharge:
    check_keys(config, ("unit_price",), (), path)
    return PerUnitCharge(non_negative(config["unit_price"], f"{path}.unit_price"))


def _parse_graduated(config: Mapping[str, object], path: str) -> GraduatedCharge:
    check_keys(config, ("tiers",), (), path)
    return GraduatedCharge(parse_tiers(config, path))


def _parse_volume(config: Mapping[str, object], path: str) -> VolumeCharge:
    check_keys(config, ("tiers",), (), path)
    return VolumeCharge(parse_tiers(config, path))


def _parse_package(config: Mapping[str, object], path: str) -> PackageCharge:
    check_keys(config, ("package_size", "package_price"), ("free_units",), path)
    return PackageCharge(
        package_size=check_package_size(config["package_size"], f"{path}.package_size"),
        package_price=non_negative(config["package_price"], f"{path}.package_price"),
        free_units=non_negative_or_zero(config, "free_units", path),
    )


def _parse_percentage(config: Mapping[str, object], path: str) -> PercentageCharge:
    optional = ("fixed_fee", "free_transactions", "min_per_transaction", "max_per_transaction")
    check_keys(config, ("rate",), optional, path)
    free = config.get("free_transactions")
    low = optional_non_negative(config, "min_per_transaction", path)
    high = optional_non_negative(config, "max_per_transaction", path)
    check_range(low, high, path)
    return PercentageCharge(
        rate_fraction=check_rate(config["rate"], f"{path}.rate"),
        fixed_fee=non_negative_or_zero(config, "fixed_fee", path),
        free_transactions=0 if free is None else check_count(free, f"{path}.free_transactions"),
        min_per_transaction=low,
        max_per_transaction=high,
    )


def _parse_graduated_percentage(config: Mapping[str, object], path: str) -> GraduatedPercentageCharge:
    check_keys(config, ("tiers",), (), path)
    raw = config["tiers"]
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise ValidationError("invalid_tiers", "tiers must be a list of tiers.", f"{path}.tiers")
    renamed: list[object] = []
    for index, entry in enumerate(raw):
        at = f"{path}.tiers[{index}]"
        if not isinstance(entry, Mapping):
            raise ValidationError("invalid_tiers", "Each tier is an object with up_to and rate.", at)
        check_keys(entry, ("up_to", "rate"), ("flat_fee",), at)
        check_rate(entry["rate"], f"{at}.rate")
        renamed.append({"up_to": entry["up_to"], "unit_price": entry["rate"], "flat_fee": entry.get("flat_fee")})
        if entry.get("flat_fee") is None:
            del renamed[-1]["flat_fee"]  # type: ignore[attr-defined]
    return GraduatedPercentageCharge(parse_tiers({"tiers": renamed}, path))


_PARSERS: dict[str, Callable[[Mapping[str, object], str], ChargeModel]] = {
    "flat": _parse_flat,
    "per_unit": _parse_per_unit,
    "graduated": _parse_graduated,
    "volume": _parse_volume,
    "package": _parse_package,
    "percentage": _parse_percentage,
    "graduated_percentage": _parse_graduated_percentage,
}
assert tuple(_PARSERS) == KINDS


def parse_charge_model(kind: str, config: Mapping[str, object], field: str = "price") -> ChargeModel:
    """Validate a price model config and build the model. Errors name the field at fault under ``field``.

    The kind sits next to the config (``{"model": ..., "config": {...}}``), so an unknown kind is reported at
    ``model`` beside ``field``: "prices[0].config" -> "prices[0].model", "price" -> "model".
    """
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        parent = field.rpartition(".")[0]
        raise ValidationError(
            "unknown_price_model",
            f"{kind!r} is not a price model; use one of {', '.join(KINDS)}.",
            f"{parent}.model" if parent else "model",
        )
    if not isinstance(config, Mapping):
        raise ValidationError("invalid_price", "The price settings must be an object.", field)
    return parser(config, field)
