"""Legal entities and test/live mode keep apart what they own: test clocks, customers' external ids, and the
shared catalog that live billing uses."""

from tests.e2e.api.conftest import PLAN

T0 = "2026-01-01T00:00:00Z"


def _other_entity(api):
    return api.post("/legal_entities", {"name": "Other Inc.", "country": "US", "currency": "USD"}).json()["id"]


def _clock(api, key="test_admin", **extra):
    resp = api.post("/test_clocks", {"name": "sim", "frozen_at": T0, **extra}, key=key)
    assert resp.status_code == 201, resp.json()
    return resp.json()


def _test_customer(api, clock, key="test_admin", **extra):
    body = {"name": "T", "currency": "EUR", "country": "DE", "test_clock_id": clock, **extra}
    return api.post("/customers", body, key=key)


# --- test clocks belong to a legal entity ---------------------------------------------------------------------------


def test_a_key_limited_to_one_entity_cannot_see_or_advance_another_entitys_clock(api):
    other = _other_entity(api)
    api.key("test_de", ["write"], api.entity, livemode=False)
    api.key("test_us", ["write"], other, livemode=False)
    clock = _clock(api, key="test_us")
    assert clock["legal_entity_id"] == other
    api.post("/plans", PLAN)
    cus = _test_customer(api, clock["id"], key="test_us", currency="USD", country="US").json()["id"]
    api.post("/subscriptions", {"customer_id": cus, "plan": "pro"}, key="test_us")
    for resp in (
        api.get(f"/test_clocks/{clock['id']}", key="test_de"),
        api.post(f"/test_clocks/{clock['id']}/advance", {"to": "2026-03-01T00:00:00Z"}, key="test_de"),
        _test_customer(api, clock["id"], key="test_de"),  # nor attach its own customers to it
    ):
        assert resp.status_code == 404, resp.json()
        assert resp.json()["error"]["code"] == "test_clock_not_found"
    assert api.get(f"/test_clocks/{clock['id']}", key="test_us").json()["frozen_at"] == T0  # not moved
    assert api.get("/invoices", key="test_admin").json()["data"] == []
    # Its own entity's key advances it; a key of every entity too.
    moved = api.post(f"/test_clocks/{clock['id']}/advance", {"to": "2026-03-01T00:00:00Z"}, key="test_us")
    assert moved.status_code == 200 and moved.json()["frozen_at"] == "2026-03-01T00:00:00Z"
    assert api.get(f"/test_clocks/{clock['id']}", key="test_admin").status_code == 200


def test_a_clock_of_one_entity_holds_only_that_entitys_customers(api):
    other = _other_entity(api)
    clock = _clock(api, legal_entity_id=api.entity)
    assert clock["legal_entity_id"] == api.entity
    refused = _test_customer(api, clock["id"], legal_entity_id=other, currency="USD", country="US")
    assert refused.status_code == 422, refused.json()
    assert refused.json()["error"]["code"] == "test_clock_other_entity"
    assert refused.json()["error"]["field"] == "test_clock_id"
    assert api.get("/customers", key="test_admin").json()["data"] == []
    assert _test_customer(api, clock["id"], legal_entity_id=api.entity).status_code == 201
    # A clock of no entity (made by a key of every entity) holds customers of any, and only such keys see it.
    shared = _clock(api)
    assert shared["legal_entity_id"] is None
    assert _test_customer(api, shared["id"], legal_entity_id=other, currency="USD", country="US").status_code == 201
    api.key("test_de", ["write"], api.entity, livemode=False)
    assert api.get(f"/test_clocks/{shared['id']}", key="test_de").status_code == 404
    assert api.get(f"/test_clocks/{clock['id']}", key="test_de").status_code == 200


def test_a_key_limited_to_one_entity_makes_clocks_of_that_entity_only(api):
    other = _other_entity(api)
    api.key("test_de", ["write"], api.entity, livemode=False)
    resp = api.post("/test_clocks", {"name": "x", "frozen_at": T0, "legal_entity_id": other}, key="test_de")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "legal_entity_not_found"
    missing = api.post("/test_clocks", {"name": "x", "frozen_at": T0, "legal_entity_id": "le_nope"}, key="test_admin")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "legal_entity_id"


# --- external ids are unique within one legal entity and one mode ---------------------------------------------------


def _customer(api, key, external_id, **extra):
    body = {"name": "C", "currency": "EUR", "country": "DE", "external_id": external_id, **extra}
    return api.post("/customers", body, key=key)


def test_another_entity_or_mode_may_use_the_same_external_id_without_learning_of_the_other(api):
    other = _other_entity(api)
    api.key("de_only", ["write"], api.entity)
    api.key("us_only", ["write"], other)
    clock = _clock(api)["id"]
    # A test customer first: it must not take the id from the live customer to come.
    test = _customer(api, "test_admin", "acme", test_clock_id=clock, legal_entity_id=api.entity)
    assert test.status_code == 201, test.json()
    de = _customer(api, "de_only", "acme")
    assert de.status_code == 201, de.json()
    us = _customer(api, "us_only", "acme", currency="USD", country="US")
    assert us.status_code == 201, us.json()  # was 409 external_id_taken: another entity's customer, revealed
    # Within one entity and mode the id is still unique.
    again = _customer(api, "de_only", "acme")
    assert again.status_code == 409 and again.json()["error"]["code"] == "external_id_taken"
    assert again.json()["error"]["field"] == "external_id"
    test_again = _customer(api, "test_admin", "acme", test_clock_id=clock, legal_entity_id=api.entity)
    assert test_again.status_code == 409
    assert {c["external_id"] for c in api.get("/customers", key="de_only").json()["data"]} == {"acme"}


def test_usage_events_name_by_external_id_the_customer_the_key_sees(api):
    other = _other_entity(api)
    api.key("de_only", ["write"], api.entity)
    api.key("us_only", ["write"], other)
    api.post("/meters", {"code": "calls", "name": "Calls", "aggregation": "count"})
    clock = _clock(api)["id"]
    ids = {
        "de": _customer(api, "de_only", "acme").json()["id"],
        "us": _customer(api, "us_only", "acme", currency="USD", country="US").json()["id"],
        "test": _customer(api, "test_admin", "acme", test_clock_id=clock, legal_entity_id=api.entity).json()["id"],
    }
    event = {"external_customer_id": "acme", "code": "calls", "timestamp": "2025-12-31T23:00:00Z"}
    for key, who in (("de_only", "de"), ("us_only", "us"), ("test_admin", "test")):
        resp = api.post("/events", {**event, "transaction_id": f"t-{key}"}, key=key)
        assert resp.status_code == 200 and resp.json()["status"] == "accepted", (key, resp.json())
        stored = api.get("/usage_events", key=key, customer_id=ids[who]).json()["data"]
        assert [e["transaction_id"] for e in stored] == [f"t-{key}"], key
    # A key that sees two customers with the id cannot tell which one is meant: refused, nothing stored.
    resp = api.post("/events", {**event, "transaction_id": "t-all"}, key="write")
    assert resp.status_code == 422, resp.json()
    assert resp.json()["error"]["code"] == "ambiguous_external_customer_id"
    assert resp.json()["error"]["field"] == "external_customer_id"
    batch = api.post("/events/batch", {"events": [{**event, "transaction_id": "t-all"}]}, key="write").json()
    assert [r["error"]["code"] for r in batch["rejected"]] == ["ambiguous_external_customer_id"]
    canceled = api.post("/events/cancel", {"events": [{"external_customer_id": "acme", "transaction_id": "t-de_only"}]})
    assert [r["error"]["code"] for r in canceled.json()["rejected"]] == ["ambiguous_external_customer_id"]
    for who in ("de", "us"):
        assert len(api.get("/usage_events", customer_id=ids[who]).json()["data"]) == 1


# --- the shared catalog: what live billing uses changes only with a live key of every legal entity ------------------


def test_a_test_or_entity_limited_key_cannot_change_what_live_customers_are_billed_by(api):
    api.key("test_write", ["write"], livemode=False)
    api.key("de_write", ["write"], api.entity)
    assert api.post("/meters", {"code": "calls", "name": "Calls", "aggregation": "count"}).status_code == 201
    api.post("/plans", PLAN)
    changes = [
        ("/meters/calls/deactivate", None),
        ("/meters/calls/reactivate", None),
        ("/meters/calls", {"name": "Renamed"}),
        ("/plans/pro/versions", {"prices": PLAN["prices"]}),
    ]
    for key, code in (
        ("test_write", "test_mode_key"),
        ("test_admin", "test_mode_key"),
        ("de_write", "entity_scoped_key"),
    ):
        for path, body in changes:
            resp = api.post(path, body, key=key)
            assert resp.status_code == 403, (key, path, resp.json())
            assert resp.json()["error"]["code"] == code, (key, path)
    assert api.get("/meters/calls").json()["active"] is True
    assert api.get("/meters/calls").json()["name"] == "Calls"
    assert len(api.get("/plans/pro").json()["versions"]) == 1
    cus = api.post("/customers", {"name": "Live", "currency": "EUR", "country": "DE"}).json()["id"]
    event = {"customer_id": cus, "code": "calls", "transaction_id": "t1", "timestamp": "2025-12-31T23:00:00Z"}
    assert api.post("/events", event).json()["status"] == "accepted"
    # New catalog objects stay open to every write key (they change nothing live customers use).
    assert api.post("/meters", {"code": "t", "name": "T", "aggregation": "count"}, key="test_write").status_code == 201
    # A live key of every entity changes it.
    for path, body in changes:
        assert api.post(path, body, key="write").status_code in (200, 201), path
