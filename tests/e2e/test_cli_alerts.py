"""`remit usage show|threshold` and `remit alerts create|list|delete|evaluate`, end to end on a SQLite file."""

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from remit.entrypoints.cli.main import app

runner = CliRunner()
PLAN = json.dumps(
    [
        {
            "currency": "EUR",
            "model": "per_unit",
            "config": {"unit_price": "0.01"},
            "interval": "month",
            "timing": "in_arrears",
            "name": "Calls",
            "usage": {"meter": "calls"},
        }
    ]
)


@pytest.fixture(autouse=True)
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("REMIT_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")


def rj(*args: str, code: int = 0):
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, (result.output, result.stderr)
    return json.loads(result.stdout if code == 0 else result.stderr)


def _import(tmp_path, customer, at, n, txn):
    path = tmp_path / f"{txn}.jsonl"
    event = {"customer_id": customer, "code": "calls", "transaction_id": txn, "timestamp": at, "properties": {"n": n}}
    path.write_text(json.dumps(event) + "\n")
    assert rj("events", "import", str(path))["accepted"] == 1


def test_live_usage_alerts_and_threshold_billing_from_the_command_line(tmp_path):
    rj("init", "--currency", "EUR", "--country", "DE")
    rj("meters", "create", "--code", "calls", "--aggregation", "sum", "--field", "n")
    rj("plans", "create", "--code", "api", "--name", "API", "--prices", PLAN)
    clock = rj("clock", "create", "--name", "t", "--at", "2026-03-01T00:00:00Z")["id"]
    customer = rj(
        "customers", "create", "--name", "Hooli", "--currency", "EUR", "--country", "DE", "--test-clock", clock
    )["id"]
    sub = rj("subscriptions", "create", "--customer", customer, "--plan", "api", "--anchor", "calendar")["id"]
    alert = rj("alerts", "create", "--customer", customer, "--kind", "spend", "--threshold", "5", "--threshold", "50")
    assert alert["thresholds"] == ["5.00", "50.00"]
    assert rj("usage", "threshold", sub, "--amount", "30.00")["usage_threshold"] == "30.00"
    rj("clock", "advance", clock, "--to", "2026-03-10T00:00:00Z")
    _import(tmp_path, customer, "2026-03-09T12:00:00Z", 1200, "a")
    live = rj("usage", "show", customer)
    assert (live["amount"], live["subscriptions"][0]["items"][0]["quantity"]) == ("12.00", "1200")
    rj("clock", "advance", clock, "--to", "2026-03-11T00:00:00Z")
    events = rj("events", "list", "--type", "usage.alert_triggered")
    assert [e["data"]["threshold"] for e in events] == ["5.00"]
    _import(tmp_path, customer, "2026-03-10T12:00:00Z", 2000, "b")
    rj("clock", "advance", clock, "--to", "2026-03-12T00:00:00Z")
    invoices = rj("invoices", "list", "--customer", customer)
    assert [i["billing_reason"] for i in invoices] == ["threshold"]
    assert rj("usage", "show", customer, "--subscription", sub)["unbilled"] == "0.00"
    listed = rj("alerts", "list", "--customer", customer)
    assert [a["id"] for a in listed] == [alert["id"]]
    assert rj("alerts", "delete", alert["id"])["deleted"] is True
    assert rj("alerts", "list", "--all") == []
    assert rj("usage", "threshold", sub, "--clear")["usage_threshold"] is None


def test_alerts_evaluate_runs_for_real_customers_and_bad_input_exits_2(tmp_path):
    rj("init", "--currency", "EUR", "--country", "DE")
    rj("meters", "create", "--code", "calls", "--aggregation", "sum", "--field", "n")
    rj("plans", "create", "--code", "api", "--name", "API", "--prices", PLAN)
    customer = rj("customers", "create", "--name", "Real", "--currency", "EUR", "--country", "DE")["id"]
    rj("subscriptions", "create", "--customer", customer, "--plan", "api")
    rj("alerts", "create", "--customer", customer, "--kind", "usage", "--meter", "calls", "--threshold", "10")
    _import(tmp_path, customer, datetime.now(UTC).isoformat(), 25, "r1")
    result = rj("alerts", "evaluate")
    assert (result["customers"], result["alerts_triggered"]) == (1, 1)
    assert rj("alerts", "evaluate")["alerts_triggered"] == 0
    error = rj(
        "alerts", "create", "--customer", customer, "--kind", "usage", "--meter", "nope", "--threshold", "1", code=2
    )
    assert error["error"]["code"] == "unknown_meter"
    error = rj(
        "alerts", "create", "--customer", customer, "--kind", "spend", "--threshold", "2", "--threshold", "1", code=2
    )
    assert error["error"]["code"] == "thresholds_not_ascending"
    assert rj("alerts", "create", "--customer", "cus_x", "--kind", "spend", "--threshold", "1", code=3)
    assert rj("usage", "show", "cus_x", code=3)["error"]["code"] == "customer_not_found"
    assert rj("alerts", "list") and len(rj("alerts", "list")) == 1


def test_alerts_list_all_reads_every_page_and_a_bad_limit_exits_2():
    """1,103 alerts: --all lists them all whatever --limit says (it read pages of --limit while the service gave
    at most 1,001, and stopped after one), and a page of --limit 0 or 1001 is refused (0 raised IndexError)."""
    from remit.bootstrap import Settings, bootstrap
    from remit.service_layer import alerts

    rj("init", "--currency", "EUR", "--country", "DE")
    rj("meters", "create", "--code", "calls", "--aggregation", "sum", "--field", "n")
    customer = rj("customers", "create", "--name", "Hooli", "--currency", "EUR", "--country", "DE")["id"]
    with bootstrap(Settings()).uow() as uow:
        made = [alerts.create_alert(uow, customer, "usage", [str(10 + i)], meter="calls")["id"] for i in range(1103)]
    for limit in ("20", "0", "5000"):
        assert [a["id"] for a in rj("alerts", "list", "--all", "--limit", limit)] == sorted(made)
    assert len(rj("alerts", "list", "--limit", "1000")) == 1000
    assert [a["id"] for a in rj("alerts", "list", "--limit", "2", "--starting-after", sorted(made)[0])] == sorted(made)[
        1:3
    ]
    for bad in ("0", "-1", "1001"):
        error = rj("alerts", "list", "--limit", bad, code=2)["error"]
        assert (error["code"], error["field"]) == ("invalid_limit", "limit")
