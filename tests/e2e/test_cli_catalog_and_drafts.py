"""Catalog, coupons, overrides, one-off charges and draft review from the command line (real clock)."""

import json

import pytest
from typer.testing import CliRunner

from remit.entrypoints.cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("REMIT_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")


def rj(*args: str):
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (result.output, result.stderr)
    return json.loads(result.stdout)


def test_drafts_wait_for_review_and_take_manual_edits():
    rj("init", "--currency", "EUR", "--country", "DE", "--review-drafts")
    rj(
        "plans",
        "create",
        "--code",
        "pro",
        "--name",
        "Pro",
        "--prices",
        '[{"currency":"EUR","model":"flat","config":{"amount":"100.00"}}]',
    )
    customer = rj("customers", "create", "--name", "Initech", "--currency", "EUR", "--country", "DE")["id"]
    rj("coupons", "create", "--code", "HALF", "--name", "Half off", "--percent-off", "50", "--duration", "forever")
    rj("coupons", "promotion-code", "--coupon", "HALF", "--code", "HALFNOW", "--max-redemptions", "1")
    sub = rj("subscriptions", "create", "--customer", customer, "--plan", "pro", "--promotion-code", "HALFNOW")["id"]
    onboarding = rj(
        "prices",
        "create",
        "--product",
        "Onboarding",
        "--kind",
        "one_off",
        "--spec",
        '{"currency":"EUR","type":"one_off","model":"flat","config":{"amount":"250"}}',
    )["price_id"]
    rj("invoice-items", "create", "--customer", customer, "--price", onboarding)
    assert rj("bill-run")["invoices_created"] == 1
    draft = rj("invoices", "list", "--customer", customer)[0]
    assert draft["status"] == "draft" and draft["number"] is None
    assert draft["total"] == "300.00"  # 100 - 50% + 250 onboarding
    edited = rj(
        "invoices",
        "add-line",
        draft["id"],
        "--description",
        "Extra training day",
        "--unit-price",
        "80",
        "--quantity",
        "2",
    )
    assert edited["total"] == "460.00"
    training = next(ln for ln in edited["lines"] if ln["description"] == "Extra training day")
    assert rj("invoices", "remove-line", draft["id"], "--line", training["id"])["total"] == "300.00"
    final = rj("invoices", "finalize", draft["id"])
    assert final["status"] == "open" and final["number"].startswith("INV-")
    # A second bill run the same day finds nothing new; the promotion code is used up.
    assert rj("bill-run")["invoices_created"] == 0
    result = runner.invoke(app, ["subscriptions", "apply-coupon", sub, "--promotion-code", "HALFNOW", "--json"])
    assert result.exit_code == 4 and "promotion_code_exhausted" in result.stderr


def test_versions_overrides_and_migration():
    rj("init", "--currency", "EUR", "--country", "DE")
    rj(
        "plans",
        "create",
        "--code",
        "team",
        "--name",
        "Team",
        "--prices",
        '[{"currency":"EUR","model":"per_unit","config":{"unit_price":"10"}}]',
    )
    customer = rj("customers", "create", "--name", "Hooli", "--currency", "EUR", "--country", "DE")["id"]
    sub = rj("subscriptions", "create", "--customer", customer, "--plan", "team", "--quantity", "3")["id"]
    assert (
        rj(
            "plans",
            "publish-version",
            "--code",
            "team",
            "--prices",
            '[{"currency":"EUR","model":"per_unit","config":{"unit_price":"12"}}]',
        )["version"]
        == 2
    )
    versions = {(p["version"], p["config"]["unit_price"]) for p in rj("plans", "list")}
    assert versions == {(1, "10"), (2, "12")}
    price_v1 = next(p["price_id"] for p in rj("plans", "list") if p["version"] == 1)
    rj(
        "prices",
        "override",
        "--customer",
        customer,
        "--price",
        price_v1,
        "--model",
        "per_unit",
        "--config",
        '{"unit_price": "8"}',
    )
    rj("bill-run")
    assert [i["total"] for i in rj("invoices", "list", "--customer", customer)] == ["24.00"]  # 3 × negotiated 8
    assert rj("plans", "migrate", "--code", "team", "--to-version", "2")["subscriptions_moved"] == 1
    events = rj("subscriptions", "show", sub)["events"]
    assert [e["source"] for e in events] == ["start", "change_plan"]


def test_a_price_with_a_number_too_large_is_an_error_not_a_traceback():
    """`remit plans create` has no API schema in front of it: 1e999999999 once escaped as decimal.Overflow."""
    rj("init", "--currency", "EUR", "--country", "DE")
    prices = '[{"currency":"EUR","model":"flat","config":{"amount":"1e999999999"}}]'
    result = runner.invoke(app, ["plans", "create", "--code", "x", "--name", "X", "--prices", prices, "--json"])
    assert result.exit_code == 2, result.output
    error = json.loads(result.stderr)["error"]
    assert (error["code"], error["field"]) == ("invalid_number", "prices[0].config.amount")
    assert rj("plans", "list") == []


def test_a_manual_line_with_a_number_too_large_is_an_error_not_a_traceback():
    """`remit invoices add-line --unit-price 1e999999999` once escaped as a bare decimal.Overflow (parse_rate
    normalised it in the default context); 1e-999999999 was taken, and writing it out in full took a minute."""
    rj("init", "--currency", "EUR", "--country", "DE", "--review-drafts")
    prices = '[{"currency":"EUR","model":"flat","config":{"amount":"100.00"}}]'
    rj("plans", "create", "--code", "pro", "--name", "Pro", "--prices", prices)
    customer = rj("customers", "create", "--name", "Initech", "--currency", "EUR", "--country", "DE")["id"]
    rj("subscriptions", "create", "--customer", customer, "--plan", "pro")
    rj("bill-run")
    draft = rj("invoices", "show", rj("invoices", "list", "--customer", customer)[0]["id"])
    for option, value, code in [
        ("--unit-price", "1e999999999", "invalid_number"),
        ("--unit-price", "-1e999999999", "invalid_number"),
        ("--unit-price", "1000000000000000", "invalid_number"),
        ("--unit-price", "1e-999999999", "too_many_decimals"),
        ("--quantity", "1e999999999", "invalid_number"),
        ("--quantity", "1e-999999999", "too_many_decimals"),
    ]:
        numbers = {"--unit-price": "1", "--quantity": "1", option: value}
        args = ["invoices", "add-line", draft["id"], "--description", "Extra", "--json"]
        result = runner.invoke(app, args + [part for pair in numbers.items() for part in pair])
        assert result.exit_code == 2, (option, value, result.output)
        error = json.loads(result.stderr)["error"]
        assert (error["code"], error["field"]) == (code, option[2:].replace("-", "_")), (option, value)
    assert rj("invoices", "show", draft["id"]) == draft
