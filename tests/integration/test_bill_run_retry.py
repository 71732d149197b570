"""A batch whose writing meets a unique key (another run billed the same line first) is billed again, on both
databases: the bulk write raises SQLAlchemy's IntegrityError (PostgreSQL's COPY included), the batch's transaction
rolls back, and the retry's diff sees what is there. Each period is billed once and the numbers stay gapless."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from remit.bootstrap import Remit
from remit.domain.clock import FixedClock
from remit.service_layer import bill_run
from tests import builders as b

AS_OF = datetime(2026, 2, 1, 0, 5, tzinfo=UTC)


def test_a_batch_that_meets_a_unique_key_is_billed_again(app: Remit, monkeypatch: pytest.MonkeyPatch) -> None:
    b.seller(app)
    b.plan(app, "basic", "10.00")
    customers = b.subscribed_customers(app, 3, "basic")
    assert isinstance(app.clock, FixedClock)
    app.clock.move_to(AS_OF)
    real = bill_run.write_invoices
    calls: list[int] = []

    def first_time_twice(uow: Any, drafts: Any, *args: Any, **kwargs: Any) -> Any:
        """The first attempt writes the batch's lines twice: the second write meets the first's keys."""
        calls.append(len(drafts))
        if len(calls) == 1:
            real(uow, drafts, *args, **kwargs)
        return real(uow, drafts, *args, **kwargs)

    monkeypatch.setattr(bill_run, "write_invoices", first_time_twice)
    result = bill_run.run(app.uow, as_of=AS_OF)

    assert calls == [3, 3]  # the batch was billed again after the failed write
    assert result.invoices_created == 3
    for cus in customers:
        (invoice,) = b.invoices_of(app, cus)  # one invoice each: January and February (in advance), once
        assert [ln["period_start_on"] for ln in invoice["lines"]] == ["2026-01-01", "2026-02-01"]
    numbers = sorted(inv["number"] for cus in customers for inv in b.invoices_of(app, cus))
    assert numbers == ["INV-2026-000001", "INV-2026-000002", "INV-2026-000003"]  # gapless: the failure used none
