"""A list of ids as one statement parameter selects exactly those rows, in every form it travels in."""

import pytest
from sqlalchemy import bindparam, select

from remit.adapters.db import tables as t
from remit.adapters.db.id_lists import ID_LIST_TYPES, id_list_value, in_id_list
from tests import builders as b


@pytest.mark.parametrize("count", [0, 1, 3])
def test_the_rows_of_the_ids_given_and_no_others(app, count):
    b.seller(app)
    made = [b.customer(app, None) for _ in range(4)]
    wanted = made[:count]
    with app.uow(read_only=True) as uow:
        variant, value = id_list_value(wanted, uow.is_postgres)
        param = bindparam("ids", type_=ID_LIST_TYPES[variant])
        query = select(t.customers.c.id).where(in_id_list(t.customers.c.id, variant, param))
        found = sorted(uow.conn.execute(query, {"ids": value}).scalars())
    assert found == sorted(wanted)
    assert variant.endswith("_one") == (count == 1)
