"""Meters and usage-event ingestion: validate each event on its own, keep the valid ones, count each once.

A batch answers event by event: which were new, which were duplicates of events already received (same customer
and client transaction id: not an error, not counted twice), and which were refused and why. Nothing of a refused
event is stored. Deduplication lives in the database (a primary key on customer and transaction id), so the same
batch posted twice at once still counts once.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, TypeGuard
from weakref import WeakKeyDictionary

from sqlalchemy import (
    Connection,
    Engine,
    String,
    Text,
    any_,
    bindparam,
    case,
    cast,
    insert,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from remit.adapters import fastjson
from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id, new_ids
from remit.adapters.db.mappers import load_prices
from remit.domain.clock import ensure_utc
from remit.domain.errors import Conflict, RemitError, ValidationError
from remit.domain.rating.aggregations import Aggregation, Meter, Rounding, UsageEvent, property_text
from remit.domain.rating.expressions import Formula, parse_formula
from remit.domain.subscriptions.periods import Interval, period_containing
from remit.service_layer import usage_watch
from remit.service_layer.accounts import local_date, local_midnight
from remit.service_layer.scoping import EVERYTHING, Visibility
from remit.service_layer.unit_of_work import UnitOfWork

MAX_BATCH = 1000
MAX_PROPERTIES = 50
MAX_PROPERTIES_BYTES = 8192
FUTURE_SKEW = timedelta(minutes=5)
REOPEN_MARGIN = timedelta(minutes=5)  # see reopen_for_late_usage
MAX_VALUE_CHARS = 64  # usage_events.value is text of at most 64 characters
MAX_DIMENSION_CHARS = 200  # usage_events.dimension: a unique count's value
MAX_GROUP_KEY_CHARS = 500  # usage_events.group_key: the group-by values, as JSON
MAX_PROPERTY_NAME_CHARS = 100


@dataclass(frozen=True)
class UsageSettings:
    """How late an event may arrive, before the customer's open period: ``REMIT_USAGE_GRACE_DAYS`` (default 7)."""

    grace: timedelta = field(default_factory=lambda: timedelta(days=_grace_days()))


def _grace_days() -> int:
    raw = os.environ.get("REMIT_USAGE_GRACE_DAYS", "7")
    if not raw.isdigit() or int(raw) > 366:
        raise ValidationError(
            "invalid_setting", f"REMIT_USAGE_GRACE_DAYS is a number of days from 0 to 366, not {raw!r}.", "grace"
        )
    return int(raw)


# When the open billing period of a customer's events on a meter began (customer, meter code; None: no subscription
# bills that meter), asked only of events older than the grace period: an event in the open period is never late.
OpenSince = Callable[[str, str], "datetime | None"]


def create_meter(
    uow: UnitOfWork,
    code: str,
    name: str,
    aggregation: str,
    field_name: str | None = None,
    filters: Mapping[str, Sequence[str]] | None = None,
    group_by: Sequence[str] = (),
    expression: str | None = None,
    rounding: str | None = None,
    rounding_precision: int = 0,
    carry_over: bool = False,
) -> str:
    try:
        agg = Aggregation(aggregation)
    except ValueError:
        raise ValidationError(
            "invalid_choice",
            f"{aggregation!r} is not an aggregation: " + ", ".join(a.value for a in Aggregation) + ".",
            "aggregation",
        ) from None
    try:
        rounds = Rounding(rounding) if rounding is not None else None
    except ValueError:
        raise ValidationError(
            "invalid_choice", f"{rounding!r} is not a rounding: ceil, floor or round.", "rounding"
        ) from None
    for index, dimension in enumerate(group_by):
        if not isinstance(dimension, str) or not dimension:
            raise ValidationError("invalid_group_by", "A dimension is a property's name.", f"group_by[{index}]")
        if ":" in dimension or "=" in dimension:  # a group is typed dimension:value (API) or dimension=value (CLI)
            raise ValidationError(
                "invalid_group_by", "A dimension's name may not hold ':' or '='.", f"group_by[{index}]"
            )
        if dimension in group_by[:index]:
            raise ValidationError("invalid_group_by", f"{dimension!r} is given twice.", f"group_by[{index}]")
    formula = parse_formula(expression, "expression") if expression is not None else None
    meter = Meter(
        code,
        agg,
        field_name,
        _filters(filters),
        tuple(group_by),
        formula,
        rounds,
        rounding_precision,
        carry_over=carry_over,
    )
    if uow.conn.execute(select(t.meters.c.id).where(t.meters.c.code == code)).first() is not None:
        raise Conflict("meter_code_taken", f"A meter with code {code!r} exists already.", "code")
    meter_id = new_id("meter")
    uow.insert_many(
        t.meters,
        [
            {
                "id": meter_id,
                "code": meter.code,
                "name": name or code,
                "aggregation": agg.value,
                "field": field_name,
                "expression": formula.source if formula else None,
                "filters": {k: list(v) for k, v in meter.filters.items()},
                "group_by": list(meter.group_by),
                "rounding": rounds.value if rounds else None,
                "rounding_precision": rounding_precision,
                "carry_over": carry_over,
                "created_at": uow.now,
            }
        ],
    )
    return meter_id


def _filters(filters: object) -> dict[str, tuple[str, ...]]:
    """A meter's filters: each property's name with the list of values it accepts (a single string is not a list:
    taken for one, "eu" would accept "e" and "u")."""
    if filters is None:
        return {}
    if not isinstance(filters, Mapping):
        raise ValidationError(
            "invalid_filters", 'filters maps a property to the values it accepts: {"region": ["eu"]}.', "filters"
        )
    out: dict[str, tuple[str, ...]] = {}
    for name, values in filters.items():
        where = f"filters.{name}"
        if not isinstance(name, str) or not name:
            raise ValidationError("invalid_filters", "A filter names a property.", "filters")
        if not isinstance(values, list | tuple) or not values:
            raise ValidationError(
                "invalid_filters", f'A filter lists the values it accepts: {{"{name}": ["..."]}}.', where
            )
        out[name] = tuple(_filter_value(v, f"{where}[{i}]") for i, v in enumerate(values))
    return out


def _filter_value(value: object, field_name: str) -> str:
    """A value a filter accepts, as events' values are compared (``property_text``): true, not True."""
    text = property_text(value, field_name)
    if text is None:
        raise ValidationError("invalid_value", "A filter's values are text, numbers or booleans.", field_name)
    return text


def meter_from_row(row: Mapping[Any, Any]) -> Meter:
    return Meter(
        row["code"],
        Aggregation(row["aggregation"]),
        row["field"],
        {k: tuple(v) for k, v in row["filters"].items()},
        tuple(row["group_by"]),
        _formula(row.get("expression")),
        Rounding(row["rounding"]) if row.get("rounding") else None,
        row.get("rounding_precision") or 0,
        row.get("deactivated_at") is None,
        bool(row.get("carry_over")),
    )


_FORMULAS: dict[str, Formula] = {}


def _formula(source: str | None) -> Formula | None:
    if source is None:
        return None
    found = _FORMULAS.get(source)
    if found is None:
        found = _FORMULAS[source] = parse_formula(source, "expression", stored=True)  # loads as it was created
    return found


@dataclass
class IngestResult:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _reject(result: IngestResult, index: int, txn: object, exc: RemitError) -> None:
    result.rejected.append(
        {"index": index, "transaction_id": txn if isinstance(txn, str) else None, "error": exc.to_dict()}
    )


def _occurred_at(
    raw: object, now: datetime, settings: UsageSettings, open_since: OpenSince | None, customer_id: str, meter: str
) -> tuple[datetime, str | None]:
    """The event's time, and its text when PostgreSQL can be given it as it came (``_PLAIN_ISO``). Any time in the
    open billing period of the subscription billing the meter is fine; before it, at most ``grace`` before now (such
    late events are billed as corrections). Not in the future beyond a small clock skew."""
    plain = None
    try:
        if isinstance(raw, str) and ((plain := _PLAIN_ISO.fullmatch(raw)) or _ISO_TIME.fullmatch(raw)):
            at = datetime.fromisoformat(raw.replace("z", "Z"))
            at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        elif isinstance(raw, datetime):
            at = ensure_utc(raw)
        else:
            raise ValueError
    except (ValueError, OverflowError):  # not a time as documented, or not one in years 1 to 9999 once in UTC
        raise ValidationError(
            "invalid_timestamp",
            "timestamp is an ISO 8601 time: 2026-03-01T12:00:00Z, or with an offset (+01:00) instead of Z.",
            "timestamp",
        ) from None
    if at > now + FUTURE_SKEW:
        raise ValidationError("timestamp_in_future", "The event is dated in the future.", "timestamp")
    if at < now - settings.grace and (
        open_since is None or (since := open_since(customer_id, meter)) is None or at < since
    ):
        raise ValidationError(
            "event_too_old", f"Events may arrive at most {settings.grace.days} days late.", "timestamp"
        )
    return at, raw if plain is not None and isinstance(raw, str) else None


_encode = fastjson.dumps_exact  # a number parsed as a Decimal (fastjson.loads_exact) is written as it was sent
_GROUP_KEYS: dict[tuple[str, ...], str] = {}


def _group_key(group: tuple[str, ...]) -> str:
    found = _GROUP_KEYS.get(group)
    if found is None:
        found = json.dumps(list(group))
        if len(_GROUP_KEYS) < 10_000:  # the same few groups recur; the cache stays small
            _GROUP_KEYS[group] = found
    return found


class CheckedEvent(NamedTuple):
    """A valid event, in the form it is stored in: ``value`` as exact decimal text, ``properties`` as JSON."""

    customer_id: str
    subscription_id: str | None
    meter_code: str
    transaction_id: str
    occurred_at: datetime
    value: str | None
    dimension: str | None
    group_key: str
    matched: bool
    properties: str
    occurred_text: str  # occurred_at as ISO 8601 text that PostgreSQL reads as the same instant


# A timestamp already in this form is handed to PostgreSQL as it came (formatting it again costs more than the
# rest of the COPY line); any other accepted form is written out again, in UTC, by isoformat(). Its offset is one
# both databases read alike: PostgreSQL refuses offsets beyond 15:59, which Python takes.
_PLAIN_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-](?:0\d|1[0-5]):[0-5]\d)", re.ASCII)
# Every time an event may carry (docs/usage.md): a date, T (or t, or a space), hours and minutes, seconds and up to 9
# decimals if any (beyond 6 they are dropped), then Z or an offset of at most 23:59 (none: UTC).
_ISO_TIME = re.compile(
    r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(?::\d\d(?:\.\d{1,9})?)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)?", re.ASCII
)


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _property_names(props: dict[Any, Any]) -> bool:
    """Whether every key is a property's name: a string of 1 to 100 characters. A product sends the same few
    sets of names again and again: each set is checked once (the answers kept are bounded)."""
    names = tuple(props)
    known = _NAMES.get(names)
    if known is None:
        known = all(isinstance(k, str) and 0 < len(k) <= MAX_PROPERTY_NAME_CHARS for k in names)
        if len(_NAMES) >= 4096:
            _NAMES.clear()
        _NAMES[names] = known
    return known


_NAMES: dict[tuple[Any, ...], bool] = {}


EVENT_FIELDS = frozenset(
    {"customer_id", "external_customer_id", "subscription_id", "code", "transaction_id", "timestamp", "properties"}
)


def check_event(
    raw: Mapping[str, Any],
    meters: Mapping[str, Meter],
    customers: Container[str],
    now: datetime,
    settings: UsageSettings,
    now_of: Mapping[str, datetime] | None = None,
    open_since: OpenSince | None = None,
) -> CheckedEvent:
    """The rules every event is held to, on every path in (API, batch, import); raises ValidationError.
    ``now_of``: the time of customers on a test clock (the clock's); ``open_since``: see ``OpenSince``."""
    if not EVENT_FIELDS.issuperset(raw):  # a misspelled field would be lost without a word
        name = sorted(str(k) for k in set(raw) - EVENT_FIELDS)[0]
        raise ValidationError("unknown_field", f"An event has no field {name!r}.", name)
    txn = raw.get("transaction_id")
    if not plain_text(txn, 200):
        raise ValidationError(
            "invalid_transaction_id", "transaction_id is a string of 1 to 200 characters.", "transaction_id"
        )
    customer_id = raw.get("customer_id")
    if not isinstance(customer_id, str) or customer_id not in customers:
        raise ValidationError("unknown_customer", f"No customer with id {customer_id!r}.", "customer_id")
    subscription_id = raw.get("subscription_id")
    if subscription_id is not None and not plain_text(subscription_id, 40):
        raise ValidationError("invalid_subscription_id", "subscription_id is an id.", "subscription_id")
    code = raw.get("code")
    meter = meters.get(code) if isinstance(code, str) else None
    if meter is None:
        raise ValidationError("unknown_meter", f"No meter with code {code!r}.", "code")
    if not meter.active:
        raise ValidationError("meter_deactivated", f"Meter {code} is deactivated: it takes no new events.", "code")
    props = raw.get("properties", {})
    if not isinstance(props, dict) or len(props) > MAX_PROPERTIES or not _property_names(props):
        raise ValidationError(
            "invalid_properties",
            f"properties is an object of at most {MAX_PROPERTIES} keys, each of 1 to {MAX_PROPERTY_NAME_CHARS} "
            "characters.",
            "properties",
        )
    encoded = _encode(props)
    if "\\ud" in encoded and not _utf8(json.dumps(json.loads(encoded), ensure_ascii=False)):
        # A lone surrogate (escaped only when orjson declined the text): no UTF-8 text, or database, can hold it.
        raise ValidationError("invalid_properties", "properties hold text that is not valid Unicode.", "properties")
    if len(encoded) > MAX_PROPERTIES_BYTES:
        raise ValidationError("invalid_properties", "properties are too large.", "properties")
    stamp = raw.get("timestamp")
    at, as_sent = _occurred_at(
        stamp, now_of.get(customer_id, now) if now_of else now, settings, open_since, customer_id, meter.code
    )
    event = UsageEvent(at, props, txn)
    number = meter.checked_value(event)
    value = dimension = None
    if number is not None:
        value = _value_text(number, meter)
    elif meter.field is not None:
        dimension = _dimension(meter, event)
    group_key = "[]"
    if meter.group_by:
        group_key = _group_key(meter.group_of(event))
        if len(group_key) > MAX_GROUP_KEY_CHARS:
            raise ValidationError(
                "invalid_value",
                f"The values of the meter's group-by dimensions ({', '.join(meter.group_by)}) are too long: at most "
                f"{MAX_GROUP_KEY_CHARS} characters together, written as JSON.",
                f"properties.{meter.group_by[0]}" if len(meter.group_by) == 1 else "properties",
            )
    return CheckedEvent(
        customer_id,
        subscription_id,
        meter.code,
        txn,
        at,
        value,
        dimension,
        group_key,
        meter.matches(event) if meter.filters else True,
        encoded,
        as_sent if as_sent is not None else at.isoformat(),
    )


def _value_text(number: Decimal, meter: Meter) -> str:
    """The value as stored: exact decimal text of at most 64 characters."""
    # The magnitude first: written out, 1e100000000 (or 1e-100000000) would be a hundred million characters. In
    # that range, the text is as long as the digits sent, which the size of the properties bounds.
    if -MAX_VALUE_CHARS < number.adjusted() < MAX_VALUE_CHARS:
        value = format(number, "f")
        if len(value) <= MAX_VALUE_CHARS:
            return value
    field_name = f"properties.{meter.field}" if meter.field else "properties"
    too_large = f"The event's value is too large (at most {MAX_VALUE_CHARS} characters written out)."
    raise ValidationError("not_numeric", too_large, field_name)


def _dimension(meter: Meter, event: UsageEvent) -> str:
    """What a unique count counts of the event: refused rather than cut when too long, so that two long ids are
    never counted as one."""
    field_name = f"properties.{meter.field}"
    dimension = meter.dimension_of(event)
    assert dimension is not None  # a null was refused as missing
    if len(dimension) > MAX_DIMENSION_CHARS:
        raise ValidationError(
            "invalid_value",
            f"{field_name} is too long to be counted: at most {MAX_DIMENSION_CHARS} characters.",
            field_name,
        )
    if "\x00" in dimension:
        raise ValidationError("invalid_properties", "A property holds a NUL character.", field_name)
    return dimension


EVENT_COLUMNS = (
    "id",
    "occurred_at",
    "customer_id",
    "subscription_id",
    "meter_code",
    "transaction_id",
    "received_at",
    "value",
    "dimension",
    "group_key",
    "matched",
    "properties",
)
# Claims a batch's keys (two array literals, sorted) and answers the positions of those that were not new: usually
# none or a few, so the answer is small and the matching is done by PostgreSQL rather than in Python.
_PG_CLAIM = (
    "WITH k AS MATERIALIZED (SELECT * FROM unnest(%s::varchar[], %s::varchar[]) WITH ORDINALITY AS u(c, x, i)), "
    "new AS (INSERT INTO usage_event_keys (customer_id, transaction_id, received_at) SELECT c, x, %s FROM k "
    "ON CONFLICT DO NOTHING RETURNING customer_id, transaction_id) "
    "SELECT i - 1 FROM k WHERE NOT EXISTS (SELECT FROM new WHERE new.customer_id = k.c AND new.transaction_id = k.x)"
)
_PG_COPY = f"COPY usage_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


_NULL = "\\N"


def _array(values: list[str]) -> str:
    """A PostgreSQL array literal of strings (faster than adapting a list element by element)."""
    joined = '","'.join(values)
    if '"' in joined or "\\" in joined:
        joined = '","'.join(v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return '{"' + joined + '"}'


def _text(value: str | None) -> str:
    """A value in COPY's text format."""
    if value is None:
        return _NULL
    if _COPY_SPECIAL.search(value) is None:
        return value
    return value.translate(_COPY_ESCAPES)


def _json_text(value: str) -> str:
    """JSON text as dumped with ensure_ascii: no raw control characters, only backslashes to double."""
    return value.replace("\\", "\\\\") if "\\" in value else value


def copy_line(event_id: str, e: CheckedEvent, received: str) -> str:
    value = _NULL if e.value is None else e.value
    matched = "t" if e.matched else "f"
    return (
        f"{event_id}\t{e.occurred_text}\t{e.customer_id}\t{_text(e.subscription_id)}\t{e.meter_code}\t"
        f"{_text(e.transaction_id)}\t{received}\t{value}\t{_text(e.dimension)}\t"
        f"{_json_text(e.group_key)}\t{matched}\t{_json_text(e.properties)}\n"
    )


def store_pg(
    driver: Any, keys: Sequence[tuple[str, str]], rows: Mapping[tuple[str, str], str], at: datetime
) -> set[int]:
    """Claim the keys (sorted, distinct) and COPY the rows (COPY text lines) of those that were new, in the
    transaction under way on the psycopg connection ``driver``; the positions of the keys that were not new
    (received before, or by a concurrent transaction that committed) come back."""
    with driver.cursor() as cur:
        cur.execute(_PG_CLAIM, (_array([k[0] for k in keys]), _array([k[1] for k in keys]), at))
        taken = {i for (i,) in cur.fetchall()}
        lines = [rows[k] for i, k in enumerate(keys) if i not in taken] if taken else [rows[k] for k in keys]
        if lines:
            with cur.copy(_PG_COPY) as copy:
                copy.write("".join(lines))
    return taken


def _row(event_id: str, e: CheckedEvent, now: datetime) -> dict[str, Any]:
    return {
        "id": event_id,
        "occurred_at": e.occurred_at,
        "customer_id": e.customer_id,
        "subscription_id": e.subscription_id,
        "meter_code": e.meter_code,
        "transaction_id": e.transaction_id,
        "received_at": now,
        "value": None if e.value is None else Decimal(e.value),
        "dimension": e.dimension,
        "group_key": e.group_key,
        "matched": e.matched,
        "properties_text": e.properties,
    }


# The properties as check_event wrote them (their numbers exact), not parsed and written again by the JSON type.
_INSERT_EVENTS = insert(t.usage_events).values(properties=type_coerce(bindparam("properties_text"), String))


_CUSTOMER_COLUMNS = (
    t.customers.c.id,
    t.customers.c.legal_entity_id,
    t.customers.c.test_clock_id,
    t.customers.c.timezone,
)
_CUSTOMERS = select(*_CUSTOMER_COLUMNS).where(t.customers.c.id.in_(bindparam("ids", expanding=True)))
# PostgreSQL: one array parameter, so the statement's text (and its prepared plan) is the same for any batch.
_CUSTOMERS_PG = select(*_CUSTOMER_COLUMNS).where(
    t.customers.c.id == any_(bindparam("ids", type_=postgresql.ARRAY(String)))
)
# Customers are never deleted, and never change legal entity, test clock or time zone (nothing updates those), so what
# visibility needs of a customer is kept per engine once read: most events name a customer seen before, and their
# batch then reads nothing before it writes. A customer not found is looked up again next time.
_CUSTOMER_CACHE: WeakKeyDictionary[Engine, dict[str, Mapping[str, Any]]] = WeakKeyDictionary()
_CUSTOMER_CACHE_SIZE = 200_000
_METERS = select(t.meters)
# What a meter measures never changes once created; only its name and whether it is active do. So each engine's
# meters are kept once read, and read again when a batch names a code not among them (a meter created since) or
# when they were read more than METERS_FRESH_S ago: a meter deactivated by another process refuses events within
# that time (at once in the process that deactivated it). A timer of this cache, not the business clock.
_METER_CACHE: WeakKeyDictionary[Engine, tuple[dict[str, Meter], float]] = WeakKeyDictionary()
METERS_FRESH_S = 5.0


def meters_of(conn: Connection, codes: Iterable[object] = ()) -> dict[str, Meter]:
    """The meters, read again when one of ``codes`` is unknown or they are more than ``METERS_FRESH_S`` old."""
    engine = conn.engine
    cached = _METER_CACHE.get(engine)
    at = time.monotonic()
    if (
        cached is None
        or at - cached[1] > METERS_FRESH_S
        or any(isinstance(c, str) and c not in cached[0] for c in codes)
    ):
        cached = ({r["code"]: meter_from_row(r) for r in conn.execute(_METERS).mappings()}, at)
        _METER_CACHE[engine] = cached
    return cached[0]


def forget_meters(engine: Engine) -> None:
    """Read the meters again next time (this process changed one)."""
    _METER_CACHE.pop(engine, None)


def customers_seen(uow: UnitOfWork, wanted: set[str], vis: Visibility) -> dict[str, Mapping[str, Any]]:
    """The customers among ``wanted`` that exist and that ``vis`` sees, with what ingestion needs of them."""
    known = _CUSTOMER_CACHE.get(uow.engine)
    if known is None:
        known = _CUSTOMER_CACHE[uow.engine] = {}
    missing = [c for c in wanted if c not in known]
    if missing:
        if len(known) + len(missing) > _CUSTOMER_CACHE_SIZE:
            known.clear()
        query = _CUSTOMERS_PG if uow.is_postgres else _CUSTOMERS
        for r in uow.conn.execute(query, {"ids": sorted(missing)}).mappings():
            known[r["id"]] = dict(r)
    return {c: row for c in wanted if (row := known.get(c)) is not None and vis.sees_customer(row)}


# What a subscription id names never changes (a subscription never changes customer), so what was found is kept per
# engine; what was not found is looked up again next time. External ids are not kept: one is unique only within a
# legal entity and a mode, and a customer of another entity or mode may take it at any time (in any process), which
# must make it ambiguous at once to a key that sees both.
_SUBSCRIPTION_OWNERS: WeakKeyDictionary[Engine, dict[str, str]] = WeakKeyDictionary()
_REFERENCE_CACHE_SIZE = 200_000


def _owners(
    conn: Connection, memo: WeakKeyDictionary[Engine, dict[str, str]], keys: set[str], column: Any, owner: Any
) -> dict[str, str]:
    known = memo.get(conn.engine)
    if known is None:
        known = memo[conn.engine] = {}
    missing = sorted(k for k in keys if k not in known)
    if missing:
        if len(known) + len(missing) > _REFERENCE_CACHE_SIZE:
            known.clear()
        for start in range(0, len(missing), 10_000):
            part = missing[start : start + 10_000]
            known.update((k, c) for k, c in conn.execute(select(column, owner).where(column.in_(part))).all())
    return {k: known[k] for k in keys if k in known}  # only the batch's: the cache may hold 200,000


def _external_owners(conn: Connection, keys: set[str]) -> dict[str, tuple[str, ...]]:
    """The customers of each external id (several when legal entities or modes share it)."""
    cus = t.customers.c
    found: dict[str, list[str]] = {}
    wanted = sorted(keys)
    for start in range(0, len(wanted), 10_000):
        part = wanted[start : start + 10_000]
        for external, customer_id in conn.execute(select(cus.external_id, cus.id).where(cus.external_id.in_(part))):
            found.setdefault(external, []).append(customer_id)
    return {k: tuple(v) for k, v in found.items()}


def plain_text(value: object, longest: int) -> TypeGuard[str]:
    """Whether ``value`` is text a database takes as it is: a string of 1 to ``longest`` characters, with no NUL
    character (PostgreSQL refuses it) and no lone surrogate (it cannot be written as UTF-8)."""
    if type(value) is not str or not 1 <= len(value) <= longest or "\x00" in value:
        return False
    return value.isascii() or _utf8(value)


class References:
    """How events name their customer: by ``customer_id``; by ``external_customer_id`` (the customer's id in your
    system, given when it was created); or by ``subscription_id`` alone (that subscription's customer). A
    ``subscription_id`` given with a customer must be one of that customer's subscriptions. Events that name their
    customer by ``customer_id`` alone (the usual case) cost nothing here; the others' ids are looked up once per
    batch."""

    def __init__(self, conn: Connection, events: Iterable[Any]) -> None:
        externals: set[str] = set()
        subscriptions: set[str] = set()
        for raw in events:
            if type(raw) is dict:
                external, sub = raw.get("external_customer_id"), raw.get("subscription_id")
                if external is not None and plain_text(external, 200):
                    externals.add(external)
                if sub is not None and plain_text(sub, 40):
                    subscriptions.add(sub)
        self.by_external = _external_owners(conn, externals) if externals else {}
        subs = t.subscriptions.c
        self.owner = (
            _owners(conn, _SUBSCRIPTION_OWNERS, subscriptions, subs.id, subs.customer_id) if subscriptions else {}
        )

    def customer_ids(self) -> set[str]:
        """Every customer the batch's external ids and subscriptions name."""
        return {c for owners in self.by_external.values() for c in owners} | set(self.owner.values())

    def resolve(self, raw: dict[str, Any], customers: Container[str]) -> dict[str, Any]:
        """The event with its ``customer_id``, found from its references (``customers``: those the caller may
        see); raises ValidationError when a reference names nothing the caller sees."""
        customer_id, external, sub = raw.get("customer_id"), raw.get("external_customer_id"), raw.get("subscription_id")
        if customer_id is not None and (type(customer_id) is not str or customer_id not in customers):
            # Named directly: unknown whatever else the event says (a subscription of a customer the caller may not
            # see must not be told apart from one that does not exist).
            raise ValidationError("unknown_customer", f"No customer with id {customer_id!r}.", "customer_id")
        if external is None and sub is None:
            if customer_id is None:
                raise ValidationError(
                    "unknown_customer",
                    "The event names no customer: give customer_id, external_customer_id or subscription_id.",
                    "customer_id",
                )
            return raw  # checked by check_event
        if external is not None:
            if customer_id is not None:
                raise ValidationError(
                    "conflicting_customer_references",
                    "Name the customer by customer_id or by external_customer_id, not both.",
                    "external_customer_id",
                )
            # Unique within a legal entity and a mode: a key of one entity and one mode finds one at most.
            found = self.by_external.get(external, ()) if plain_text(external, 200) else ()
            seen = [c for c in found if c in customers]
            if not seen:
                raise ValidationError(
                    "unknown_customer", f"No customer with external id {external!r}.", "external_customer_id"
                )
            if len(seen) > 1:
                raise ValidationError(
                    "ambiguous_external_customer_id",
                    f"Customers of several legal entities or modes have external id {external!r}: name the "
                    "customer by customer_id (or send with a key limited to its legal entity).",
                    "external_customer_id",
                )
            customer_id = seen[0]
        if sub is not None:
            if not plain_text(sub, 40):
                raise ValidationError("invalid_subscription_id", "subscription_id is an id.", "subscription_id")
            owner = self.owner.get(sub)
            if customer_id is None and owner is not None and owner in customers:
                customer_id = owner
            elif owner is None or owner != customer_id:
                whose = "" if customer_id is None else " of this customer"
                raise ValidationError(
                    "unknown_subscription", f"No subscription{whose} with id {sub!r}.", "subscription_id"
                )
        return raw if customer_id == raw.get("customer_id") else {**raw, "customer_id": customer_id}


def ingest(
    uow: UnitOfWork, events: Sequence[Any], *, vis: Visibility = EVERYTHING, settings: UsageSettings | None = None
) -> IngestResult:
    """Validate and store a batch of usage events (at most 1,000)."""
    settings = settings or UsageSettings()
    if len(events) > MAX_BATCH:
        raise ValidationError("batch_too_large", f"A batch holds at most {MAX_BATCH} events.", "events")
    uow.ensure_writable()
    now = uow.now
    meters = meters_of(uow.conn, {c for e in events if isinstance(e, dict) and isinstance(c := e.get("code"), str)})
    refs = References(uow.conn, events)
    named = {c for e in events if isinstance(e, dict) and isinstance(c := e.get("customer_id"), str)}
    wanted: set[str] = {c for c in named if plain_text(c, 40)} | refs.customer_ids()  # per customer, not event
    customers = customers_seen(uow, wanted, vis)
    now_of = clock_times(uow.conn, customers)
    open_since = OpenPeriods(uow.conn, customers, now_of, now)
    result = IngestResult()
    checked: dict[tuple[str, str], tuple[int, CheckedEvent]] = {}
    for index, raw in enumerate(events):
        if not isinstance(raw, dict):
            _reject(result, index, None, ValidationError("invalid_event", "Each event is an object.", "events"))
            continue
        try:
            event = check_event(refs.resolve(raw, customers), meters, customers, now, settings, now_of, open_since)
        except RemitError as exc:
            _reject(result, index, raw.get("transaction_id"), exc)
            continue
        key = (event.customer_id, event.transaction_id)
        if key in checked:
            result.duplicates.append({"index": index, "transaction_id": event.transaction_id})
            continue
        checked[key] = (index, event)
    if not checked:
        return result
    ids = dict(zip(checked, new_ids("uev", len(checked)), strict=True))
    if uow.is_postgres and len(checked) == 1:
        ((key, (_, event)),) = checked.items()
        new_keys = {key} if _store_one_pg(uow, ids[key], event, now) else set()
    elif uow.is_postgres:
        keys = sorted(checked)
        taken = _store_batch_pg(uow, keys, [ids[k] for k in keys], [checked[k][1] for k in keys], now)
        new_keys = {k for i, k in enumerate(keys) if i not in taken} if taken else set(keys)
    else:
        new_keys = _claim_keys(uow.conn, list(checked), now)
        new_rows = [_row(ids[k], checked[k][1], now) for k in checked if k in new_keys]
        if new_rows:
            uow.conn.execute(_INSERT_EVENTS, new_rows)
    for key, (index, event) in checked.items():
        entry = {"index": index, "transaction_id": event.transaction_id}
        if key in new_keys:
            result.accepted.append({**entry, "id": ids[key]})
        else:
            result.duplicates.append(entry)
    stored = [(checked[k][1].customer_id, checked[k][1].occurred_at) for k in new_keys]
    after_store(uow.conn, now, stored, customers, now_of)
    return result


def after_store(
    conn: Connection,
    now: datetime,
    stored: Sequence[tuple[str, datetime]],
    customers: Mapping[str, Mapping[str, Any]],
    now_of: Mapping[str, datetime],
) -> None:
    """In the transaction that stored new events (customer, time): reopen periods the bill run may have closed
    already, and flag the customers for alerts and usage thresholds."""
    if not stored:
        return
    reopen_for_late_usage(conn, now, stored, customers, now_of)
    usage_watch.mark_on(conn, {c for c, _ in stored})


def clock_times(conn: Connection, customers: Mapping[str, Mapping[str, Any]]) -> dict[str, datetime]:
    """The time of each customer on a test clock: its clock's (one query, only when there are such customers)."""
    clock_of = {c: row["test_clock_id"] for c, row in customers.items() if row.get("test_clock_id")}
    if not clock_of:
        return {}
    frozen = dict(
        conn.execute(
            select(t.test_clocks.c.id, t.test_clocks.c.frozen_at).where(
                t.test_clocks.c.id.in_(sorted(set(clock_of.values())))
            )
        ).all()
    )
    return {c: ensure_utc(frozen[k]) for c, k in clock_of.items() if k in frozen}


def needs_review() -> Any:
    """Subscriptions the bill run still looks at: live, or ended with periods it has not reviewed yet."""
    s = t.subscriptions.c
    return or_(s.ended_on.is_(None), s.reviewed_from_on.is_(None), s.reviewed_from_on < s.ended_on)


class OpenPeriods:
    """``OpenSince`` for a batch: on the first question, one query for every customer of the batch.

    The periods of a customer's events on a meter are open from the start of the earliest period that the bill run
    has not billed, of the subscriptions that bill that meter: those the run still bills (live, or ended with
    periods left to bill) whose timeline carries a usage price on the meter (the items they started with, a phase,
    a change, scheduled or past: as ``subscriptions._check_meters_free`` finds them). For each, the period holding
    the day the last successful run billed it through (``billed_through_on``, which only that moves, and only
    forward), or its start if no run has. Usually that is the current period; it is an earlier one when a run could
    not bill the customer (``bill_run_failures``) or none ran since the period ended, so that its usage can still
    be sent, or canceled, before it is invoiced. Another subscription's open period (a yearly one beside a monthly
    one) does not reopen the meter's: its invoiced periods take late events only within the grace period, as do
    those of a meter no such subscription bills (None)."""

    def __init__(
        self,
        conn: Connection,
        customers: Mapping[str, Mapping[str, Any]],
        now_of: Mapping[str, datetime],
        now: datetime,
    ) -> None:
        self.conn, self.customers, self.now_of, self.now = conn, customers, now_of, now
        self.since: dict[tuple[str, str], datetime] | None = None
        self.earliest_of: dict[str, datetime] = {}

    def __call__(self, customer_id: str, meter: str) -> datetime | None:
        if self.since is None:
            self._load()
            assert self.since is not None
        return self.since.get((customer_id, meter))

    def earliest(self, customer_id: str) -> datetime | None:
        """When the customer's earliest open period, on any meter, began (None: no subscription bills a meter)."""
        if self.since is None:
            self._load()
        return self.earliest_of.get(customer_id)

    def _load(self) -> None:
        s, e = t.subscriptions.c, t.subscription_events.c
        subs: dict[str, tuple[str, datetime]] = {}  # subscription -> (customer, when its open period began)
        price_ids: dict[str, set[str]] = {}  # subscription -> every price its timeline carries
        ids = sorted(self.customers)
        for start in range(0, len(ids), 10_000):
            rows = self.conn.execute(
                select(
                    s.id,
                    s.customer_id,
                    s.anchor_on,
                    s.interval_unit,
                    s.interval_count,
                    s.started_on,
                    s.billed_through_on,
                    cast(e["items"], Text),  # parsed by orjson: only the price ids are wanted
                )
                .join(t.subscription_events, e.subscription_id == s.id)
                .where(
                    s.customer_id.in_(ids[start : start + 10_000]),
                    needs_review(),  # as the bill run picks them: live, or ended with periods left to review
                    e.revoked_at.is_(None),  # a scheduled change released never bills
                )
            ).all()
            for sub_id, customer_id, anchor_on, unit, count, started_on, billed_on, items in rows:
                price_ids.setdefault(sub_id, set()).update(item["price_id"] for item in fastjson.loads(items))
                if sub_id in subs:
                    continue
                tz = self.customers[customer_id]["timezone"]
                today = local_date(self.now_of.get(customer_id, self.now), tz)
                billed_to = started_on if billed_on is None else max(started_on, billed_on)
                period = period_containing(anchor_on, Interval.parse(unit, count), min(today, billed_to))
                subs[sub_id] = (customer_id, local_midnight(max(period.start_on, started_on), tz))
        prices = load_prices(self.conn, set().union(*price_ids.values()))  # kept once read: prices never change
        since: dict[tuple[str, str], datetime] = {}
        for sub_id, (customer_id, began) in subs.items():
            for price_id in price_ids[sub_id]:
                price = prices.get(price_id)
                if price is None or price.meter is None:
                    continue
                key = (customer_id, price.meter)
                if key not in since or began < since[key]:
                    since[key] = began
                if customer_id not in self.earliest_of or began < self.earliest_of[customer_id]:
                    self.earliest_of[customer_id] = began
        self.since = since


_REOPEN = (
    update(t.subscriptions)
    .where(t.subscriptions.c.customer_id == bindparam("b_customer"))
    .values(
        # Never forward, and a subscription never billed (no mark) stays so; every row is written, locked.
        reviewed_from_on=case(
            (t.subscriptions.c.reviewed_from_on > bindparam("b_day"), bindparam("b_day")),
            else_=t.subscriptions.c.reviewed_from_on,
        )
    )
)


def reopen_for_late_usage(
    conn: Connection,
    now: datetime,
    stored: Sequence[tuple[str, datetime]],
    customers: Mapping[str, Mapping[str, Any]],
    now_of: Mapping[str, datetime],
) -> None:
    """Events dated before the customer's today may fall in a period a bill run has closed: move the
    subscriptions' review mark back to the event's day (never forward), so the next run looks at that period again
    and bills the difference as a correction. Events dated today (the usual case) cost nothing here.

    The update touches the rows even when the mark is already earlier, on purpose: it takes their locks. The bill
    run locks a batch's subscriptions before it reads their usage (PostgreSQL), so this either commits before that
    read (and the run sees these events) or waits for the run to commit and then moves its new mark back. Keys are
    taken in customer order, like the bill run's, so the two never deadlock."""
    # Each customer's earliest event, then whether it is before the customer's today: when today began (UTC) is
    # computed once per time zone and clock, so the usual event (dated today) costs a comparison, and a late one
    # a time-zone conversion per customer, not per event.
    first: dict[str, datetime] = {}
    for customer_id, at in stored:
        seen = first.get(customer_id)
        if seen is None or at < seen:
            first[customer_id] = at
    midnights: dict[tuple[str, datetime], datetime] = {}
    earliest: dict[str, date] = {}
    for customer_id, at in first.items():
        tz = customers[customer_id]["timezone"]
        # A margin on the real clock: a request that began before midnight, or on a machine whose clock is a little
        # behind, may commit after the midnight run has read the period. Its events of the day ending are treated
        # as late from REOPEN_MARGIN before midnight (they take the subscriptions' locks, so the run sees them or
        # bills them next time); a test clock moves only with its advances.
        customer_now = now_of[customer_id] if customer_id in now_of else now + REOPEN_MARGIN
        today_began = midnights.get((tz, customer_now))
        if today_began is None:
            today_began = midnights[tz, customer_now] = local_midnight(local_date(customer_now, tz), tz)
        if at < today_began:
            earliest[customer_id] = local_date(at, tz)
    if earliest:
        conn.execute(_REOPEN, [{"b_customer": c, "b_day": d} for c, d in sorted(earliest.items())])


# One event: its key claimed and the event written in one statement (one round trip instead of a claim and a COPY).
_PG_ONE = (
    "WITH new AS (INSERT INTO usage_event_keys (customer_id, transaction_id, received_at) VALUES (%s, %s, %s) "
    "ON CONFLICT DO NOTHING RETURNING 1) "
    f"INSERT INTO usage_events ({', '.join(EVENT_COLUMNS)}) "
    "SELECT %s, %s::timestamptz, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json FROM new"
)


# A batch: its keys claimed and its new events stored by one statement, from one array per column (the API's
# batches are small: one round trip, no COPY, and it can run without BEGIN and COMMIT). Keys in sorted order.
_PG_BATCH = (
    "WITH k AS MATERIALIZED (SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::timestamptz[], "
    "%s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], %s::boolean[], %s::json[]) "
    "WITH ORDINALITY AS u(c, x, id, at, sub, meter, value, dim, grp, matched, props, i)), "
    "new AS (INSERT INTO usage_event_keys (customer_id, transaction_id, received_at) SELECT c, x, %s FROM k "
    "ON CONFLICT DO NOTHING RETURNING customer_id, transaction_id), "
    f"ins AS (INSERT INTO usage_events ({', '.join(EVENT_COLUMNS)}) "
    "SELECT k.id, k.at, k.c, k.sub, k.meter, k.x, %s, k.value, k.dim, k.grp, k.matched, k.props "
    "FROM k JOIN new ON new.customer_id = k.c AND new.transaction_id = k.x) "
    "SELECT i - 1 FROM k WHERE NOT EXISTS (SELECT FROM new WHERE new.customer_id = k.c AND new.transaction_id = k.x)"
)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _nullable_array(values: list[str | None]) -> str:
    """An array literal of strings, some of them NULL."""
    present = [v for v in values if v is not None]
    if len(present) == len(values):
        return _array(present)
    return "{" + ",".join("NULL" if v is None else _quoted(v) for v in values) + "}"


def _store_batch_pg(
    uow: UnitOfWork, keys: list[tuple[str, str]], ids: list[str], events: list[CheckedEvent], now: datetime
) -> set[int]:
    """Claim the keys (sorted, distinct) and store the new events; the positions of the keys that were not new."""
    params = (
        _array([k[0] for k in keys]),
        _array([k[1] for k in keys]),
        _array(ids),
        _array([e.occurred_text for e in events]),
        _nullable_array([e.subscription_id for e in events]),
        _array([e.meter_code for e in events]),
        _nullable_array([e.value for e in events]),
        _nullable_array([e.dimension for e in events]),
        "{" + ",".join(_quoted(e.group_key) for e in events) + "}",
        "{" + ",".join("t" if e.matched else "f" for e in events) + "}",
        "{" + ",".join(_quoted(e.properties) for e in events) + "}",
        now,
        now,
    )
    driver: Any = uow.conn.connection.driver_connection
    with driver.cursor() as cur:
        cur.execute(_PG_BATCH, params)
        return {i for (i,) in cur.fetchall()}


def _store_one_pg(uow: UnitOfWork, event_id: str, e: CheckedEvent, now: datetime) -> bool:
    """Claim one event's key and store it if the key was new; whether it was."""
    params = (
        e.customer_id,
        e.transaction_id,
        now,
        event_id,
        e.occurred_text,
        e.customer_id,
        e.subscription_id,
        e.meter_code,
        e.transaction_id,
        now,
        e.value,
        e.dimension,
        e.group_key,
        e.matched,
        e.properties,
    )
    driver: Any = uow.conn.connection.driver_connection
    with driver.cursor() as cur:
        cur.execute(_PG_ONE, params)
        return bool(cur.rowcount == 1)


def _claim_keys(conn: Connection, keys: Sequence[tuple[str, str]], now: datetime) -> set[tuple[str, str]]:
    """Insert the dedup keys; the ones that were new come back. A key another transaction holds is a duplicate."""
    if not keys:
        return set()
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(t.usage_event_keys)
        .on_conflict_do_nothing()
        .returning(t.usage_event_keys.c.customer_id, t.usage_event_keys.c.transaction_id)
    )
    # In sorted order, as the import claims them: writers that take keys in one order never deadlock.
    params = [{"customer_id": c, "transaction_id": x, "received_at": now} for c, x in sorted(keys)]
    returned = conn.execute(stmt, params).all()
    return {(c, txn) for c, txn in returned}
