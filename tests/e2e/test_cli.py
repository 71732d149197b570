"""The `remit` command line, end to end on a SQLite file: JSON output, paging and exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from remit.entrypoints.cli.main import app

runner = CliRunner()


@pytest.fixture
def db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("REMIT_DATABASE_URL", url)
    return url


def remit(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.output, getattr(result, "stderr", ""))
    return result


def remit_json(*args: str):
    return json.loads(remit(*args, "--json").stdout)


def test_a_customer_lifecycle_from_the_command_line(db):
    assert remit_json("init", "--name", "Acme GmbH", "--country", "DE", "--currency", "EUR")["created"] is True
    remit(
        "plans",
        "create",
        "--code",
        "pro",
        "--name",
        "Pro",
        "--prices",
        '[{"currency":"EUR","model":"per_unit","config":{"unit_price":"12.00"},"interval":"month"}]',
    )
    clock = remit_json("clock", "create", "--name", "t", "--at", "2026-01-01T00:00:00Z")["id"]
    customer = remit_json(
        "customers", "create", "--name", "Globex", "--currency", "EUR", "--country", "FR", "--test-clock", clock
    )["id"]
    sub = remit_json(
        "subscriptions", "create", "--customer", customer, "--plan", "pro", "--quantity", "5", "--anchor", "calendar"
    )["id"]
    assert remit_json("clock", "advance", clock, "--to", "2026-02-15T00:00:00Z")["invoices_created"] == 2
    remit_json("subscriptions", "change-quantity", sub, "--quantity", "8")
    preview = remit_json("customers", "upcoming-invoice", customer)
    assert [ln["amount"] for ln in preview["lines"]] == ["18.00"]  # 3 more seats × 12 × 14/28 days
    invoices = remit_json("invoices", "list", "--customer", customer)
    assert [i["total"] for i in invoices] == ["60.00", "60.00"]
    shown = remit_json("invoices", "show", invoices[0]["id"])
    assert shown["lines"][0]["unit_price"] == "12" and shown["lines"][0]["quantity"] == "5"
    note = remit_json(
        "credit-notes", "create", "--invoice", invoices[0]["id"], "--amount", "10.00", "--reason", "order_change"
    )
    assert note["number"] == "CN-2026-000001" and note["amount"] == "10.00"
    assert remit_json("invoices", "pay", invoices[0]["id"])["status"] == "paid"
    assert remit_json("subscriptions", "cancel", sub)["effective_on"] == "2026-02-15"
    events = remit_json("events", "list", "--limit", "500")
    assert {"invoice.finalized", "credit_note.issued", "subscription.canceled"} <= {e["type"] for e in events}
    # --type takes one type, a family or "*"; a type Remit never records is refused, not answered with nothing
    invoice_types = {e["type"] for e in remit_json("events", "list", "--limit", "500", "--type", "invoice.*")}
    assert invoice_types == {e["type"] for e in events if e["type"].startswith("invoice.")} >= {"invoice.paid"}
    assert [e["type"] for e in remit_json("events", "list", "--type", "invoice.paid")] == ["invoice.paid"]
    assert len(remit_json("events", "list", "--limit", "500", "--type", "*")) == len(events)
    typo = remit("events", "list", "--type", "invoice.payed", code=2)
    assert "invalid_event_type" in typo.output


def test_the_upcoming_invoice_says_what_pays_the_total(db):
    """The preview's text says how its total becomes the amount due, as an invoice does: the customer balance and
    prepaid credits it applies (it said "Total 60.00 EUR, amount due 50.00" and not why)."""
    remit_json("init", "--name", "Acme GmbH", "--country", "DE", "--currency", "EUR")
    remit(
        "plans",
        "create",
        "--code",
        "pro",
        "--name",
        "Pro",
        "--prices",
        '[{"currency":"EUR","model":"per_unit","config":{"unit_price":"12.00"},"interval":"month"}]',
    )
    clock = remit_json("clock", "create", "--name", "t", "--at", "2026-01-01T00:00:00Z")["id"]
    customer = remit_json(
        "customers", "create", "--name", "Globex", "--currency", "EUR", "--country", "FR", "--test-clock", clock
    )["id"]
    remit_json(
        "subscriptions", "create", "--customer", customer, "--plan", "pro", "--quantity", "5", "--anchor", "calendar"
    )
    remit_json("clock", "advance", clock, "--to", "2026-01-15T00:00:00Z")
    (january,) = remit_json("invoices", "list", "--customer", customer)
    remit_json("invoices", "pay", january["id"])
    remit_json("credit-notes", "create", "--invoice", january["id"], "--amount", "10.00", "--reason", "order_change")
    shown = remit("customers", "upcoming-invoice", customer).stdout
    assert "Total 60.00 EUR, customer balance 10.00, prepaid credits 0.00, amount due 50.00" in shown, shown


def test_lists_page_with_limit_and_all(db):
    remit("init", "--currency", "EUR", "--country", "DE")
    for i in range(5):
        remit("customers", "create", "--name", f"C{i}", "--currency", "EUR", "--country", "DE")
    first = remit_json("customers", "list", "--limit", "2")
    assert len(first) == 2
    second = remit_json("customers", "list", "--limit", "2", "--starting-after", first[-1]["id"])
    assert len(second) == 2 and second[0]["id"] > first[-1]["id"]
    assert len(remit_json("customers", "list", "--all")) == 5


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["customers", "create", "--name", "X", "--currency", "EURO", "--country", "DE"], 2, "unknown_currency"),
        (["subscriptions", "cancel", "sub_missing"], 3, "subscription_not_found"),
        (["bill-run", "--as-of", "2999-01-01T00:00:00Z"], 2, "as_of_in_future"),
        (["bill-run", "--as-of", "yesterday"], 2, "invalid_time"),
        (["plans", "create", "--code", "x", "--name", "X", "--prices", "{"], 2, "invalid_json"),
        (["webhooks", "deliveries", "we_x", "--status", "bogus"], 2, "invalid_choice"),
    ],
)
def test_errors_have_codes_fields_and_exit_codes(db, args, code, error):
    remit("init", "--currency", "EUR", "--country", "DE")
    result = remit(*args, "--json", code=code)
    assert json.loads(result.stderr)["error"]["code"] == error


def test_a_conflict_exits_with_4(db):
    remit("init", "--currency", "EUR", "--country", "DE")
    remit(
        "plans",
        "create",
        "--code",
        "pro",
        "--name",
        "Pro",
        "--prices",
        '[{"currency":"EUR","model":"flat","config":{"amount":"9"}}]',
    )
    result = remit(
        "plans",
        "create",
        "--code",
        "pro",
        "--name",
        "Pro",
        "--prices",
        '[{"currency":"EUR","model":"flat","config":{"amount":"9"}}]',
        code=4,
    )
    assert "plan_code_taken" in result.stderr


def test_the_demo_runs_as_a_real_process(tmp_path):
    env = {**os.environ, "REMIT_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    exe = Path(sys.executable).with_name("remit")
    out = subprocess.run(
        [str(exe), "demo", "--customers", "8", "--months", "3", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    summary = json.loads(out.stdout)
    assert summary["customers"] == 8
    assert summary["invoices_total"] >= 8
    listed = subprocess.run(
        [str(exe), "invoices", "list", "--all", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert len(json.loads(listed.stdout)) == summary["invoices_total"]
    again = subprocess.run(
        [str(exe), "demo", "--customers", "2", "--months", "1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 4 and "database_not_empty" in again.stderr
