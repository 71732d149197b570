"""Wallets over HTTP: create, grant and buy credits, the ledger with paging, void; errors, scopes, isolation."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from remit.adapters.db.tables import metadata
from tests.e2e.api.conftest import PLAN


def _customer(api, currency="EUR", key="admin"):
    resp = api.post("/customers", {"name": "Globex", "currency": currency, "country": "FR"}, key=key)
    assert resp.status_code == 201, resp.json()
    return resp.json()["id"]


def _wallet(api, customer_id, **extra):
    resp = api.post("/wallets", {"customer_id": customer_id, **extra})
    assert resp.status_code == 201, resp.json()
    return resp.json()


def _counts(api):
    with api.remit.engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in metadata.sorted_tables}


def test_credits_granted_bought_consumed_by_a_bill_run_and_listed(api):
    api.post("/plans", PLAN)
    cus = _customer(api)
    wallet = _wallet(api, cus, name="Prepaid", rate="0.5", priority=2)
    assert (wallet["currency"], wallet["rate"], wallet["balance"], wallet["balance_credits"]) == (
        "EUR",
        "0.5",
        "0.00",
        "0",
    )
    free = api.post(f"/wallets/{wallet['id']}/grants", {"credits": "30", "expires_at": "2027-01-01T00:00:00Z"})
    assert free.status_code == 201, free.json()
    assert (free.json()["status"], free.json()["amount"], free.json()["kind"]) == ("active", "15.00", "free")
    bought = api.post(f"/wallets/{wallet['id']}/grants", {"credits": "20", "paid": True}).json()
    assert (bought["status"], bought["amount"]) == ("pending", "10.00")
    purchase = api.get(f"/invoices/{bought['invoice_id']}").json()
    assert (purchase["billing_reason"], purchase["total"], purchase["status"]) == ("wallet_purchase", "10.00", "open")
    assert purchase["lines"][0]["quantity"] == "20" and purchase["lines"][0]["unit_price"] == "0.5"
    assert api.get(f"/wallets/{wallet['id']}").json()["pending_credits"] == "20"
    assert api.post(f"/invoices/{bought['invoice_id']}/pay").status_code == 200
    shown = api.get(f"/wallets/{wallet['id']}").json()
    assert (shown["balance_credits"], shown["balance"], shown["pending_credits"]) == ("50", "25.00", "0")
    assert [g["status"] for g in shown["grants"]] == ["active", "active"]

    api.post("/subscriptions", {"customer_id": cus, "plan": "pro", "quantity": 1})
    upcoming = api.get(f"/customers/{cus}/upcoming_invoice").json()
    assert (upcoming["total"], upcoming["applied_credits"], upcoming["amount_due"]) == ("12.00", "12.00", "0.00")
    api.post("/bill_runs", {})
    invoice = [i for i in api.get("/invoices", customer=cus).json()["data"] if i["billing_reason"] != "wallet_purchase"]
    assert (invoice[0]["total"], invoice[0]["applied_credits"], invoice[0]["amount_due"]) == ("12.00", "12.00", "0.00")
    assert api.get(f"/wallets/{wallet['id']}").json()["balance"] == "13.00"

    first = api.get(f"/wallets/{wallet['id']}/transactions", limit=2).json()
    assert [x["kind"] for x in first["data"]] == ["grant", "grant"] and first["has_more"] is True
    rest = api.get(f"/wallets/{wallet['id']}/transactions", limit=2, starting_after=first["data"][-1]["id"]).json()
    assert [(x["kind"], x["credits"], x["amount"]) for x in rest["data"]] == [("consumption", "-24", "-12.00")]
    assert rest["has_more"] is False and rest["data"][0]["invoice_id"] == invoice[0]["id"]

    # The bought credits, unused (the free ones went first), are refunded by a credit note on their invoice.
    refund = api.post("/credit_notes", {"invoice_id": bought["invoice_id"], "amount": "10.00"})
    assert refund.status_code == 201 and refund.json()["to_balance"] == "10.00"
    assert api.get(f"/wallets/{wallet['id']}").json()["balance"] == "3.00"

    listed = api.get("/wallets", customer=cus).json()["data"]
    assert [w["id"] for w in listed] == [wallet["id"]] and listed[0]["grants"] is None
    voided = api.post(f"/wallets/{wallet['id']}/void").json()
    assert (voided["status"], voided["balance"]) == ("voided", "0.00")
    kinds = [x["kind"] for x in api.get(f"/wallets/{wallet['id']}/transactions", limit=10).json()["data"]]
    assert kinds == ["grant", "grant", "consumption", "refund", "void"]
    again = api.post(f"/wallets/{wallet['id']}/void")
    assert again.status_code == 409 and again.json()["error"]["code"] == "wallet_voided"
    assert api.get("/wallets", customer=cus, status="active").json()["data"] == []


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "field"),
    [
        ("/wallets", {"customer_id": "cus_nope"}, 404, "customer_not_found", "customer_id"),
        ("/wallets", {"customer_id": "{cus}", "currency": "USD"}, 422, "currency_mismatch", "currency"),
        ("/wallets", {"customer_id": "{cus}", "rate": "0"}, 422, "invalid_rate", "rate"),
        ("/wallets", {"customer_id": "{cus}", "priority": 0}, 422, "invalid_value", "priority"),
        ("/wallets", {"customer_id": "{cus}", "top_up_threshold": "5"}, 422, "top_up_incomplete", "top_up_credits"),
        ("/wallets/{wal}/grants", {"credits": "-5"}, 422, "invalid_value", "credits"),
        ("/wallets/{wal}/grants", {"credits": "0"}, 422, "invalid_amount", "credits"),
        ("/wallets/{wal}/grants", {"credits": 5}, 422, "invalid_value", "credits"),
        ("/wallets/{wal}/grants", {"credits": "0.001"}, 422, "amount_too_small", "credits"),
        (
            "/wallets/{wal}/grants",
            {"credits": "5", "expires_at": "2020-01-01T00:00:00Z"},
            422,
            "expiry_in_past",
            "expires_at",
        ),
        ("/wallets/{wal}/grants", {"credits": "5", "grant_before_payment": True}, 422, "invalid_choice", None),
        (
            "/wallets/{wal}/grants",
            {"credits": "5", "expires_at": "9999-12-31T23:59:59-05:00"},
            422,
            "invalid_time",
            "expires_at",
        ),
        ("/wallets/wal_nope/grants", {"credits": "5"}, 404, "wallet_not_found", "wallet_id"),
        ("/wallets/wal_nope/void", None, 404, "wallet_not_found", "wallet_id"),
    ],
)
def test_bad_input_gets_a_clear_error_and_changes_nothing(api, path, body, status, code, field):
    cus = _customer(api)
    wal = _wallet(api, cus)["id"]
    before = _counts(api)
    if body is not None:
        body = {k: (v.format(cus=cus) if isinstance(v, str) else v) for k, v in body.items()}
    resp = api.post(path.format(wal=wal), body)
    assert resp.status_code == status, resp.json()
    error = resp.json()["error"]
    assert error["code"] == code
    if field is not None:
        assert error["field"] == field
    assert _counts(api) == {**before, "idempotency_keys": before["idempotency_keys"]}


def test_scopes_isolation_and_idempotent_grants(api):
    cus = _customer(api)
    wal = _wallet(api, cus)["id"]
    assert api.get("/wallets", key="read").status_code == 200
    assert api.get(f"/wallets/{wal}/transactions", key="read").status_code == 200
    for path, body in (("/wallets", {"customer_id": cus}), (f"/wallets/{wal}/grants", {"credits": "1"})):
        denied = api.post(path, body, key="read")
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "insufficient_scope"
    assert api.post(f"/wallets/{wal}/void", key="read").status_code == 403

    other = api.post("/legal_entities", {"name": "Other Inc.", "country": "US", "currency": "USD"}).json()["id"]
    api.key("us_only", ["write"], other)
    assert api.get(f"/wallets/{wal}", key="us_only").status_code == 404
    assert api.post(f"/wallets/{wal}/grants", {"credits": "1"}, key="us_only").status_code == 404
    assert api.post("/wallets", {"customer_id": cus}, key="us_only").status_code == 404
    assert api.get("/wallets", key="us_only").json()["data"] == []
    assert api.get("/wallets", key="test_admin").json()["data"] == []  # a test-mode key sees test customers only

    first = api.post(f"/wallets/{wal}/grants", {"credits": "7"}, **{"Idempotency-Key": "grant-1"})
    second = api.post(f"/wallets/{wal}/grants", {"credits": "7"}, **{"Idempotency-Key": "grant-1"})
    assert first.json() == second.json() and second.headers["idempotent-replayed"] == "true"
    assert api.get(f"/wallets/{wal}").json()["balance_credits"] == "7"


def test_update_names_priority_and_top_up_but_never_the_rate(api):
    cus = _customer(api)
    wal = _wallet(api, cus)["id"]
    changed = api.post(
        f"/wallets/{wal}", {"name": "Promo", "priority": 5, "top_up_threshold": "10", "top_up_credits": "50"}
    )
    assert changed.status_code == 200, changed.json()
    body = changed.json()
    assert (body["name"], body["priority"], body["top_up_threshold"], body["top_up_credits"]) == (
        "Promo",
        5,
        "10",
        "50",
    )
    off = api.post(f"/wallets/{wal}", {"top_up_threshold": None, "top_up_credits": None}).json()
    assert (off["name"], off["top_up_threshold"], off["top_up_credits"]) == ("Promo", None, None)
    half = api.post(f"/wallets/{wal}", {"top_up_threshold": "10"})
    assert half.status_code == 422 and half.json()["error"]["code"] == "top_up_incomplete"
    rate = api.post(f"/wallets/{wal}", {"rate": "2"})
    assert rate.status_code == 422 and rate.json()["error"]["code"] == "unknown_field"
    null_name = api.post(f"/wallets/{wal}", {"name": None})
    assert null_name.status_code == 422
    api.post(f"/wallets/{wal}/void")
    assert api.post(f"/wallets/{wal}", {"name": "X"}).json()["error"]["code"] == "wallet_voided"


def test_recurring_grants_created_listed_granted_by_bill_runs_and_canceled(api):
    cus = _customer(api)
    wal = _wallet(api, cus, rate="0.1")["id"]
    made = api.post(
        f"/wallets/{wal}/recurring_grants",
        {"credits": "100", "interval": "month", "starts_on": "2026-01-31", "expires_days": 45},
    )
    assert made.status_code == 201, made.json()
    schedule = made.json()
    assert (schedule["object"], schedule["status"], schedule["next_grant_on"], schedule["grants_made"]) == (
        "wallet_recurring_grant",
        "active",
        "2026-01-31",
        0,
    )
    api.remit.clock.move_to(datetime(2026, 3, 5, tzinfo=UTC))
    assert api.post("/bill_runs", {}).status_code in (200, 201)  # grants 31 Jan and 28 Feb (clamped)
    grants = api.get(f"/wallets/{wal}").json()["grants"]
    assert [(g["granted_at"], g["expires_at"], g["recurring_grant_id"], g["source"]) for g in grants] == [
        ("2026-01-31T00:00:00Z", "2026-03-17T00:00:00Z", schedule["id"], "recurring"),
        ("2026-02-28T00:00:00Z", "2026-04-14T00:00:00Z", schedule["id"], "recurring"),
    ]
    assert api.get(f"/wallets/{wal}").json()["balance"] == "20.00"
    listed = api.get(f"/wallets/{wal}/recurring_grants").json()
    assert [(s["id"], s["grants_made"], s["next_grant_on"]) for s in listed["data"]] == [
        (schedule["id"], 2, "2026-03-31")
    ]
    changed = api.post(f"/wallets/{wal}/recurring_grants/{schedule['id']}", {"credits": "50", "expires_days": None})
    assert changed.status_code == 200, changed.json()
    assert (changed.json()["credits"], changed.json()["expires_days"]) == ("50", None)
    null = api.post(f"/wallets/{wal}/recurring_grants/{schedule['id']}", {"credits": None})
    assert null.status_code == 422 and null.json()["error"]["field"] == "credits"
    path = f"/v1/wallets/{wal}/recurring_grants/{schedule['id']}"
    assert api.client.delete(path, headers=api.h("read")).status_code == 403
    canceled = api.client.delete(path, headers=api.h("write"))
    assert canceled.status_code == 200, canceled.json()
    assert (canceled.json()["status"], canceled.json()["next_grant_on"]) == ("canceled", None)
    again = api.client.delete(path, headers=api.h("write"))
    assert again.status_code == 409 and again.json()["error"]["code"] == "recurring_grant_ended"
    missing = api.client.delete(f"/v1/wallets/{wal}/recurring_grants/wrg_nope", headers=api.h("write"))
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "recurring_grant_id"
    other = _wallet(api, cus)["id"]  # a schedule is found through its own wallet only
    assert api.client.delete(path.replace(wal, other), headers=api.h("write")).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"credits": "0"}, 422, "invalid_amount", "credits"),
        ({"credits": "5", "interval": "fortnight"}, 422, "invalid_value", "interval"),
        ({"credits": "5", "interval_count": 0}, 422, "invalid_value", "interval_count"),
        ({"credits": "5", "starts_on": "2025-12-31"}, 422, "start_in_past", "starts_on"),
        ({"credits": "5", "starts_on": "2026-02-01", "ends_on": "2026-01-15"}, 422, "dates_out_of_order", "ends_on"),
        ({"credits": "5", "expires_days": 0}, 422, "invalid_value", "expires_days"),
        ({"credits": "5", "grant_before_payment": True}, 422, "invalid_choice", "grant_before_payment"),
        ({"credits": "0.001"}, 422, "amount_too_small", "credits"),
    ],
)
def test_bad_recurring_grants_get_a_clear_error_and_change_nothing(api, body, status, code, field):
    cus = _customer(api)
    wal = _wallet(api, cus)["id"]
    before = _counts(api)
    resp = api.post(f"/wallets/{wal}/recurring_grants", body)
    assert resp.status_code == status, resp.json()
    assert (resp.json()["error"]["code"], resp.json()["error"]["field"]) == (code, field)
    assert _counts(api) == before


def test_a_wallet_limited_to_usage_over_http(api):
    api.post("/meters", {"code": "calls", "name": "Calls", "aggregation": "count"})
    cus = _customer(api)
    wallet = _wallet(api, cus, applies_to={"fee_types": ["usage"], "meters": ["calls"]}, low_balance_threshold="5")
    assert wallet["applies_to"] == {"fee_types": ["usage"], "meters": ["calls"], "prices": []}
    assert wallet["low_balance_threshold"] == "5"
    assert api.post(f"/wallets/{wallet['id']}", {"low_balance_threshold": None}).json()["low_balance_threshold"] is None
    lifted = api.post(f"/wallets/{wallet['id']}", {"applies_to": None}).json()
    assert lifted["applies_to"] is None
    again = api.post(f"/wallets/{wallet['id']}", {"applies_to": {"fee_types": ["fixed"]}}).json()
    assert again["applies_to"]["fee_types"] == ["fixed"]
    before = _counts(api)
    bad = api.post("/wallets", {"customer_id": cus, "applies_to": {"fee_types": ["storage"]}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_value"
    unknown = api.post("/wallets", {"customer_id": cus, "applies_to": {"meters": ["nope"]}})
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "applies_to.meters"
    assert _counts(api) == before
