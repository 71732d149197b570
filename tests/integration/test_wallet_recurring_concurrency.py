"""Two processes granting recurring credits at once on PostgreSQL: each occurrence is granted exactly once."""

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.adapters.db.engine import make_engine
from remit.bootstrap import Remit
from remit.domain.clock import FixedClock
from remit.service_layer import wallets
from tests import builders as b

pytestmark = pytest.mark.postgres


def test_two_runs_at_once_grant_each_occurrence_once(postgres_url):
    app = Remit(make_engine(postgres_url, pool_size=10), FixedClock(datetime(2026, 1, 1, tzinfo=UTC)))
    with app.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())
    b.seller(app)
    wallet_ids = []
    for _ in range(30):
        cus = b.customer(app, None)
        with app.uow() as uow:
            wallet_ids.append(wallets.create_wallet(uow, cus)["id"])
        with app.uow() as uow:
            wallets.create_recurring_grant(uow, wallet_ids[-1], "2.5", interval="week", starts_on=date(2026, 1, 2))
    as_of = datetime(2026, 3, 1, tzinfo=UTC)  # 2 Jan to 27 Feb: 9 weekly occurrences each
    granted, errors = b.at_once(*[lambda: wallets.grant_recurring(app.uow, as_of)] * 2)
    assert errors == []
    assert sum(granted) == 30 * 9
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.wallet_grants)).scalar_one() == 30 * 9
        assert conn.execute(select(func.count()).select_from(t.wallet_transactions)).scalar_one() == 30 * 9
    with app.uow() as uow:
        for wallet_id in wallet_ids:
            wallets.check_ledger(uow, wallet_id)
            assert wallets.get_wallet(uow, wallet_id)["balance_credits"] == "22.5"
            assert wallets.list_recurring_grants(uow, wallet_id)[0]["next_grant_on"] == "2026-03-06"
    assert wallets.grant_recurring(app.uow, as_of) == 0
    app.engine.dispose()
