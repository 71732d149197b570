"""PostgreSQL plans the preview's statements once per connection, and runs Remit's statements without JIT.

A prepared statement whose only parameter is an id list (``= ANY(string_to_array(:ids, ','))``) never gets a
generic plan: PostgreSQL keeps planning it anew, which was most of its work per preview. One id goes as ``= :id``
(``adapters/db/id_lists.py``), whose generic plan PostgreSQL adopts after five executions.
"""

import pytest
from sqlalchemy import text

from remit.adapters.db.engine import make_engine
from remit.bootstrap import Remit
from remit.service_layer import clocks
from remit.service_layer.scoping import Visibility
from tests import builders as b


@pytest.mark.postgres
@pytest.mark.parametrize("app", ["postgresql"], indirect=True)
def test_the_preview_statements_settle_on_generic_plans(app):
    b.seller(app)
    b.plan(app, "basic", "10.00")
    customers = b.subscribed_customers(app, 3, "basic")
    url = app.engine.url.render_as_string(hide_password=False)
    one = make_engine(url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0)  # every call, one connection
    reader = Remit(app.engine, app.clock, one)
    try:
        for i in range(12):
            with reader.uow(read_only=True) as uow:
                preview = clocks.preview_upcoming(uow, customers[i % 3], Visibility(livemode=True))
            assert preview["lines"], preview
        with one.connect() as conn:
            plans = conn.execute(
                text("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
            ).all()
    finally:
        one.dispose()
    loader = [p for p in plans if "FROM customers JOIN legal_entities" in p[0] or "FROM subscriptions" in p[0]]
    assert len(loader) >= 2, plans  # the head and the subscriptions, prepared after five executions
    for statement, generic, custom in loader:
        assert generic > 0, f"planned anew on every call ({custom} custom plans): {statement[:120]}"


@pytest.mark.postgres
@pytest.mark.parametrize("app", ["postgresql"], indirect=True)
def test_remit_sessions_compile_nothing_just_in_time(app):
    """JIT is off for Remit's sessions, readers included: the planner chose it from cost estimates for a bill-run
    batch's subscriptions statement and spent 250 ms compiling a statement that runs in 35 ms."""
    for engine in (app.engine, app.readers):
        with engine.connect() as conn:
            assert conn.execute(text("SHOW jit")).scalar_one() == "off"
