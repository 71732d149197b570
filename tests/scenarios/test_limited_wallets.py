"""Wallets limited to some fees, on the test clock: API credits pay usage only, a goodwill wallet pays anything;
the same on drafts finalized by hand, in the upcoming-invoice preview, and through the API and the CLI's checks."""

import pytest
from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.domain.errors import NotFound, ValidationError
from remit.service_layer import catalog, clocks, invoices, subscriptions, usage, wallets
from tests import builders as b


def _world(app, **seller):
    b.seller(app, **seller)
    with app.uow() as uow:
        usage.create_meter(uow, "calls", "Calls", "sum", "n")
        catalog.create_plan(
            uow,
            "hybrid",
            "Hybrid",
            [
                {"currency": "EUR", "model": "flat", "config": {"amount": "50.00"}, "interval": "month"},
                {
                    "currency": "EUR",
                    "model": "per_unit",
                    "config": {"unit_price": "0.01"},
                    "usage": {"meter": "calls"},
                },
            ],
        )
    clock_id = b.clock(app, b.utc(2026, 1, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        api = wallets.create_wallet(uow, cus, name="API credits", applies_to={"fee_types": ["usage"]})
        goodwill = wallets.create_wallet(uow, cus, name="Goodwill", priority=2)
    with app.uow() as uow:
        wallets.grant(uow, api["id"], "100")
        wallets.grant(uow, goodwill["id"], "20")
        subscriptions.create_subscription(uow, cus, "hybrid", anchor="calendar")
    return clock_id, cus, api, goodwill


def _use(app, cus, calls):
    with app.uow() as uow:
        result = usage.ingest(
            uow,
            [
                {
                    "customer_id": cus,
                    "code": "calls",
                    "transaction_id": f"t{i}",
                    "timestamp": b.utc(2026, 1, 10).isoformat(),
                    "properties": {"n": n},
                }
                for i, n in enumerate(calls)
            ],
        )
    assert not result.rejected


def _credits_of(app, wallet_id):
    with app.uow() as uow:
        wallets.check_ledger(uow, wallet_id)
        return [(x["kind"], x["amount"]) for x in wallets.list_transactions(uow, wallet_id, None)]


def test_monthly__hybrid__calendar__usage_credits_pay_only_usage_and_goodwill_pays_anything(app):
    clock_id, cus, api, goodwill = _world(app)
    assert api["applies_to"] == {"fee_types": ["usage"], "meters": [], "prices": []}
    clocks.advance(app.uow, clock_id, b.utc(2026, 1, 20))
    _use(app, cus, [1000, 2000])  # 3,000 calls: 30.00
    with app.uow(read_only=True) as uow:
        preview = clocks.preview_upcoming(uow, cus)
    assert [preview[k] for k in ("total_minor", "applied_credits_minor", "amount_due_minor")] == [8000, 3000, 5000]
    clocks.advance(app.uow, clock_id, b.utc(2026, 2, 1))
    assert [(i["issued_on"], i["total"], i["applied_credits"], i["amount_due"]) for i in b.invoices_of(app, cus)] == [
        ("2026-01-01", "50.00", "20.00", "30.00"),  # the platform fee: goodwill only; no usage yet
        ("2026-02-01", "80.00", "30.00", "50.00"),  # February's fee + January's usage: the API credits pay usage
    ]
    assert _credits_of(app, api["id"]) == [("grant", "100.00"), ("consumption", "-30.00")]
    assert _credits_of(app, goodwill["id"]) == [("grant", "20.00"), ("consumption", "-20.00")]


def test_drafts_finalized_by_hand_are_paid_the_same_way(app):
    clock_id, cus, api, _goodwill = _world(app, auto_finalize=False)
    clocks.advance(app.uow, clock_id, b.utc(2026, 1, 20))
    _use(app, cus, [500])
    clocks.advance(app.uow, clock_id, b.utc(2026, 2, 1))
    drafts = b.invoices_of(app, cus)
    assert [i["status"] for i in drafts] == ["draft", "draft"]
    for draft in drafts:
        with app.uow() as uow:
            invoices.finalize(uow, draft["id"])
    assert [(i["total"], i["applied_credits"]) for i in b.invoices_of(app, cus)] == [
        ("50.00", "20.00"),
        ("55.00", "5.00"),
    ]
    assert _credits_of(app, api["id"])[-1] == ("consumption", "-5.00")


def test_a_limit_to_a_meter_or_a_price_and_lifting_it(app):
    clock_id, cus, api, goodwill = _world(app)
    with app.uow() as uow:
        wallets.void_wallet(uow, goodwill["id"])
    with app.uow() as uow:
        flat = uow.conn.execute(select(t.prices.c.id).where(t.prices.c.usage.is_(None))).scalar_one()
        shown = wallets.update_wallet(uow, api["id"], {"applies_to": {"prices": [flat]}})
    assert shown["applies_to"] == {"fee_types": [], "meters": [], "prices": [flat]}
    clocks.advance(app.uow, clock_id, b.utc(2026, 1, 20))
    _use(app, cus, [1000])
    with app.uow() as uow:
        wallets.update_wallet(uow, api["id"], {"applies_to": {"meters": ["calls"]}})
    clocks.advance(app.uow, clock_id, b.utc(2026, 2, 1))
    assert [i["applied_credits"] for i in b.invoices_of(app, cus)] == ["50.00", "10.00"]
    with app.uow() as uow:
        assert wallets.update_wallet(uow, api["id"], {"applies_to": None})["applies_to"] is None


@pytest.mark.parametrize(
    ("applies_to", "error", "code", "field"),
    [
        ({"fee_types": ["storage"]}, ValidationError, "invalid_value", "applies_to.fee_types"),
        ({"meters": ["nope"]}, NotFound, "meter_not_found", "applies_to.meters"),
        ({"prices": ["price_nope"]}, NotFound, "price_not_found", "applies_to.prices"),
        ({"regions": ["eu"]}, ValidationError, "invalid_value", "applies_to"),
    ],
)
def test_bad_limits_are_refused(app, applies_to, error, code, field):
    b.seller(app)
    cus = b.customer(app, None)
    with app.uow() as uow, pytest.raises(error) as refused:
        wallets.create_wallet(uow, cus, applies_to=applies_to)
    assert (refused.value.code, refused.value.field) == (code, field)
    with app.uow() as uow:
        assert wallets.list_wallets(uow) == []
