"""`remit wallets create|list|show|grant|transactions|void`, and credits paying invoices on a test clock."""

import json

import pytest
from typer.testing import CliRunner

from remit.entrypoints.cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("REMIT_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")


def rj(*args: str, code: int = 0):
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, (result.output, result.stderr)
    return json.loads(result.stdout if code == 0 else result.stderr)


def test_wallet_from_the_command_line():
    rj("init", "--currency", "EUR", "--country", "DE")
    prices = '[{"currency":"EUR","model":"flat","config":{"amount":"30.00"},"interval":"month"}]'
    rj("plans", "create", "--code", "basic", "--name", "Basic", "--prices", prices)
    clock = rj("clock", "create", "--name", "c", "--at", "2026-03-01T00:00:00Z")["id"]
    cus = rj("customers", "create", "--name", "Initech", "--currency", "EUR", "--country", "DE", "--test-clock", clock)[
        "id"
    ]
    wallet = rj("wallets", "create", "--customer", cus, "--name", "Prepaid", "--rate", "0.01")
    assert (wallet["rate"], wallet["balance"]) == ("0.01", "0.00")
    granted = rj("wallets", "grant", wallet["id"], "--credits", "5000", "--expires-at", "2026-04-15T00:00:00Z")
    assert (granted["status"], granted["amount"]) == ("active", "50.00")
    sold = rj("wallets", "grant", wallet["id"], "--credits", "1000", "--paid")
    assert (sold["status"], sold["invoice_id"] is not None) == ("pending", True)
    rj("subscriptions", "create", "--customer", cus, "--plan", "basic", "--anchor", "calendar")
    rj("clock", "advance", clock, "--to", "2026-05-01T00:00:00Z")
    shown = rj("wallets", "show", wallet["id"])
    assert (shown["balance_credits"], shown["pending_credits"]) == ("0", "1000")
    assert sorted(g["status"] for g in shown["grants"]) == ["active", "pending"]
    ledger = rj("wallets", "transactions", wallet["id"], "--all")
    # March takes 30.00, April the 20.00 left (nothing remains to expire on 15 April); May is due in full.
    assert [(x["kind"], x["credits"], x["amount"]) for x in ledger] == [
        ("grant", "5000", "50.00"),
        ("consumption", "-3000", "-30.00"),
        ("consumption", "-2000", "-20.00"),
    ]
    invoices = rj("invoices", "list", "--customer", cus, "--all")
    assert sorted(i["amount_due"] for i in invoices) == ["0.00", "10.00", "10.00", "30.00"]
    assert [w["id"] for w in rj("wallets", "list", "--customer", cus)] == [wallet["id"]]
    updated = rj(
        "wallets", "update", wallet["id"], "--priority", "3", "--top-up-threshold", "100", "--top-up-credits", "500"
    )
    assert (updated["priority"], updated["top_up_threshold"], updated["top_up_credits"]) == (3, "100", "500")
    assert rj("wallets", "update", wallet["id"], "--no-top-up")["top_up_credits"] is None
    assert (
        rj("wallets", "update", wallet["id"], "--no-top-up", "--top-up-credits", "5", code=2)["error"]["code"]
        == "invalid_choice"
    )
    assert rj("wallets", "void", wallet["id"])["status"] == "voided"
    assert rj("wallets", "void", wallet["id"], code=4)["error"]["code"] == "wallet_voided"
    assert rj("wallets", "grant", "wal_nope", "--credits", "1", code=3)["error"]["code"] == "wallet_not_found"
    bad = rj("wallets", "grant", wallet["id"], "--credits", "-1", code=2)["error"]
    assert (bad["code"], bad["field"]) == ("invalid_amount", "credits")
