"""Usage billing through the API: a hybrid plan, events on a test clock, the invoice, and a line explained."""


def _hybrid(api):
    assert (
        api.post("/meters", {"code": "calls", "name": "API calls", "aggregation": "sum", "field": "n"}).status_code
        == 201
    )
    plan = {
        "code": "api",
        "name": "API",
        "prices": [
            {"currency": "EUR", "model": "flat", "config": {"amount": "49.00"}, "name": "Platform"},
            {
                "currency": "EUR",
                "model": "graduated",
                "config": {"tiers": [{"up_to": "1000", "unit_price": "0"}, {"up_to": None, "unit_price": "0.002"}]},
                "name": "API calls",
                "usage": {"meter": "calls"},
            },
        ],
    }
    created = api.post("/plans", plan)
    assert created.status_code == 201, created.json()
    clock = api.post("/test_clocks", {"name": "sim", "frozen_at": "2026-03-01T00:00:00Z"}, key="test_admin").json()
    cus = api.post(
        "/customers",
        {"name": "Hooli", "currency": "EUR", "country": "DE", "test_clock_id": clock["id"]},
        key="test_admin",
    ).json()
    sub = api.post("/subscriptions", {"customer_id": cus["id"], "plan": "api", "anchor": "calendar"}, key="test_admin")
    assert sub.status_code == 201, sub.json()
    return clock["id"], cus["id"]


def test_usage_is_invoiced_in_arrears_and_each_line_explains_itself(api):
    clock, cus = _hybrid(api)
    api.post(f"/test_clocks/{clock}/advance", {"to": "2026-03-15T00:00:00Z"}, key="test_admin")
    event = {"customer_id": cus, "code": "calls", "timestamp": "2026-03-14T10:00:00Z", "properties": {"n": 3500}}
    assert api.post("/events", {**event, "transaction_id": "e1"}, key="test_admin").json()["status"] == "accepted"
    api.post(f"/test_clocks/{clock}/advance", {"to": "2026-04-01T00:00:00Z"}, key="test_admin")
    invoices = api.get("/invoices", key="test_admin", customer=cus).json()["data"]
    april = next(i for i in invoices if i["issued_on"] == "2026-04-01")
    usage_line = next(
        ln for ln in api.get(f"/invoices/{april['id']}", key="test_admin").json()["lines"] if ln["kind"] == "usage"
    )
    assert usage_line["amount"] == "5.00"  # (3,500 - 1,000) × 0.002

    explained = api.get(f"/invoices/{april['id']}/lines/{usage_line['id']}/explain", key="test_admin")
    assert explained.status_code == 200
    body = explained.json()
    assert body["meter"]["code"] == "calls" and body["meter"]["aggregation"] == "sum"
    assert body["usage"]["quantity"] == "3500" and body["usage"]["events"] == 1
    assert body["usage"]["windows"] == [{"start_on": "2026-03-01", "end_on": "2026-04-01"}]
    assert body["period"] == {"start_on": "2026-03-01", "end_on": "2026-04-01"}
    assert [b["amount"] for b in body["breakdown"]] == ["0", "5.000"]
    assert "Meter calls: sum of n over 2026-03-01 to 2026-04-01: 3500 from 1 event." in body["explanation"]
    # The events behind it, one query away: the window's days in the customer's time zone.
    (window,) = body["usage_events"]
    assert (window["occurred_gte"], window["occurred_lt"]) == ("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
    listed = api.client.get(window["list"], headers=api.h("test_admin")).json()["data"]
    assert [(e["transaction_id"], e["value"], e["counted"]) for e in listed] == [("e1", "3500", True)]

    missing = api.get(f"/invoices/{april['id']}/lines/nope/explain", key="test_admin")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "line_id"
    hidden = api.get(f"/invoices/{april['id']}/lines/{usage_line['id']}/explain")  # a live key: test data unseen
    assert hidden.status_code == 404


def test_usage_price_bad_input_is_refused_with_the_field(api):
    bad = api.post(
        "/plans",
        {
            "code": "x",
            "name": "X",
            "prices": [
                {"currency": "EUR", "model": "per_unit", "config": {"unit_price": "1"}, "usage": {"meter": "none"}}
            ],
        },
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "unknown_meter"
    assert bad.json()["error"]["field"] == "prices[0].usage.meter"
    assert api.get("/plans").json()["data"] == []


def test_the_upcoming_invoice_says_what_it_bills_as_the_invoice_does(api):
    """The preview answers like the invoice it announces: each line names its subscription, price and period (so
    its usage lines can be matched with the live usage items, which name their price), and the totals say how
    the total becomes the amount due: the customer balance it applies, as the invoice says, and the credits."""
    clock, cus = _hybrid(api)
    api.post(f"/test_clocks/{clock}/advance", {"to": "2026-03-15T00:00:00Z"}, key="test_admin")
    (march,) = api.get("/invoices", key="test_admin", customer=cus).json()["data"]
    assert api.post(f"/invoices/{march['id']}/pay", key="test_admin").status_code == 200
    refund = api.post("/credit_notes", {"invoice_id": march["id"], "amount": "10.00"}, key="test_admin")
    assert refund.json()["to_balance"] == "10.00"  # a paid invoice's credit: the customer's balance
    event = {"customer_id": cus, "code": "calls", "timestamp": "2026-03-14T10:00:00Z", "properties": {"n": 3500}}
    assert api.post("/events", {**event, "transaction_id": "e1"}, key="test_admin").json()["status"] == "accepted"

    live = api.get(f"/customers/{cus}/usage", key="test_admin").json()
    (item,) = live["subscriptions"][0]["items"]
    upcoming = api.get(f"/customers/{cus}/upcoming_invoice", key="test_admin").json()
    assert (upcoming["subtotal"], upcoming["discount"], upcoming["total"]) == ("54.00", "0.00", "54.00")
    assert (upcoming["applied_balance"], upcoming["applied_credits"], upcoming["amount_due"]) == (
        "10.00",
        "0.00",
        "44.00",
    )
    (usage_line,) = [ln for ln in upcoming["lines"] if ln["kind"] == "usage"]
    assert (usage_line["price_id"], usage_line["subscription_id"]) == (
        item["price_id"],
        live["subscriptions"][0]["subscription_id"],
    )
    assert (usage_line["period_start_on"], usage_line["period_end_on"]) == ("2026-03-01", "2026-04-01")
    assert usage_line["amount"] == item["amount"] == "5.00"

    api.post(f"/test_clocks/{clock}/advance", {"to": "2026-04-01T00:00:00Z"}, key="test_admin")
    april = next(
        i for i in api.get("/invoices", key="test_admin", customer=cus).json()["data"] if i["id"] != march["id"]
    )
    issued = api.get(f"/invoices/{april['id']}", key="test_admin").json()
    for name in ("subtotal", "discount", "total", "applied_balance", "applied_credits", "amount_due"):
        assert issued[name] == upcoming[name], name
    key = ("kind", "subscription_id", "price_id", "period_start_on", "period_end_on", "amount")
    assert sorted(tuple(ln[k] for k in key) for ln in issued["lines"]) == sorted(
        tuple(ln[k] for k in key) for ln in upcoming["lines"]
    )
