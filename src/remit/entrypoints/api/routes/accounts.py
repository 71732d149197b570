"""Legal entities, customers, API keys and test clocks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.domain.errors import Forbidden, NotFound, ValidationError
from remit.entrypoints.api import present
from remit.entrypoints.api.deps import Admin, Read, Write
from remit.entrypoints.api.direct import threaded
from remit.entrypoints.api.routes.common import CreatedGte, CreatedLte, Limit, StartingAfter, filters, page
from remit.entrypoints.api.schemas import (
    ApiKeyCreate,
    ApiKeyPublic,
    CustomerCreate,
    CustomerPublic,
    LegalEntityCreate,
    LegalEntityPublic,
    ListOf,
    TestClockAdvance,
    TestClockCreate,
    TestClockPublic,
    UpcomingInvoicePublic,
)
from remit.service_layer import accounts, api_keys, clocks, views

router = APIRouter()


@router.post("/legal_entities", response_model=LegalEntityPublic, status_code=201, tags=["legal entities"])
def create_legal_entity(body: LegalEntityCreate, ctx: Admin) -> Any:
    ctx.require_unscoped("Creating a legal entity")
    with ctx.uow() as uow:
        entity_id = accounts.create_legal_entity(
            uow, body.name, body.country, body.currency, **body.model_dump(exclude={"name", "country", "currency"})
        )
        return uow.conn.execute(select(t.legal_entities).where(t.legal_entities.c.id == entity_id)).mappings().one()


@router.get("/legal_entities", response_model=ListOf[LegalEntityPublic], tags=["legal entities"])
def list_legal_entities(ctx: Read, limit: Limit = 20, starting_after: StartingAfter = None) -> Any:
    query = select(t.legal_entities)
    if ctx.principal.legal_entity_id:
        query = query.where(t.legal_entities.c.id == ctx.principal.legal_entity_id)
    with ctx.uow() as uow:
        return page(views.page(uow, query, t.legal_entities.c.id, limit + 1, starting_after, query), limit)


@router.get("/legal_entities/{entity_id}", response_model=LegalEntityPublic, tags=["legal entities"])
def get_legal_entity(entity_id: str, ctx: Read) -> Any:
    with ctx.uow() as uow:
        row = uow.conn.execute(select(t.legal_entities).where(t.legal_entities.c.id == entity_id)).mappings().first()
    if row is None or ctx.principal.legal_entity_id not in (None, entity_id):
        raise NotFound("legal_entity", entity_id, "entity_id")
    return row


@router.post("/customers", response_model=CustomerPublic, status_code=201, tags=["customers"])
@threaded
def create_customer(body: CustomerCreate, ctx: Write) -> Any:
    entity = body.legal_entity_id or ctx.principal.legal_entity_id
    if ctx.principal.legal_entity_id and entity != ctx.principal.legal_entity_id:
        raise NotFound("legal_entity", entity, "legal_entity_id")
    if ctx.principal.livemode and body.test_clock_id:
        raise ValidationError(
            "test_clock_requires_test_key", "Only a test-mode key can attach a test clock.", "test_clock_id"
        )
    if not ctx.principal.livemode and not body.test_clock_id:
        raise ValidationError(
            "test_clock_required", "Test-mode customers live on a test clock: give test_clock_id.", "test_clock_id"
        )
    with ctx.uow() as uow:
        if body.test_clock_id:
            ctx.vis.check_clock(uow, body.test_clock_id)
        row = accounts.create_customer_row(
            uow,
            body.name,
            currency_code=body.currency,
            country=body.country,
            email=body.email,
            legal_entity_id=entity,
            language=body.language,
            timezone=body.timezone,
            address=body.address,
            tax_ids=[x.model_dump() for x in body.tax_ids],
            external_id=body.external_id,
            test_clock_id=body.test_clock_id,
        )
        return present.customer(uow, row, balance=0)  # a new customer holds no credit


@router.get("/customers", response_model=ListOf[CustomerPublic], tags=["customers"])
def list_customers(
    ctx: Read,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
    created_gte: CreatedGte = None,
    created_lte: CreatedLte = None,
) -> Any:
    with ctx.uow() as uow:
        rows = views.list_customers(
            uow, limit + 1, starting_after, vis=ctx.vis, filters=filters(None, None, created_gte, created_lte)
        )
        return page([present.customer_by_id(uow, r["id"]) for r in rows], limit)


@router.get("/customers/{customer_id}", response_model=CustomerPublic, tags=["customers"])
@threaded
def get_customer(customer_id: str, ctx: Read) -> Any:
    with ctx.uow(read_only=True) as uow:
        return present.customer_by_id(uow, customer_id, ctx.vis)


@router.get("/customers/{customer_id}/upcoming_invoice", response_model=UpcomingInvoicePublic, tags=["invoices"])
@threaded
def upcoming_invoice(customer_id: str, ctx: Read) -> Any:
    """What the customer's next invoice will be, computed like the bill run; nothing is written."""
    with ctx.uow(read_only=True) as uow:
        return present.invoice(clocks.preview_upcoming(uow, customer_id, ctx.vis))


@router.post("/api_keys", response_model=ApiKeyPublic, status_code=201, tags=["api keys"])
def create_api_key(body: ApiKeyCreate, ctx: Admin) -> Any:
    """Create a key. Its secret is in this response only; Remit keeps an argon2 hash."""
    scoped = ctx.principal.legal_entity_id
    if scoped and body.legal_entity_id != scoped:
        raise Forbidden(
            "entity_scoped_key", "A key limited to one legal entity can only create keys for it.", "legal_entity_id"
        )
    # A key cannot create one that reaches further than itself: another mode, or a longer life.
    livemode = ctx.principal.livemode if body.livemode is None else body.livemode
    if livemode and not ctx.principal.livemode:
        raise Forbidden("test_mode_key", "A test-mode key can only create test-mode keys.", "livemode")
    until = ctx.principal.expires_at
    wanted = None if body.expires_at is None else views.utc_time(body.expires_at, "expires_at")
    if until is not None and (wanted is None or wanted > until):
        raise Forbidden(
            "key_outlives_creator",
            f"A key that expires can only create keys that expire no later than it does ({until.isoformat()}).",
            "expires_at",
        )
    with ctx.uow() as uow:
        return api_keys.create_key(uow, body.name, body.scopes, body.legal_entity_id, livemode, wanted)


@router.post("/test_clocks", response_model=TestClockPublic, status_code=201, tags=["test clocks"])
def create_test_clock(body: TestClockCreate, ctx: Write) -> Any:
    ctx.require_test("Creating a test clock")
    entity = body.legal_entity_id or ctx.principal.legal_entity_id
    if ctx.principal.legal_entity_id and entity != ctx.principal.legal_entity_id:
        raise NotFound("legal_entity", entity, "legal_entity_id")
    with ctx.uow() as uow:
        return accounts.get_test_clock(uow, accounts.create_test_clock(uow, body.name, body.frozen_at, entity))


@router.get("/test_clocks/{clock_id}", response_model=TestClockPublic, tags=["test clocks"])
def get_test_clock(clock_id: str, ctx: Read) -> Any:
    with ctx.uow() as uow:
        ctx.vis.check_clock(uow, clock_id, "clock_id")
        return accounts.get_test_clock(uow, clock_id)


@router.post("/test_clocks/{clock_id}/advance", response_model=TestClockPublic, tags=["test clocks"])
def advance_test_clock(clock_id: str, body: TestClockAdvance, ctx: Write) -> Any:
    """Move the clock forward; every renewal, trial end, scheduled change and invoice due on the way runs."""
    with ctx.uow() as uow:
        ctx.vis.check_clock(uow, clock_id, "clock_id")
    clocks.advance(ctx.remit.uow, clock_id, body.to)
    with ctx.uow() as uow:
        return accounts.get_test_clock(uow, clock_id)
