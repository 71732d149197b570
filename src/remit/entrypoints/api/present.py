"""Rows to public dictionaries that the XPublic schemas validate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, func, select

from remit.adapters.db import tables as t
from remit.domain.errors import NotFound
from remit.service_layer.scoping import EVERYTHING, Visibility
from remit.service_layer.unit_of_work import UnitOfWork
from remit.service_layer.views import invoice_public, money, plain


def customer(uow: UnitOfWork, row: Mapping[Any, Any], balance: int | None = None) -> dict[str, Any]:
    """A customer row as the API shows it. ``balance`` in minor units when the caller knows it (a new customer
    holds none), otherwise it is read."""
    if balance is None:
        balance = int(
            uow.conn.execute(
                select(func.coalesce(func.sum(t.balance_transactions.c.amount_minor), 0)).where(
                    t.balance_transactions.c.customer_id == row["id"]
                )
            ).scalar_one()
        )
    out = {**dict(row), "livemode": row["test_clock_id"] is None, "balance": money(balance, row["currency"])}
    out.pop("balance_minor", None)
    return out


# The customer's balance, as a column of a query on customers: one round trip for both.
_BALANCE = (
    select(func.coalesce(func.sum(t.balance_transactions.c.amount_minor), 0))
    .where(t.balance_transactions.c.customer_id == t.customers.c.id)
    .scalar_subquery()
    .label("balance_minor")
)
# Built once, with a bound parameter: SQLAlchemy computes a statement's cache key once per statement object, so a
# statement built anew for each request costs that traversal (most of a query's Python time) every time.
_CUSTOMER_WITH_BALANCE = select(t.customers, _BALANCE).where(t.customers.c.id == bindparam("customer_id"))


def customer_by_id(uow: UnitOfWork, customer_id: str, vis: Visibility = EVERYTHING) -> dict[str, Any]:
    """The customer with its balance, in one query; not found (like a customer that does not exist) when it is
    outside ``vis``."""
    row = uow.conn.execute(_CUSTOMER_WITH_BALANCE, {"customer_id": customer_id}).mappings().first()
    if row is None or not vis.sees_customer(row):
        raise NotFound("customer", customer_id, "customer_id")
    return customer(uow, row, int(row["balance_minor"]))


def expand_customers(uow: UnitOfWork, rows: list[dict[str, Any]], expand: list[str] | None) -> None:
    """`expand=customer` on a list: every row's customer, with its balance, in one query for the page."""
    if not expand or "customer" not in expand or not rows:
        return
    ids = sorted({r["customer_id"] for r in rows})
    found = {
        r["id"]: customer(uow, r, int(r["balance_minor"]))
        for r in uow.conn.execute(select(t.customers, _BALANCE).where(t.customers.c.id.in_(ids))).mappings()
    }
    for row in rows:
        row["customer"] = found[row["customer_id"]]


def subscription(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = dict(row)
    out["interval"] = out.pop("interval_unit")
    return out


def invoice(inv: Mapping[Any, Any]) -> dict[str, Any]:
    out = invoice_public(inv)
    if "lines" in out:
        out["lines"] = [
            {**ln, "quantity": plain(ln["quantity"]), "unit_price": plain(ln["unit_price"])} for ln in out["lines"]
        ]
    return out


def price(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = dict(row)
    out["interval"] = out.pop("interval_unit")
    return out


def plan(uow: UnitOfWork, row: Mapping[Any, Any]) -> dict[str, Any]:
    versions = list(
        uow.conn.execute(
            select(t.plan_versions).where(t.plan_versions.c.plan_id == row["id"]).order_by(t.plan_versions.c.version)
        ).mappings()
    )
    prices = list(
        uow.conn.execute(select(t.prices).where(t.prices.c.plan_version_id.in_([v["id"] for v in versions]))).mappings()
    )
    return {
        **dict(row),
        "versions": [
            {**dict(v), "prices": [price(p) for p in prices if p["plan_version_id"] == v["id"]]} for v in versions
        ],
    }


def coupon(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = dict(row)
    out["amount_off"] = money(out.pop("amount_off_minor"), row["currency"]) if row["currency"] else None
    out["percent_off"] = plain(row["percent_off"]) if row["percent_off"] is not None else None
    return out


def event(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = dict(row)
    out["sequence"] = out.pop("id")
    out["id"] = out.pop("public_id")
    return out
