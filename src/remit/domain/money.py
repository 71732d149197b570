"""Money, currencies, rates, the rounding policy and allocation.

- ``Money`` is an exact amount at its currency's minor unit (cents, yen, fils). It refuses floats and mixed
  currencies. It is stored as integer minor units.
- ``Rate`` is a unit price or factor with up to 9 decimals (``0.000125`` per API call).
- Amounts in between (a unit price times a quantity times a proration fraction) are plain ``Decimal`` and
  become ``Money`` only through ``RoundingPolicy.round``: rounding happens at named points, nowhere else.
- ``allocate`` splits an amount by weights with the largest-remainder method; the parts always sum to the whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from enum import Enum
from fractions import Fraction

from remit.domain.errors import ValidationError

# ISO 4217 minor units. Currencies absent here are refused, so nobody bills in a typo.
_MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(
        [
            "AED",
            "AFN",
            "ALL",
            "AMD",
            "ANG",
            "AOA",
            "ARS",
            "AUD",
            "AWG",
            "AZN",
            "BAM",
            "BBD",
            "BDT",
            "BGN",
            "BMD",
            "BND",
            "BOB",
            "BRL",
            "BSD",
            "BTN",
            "BWP",
            "BYN",
            "BZD",
            "CAD",
            "CDF",
            "CHF",
            "CNY",
            "COP",
            "CRC",
            "CUP",
            "CVE",
            "CZK",
            "DKK",
            "DOP",
            "DZD",
            "EGP",
            "ERN",
            "ETB",
            "EUR",
            "FJD",
            "FKP",
            "GBP",
            "GEL",
            "GHS",
            "GIP",
            "GMD",
            "GTQ",
            "GYD",
            "HKD",
            "HNL",
            "HTG",
            "HUF",
            "IDR",
            "ILS",
            "INR",
            "IRR",
            "JMD",
            "KES",
            "KGS",
            "KHR",
            "KPW",
            "KYD",
            "KZT",
            "LAK",
            "LBP",
            "LKR",
            "LRD",
            "LSL",
            "MAD",
            "MDL",
            "MGA",
            "MKD",
            "MMK",
            "MNT",
            "MOP",
            "MRU",
            "MUR",
            "MVR",
            "MWK",
            "MXN",
            "MYR",
            "MZN",
            "NAD",
            "NGN",
            "NIO",
            "NOK",
            "NPR",
            "NZD",
            "PAB",
            "PEN",
            "PGK",
            "PHP",
            "PKR",
            "PLN",
            "QAR",
            "RON",
            "RSD",
            "RUB",
            "SAR",
            "SBD",
            "SCR",
            "SDG",
            "SEK",
            "SGD",
            "SHP",
            "SLE",
            "SOS",
            "SRD",
            "SSP",
            "STN",
            "SVC",
            "SYP",
            "SZL",
            "THB",
            "TJS",
            "TMT",
            "TOP",
            "TRY",
            "TTD",
            "TWD",
            "TZS",
            "UAH",
            "USD",
            "UYU",
            "UZS",
            "VES",
            "WST",
            "XCD",
            "YER",
            "ZAR",
            "ZMW",
            "ZWL",
        ],
        2,
    ),
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}

RATE_MAX_DECIMALS = 9
# Digits before the point of a number a user gives: a price's setting (a price, fee, tier bound, package size,
# count), a unit price, a quantity. The API's schemas take no more.
MAX_WHOLE_DIGITS = 15
# The largest amount one rounding may give, in minor units: what a line, a discount or a grant may be. Far above
# any real bill, and far enough below the 64-bit columns amounts are stored in (9.2e18) that an invoice's lines,
# taxes and credits add up without overflowing them.
MAX_AMOUNT_MINOR = 10**15
_LIMITS: dict[int, Decimal] = {}  # MAX_AMOUNT_MINOR in major units, per number of minor units


@dataclass(frozen=True, slots=True)
class Currency:
    code: str
    minor_units: int

    @property
    def quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.minor_units)

    def __str__(self) -> str:
        return self.code


_CURRENCIES = {code: Currency(code, units) for code, units in _MINOR_UNITS.items()}


def currency(code: str, field: str = "currency") -> Currency:
    """Look up an ISO 4217 currency; unknown codes are a validation error."""
    found = _CURRENCIES.get(code.upper()) if isinstance(code, str) else None
    if found is None:
        raise ValidationError("unknown_currency", f"{code!r} is not an ISO 4217 currency Remit supports.", field)
    return found


def to_decimal(value: object, field: str = "amount") -> Decimal:
    """The one number constructor: accepts Decimal, int or a decimal string. Never a float."""
    if isinstance(value, (bool, float)):
        raise ValidationError(
            "float_not_allowed", 'Amounts must be exact: give a decimal string such as "10.50".', field
        )
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValidationError("invalid_number", f"{value!r} is not a number.", field) from None
    else:
        raise ValidationError("invalid_number", f"{value!r} is not a number.", field)
    if not result.is_finite():
        raise ValidationError("invalid_number", f"{value!r} is not a finite number.", field)
    return result


class RoundingPolicy(Enum):
    """How raw amounts become money. One policy per legal entity; half-up unless the entity chose half-even."""

    HALF_UP = "half_up"
    HALF_EVEN = "half_even"

    def round(self, raw: Decimal, cur: Currency) -> Money:
        """The one rounding of a raw amount to money. An amount beyond ``MAX_AMOUNT_MINOR`` minor units (e.g.
        usage sent by mistake in absurd quantities) is an error, not an overflow where it is stored."""
        mode = ROUND_HALF_UP if self is RoundingPolicy.HALF_UP else ROUND_HALF_EVEN
        try:
            rounded = raw.quantize(cur.quantum, rounding=mode)
        except InvalidOperation:  # more digits than the context holds: far out of range
            rounded = None
        limit = _LIMITS.get(cur.minor_units)
        if limit is None:
            limit = _LIMITS[cur.minor_units] = Decimal(MAX_AMOUNT_MINOR).scaleb(-cur.minor_units)
        if rounded is None or not -limit <= rounded <= limit:
            raise ValidationError(
                "amount_out_of_range",
                f"An amount of {raw:.6E} {cur.code} is beyond what Remit can bill (at most {limit:f} {cur.code}).",
                "amount",
            )
        return Money(rounded, cur)

    def round_minor(self, raw: Decimal, cur: Currency) -> int:
        return self.round(raw, cur).minor

    def round_exact(self, raw: Fraction, cur: Currency) -> int:
        """``round_minor`` of an exact fraction, for an amount with no finite decimal expansion (a usage line's
        overage on included units prorated by 20/30): rounded once from the fraction itself, so that one that comes
        to a half (0.005) is a half, not 0.00499… as a decimal cut to some digits would make it."""
        scaled = abs(raw) * 10**cur.minor_units
        whole, rest = divmod(scaled.numerator, scaled.denominator)
        twice = 2 * rest
        half_goes_up = self is RoundingPolicy.HALF_UP or whole % 2 == 1
        if twice > scaled.denominator or (twice == scaled.denominator and half_goes_up):
            whole += 1
        return self.round_minor(Decimal(-whole if raw < 0 else whole).scaleb(-cur.minor_units), cur)


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: Currency

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal):
            raise TypeError("Money.amount must be a Decimal")
        if self.amount != self.amount.quantize(self.currency.quantum):
            raise ValidationError(
                "too_many_decimals",
                f"{self.amount} has more decimals than {self.currency.code} allows ({self.currency.minor_units}).",
                "amount",
            )

    @classmethod
    def of(cls, amount: object, code: str | Currency, field: str = "amount") -> Money:
        cur = code if isinstance(code, Currency) else currency(code)
        value = to_decimal(amount, field)
        try:
            quantized = value.quantize(cur.quantum)
        except InvalidOperation:
            raise ValidationError("invalid_number", f"{amount!r} is too large.", field) from None
        if quantized != value:
            raise ValidationError(
                "too_many_decimals",
                f"{amount} has more decimals than {cur.code} allows ({cur.minor_units}).",
                field,
            )
        return cls(quantized, cur)

    @classmethod
    def from_minor(cls, minor: int, code: str | Currency) -> Money:
        cur = code if isinstance(code, Currency) else currency(code)
        return cls(Decimal(minor).scaleb(-cur.minor_units).quantize(cur.quantum), cur)

    @classmethod
    def zero(cls, code: str | Currency) -> Money:
        return cls.from_minor(0, code)

    @property
    def minor(self) -> int:
        return int(self.amount.scaleb(self.currency.minor_units))

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise ValidationError(
                "currency_mismatch",
                f"Cannot combine {self.currency.code} with {other.currency.code}.",
                "currency",
            )

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def is_zero(self) -> bool:
        return self.amount == 0

    def allocate(self, weights: Sequence[Decimal | int]) -> list[Money]:
        return [Money.from_minor(m, self.currency) for m in allocate(self.minor, weights)]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency.code}"


def bounded(value: object, field: str) -> Decimal:
    """An exact number a user gives (a price's setting, a unit price, a quantity), refused (``invalid_number``)
    from 10^15 on: nothing larger could ever be billed, and a number such as 1e999999999 would overflow while it is
    read, or take minutes to turn into a count or to be written out in full."""
    number = to_decimal(value, field)
    if number and number.adjusted() >= MAX_WHOLE_DIGITS:
        raise ValidationError(
            "invalid_number", f"{number:.3E} is too large: at most {MAX_WHOLE_DIGITS} digits before the point.", field
        )
    return number


def decimals(number: Decimal) -> int:
    """How many decimals a finite number has, trailing zeros not counted (``1.50`` has 1, ``1E+3`` none), worked
    out from its digits: ``normalize()`` would overflow on 1E+999999999 and turn 1E-999999999 into 0."""
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int), "finite numbers only"
    if not any(digits):
        return 0
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + trailing))


def parse_rate(value: object, field: str = "unit_price") -> Decimal:
    """A unit price or factor: exact, at most 15 digits before the point and 9 decimals. Kept as Decimal, rounded
    only when it becomes money."""
    result = bounded(value, field)
    if decimals(result) > RATE_MAX_DECIMALS:
        raise ValidationError("too_many_decimals", f"{value} has more than {RATE_MAX_DECIMALS} decimals.", field)
    return result


def allocate(total_minor: int, weights: Sequence[Decimal | int]) -> list[int]:
    """Split ``total_minor`` in proportion to ``weights`` by the largest-remainder method.

    The parts always sum to ``total_minor``. Ties go to the earlier part, so the result is deterministic.
    Negative totals are split like positive ones, with the sign restored afterwards. Weights must be >= 0; if
    they are all zero the split is equal.
    """
    if not weights:
        if total_minor != 0:
            raise ValueError("cannot allocate a non-zero amount over no parts")
        return []
    # Exact shares (fractions, not 28-digit decimals): the remainders of tied shares are equal, so ties do go to
    # the earlier part (in decimals, 500 split over 3500, 80 and 2420 gave the later 201.666... the unit before the
    # earlier 6.666..., whose rounded remainder had more digits).
    ws = [Fraction(w) for w in weights]
    if any(w < 0 for w in ws):
        raise ValueError("allocation weights must not be negative")
    total_weight = sum(ws, Fraction(0))
    if total_weight == 0:
        ws = [Fraction(1)] * len(ws)
        total_weight = Fraction(len(ws))
    sign = -1 if total_minor < 0 else 1
    magnitude = abs(total_minor)
    exact = [magnitude * w / total_weight for w in ws]
    floors = [int(e) for e in exact]  # exact >= 0, so int() is floor
    remainder = magnitude - sum(floors)
    order = sorted(range(len(ws)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:remainder]:
        floors[i] += 1
    parts = [sign * f for f in floors]
    assert sum(parts) == total_minor, "allocation must sum to the whole"
    return parts
