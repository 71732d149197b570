"""Bill runs over HTTP: a run that could not bill a customer says so, and lists it with why (for a key limited to
one legal entity, only that entity's customers, and not the run's totals); on SQLite and PostgreSQL."""

from tests.e2e.api.conftest import PLAN


def _subscribed(api, quantity, key="admin", currency="EUR", **entity):
    body = {"name": "C", "currency": currency, "country": "DE", **entity}
    cus = api.post("/customers", body, key=key).json()
    assert "id" in cus, cus
    sub = api.post("/subscriptions", {"customer_id": cus["id"], "plan": "pro", "quantity": quantity}, key=key)
    assert sub.status_code == 201, sub.json()
    return cus["id"]


def test_a_bill_run_lists_the_customers_it_could_not_bill(api):
    assert api.post("/plans", PLAN).status_code == 201
    good = _subscribed(api, 3)
    typo = _subscribed(api, 10**15)  # 10^15 seats: an amount no invoice can hold

    run = api.post("/bill_runs", {})

    assert run.status_code == 201
    body = run.json()
    assert (body["status"], body["customers_seen"], body["invoices_created"]) == ("done", 2, 1)
    assert body["customers_failed"] == 1 and body["error"] is None and body["finished_at"] is not None
    failures = api.get(f"/bill_runs/{body['id']}/failures").json()
    assert failures["object"] == "list" and failures["has_more"] is False
    (failure,) = failures["data"]
    assert failure["object"] == "bill_run_failure" and failure["customer_id"] == typo
    assert failure["error"]["code"] == "amount_out_of_range" and failure["error"]["field"] == "amount"
    assert len(api.get("/invoices", customer=good).json()["data"]) == 1
    assert api.get("/invoices", customer=typo).json()["data"] == []
    assert [r["id"] for r in api.get("/bill_runs").json()["data"]] == [body["id"]]
    events = api.get("/events", type="bill_run.customer_failed").json()["data"]
    assert [e["data"]["customer_id"] for e in events] == [typo]
    assert api.get("/bill_runs/billrun_missing/failures").json()["error"]["code"] == "bill_run_not_found"


def test_a_key_limited_to_one_entity_sees_only_its_own_customers_failures(api):
    other = api.post("/legal_entities", {"name": "Other Inc.", "country": "US", "currency": "USD"}).json()["id"]
    api.key("us_only", ["admin"], other)
    assert api.post("/plans", PLAN).status_code == 201
    _subscribed(api, 10**15, legal_entity_id=api.entity)
    theirs = _subscribed(api, 10**15, key="us_only", currency="USD")
    run = api.post("/bill_runs", {}).json()
    assert run["customers_failed"] == 2
    seen = api.get(f"/bill_runs/{run['id']}/failures", key="us_only").json()["data"]
    assert [f["customer_id"] for f in seen] == [theirs]
    assert len(api.get(f"/bill_runs/{run['id']}/failures").json()["data"]) == 2
    # The run itself spans every entity: its counts and error are for keys that see them all.
    assert api.get(f"/bill_runs/{run['id']}", key="us_only").json()["error"]["code"] == "entity_scoped_key"
    assert api.get("/bill_runs", key="us_only").status_code == 403
    assert api.get("/bill_runs", key="test_admin").json()["error"]["code"] == "test_mode_key"
