"""Usage ingestion over HTTP: one event, batches with per-event outcomes, meters."""

import json
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import String, func, select

from remit.adapters.db import tables as t
from remit.entrypoints.api import fast_events
from tests.e2e.api.conftest import PLAN


def _setup(api):
    assert (
        api.post(
            "/meters",
            {"code": "tokens", "name": "Tokens", "aggregation": "sum", "field": "tokens", "group_by": ["model"]},
        ).status_code
        == 201
    )
    return api.post("/customers", {"name": "Hooli", "currency": "EUR", "country": "DE"}).json()["id"]


def _at(api, minutes=1):
    return (api.remit.clock.now() - timedelta(minutes=minutes)).isoformat()


def test_single_events_are_accepted_once(api):
    cus = _setup(api)
    event = {
        "customer_id": cus,
        "code": "tokens",
        "transaction_id": "t1",
        "timestamp": _at(api),
        "properties": {"tokens": 1200, "model": "large"},
    }
    first = api.post("/events", event)
    assert first.status_code == 200 and first.json()["status"] == "accepted"
    again = api.post("/events", event)
    assert again.json()["status"] == "duplicate"
    bad = api.post("/events", {**event, "transaction_id": "t2", "properties": {"tokens": "many", "model": "x"}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "not_numeric"
    assert bad.json()["error"]["field"] == "properties.tokens"
    assert [m["code"] for m in api.get("/meters").json()["data"]] == ["tokens"]


def test_batches_report_each_event(api):
    cus = _setup(api)
    good = {"customer_id": cus, "code": "tokens", "timestamp": _at(api), "properties": {"tokens": 5, "model": "s"}}
    batch = [
        {**good, "transaction_id": "a"},
        {**good, "transaction_id": "a"},
        {**good, "transaction_id": "b", "code": "nope"},
        {**good, "transaction_id": "c"},
    ]
    result = api.post("/events/batch", {"events": batch}).json()
    assert [e["transaction_id"] for e in result["accepted"]] == ["a", "c"]
    assert [e["index"] for e in result["duplicates"]] == [1]
    assert [(e["index"], e["error"]["code"]) for e in result["rejected"]] == [(2, "unknown_meter")]
    too_many = api.post("/events/batch", {"events": [good] * 1001})
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "batch_too_large"


def test_another_entitys_customer_is_unknown_to_a_scoped_key(api):
    cus = _setup(api)
    other = api.post("/legal_entities", {"name": "Other", "country": "US", "currency": "USD"}).json()["id"]
    api.key("other", ["write"], other)
    event = {
        "customer_id": cus,
        "code": "tokens",
        "transaction_id": "x",
        "timestamp": _at(api),
        "properties": {"tokens": 1, "model": "s"},
    }
    assert api.post("/events", event, key="other").json()["error"]["code"] == "unknown_customer"


def _without_ids(answer):
    if "accepted" in answer:
        return {**answer, "accepted": [{**e, "id": "x" if e["id"] else None} for e in answer["accepted"]]}
    return {**answer, "id": "x" if answer["id"] else None}


def test_the_gates_answers_are_the_routes_answers(api, monkeypatch):
    """Without an Idempotency-Key the gate answers plain event requests itself; with one they go through the
    FastAPI routes. Both answer the same JSON, apart from the new ids."""
    cus = _setup(api)
    good = {"customer_id": cus, "code": "tokens", "timestamp": _at(api), "properties": {"tokens": 5, "model": "s"}}

    def batch(prefix):
        return [
            {**good, "transaction_id": f"{prefix}a"},
            {**good, "transaction_id": f"{prefix}a"},
            {**good, "transaction_id": f"{prefix}b", "code": "nope"},
            {**good, "transaction_id": f"{prefix}c", "properties": {"tokens": "x", "model": "s"}},
            {**good, "transaction_id": f'{prefix}ü\t"\\'},
        ]

    by_gate = []
    ingest = fast_events._ingest
    monkeypatch.setattr(fast_events, "_ingest", lambda *a: by_gate.append(1) or ingest(*a))
    fast = api.post("/events/batch", {"events": batch("")})
    routed = api.post("/events/batch", {"events": batch("")}, **{"Idempotency-Key": "k1"})
    assert len(by_gate) == 1
    assert fast.status_code == routed.status_code == 200
    assert fast.headers["content-type"] == routed.headers["content-type"]
    assert fast.json()["accepted"] and routed.json()["accepted"] == []  # the second one found duplicates
    fresh = api.post("/events/batch", {"events": batch("r")}, **{"Idempotency-Key": "k2"})

    def unprefixed(answer):
        return {k: [{**e, "transaction_id": e["transaction_id"].removeprefix("r")} for e in v] if k != "object" else v
                for k, v in answer.items()}  # fmt: skip

    assert _without_ids(unprefixed(fresh.json())) == _without_ids(fast.json())
    one = {**good, "transaction_id": "solo"}
    fast_one = api.post("/events", one)
    routed_one = api.post("/events", {**one, "transaction_id": "solo2"}, **{"Idempotency-Key": "k3"})
    assert _without_ids(fast_one.json()) == {**_without_ids(routed_one.json()), "transaction_id": "solo"}
    assert api.post("/events", one).json() == {
        "object": "usage_event_result",
        "status": "duplicate",
        "transaction_id": "solo",
        "id": None,
    }
    assert "request-id" in fast_one.headers


def test_what_the_gate_declines_the_routes_answer(api):
    cus = _setup(api)
    good = {"customer_id": cus, "code": "tokens", "timestamp": _at(api), "properties": {"tokens": 5, "model": "s"}}
    assert api.post("/events", {**good, "transaction_id": "t"}, key="read").status_code == 403
    assert api.post("/events", {**good, "transaction_id": "t", "extra": 1}).status_code == 422
    refused = api.post("/events", {**good, "transaction_id": "t", "code": "nope"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_meter"
    assert api.post("/events/batch", {"events": [good], "more": 1}).status_code == 422
    assert api.post("/events/batch", {"events": ["x"]}).status_code == 422
    assert api.post("/events/batch", {"events": [good] * 1001}).json()["error"]["code"] == "batch_too_large"
    with api.remit.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.usage_events)).scalar_one() == 0


def test_a_body_not_sent_as_json_is_refused_on_every_path(api):
    """Without a JSON Content-Type FastAPI does not read a body as JSON (422); the gate's own answer for plain
    event requests follows the same rule, so nothing is stored either way."""
    import json

    cus = _setup(api)
    event = {"customer_id": cus, "code": "tokens", "transaction_id": "ct", "timestamp": _at(api)}
    body = json.dumps({**event, "properties": {"tokens": 1, "model": "s"}}).encode()
    batch = json.dumps({"events": [{**event, "properties": {"tokens": 1, "model": "s"}}]}).encode()
    for headers in (api.h("write"), {**api.h("write"), "Content-Type": "text/plain"}):
        assert api.client.post("/v1/events", content=body, headers=headers).status_code == 422
        assert api.client.post("/v1/events/batch", content=batch, headers=headers).status_code == 422
    with api.remit.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.usage_events)).scalar_one() == 0
    typed = {**api.h("write"), "Content-Type": "application/json; charset=utf-8"}
    assert api.client.post("/v1/events", content=body, headers=typed).json()["status"] == "accepted"


def test_usage_events_are_read_back_paged_and_only_by_keys_that_see_the_customer(api):
    cus = _setup(api)
    events = [
        {
            "customer_id": cus,
            "code": "tokens",
            "transaction_id": f"r{i}",
            "timestamp": _at(api, minutes=10 - i),
            "properties": {"tokens": f"{i}.5", "model": "large" if i % 2 else "small"},
        }
        for i in range(3)
    ]
    assert len(api.post("/events/batch", {"events": events}).json()["accepted"]) == 3
    first = api.get("/usage_events", key="read", customer_id=cus, limit=2).json()
    assert [(e["transaction_id"], e["value"], e["group"]) for e in first["data"]] == [
        ("r0", "0.5", {"model": "small"}),
        ("r1", "1.5", {"model": "large"}),
    ]
    assert first["has_more"] is True and first["data"][0]["object"] == "usage_event"
    rest = api.get("/usage_events", customer_id=cus, starting_after=first["data"][-1]["id"]).json()
    assert [e["transaction_id"] for e in rest["data"]] == ["r2"] and rest["has_more"] is False
    found = api.get("/usage_events", customer_id=cus, meter="tokens", transaction_id="r1").json()["data"]
    assert [e["counted"] for e in found] == [True]
    assert api.get("/usage_events", customer_id=cus, meter="other").json()["data"] == []
    large = api.get("/usage_events", customer_id=cus, meter="tokens", group="model:large").json()["data"]
    assert [e["transaction_id"] for e in large] == ["r1"]
    for bad in ("model", ["model:a", "model:b"]):
        bad_group = api.get("/usage_events", customer_id=cus, meter="tokens", group=bad)
        assert bad_group.status_code == 422 and bad_group.json()["error"]["field"] == "group"
    other = api.post("/legal_entities", {"name": "Other", "country": "US", "currency": "USD"}).json()["id"]
    api.key("elsewhere", ["read"], other)
    hidden = api.get("/usage_events", key="elsewhere", customer_id=cus)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "customer_not_found"
    missing = api.get("/usage_events")
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "customer_id"
    bad = api.get("/usage_events", customer_id=cus, occurred_gte=_at(api, 1), occurred_lt=_at(api, 5))
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "dates_out_of_order"
    gone = api.get("/usage_events", customer_id=cus, starting_after="uev_nope")
    assert gone.status_code == 404 and gone.json()["error"]["field"] == "starting_after"


def test_a_meter_by_its_code(api):
    _setup(api)
    meter = api.get("/meters/tokens", key="read").json()
    assert (meter["object"], meter["aggregation"], meter["group_by"]) == ("meter", "sum", ["model"])
    assert meter["name"] == "Tokens"  # as given, whatever its dimensions are called
    missing = api.get("/meters/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "meter_not_found"


def test_events_sent_by_mistake_are_canceled_each_answered_on_its_own(api):
    cus = _setup(api)
    good = {"customer_id": cus, "code": "tokens", "timestamp": _at(api), "properties": {"tokens": 5, "model": "s"}}
    assert (
        len(api.post("/events/batch", {"events": [{**good, "transaction_id": x} for x in "ab"]}).json()["accepted"])
        == 2
    )
    refs = [{"customer_id": cus, "transaction_id": x} for x in ("a", "a", "zz")] + [{"customer_id": cus}]
    answer = api.post("/events/cancel", {"events": refs, "reason": "sent twice by a retry bug"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "usage_cancellation_result"
    assert [(o["index"], o["transaction_id"], o["id"] is not None) for o in body["canceled"]] == [(0, "a", True)]
    assert [o["index"] for o in body["already_canceled"]] == [1]
    assert [(o["index"], o["error"]["code"]) for o in body["rejected"]] == [
        (2, "usage_event_not_found"),
        (3, "invalid_transaction_id"),
    ]
    shown = {e["transaction_id"]: e for e in api.get("/usage_events", customer_id=cus).json()["data"]}
    assert (shown["a"]["counted"], shown["a"]["cancellation_reason"]) == (False, "sent twice by a retry bug")
    assert shown["a"]["canceled_at"] is not None and shown["b"]["canceled_at"] is None
    again = api.post("/events/cancel", {"events": refs[:1]}).json()
    assert (again["canceled"], [o["index"] for o in again["already_canceled"]]) == ([], [0])
    # A key that cannot write, one that does not see the customer, and a request that is refused as a whole.
    assert api.post("/events/cancel", {"events": refs[1:2]}, key="read").status_code == 403
    other = api.post("/legal_entities", {"name": "Other", "country": "US", "currency": "USD"}).json()["id"]
    api.key("other", ["write"], other)
    hidden = api.post("/events/cancel", {"events": [{"customer_id": cus, "transaction_id": "b"}]}, key="other")
    assert [o["error"]["code"] for o in hidden.json()["rejected"]] == ["unknown_customer"]
    too_many = api.post("/events/cancel", {"events": refs[:1] * 1001})
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "batch_too_large"
    long_reason = api.post(
        "/events/cancel", {"events": [{"customer_id": cus, "transaction_id": "b"}], "reason": "x" * 501}
    )
    assert long_reason.status_code == 422 and long_reason.json()["error"]["field"] == "reason"
    assert long_reason.json()["error"]["code"] == "invalid_reason"
    still = {e["transaction_id"]: e["counted"] for e in api.get("/usage_events", customer_id=cus).json()["data"]}
    assert still == {"a": False, "b": True}
    with api.remit.engine.connect() as conn:
        types = conn.execute(select(t.events.c.type).where(t.events.c.type == "usage.events_canceled")).all()
    assert len(types) == 1


def test_events_name_their_customer_by_external_id_or_subscription(api):
    _setup(api)
    cus = api.post("/customers", {"name": "Acme", "currency": "EUR", "country": "DE", "external_id": "acme-42"}).json()
    event = {"code": "tokens", "timestamp": _at(api), "properties": {"tokens": 3, "model": "s"}}
    single = api.post("/events", {**event, "transaction_id": "x1", "external_customer_id": "acme-42"})
    assert single.status_code == 200 and single.json()["status"] == "accepted"
    batch = api.post(
        "/events/batch",
        {
            "events": [
                {**event, "transaction_id": "x1", "customer_id": cus["id"]},  # the same event: a duplicate
                {**event, "transaction_id": "x2", "external_customer_id": "nobody"},
            ]
        },
    ).json()
    assert [d["index"] for d in batch["duplicates"]] == [0]
    assert [(r["error"]["code"], r["error"]["field"]) for r in batch["rejected"]] == [
        ("unknown_customer", "external_customer_id")
    ]
    unknown = api.post("/events", {**event, "transaction_id": "x3", "subscription_id": "sub_nope"})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_subscription"
    stored = api.get("/usage_events", customer_id=cus["id"]).json()["data"]
    assert [e["transaction_id"] for e in stored] == ["x1"]


def test_a_meter_that_rounds_and_bad_rounding_refused(api):
    made = api.post(
        "/meters",
        {
            "code": "gb",
            "name": "Storage",
            "aggregation": "sum",
            "field": "gb",
            "rounding": "ceil",
            "rounding_precision": 1,
        },
    )
    assert made.status_code == 201 and (made.json()["rounding"], made.json()["rounding_precision"]) == ("ceil", 1)
    assert api.get("/meters/gb").json()["rounding"] == "ceil"
    for body, field in (
        ({"rounding": "up"}, "rounding"),
        ({"rounding": "ceil", "rounding_precision": 13}, "rounding_precision"),
        ({"rounding_precision": 2}, "rounding"),
    ):
        bad = api.post("/meters", {"code": "x", "name": "X", "aggregation": "sum", "field": "v", **body})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == field, bad.json()
    assert [m["code"] for m in api.get("/meters").json()["data"]] == ["gb"]


def test_a_meter_renamed_deactivated_and_reactivated(api):
    cus = _setup(api)
    renamed = api.post("/meters/tokens", {"name": "LLM tokens"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "LLM tokens"
    off = api.post("/meters/tokens/deactivate").json()
    assert (off["active"], off["deactivated_at"] is not None) == (False, True)
    event = {
        "customer_id": cus,
        "code": "tokens",
        "transaction_id": "t",
        "timestamp": _at(api),
        "properties": {"tokens": 1, "model": "s"},
    }
    refused = api.post("/events", event)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "meter_deactivated"
    assert api.get("/meters/tokens").json()["active"] is False
    on = api.post("/meters/tokens/reactivate").json()
    assert (on["active"], on["deactivated_at"]) == (True, None)
    assert api.post("/events", event).json()["status"] == "accepted"
    assert api.post("/meters/nope/deactivate").status_code == 404
    assert api.post("/meters/tokens", {"name": ""}).status_code == 422
    assert api.post("/meters/tokens/deactivate", key="read").status_code == 403


def test_usage_over_time_by_day(api):
    cus = _setup(api)
    event = {"customer_id": cus, "code": "tokens", "properties": {"tokens": 4, "model": "s"}}
    now = api.remit.clock.now()
    sent = [
        {**event, "transaction_id": f"d{n}", "timestamp": (now - timedelta(days=days)).isoformat()}
        for n, days in enumerate((1, 2, 2))
    ]
    assert len(api.post("/events/batch", {"events": sent}).json()["accepted"]) == 3
    today = now.date()
    got = api.get(
        f"/customers/{cus}/usage_series",
        key="read",
        meter="tokens",
        start_on=(today - timedelta(days=3)).isoformat(),
        end_on=today.isoformat(),
    )
    assert got.status_code == 200, got.json()
    body = got.json()
    assert (body["object"], body["granularity"], body["timezone"]) == ("usage_series", "day", "UTC")
    assert [(d["quantity"], d["events"]) for d in body["data"]] == [("0", 0), ("8", 2), ("4", 1)]
    assert body["data"][1]["groups"] == [{"group": {"model": "s"}, "quantity": "8", "events": 2}]
    bad = api.get(f"/customers/{cus}/usage_series", meter="tokens", start_on="2026-01-02", end_on="2026-01-01")
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "dates_out_of_order"
    missing = api.get(f"/customers/{cus}/usage_series", meter="nope", start_on="2026-01-01", end_on="2026-01-02")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "meter"
    hourly = api.get(
        f"/customers/{cus}/usage_series", meter="tokens", start_on="2025-12-30", end_on="2025-12-31", granularity="hour"
    )
    assert hourly.status_code == 200 and len(hourly.json()["data"]) == 24


def test_a_cancellation_echoing_text_that_cannot_be_written_back_still_answers(api):
    """A lone surrogate in a transaction id is refused for that event; the answer leaves it out of the echo."""
    cus = _setup(api)
    good = {"customer_id": cus, "code": "tokens", "timestamp": _at(api), "properties": {"tokens": 1, "model": "s"}}
    assert api.post("/events", {**good, "transaction_id": "good"}).json()["status"] == "accepted"
    refs = [f'{{"customer_id": "{cus}", "transaction_id": "{txn}"}}' for txn in ("good", "x\\ud800")]
    body = ('{"events": [' + ", ".join(refs) + "]}").encode()  # the escape as JSON text: a lone surrogate
    got = api.client.post("/v1/events/cancel", content=body, headers=api.h(**{"Content-Type": "application/json"}))
    assert got.status_code == 200, got.text
    answer = got.json()
    assert [o["transaction_id"] for o in answer["canceled"]] == ["good"]
    assert [(o["index"], o["transaction_id"], o["error"]["code"]) for o in answer["rejected"]] == [
        (1, None, "invalid_transaction_id")
    ]


def test_a_dimension_name_holding_a_separator_is_refused(api):
    for name in ("aws:region", "a=b"):
        bad = api.post("/meters", {"code": "x", "name": "X", "aggregation": "count", "group_by": [name]})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "group_by[0]", bad.json()


def _raw_post(api, path, body):
    return api.client.post(f"/v1{path}", content=body.encode(), headers=api.h(**{"Content-Type": "application/json"}))


def test_numbers_are_kept_exactly_as_sent_on_every_path(api, monkeypatch):
    cus = _setup(api)
    numbers = ["12345678901234567890.5", "0.30000000000000001", "1e-40", "2.50"]
    event = '{"customer_id": "%s", "code": "tokens", "transaction_id": "%s", "timestamp": "%s", "properties": {"tokens": %s, "model": "m", "n": [%s]}}'
    for i, number in enumerate(numbers):
        assert (
            _raw_post(api, "/events", event % (cus, f"one{i}", _at(api), number, number)).json()["status"] == "accepted"
        )
    batch = ",".join(event % (cus, f"many{i}", _at(api), n, n) for i, n in enumerate(numbers))
    assert len(_raw_post(api, "/events/batch", '{"events": [' + batch + "]}").json()["accepted"]) == 4
    monkeypatch.setattr(fast_events, "answer", _declined)  # the FastAPI routes too
    headers = {"Idempotency-Key": "k1", "Content-Type": "application/json"}
    single = event % (cus, "route", _at(api), numbers[0], numbers[0])
    assert (
        api.client.post("/v1/events", content=single.encode(), headers=api.h(**headers)).json()["status"] == "accepted"
    )
    events = api.get("/usage_events", customer_id=cus, limit=20).json()["data"]
    values = {e["transaction_id"]: e["value"] for e in events}
    expected = ["12345678901234567890.5", "0.30000000000000001", "0.0000000000000000000000000000000000000001", "2.50"]
    assert [values[f"one{i}"] for i in range(4)] == [values[f"many{i}"] for i in range(4)] == expected
    assert values["route"] == expected[0]
    with api.remit.engine.connect() as conn:
        stored = dict(
            conn.execute(select(t.usage_events.c.transaction_id, func.cast(t.usage_events.c.properties, String))).all()
        )
    assert (
        stored["one0"].replace(" ", "") == '{"tokens":12345678901234567890.5,"model":"m","n":[12345678901234567890.5]}'
    )
    assert stored["many2"].replace(" ", "") == '{"tokens":1E-40,"model":"m","n":[1E-40]}'


async def _declined(*args, **kwargs):
    return False


def test_json_nested_too_deeply_is_invalid_json(api):
    for path in ("/events", "/events/batch", "/customers"):
        r = _raw_post(api, path, '{"events": ' + "[" * 100_000 + "]" * 100_000 + "}")
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_json")


def test_one_event_and_a_batch_take_the_same_times_and_properties(api):
    cus = _setup(api)
    stamps = [
        1767225540,
        "1767225540",
        "2025-12-31",
        "2025-12-31 23:59:00",
        "2025-12-31T23:59:00.1234567Z",
        "2025-12-31T23:59:00z",
        "20251231T235900Z",
        "2025-12-31T23:59:00+00:60",
        "2025-W53-3T23:59:00",
        "2025-12-31T23:59Z",
        "2025-12-31T23Z",
        "2026-01-01T15:59:00+16:00",
    ]
    cases = [(stamp, {"tokens": 1, "model": "m"}) for stamp in stamps]
    cases += [(_at(api), {"tokens": 1, "model": "m", "": 1}), (_at(api), {"tokens": 1, "model": "m", "k" * 101: 1})]
    for i, (stamp, props) in enumerate(cases):
        event = {"customer_id": cus, "code": "tokens", "timestamp": stamp, "properties": props}
        one = api.post("/events", {**event, "transaction_id": f"one{i}"})
        many = api.post("/events/batch", {"events": [{**event, "transaction_id": f"many{i}"}]}).json()
        assert one.status_code in (200, 422), one.text
        single = one.json().get("status") or one.json()["error"]["code"]
        batch = "accepted" if many["accepted"] else many["rejected"][0]["error"]["code"]
        assert single == batch, (stamp, props, one.json(), many)
    events = api.get("/usage_events", customer_id=cus, limit=100).json()["data"]
    times = {e["transaction_id"]: e["occurred_at"] for e in events}
    assert sorted(times) == sorted(f"{w}{i}" for w in ("one", "many") for i in (3, 4, 5, 9, 11))
    assert all(times[f"one{i}"] == times[f"many{i}"] for i in (3, 4, 5, 9, 11))


def test_a_formula_that_cannot_value_one_event_refuses_that_event_alone(api):
    formula = "amount if amount > 100 else 0"
    meter = {"code": "cost", "name": "Cost", "aggregation": "sum", "expression": formula}
    assert api.post("/meters", meter).status_code == 201
    cus = api.post("/customers", {"name": "Hooli", "currency": "EUR", "country": "DE"}).json()["id"]
    event = {"customer_id": cus, "code": "cost", "timestamp": _at(api)}
    batch = [
        {**event, "transaction_id": "ok", "properties": {"amount": "150"}},
        {**event, "transaction_id": "text", "properties": {"amount": "lots"}},
        {**event, "transaction_id": "infinite", "properties": {"amount": "Infinity"}},
        {**event, "transaction_id": "huge", "properties": {"amount": "6e999999"}},
    ]
    result = api.post("/events/batch", {"events": batch})
    assert result.status_code == 200
    assert [e["transaction_id"] for e in result.json()["accepted"]] == ["ok"]
    assert [(e["index"], e["error"]["code"], e["error"]["field"]) for e in result.json()["rejected"]] == [
        (1, "formula_not_numeric", "properties"),
        (2, "formula_not_numeric", "properties"),
        (3, "formula_not_numeric", "properties"),
    ]
    one = api.post("/events", {**event, "transaction_id": "text", "properties": {"amount": "lots"}})
    assert one.status_code == 422 and one.json()["error"]["code"] == "formula_not_numeric"
    assert [e["transaction_id"] for e in api.get("/usage_events", customer_id=cus).json()["data"]] == ["ok"]
    for bad in ("max() + amount", "amount * 1e400", "amount > 100"):  # (the last could never give a number)
        refused = api.post("/meters", {**meter, "code": "cost2", "expression": bad})
        assert refused.status_code == 422
        assert (refused.json()["error"]["code"], refused.json()["error"]["field"]) == ("invalid_formula", "expression")


def test_a_misspelled_field_is_refused_not_dropped_on_every_path(api):
    """A batch event with `subscripton_id` (or a cancellation with `reson`) was accepted and the field lost."""
    cus = _setup(api)
    good = {"customer_id": cus, "code": "tokens", "timestamp": _at(api), "properties": {"tokens": 5, "model": "s"}}
    batch = api.post("/events/batch", {"events": [{**good, "transaction_id": "a", "subscripton_id": "sub_x"}]})
    assert [(e["error"]["code"], e["error"]["field"]) for e in batch.json()["rejected"]] == [
        ("unknown_field", "subscripton_id")
    ]
    single = api.post("/events", {**good, "transaction_id": "b", "subscripton_id": "sub_x"})
    assert (single.status_code, single.json()["error"]["code"]) == (422, "unknown_field")
    assert api.post("/events", {**good, "transaction_id": "c"}).json()["status"] == "accepted"
    canceled = api.post("/events/cancel", {"events": [{"customer_id": cus, "transaction_id": "c", "reson": "x"}]})
    assert [(e["error"]["code"], e["error"]["field"]) for e in canceled.json()["rejected"]] == [
        ("unknown_field", "reson")
    ]
    assert api.get("/usage_events", customer_id=cus).json()["data"][0]["counted"] is True


def test_a_meters_filters_and_dimensions_are_checked_for_shape(api):
    """A filter's values are a list ("eu" as a string once became the filter ["e", "u"]); a dimension once."""
    for filters, field in (({"region": "eu"}, "filters.region"), ({"region": []}, "filters.region")):
        bad = api.post("/meters", {"code": "x", "name": "X", "aggregation": "count", "filters": filters})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == field, bad.json()
    twice = api.post("/meters", {"code": "x", "name": "X", "aggregation": "count", "group_by": ["region", "region"]})
    error = twice.json()["error"]
    assert (twice.status_code, error["code"], error["message"], error["field"]) == (
        422,
        "invalid_group_by",
        "'region' is given twice.",
        "group_by[1]",
    )
    assert api.get("/meters").json()["data"] == []


def test_times_without_an_offset_are_utc_and_a_stale_cursor_is_not_found(api):
    """`as_of` and `created_gte` without an offset were a 500; an unknown `starting_after` restarted the list."""
    cus = _setup(api)
    assert api.get("/events", created_gte="2025-12-31T00:00:00").status_code == 200
    run = api.post("/bill_runs", {"as_of": "2025-12-31T00:00:00"})
    assert (run.status_code, run.json()["as_of"]) == (201, "2025-12-31T00:00:00Z")
    stale = api.get("/events", starting_after="evt_nope")
    assert (stale.status_code, stale.json()["error"]["code"], stale.json()["error"]["field"]) == (
        404,
        "event_not_found",
        "starting_after",
    )
    assert cus


def test_events_of_no_customer_are_listed_as_they_are_shown(api):
    """`plan.created` has no customer: `GET /v1/events/{id}` showed it to a key of every legal entity, and the list
    left it out for every key."""
    assert api.post("/plans", PLAN).status_code == 201
    listed = api.get("/events", limit=100).json()["data"]
    (created,) = [e for e in listed if e["type"] == "plan.created"]
    assert created["customer_id"] is None
    assert api.get(f"/events/{created['id']}").json()["id"] == created["id"]


def test_every_list_answers_a_cursor_that_does_not_exist_with_404(api):
    _setup(api)
    for path, code in (
        ("/customers", "customer_not_found"),
        ("/meters", "meter_not_found"),
        ("/plans", "plan_not_found"),
    ):
        stale = api.get(path, starting_after="zzz_nope")
        assert (stale.status_code, stale.json()["error"]["code"], stale.json()["error"]["field"]) == (
            404,
            code,
            "starting_after",
        ), path


def test_properties_read_back_with_their_numbers_as_sent(api):
    """The listing writes a property's number as it was stored: a float would have made 0.30000000000000001 0.3,
    1e-400 zero and 1e999999 infinity (once written as null)."""
    cus = _setup(api)
    props = '{"tokens": 2, "model": "m", "x": 0.30000000000000001, "tiny": 1e-400, "big": 1e999999, "n": [2.50, 12345678901234567890123]}'
    body = '{"customer_id": "%s", "code": "tokens", "transaction_id": "p1", "timestamp": "%s", "properties": %s}'
    assert _raw_post(api, "/events", body % (cus, _at(api), props)).json()["status"] == "accepted"
    r = api.get("/usage_events", customer_id=cus)
    assert r.status_code == 200
    (event,) = json.loads(r.text, parse_float=Decimal)["data"]
    assert event["properties"] == {
        "tokens": 2,
        "model": "m",
        "x": Decimal("0.30000000000000001"),
        "tiny": Decimal("1e-400"),
        "big": Decimal("1e999999"),
        "n": [Decimal("2.50"), 12345678901234567890123],
    }
    assert '"x": 0.30000000000000001' in r.text.replace('":0', '": 0')
    assert event["transaction_id"] == "p1" and event["value"] == "2" and event["counted"] is True
