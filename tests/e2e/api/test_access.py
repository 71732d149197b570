"""Who may do what: scopes × endpoints, legal-entity isolation, expired and revoked keys, rate limits."""

from datetime import UTC, datetime, timedelta

import pytest

from remit.entrypoints.api.app import ApiSettings
from remit.service_layer import accounts, api_keys
from tests.e2e.api.conftest import PLAN, make_api

# (method, path, body, the least scope that may call it)
ENDPOINTS = [
    ("GET", "/customers", None, "read"),
    ("POST", "/customers", {"name": "A", "currency": "EUR", "country": "DE"}, "write"),
    ("GET", "/plans", None, "read"),
    (
        "POST",
        "/plans",
        {"code": "x{n}", "name": "X", "prices": [{"currency": "EUR", "model": "flat", "config": {"amount": "1"}}]},
        "write",
    ),
    ("GET", "/coupons", None, "read"),
    ("POST", "/coupons", {"code": "c{n}", "name": "C", "percent_off": "5"}, "write"),
    ("GET", "/subscriptions", None, "read"),
    ("GET", "/invoices", None, "read"),
    ("GET", "/credit_notes", None, "read"),
    ("GET", "/wallets", None, "read"),
    ("GET", "/events", None, "read"),
    ("GET", "/legal_entities", None, "read"),
    ("POST", "/legal_entities", {"name": "E", "country": "FR", "currency": "EUR"}, "admin"),
    ("POST", "/api_keys", {"scopes": ["read"]}, "admin"),
    ("POST", "/bill_runs", {}, "admin"),
    ("GET", "/alerts", None, "read"),
]
RANK = {"read": 0, "write": 1, "admin": 2}


@pytest.mark.parametrize("scope", ["read", "write", "admin"])
def test_scope_matrix(api, scope):
    for n, (method, path, body, needed) in enumerate(ENDPOINTS):
        if body is not None:
            body = {k: (v.format(n=f"{scope}{n}") if isinstance(v, str) else v) for k, v in body.items()}
        resp = api.client.request(method, f"/v1{path}", json=body, headers=api.h(scope))
        if RANK[scope] >= RANK[needed]:
            assert resp.status_code in (200, 201), (method, path, scope, resp.json())
        else:
            assert resp.status_code == 403, (method, path, scope)
            assert resp.json()["error"]["code"] == "insufficient_scope"


def test_a_key_for_one_entity_cannot_see_or_touch_another(api):
    other = api.post("/legal_entities", {"name": "Other Inc.", "country": "US", "currency": "USD"}).json()["id"]
    api.key("de_only", ["admin"], api.entity)
    api.key("us_only", ["write"], other)
    api.post("/plans", PLAN)
    us_customer = api.post("/customers", {"name": "US", "currency": "USD", "country": "US"}, key="us_only").json()
    assert us_customer["legal_entity_id"] == other
    de_customer = api.post("/customers", {"name": "DE", "currency": "EUR", "country": "DE"}, key="de_only").json()
    assert api.get(f"/customers/{us_customer['id']}", key="de_only").status_code == 404
    assert api.get(f"/customers/{de_customer['id']}", key="us_only").status_code == 404
    assert [c["id"] for c in api.get("/customers", key="de_only").json()["data"]] == [de_customer["id"]]
    sub = api.post("/subscriptions", {"customer_id": us_customer["id"], "plan": "pro"}, key="us_only").json()
    assert api.post(f"/subscriptions/{sub['id']}/cancel", {}, key="de_only").status_code == 404
    assert (
        api.post("/subscriptions", {"customer_id": us_customer["id"], "plan": "pro"}, key="de_only").status_code == 404
    )
    cross = api.post(
        "/customers", {"name": "X", "currency": "EUR", "country": "DE", "legal_entity_id": other}, key="de_only"
    )
    assert cross.status_code == 404
    assert api.post("/bill_runs", {}, key="de_only").json()["error"]["code"] == "entity_scoped_key"
    assert api.post("/api_keys", {"scopes": ["read"]}, key="de_only").status_code == 403
    assert [e["id"] for e in api.get("/legal_entities", key="de_only").json()["data"]] == [api.entity]


def test_missing_invalid_expired_and_revoked_keys_get_401(api):
    assert api.client.get("/v1/customers").json()["error"]["code"] == "missing_api_key"
    bad = api.client.get("/v1/customers", headers={"Authorization": "Bearer rk_live_key_x.y"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    assert bad.headers["www-authenticate"] == "Bearer"
    with api.remit.uow() as uow:
        key = api_keys.create_key(uow, "short", ["read"], expires_at=uow.now + timedelta(hours=1))
    ok = api.client.get("/v1/customers", headers={"Authorization": f"Bearer {key['secret']}"})
    assert ok.status_code == 200
    api.remit.clock.move_to(api.remit.clock.now() + timedelta(hours=2))
    expired = api.client.get("/v1/customers", headers={"Authorization": f"Bearer {key['secret']}"})
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "api_key_expired"
    with api.remit.uow() as uow:
        other = api_keys.create_key(uow, "gone", ["read"])
        api_keys.revoke_key(uow, other["id"])
    revoked = api.client.get("/v1/customers", headers={"Authorization": f"Bearer {other['secret']}"})
    assert revoked.json()["error"]["code"] == "api_key_revoked"


def test_rate_limit_answers_429_with_retry_after(sqlite_app):
    api = make_api(sqlite_app, ApiSettings(rate_limit_per_s=1, rate_limit_burst=3))
    codes = [api.get("/customers", key="read").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    limited = api.get("/customers", key="read")
    assert limited.json()["error"]["code"] == "rate_limited" and int(limited.headers["retry-after"]) >= 1
    assert api.get("/customers", key="write").status_code == 200  # per key


def test_errors_carry_a_request_id(api):
    resp = api.get("/customers/cus_missing")
    assert resp.status_code == 404
    assert resp.json()["error"]["request_id"] == resp.headers["request-id"]
    assert api.get("/customers").headers["request-id"].startswith("req_")


def test_the_api_keys_endpoint_shows_the_secret_once(api):
    created = api.post("/api_keys", {"scopes": ["read"], "legal_entity_id": api.entity}).json()
    assert created["secret"].startswith("rk_live_")
    assert api.client.get("/v1/customers", headers={"Authorization": f"Bearer {created['secret']}"}).status_code == 200
    with api.remit.uow() as uow:
        assert accounts.default_entity(uow) == api.entity


def test_expired_key_creation_is_refused(api):
    past = (datetime.now(UTC) - timedelta(days=400)).isoformat()
    assert api.post("/api_keys", {"scopes": ["read"], "expires_at": past}).json()["error"]["code"] == "date_in_past"


def test_a_test_mode_key_creates_only_test_mode_keys(api):
    by_default = api.post("/api_keys", {"scopes": ["admin"]}, key="test_admin")
    assert by_default.status_code == 201
    assert by_default.json()["livemode"] is False and by_default.json()["secret"].startswith("rk_test_")
    live = api.post("/api_keys", {"scopes": ["read"], "livemode": True}, key="test_admin")
    assert live.status_code == 403
    assert live.json()["error"]["code"] == "test_mode_key" and live.json()["error"]["field"] == "livemode"
    # A live key may still create either kind.
    assert api.post("/api_keys", {"scopes": ["read"]}).json()["livemode"] is True
    assert api.post("/api_keys", {"scopes": ["read"], "livemode": False}).json()["livemode"] is False


def test_an_expiring_key_creates_only_keys_that_expire_no_later(api):
    with api.remit.uow() as uow:
        until = uow.now + timedelta(hours=1)
        api.keys["brief"] = api_keys.create_key(uow, "brief", ["admin"], expires_at=until)["secret"]
    forever = api.post("/api_keys", {"scopes": ["read"]}, key="brief")
    assert forever.status_code == 403
    assert forever.json()["error"]["code"] == "key_outlives_creator"
    assert forever.json()["error"]["field"] == "expires_at"
    later = api.post(
        "/api_keys", {"scopes": ["read"], "expires_at": (until + timedelta(seconds=1)).isoformat()}, key="brief"
    )
    assert later.json()["error"]["code"] == "key_outlives_creator"
    same = api.post("/api_keys", {"scopes": ["read"], "expires_at": until.isoformat()}, key="brief")
    assert same.status_code == 201
    secret = same.json()["secret"]
    assert api.client.get("/v1/customers", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    api.remit.clock.move_to(until)
    expired = api.client.get("/v1/customers", headers={"Authorization": f"Bearer {secret}"})
    assert expired.json()["error"]["code"] == "api_key_expired"


def test_a_key_expiry_without_offset_is_utc_and_one_out_of_range_is_refused(api):
    naive = api.post("/api_keys", {"scopes": ["read"], "expires_at": "2030-01-01T00:00:00"})
    assert naive.status_code == 201, naive.json()
    assert naive.json()["expires_at"] == "2030-01-01T00:00:00Z"
    huge = api.post("/api_keys", {"scopes": ["read"], "expires_at": "9999-12-31T23:59:59-01:00"})
    assert huge.status_code == 422
    assert huge.json()["error"]["code"] == "invalid_time" and huge.json()["error"]["field"] == "expires_at"


def test_another_entitys_ids_are_not_found_as_cursors_and_events(api):
    """An id of another legal entity's object answers 404 like one that does not exist, as a list's
    ``starting_after`` too (it answered a page, telling the two apart), and an event of another entity's customer
    is ``event_not_found`` (it was ``customer_not_found``, naming that customer)."""
    other = api.post("/legal_entities", {"name": "Other Inc.", "country": "US", "currency": "USD"}).json()["id"]
    api.key("de_only", ["admin"], api.entity)
    api.key("us_only", ["write"], other)
    api.post("/plans", PLAN)
    us = api.post("/customers", {"name": "US", "currency": "USD", "country": "US"}, key="us_only").json()["id"]
    sub = api.post("/subscriptions", {"customer_id": us, "plan": "pro"}, key="us_only").json()["id"]
    wallet = api.post("/wallets", {"customer_id": us}, key="us_only").json()["id"]
    spend = {"customer_id": us, "kind": "spend", "thresholds": ["5.00"]}
    alert = api.post("/alerts", spend, key="us_only").json()["id"]
    event = api.get("/events", key="us_only").json()["data"][-1]["id"]
    for path, cursor, kind in [
        ("/customers", us, "customer"),
        ("/subscriptions", sub, "subscription"),
        ("/wallets", wallet, "wallet"),
        ("/alerts", alert, "alert"),
        ("/events", event, "event"),
        ("/legal_entities", other, "legal_entity"),
    ]:
        assert api.get(path, key="us_only", starting_after=cursor).status_code == 200, path
        for seen_as in (cursor, cursor[:-4] + "0000"):  # another entity's, and one that does not exist
            resp = api.get(path, key="de_only", starting_after=seen_as)
            assert resp.status_code == 404, (path, seen_as, resp.json())
            assert resp.json()["error"]["code"] == f"{kind}_not_found", (path, resp.json())
            assert resp.json()["error"]["field"] == "starting_after"
    hidden = api.get(f"/events/{event}", key="de_only")
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "event_not_found"
    assert us not in hidden.json()["error"]["message"]
    assert api.get(f"/events/{event}", key="us_only").status_code == 200


def test_a_live_key_cannot_page_from_a_test_clocks_bill_run(api):
    clock = api.post("/test_clocks", {"name": "c", "frozen_at": "2026-01-01T00:00:00Z"}, key="test_admin").json()["id"]
    api.post(f"/test_clocks/{clock}/advance", {"to": "2026-01-02T00:00:00Z"}, key="test_admin")
    runs = api.get("/bill_runs", key="test_admin").json()["data"]
    assert runs
    resp = api.get("/bill_runs", starting_after=runs[0]["id"])
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "bill_run_not_found"
