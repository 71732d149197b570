"""Domain events as an integrator reads them: `GET /v1/events` and its filters, the order of an object's events,
and payloads that agree with the object as the API shows it."""

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


def test_a_subscription_is_announced_before_the_coupon_redeemed_on_it(api):
    api.post("/plans", PLAN)
    api.post("/coupons", {"code": "TEN", "name": "10%", "percent_off": "10", "duration": "forever"})
    cus = _customer(api)
    sub = api.post("/subscriptions", {"customer_id": cus, "plan": "pro", "coupon": "TEN"}).json()
    about_sub = [e["type"] for e in _events(api, customer=cus) if e["object_id"] == sub["id"]]
    assert about_sub == ["subscription.created", "coupon.redeemed"]
