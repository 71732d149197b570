"""A list of ids as one statement parameter, so a statement is compiled and prepared once whatever the list's length.

On PostgreSQL the ids go as one comma-separated string split by the server, which is cheaper to send than an
array; ids never contain a comma (they are ``prefix_hex``), and if one ever did they would go as an array instead.
On SQLite likewise one parameter, a JSON list read by ``json_each``. (An expanding ``IN`` of 5,000 placeholders
cost SQLAlchemy about 70 ms to render per statement, and PostgreSQL a new statement to parse.)

A single id goes as a plain ``column = :id`` (``pg_one``, ``sqlite_one``): PostgreSQL never settles on a generic
plan for a prepared statement with ``= ANY(string_to_array(...))`` (the custom plan for a short list always looks
cheaper), so it plans such a statement anew on every execution, while ``= :id`` is planned once per connection.
For the upcoming-invoice preview (one customer, three statements) the planning was most of PostgreSQL's work.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import String, Text, any_, func, literal_column, select
from sqlalchemy.dialects.postgresql import ARRAY as PG_ARRAY

# The parameter's type for each form ("variant") of the list.
ID_LIST_TYPES: dict[str, Any] = {
    "pg": Text,
    "pg_array": PG_ARRAY(String),
    "pg_one": String,
    "sqlite": Text,
    "sqlite_one": String,
}


def id_list_value(ids: Iterable[str], postgres: bool) -> tuple[str, Any]:
    """The form a list of ids travels in, and the parameter's value."""
    ids = list(ids)
    if len(ids) == 1:
        return ("pg_one" if postgres else "sqlite_one"), ids[0]
    if not postgres:
        return "sqlite", json.dumps(ids)
    joined = ",".join(ids)
    if ids and joined.count(",") == len(ids) - 1:
        return "pg", joined
    return "pg_array", ids


def in_id_list(column: Any, variant: str, param: Any) -> Any:
    """``column IN`` the ids in ``param``, a parameter in the form ``id_list_value`` gives for ``variant``."""
    if variant.endswith("_one"):
        return column == param
    if variant == "sqlite":
        listed: Any = select(literal_column("value")).select_from(func.json_each(param))
        return column.in_(listed.scalar_subquery())
    if variant == "pg":
        return column == any_(func.string_to_array(param, ","))
    return column == any_(param)
