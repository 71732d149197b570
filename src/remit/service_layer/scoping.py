"""What an API key may see: its legal entity (or all), and live or test objects (test = customers on test clocks).

Objects outside a key's view are reported as not found, exactly like objects that do not exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, select, true

from remit.adapters.db import tables as t
from remit.domain.errors import NotFound
from remit.service_layer.unit_of_work import UnitOfWork

# Built once: a statement's cache key is computed once per statement object (see entrypoints/api/present.py).
_CUSTOMER = select(t.customers).where(t.customers.c.id == bindparam("customer_id"))


@dataclass(frozen=True, slots=True)
class Visibility:
    legal_entity_id: str | None = None  # None: every entity
    livemode: bool | None = None  # None: both (the CLI, an operator)

    def customers_clause(self) -> ColumnElement[bool]:
        c = t.customers.c
        parts: list[ColumnElement[bool]] = []
        if self.legal_entity_id is not None:
            parts.append(c.legal_entity_id == self.legal_entity_id)
        if self.livemode is True:
            parts.append(c.test_clock_id.is_(None))
        elif self.livemode is False:
            parts.append(c.test_clock_id.is_not(None))
        return and_(*parts) if parts else true()

    def sees_customer(self, row: Mapping[Any, Any]) -> bool:
        if self.legal_entity_id is not None and row["legal_entity_id"] != self.legal_entity_id:
            return False
        if self.livemode is None:
            return True
        return self.livemode == (row["test_clock_id"] is None)

    def check_customer(self, uow: UnitOfWork, customer_id: str, field: str = "customer_id") -> Mapping[Any, Any]:
        row = uow.conn.execute(_CUSTOMER, {"customer_id": customer_id}).mappings().first()
        if row is None or not self.sees_customer(row):
            raise NotFound("customer", customer_id, field)
        return row

    def check_owned(self, uow: UnitOfWork, table: Any, object_id: str, what: str, field: str = "id") -> None:
        """An object that belongs to a customer (subscription, invoice, credit note) must be in view."""
        row = uow.conn.execute(select(table.c.customer_id).where(table.c.id == object_id)).first()
        if row is None:
            raise NotFound(what, object_id, field)
        customer = uow.conn.execute(select(t.customers).where(t.customers.c.id == row[0])).mappings().first()
        if customer is None or not self.sees_customer(customer):
            raise NotFound(what, object_id, field)

    def check_clock(self, uow: UnitOfWork, clock_id: str, field: str = "test_clock_id") -> None:
        """A test clock in view: a test key's (or the CLI's), and, for a key limited to one legal entity, a clock
        of that entity (a clock of no entity may hold any entity's customers)."""
        clock = (
            None
            if self.livemode is True
            else uow.conn.execute(select(t.test_clocks.c.legal_entity_id).where(t.test_clocks.c.id == clock_id)).first()
        )
        if clock is None or self.legal_entity_id not in (None, clock.legal_entity_id):
            raise NotFound("test_clock", clock_id, field)


EVERYTHING = Visibility()
