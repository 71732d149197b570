"""A bill run from the command line that cannot bill one customer: the others are billed, the customer is listed
with why, and the command exits with 6; `remit bill-runs` shows the run again (real clock, SQLite file)."""

import json

import pytest
from typer.testing import CliRunner

from remit.entrypoints.cli.main import BILL_RUN_FAILURES_EXIT, app

runner = CliRunner()


@pytest.fixture(autouse=True)
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("REMIT_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")


def run(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.output, result.stderr)
    return result


def rj(*args: str, code: int = 0):
    return json.loads(run(*args, "--json", code=code).stdout)


def test_a_bill_run_lists_the_customers_it_could_not_bill_and_exits_with_6():
    rj("init", "--currency", "EUR", "--country", "DE")
    seats = '[{"currency":"EUR","model":"per_unit","config":{"unit_price":"12.00"},"interval":"month"}]'
    rj("plans", "create", "--code", "seats", "--name", "Seats", "--prices", seats)
    good = rj("customers", "create", "--name", "Initech", "--currency", "EUR", "--country", "DE")["id"]
    typo = rj("customers", "create", "--name", "Globex", "--currency", "EUR", "--country", "DE")["id"]
    rj("subscriptions", "create", "--customer", good, "--plan", "seats", "--quantity", "5")
    # 10^15 seats at 12.00: an amount no invoice can hold
    rj("subscriptions", "create", "--customer", typo, "--plan", "seats", "--quantity", "9" * 15)

    assert BILL_RUN_FAILURES_EXIT == 6
    first = rj("bill-run", code=6)
    assert (first["status"], first["invoices_created"], first["customers_failed"]) == ("done", 1, 1)
    (failure,) = first["failures"]
    assert failure["customer_id"] == typo and failure["error"]["code"] == "amount_out_of_range"

    table = run("bill-run", code=6).stdout  # for people: the run, then who was not billed and why
    assert "Customers not billed" in table and "amount_out_of_range" in table

    runs = rj("bill-runs", "list")
    assert [r["id"] for r in runs][0] == first["id"] and [r["customers_failed"] for r in runs] == [1, 1]
    shown = rj("bill-runs", "show", first["id"])
    assert shown["failures"] == first["failures"]
    missing = runner.invoke(app, ["bill-runs", "show", "billrun_nope", "--json"])
    assert missing.exit_code == 3 and "bill_run_not_found" in missing.stderr
    assert len(rj("invoices", "list", "--customer", good)) == 1
    assert rj("invoices", "list", "--customer", typo) == []


def test_the_runs_of_a_test_clocks_advance_are_listed_with_whom_they_could_not_bill():
    rj("init", "--currency", "EUR", "--country", "DE")
    seats = '[{"currency":"EUR","model":"per_unit","config":{"unit_price":"12.00"},"interval":"month"}]'
    rj("plans", "create", "--code", "seats", "--name", "Seats", "--prices", seats)
    clock = rj("clock", "create", "--name", "sim", "--at", "2026-01-01T00:00:00Z")["id"]
    typo = rj("customers", "create", "--name", "Globex", "--currency", "EUR", "--country", "DE", "--test-clock", clock)[
        "id"
    ]
    rj("subscriptions", "create", "--customer", typo, "--plan", "seats", "--quantity", "9" * 15)
    advanced = rj("clock", "advance", clock, "--to", "2026-03-01T00:00:00Z")
    assert advanced["customers_failed"] >= 1

    runs = rj("bill-runs", "list", "--test-clock", clock, "--all")
    assert runs and all(r["test_clock_id"] == clock for r in runs)
    failed = [r for r in runs if r["customers_failed"]]
    assert sum(r["customers_failed"] for r in failed) == advanced["customers_failed"]
    shown = rj("bill-runs", "show", failed[0]["id"])
    assert [(f["customer_id"], f["error"]["code"]) for f in shown["failures"]] == [(typo, "amount_out_of_range")]
    assert rj("bill-runs", "list") == []  # the real world's runs: none
    missing = runner.invoke(app, ["bill-runs", "list", "--test-clock", "clk_nope", "--json"])
    assert missing.exit_code == 3 and "test_clock_not_found" in missing.stderr
