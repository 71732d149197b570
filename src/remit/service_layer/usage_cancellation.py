"""Canceling usage events that should not have been sent (a test run, a duplicate under another transaction id,
a bug in the product that reported them).

A cancellation is a correction, not an erasure. The event stays in ``usage_events``; its ``matched`` flag is
turned off, which every aggregation already reads (so a cancellation costs the bill run nothing), and a row of
``usage_event_cancellations`` (append-only) says when and why. The transaction id stays taken: sending it again
answers ``duplicate``, so a retry of the original request can never bring the event back; a corrected event
needs a new transaction id.

An event can be canceled while its period can still be corrected: the rule that admits a late event (in the
open billing period of the subscription billing its meter, or at most the grace period old). When it was dated
before the customer's today, the subscriptions' review mark moves back to its day, exactly as for a late event, so
the next bill run re-rates that period and the diff credits the difference as a ``usage_correction`` line on the
next invoice. Nothing issued is edited. Canceling the same event again answers ``already_canceled`` and changes
nothing.

Each request is one transaction under the customers' locks (the bill run takes the same locks, so a
cancellation waits for a batch being billed and then reopens its period), and records one
``usage.events_canceled`` event per customer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import bindparam, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from remit.adapters.db import tables as t
from remit.domain.errors import ValidationError
from remit.service_layer import usage
from remit.service_layer.scoping import EVERYTHING, Visibility
from remit.service_layer.unit_of_work import UnitOfWork
from remit.service_layer.views import plain

MAX_BATCH = usage.MAX_BATCH
MAX_REASON = 500

_E = t.usage_events.c
_UNMATCH = (
    update(t.usage_events)
    .where(
        _E.customer_id == bindparam("b_customer"),
        _E.meter_code == bindparam("b_meter"),
        _E.occurred_at == bindparam("b_at"),
        _E.id == bindparam("b_id"),
    )
    .values(matched=False)
)


@dataclass
class CancelResult:
    canceled: list[dict[str, Any]] = field(default_factory=list)
    already_canceled: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Found:
    event_id: str
    meter_code: str
    occurred_at: datetime


def _outcome(index: int, customer_id: object, txn: object) -> dict[str, Any]:
    """An answer's echo of what was sent: only text that can be written back (a lone surrogate cannot)."""
    return {
        "index": index,
        "customer_id": customer_id if usage.plain_text(customer_id, 10_000) else None,
        "transaction_id": txn if usage.plain_text(txn, 10_000) else None,
    }


def _check_reason(reason: object) -> str | None:
    if reason is None:
        return None
    if not isinstance(reason, str) or not 1 <= len(reason) <= MAX_REASON or "\x00" in reason:
        raise ValidationError("invalid_reason", f"reason is a text of 1 to {MAX_REASON} characters.", "reason")
    return reason


CANCEL_FIELDS = frozenset({"customer_id", "external_customer_id", "subscription_id", "transaction_id"})


def cancel_events(
    uow: UnitOfWork,
    items: Sequence[Any],
    *,
    reason: object = None,
    vis: Visibility = EVERYTHING,
    settings: usage.UsageSettings | None = None,
) -> CancelResult:
    """Cancel up to 1,000 events, each named by its customer and transaction id; each is answered on its own
    (canceled, already canceled, or refused with the reason). The valid ones are canceled even when others are
    refused; nothing of a refused one changes."""
    settings = settings or usage.UsageSettings()
    if len(items) > MAX_BATCH:
        raise ValidationError("batch_too_large", f"A request cancels at most {MAX_BATCH} events.", "events")
    text = _check_reason(reason)
    uow.ensure_writable()
    result = CancelResult()
    dicts = [i for i in items if isinstance(i, dict)]
    refs = usage.References(uow.conn, dicts)  # external ids and subscriptions, as ingestion resolves them
    named = {c for i in dicts if isinstance(c := i.get("customer_id"), str) and usage.plain_text(c, 40)}
    customers = usage.customers_seen(uow, named | refs.customer_ids(), vis)
    wanted: dict[tuple[str, str], int] = {}  # each event once: its first index in the request
    repeated: list[tuple[int, tuple[str, str]]] = []  # the others: answered as the first is
    for index, item in enumerate(items):
        given = item.get("customer_id") if isinstance(item, dict) else None
        txn = item.get("transaction_id") if isinstance(item, dict) else None
        outcome = _outcome(index, given, txn)
        try:
            if not isinstance(item, dict):
                raise ValidationError("invalid_event", "Each event is an object.", "events")
            if not CANCEL_FIELDS.issuperset(item):
                name = sorted(str(k) for k in set(item) - CANCEL_FIELDS)[0]
                raise ValidationError("unknown_field", f"An event to cancel has no field {name!r}.", name)
            if not usage.plain_text(txn, 200):
                raise ValidationError(
                    "invalid_transaction_id", "transaction_id is a string of 1 to 200 characters.", "transaction_id"
                )
            # Refuses a customer the caller may not see, whichever way it is named, without telling it apart
            # from one that does not exist.
            customer_id = refs.resolve(item, customers).get("customer_id")
        except ValidationError as exc:
            result.rejected.append({**outcome, "error": exc.to_dict()})
            continue
        assert isinstance(customer_id, str) and isinstance(txn, str)
        key = (customer_id, txn)
        if key in wanted:
            repeated.append((index, key))
        else:
            wanted[key] = index
    if not wanted:
        return result
    uow.lock_customers(sorted({c for c, _ in wanted}))
    conn = uow.conn
    # The time after the locks: a bill run that held them may have closed the day this request began in.
    now = uow.now = uow.clock.now()
    now_of = usage.clock_times(conn, customers)
    open_since = usage.OpenPeriods(conn, customers, now_of, now)

    by_customer = _per_customer(wanted)
    done = _already_canceled(uow, by_customer)
    found: dict[tuple[str, str], _Found] = {}
    for customer_id, txns in sorted(by_customer.items()):
        late = now_of.get(customer_id, now) - settings.grace
        # Found from the earliest time any of the customer's meters is open (the index's range), then held to the
        # open period of the event's own meter.
        since = open_since.earliest(customer_id)
        earliest = late if since is None else min(late, since)
        pending = [x for x in txns if (customer_id, x) not in done]
        for part in _chunks(pending):
            rows = conn.execute(
                select(_E.transaction_id, _E.id, _E.meter_code, _E.occurred_at).where(
                    _E.customer_id == customer_id, _E.occurred_at >= earliest, _E.transaction_id.in_(part)
                )
            ).all()
            for txn, event_id, meter_code, occurred_at in rows:
                if occurred_at < late and (
                    (open_on := open_since(customer_id, meter_code)) is None or occurred_at < open_on
                ):
                    continue  # before its meter's open period: too late (the key exists)
                found[customer_id, txn] = _Found(event_id, meter_code, occurred_at)
    missing = [k for k in wanted if k not in done and k not in found]
    exists = _keys_taken(uow, missing)
    refused: dict[tuple[str, str], dict[str, Any]] = {}
    for key, index in sorted(wanted.items(), key=lambda kv: kv[1]):
        if key in done or key in found:
            continue
        if key in exists:
            error = ValidationError(
                "too_late_to_cancel",
                f"The event is dated before its meter's open billing period and more than "
                f"{settings.grace.days} days ago: its period can no longer be corrected.",
                "transaction_id",
            )
        else:
            error = ValidationError(
                "usage_event_not_found",
                f"No usage event with transaction id {key[1]!r} for this customer.",
                "transaction_id",
            )
        refused[key] = error.to_dict()
        result.rejected.append({**_outcome(index, *key), "error": refused[key]})

    newly = _claim(uow, found, now_of, now, text)
    for key, index in sorted(wanted.items(), key=lambda kv: kv[1]):
        outcome = _outcome(index, *key)
        if key in newly:
            result.canceled.append({**outcome, "id": found[key].event_id})
        elif key in done or key in found:
            result.already_canceled.append(outcome)
    for index, key in repeated:  # the same event named again in the request: answered as its first mention
        if key in refused:
            result.rejected.append({**_outcome(index, *key), "error": refused[key]})
        else:
            result.already_canceled.append(_outcome(index, *key))
    result.already_canceled.sort(key=lambda o: o["index"])
    result.rejected.sort(key=lambda o: o["index"])
    if not newly:
        return result
    conn.execute(
        _UNMATCH,
        [
            {"b_customer": c, "b_meter": f.meter_code, "b_at": f.occurred_at, "b_id": f.event_id}
            for (c, _), f in sorted((k, found[k]) for k in newly)
        ],
    )
    _check_unmatched(uow, newly)
    # Like a late event, a canceled one dated before the customer's today reopens its period for the next run;
    # and the customer's alerts and usage threshold are looked at again.
    usage.after_store(conn, now, [(c, found[c, x].occurred_at) for c, x in sorted(newly)], customers, now_of)
    per_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for customer_id, txn in sorted(newly):
        f = found[customer_id, txn]
        per_customer[customer_id].append(
            {"id": f.event_id, "transaction_id": txn, "meter": f.meter_code, "occurred_at": plain(f.occurred_at)}
        )
    for customer_id, events in per_customer.items():
        uow.emit(
            "usage.events_canceled",
            "customer",
            customer_id,
            {"customer_id": customer_id, "reason": text, "count": len(events), "events": events},
            customer_id,
            now_of.get(customer_id, now),
        )
    return result


_T = TypeVar("_T")


def _per_customer(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(customer, transaction id) keys as each customer's transaction ids: one customer's are found together."""
    out: dict[str, list[str]] = defaultdict(list)
    for customer_id, txn in keys:
        out[customer_id].append(txn)
    return out


def _chunks(items: Sequence[_T], size: int = 500) -> Iterator[Sequence[_T]]:
    """Within a statement's limit on bound parameters."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _check_unmatched(uow: UnitOfWork, keys: set[tuple[str, str]]) -> None:
    """Every event just canceled no longer counts: otherwise the whole request is undone (an answer `canceled`
    for an event that is still billed would be worse than an error)."""
    for customer_id, txns in _per_customer(keys).items():
        for part in _chunks(txns):
            still = uow.conn.execute(
                select(_E.transaction_id).where(_E.customer_id == customer_id, _E.transaction_id.in_(part), _E.matched)
            ).first()
            if still is not None:
                raise RuntimeError(f"usage event {still[0]!r} of {customer_id} still counts after its cancellation")


def _already_canceled(uow: UnitOfWork, by_customer: dict[str, list[str]]) -> set[tuple[str, str]]:
    c = t.usage_event_cancellations.c
    out: set[tuple[str, str]] = set()
    for customer_id, txns in by_customer.items():
        for part in _chunks(txns):
            rows = uow.conn.execute(
                select(c.customer_id, c.transaction_id).where(c.customer_id == customer_id, c.transaction_id.in_(part))
            ).all()
            out.update((a, b) for a, b in rows)
    return out


def _keys_taken(uow: UnitOfWork, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of ``keys`` were received (their events exist, older than a cancellation may reach)."""
    k = t.usage_event_keys.c
    out: set[tuple[str, str]] = set()
    for part in _chunks(keys):
        rows = uow.conn.execute(
            select(k.customer_id, k.transaction_id).where(tuple_(k.customer_id, k.transaction_id).in_(part))
        ).all()
        out.update((a, b) for a, b in rows)
    return out


def _claim(
    uow: UnitOfWork,
    found: dict[tuple[str, str], _Found],
    now_of: dict[str, datetime],
    now: datetime,
    reason: str | None,
) -> set[tuple[str, str]]:
    """Record the cancellations (at the customer's time: its test clock's, if it has one); the keys whose
    cancellation is new (a concurrent request may have won)."""
    if not found:
        return set()
    dialect: Any = postgresql if uow.is_postgres else sqlite
    c = t.usage_event_cancellations.c
    stmt = (
        dialect.insert(t.usage_event_cancellations).on_conflict_do_nothing().returning(c.customer_id, c.transaction_id)
    )
    rows = [
        {
            "customer_id": customer_id,
            "transaction_id": txn,
            "event_id": f.event_id,
            "meter_code": f.meter_code,
            "occurred_at": f.occurred_at,
            "canceled_at": now_of.get(customer_id, now),
            "reason": reason,
        }
        for (customer_id, txn), f in sorted(found.items())
    ]
    return {(a, b) for a, b in uow.conn.execute(stmt, rows).all()}
