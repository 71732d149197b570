"""Usage across a subscription's items and changes: each event is billed once, whatever prices the subscription
holds side by side."""

import pytest
from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.domain.errors import Conflict
from remit.service_layer import catalog, clocks, subscriptions, usage
from tests import builders as b


def _usage_price(meter: str, unit_price: str, name: str) -> dict[str, object]:
    return {
        "currency": "EUR",
        "model": "per_unit",
        "config": {"unit_price": unit_price},
        "name": name,
        "usage": {"meter": meter},
    }


def _set_up(app):
    """A meter ``calls``; plan ``api`` (a 10.00 fee and 1.00 a call), plan ``other`` (2.00 a call) and an add-on
    price outside any plan that bills the same meter (3.00 a call). The prices by name."""
    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "calls", "Calls", "sum", "n")
        fee = {"currency": "EUR", "model": "flat", "config": {"amount": "10.00"}, "name": "Fee"}
        catalog.create_plan(uow, "api", "API", [fee, _usage_price("calls", "1.00", "Calls")])
        catalog.create_plan(uow, "other", "Other", [_usage_price("calls", "2.00", "Other calls")])
        product = catalog.create_product(uow, "Metered support", "add_on")
        catalog.create_price(uow, product, _usage_price("calls", "3.00", "Support calls"))
    with app.engine.connect() as conn:
        return dict(conn.execute(select(t.prices.c.name, t.prices.c.id)).all())


@pytest.mark.parametrize("add_on", ["Calls", "Other calls", "Support calls"])
def test_an_add_on_may_not_bill_a_meter_the_subscription_bills_already(app, add_on):
    """Events name the customer, not a price: two of a subscription's prices on one meter would bill every event
    twice (the plan's own usage price given again as an add-on billed 5 calls as 10). Refused, nothing written."""
    prices = _set_up(app)
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with pytest.raises(Conflict) as err, app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "api", add_ons=[{"price_id": prices[add_on]}])
    assert (err.value.code, err.value.field) == ("meter_already_billed", "add_ons[0].price_id")
    with app.engine.connect() as conn:
        assert conn.execute(select(t.subscriptions.c.id)).all() == []


def test_a_plan_change_may_not_bring_a_meter_an_add_on_bills(app):
    """A subscription whose add-on bills the meter cannot change to a plan that bills it too (the add-on stays
    through the change); one without such an add-on can, and its usage is billed once."""
    prices = _set_up(app)
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        catalog.create_plan(
            uow, "fees", "Fees", [{"currency": "EUR", "model": "flat", "config": {"amount": "5.00"}, "name": "Base"}]
        )
        sub = subscriptions.create_subscription(
            uow, cus, "fees", anchor="calendar", add_ons=[{"price_id": prices["Support calls"]}]
        )
    with pytest.raises(Conflict) as err, app.uow() as uow:
        subscriptions.change_plan(uow, sub, "other")
    assert (err.value.code, err.value.field) == ("meter_already_billed", "plan")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    with app.uow() as uow:
        usage.ingest(
            uow,
            [
                {
                    "customer_id": cus,
                    "code": "calls",
                    "transaction_id": "t1",
                    "timestamp": "2026-03-02T00:00:00Z",
                    "properties": {"n": 5},
                }
            ],
        )
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    usage_lines = [ln for ln in b.lines_of(app, cus) if ln[0] == "usage"]
    assert usage_lines == [("usage", "2026-03-01", "2026-04-01", "15.00")]  # 5 calls × 3.00, once


def test_a_charge_nothing_counts_for_any_more_keeps_its_one_value_that_holds_the_separator(app):
    """A meter with one dimension whose value holds "|" ("us|east"): threshold-billed, then every event canceled.
    Live usage lists the charge under its group (it showed none), and the period's end credits it as "API calls
    (us|east)" (it said "(us, east)", as if the meter had two dimensions)."""
    from remit.service_layer import alerts, live_usage, usage_cancellation

    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "api_calls", "API calls", "sum", "calls", group_by=["region"])
        catalog.create_plan(uow, "api", "API", [_usage_price("api_calls", "0.01", "API calls")])
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "api", anchor="calendar")
        alerts.set_usage_threshold(uow, sub, "5.00")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 10))
    event = {
        "customer_id": cus,
        "code": "api_calls",
        "transaction_id": "mistake",
        "timestamp": "2026-03-10T00:00:00Z",
        "properties": {"calls": 2500, "region": "us|east"},
    }
    with app.uow() as uow:
        assert not usage.ingest(uow, [event]).rejected
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 11))  # the threshold invoice bills 25.00
    with app.uow() as uow:
        usage_cancellation.cancel_events(uow, [{"customer_id": cus, "transaction_id": "mistake"}])
    with app.uow() as uow:
        (item,) = live_usage.live_usage(uow, cus)["subscriptions"][0]["items"]
    assert (item["group"], item["quantity"], item["billed"]) == ({"region": "us|east"}, "0", "25.00")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    lines = [ln for inv in b.invoices_of(app, cus) for ln in inv["lines"]]
    assert [(ln["kind"], ln["description"], ln["amount"]) for ln in lines] == [
        ("usage_threshold", "API calls (us|east): 2500 so far this period (usage threshold reached)", "25.00"),
        (
            "usage_remainder",
            "API calls (us|east): usage corrected since the threshold invoice (0 in the period)",
            "-25.00",
        ),
    ]
