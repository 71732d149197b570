"""Usage ingestion over HTTP: one event, batches with per-event outcomes, meters."""

from datetime import timedelta


def _setup(api):
    assert (
        api.post(
            "/meters",
            {"code": "tokens", "name": "Tokens", "aggregation": "sum", "field": "tokens", "group_by": ["model"]},
        ).status_code
        == 201
    )
    return api.post("/customers", {"name": "Hooli", "currency": "EUR", "country": "DE"}).json()["id"]


def _at(api, minutes=1):
    return (api.remit.clock.now() - timedelta(minutes=minutes)).isoformat()


def test_single_events_are_accepted_once(api):
    cus = _setup(api)
    event = {
        "customer_id": cus,
        "code": "tokens",
        "transaction_id": "t1",
        "timestamp": _at(api),
        "properties": {"tokens": 1200, "model": "large"},
    }
    first = api.post("/events", event)
    assert first.status_code == 200 and first.json()["status"] == "accepted"
    again = api.post("/events", event)
    assert again.json()["status"] == "duplicate"
    bad = api.post("/events", {**event, "transaction_id": "t2", "properties": {"tokens": "many", "model": "x"}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "not_numeric"
    assert bad.json()["error"]["field"] == "properties.tokens"
    assert [m["code"] for m in api.get("/meters").json()["data"]] == ["tokens"]


def test_batches_report_each_event(api):
    cus = _setup(api)
    good = {"customer_id": cus, "code": "tokens", "timestamp": _at(api), "properties": {"tokens": 5, "model": "s"}}
    batch = [
        {**good, "transaction_id": "a"},
        {**good, "transaction_id": "a"},
        {**good, "transaction_id": "b", "code": "nope"},
        {**good, "transaction_id": "c"},
    ]
    result = api.post("/events/batch", {"events": batch}).json()
    assert [e["transaction_id"] for e in result["accepted"]] == ["a", "c"]
    assert [e["index"] for e in result["duplicates"]] == [1]
    assert [(e["index"], e["error"]["code"]) for e in result["rejected"]] == [(2, "unknown_meter")]
    too_many = api.post("/events/batch", {"events": [good] * 1001})
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "batch_too_large"


def test_another_entitys_customer_is_unknown_to_a_scoped_key(api):
    cus = _setup(api)
    other = api.post("/legal_entities", {"name": "Other", "country": "US", "currency": "USD"}).json()["id"]
    api.key("other", ["write"], other)
    event = {
        "customer_id": cus,
        "code": "tokens",
        "transaction_id": "x",
        "timestamp": _at(api),
        "properties": {"tokens": 1, "model": "s"},
    }
    assert api.post("/events", event, key="other").json()["error"]["code"] == "unknown_customer"
