"""`remit meters create`, `remit events import FILE` (CSV and JSON lines) and `remit usage events`."""

import gzip
import json
from datetime import UTC, datetime, timedelta

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
    return json.loads(result.stdout)


def test_import_csv_and_jsonl_with_duplicates_and_refusals(tmp_path):
    rj("init", "--currency", "EUR", "--country", "DE")
    customer = rj("customers", "create", "--name", "Initech", "--currency", "EUR", "--country", "DE")["id"]
    rj("meters", "create", "--code", "calls", "--aggregation", "count")
    rj("meters", "create", "--code", "gb", "--aggregation", "sum", "--field", "gb", "--group-by", "region")
    assert [(m["code"], m["group_by"]) for m in rj("meters", "list")] == [("calls", []), ("gb", ["region"])]
    at = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    old = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    csv_file = tmp_path / "usage.csv"
    csv_file.write_text(
        "customer_id,code,transaction_id,timestamp,gb,region\n"
        f"{customer},gb,r1,{at},1.5,eu\n"
        f"{customer},gb,r2,{at},2,us\n"
        f"{customer},gb,r1,{at},1.5,eu\n"
        f"{customer},gb,r3,{at},lots,eu\n"
        f"{customer},gb,r4,{old},1,eu\n"
    )
    report = rj("events", "import", str(csv_file), code=2)
    assert (report["accepted"], report["duplicates"], report["rejected"]) == (2, 1, 2)
    assert [(r["line"], r["code"]) for r in report["rejected_events"]] == [(5, "not_numeric"), (6, "event_too_old")]
    again = rj("events", "import", str(csv_file), "--grace-days", "60", code=2)
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (1, 3, 1)  # r4 now within grace
    jsonl = tmp_path / "calls.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps({"customer_id": customer, "code": "calls", "transaction_id": f"c{i}", "timestamp": at})
            for i in range(2500)
        )
        + "\n{broken\n"
    )
    report = rj("events", "import", str(jsonl), code=2)
    assert (report["accepted"], report["rejected"]) == (2500, 1)
    assert report["rejected_events"][0]["line"] == 2501
    # What was stored, read back: the imported file's events, each once, in time order.
    stored = rj("usage", "events", customer, "--meter", "gb")
    assert (stored[0]["transaction_id"], stored[0]["value"], len(stored)) == ("r4", "1", 3)  # the oldest first
    assert sorted((e["transaction_id"], e["value"], e["group"]["region"]) for e in stored[1:]) == [
        ("r1", "1.5", "eu"),  # r1 and r2 share a time: in id order
        ("r2", "2", "us"),
    ]
    assert len(rj("usage", "events", customer, "--all")) == 2503
    assert len(rj("usage", "events", customer, "--since", at, "--limit", "5")) == 5
    assert rj("usage", "events", customer, "--transaction-id", "c7")[0]["meter"] == "calls"
    bad = runner.invoke(app, ["usage", "events", customer, "--since", "yesterday", "--json"])
    assert bad.exit_code == 2 and json.loads(bad.stderr)["error"]["field"] == "since"


def test_usage_plan_billed_on_a_test_clock_and_a_line_explained(tmp_path):
    rj("init", "--currency", "EUR", "--country", "DE")
    rj("meters", "create", "--code", "tokens", "--aggregation", "sum", "--expression", "tokens_in + 4 * tokens_out")
    prices = [
        {
            "currency": "EUR",
            "model": "per_unit",
            "config": {"unit_price": "0.00001"},
            "name": "Tokens",
            "usage": {"meter": "tokens", "included_units": "100000"},
        },
    ]
    rj("plans", "create", "--code", "llm", "--name", "LLM", "--prices", json.dumps(prices))
    clock = rj("clock", "create", "--name", "sim", "--at", "2026-03-01T00:00:00Z")["id"]
    customer = rj(
        "customers", "create", "--name", "Initech", "--currency", "EUR", "--country", "DE", "--test-clock", clock
    )["id"]
    rj("subscriptions", "create", "--customer", customer, "--plan", "llm", "--anchor", "calendar")
    rj("clock", "advance", clock, "--to", "2026-03-20T00:00:00Z")
    events = tmp_path / "tokens.jsonl"
    events.write_text(
        "\n".join(
            json.dumps(
                {
                    "customer_id": customer,
                    "code": "tokens",
                    "transaction_id": f"c{i}",
                    "timestamp": "2026-03-19T12:00:00Z",
                    "properties": {"tokens_in": 40000, "tokens_out": 10000},
                }
            )
            for i in range(5)
        )
    )
    assert rj("events", "import", str(events))["accepted"] == 5
    rj("clock", "advance", clock, "--to", "2026-04-01T00:00:00Z")
    invoice = rj("invoices", "list", "--customer", customer)[0]
    line = rj("invoices", "show", invoice["id"])["lines"][0]
    assert (line["kind"], line["amount"]) == (
        "usage",
        "3.00",
    )  # 5 × (40,000 + 4 × 10,000) - 100,000 = 300,000 × 0.00001
    explained = rj("invoices", "explain", invoice["id"], line["id"])
    assert explained["usage"]["expression"] == "tokens_in + 4 * tokens_out"
    assert explained["usage"]["billable_units"] == "300000"
    text = runner.invoke(app, ["invoices", "explain", invoice["id"], line["id"]])
    assert text.exit_code == 0 and "100000 units included; 300000 billable." in text.stdout


def test_events_canceled_by_transaction_id_or_from_a_file(tmp_path):
    rj("init", "--currency", "EUR", "--country", "DE")
    customer = rj("customers", "create", "--name", "Initech", "--currency", "EUR", "--country", "DE")["id"]
    rj("meters", "create", "--code", "calls", "--aggregation", "count")
    at = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    jsonl = tmp_path / "calls.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps({"customer_id": customer, "code": "calls", "transaction_id": f"c{i}", "timestamp": at})
            for i in range(1200)
        )
    )
    assert rj("events", "import", str(jsonl))["accepted"] == 1200
    two = rj("events", "cancel", "--customer", customer, "c0", "c1", "--reason", "test traffic")
    assert (two["canceled"], two["already_canceled"], two["rejected"]) == (2, 0, 0)
    # The import file itself names every event: the rest are canceled, the first two are already.
    report = rj("events", "cancel", "--file", str(jsonl))
    assert (report["canceled"], report["already_canceled"], report["rejected"]) == (1198, 2, 0)
    refs = tmp_path / "refs.csv"
    refs.write_text(f"customer_id,transaction_id\n{customer},c5\n{customer},nope\n")
    refused = rj("events", "cancel", "--file", str(refs), code=2)
    assert [(r["line"], r["code"]) for r in refused["rejected_events"]] == [(3, "usage_event_not_found")]
    stored = rj("usage", "events", customer, "--transaction-id", "c0")
    assert (stored[0]["counted"], stored[0]["cancellation_reason"]) == (False, "test traffic")
    nothing = runner.invoke(app, ["events", "cancel", "c9"])
    assert nothing.exit_code == 2 and "missing_events" in nothing.stderr
    table = runner.invoke(app, ["events", "cancel", "--customer", customer, "c3"])
    assert table.exit_code == 0 and "already_canceled" in table.stdout


def test_a_csv_import_names_customers_by_their_external_id_or_a_subscription(tmp_path):
    rj("init", "--currency", "EUR", "--country", "DE")
    customer = rj(
        "customers", "create", "--name", "Initech", "--currency", "EUR", "--country", "DE", "--external-id", "ini-7"
    )["id"]
    rj("meters", "create", "--code", "calls", "--aggregation", "count")
    at = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    csv_file = tmp_path / "usage.csv"
    csv_file.write_text(
        "external_customer_id,customer_id,code,transaction_id,timestamp\n"
        f"ini-7,,calls,e1,{at}\n"
        f",{customer},calls,e2,{at}\n"
        f"nobody,,calls,e3,{at}\n"
    )
    report = rj("events", "import", str(csv_file), code=2)
    assert (report["accepted"], report["rejected"]) == (2, 1)
    assert [(r["line"], r["field"]) for r in report["rejected_events"]] == [(4, "external_customer_id")]
    stored = rj("usage", "events", customer)
    assert sorted(e["transaction_id"] for e in stored) == ["e1", "e2"]
    assert all("external_customer_id" not in e["properties"] for e in stored)
    refs = tmp_path / "cancel.csv"
    refs.write_text("external_customer_id,transaction_id\nini-7,e1\n")
    assert rj("events", "cancel", "--file", str(refs))["canceled"] == 1


def test_db_partitions_has_nothing_to_do_on_sqlite():
    rj("init", "--currency", "EUR", "--country", "DE")
    assert rj("db", "partitions") == {"partitions": "SQLite has none: nothing to do"}
    assert rj("migrate")["partitions_created"] == 0


def test_meters_renamed_deactivated_and_reactivated():
    rj("init", "--currency", "EUR", "--country", "DE")
    rj("meters", "create", "--code", "calls", "--aggregation", "count")
    assert rj("meters", "rename", "calls", "--name", "API calls")["name"] == "API calls"
    assert rj("meters", "deactivate", "calls")["deactivated_at"] is not None
    assert rj("meters", "list")[0]["deactivated_at"] is not None
    assert rj("meters", "reactivate", "calls")["deactivated_at"] is None
    missing = runner.invoke(app, ["meters", "deactivate", "nope"])
    assert missing.exit_code != 0 and "meter_not_found" in missing.stderr


def test_usage_series_by_day():
    rj("init", "--currency", "EUR", "--country", "DE")
    customer = rj("customers", "create", "--name", "Initech", "--currency", "EUR", "--country", "DE")["id"]
    rj("meters", "create", "--code", "calls", "--aggregation", "count")
    today = datetime.now(UTC).date()
    got = rj(
        "usage",
        "series",
        customer,
        "--meter",
        "calls",
        "--since",
        str(today - timedelta(days=2)),
        "--until",
        str(today),
    )
    assert [d["quantity"] for d in got["data"]] == ["0", "0"]
    bad = runner.invoke(app, ["usage", "series", customer, "--meter", "calls", "--since", "x", "--until", "y"])
    assert bad.exit_code == 2 and "invalid_date" in bad.stderr


AT = (datetime.now(UTC) - timedelta(hours=2)).isoformat()


def _gb_setup():
    rj("init", "--currency", "EUR", "--country", "DE")
    customer = rj("customers", "create", "--name", "Initech", "--currency", "EUR", "--country", "DE")["id"]
    rj("meters", "create", "--code", "gb", "--aggregation", "sum", "--field", "gb")
    return customer


def _line(customer, txn, **extra):
    event = {"customer_id": customer, "code": "gb", "transaction_id": txn, "timestamp": AT, "properties": {"gb": "1"}}
    return json.dumps({**event, **extra})


def _refused(report):
    return [(e["line"], e["code"]) for e in report["rejected_events"]]


def test_a_json_lines_file_refuses_bad_lines_one_by_one(tmp_path):
    customer = _gb_setup()
    f = tmp_path / "u.jsonl"
    lines = [
        _line(customer, "a").encode(),
        b'{"customer_id": "\xff\xfe"}',  # not UTF-8
        _line(customer, "b", customer_id=[customer]).encode(),  # a list: no customer id
        b"[" * 100_000 + b"]" * 100_000,  # nested too deeply
        _line(customer, "c")
        .replace('"1"', "12345678901234567890.5")
        .encode(),  # a number with more digits than a float
    ]
    f.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n\r\n")  # a BOM and Windows line ends
    report = rj("events", "import", str(f), code=2)
    assert (report["accepted"], report["rejected"]) == (2, 3)
    assert _refused(report) == [(2, "invalid_json"), (3, "unknown_customer"), (4, "invalid_json")]
    values = {e["transaction_id"]: e["value"] for e in rj("usage", "events", customer, "--all")}
    assert values == {"a": "1", "c": "12345678901234567890.5"}


def test_a_csv_file_refuses_bad_rows_with_their_real_line_numbers(tmp_path):
    customer = _gb_setup()
    f = tmp_path / "u.csv"
    rows = [
        "customer_id,code,transaction_id,timestamp,gb,note",
        f'{customer},gb,a,{AT},1,"two\nlines"',  # lines 2-3
        "",
        f"{customer},gb,b,{AT},lots,x",  # line 5: not numeric
        f"{customer},gb,c,{AT},1,5,x",  # line 6: a decimal comma, one field too many
    ]
    f.write_bytes(
        "\r\n".join(rows).encode()
        + f"\r\n{customer},gb,d,{AT},1,".encode()
        + b"\xff\r\n"  # line 7: not UTF-8
        + f"{customer},gb,e,{AT},2,y\r\n".encode()
    )
    report = rj("events", "import", str(f), code=2)
    assert (report["accepted"], report["rejected"]) == (2, 3)
    assert _refused(report) == [(5, "not_numeric"), (6, "invalid_csv"), (7, "invalid_text")]


def test_a_csv_properties_column_must_hold_an_object(tmp_path):
    customer = _gb_setup()
    f = tmp_path / "u.csv"
    f.write_text(
        "customer_id,code,transaction_id,timestamp,properties\n"
        f'{customer},gb,a,{AT},"{{""gb"": 1.50}}"\n'
        f'{customer},gb,b,{AT},"[1, 2]"\n',
        newline="",
    )
    report = rj("events", "import", str(f), code=2)
    assert (report["accepted"], _refused(report)) == (1, [(3, "invalid_json")])
    assert [e["value"] for e in rj("usage", "events", customer, "--all")] == ["1.50"]


def test_a_csv_header_naming_a_column_twice_refuses_the_file(tmp_path):
    customer = _gb_setup()
    f = tmp_path / "u.csv"
    f.write_text(f"customer_id,code,transaction_id,timestamp,gb,gb\n{customer},gb,a,{AT},5,7\n", newline="")
    result = runner.invoke(app, ["events", "import", str(f), "--json"])
    assert result.exit_code == 2
    assert "invalid_csv" in result.output
    assert rj("usage", "events", customer, "--all") == []


def test_grace_days_has_a_limit(tmp_path):
    f = tmp_path / "u.jsonl"
    f.write_text("{}\n")
    result = runner.invoke(app, ["events", "import", str(f), "--grace-days", "1000000"])
    assert result.exit_code == 2 and "--grace-days" in result.output and "36500" in result.output


def test_a_cancel_file_reports_real_line_numbers(tmp_path):
    customer = _gb_setup()
    f = tmp_path / "u.jsonl"
    f.write_text(_line(customer, "a") + "\n")
    rj("events", "import", str(f))
    c = tmp_path / "c.csv"
    c.write_text(f"customer_id,transaction_id\n\n{customer},a\n\n{customer},nope\n", newline="")
    out = rj("events", "cancel", "--file", str(c), code=2)
    assert [(e["line"], e["transaction_id"]) for e in out["rejected_events"]] == [(5, "nope")]


@pytest.mark.parametrize("filters", ['{"region": "eu"}', "[1]", '"x"', '{"region": 5}'])
def test_meter_filters_of_the_wrong_shape_are_refused_with_exit_2(filters):
    """A string for a filter's values once became the filter ["e", "u"] (its events never counted); other shapes
    were a traceback."""
    rj("init", "--currency", "EUR", "--country", "DE")
    result = runner.invoke(app, ["meters", "create", "--code", "c", "--aggregation", "count", "--filters", filters])
    assert result.exit_code == 2, result.output
    assert "invalid_filters" in result.output + result.stderr
    assert rj("meters", "list") == []


def test_list_limits_are_1_to_1000_and_a_page_holds_no_more_than_asked(tmp_path):
    rj("init", "--currency", "EUR", "--country", "DE")
    for name in ("A", "B", "C"):
        rj("customers", "create", "--name", name, "--currency", "EUR", "--country", "DE")
    assert [c["name"] for c in rj("customers", "list", "--limit", "2")] == ["A", "B"]
    for bad in ("0", "1001", "-3"):
        result = runner.invoke(app, ["customers", "list", "--limit", bad])
        assert result.exit_code == 2 and "invalid_limit" in result.output + result.stderr, result.output
    stale = runner.invoke(app, ["customers", "list", "--starting-after", "cus_nope"])
    assert stale.exit_code == 3 and "customer_not_found" in stale.output + stale.stderr
    assert len(rj("events", "list", "--limit", "1")) == 1


def test_an_imported_whole_number_of_more_than_28_digits_reads_back_exactly(tmp_path):
    customer = _gb_setup()
    big = "9" * 50  # within the 64 characters a value holds
    f = tmp_path / "u.csv"
    f.write_text(f"customer_id,code,transaction_id,timestamp,gb\n{customer},gb,a,{AT},{big}\n", newline="")
    assert rj("events", "import", str(f))["accepted"] == 1
    [event] = rj("usage", "events", customer, "--all")
    assert (event["value"], event["properties"]["gb"]) == (big, big)  # not rounded to 1 followed by 50 zeros


def test_an_empty_csv_cell_is_no_property(tmp_path):
    customer = _gb_setup()
    rj("meters", "create", "--code", "users", "--aggregation", "unique_count", "--field", "user")
    rj("meters", "create", "--code", "calls", "--aggregation", "count", "--group-by", "region")
    f = tmp_path / "u.csv"
    f.write_text(
        "customer_id,code,transaction_id,timestamp,gb,user,region\n"
        f"{customer},gb,a,{AT},2,,\n"  # the other meters' columns left empty
        f"{customer},users,b,{AT},,u1,\n"
        f"{customer},users,c,{AT},,,\n"  # no user: not a user of its own
        f"{customer},calls,d,{AT},,,eu\n"
        f"{customer},calls,e,{AT},,,\n"  # no region: not a group of its own
        f"{customer},gb,f,{AT}\n",  # a short row: no gb
        newline="",
    )
    report = rj("events", "import", str(f), code=2)
    assert (report["accepted"], _refused(report)) == (
        3,
        [(4, "missing_property"), (6, "missing_property"), (7, "missing_property")],
    )
    stored = {e["transaction_id"]: e["properties"] for e in rj("usage", "events", customer, "--all")}
    assert stored == {"a": {"gb": "2"}, "b": {"user": "u1"}, "d": {"region": "eu"}}


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        ("customer_id,code,timestamp,gb", "transaction_id"),
        ("customer_id,code,Transaction_ID,timestamp,gb", "transaction_id"),
        ("customer,code,transaction_id,timestamp,gb", "customer_id (or external_customer_id, or subscription_id)"),
        ("customer_id,transaction_id,gb", "code, timestamp"),
    ],
)
def test_a_csv_header_missing_a_column_events_need_refuses_the_file(tmp_path, header, missing):
    customer = _gb_setup()
    f = tmp_path / "u.csv"
    f.write_text(f"{header}\n{customer},gb,a,{AT},5\n", newline="")
    result = runner.invoke(app, ["events", "import", str(f), "--json"])
    assert result.exit_code == 2, result.output
    error = json.loads(result.stderr)["error"]
    assert (error["code"], error["field"]) == ("invalid_csv", "file")
    assert error["message"] == f"The header has no column {missing}."
    assert rj("usage", "events", customer, "--all") == []


def test_a_gzipped_file_is_imported_and_a_damaged_one_refused_with_a_clear_error(tmp_path):
    customer = _gb_setup()
    jsonl = tmp_path / "u.jsonl.gz"
    jsonl.write_bytes(gzip.compress(f"{_line(customer, 'a')}\n\n{{broken\n{_line(customer, 'b')}\n".encode()))
    report = rj("events", "import", str(jsonl), code=2)
    assert (report["accepted"], _refused(report)) == (2, [(3, "invalid_json")])  # the file's own line numbers
    csv_file = tmp_path / "u.CSV.GZ"
    csv_file.write_bytes(
        gzip.compress(f"\ufeffcustomer_id,code,transaction_id,timestamp,gb\r\n{customer},gb,c,{AT},3\r\n".encode())
    )
    assert rj("events", "import", str(csv_file))["accepted"] == 1
    whole = gzip.compress("".join(f"{_line(customer, f'd{i}')}\n" for i in range(3000)).encode())
    cut = tmp_path / "cut.jsonl"  # compressed, whatever its name says
    cut.write_bytes(whole[: len(whole) // 2])
    result = runner.invoke(app, ["events", "import", str(cut), "--json", "--chunk-size", "100"])
    assert result.exit_code == 2, result.output
    error = json.loads(result.stderr)["error"]
    assert (error["code"], error["field"]) == ("invalid_file", "file")
    cut.write_bytes(whole)  # the whole file again: what the cut one stored counts once
    report = rj("events", "import", str(cut), "--chunk-size", "100")
    assert report["accepted"] + report["duplicates"] == 3000 and report["duplicates"] > 0
    assert len(rj("usage", "events", customer, "--all")) == 3003


def test_a_malformed_csv_row_is_refused_on_its_own_and_an_unclosed_quote_swallows_nothing_silently(tmp_path):
    customer = _gb_setup()
    f = tmp_path / "u.csv"
    f.write_text(
        "customer_id,code,transaction_id,timestamp,gb,note\n"
        f"{customer},gb,a,{AT},1,fine\n"
        f'{customer},gb,b,{AT},"5"0,x\n'  # line 3: text after a closing quote (lax parsing read 50)
        f"{customer},gb,c,{AT},1,{'x' * 200_000}\n"  # line 4: a field past the csv module's limit
        f"{customer},gb,d,{AT},2,ok\n"
        f'{customer},gb,e,{AT},1,"never closed\n'  # line 6: swallows the rest of the file
        f"{customer},gb,f,{AT},1,lost\n",
        newline="",
    )
    result = runner.invoke(app, ["events", "import", str(f), "--json"])
    assert result.exit_code == 2, result.output  # no traceback: every problem is a line's refusal
    report = json.loads(result.stdout)
    assert (report["accepted"], _refused(report)) == (2, [(3, "invalid_csv"), (4, "invalid_csv"), (6, "invalid_csv")])
    assert "runs from line 6 to the end of the file (line 7)" in report["rejected_events"][2]["message"]
    assert sorted(e["transaction_id"] for e in rj("usage", "events", customer, "--all")) == ["a", "d"]


def test_the_import_report_shows_what_the_file_says_never_reads_it_as_markup(tmp_path):
    customer = _gb_setup()
    f = tmp_path / "u.jsonl"
    f.write_text(
        _line(customer, "[bold]a[/bold]").replace('"1"', '"[red]lots"') + "\n" + _line(customer, "[/]", code="x") + "\n"
    )
    result = runner.invoke(app, ["events", "import", str(f)])
    assert result.exit_code == 2, (result.output, result.exception)  # a closing tag alone no longer crashes it
    shown = " ".join(result.stdout.split())
    assert "[bold]a[/bold]" in shown and "'[red]lots'" in shown and "[/]" in shown


def test_usage_events_json_writes_properties_numbers_as_stored(tmp_path):
    """`remit usage events --json` writes each property's number as stored: not 0.3, nor Infinity (not JSON)."""
    from decimal import Decimal

    rj("init", "--currency", "EUR", "--country", "DE")
    customer = rj("customers", "create", "--name", "Initech", "--currency", "EUR", "--country", "DE")["id"]
    rj("meters", "create", "--code", "calls", "--aggregation", "count")
    at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    lines = tmp_path / "e.jsonl"
    lines.write_text(
        f'{{"customer_id": "{customer}", "code": "calls", "transaction_id": "t1", "timestamp": "{at}", '
        '"properties": {"x": 0.30000000000000001, "big": 1e999999, "n": 7}}\n'
    )
    rj("events", "import", str(lines))
    result = runner.invoke(app, ["usage", "events", customer, "--json"])
    assert result.exit_code == 0, result.output
    (event,) = json.loads(result.stdout, parse_float=Decimal, parse_constant=lambda c: pytest.fail(c))
    assert event["properties"] == {"x": Decimal("0.30000000000000001"), "big": Decimal("1e999999"), "n": 7}


@pytest.mark.parametrize("command", [("events", "import"), ("events", "cancel", "--file")])
def test_a_missing_file_or_a_folder_is_a_clear_error_in_json_too(tmp_path, command):
    """Before: Typer's own check answered in plain text, whatever --json said."""
    rj("init", "--currency", "EUR", "--country", "DE")
    for path, says in ((tmp_path / "nope.jsonl", "does not exist"), (tmp_path, "is a folder")):
        result = runner.invoke(app, [*command, str(path), "--json"])
        assert result.exit_code == 2, result.output
        error = json.loads(result.stderr)["error"]
        assert (error["code"], error["field"]) == ("file_not_found", "file")
        assert says in error["message"]
