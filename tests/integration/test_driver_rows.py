"""Statements run on the driver's cursor give the rows SQLAlchemy gives; those that need type processing never
take that path."""

from datetime import datetime
from decimal import Decimal

import pytest
from sqlalchemy import bindparam, select

from remit.adapters.db import driver
from remit.adapters.db import tables as t
from remit.adapters.db.types import ExactDecimal
from tests import builders as b

_PLAIN = select(t.customers.c.id, t.customers.c.currency, t.customers.c.test_clock_id).where(
    t.customers.c.legal_entity_id == bindparam("entity")
)
_TIMES = select(t.customers.c.id, t.customers.c.created_at).where(t.customers.c.legal_entity_id == bindparam("entity"))
_EXACT = select(t.customers.c.id).where(t.customers.c.currency == bindparam("q", type_=ExactDecimal))


def test_the_same_rows_as_through_sqlalchemy(app):
    entity = b.seller(app)
    made = {b.customer(app, None) for _ in range(3)}
    with app.uow(read_only=True) as uow:
        direct = sorted(tuple(r) for r in driver.rows(uow.conn, _PLAIN, {"entity": entity}))
        usual = sorted(tuple(r) for r in uow.conn.execute(_PLAIN, {"entity": entity}))
        timed = driver.rows(uow.conn, _TIMES, {"entity": entity})
    assert direct == usual and {r[0] for r in direct} == made
    assert all(isinstance(r[1], datetime) and r[1].tzinfo is not None for r in timed)  # processed: UTC-aware


@pytest.mark.postgres
@pytest.mark.parametrize("app", ["postgresql"], indirect=True)
def test_only_statements_without_type_processing_skip_sqlalchemy(app):
    dialect = app.engine.dialect
    assert driver._plain(_PLAIN, dialect) is not None
    assert driver._plain(_TIMES, dialect) is None  # UTCDateTime converts the column
    assert driver._plain(_EXACT, dialect) is None  # ExactDecimal converts the parameter
    with app.uow() as uow:
        assert driver.rows(uow.conn, _EXACT, {"q": Decimal("1")}) == []


def test_nothing_skips_sqlalchemy_on_sqlite(sqlite_app):
    assert driver._plain(_PLAIN, sqlite_app.engine.dialect) is None
