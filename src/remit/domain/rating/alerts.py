"""Usage alerts: what an alert watches, its thresholds, and which of them a measured value crosses.

An alert belongs to a customer (optionally one subscription) and watches, per billing period, either a meter's
quantity (``usage``; optionally of one group of the meter's dimensions) or the amount the period's usage comes to
(``spend``). Its thresholds are ascending; each fires once per subscription period. Pure: the service layer
measures, this module decides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from enum import Enum
from typing import NamedTuple

from remit.domain.errors import ValidationError
from remit.domain.money import Currency, Money, decimals, to_decimal
from remit.domain.rating.aggregations import Aggregation, Meter

MAX_THRESHOLDS = 20


class AlertKind(str, Enum):
    USAGE = "usage"  # a meter's quantity in the current period
    SPEND = "spend"  # the current period's usage amount, in the subscription's currency


def parse_kind(raw: object, field: str = "kind") -> AlertKind:
    try:
        return AlertKind(raw)
    except ValueError:
        raise ValidationError("invalid_choice", f"{raw!r} is not an alert kind: usage, spend.", field) from None


def parse_thresholds(raw: object, kind: AlertKind, cur: Currency | None, field: str = "thresholds") -> list[Decimal]:
    """Validated thresholds, ascending and positive. A usage threshold is a quantity; a spend threshold an amount
    of money, returned in minor units (so both compare exactly with what is measured)."""
    if not isinstance(raw, list | tuple) or not raw:
        raise ValidationError("invalid_thresholds", "thresholds is a non-empty list, ascending.", field)
    if len(raw) > MAX_THRESHOLDS:
        raise ValidationError("invalid_thresholds", f"An alert has at most {MAX_THRESHOLDS} thresholds.", field)
    out: list[Decimal] = []
    for i, value in enumerate(raw):
        where = f"{field}[{i}]"
        if kind is AlertKind.SPEND:
            assert cur is not None
            number = Decimal(Money.of(value, cur, where).minor)
        else:
            number = to_decimal(value, where)
            if decimals(number) > 9:  # counted from the digits: normalize() overflows on 1e999999999
                raise ValidationError("invalid_number", "A threshold has at most 9 decimals.", where)
        if number <= 0:
            raise ValidationError("invalid_threshold", "Thresholds are above 0.", where)
        if number > Decimal("1e15"):
            raise ValidationError("invalid_threshold", "The threshold is too large.", where)
        if out and number <= out[-1]:
            raise ValidationError("thresholds_not_ascending", "Thresholds are listed in ascending order.", where)
        out.append(number)
    return out


def parse_group(raw: object, meter: Meter, field: str = "group") -> dict[str, str] | None:
    """The group a usage alert watches: some or all of the meter's dimensions, each with a value."""
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, Mapping):
        raise ValidationError("invalid_group", "group maps a dimension of the meter to a value.", field)
    out: dict[str, str] = {}
    for key, value in raw.items():
        if key not in meter.group_by:
            raise ValidationError(
                "unknown_dimension", f"Meter {meter.code!r} has no dimension {key!r}.", f"{field}.{key}"
            )
        if not isinstance(value, str) or not 1 <= len(value) <= 200:
            raise ValidationError("invalid_group", "A dimension's value is a string.", f"{field}.{key}")
        out[str(key)] = value
    return out


def canonical(threshold: Decimal) -> str:
    """The threshold's text in the trigger key: one spelling per number (``10`` and ``10.0`` are one threshold)."""
    return format(threshold.normalize(), "f")


def crossed(value: Decimal, thresholds: Sequence[Decimal], fired: Iterable[str]) -> list[Decimal]:
    """The thresholds ``value`` has reached that have not fired yet (in ``fired``, as canonical text), ascending."""
    done = set(fired)
    return [th for th in thresholds if value >= th and canonical(th) not in done]


def group_matches(group: Mapping[str, str], wanted: Mapping[str, str] | None) -> bool:
    return wanted is None or all(group.get(k) == v for k, v in wanted.items())


def combine(aggregation: Aggregation, quantities: Sequence[Decimal]) -> Decimal:
    """One quantity from several groups' quantities (an alert on some dimensions watches every group they
    match): the largest for ``max``, otherwise their sum (a value seen in two groups counts twice for
    ``unique_count``)."""
    if not quantities:
        return Decimal(0)
    if aggregation is Aggregation.MAX:
        return max(quantities)
    return sum(quantities, Decimal(0))


class LineQuantity(NamedTuple):
    """One usage line of a period as an alert reads it: its group, when its last window ends, its quantity."""

    group: Mapping[str, str]
    ends_on: date
    quantity: Decimal


def combine_lines(aggregation: Aggregation, lines: Sequence[LineQuantity]) -> Decimal:
    """The quantity a usage alert compares with its thresholds, from a period's usage lines of its meter.

    A plan change splits the period between two prices, one line per price and group; they measure one group
    over one period, so first they become one quantity: counts and sums add up (their windows do not overlap),
    and so do a time-weighted sum's lines (each is its window's level weighted by its share of the period); a
    ``latest`` meter takes the line of the latest window, ``max`` the largest. ``unique_count`` takes the largest
    too: the lines count distinct values per window and do not say which, so the period's distinct values are at
    least that many (a user seen under both prices is one user) and at most their sum; the lower bound never
    fires an alert that did not happen. Then the groups are combined as ``combine`` does.
    """
    per_group: dict[tuple[tuple[str, str], ...], list[LineQuantity]] = defaultdict(list)
    for line in lines:
        per_group[tuple(sorted(line.group.items()))].append(line)
    return combine(aggregation, [_one_group(aggregation, group_lines) for group_lines in per_group.values()])


def _one_group(aggregation: Aggregation, lines: Sequence[LineQuantity]) -> Decimal:
    if aggregation is Aggregation.LATEST:
        return max(lines, key=lambda line: line.ends_on).quantity
    if aggregation in (Aggregation.MAX, Aggregation.UNIQUE_COUNT):
        return max(line.quantity for line in lines)
    return sum((line.quantity for line in lines), Decimal(0))
