"""Meters and their aggregations: how raw usage events become a billable quantity for a period.

These are the reference semantics, pure and exact. The bill run computes the same figures set-wise in SQL; tests
hold the two to each other.

| aggregation | quantity for a period |
|---|---|
| count | the number of matching events |
| sum | the sum of a numeric property |
| max | the largest value of a numeric property (0 with no events) |
| unique_count | the number of distinct values of a property |
| latest | the value of the property on the latest event (0 with no events); with ``carry_over``, the latest event
  before the period's end, so a period without events bills the last value reported before it (a level reported
  only when it changes) |
| weighted_sum | a level held over time, prorated by time: each event changes the level by its value; the quantity
  is the time-weighted average level over the period (e.g. GB stored, seats held), starting from the level the
  previous period ended with. Given the customer's time zone, a period of whole local days weighs every day the
  same, as fees are prorated: a day the clocks change (23 or 25 hours, 23.5 or 24.5 on Lord Howe Island) counts
  as one day, its hours each a share of it |
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal, InvalidOperation, localcontext
from enum import Enum
from fractions import Fraction
from functools import lru_cache
from zoneinfo import ZoneInfo

from remit.domain.errors import ValidationError
from remit.domain.rating.expressions import Formula


class Aggregation(str, Enum):
    COUNT = "count"
    SUM = "sum"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"
    WEIGHTED_SUM = "weighted_sum"

    @property
    def needs_field(self) -> bool:
        return self is not Aggregation.COUNT

    @property
    def numeric(self) -> bool:
        return self in _NUMERIC


_NUMERIC = frozenset({Aggregation.SUM, Aggregation.MAX, Aggregation.LATEST, Aggregation.WEIGHTED_SUM})


class Rounding(str, Enum):
    """How a meter rounds the quantity it measured in a period, before included units and pricing: e.g. storage
    billed in whole GB (``ceil``, 0 decimals), seconds of compute in whole minutes (an expression ``seconds / 60``
    and ``ceil``)."""

    CEIL = "ceil"  # up, towards +infinity
    FLOOR = "floor"  # down, towards -infinity
    ROUND = "round"  # to the nearest, halves away from zero

    @property
    def mode(self) -> str:
        return _MODES[self]


_MODES = {Rounding.CEIL: ROUND_CEILING, Rounding.FLOOR: ROUND_FLOOR, Rounding.ROUND: ROUND_HALF_UP}
MIN_PRECISION, MAX_PRECISION = -9, 12
_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class UsageEvent:
    timestamp: datetime
    properties: Mapping[str, object]
    transaction_id: str = ""


GroupKey = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Meter:
    code: str
    aggregation: Aggregation
    field: str | None = None
    filters: Mapping[str, tuple[str, ...]] = dataclass_field(default_factory=dict)  # property -> accepted values
    group_by: tuple[str, ...] = ()
    # A formula over the event's properties that gives its value, instead of one field: e.g. the cost of an
    # LLM call from its token counts. Evaluated once, when the event is received.
    expression: Formula | None = None
    # The quantity measured in a period, rounded to ``precision`` decimals (negative: to tens, hundreds...).
    rounding: Rounding | None = None
    precision: int = 0
    active: bool = True  # a deactivated meter takes no new events; the events it has are still billed
    # latest only: a period without events of a group takes the group's last value from before it.
    carry_over: bool = False

    def rounded(self, quantity: Decimal) -> Decimal:
        """The quantity as billed: rounded as the meter says, or as measured."""
        if self.rounding is None:
            return quantity
        # As many digits as the result needs (the default context's 28 would refuse a large quantity).
        wide = Context(prec=max(28, quantity.adjusted() + max(self.precision, 0) + 3), Emax=999_999, Emin=-999_999)
        out = quantity.quantize(Decimal(1).scaleb(-self.precision), self.rounding.mode, wide)
        # Written as every quantity is: a whole number as one (1300, not 1.3E+3), anything else without trailing
        # zeros (1415.4, not 1415.400, which live usage and the line's quantity showed beside its description's).
        out = out.quantize(_ONE, context=wide) if out == out.to_integral_value() else out.normalize(wide)
        return out if out else abs(out)  # 0, not -0

    def __post_init__(self) -> None:
        if not MIN_PRECISION <= self.precision <= MAX_PRECISION:
            raise ValidationError(
                "invalid_rounding_precision",
                f"rounding_precision is a whole number from {MIN_PRECISION} to {MAX_PRECISION}.",
                "rounding_precision",
            )
        if self.carry_over and self.aggregation is not Aggregation.LATEST:
            raise ValidationError(
                "invalid_carry_over",
                "Only a latest meter carries its last value over to the next periods.",
                "carry_over",
            )
        if self.rounding is None and self.precision:
            raise ValidationError(
                "missing_rounding", "rounding_precision needs rounding (ceil, floor or round).", "rounding"
            )
        if self.expression is not None:
            if self.field:
                raise ValidationError("invalid_field", "Give a field or an expression, not both.", "field")
            if not self.aggregation.numeric:
                raise ValidationError(
                    "invalid_expression",
                    f"A {self.aggregation.value} meter takes no expression; sum, max, latest and weighted_sum do.",
                    "expression",
                )
            return
        if self.aggregation.needs_field and not self.field:
            raise ValidationError(
                "missing_field", f"A {self.aggregation.value} meter needs a field to aggregate.", "field"
            )
        if not self.aggregation.needs_field and self.field:
            raise ValidationError("invalid_field", "A count meter counts events; it takes no field.", "field")

    def value_of(self, event: UsageEvent) -> Decimal:
        """The event's numeric value: its field, or the meter's formula over its properties."""
        if self.expression is not None:
            return self.expression.evaluate(event.properties, "properties")
        assert self.field is not None
        return numeric_value(event.properties[self.field], f"properties.{self.field}")

    def check(self, event: UsageEvent) -> None:
        """Refuse an event this meter could never bill: a missing or non-numeric value, a missing dimension."""
        if self.expression is not None:
            self.value_of(event)
        if self.field is not None:
            if self.field not in event.properties or (
                event.properties[self.field] is None and not self.aggregation.numeric
            ):
                raise ValidationError(
                    "missing_property", f"Meter {self.code} needs property {self.field!r}.", f"properties.{self.field}"
                )
            if self.aggregation.numeric:
                numeric_value(event.properties[self.field], f"properties.{self.field}")
        for name in (*self.filters, *self.group_by):
            if event.properties.get(name) is None:
                raise ValidationError(
                    "missing_property", f"Meter {self.code} needs property {name!r}.", f"properties.{name}"
                )

    def checked_value(self, event: UsageEvent) -> Decimal | None:
        """``check`` and ``value_of`` in one pass (the value is parsed once): the event's value for a numeric
        aggregation, None for the others."""
        props = event.properties
        value: Decimal | None = None
        if self.expression is not None:
            value = self.expression.evaluate(props, "properties")
        elif self.field is not None:
            # Missing; or null, where the value is text (a numeric null is not_numeric, below).
            if self.field not in props or (props[self.field] is None and self.aggregation not in _NUMERIC):
                raise ValidationError(
                    "missing_property", f"Meter {self.code} needs property {self.field!r}.", f"properties.{self.field}"
                )
            if self.aggregation in _NUMERIC:
                value = numeric_value(props[self.field], f"properties.{self.field}")
        for names in (self.filters, self.group_by):
            for name in names:
                if props.get(name) is None:  # missing, or null
                    raise ValidationError(
                        "missing_property", f"Meter {self.code} needs property {name!r}.", f"properties.{name}"
                    )
        return value

    def matches(self, event: UsageEvent) -> bool:
        props = event.properties
        return all(property_text(props.get(k), f"properties.{k}") in allowed for k, allowed in self.filters.items())

    def group_of(self, event: UsageEvent) -> GroupKey:
        props = event.properties
        return tuple(
            [
                value if type(value := props.get(name)) is str else property_text(value, f"properties.{name}") or ""
                for name in self.group_by
            ]
        )

    def dimension_of(self, event: UsageEvent) -> str | None:
        """What a unique count counts of the event: its field's ``property_text``."""
        assert self.field is not None
        return property_text(event.properties.get(self.field), f"properties.{self.field}")


MAX_TEXT_DIGITS = 200  # a number's text for a filter, group or unique count: at most this many digits


def property_text(raw: object, field_name: str) -> str | None:
    """A property's value as filters, group-by dimensions and unique counts compare it: a string as it is; a
    boolean as JSON writes it (``true``, ``false``); a number by its value, in plain decimal notation, without
    trailing zeros after a decimal point (``1``, ``1.0`` and ``1e0`` are ``1``; ``2.50`` is ``2.5``); None for null
    (a missing value). An object or a list has no such text: ``invalid_value``. The one rule of ingestion and of
    these reference semantics, so that they agree."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        if raw.bit_length() > 3 * MAX_TEXT_DIGITS:  # more digits than a value holds; str() of it may be slow
            raise _too_long(field_name)
        return str(raw)
    if isinstance(raw, float | Decimal):
        return _number_text(Decimal(repr(raw)) if isinstance(raw, float) else raw, field_name)
    raise ValidationError(
        "invalid_value",
        f"{field_name} must be text, a number or a boolean to be filtered, grouped or counted by, not an object or "
        "a list.",
        field_name,
    )


def _number_text(number: Decimal, field_name: str) -> str:
    exponent = number.as_tuple().exponent
    if not isinstance(exponent, int):  # NaN, Infinity
        raise ValidationError("invalid_value", f"{field_name} must be a finite number.", field_name)
    # Checked before it is written out: 1e100000000 would be a hundred million digits.
    if not -MAX_TEXT_DIGITS < number.adjusted() < MAX_TEXT_DIGITS or exponent < -MAX_TEXT_DIGITS:
        raise _too_long(field_name)
    if number == 0:
        return "0"
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _too_long(field_name: str) -> ValidationError:
    return ValidationError("invalid_value", f"{field_name} has too many digits.", field_name)


def numeric_value(raw: object, field_name: str = "value") -> Decimal:
    if isinstance(raw, bool):
        raise ValidationError("not_numeric", f"{field_name} must be a number, not {raw!r}.", field_name)
    if isinstance(raw, Decimal):
        value = raw
    elif isinstance(raw, int):
        value = Decimal(raw)
    elif isinstance(raw, float):
        value = Decimal(repr(raw))  # a JSON number: exactly the digits the client sent
    elif isinstance(raw, str):
        try:
            value = Decimal(raw.strip())
        except InvalidOperation:
            raise ValidationError("not_numeric", f"{field_name} must be a number, not {raw!r}.", field_name) from None
    else:
        raise ValidationError("not_numeric", f"{field_name} must be a number.", field_name)
    if not value.is_finite():
        raise ValidationError("not_numeric", f"{field_name} must be a finite number.", field_name)
    return value


@dataclass(frozen=True, slots=True)
class Aggregate:
    quantity: Decimal
    events: int
    ending_level: Decimal = Decimal(0)  # weighted_sum: the level carried into the next period
    # weighted_sum: the average level exactly (``quantity`` is it as a decimal, which may not end: 18/26), so that
    # a share of it (a window of a period) is computed exactly before it is written out or rounded
    exact: Fraction | None = None


# Wide enough that levels, their sums and level × seconds (values of up to 64 characters) stay exact.
WIDE = Context(prec=200, Emax=999_999, Emin=-999_999)


def quantity_of(value: Decimal) -> Decimal:
    """A measured quantity as every path writes it: a whole number exactly, anything else to 28 significant
    digits (trailing zeros dropped), from the exact sum, maximum or value. One rule, so that SQLite, PostgreSQL and
    this reference agree however many digits the events carried."""
    if value == value.to_integral_value():
        return Decimal(int(value))
    return value.normalize()


def decimal_of(value: Fraction) -> Decimal:
    """A fraction as a decimal: exactly when it has a finite decimal expansion of at most 28 significant digits (3,
    2.5, 1/8), otherwise to the default context's 28 significant digits; written as every measured quantity is
    (``quantity_of``: trailing zeros dropped, so 8/21 is 0.380952380952380952380952381, not ...3810)."""
    den = value.denominator
    for factor in (2, 5):
        while den % factor == 0:
            den //= factor
    if den == 1:
        with localcontext(WIDE):
            exact = Decimal(value.numerator) / Decimal(value.denominator)
        if len(exact.as_tuple().digits) <= 28:
            return quantity_of(exact)
    return quantity_of(Decimal(value.numerator) / Decimal(value.denominator))


def aggregate(
    meter: Meter,
    events: Iterable[UsageEvent],
    period_start: datetime,
    period_end: datetime,
    starting_levels: Mapping[GroupKey, Decimal] | None = None,
    timezone: str | None = None,
) -> dict[GroupKey, Aggregate]:
    """Aggregate the events inside [period_start, period_end), per group. A latest meter that carries over
    starts from the group's last event before the period (counted as no event of the period). ``timezone``: the
    customer's, for a time-weighted sum over whole local days (each day weighs the same, see ``_weighted``)."""
    groups: dict[GroupKey, list[UsageEvent]] = defaultdict(list)
    carried: dict[GroupKey, UsageEvent] = {}
    for event in events:
        if period_start <= event.timestamp < period_end and meter.matches(event):
            groups[meter.group_of(event)].append(event)
        elif meter.carry_over and event.timestamp < period_start and meter.matches(event):
            group = meter.group_of(event)
            last = carried.get(group)
            if last is None or (event.timestamp, event.transaction_id) > (last.timestamp, last.transaction_id):
                carried[group] = event
    if carried:
        return {key: _latest(meter, groups.get(key, []), carried.get(key)) for key in sorted({*groups, *carried})}
    for key in starting_levels or {}:
        groups.setdefault(key, [])
    return {
        key: _one(meter, evs, period_start, period_end, (starting_levels or {}).get(key, Decimal(0)), timezone)
        for key, evs in groups.items()
    }


def _one(
    meter: Meter, events: list[UsageEvent], start: datetime, end: datetime, level: Decimal, timezone: str | None
) -> Aggregate:
    agg = meter.aggregation
    if agg is Aggregation.COUNT:
        return Aggregate(Decimal(len(events)), len(events))
    if agg is Aggregation.UNIQUE_COUNT:
        return Aggregate(Decimal(len({meter.dimension_of(e) for e in events})), len(events))
    values = [meter.value_of(e) for e in events]
    if agg is Aggregation.SUM:
        with localcontext(WIDE):
            total = sum(values, Decimal(0))
        return Aggregate(quantity_of(total), len(events))
    if agg is Aggregation.MAX:
        return Aggregate(quantity_of(max(values, default=Decimal(0))), len(events))
    if agg is Aggregation.LATEST:
        return _latest(meter, events, None)
    return _weighted(events, values, start, end, level, timezone)


def _latest(meter: Meter, events: list[UsageEvent], carried: UsageEvent | None) -> Aggregate:
    """The value of the latest of the period's events, else of the one carried in; the period's events counted."""
    if events:
        last = max(events, key=lambda e: (e.timestamp, e.transaction_id))
        return Aggregate(quantity_of(meter.value_of(last)), len(events))
    return Aggregate(quantity_of(meter.value_of(carried)) if carried else Decimal(0), 0)


def _weighted(
    events: list[UsageEvent],
    values: list[Decimal],
    start: datetime,
    end: datetime,
    level: Decimal,
    timezone: str | None = None,
) -> Aggregate:
    days = _uneven_days(timezone, start, end) if timezone is not None else None
    if days is not None:
        return _weighted_by_days(events, values, days, level)
    total_s = _seconds(end - start)
    area = Decimal(0)
    at = start
    with localcontext(WIDE):  # level × seconds and their sum, exactly
        ordered = sorted(zip(events, values, strict=True), key=lambda p: (p[0].timestamp, p[0].transaction_id))
        for event, delta in ordered:
            area += level * _seconds(event.timestamp - at)
            level += delta
            at = event.timestamp
        area += level * _seconds(end - at)
    if not total_s:
        return Aggregate(Decimal(0), len(events), level, Fraction(0))
    average = Fraction(area) / Fraction(total_s)
    return Aggregate(decimal_of(average), len(events), level, average)


def _weighted_by_days(
    events: list[UsageEvent], values: list[Decimal], days: tuple[tuple[datetime, ...], int], level: Decimal
) -> Aggregate:
    """The time-weighted average over whole local days, each day weighing the same (as fees are prorated): time
    is counted in days, an instant inside a day being that share of the day's real length. Positions are whole
    numbers of a unit that divides every day's length (``_uneven_days``), so the sum stays exact in decimals."""
    starts, unit = days

    def position(at: datetime) -> int:
        i = min(bisect_right(starts, at) - 1, len(starts) - 2)
        return i * unit + _microseconds(at - starts[i]) * (unit // _microseconds(starts[i + 1] - starts[i]))

    area = Decimal(0)
    at = 0
    ordered = sorted(zip(events, values, strict=True), key=lambda p: (p[0].timestamp, p[0].transaction_id))
    with localcontext(WIDE):  # level × units and their sum, exactly
        for event, delta in ordered:
            moved = position(event.timestamp)
            area += level * (moved - at)
            level += delta
            at = moved
        area += level * ((len(starts) - 1) * unit - at)
    average = Fraction(area) / ((len(starts) - 1) * unit)
    return Aggregate(decimal_of(average), len(events), level, average)


@lru_cache(maxsize=4096)
def _uneven_days(timezone: str, start: datetime, end: datetime) -> tuple[tuple[datetime, ...], int] | None:
    """The instants the local days of ``[start, end)`` begin at (and ``end``), and a day's weight in units that
    divide into each day's length in microseconds (their least common multiple), when ``start`` and ``end`` are
    local midnights and a day between them is not 24 hours long; else None (counting by seconds is the same)."""
    zone = ZoneInfo(timezone)

    def midnight(on: date) -> datetime:
        return datetime.combine(on, time(0), zone).astimezone(UTC)

    first, last = start.astimezone(zone).date(), end.astimezone(zone).date()
    if last <= first or midnight(first) != start or midnight(last) != end:
        return None
    starts = tuple(midnight(first + timedelta(days=k)) for k in range((last - first).days + 1))
    lengths = {_microseconds(b - a) for a, b in zip(starts, starts[1:], strict=False)}
    if lengths == {_microseconds(timedelta(days=1))}:
        return None
    return starts, math.lcm(*lengths)


def _microseconds(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _seconds(delta: timedelta) -> Decimal:
    return Decimal(delta.days * 86_400 + delta.seconds) + Decimal(delta.microseconds) / 1_000_000
