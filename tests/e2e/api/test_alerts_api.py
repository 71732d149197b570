"""Live usage, alerts and usage thresholds over HTTP: shapes, paging, scopes, visibility, and bad input."""

from datetime import timedelta

from sqlalchemy import func, select

from remit.adapters.db import tables as t

USAGE_PLAN = {
    "code": "api",
    "name": "API",
    "prices": [
        {"currency": "EUR", "model": "flat", "config": {"amount": "49.00"}, "interval": "month", "name": "Fee"},
        {
            "currency": "EUR",
            "model": "per_unit",
            "config": {"unit_price": "0.01"},
            "interval": "month",
            "timing": "in_arrears",
            "name": "Calls",
            "usage": {"meter": "calls", "included_units": "100"},
        },
    ],
}


def _setup(api):
    meter = {"code": "calls", "name": "Calls", "aggregation": "sum", "field": "n", "group_by": ["region"]}
    assert api.post("/meters", meter).status_code == 201
    assert api.post("/plans", USAGE_PLAN).status_code == 201, api.post("/plans", USAGE_PLAN).json()
    cus = api.post("/customers", {"name": "Hooli", "currency": "EUR", "country": "DE"}).json()["id"]
    sub = api.post("/subscriptions", {"customer_id": cus, "plan": "api"}).json()["id"]
    return cus, sub


def _send(api, cus, n, region="eu", txn="t1"):
    at = (api.remit.clock.now() + timedelta(minutes=1)).isoformat()  # the subscription starts now
    event = {"customer_id": cus, "code": "calls", "transaction_id": txn, "timestamp": at}
    resp = api.post("/events", {**event, "properties": {"n": n, "region": region}})
    assert resp.json()["status"] == "accepted", resp.json()


def _counts(api):
    with api.remit.uow() as uow:
        return tuple(
            uow.conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (t.alerts, t.alert_triggers, t.usage_watches, t.events)
        )


def test_live_usage_of_a_customer_and_of_a_subscription(api):
    cus, sub = _setup(api)
    _send(api, cus, 350)
    live = api.get(f"/customers/{cus}/usage", key="read")
    assert live.status_code == 200, live.json()
    body = live.json()
    assert (body["object"], body["currency"], body["amount"], body["billed"], body["unbilled"]) == (
        "live_usage",
        "EUR",
        "2.50",
        "0.00",
        "2.50",
    )
    item = body["subscriptions"][0]["items"][0]
    assert (item["meter"], item["group"], item["quantity"], item["included_units"], item["billable_units"]) == (
        "calls",
        {"region": "eu"},
        "350",
        "100",
        "250",
    )
    assert body["subscriptions"][0]["period"] == {"start_on": "2026-01-01", "end_on": "2026-02-01"}
    assert api.get(f"/subscriptions/{sub}/usage").json()["subscriptions"][0]["subscription_id"] == sub
    filtered = api.get(f"/customers/{cus}/usage", subscription_id=sub).json()
    assert filtered["amount"] == "2.50"
    assert api.get(f"/customers/{cus}/usage", subscription_id="sub_nope").status_code == 404
    assert api.get("/customers/cus_nope/usage").status_code == 404
    assert api.get("/subscriptions/sub_nope/usage").status_code == 404


def test_alerts_create_list_page_get_delete(api):
    cus, sub = _setup(api)
    made = [
        api.post("/alerts", {"customer_id": cus, "kind": "usage", "meter": "calls", "thresholds": ["100", 1000]}),
        api.post("/alerts", {"customer_id": cus, "kind": "spend", "thresholds": ["5.00", "10"]}),
        api.post(
            "/alerts",
            {
                "customer_id": cus,
                "subscription_id": sub,
                "kind": "usage",
                "meter": "calls",
                "group": {"region": "us"},
                "thresholds": ["0.5"],
            },
        ),
    ]
    assert [r.status_code for r in made] == [201, 201, 201], [r.json() for r in made]
    first, spend, grouped = (r.json() for r in made)
    assert first["thresholds"] == ["100", "1000"] and first["object"] == "alert"
    assert (spend["thresholds"], spend["currency"], spend["meter"]) == (["5.00", "10.00"], "EUR", None)
    assert grouped["group"] == {"region": "us"} and grouped["subscription_id"] == sub
    page1 = api.get("/alerts", key="read", limit=2).json()
    assert page1["has_more"] and len(page1["data"]) == 2
    page2 = api.get("/alerts", limit=2, starting_after=page1["data"][-1]["id"]).json()
    assert not page2["has_more"] and len(page2["data"]) == 1
    assert {a["id"] for a in page1["data"] + page2["data"]} == {first["id"], spend["id"], grouped["id"]}
    assert len(api.get("/alerts", customer_id=cus).json()["data"]) == 3
    assert api.get(f"/alerts/{first['id']}").json() == first
    gone = api.client.delete(f"/v1/alerts/{first['id']}", headers=api.h("write"))
    assert gone.status_code == 200 and gone.json() == {"id": first["id"], "object": "alert", "deleted": True}
    assert api.get(f"/alerts/{first['id']}").status_code == 404
    assert api.client.delete(f"/v1/alerts/{first['id']}", headers=api.h("write")).status_code == 404
    assert api.client.delete(f"/v1/alerts/{spend['id']}", headers=api.h("read")).status_code == 403


def test_bad_alerts_are_refused_and_change_nothing(api):
    cus, sub = _setup(api)
    before = _counts(api)
    cases = [
        ({"customer_id": "cus_nope", "kind": "spend", "thresholds": ["1"]}, 404, "customer_not_found"),
        ({"customer_id": cus, "kind": "usage", "meter": "nope", "thresholds": ["1"]}, 422, "unknown_meter"),
        ({"customer_id": cus, "kind": "usage", "thresholds": ["1"]}, 422, "missing_field"),
        ({"customer_id": cus, "kind": "usage", "meter": "calls", "thresholds": ["5", "5"]}, 422, None),
        ({"customer_id": cus, "kind": "usage", "meter": "calls", "thresholds": ["5", "1"]}, 422, None),
        ({"customer_id": cus, "kind": "usage", "meter": "calls", "thresholds": ["0"]}, 422, "invalid_threshold"),
        ({"customer_id": cus, "kind": "spend", "thresholds": ["-5.00"]}, 422, "invalid_threshold"),
        ({"customer_id": cus, "kind": "spend", "thresholds": ["1.001"]}, 422, "too_many_decimals"),
        ({"customer_id": cus, "kind": "spend", "thresholds": []}, 422, None),
        ({"customer_id": cus, "kind": "spend", "thresholds": ["1"], "meter": "calls"}, 422, "invalid_alert"),
        ({"customer_id": cus, "kind": "nope", "thresholds": ["1"]}, 422, None),
        (
            {"customer_id": cus, "kind": "usage", "meter": "calls", "group": {"zone": "x"}, "thresholds": ["1"]},
            422,
            "unknown_dimension",
        ),
        (
            {"customer_id": cus, "subscription_id": "sub_nope", "kind": "spend", "thresholds": ["1"]},
            404,
            "subscription_not_found",
        ),
    ]
    for body, status, code in cases:
        resp = api.post("/alerts", body)
        assert resp.status_code == status, (body, resp.json())
        if code:
            assert resp.json()["error"]["code"] == code, (body, resp.json())
    not_ascending = api.post("/alerts", cases[4][0]).json()["error"]
    assert (not_ascending["code"], not_ascending["field"]) == ("thresholds_not_ascending", "thresholds[1]")
    assert _counts(api) == before


def test_usage_threshold_set_clear_and_bad_amounts(api):
    cus, sub = _setup(api)
    resp = api.post(f"/subscriptions/{sub}/usage_threshold", {"amount": "20.00"}, key="write")
    assert resp.status_code == 200 and resp.json()["usage_threshold"] == "20.00"
    assert api.get(f"/subscriptions/{sub}/usage").json()["subscriptions"][0]["usage_threshold"] == "20.00"
    for amount, code in [("-1.00", "invalid_threshold"), ("0", "invalid_threshold"), ("1.001", None)]:
        bad = api.post(f"/subscriptions/{sub}/usage_threshold", {"amount": amount})
        assert bad.status_code == 422, bad.json()
        if code:
            assert bad.json()["error"]["code"] == code
    assert api.get(f"/subscriptions/{sub}/usage").json()["subscriptions"][0]["usage_threshold"] == "20.00"
    cleared = api.post(f"/subscriptions/{sub}/usage_threshold", {"amount": None}).json()
    assert cleared["usage_threshold"] is None
    assert api.post("/subscriptions/sub_nope/usage_threshold", {"amount": "1.00"}).status_code == 404
    assert api.post(f"/subscriptions/{sub}/usage_threshold", {"amount": "1.00"}, key="read").status_code == 403


def test_another_entitys_key_sees_no_alerts_and_no_usage(api):
    cus, _sub = _setup(api)
    alert = api.post("/alerts", {"customer_id": cus, "kind": "spend", "thresholds": ["1"]}).json()
    other = api.post("/legal_entities", {"name": "Other", "country": "US", "currency": "USD"}).json()["id"]
    api.key("other", ["write"], other)
    assert api.get(f"/alerts/{alert['id']}", key="other").status_code == 404
    assert api.get("/alerts", key="other").json()["data"] == []
    assert api.get(f"/customers/{cus}/usage", key="other").status_code == 404
    refused = api.post("/alerts", {"customer_id": cus, "kind": "spend", "thresholds": ["1"]}, key="other")
    assert refused.status_code == 404
    assert api.client.delete(f"/v1/alerts/{alert['id']}", headers=api.h("other")).status_code == 404
