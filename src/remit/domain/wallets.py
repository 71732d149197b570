"""Prepaid credits: the order grants are consumed in, and exact conversions between credits and money. Pure.

A wallet's credits are worth ``rate`` of its currency each (rate 1: the credits are money). A grant's value in
money is rounded once, when it is granted (a named rounding point); from then on invoices consume *money* from the
grant, in integer minor units, and the credits that go with it are split off the grant's remaining credits by
largest remainder, so that the credits consumed plus the credits remaining always equal the credits granted, and
the last consumption of a grant takes exactly what is left of both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from decimal import Context, Decimal
from zoneinfo import ZoneInfo

from remit.domain.errors import ValidationError
from remit.domain.money import MAX_AMOUNT_MINOR, Currency, RoundingPolicy, allocate, decimals, to_decimal
from remit.domain.subscriptions.periods import Interval, add_interval

CREDIT_DECIMALS = 9  # like rates: a credit can be 0.000000001
_CREDIT_QUANTUM = Decimal(1).scaleb(-CREDIT_DECIMALS)
MAX_CREDITS = Decimal(10) ** 12
MAX_VALUE_MINOR = MAX_AMOUNT_MINOR  # what one grant may be worth, in minor units: far from BIGINT's limits


def parse_credits(value: object, field: str = "credits", *, allow_zero: bool = False) -> Decimal:
    """A number of credits: exact, positive (or zero if allowed), at most 9 decimals and 10^12."""
    result = to_decimal(value, field)
    if decimals(result) > CREDIT_DECIMALS:  # counted from the digits: normalize() overflows on 1e999999999
        raise ValidationError("too_many_decimals", f"Credits have at most {CREDIT_DECIMALS} decimals.", field)
    if result < 0 or (result == 0 and not allow_zero):
        raise ValidationError("invalid_amount", "Credits must be above zero.", field)
    if result >= MAX_CREDITS:
        raise ValidationError("amount_too_large", "At most 999,999,999,999 credits at a time.", field)
    return result.normalize() if result else Decimal(0)


def parse_wallet_rate(value: object, field: str = "rate") -> Decimal:
    """Money per credit: positive, at most 9 decimals."""
    result = to_decimal(value, field)
    if decimals(result) > CREDIT_DECIMALS:
        raise ValidationError("too_many_decimals", f"A rate has at most {CREDIT_DECIMALS} decimals.", field)
    if result <= 0:
        raise ValidationError("invalid_rate", "A wallet's rate (money per credit) must be above zero.", field)
    if result >= MAX_CREDITS:
        raise ValidationError("invalid_rate", "A wallet's rate (money per credit) is below 10^12.", field)
    return result.normalize()


_EXACT = Context(prec=60)  # credits × rate: at most 42 digits


def credits_value_minor(credits: Decimal, rate: Decimal, policy: RoundingPolicy, cur: Currency) -> int:
    """What credits are worth, in minor units: the one rounding point of a grant. The product is exact (credits and
    rate have up to 21 digits each: the default context's 28 would round it once before the policy does)."""
    raw = _EXACT.multiply(credits, rate)
    if raw > Decimal(MAX_VALUE_MINOR).scaleb(-cur.minor_units):  # checked before rounding: quantize has limits
        raise ValidationError("amount_too_large", "A grant can be worth at most 10^15 minor units.", "credits")
    minor = policy.round_minor(raw, cur)
    if minor <= 0:
        raise ValidationError(
            "amount_too_small", f"These credits are worth less than one minor unit of {cur.code}.", "credits"
        )
    return minor


@dataclass(frozen=True, slots=True)
class GrantBalance:
    """What remains of one grant, and what decides its place in the consumption order."""

    grant_id: str
    wallet_id: str
    priority: int
    granted_at: datetime
    expires_at: datetime | None
    remaining_credits: Decimal
    remaining_minor: int

    def usable_at(self, at: datetime) -> bool:
        return self.remaining_minor > 0 and (self.expires_at is None or self.expires_at > at)


@dataclass(frozen=True, slots=True)
class Consumption:
    grant_id: str
    wallet_id: str
    amount_minor: int
    credits: Decimal


def consumption_order(grants: Sequence[GrantBalance]) -> list[GrantBalance]:
    """Highest-priority wallet first (lowest number), then the grant that expires first (never: last), then the
    oldest; the id breaks the last ties, so the order is total and repeatable."""
    return sorted(
        grants,
        key=lambda g: (
            g.priority,
            g.expires_at is None,
            g.expires_at or g.granted_at,
            g.granted_at,
            g.grant_id,
        ),
    )


def split_credits(remaining_credits: Decimal, remaining_minor: int, take_minor: int) -> Decimal:
    """The credits that go with ``take_minor`` of a grant's remaining money, by largest remainder over the
    credits' smallest unit: taking everything takes every credit; the parts never go negative."""
    if not 0 <= take_minor <= remaining_minor:
        raise ValueError("cannot take more than remains")
    if take_minor == remaining_minor:
        return remaining_credits
    units = int(remaining_credits.scaleb(CREDIT_DECIMALS))
    return _credits(_largest_remainder_first(units, take_minor, remaining_minor))


def _largest_remainder_first(units: int, weight: int, total_weight: int) -> int:
    """The first part of ``units`` split by ``[weight, total_weight - weight]`` with the largest-remainder method
    (as ``money.allocate``, ties to the first part), in integers: units × weight can pass the 28 digits of
    Decimal arithmetic, and must stay exact."""
    first, first_rem = divmod(units * weight, total_weight)
    second, second_rem = divmod(units * (total_weight - weight), total_weight)
    if units - first - second and first_rem >= second_rem:  # one unit left over: to the larger remainder
        first += 1
    assert 0 <= first <= units
    return first


def _credits(units: int) -> Decimal:
    return Decimal(units).scaleb(-CREDIT_DECIMALS).quantize(_CREDIT_QUANTUM).normalize() if units else Decimal(0)


def _take(grant: GrantBalance, take_minor: int) -> tuple[Consumption, GrantBalance]:
    """``take_minor`` of a grant's money, with the credits that go with it; and the grant after."""
    credits = split_credits(grant.remaining_credits, grant.remaining_minor, take_minor)
    left = replace(
        grant,
        remaining_minor=grant.remaining_minor - take_minor,
        remaining_credits=(grant.remaining_credits - credits).normalize(),
    )
    return Consumption(grant.grant_id, grant.wallet_id, take_minor, credits), left


def consume(
    grants: Sequence[GrantBalance], amount_minor: int, at: datetime
) -> tuple[list[Consumption], list[GrantBalance]]:
    """Take up to ``amount_minor`` from the grants usable at ``at``, in consumption order.

    Returns what was taken from each grant, and every grant as it is afterwards (in the order given)."""
    if amount_minor < 0:
        raise ValueError("cannot consume a negative amount")
    left = amount_minor
    after = {g.grant_id: g for g in grants}
    taken: list[Consumption] = []
    for grant in consumption_order([g for g in grants if g.usable_at(at)]):
        if left == 0:
            break
        take = min(left, grant.remaining_minor)
        part, after[grant.grant_id] = _take(grant, take)
        taken.append(part)
        left -= take
    return taken, [after[g.grant_id] for g in grants]


# --- what a wallet may pay ------------------------------------------------------------------------------------------
#
# A wallet may be limited to some of an invoice's fees: fees of some types (fixed fees, usage, minimum-commitment
# true-ups, one-off charges), of some meters, or of some prices; a fee that matches any of them is eligible. What is
# still due after the customer's balance is shared among the invoice's fees in proportion to their net amounts
# (largest remainder, so the shares sum to it exactly), and a limited wallet's credits pay at most the shares of
# its eligible fees that are still unpaid. Wallets with no limit pay any share: with none limited, consumption is
# exactly ``consume``.

FEE_TYPES = ("fixed", "usage", "commitment", "one_off")
_FEE_TYPE_OF_KIND = {
    "subscription": "fixed",
    "proration": "fixed",
    "usage": "usage",
    "usage_correction": "usage",
    "usage_threshold": "usage",
    "usage_remainder": "usage",
    "true_up": "commitment",
    "one_off": "one_off",
}


@dataclass(frozen=True, slots=True, order=True)
class Fee:
    """An invoice's lines of one kind of fee, netted: a proration credit nets against its price's fee."""

    fee_type: str
    meter: str
    price_id: str


def fee_of(kind: str, price_id: str | None, meter: str | None) -> Fee:
    """The fee an invoice line belongs to, by its kind, price and (for usage) meter."""
    return Fee(_FEE_TYPE_OF_KIND.get(kind, "one_off"), meter or "", price_id or "")


@dataclass(frozen=True, slots=True)
class WalletScope:
    """The fees a wallet may pay; empty: every fee."""

    fee_types: frozenset[str] = frozenset()
    meters: frozenset[str] = frozenset()
    prices: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, value: object, field: str = "applies_to") -> WalletScope | None:
        """``{"fee_types": [...], "meters": [...], "prices": [...]}`` (each optional); None or nothing listed: no
        limit. Meters and prices are checked to exist by the caller."""
        if value is None:
            return None
        if not isinstance(value, Mapping) or set(value) - {"fee_types", "meters", "prices"}:
            raise ValidationError("invalid_value", "applies_to takes fee_types, meters and prices, each a list.", field)
        lists: dict[str, frozenset[str]] = {}
        for name in ("fee_types", "meters", "prices"):
            items = value.get(name) or []
            if not isinstance(items, list) or not all(isinstance(i, str) and 0 < len(i) <= 100 for i in items):
                raise ValidationError("invalid_value", f"applies_to.{name} is a list of names.", f"{field}.{name}")
            if len(items) > 50:
                raise ValidationError("invalid_value", f"applies_to.{name} lists at most 50.", f"{field}.{name}")
            lists[name] = frozenset(items)
        unknown = sorted(lists["fee_types"] - set(FEE_TYPES))
        if unknown:
            raise ValidationError(
                "invalid_value",
                f"{unknown[0]!r} is not a fee type; use {', '.join(FEE_TYPES)}.",
                f"{field}.fee_types",
            )
        scope = cls(lists["fee_types"], lists["meters"], lists["prices"])
        return None if scope.everything else scope

    @property
    def everything(self) -> bool:
        return not (self.fee_types or self.meters or self.prices)

    def covers(self, fee: Fee) -> bool:
        return (
            self.everything or fee.fee_type in self.fee_types or fee.meter in self.meters or fee.price_id in self.prices
        )

    def public(self) -> dict[str, list[str]]:
        return {"fee_types": sorted(self.fee_types), "meters": sorted(self.meters), "prices": sorted(self.prices)}


def consume_scoped(
    grants: Sequence[GrantBalance],
    scopes: Mapping[str, WalletScope | None],
    fees: Iterable[tuple[Fee, int]],
    amount_minor: int,
    at: datetime,
) -> tuple[list[Consumption], list[GrantBalance]]:
    """``consume``, where a wallet with a scope (``scopes``, per wallet id) pays only eligible fees. ``fees``:
    the invoice's lines as (fee, net amount in minor units); ``amount_minor``: what is still due of the invoice,
    at most the sum of its positive fees."""
    if amount_minor < 0:
        raise ValueError("cannot consume a negative amount")
    usable = [g for g in grants if g.usable_at(at)]
    if all(scopes.get(g.wallet_id) is None for g in usable):
        return consume(grants, amount_minor, at)
    nets: dict[Fee, int] = {}
    for fee, amount in fees:
        nets[fee] = nets.get(fee, 0) + amount
    keys = sorted(k for k, v in nets.items() if v > 0)
    if amount_minor > sum(nets[k] for k in keys):
        raise ValueError("more is due than the invoice's fees")
    shares = dict(zip(keys, allocate(amount_minor, [nets[k] for k in keys]), strict=True)) if keys else {}
    after = {g.grant_id: g for g in grants}
    taken: list[Consumption] = []
    for grant in consumption_order(usable):
        scope = scopes.get(grant.wallet_id)
        eligible = [k for k in keys if shares[k] and (scope is None or scope.covers(k))]
        take = min(sum(shares[k] for k in eligible), grant.remaining_minor)
        if take == 0:
            continue
        part, after[grant.grant_id] = _take(grant, take)
        taken.append(part)
        left = take
        for k in eligible:
            paid = min(left, shares[k])
            shares[k] -= paid
            left -= paid
    return taken, [after[g.grant_id] for g in grants]


def below_threshold(balance_credits: Decimal, threshold: Decimal | None) -> bool:
    return threshold is not None and balance_credits < threshold


# --- recurring grants ----------------------------------------------------------------------------------------------
#
# A recurring grant gives the same credits on a schedule: its first day, then every interval after it (month-based
# intervals keep the first day's day of the month, clamped to shorter months: 31 Jan, 28 Feb, 31 Mar), up to an
# optional end day (excluded). Each occurrence is granted at the start of its day in the customer's time zone, or
# when the schedule was made if that is later (a schedule that starts today gives its first credits at once).


@dataclass(frozen=True, slots=True)
class Occurrence:
    index: int  # 0 for the first: what makes the occurrence's grant unique
    on: date  # the customer's local day it falls on
    at: datetime  # when it is granted (UTC)


def occurrence_on(starts_on: date, interval: Interval, index: int) -> date:
    """The day of the ``index``-th occurrence (0: the first)."""
    return add_interval(starts_on, interval, index)


def due_occurrences(
    starts_on: date,
    interval: Interval,
    next_index: int,
    ends_on: date | None,
    timezone: str,
    created_at: datetime,
    as_of: datetime,
) -> list[Occurrence]:
    """The occurrences from ``next_index`` on that are due by ``as_of``, in order: every one, when several fell
    due since the schedule was last looked at, each at its own time."""
    out: list[Occurrence] = []
    for occurrence in _occurrences(starts_on, interval, next_index, ends_on, timezone, created_at):
        if occurrence.at > as_of:
            break
        out.append(occurrence)
    return out


def first_occurrence_after(
    starts_on: date,
    interval: Interval,
    next_index: int,
    ends_on: date | None,
    timezone: str,
    created_at: datetime,
    after: datetime,
) -> Occurrence | None:
    """The first occurrence from ``next_index`` on that falls due after ``after``; None once the schedule ends."""
    for occurrence in _occurrences(starts_on, interval, next_index, ends_on, timezone, created_at):
        if occurrence.at > after:
            return occurrence
    return None


def _occurrences(
    starts_on: date, interval: Interval, next_index: int, ends_on: date | None, timezone: str, created_at: datetime
) -> Iterator[Occurrence]:
    """The occurrences from ``next_index`` on, in order, up to the end day (excluded; none: without end)."""
    zone = ZoneInfo(timezone)
    index = next_index
    while True:
        on = occurrence_on(starts_on, interval, index)
        if ends_on is not None and on >= ends_on:
            return
        yield Occurrence(index, on, max(datetime.combine(on, time(0), zone).astimezone(UTC), created_at))
        index += 1
