"""Subscription use cases. Every change is a dated event appended to the subscription's timeline; invoicing
reads the timeline (see domain/billing_events.py) and bills the difference."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Text, cast, insert, or_, select, update

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id
from remit.adapters.db.mappers import (
    coupon_from_row,
    items_to_json,
    load_prices,
    promotion_code_from_row,
    timeline_event_from_row,
)
from remit.domain.billing_events import ChangeKind, Item, TimelineEvent, ended_on, items_on, status_on
from remit.domain.errors import Conflict, NotFound, ValidationError
from remit.domain.lifecycle import SUBSCRIPTION_TRANSITIONS, SubscriptionStatus, transition
from remit.domain.money import currency
from remit.domain.subscriptions.periods import AnchorKind, Interval, billing_anchor, period_containing
from remit.service_layer import catalog
from remit.service_layer.accounts import customer_now, get_customer, local_date
from remit.service_layer.unit_of_work import UnitOfWork


def _today(uow: UnitOfWork, customer: Mapping[Any, Any]) -> date:
    result = local_date(customer_now(uow, customer), customer["timezone"])
    assert isinstance(result, date)
    return result


def _items_for(
    uow: UnitOfWork,
    customer: Mapping[Any, Any],
    plan_code: str,
    quantity: Decimal,
    version: int | None,
    add_ons: Sequence[Mapping[str, Any]],
) -> tuple[tuple[Item, ...], Interval, str]:
    """The items of a subscription to this plan, its billing interval, and the plan's id."""
    # The main price, and the version's other prices in the currency: usage prices and a minimum commitment.
    plan_id, price, beside = catalog.plan_prices(uow, plan_code, customer["currency"], version)
    items = [Item(price["id"], quantity)] + [Item(other, Decimal(1)) for other in beside]
    plan_prices = load_prices(uow.conn, [price["id"]])
    interval = plan_prices[price["id"]].interval
    assert interval is not None
    for i, add_on in enumerate(add_ons):
        field = f"add_ons[{i}]"
        found = load_prices(uow.conn, [str(add_on.get("price_id"))])
        if not found:
            raise NotFound("price", add_on.get("price_id"), f"{field}.price_id")
        p = next(iter(found.values()))
        if p.currency.code != customer["currency"]:
            raise ValidationError(
                "currency_mismatch",
                f"Add-on price {p.id} is in {p.currency.code}, the customer pays in {customer['currency']}.",
                f"{field}.price_id",
            )
        if not p.recurring or p.interval != interval:
            raise ValidationError(
                "interval_mismatch", "An add-on must recur on the plan's interval.", f"{field}.price_id"
            )
        items.append(Item(p.id, catalog.quantity(add_on.get("quantity", 1), f"{field}.quantity")))
    plan_items = len(items) - len(add_ons)
    _one_price_per_meter(uow, items, lambda i: f"add_ons[{i - plan_items}].price_id")
    return tuple(items), interval, plan_id


def _one_price_per_meter(uow: UnitOfWork, items: Sequence[Item], field_of: Callable[[int], str]) -> None:
    """Usage events name the customer, not a price: two items of a subscription billing one meter would bill each
    event twice (an add-on on the plan's meter, or a usage price given again). ``field_of``: the field of the
    item at a position, for the error."""
    prices = load_prices(uow.conn, [i.price_id for i in items])
    billed: dict[str, str] = {}
    for index, item in enumerate(items):
        price = prices.get(item.price_id)
        meter = price.meter if price is not None else None
        if meter is None:
            continue
        if meter in billed:
            raise Conflict(
                "meter_already_billed",
                f"Price {billed[meter]} of this subscription bills meter {meter} already; a second price on it "
                "would bill its events twice.",
                field_of(index),
            )
        billed[meter] = item.price_id


# Statements built once: a statement's cache key is computed once per statement object.
_INSERT_SUBSCRIPTION = insert(t.subscriptions).returning(*t.subscriptions.c)
_INSERT_EVENTS = insert(t.subscription_events).returning(*t.subscription_events.c, sort_by_parameter_order=True)


def create_subscription(
    uow: UnitOfWork,
    customer_id: str,
    plan_code: str,
    *,
    quantity: object = 1,
    plan_version: int | None = None,
    start_on: date | None = None,
    trial_days: int | None = None,
    anchor: str = "anniversary",
    anchor_day: int | None = None,
    add_ons: Sequence[Mapping[str, Any]] = (),
    coupon: str | None = None,
    promotion_code: str | None = None,
    phases: Sequence[Mapping[str, Any]] = (),
) -> str:
    """Start a subscription. ``phases`` schedule later changes: ``{"on": date, "plan": code, "quantity": n}``."""
    created = create_subscription_record(
        uow,
        customer_id,
        plan_code,
        quantity=quantity,
        plan_version=plan_version,
        start_on=start_on,
        trial_days=trial_days,
        anchor=anchor,
        anchor_day=anchor_day,
        add_ons=add_ons,
        coupon=coupon,
        promotion_code=promotion_code,
        phases=phases,
    )
    return str(created["id"])


def create_subscription_record(
    uow: UnitOfWork,
    customer_id: str,
    plan_code: str,
    *,
    quantity: object = 1,
    plan_version: int | None = None,
    start_on: date | None = None,
    trial_days: int | None = None,
    anchor: str = "anniversary",
    anchor_day: int | None = None,
    add_ons: Sequence[Mapping[str, Any]] = (),
    coupon: str | None = None,
    promotion_code: str | None = None,
    phases: Sequence[Mapping[str, Any]] = (),
    customer: Mapping[Any, Any] | None = None,
) -> dict[str, Any]:
    """``create_subscription``, answering what ``get_subscription`` would read back, from the rows as inserted
    (``INSERT ... RETURNING``) instead of three more queries. ``customer``: the customer's row when the caller has
    already locked and read it (``uow.locked_customer``)."""
    if customer is None:
        customer = uow.locked_customer(customer_id)
    if customer is None:
        raise NotFound("customer", customer_id, "customer_id")
    today = _today(uow, customer)
    start = start_on or today
    if start < today:
        raise ValidationError("date_in_past", "A subscription cannot start before today.", "start_on")
    qty = catalog.quantity(quantity)
    items, interval, plan_id = _items_for(uow, customer, plan_code, qty, plan_version, add_ons)
    if trial_days is not None and not 0 <= trial_days <= 730:  # as the API takes it: 10^9 days overflowed a date
        raise ValidationError("invalid_trial", "trial_days is from 0 to 730.", "trial_days")
    trial_end = start + timedelta(days=trial_days) if trial_days else None
    try:
        anchor_kind = AnchorKind(anchor)
    except ValueError:
        raise ValidationError("invalid_choice", "anchor is calendar, anniversary or day_of_month.", "anchor") from None
    anchor_on = billing_anchor(anchor_kind, start, interval, trial_end_on=trial_end, day_of_month=anchor_day)
    sub_id = new_id("sub")
    events = [_event_row(sub_id, 0, start, ChangeKind.START, items, "start", uow)]
    for i, phase in enumerate(phases):
        on = phase.get("on")
        if not isinstance(on, date) or on <= start:
            raise ValidationError(
                "dates_out_of_order", "Each phase must start after the subscription starts.", f"phases[{i}].on"
            )
        if i and on <= phases[i - 1]["on"]:
            raise ValidationError("dates_out_of_order", "Phases must be in date order.", f"phases[{i}].on")
        phase_items, phase_interval, _ = _items_for(
            uow,
            customer,
            str(phase.get("plan", plan_code)),
            catalog.quantity(phase.get("quantity", qty), f"phases[{i}].quantity"),
            phase.get("version"),
            (),
        )
        if phase_interval != interval:
            raise ValidationError("interval_mismatch", "A phase must bill on the same interval.", f"phases[{i}].plan")
        events.append(_event_row(sub_id, i + 1, on, ChangeKind.CHANGE, phase_items, "phase", uow))
    # Its phases' meters too: a phase that brings in a metered plan must not bill what another subscription bills.
    _check_meters_free(uow, customer_id, [i for row in events for i in timeline_event_from_row(row).items], start)
    status = status_on([timeline_event_from_row(e) for e in events], trial_end, today)
    uow.ensure_writable()
    values = {
        "id": sub_id,
        "customer_id": customer_id,
        "plan_id": plan_id,
        "currency": customer["currency"],
        "status": status.value,
        "interval_unit": interval.unit.value,
        "interval_count": interval.count,
        "anchor_kind": anchor_kind.value,
        "anchor_on": anchor_on,
        "started_on": start,
        "trial_end_on": trial_end,
        "ended_on": None,
        "reviewed_from_on": None,
        "next_seq": len(events),
        "created_at": uow.now,
        "updated_at": uow.now,
    }
    sub_row = uow.conn.execute(_INSERT_SUBSCRIPTION, values).mappings().one()
    event_rows = uow.conn.execute(_INSERT_EVENTS, events).mappings()
    created = {**dict(sub_row), "events": [dict(e) for e in event_rows], "coupons": []}
    # Announced before the coupon redeemed on it: a receiver sees the subscription before anything about it.
    uow.emit(
        "subscription.created",
        "subscription",
        sub_id,
        {"plan": plan_code, "status": status.value, "quantity": str(qty)},
        customer_id,
    )
    if coupon or promotion_code:
        _apply_coupon(uow, sub_id, customer, coupon, promotion_code, max(start, trial_end or start))
        created["coupons"] = _coupons_of(uow, sub_id)
    return created


def _event_row(
    sub_id: str, seq: int, on: date, kind: ChangeKind, items: Sequence[Item], source: str, uow: UnitOfWork
) -> dict[str, Any]:
    return {
        "id": new_id("subev"),
        "subscription_id": sub_id,
        "seq": seq,
        "effective_on": on,
        "kind": kind.value,
        "items": items_to_json(items),
        "source": source,
        "recorded_at": uow.now,
        "revoked_at": None,
    }


def _apply_coupon(
    uow: UnitOfWork, sub_id: str, customer: Mapping[Any, Any], code: str | None, promo: str | None, applied_on: date
) -> None:
    at = customer_now(uow, customer)
    promo_row = None
    if promo:
        promo_row = (
            uow.conn.execute(select(t.promotion_codes).where(t.promotion_codes.c.code == promo)).mappings().first()
        )
        if promo_row is None:
            raise NotFound("promotion_code", promo, "promotion_code")
        promotion_code_from_row(promo_row).check_redeemable(at)
        coupon_row = (
            uow.conn.execute(select(t.coupons).where(t.coupons.c.id == promo_row["coupon_id"])).mappings().one()
        )
    else:
        found = uow.conn.execute(select(t.coupons).where(t.coupons.c.code == code)).mappings().first()
        if found is None:
            raise NotFound("coupon", code, "coupon", by="code")
        coupon_row = found
    coupon_from_row(coupon_row).check_redeemable(
        at, currency(customer["currency"]), "promotion_code" if promo else "coupon"
    )
    # Redemption counters move with a guarded update, so a limit holds under concurrency.
    _bump(uow, t.coupons, coupon_row["id"], "coupon_exhausted", "coupon")
    if promo_row is not None:
        _bump(uow, t.promotion_codes, promo_row["id"], "promotion_code_exhausted", "promotion_code")
    uow.insert_many(
        t.subscription_coupons,
        [
            {
                "id": new_id("subcpn"),
                "subscription_id": sub_id,
                "coupon_id": coupon_row["id"],
                "promotion_code_id": promo_row["id"] if promo_row is not None else None,
                "applied_on": applied_on,
                "created_at": uow.now,
            }
        ],
    )
    uow.emit("coupon.redeemed", "subscription", sub_id, {"coupon": coupon_row["code"]}, customer["id"])


def _bump(uow: UnitOfWork, table: Any, row_id: str, code: str, field: str) -> None:
    result = uow.conn.execute(
        update(table)
        .where(
            table.c.id == row_id,
            (table.c.max_redemptions.is_(None)) | (table.c.times_redeemed < table.c.max_redemptions),
        )
        .values(times_redeemed=table.c.times_redeemed + 1)
    )
    if result.rowcount != 1:
        raise Conflict(code, "The redemption limit has been reached.", field)


def apply_coupon(uow: UnitOfWork, sub_id: str, coupon: str | None = None, promotion_code: str | None = None) -> None:
    sub, customer, events, today = _load(uow, sub_id)
    transition(SUBSCRIPTION_TRANSITIONS, SubscriptionStatus(sub["status"]), "change_plan", what="subscription")
    _apply_coupon(uow, sub_id, customer, coupon, promotion_code, today)


def _load(uow: UnitOfWork, sub_id: str) -> tuple[dict[str, Any], dict[str, Any], list[TimelineEvent], date]:
    query = select(t.subscriptions).where(t.subscriptions.c.id == sub_id)
    row = uow.conn.execute(query).mappings().first()
    if row is None:
        raise NotFound("subscription", sub_id, "subscription_id")
    uow.lock_customer(row["customer_id"])
    # Read again under the lock, and the time after waiting for it: a bill run that held it has moved the
    # review mark since, which a change dated on or before it must move back (or that period is never billed).
    uow.now = uow.clock.now()
    row = uow.conn.execute(query).mappings().one()
    customer = get_customer(uow, row["customer_id"])
    events = [
        timeline_event_from_row(r)
        for r in uow.conn.execute(
            select(t.subscription_events)
            .where(t.subscription_events.c.subscription_id == sub_id, t.subscription_events.c.revoked_at.is_(None))
            .order_by(t.subscription_events.c.seq)
        ).mappings()
    ]
    today = _today(uow, customer)
    status = status_on(events, row["trial_end_on"], today)
    return {**dict(row), "status": status.value}, customer, events, today


def _interval(sub: Mapping[str, Any]) -> Interval:
    return Interval.parse(sub["interval_unit"], sub["interval_count"])


def period_end(sub: Mapping[str, Any], today: date) -> date:
    """When 'at period end' falls: the end of the current period, or of the trial."""
    if sub["trial_end_on"] and today < sub["trial_end_on"]:
        return sub["trial_end_on"]  # type: ignore[no-any-return]
    start = max(today, sub["started_on"])
    return period_containing(sub["anchor_on"], _interval(sub), start).end_on


def _when(sub: Mapping[str, Any], today: date, when: str | date) -> date:
    if isinstance(when, date):
        if when < today:
            raise ValidationError("date_in_past", "A change cannot take effect before today.", "effective_on")
        return when
    if when == "now":
        started: date = sub["started_on"]
        return max(today, started)
    if when == "period_end":
        return period_end(sub, today)
    raise ValidationError("invalid_choice", "when is 'now', 'period_end' or a date.", "when")


def _append(
    uow: UnitOfWork,
    sub: dict[str, Any],
    events: list[TimelineEvent],
    today: date,
    on: date,
    kind: ChangeKind,
    items: Sequence[Item],
    source: str,
) -> SubscriptionStatus:
    end = ended_on(events)
    if end is not None and on >= end:
        raise Conflict("subscription_ending", f"The subscription ends on {end}; nothing can follow.", "effective_on")
    seq = sub["next_seq"]
    row = _event_row(sub["id"], seq, on, kind, items, source, uow)
    uow.insert_many(t.subscription_events, [row])
    events.append(timeline_event_from_row(row))
    status = status_on(events, sub["trial_end_on"], today)
    values: dict[str, Any] = {
        "next_seq": seq + 1,
        "status": status.value,
        "updated_at": uow.now,
        "ended_on": on if kind is ChangeKind.CANCEL else sub["ended_on"],
    }
    # A change effective on a day the bill run has already reviewed (e.g. "cancel now" after today's run) must
    # reopen that day. The bill run treats a subscription as finished once ``reviewed_from_on >= ended_on``, so
    # a cancellation on the day of the last review would otherwise never be billed (no credit for unused time
    # in advance, no final line in arrears). The earliest day whose period the change can affect is the day
    # before it (the last day served), so the mark moves back there.
    reviewed = sub["reviewed_from_on"]
    if reviewed is not None and on <= reviewed:
        values["reviewed_from_on"] = on - timedelta(days=1)
        sub["reviewed_from_on"] = values["reviewed_from_on"]
    uow.conn.execute(update(t.subscriptions).where(t.subscriptions.c.id == sub["id"]).values(**values))
    return status


def change_plan(
    uow: UnitOfWork,
    sub_id: str,
    plan_code: str,
    *,
    quantity: object = None,
    version: int | None = None,
    when: str | date = "now",
) -> dict[str, Any]:
    """Upgrade or downgrade. Now: the invoice credits unused time and charges the rest. At period end: no
    proration."""
    sub, customer, events, today = _load(uow, sub_id)
    transition(SUBSCRIPTION_TRANSITIONS, SubscriptionStatus(sub["status"]), "change_plan", what="subscription")
    on = _when(sub, today, when)
    current = items_on(events, on)
    qty = catalog.quantity(quantity) if quantity is not None else (current[0].quantity if current else Decimal(1))
    new_items, interval, plan_id = _items_for(uow, customer, plan_code, qty, version, ())
    if interval != _interval(sub):
        raise ValidationError("interval_mismatch", "Changing the billing interval needs a new subscription.", "plan")
    items = new_items + _add_ons(uow, current)  # add-ons stay; the plan's own prices are replaced
    _one_price_per_meter(uow, items, lambda _i: "plan")
    _check_meters_free(uow, customer["id"], items, on, other_than=sub_id)
    _append(uow, sub, events, today, on, ChangeKind.CHANGE, items, "change_plan")
    if on <= today:
        uow.conn.execute(update(t.subscriptions).where(t.subscriptions.c.id == sub_id).values(plan_id=plan_id))
    uow.emit(
        "subscription.updated",
        "subscription",
        sub_id,
        # The quantity too: change_plan may set it (a receiver following seats would keep the old count).
        {"change": "plan", "plan": plan_code, "quantity": str(qty), "effective_on": on.isoformat()},
        sub["customer_id"],
    )
    return {"subscription_id": sub_id, "effective_on": on}


def _check_meters_free(
    uow: UnitOfWork, customer_id: str, items: Sequence[Item], from_on: date, other_than: str | None = None
) -> None:
    """Usage events name the customer, so one subscription per customer bills a given meter on a given day: a
    second one would bill the same events twice. ``items`` would bill from ``from_on``: another subscription of
    the customer whose timeline bills one of their meters then or later is in the way: by the items in force
    that day, or by a change or phase to come (not by its plan at creation, which such changes leave behind);
    one that ends by then, or that a change takes off the meter by then, is not."""
    prices = load_prices(uow.conn, [i.price_id for i in items])
    meters = {p.meter for p in prices.values() if p.meter}
    if not meters:
        return
    s, e = t.subscriptions.c, t.subscription_events.c
    ends = {
        sub_id: ended
        for sub_id, ended in uow.conn.execute(
            select(s.id, s.ended_on).where(
                s.customer_id == customer_id, or_(s.ended_on.is_(None), s.ended_on > from_on)
            )
        ).all()
        if sub_id != other_than
    }
    if not ends:
        return
    timelines: dict[str, list[TimelineEvent]] = {sub_id: [] for sub_id in ends}
    for row in uow.conn.execute(
        select(t.subscription_events).where(e.subscription_id.in_(list(ends)), e.revoked_at.is_(None))
    ).mappings():
        timelines[row["subscription_id"]].append(timeline_event_from_row(row))
    billing = {
        sub_id: {i.price_id for i in items_on(events, from_on)}
        | {i.price_id for event in events if event.effective_on > from_on for i in event.items}
        for sub_id, events in timelines.items()
    }
    theirs = load_prices(uow.conn, sorted(set().union(*billing.values())))
    for sub_id in sorted(billing):
        for price_id in sorted(billing[sub_id]):
            price = theirs.get(price_id)
            meter = price.meter if price is not None else None
            if meter in meters:
                until = f" until {ends[sub_id]}" if ends[sub_id] is not None else ""
                raise Conflict(
                    "meter_already_billed",
                    f"Subscription {sub_id} bills meter {meter} for this customer{until}; usage events name the "
                    "customer, so a second subscription would bill them twice. Change that subscription's plan "
                    "instead" + (f", or start on {ends[sub_id]} or later." if ends[sub_id] is not None else "."),
                    "plan",
                )


def _add_ons(uow: UnitOfWork, items: Sequence[Item]) -> tuple[Item, ...]:
    """The items bought beside the plan: prices outside any plan version."""
    prices = load_prices(uow.conn, [i.price_id for i in items])
    return tuple(i for i in items[1:] if i.price_id in prices and prices[i.price_id].plan_version_id is None)


def change_quantity(uow: UnitOfWork, sub_id: str, quantity: object, when: str | date = "now") -> dict[str, Any]:
    sub, _customer, events, today = _load(uow, sub_id)
    transition(SUBSCRIPTION_TRANSITIONS, SubscriptionStatus(sub["status"]), "change_quantity", what="subscription")
    qty = catalog.quantity(quantity)
    on = _when(sub, today, when)
    current = items_on(events, on)
    items = (Item(current[0].price_id, qty), *current[1:])
    _append(uow, sub, events, today, on, ChangeKind.CHANGE, items, "change_quantity")
    uow.emit(
        "subscription.updated",
        "subscription",
        sub_id,
        {"change": "quantity", "quantity": str(qty), "effective_on": on.isoformat()},
        sub["customer_id"],
    )
    return {"subscription_id": sub_id, "effective_on": on}


def pause(uow: UnitOfWork, sub_id: str, when: str | date = "now") -> dict[str, Any]:
    """Stop charging from a day on; time already paid for and not used is credited."""
    sub, _customer, events, today = _load(uow, sub_id)
    transition(SUBSCRIPTION_TRANSITIONS, SubscriptionStatus(sub["status"]), "pause", what="subscription")
    on = _when(sub, today, when)
    status = _append(uow, sub, events, today, on, ChangeKind.PAUSE, (), "pause")
    # A pause to come is announced as scheduled; the bill run announces subscription.paused when it takes effect.
    kind = "subscription.pause_scheduled" if on > today else "subscription.paused"
    uow.emit(kind, "subscription", sub_id, _status_data(sub, on, today, status), sub["customer_id"])
    return {"subscription_id": sub_id, "effective_on": on}


def resume(uow: UnitOfWork, sub_id: str, when: str | date = "now") -> dict[str, Any]:
    sub, _customer, events, today = _load(uow, sub_id)
    transition(SUBSCRIPTION_TRANSITIONS, SubscriptionStatus(sub["status"]), "resume", what="subscription")
    on = _when(sub, today, when)
    status = _append(uow, sub, events, today, on, ChangeKind.RESUME, (), "resume")
    kind = "subscription.resume_scheduled" if on > today else "subscription.resumed"
    uow.emit(kind, "subscription", sub_id, _status_data(sub, on, today, status), sub["customer_id"])
    return {"subscription_id": sub_id, "effective_on": on}


def cancel(uow: UnitOfWork, sub_id: str, at_period_end: bool = False) -> dict[str, Any]:
    """Cancel now (unused time is credited) or at the end of the current period."""
    sub, _customer, events, today = _load(uow, sub_id)
    transition(SUBSCRIPTION_TRANSITIONS, SubscriptionStatus(sub["status"]), "cancel", what="subscription")
    if ended_on(events) is not None:
        raise Conflict("subscription_ending", "The subscription is already set to end.", "subscription_id")
    on = _when(sub, today, "period_end" if at_period_end else "now")
    status = _append(uow, sub, events, today, on, ChangeKind.CANCEL, (), "cancel")
    uow.emit(
        "subscription.cancellation_scheduled" if on > today else "subscription.canceled",
        "subscription",
        sub_id,
        _status_data(sub, on, today, status),
        sub["customer_id"],
    )
    return {"subscription_id": sub_id, "effective_on": on}


def _status_data(sub: Mapping[Any, Any], on: date, today: date, status: SubscriptionStatus) -> dict[str, Any]:
    """A pause, resume or cancellation's event data. Taking effect now: the same fields as when the bill run
    reaches one asked for a later day (``effective_on``, ``status``, ``previous_status``); still to come: the day."""
    data: dict[str, Any] = {"effective_on": on.isoformat()}
    if on <= today:
        data.update(status=status.value, previous_status=sub["status"])
    return data


def release_scheduled(uow: UnitOfWork, sub_id: str) -> int:
    """Withdraw every change that has not taken effect yet (scheduled plan changes, phases, a pending cancel)."""
    sub, _customer, events, today = _load(uow, sub_id)
    remaining = [e for e in events if e.effective_on <= today]
    if ended_on(remaining) is None and len(remaining) < len(events):
        # What it bills today it then bills for good: a cancellation or a change off a meter withdrawn must not
        # take back a meter another subscription was allowed to bill from that day (both would bill its events).
        _check_meters_free(uow, sub["customer_id"], items_on(remaining, today), today, other_than=sub_id)
    result = uow.conn.execute(
        update(t.subscription_events)
        .where(
            t.subscription_events.c.subscription_id == sub_id,
            t.subscription_events.c.effective_on > today,
            t.subscription_events.c.revoked_at.is_(None),
        )
        .values(revoked_at=uow.now)
    )
    uow.conn.execute(
        update(t.subscriptions)
        .where(t.subscriptions.c.id == sub_id)
        .values(ended_on=ended_on(remaining), updated_at=uow.now)
    )
    if result.rowcount:
        uow.emit(
            "subscription.schedule_released", "subscription", sub_id, {"released": result.rowcount}, sub["customer_id"]
        )
    return int(result.rowcount)


def migrate_plan_version(uow: UnitOfWork, plan_code: str, to_version: int, when: str = "period_end") -> int:
    """Move every subscriber of a plan to one of its versions (by default from their next period)."""
    plan_id = uow.conn.execute(select(t.plans.c.id).where(t.plans.c.code == plan_code)).scalar()
    if plan_id is None:
        raise NotFound("plan", plan_code, "plan", by="code")
    # The plan's prices in every version: a subscriber is on the plan when its timeline says so on the day the
    # move takes effect (``subscriptions.plan_id`` is the plan it started on, or was last changed to at once: a
    # phase or a change at a period's end leaves it behind).
    pv, pr = t.plan_versions.c, t.prices.c
    plan_prices = set(
        uow.conn.execute(select(pr.id).join(t.plan_versions, pv.id == pr.plan_version_id).where(pv.plan_id == plan_id))
        .scalars()
        .all()
    )
    if not plan_prices:
        return 0
    s, e = t.subscriptions.c, t.subscription_events.c
    sub_ids = sorted(
        {
            sub_id
            for sub_id, items in uow.conn.execute(
                select(e.subscription_id, e["items"])
                .join(t.subscriptions, s.id == e.subscription_id)
                .where(s.status != SubscriptionStatus.CANCELED.value, e.revoked_at.is_(None))
                # Only timelines that name one of the plan's prices are read (then checked exactly below).
                .where(or_(*(cast(e["items"], Text).contains(price_id) for price_id in sorted(plan_prices))))
            ).all()
            if any(item.get("price_id") in plan_prices for item in items or ())
        }
    )
    moved = 0
    for sub_id in sub_ids:
        sub, _customer, events, today = _load(uow, sub_id)
        current = items_on(events, _when(sub, today, when))
        target = catalog.plan_price(uow, plan_code, sub["currency"], to_version)
        if not current or current[0].price_id not in plan_prices or current[0].price_id == target["id"]:
            continue  # not on this plan then (a phase moved it on, say), or on that version already
        if ended_on(events) is not None:
            continue
        change_plan(uow, sub_id, plan_code, version=to_version, when=when)
        moved += 1
    return moved


def get_subscription(uow: UnitOfWork, sub_id: str) -> dict[str, Any]:
    row = uow.conn.execute(select(t.subscriptions).where(t.subscriptions.c.id == sub_id)).mappings().first()
    if row is None:
        raise NotFound("subscription", sub_id, "subscription_id")
    events = list(
        uow.conn.execute(
            select(t.subscription_events)
            .where(t.subscription_events.c.subscription_id == sub_id)
            .order_by(t.subscription_events.c.seq)
        ).mappings()
    )
    return {**dict(row), "events": [dict(e) for e in events], "coupons": _coupons_of(uow, sub_id)}


def _coupons_of(uow: UnitOfWork, sub_id: str) -> list[dict[str, Any]]:
    return [
        dict(c)
        for c in uow.conn.execute(
            select(t.coupons.c.code, t.subscription_coupons.c.applied_on)
            .join(t.coupons, t.coupons.c.id == t.subscription_coupons.c.coupon_id)
            .where(t.subscription_coupons.c.subscription_id == sub_id)
        ).mappings()
    ]
