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
    typo = _subscribed(api, 10**15 - 1)  # the most seats a quantity may be: more money than an invoice can hold

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
    _subscribed(api, 10**15 - 1, legal_entity_id=api.entity)
    theirs = _subscribed(api, 10**15 - 1, key="us_only", currency="USD")
    run = api.post("/bill_runs", {}).json()
    assert run["customers_failed"] == 2
    seen = api.get(f"/bill_runs/{run['id']}/failures", key="us_only").json()["data"]
    assert [f["customer_id"] for f in seen] == [theirs]
    assert len(api.get(f"/bill_runs/{run['id']}/failures").json()["data"]) == 2
    # The run itself spans every entity: its counts and error are for keys that see them all.
    assert api.get(f"/bill_runs/{run['id']}", key="us_only").json()["error"]["code"] == "entity_scoped_key"
    assert api.get("/bill_runs", key="us_only").status_code == 403
    # A test key sees test clocks' runs, not this one.
    assert api.get(f"/bill_runs/{run['id']}", key="test_admin").json()["error"]["code"] == "bill_run_not_found"
    assert api.get("/bill_runs", key="test_admin").json()["data"] == []


def test_a_test_key_sees_the_runs_of_test_clock_advances_and_whom_they_could_not_bill(api):
    """Each advance of a test clock bills its customers at every step; a test key lists those runs (all test
    clocks', or one's) with their failures. Live keys and test keys never see each other's runs."""
    assert api.post("/plans", PLAN).status_code == 201
    live_run = api.post("/bill_runs", {}).json()
    clocks = [
        api.post("/test_clocks", {"name": n, "frozen_at": "2026-01-01T00:00:00Z"}, key="test_admin").json()["id"]
        for n in ("sim", "other")
    ]
    made = {}
    for clock, quantity in zip(clocks, (10**15 - 1, 2), strict=True):
        body = {"name": "T", "currency": "EUR", "country": "DE", "test_clock_id": clock}
        cus = api.post("/customers", body, key="test_admin").json()["id"]
        sub = api.post("/subscriptions", {"customer_id": cus, "plan": "pro", "quantity": quantity}, key="test_admin")
        assert sub.status_code == 201, sub.json()
        made[clock] = cus
    advanced = api.post(f"/test_clocks/{clocks[0]}/advance", {"to": "2026-02-01T00:00:00Z"}, key="test_admin")
    assert advanced.status_code == 200

    runs = api.get("/bill_runs", key="test_admin", test_clock=clocks[0]).json()["data"]
    assert runs and {r["test_clock_id"] for r in runs} == {clocks[0]}
    assert sum(r["customers_failed"] for r in runs) >= 1
    failed = next(r for r in runs if r["customers_failed"])
    assert api.get(f"/bill_runs/{failed['id']}", key="test_admin").json() == failed
    (failure,) = api.get(f"/bill_runs/{failed['id']}/failures", key="test_admin").json()["data"]
    assert (failure["customer_id"], failure["error"]["code"]) == (made[clocks[0]], "amount_out_of_range")
    assert api.get("/bill_runs", key="test_admin", test_clock=clocks[1]).json()["data"] == []
    every = api.get("/bill_runs", key="test_admin", limit=100).json()["data"]
    assert {r["id"] for r in every} == {r["id"] for r in runs}

    # The live world and the test one stay apart.
    assert [r["id"] for r in api.get("/bill_runs").json()["data"]] == [live_run["id"]]
    assert live_run["test_clock_id"] is None
    assert api.get(f"/bill_runs/{failed['id']}").json()["error"]["code"] == "bill_run_not_found"
    assert api.get("/bill_runs", test_clock=clocks[0]).json()["error"]["code"] == "test_clock_not_found"
    missing = api.get("/bill_runs", key="test_admin", test_clock="clk_missing").json()
    assert (missing["error"]["code"], missing["error"]["field"]) == ("test_clock_not_found", "test_clock")
