"""`remit wallets create|list|show|grant|transactions|void|recurring`, and credits paying invoices on a test clock."""

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


def test_recurring_grants_from_the_command_line():
    rj("init", "--currency", "EUR", "--country", "DE")
    clock = rj("clock", "create", "--name", "c", "--at", "2026-03-01T00:00:00Z")["id"]
    cus = rj("customers", "create", "--name", "Initech", "--currency", "EUR", "--country", "DE", "--test-clock", clock)[
        "id"
    ]
    wallet = rj("wallets", "create", "--customer", cus)["id"]
    made = rj("wallets", "recurring", "create", wallet, "--credits", "10", "--every", "week", "--count", "2")
    assert (made["interval"], made["interval_count"], made["grants_made"], made["next_grant_on"]) == (
        "week",
        2,
        1,  # starts today: granted at once
        "2026-03-15",
    )
    rj("clock", "advance", clock, "--to", "2026-04-01T00:00:00Z")  # 15 and 29 March
    listed = rj("wallets", "recurring", "list", wallet)
    assert [(s["grants_made"], s["next_grant_on"]) for s in listed] == [(3, "2026-04-12")]
    assert rj("wallets", "show", wallet)["balance_credits"] == "30"
    changed = rj("wallets", "recurring", "update", wallet, made["id"], "--credits", "15", "--ends-on", "2026-06-01")
    assert (changed["credits"], changed["ends_on"]) == ("15", "2026-06-01")
    assert rj("wallets", "recurring", "update", wallet, made["id"], "--no-end")["ends_on"] is None
    clash = rj("wallets", "recurring", "update", wallet, made["id"], "--no-expiry", "--expires-days", "3", code=2)
    assert clash["error"]["code"] == "invalid_choice"
    assert rj("wallets", "recurring", "cancel", wallet, made["id"])["status"] == "canceled"
    again = rj("wallets", "recurring", "cancel", wallet, made["id"], code=4)["error"]
    assert again["code"] == "recurring_grant_ended"
    bad = rj("wallets", "recurring", "create", wallet, "--credits", "1", "--starts-on", "2026-02-30", code=2)["error"]
    assert (bad["code"], bad["field"]) == ("invalid_date", "starts_on")
    past = rj("wallets", "recurring", "create", wallet, "--credits", "1", "--starts-on", "2026-02-28", code=2)["error"]
    assert (past["code"], past["field"]) == ("start_in_past", "starts_on")
    assert rj("wallets", "recurring", "list", "wal_nope", code=3)["error"]["code"] == "wallet_not_found"


def test_a_wallet_limited_to_some_fees_from_the_command_line():
    rj("init", "--currency", "EUR", "--country", "DE")
    rj("meters", "create", "--code", "calls", "--aggregation", "count")
    cus = rj("customers", "create", "--name", "Initech", "--currency", "EUR", "--country", "DE")["id"]
    wallet = rj("wallets", "create", "--customer", cus, "--fee-type", "usage", "--meter", "calls")
    assert wallet["applies_to"] == {"fee_types": ["usage"], "meters": ["calls"], "prices": []}
    assert rj("wallets", "update", wallet["id"], "--any-fee")["applies_to"] is None
    assert rj("wallets", "update", wallet["id"], "--low-balance-threshold", "10")["low_balance_threshold"] == "10"
    assert rj("wallets", "update", wallet["id"], "--no-low-balance")["low_balance_threshold"] is None
    assert rj("wallets", "update", wallet["id"], "--fee-type", "one_off")["applies_to"]["fee_types"] == ["one_off"]
    bad = rj("wallets", "update", wallet["id"], "--any-fee", "--meter", "calls", code=2)["error"]
    assert (bad["code"], bad["field"]) == ("invalid_choice", "any_fee")
    wrong = rj("wallets", "create", "--customer", cus, "--fee-type", "storage", code=2)["error"]
    assert (wrong["code"], wrong["field"]) == ("invalid_value", "applies_to.fee_types")
