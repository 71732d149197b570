"""Every resource and action through HTTP, on SQLite and PostgreSQL."""

from datetime import date

from tests.e2e.api.conftest import PLAN


def _customer(api, **extra):
    body = {"name": "Globex", "email": "ap@globex.example", "currency": "EUR", "country": "FR", **extra}
    resp = api.post("/customers", body)
    assert resp.status_code == 201, resp.json()
    return resp.json()


def test_customer_with_just_name_email_currency_country_uses_the_default_entity(api):
    cus = _customer(api)
    assert cus["legal_entity_id"] == api.entity
    assert cus["balance"] == "0.00" and cus["livemode"] is True
    assert api.get(f"/customers/{cus['id']}").json()["id"] == cus["id"]
    page = api.get("/customers", limit=1).json()
    assert page["object"] == "list" and len(page["data"]) == 1 and page["has_more"] is False


def test_catalog_subscription_and_invoice_lifecycle(api):
    assert api.post("/plans", PLAN).status_code == 201
    v2 = api.post(
        "/plans/pro/versions", {"prices": [{"currency": "EUR", "model": "per_unit", "config": {"unit_price": "15.00"}}]}
    )
    assert [v["version"] for v in v2.json()["versions"]] == [1, 2]
    cus = _customer(api)
    addon = api.post(
        "/prices", {"product_name": "Support", "currency": "EUR", "model": "flat", "config": {"amount": "99"}}
    )
    assert addon.status_code == 201
    coupon = api.post("/coupons", {"code": "TEN", "name": "10%", "percent_off": "10", "duration": "forever"})
    assert coupon.json()["percent_off"] == "10"
    promo = api.post("/promotion_codes", {"coupon": "TEN", "code": "HELLO"})
    assert promo.status_code == 201
    sub = api.post(
        "/subscriptions",
        {
            "customer_id": cus["id"],
            "plan": "pro",
            "plan_version": 1,
            "quantity": 3,
            "add_ons": [{"price_id": addon.json()["id"]}],
            "promotion_code": "HELLO",
        },
    )
    assert sub.status_code == 201, sub.json()
    sub_id = sub.json()["id"]
    assert sub.json()["status"] == "active" and sub.json()["interval"] == "month"
    run = api.post("/bill_runs", {})
    assert run.status_code == 201 and run.json()["invoices_created"] == 1
    assert api.get(f"/bill_runs/{run.json()['id']}").json()["status"] == "done"
    invoices = api.get("/invoices", customer=cus["id"], expand=["customer"]).json()["data"]
    assert len(invoices) == 1 and invoices[0]["customer"]["id"] == cus["id"]
    inv = api.get(f"/invoices/{invoices[0]['id']}").json()
    assert inv["subtotal"] == "135.00" and inv["discount"] == "13.50" and inv["total"] == "121.50"
    assert inv["number"].startswith("INV-") and inv["status"] == "open"
    note = api.post("/credit_notes", {"invoice_id": inv["id"], "amount": "21.50", "reason": "order_change"})
    assert note.status_code == 201 and note.json()["amount"] == "21.50"
    assert api.get(f"/invoices/{inv['id']}").json()["amount_due"] == "100.00"
    assert api.post(f"/invoices/{inv['id']}/pay").json()["status"] == "paid"
    assert api.post(f"/invoices/{inv['id']}/void").status_code == 409
    assert api.get("/credit_notes").json()["data"][0]["id"] == note.json()["id"]
    # actions
    today = api.get(f"/subscriptions/{sub_id}").json()["started_on"]
    assert api.post(f"/subscriptions/{sub_id}/change_quantity", {"quantity": 5}).json()["effective_on"] == today
    assert (
        api.post(
            f"/subscriptions/{sub_id}/change_plan", {"plan": "pro", "version": 2, "when": "period_end"}
        ).status_code
        == 200
    )
    released = api.post(f"/subscriptions/{sub_id}/release_schedule").json()
    assert [e["revoked_at"] is not None for e in released["events"]] == [False, False, True]
    assert api.post(f"/subscriptions/{sub_id}/pause", {}).status_code == 200
    assert api.get(f"/subscriptions/{sub_id}").json()["status"] == "paused"
    assert api.post(f"/subscriptions/{sub_id}/resume", {}).status_code == 200
    assert api.post(f"/subscriptions/{sub_id}/cancel", {"at_period_end": False}).status_code == 200
    assert api.post(f"/subscriptions/{sub_id}/pause", {}).json()["error"]["code"] == "subscription_invalid_transition"
    upcoming = api.get(f"/customers/{cus['id']}/upcoming_invoice").json()
    assert upcoming["object"] == "upcoming_invoice"
    item = api.post("/invoice_items", {"customer_id": cus["id"], "description": "Setup", "unit_amount": "50.00"})
    assert item.status_code == 201 and item.json()["amount"] == "50.00"
    events = api.get("/events", limit=100).json()["data"]
    types = {e["type"] for e in events}
    assert {"invoice.finalized", "credit_note.issued", "subscription.canceled", "invoice.paid"} <= types
    assert api.get(f"/events/{events[0]['id']}").json()["id"] == events[0]["id"]


def test_draft_invoices_can_be_finalized_by_hand(api):
    entity = api.post(
        "/legal_entities",
        {"name": "Acme Ltd", "country": "GB", "currency": "GBP", "auto_finalize": False, "invoice_prefix": "UK"},
    )
    assert entity.status_code == 201
    api.post(
        "/plans",
        {"code": "gb", "name": "GB", "prices": [{"currency": "GBP", "model": "flat", "config": {"amount": "20"}}]},
    )
    cus = api.post(
        "/customers", {"name": "Tesco", "currency": "GBP", "country": "GB", "legal_entity_id": entity.json()["id"]}
    ).json()
    api.post("/subscriptions", {"customer_id": cus["id"], "plan": "gb"})
    api.post("/bill_runs", {})
    draft = api.get("/invoices", customer=cus["id"], status="draft").json()["data"][0]
    assert draft["number"] is None
    final = api.post(f"/invoices/{draft['id']}/finalize").json()
    assert final["number"] == f"UK-{date.today().year}-000001" or final["number"].startswith("UK-")
    assert api.post(f"/invoices/{draft['id']}/mark_uncollectible").json()["status"] == "uncollectible"


def test_test_mode_keys_see_only_test_clock_customers(api):
    live = _customer(api)
    clock = api.post("/test_clocks", {"name": "sim", "frozen_at": "2026-01-01T00:00:00Z"}, key="test_admin")
    assert clock.status_code == 201
    assert api.post("/test_clocks", {"name": "x", "frozen_at": "2026-01-01T00:00:00Z"}).status_code == 403
    no_clock = api.post("/customers", {"name": "T", "currency": "EUR", "country": "DE"}, key="test_admin")
    assert no_clock.json()["error"]["code"] == "test_clock_required"
    test_cus = api.post(
        "/customers",
        {"name": "T", "currency": "EUR", "country": "DE", "test_clock_id": clock.json()["id"]},
        key="test_admin",
    ).json()
    assert api.get(f"/customers/{live['id']}", key="test_admin").status_code == 404
    assert api.get(f"/customers/{test_cus['id']}").status_code == 404
    assert [c["id"] for c in api.get("/customers", key="test_admin").json()["data"]] == [test_cus["id"]]
    api.post("/plans", PLAN)
    api.post("/subscriptions", {"customer_id": test_cus["id"], "plan": "pro"}, key="test_admin")
    moved = api.post(f"/test_clocks/{clock.json()['id']}/advance", {"to": "2026-03-01T00:00:00Z"}, key="test_admin")
    assert moved.json()["frozen_at"] == "2026-03-01T00:00:00Z"
    assert len(api.get("/invoices", key="test_admin").json()["data"]) == 3
    assert api.get("/invoices").json()["data"] == []


def test_lists_page_with_cursor_and_filter_by_created(api):
    ids = [_customer(api, name=f"C{i}")["id"] for i in range(5)]
    first = api.get("/customers", limit=2).json()
    assert first["has_more"] is True
    second = api.get("/customers", limit=2, starting_after=first["data"][-1]["id"]).json()
    third = api.get("/customers", limit=2, starting_after=second["data"][-1]["id"]).json()
    seen = [c["id"] for c in first["data"] + second["data"] + third["data"]]
    assert sorted(seen) == sorted(ids) and third["has_more"] is False
    assert api.get("/customers", created_gte="2999-01-01T00:00:00Z").json()["data"] == []
