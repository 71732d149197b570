"""Legal entities (the sellers), customers (the buyers) and test clocks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.exc import IntegrityError

from remit.adapters.db import tables as t
from remit.adapters.db.ids import new_id
from remit.domain.clock import ensure_utc
from remit.domain.errors import Conflict, NotFound, ValidationError
from remit.domain.money import RoundingPolicy, currency
from remit.service_layer.unit_of_work import UnitOfWork


def _is_country(value: object) -> bool:
    return isinstance(value, str) and len(value) == 2 and value.isalpha()


def _country(value: str, field: str = "country") -> str:
    if not _is_country(value):
        raise ValidationError("invalid_country", f"{value!r} is not a two-letter ISO 3166 country code.", field)
    return value.upper()


def create_legal_entity(
    uow: UnitOfWork,
    name: str,
    country: str,
    currency_code: str,
    *,
    address: Mapping[str, str] | None = None,
    tax_id: str | None = None,
    rounding_policy: str = "half_up",
    invoice_prefix: str = "INV",
    credit_note_prefix: str = "CN",
    auto_finalize: bool = True,
    payment_terms_days: int = 14,
) -> str:
    if not name.strip():
        raise ValidationError("missing_field", "A legal entity needs a name.", "name")
    try:
        policy = RoundingPolicy(rounding_policy)
    except ValueError:
        raise ValidationError("invalid_choice", "rounding_policy is half_up or half_even.", "rounding_policy") from None
    if not invoice_prefix.isalnum() or not credit_note_prefix.isalnum():
        raise ValidationError("invalid_prefix", "Number prefixes are letters and digits only.", "invoice_prefix")
    if payment_terms_days < 0:
        raise ValidationError("invalid_terms", "Payment terms cannot be negative.", "payment_terms_days")
    entity_id = new_id("le")
    uow.insert_many(
        t.legal_entities,
        [
            {
                "id": entity_id,
                "name": name,
                "address": dict(address or {}),
                "country": _country(country),
                "currency": currency(currency_code).code,
                "tax_id": tax_id,
                "rounding_policy": policy.value,
                "invoice_prefix": invoice_prefix,
                "credit_note_prefix": credit_note_prefix,
                "auto_finalize": auto_finalize,
                "payment_terms_days": payment_terms_days,
                "created_at": uow.now,
            }
        ],
    )
    uow.emit("legal_entity.created", "legal_entity", entity_id, {"name": name})
    return entity_id


# Statements built once: a statement's cache key is computed once per statement object.
_TWO_ENTITIES = select(t.legal_entities.c.id).limit(2)
_ENTITY = select(t.legal_entities.c.id).where(t.legal_entities.c.id == bindparam("legal_entity_id"))
_INSERT_CUSTOMER = insert(t.customers).returning(*t.customers.c)


def _insert_customer_of(entity: Any) -> Any:
    """INSERT a customer whose legal entity is found by ``entity`` (a query of one ``legal_entities`` id, or none)
    in the same statement: nothing is inserted when it finds none."""
    found = entity.subquery()
    columns = [
        found.c.id if column.key == "legal_entity_id" else bindparam(column.key, type_=column.type)
        for column in t.customers.c
    ]
    return (
        insert(t.customers)
        .from_select(list(t.customers.c.keys()), select(*columns).select_from(found))
        .returning(*t.customers.c)
    )


# The default entity (see default_entity): the only one, or no row when there are none or several.
_ONLY_ENTITY = select(func.min(_TWO_ENTITIES.subquery().c.id).label("id")).having(func.count() == 1)
_INSERT_CUSTOMER_OF_ENTITY = _insert_customer_of(_ENTITY)
_INSERT_CUSTOMER_OF_ONLY_ENTITY = _insert_customer_of(_ONLY_ENTITY)


def default_entity(uow: UnitOfWork) -> str:
    ids = list(uow.conn.execute(_TWO_ENTITIES).scalars())
    if len(ids) != 1:
        raise ValidationError(
            "legal_entity_required",
            "Name the legal entity: there is none yet." if not ids else "Name the legal entity: there are several.",
            "legal_entity_id",
        )
    return str(ids[0])


def _check_entity(uow: UnitOfWork, entity_id: str) -> None:
    if uow.conn.execute(_ENTITY, {"legal_entity_id": entity_id}).first() is None:
        raise NotFound("legal_entity", entity_id, "legal_entity_id")


def _external_id_taken(uow: UnitOfWork, external_id: str, entity: str | None, *, live: bool) -> bool:
    """Whether another customer of the legal entity, in the same mode (live, or test: on a test clock), has the
    external id: it is unique there only, so that another entity's or mode's customers are neither revealed nor
    blocked (a test customer cannot take a live customer's id)."""
    c = t.customers.c
    mode = c.test_clock_id.is_(None) if live else c.test_clock_id.is_not(None)
    found = select(c.id).where(c.external_id == external_id, c.legal_entity_id == entity, mode)
    return uow.conn.execute(found).first() is not None


def create_customer(
    uow: UnitOfWork,
    name: str,
    *,
    currency_code: str,
    country: str,
    email: str | None = None,
    legal_entity_id: str | None = None,
    language: str = "en",
    timezone: str = "UTC",
    address: Mapping[str, str] | None = None,
    tax_ids: Sequence[Mapping[str, str]] = (),
    external_id: str | None = None,
    test_clock_id: str | None = None,
) -> str:
    row = create_customer_row(
        uow,
        name,
        currency_code=currency_code,
        country=country,
        email=email,
        legal_entity_id=legal_entity_id,
        language=language,
        timezone=timezone,
        address=address,
        tax_ids=tax_ids,
        external_id=external_id,
        test_clock_id=test_clock_id,
    )
    return str(row["id"])


def create_customer_row(
    uow: UnitOfWork,
    name: str,
    *,
    currency_code: str,
    country: str,
    email: str | None = None,
    legal_entity_id: str | None = None,
    language: str = "en",
    timezone: str = "UTC",
    address: Mapping[str, str] | None = None,
    tax_ids: Sequence[Mapping[str, str]] = (),
    external_id: str | None = None,
    test_clock_id: str | None = None,
) -> Mapping[Any, Any]:
    """Create a customer; the new row as stored (``INSERT ... RETURNING``, no second query)."""
    uow.ensure_writable()
    if not name or not name.strip():
        raise ValidationError("missing_field", "A customer needs a name.", "name")
    if email is not None and "@" not in email:
        raise ValidationError("invalid_email", f"{email!r} is not an email address.", "email")
    cur = currency(currency_code)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError("invalid_timezone", f"{timezone!r} is not an IANA time zone.", "timezone") from None
    # The legal entity is checked (or, by default, found) inside the INSERT: one round trip instead of two. Only
    # when an error of the request's could come after the entity's is it checked first, so that its error still
    # comes first.
    checked_first = test_clock_id is not None or bool(external_id) or not _is_country(country)
    entity = legal_entity_id or None
    if checked_first:
        if entity:
            _check_entity(uow, entity)
        else:
            entity = default_entity(uow)
    if test_clock_id is not None:
        clock = uow.conn.execute(
            select(t.test_clocks.c.legal_entity_id).where(t.test_clocks.c.id == test_clock_id)
        ).first()
        if clock is None:
            raise NotFound("test_clock", test_clock_id, "test_clock_id")
        if clock.legal_entity_id is not None and clock.legal_entity_id != entity:
            raise ValidationError(
                "test_clock_other_entity",
                f"Test clock {test_clock_id!r} holds customers of legal entity {clock.legal_entity_id!r} only.",
                "test_clock_id",
            )
    if external_id and _external_id_taken(uow, external_id, entity, live=test_clock_id is None):
        raise Conflict("external_id_taken", f"A customer with external id {external_id!r} exists.", "external_id")
    customer_id = new_id("cus")
    values = {
        "id": customer_id,
        "legal_entity_id": entity,
        "external_id": external_id,
        "name": name,
        "email": email,
        "currency": cur.code,
        "language": language,
        "timezone": timezone,
        "country": _country(country),
        "address": dict(address or {}),
        "tax_ids": [dict(x) for x in tax_ids],
        "test_clock_id": test_clock_id,
        "created_at": uow.now,
    }
    row: Mapping[Any, Any] | None
    if checked_first:
        try:
            row = uow.conn.execute(_INSERT_CUSTOMER, values).mappings().one()
        except IntegrityError as exc:
            # Another request took the external id between the check and this insert (PostgreSQL reads committed
            # rows): the unique index refused it; the transaction is rolled back whole, as for the check.
            if external_id and "external_id" in str(exc.orig):
                raise Conflict(
                    "external_id_taken", f"A customer with external id {external_id!r} exists.", "external_id"
                ) from None
            raise
    elif entity:
        row = uow.conn.execute(_INSERT_CUSTOMER_OF_ENTITY, values).mappings().first()
        if row is None:
            raise NotFound("legal_entity", entity, "legal_entity_id")
    else:
        row = uow.conn.execute(_INSERT_CUSTOMER_OF_ONLY_ENTITY, values).mappings().first()
        if row is None:  # none or several: default_entity says which (or finds one created since)
            row = (
                uow.conn.execute(_INSERT_CUSTOMER, {**values, "legal_entity_id": default_entity(uow)}).mappings().one()
            )
    assert row is not None
    uow.emit("customer.created", "customer", customer_id, {"name": name, "currency": cur.code}, customer_id)
    return row


def get_customer(uow: UnitOfWork, customer_id: str) -> dict[str, Any]:
    row = uow.conn.execute(select(t.customers).where(t.customers.c.id == customer_id)).mappings().first()
    if row is None:
        raise NotFound("customer", customer_id, "customer_id")
    balance = uow.conn.execute(
        select(func.coalesce(func.sum(t.balance_transactions.c.amount_minor), 0)).where(
            t.balance_transactions.c.customer_id == customer_id
        )
    ).scalar_one()
    return {**dict(row), "balance_minor": int(balance)}


def create_test_clock(uow: UnitOfWork, name: str, frozen_at: datetime, legal_entity_id: str | None = None) -> str:
    """A test clock; with ``legal_entity_id``, it holds only that entity's customers and that entity's keys see it
    (without, any entity's customers, and only keys of every entity see it)."""
    if legal_entity_id is not None:
        _check_entity(uow, legal_entity_id)
    clock_id = new_id("clock")
    uow.insert_many(
        t.test_clocks,
        [
            {
                "id": clock_id,
                "name": name,
                "frozen_at": ensure_utc(frozen_at),
                "status": "ready",
                "created_at": uow.now,
                "legal_entity_id": legal_entity_id,
            }
        ],
    )
    return clock_id


def get_test_clock(uow: UnitOfWork, clock_id: str) -> dict[str, Any]:
    row = uow.conn.execute(select(t.test_clocks).where(t.test_clocks.c.id == clock_id)).mappings().first()
    if row is None:
        raise NotFound("test_clock", clock_id, "test_clock_id")
    return dict(row)


def customer_now(uow: UnitOfWork, customer: Mapping[Any, Any]) -> datetime:
    """A customer's 'now': their test clock's time, or the real clock's."""
    if customer["test_clock_id"]:
        frozen = get_test_clock(uow, customer["test_clock_id"])["frozen_at"]
        assert isinstance(frozen, datetime)
        return frozen
    return uow.now


def local_date(at: datetime, timezone: str) -> Any:
    return at.astimezone(ZoneInfo(timezone)).date()


def local_midnight(on: date, timezone: str) -> datetime:
    """The instant a local day begins, in UTC."""
    return datetime.combine(on, time(0), ZoneInfo(timezone)).astimezone(UTC)
