"""Domain events as an integrator reads them: `GET /v1/events` and its filters, the order of an object's events,
and payloads that agree with the object as the API shows it."""

from datetime import UTC, datetime
from decimal import Decimal

from tests.e2e.api.conftest import PLAN


def _customer(api, name="Globex", key="admin", **extra):
    resp = api.post("/customers", {"name": name, "currency": "EUR", "country": "FR", **extra}, key=key)
    assert resp.status_code == 201, resp.json()
    return resp.json()["id"]


def _events(api, key="admin", **params):
    return api.get("/events", key=key, limit=100, **params).json()["data"]


def _minor(amount: str) -> int:
    return int(Decimal(amount) * 100)


def test_events_are_filtered_by_customer(api):
    first, second = _customer(api, "A"), _customer(api, "B")
    api.post("/plans", PLAN)
    api.post("/subscriptions", {"customer_id": second, "plan": "pro"})
    mine = _events(api, customer=first)
    assert [(e["type"], e["customer_id"]) for e in mine] == [("customer.created", first)]
    assert {e["customer_id"] for e in _events(api, customer=second)} == {second}
    assert _events(api, customer="cus_nobody") == []
    # with the other filters and paging
    page = api.get("/events", customer=second, type="subscription.created", limit=1).json()
    assert [e["customer_id"] for e in page["data"]] == [second] and page["has_more"] is False


def test_events_are_filtered_by_one_type_a_family_or_star(api):
    api.post("/plans", PLAN)
    cus = _customer(api)
    api.post("/subscriptions", {"customer_id": cus, "plan": "pro"})
    item = api.post("/invoice_items", {"customer_id": cus, "description": "Setup", "unit_amount": "5.00"})
    assert item.status_code == 201, item.json()
    api.remit.clock.move_to(datetime(2026, 2, 1, tzinfo=UTC))
    assert api.post("/bill_runs", {}).status_code == 201
    every = _events(api)
    invoices = _events(api, type="invoice.*")
    assert [e["id"] for e in invoices] == [e["id"] for e in every if e["type"].startswith("invoice.")]
    assert {"invoice.created", "invoice.finalized"} <= {e["type"] for e in invoices}
    # "invoice.*" is the invoice. family: not invoice_item.created ("_" is no wildcard)
    assert [e["type"] for e in _events(api, type="invoice_item.*")] == ["invoice_item.created"]
    assert _events(api, type="*") == every
    page = api.get("/events", type="invoice.*", limit=1).json()
    assert page["has_more"] is True and page["data"][0]["type"].startswith("invoice.")
    for bad in ("invoice.payed", "invoice%", "invoices.*", "*.*"):
        refused = api.get("/events", type=bad)
        assert refused.status_code == 422, (bad, refused.json())
        assert (refused.json()["error"]["code"], refused.json()["error"]["field"]) == ("invalid_event_type", "type")


def test_a_subscription_is_announced_before_the_coupon_redeemed_on_it(api):
    api.post("/plans", PLAN)
    api.post("/coupons", {"code": "TEN", "name": "10%", "percent_off": "10", "duration": "forever"})
    cus = _customer(api)
    sub = api.post("/subscriptions", {"customer_id": cus, "plan": "pro", "coupon": "TEN"}).json()
    about_sub = [e["type"] for e in _events(api, customer=cus) if e["object_id"] == sub["id"]]
    assert about_sub == ["subscription.created", "coupon.redeemed"]


def _paid_events(api, invoice_id):
    return [e for e in _events(api, type="invoice.paid") if e["object_id"] == invoice_id]


def _assert_paid_event_matches(api, invoice_id, by):
    [event] = _paid_events(api, invoice_id)
    inv = api.get(f"/invoices/{invoice_id}").json()
    assert inv["status"] == "paid"
    data = event["data"]
    assert data["by"] == by
    assert (data["number"], data["currency"]) == (inv["number"], inv["currency"])
    assert data["total_minor"] == _minor(inv["total"])
    assert data["amount_due_minor"] == _minor(inv["amount_due"]) == 0
    assert data["paid_minor"] == _minor(inv["paid"])
    assert data["credited_minor"] == _minor(inv["credited"])
    assert data["applied_balance_minor"] == _minor(inv["applied_balance"])
    assert data["applied_credits_minor"] == _minor(inv["applied_credits"])
    return data


def test_invoice_paid_has_one_shape_whatever_paid_the_invoice(api):
    api.post("/plans", PLAN)
    # paid out of band
    cash = _customer(api, "Cash")
    api.post("/subscriptions", {"customer_id": cash, "plan": "pro", "quantity": 2})
    # paid at finalization by prepaid credits
    prepaid = _customer(api, "Prepaid")
    wallet = api.post("/wallets", {"customer_id": prepaid, "name": "w"}).json()
    assert api.post(f"/wallets/{wallet['id']}/grants", {"credits": "100"}).status_code == 201
    api.post("/subscriptions", {"customer_id": prepaid, "plan": "pro"})
    # paid off by a credit note
    credited = _customer(api, "Credited")
    api.post("/subscriptions", {"customer_id": credited, "plan": "pro"})
    assert api.post("/bill_runs", {}).status_code == 201
    invoices = {c: api.get("/invoices", customer=c).json()["data"][0]["id"] for c in (cash, prepaid, credited)}

    data = _assert_paid_event_matches(api, invoices[prepaid], "finalization")
    assert data["applied_credits_minor"] == 1200

    paid = api.post(f"/invoices/{invoices[cash]}/pay")
    assert paid.status_code == 200, paid.json()
    data = _assert_paid_event_matches(api, invoices[cash], "out_of_band")
    assert (data["amount_minor"], data["out_of_band"]) == (2400, True)

    note = api.post("/credit_notes", {"invoice_id": invoices[credited], "amount": "12.00", "reason": "order_change"})
    assert note.status_code == 201, note.json()
    data = _assert_paid_event_matches(api, invoices[credited], "credit_note")
    assert data["credit_note_id"] == note.json()["id"]


def test_events_of_a_test_clock_customer_are_dated_by_its_clock(api):
    """The app's clock is at 2026-01-01; the customer lives on a test clock in 2025: every event about it is dated
    by the test clock (webhooks.md), those of the changes made through the API as those the bill run makes."""
    k = "test_admin"
    api.post("/plans", PLAN)
    api.post("/coupons", {"code": "TEN", "name": "10%", "percent_off": "10", "duration": "forever"})
    clock = api.post("/test_clocks", {"name": "sim", "frozen_at": "2025-06-01T00:00:00Z"}, key=k).json()
    cus = _customer(api, key=k, test_clock_id=clock["id"])
    sub = api.post("/subscriptions", {"customer_id": cus, "plan": "pro", "coupon": "TEN", "trial_days": 10}, key=k)
    sub_id = sub.json()["id"]
    assert api.post(f"/subscriptions/{sub_id}/change_quantity", {"quantity": 2}, key=k).status_code == 200
    item = {"customer_id": cus, "description": "Setup", "unit_amount": "5.00"}
    assert api.post("/invoice_items", item, key=k).status_code == 201
    alert = api.post("/alerts", {"customer_id": cus, "kind": "spend", "thresholds": ["1.00"]}, key=k).json()
    assert api.client.delete(f"/v1/alerts/{alert['id']}", headers=api.h(k)).status_code in (200, 204)
    before = {e["id"] for e in _events(api, key=k, customer=cus)}
    assert all(e["created_at"] == "2025-06-01T00:00:00Z" for e in _events(api, key=k, customer=cus)), [
        (e["type"], e["created_at"]) for e in _events(api, key=k, customer=cus)
    ]
    moved = api.post(f"/test_clocks/{clock['id']}/advance", {"to": "2025-06-20T00:00:00Z"}, key=k)
    assert moved.status_code == 200, moved.json()
    api.post(f"/subscriptions/{sub_id}/cancel", {"at_period_end": False}, key=k)
    later = [(e["type"], e["created_at"]) for e in _events(api, key=k, customer=cus) if e["id"] not in before]
    assert ("subscription.activated", "2025-06-11T00:00:00Z") in later  # the trial ended at the step of its end
    assert ("subscription.canceled", "2025-06-20T00:00:00Z") in later
    assert all("2025-06-01T00:00:00Z" <= at <= "2025-06-20T00:00:00Z" for _type, at in later), later


def test_a_scheduled_pause_and_resume_are_announced_once_each_when_asked_and_once_when_they_happen(api):
    api.post("/plans", PLAN)
    cus = _customer(api)
    sub_id = api.post("/subscriptions", {"customer_id": cus, "plan": "pro"}).json()["id"]
    assert api.post(f"/subscriptions/{sub_id}/pause", {"when": "2026-01-10"}).status_code == 200
    api.remit.clock.move_to(datetime(2026, 1, 10, tzinfo=UTC))
    assert api.post("/bill_runs", {}).status_code == 201
    assert api.get(f"/subscriptions/{sub_id}").json()["status"] == "paused"
    assert api.post(f"/subscriptions/{sub_id}/resume", {"when": "2026-01-20"}).status_code == 200
    api.remit.clock.move_to(datetime(2026, 1, 20, tzinfo=UTC))
    assert api.post("/bill_runs", {}).status_code == 201
    assert api.get(f"/subscriptions/{sub_id}").json()["status"] == "active"
    about = [(e["type"], e["data"]) for e in _events(api, customer=cus) if e["object_id"] == sub_id]
    assert about[1:] == [
        ("subscription.pause_scheduled", {"effective_on": "2026-01-10"}),
        ("subscription.paused", {"effective_on": "2026-01-10", "status": "paused", "previous_status": "active"}),
        ("subscription.resume_scheduled", {"effective_on": "2026-01-20"}),
        ("subscription.resumed", {"effective_on": "2026-01-20", "status": "active", "previous_status": "paused"}),
    ]


def test_a_pause_at_once_is_announced_once(api):
    api.post("/plans", PLAN)
    cus = _customer(api)
    sub_id = api.post("/subscriptions", {"customer_id": cus, "plan": "pro"}).json()["id"]
    assert api.post(f"/subscriptions/{sub_id}/pause", {}).status_code == 200
    api.remit.clock.move_to(datetime(2026, 1, 2, tzinfo=UTC))
    assert api.post("/bill_runs", {}).status_code == 201
    assert api.post(f"/subscriptions/{sub_id}/resume", {}).status_code == 200
    api.remit.clock.move_to(datetime(2026, 1, 3, tzinfo=UTC))
    assert api.post("/bill_runs", {}).status_code == 201
    about = [e["type"] for e in _events(api, customer=cus) if e["object_id"] == sub_id]
    assert about[1:] == ["subscription.paused", "subscription.resumed"]


def _status_events(api, cus, sub_id):
    return [(e["type"], e["data"]) for e in _events(api, customer=cus) if e["object_id"] == sub_id][1:]


def test_a_cancellation_has_the_same_fields_at_once_as_when_the_bill_run_reaches_it(api):
    """webhooks.md: subscription.canceled (paused, resumed) carries effective_on, status and previous_status
    whichever path recorded it, so a receiver needs one handler."""
    api.post("/plans", PLAN)
    cus = _customer(api)
    now_id = api.post("/subscriptions", {"customer_id": cus, "plan": "pro"}).json()["id"]
    later_id = api.post("/subscriptions", {"customer_id": cus, "plan": "pro"}).json()["id"]
    assert api.post(f"/subscriptions/{now_id}/cancel", {"at_period_end": False}).status_code == 200
    assert api.post(f"/subscriptions/{later_id}/cancel", {"at_period_end": True}).status_code == 200
    api.remit.clock.move_to(datetime(2026, 2, 1, tzinfo=UTC))
    assert api.post("/bill_runs", {}).status_code == 201
    assert _status_events(api, cus, now_id) == [
        ("subscription.canceled", {"effective_on": "2026-01-01", "status": "canceled", "previous_status": "active"})
    ]
    assert _status_events(api, cus, later_id) == [
        ("subscription.cancellation_scheduled", {"effective_on": "2026-02-01"}),
        ("subscription.canceled", {"effective_on": "2026-02-01", "status": "canceled", "previous_status": "active"}),
    ]


def test_a_paused_trial_that_resumes_is_announced_as_resumed_then_activated(api):
    """Out of a pause back into a running trial is a resume (not a bare subscription.updated with fields of its
    own), dated like every status event; the trial's end is then announced as activated, dated by the trial's
    end."""
    api.post("/plans", PLAN)
    cus = _customer(api)
    sub = api.post("/subscriptions", {"customer_id": cus, "plan": "pro", "trial_days": 30})
    assert sub.status_code == 201, sub.json()
    sub_id = sub.json()["id"]
    assert api.post(f"/subscriptions/{sub_id}/pause", {"when": "2026-01-05"}).status_code == 200
    for day in (5, 10, 31):
        api.remit.clock.move_to(datetime(2026, 1, day, tzinfo=UTC))
        assert api.post("/bill_runs", {}).status_code == 201
        if day == 5:
            assert api.post(f"/subscriptions/{sub_id}/resume", {"when": "2026-01-10"}).status_code == 200
    assert _status_events(api, cus, sub_id) == [
        ("subscription.pause_scheduled", {"effective_on": "2026-01-05"}),
        ("subscription.paused", {"effective_on": "2026-01-05", "status": "paused", "previous_status": "trialing"}),
        ("subscription.resume_scheduled", {"effective_on": "2026-01-10"}),
        ("subscription.resumed", {"effective_on": "2026-01-10", "status": "trialing", "previous_status": "paused"}),
        ("subscription.activated", {"effective_on": "2026-01-31", "status": "active", "previous_status": "trialing"}),
    ]


def test_a_plan_change_that_also_sets_the_quantity_announces_the_quantity(api):
    """change_plan takes a quantity: subscription.updated must say what the subscription now holds, or a receiver
    that follows seat counts from the events keeps the old count."""
    api.post("/plans", PLAN)
    api.post("/plans", {**PLAN, "code": "max", "name": "Max"})
    cus = _customer(api)
    sub_id = api.post("/subscriptions", {"customer_id": cus, "plan": "pro", "quantity": 2}).json()["id"]
    changed = api.post(f"/subscriptions/{sub_id}/change_plan", {"plan": "max", "quantity": 5})
    assert changed.status_code == 200, changed.json()
    assert api.post(f"/subscriptions/{sub_id}/change_plan", {"plan": "pro"}).status_code == 200
    assert [data for _type, data in _status_events(api, cus, sub_id)] == [
        {"change": "plan", "plan": "max", "quantity": "5", "effective_on": "2026-01-01"},
        {"change": "plan", "plan": "pro", "quantity": "5", "effective_on": "2026-01-01"},
    ]
