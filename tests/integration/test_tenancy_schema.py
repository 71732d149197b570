"""What migrations 0022 and 0023 hold on both databases: external ids unique per legal entity and mode, test
clocks owned by a legal entity; and the import (which sees every customer) refusing an external id it cannot
resolve to one customer."""

from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from remit.adapters.db import tables as t
from remit.adapters.db.engine import alembic_config
from remit.service_layer import accounts, subscriptions
from remit.service_layer.usage_import import import_events
from tests import builders as b

AT = (datetime(2026, 1, 1, tzinfo=UTC) - timedelta(minutes=1)).isoformat()


def _row(customer_id, entity, external_id, clock=None):
    return {
        "id": customer_id,
        "legal_entity_id": entity,
        "external_id": external_id,
        "name": "C",
        "email": None,
        "currency": "EUR",
        "language": "en",
        "timezone": "UTC",
        "country": "DE",
        "address": {},
        "tax_ids": [],
        "test_clock_id": clock,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }


def test_the_database_holds_external_ids_unique_per_entity_and_mode(app):
    entity = b.seller(app)
    with app.uow() as uow:
        other = accounts.create_legal_entity(uow, "Other", "US", "USD")
    clock = b.clock(app, datetime(2026, 1, 1, tzinfo=UTC))
    with app.engine.begin() as conn:
        conn.execute(
            insert(t.customers),
            [
                _row("cus_1", entity, "acme"),
                _row("cus_2", other, "acme"),
                _row("cus_3", entity, "acme", clock),
                _row("cus_4", entity, None),
                _row("cus_5", entity, None),
            ],
        )
    for clashing in (_row("cus_6", entity, "acme"), _row("cus_7", entity, "acme", clock)):
        with pytest.raises(IntegrityError), app.engine.begin() as conn:  # even past the service's check
            conn.execute(insert(t.customers), [clashing])


def test_the_import_refuses_an_external_id_of_several_customers(app):
    b.seller(app)
    b.usage_plan(app)
    clock = b.clock(app, datetime(2025, 12, 1, tzinfo=UTC))
    live = b.customer(app, None, external_id="acme")
    b.customer(app, clock, external_id="acme")  # the same id, in test mode
    solo = b.customer(app, None, external_id="solo")
    with app.uow() as uow:
        for cus in (live, solo):
            subscriptions.create_subscription(uow, cus, "api")
    events = [
        {"external_customer_id": ext, "code": "calls", "transaction_id": ext, "timestamp": AT, "properties": {"n": 1}}
        for ext in ("acme", "solo")
    ]
    report = import_events(app.engine, app.clock, list(enumerate(events, start=1)))
    assert (report.accepted, report.rejected) == (1, 1)
    assert [(r["line"], r["code"], r["field"]) for r in report.rejected_events] == [
        (1, "ambiguous_external_customer_id", "external_customer_id")
    ]
    with app.engine.connect() as conn:
        stored = conn.execute(select(t.usage_events.c.customer_id, t.usage_events.c.transaction_id)).all()
    assert [tuple(r) for r in stored] == [(solo, "solo")]


def test_0022_and_0023_keep_every_row_and_give_clocks_their_customers_entity(app):
    entity = b.seller(app)
    with app.uow() as uow:
        other = accounts.create_legal_entity(uow, "Other", "US", "USD")
    b.plan(app, "pro", "10.00")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    one, mixed, empty = b.clock(app, at), b.clock(app, at), b.clock(app, at)
    on_one = b.customer(app, one, external_id="acme", legal_entity_id=entity)
    b.customer(app, mixed, legal_entity_id=entity)
    b.customer(app, mixed, legal_entity_id=other)
    live = b.customer(app, None, external_id="live-1", legal_entity_id=entity)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, on_one, "pro")  # rows pointing at a rebuilt table
    config = alembic_config(app.engine)
    try:
        command.downgrade(config, "0020")
    finally:
        command.upgrade(config, "head")  # never leave the shared database behind
    with app.engine.connect() as conn:
        owners = dict(conn.execute(select(t.test_clocks.c.id, t.test_clocks.c.legal_entity_id)).all())
        customers = dict(conn.execute(select(t.customers.c.id, t.customers.c.external_id)).all())
        owner = conn.execute(select(t.subscriptions.c.customer_id).where(t.subscriptions.c.id == sub)).scalar_one()
    assert owners == {one: entity, mixed: None, empty: None}
    assert len(customers) == 4 and customers[on_one] == "acme" and customers[live] == "live-1"
    assert owner == on_one
    with app.uow() as uow:  # the live mode may use the test customer's id now
        accounts.create_customer(
            uow, "L", currency_code="EUR", country="DE", external_id="acme", legal_entity_id=entity
        )


def test_two_customers_racing_for_one_external_id_get_external_id_taken_not_a_crash(app, monkeypatch):
    """Both may pass the check before either inserts (PostgreSQL reads committed rows): the unique index refuses
    the second, which answers like the check does."""
    entity = b.seller(app)
    b.customer(app, None, external_id="acme")
    monkeypatch.setattr(accounts, "_external_id_taken", lambda *a, **k: False)  # the check passed, then the other won
    with pytest.raises(Exception) as exc, app.uow() as uow:
        accounts.create_customer(
            uow, "C", currency_code="EUR", country="DE", external_id="acme", legal_entity_id=entity
        )
    assert getattr(exc.value, "code", None) == "external_id_taken"
    assert exc.value.field == "external_id"
    with app.engine.connect() as conn:
        assert len(conn.execute(select(t.customers.c.id)).all()) == 1
