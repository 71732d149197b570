"""Webhooks against a real HTTP receiver on 127.0.0.1: signatures, retries, timeouts, order per object, rollbacks,
killed workers, giving up after 3 days, concurrent workers and late-committing transactions (PostgreSQL)."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from remit.adapters.db import tables as t
from remit.adapters.db.engine import make_engine
from remit.adapters.db.ids import new_id
from remit.bootstrap import Remit
from remit.domain.clock import FixedClock
from remit.service_layer import accounts, webhooks
from tests import builders as b
from tests.integration.webhook_receiver import Receiver, Reply, running_receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False) as client:
        yield client


def endpoint(app: Remit, url: str, types: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    with app.uow() as uow:
        return webhooks.create_endpoint(uow, url, types or ["*"], **kwargs)


def emit(app: Remit, object_id: str, type_: str = "meter.updated", customer_id: str | None = None, **data: Any) -> str:
    with app.uow() as uow:
        uow.emit(type_, "thing", object_id, dict(data), customer_id)
        event_id = uow._events[-1]["public_id"]
    return str(event_id)


def advance(app: Remit, **delta: float) -> None:
    clock = app.clock
    assert isinstance(clock, FixedClock)
    clock.move_to(clock.now() + timedelta(**delta))


def deliveries(app: Remit) -> list[dict[str, Any]]:
    d = t.webhook_deliveries.c
    with app.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t.webhook_deliveries).order_by(d.event_id)).mappings()]


def attempts(app: Remit) -> list[dict[str, Any]]:
    a = t.webhook_attempts.c
    with app.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t.webhook_attempts).order_by(a.attempted_at, a.id)).mappings()]


def deliver(app: Remit, http: httpx.Client, **kwargs: Any) -> int:
    webhooks.fan_out(app.engine, app.clock)
    return webhooks.deliver_due(app.engine, app.clock, http, **kwargs)


def test_signature_verifies_with_the_helper_and_by_hand(app, receiver, http):
    b.seller(app)
    secret = endpoint(app, receiver.url, ["customer.created"])["secret"]
    assert secret.startswith("whsec_")
    customer = b.customer(app, None)
    assert deliver(app, http) == 1
    [got] = receiver.received
    header = got.headers["remit-signature"]
    now = app.clock.now()
    assert webhooks.verify_signature(secret, header, got.body, now=now)
    stamp, v1 = (part.split("=", 1)[1] for part in header.split(","))
    assert int(stamp) == int(now.timestamp())
    assert v1 == hmac.new(secret.encode(), f"{stamp}.".encode() + got.body, hashlib.sha256).hexdigest()
    assert not webhooks.verify_signature(secret, header, got.body + b" ", now=now)
    assert not webhooks.verify_signature("whsec_other", header, got.body, now=now)
    assert not webhooks.verify_signature(secret, header, got.body, now=now + timedelta(minutes=6))
    body = got.json
    assert got.headers["content-type"] == "application/json"
    assert body["id"] == got.event_id and body["id"].startswith("evt_")
    assert body["type"] == "customer.created" and body["created_at"] == "2026-01-01T00:00:00Z"
    assert body["data"] | {"name": "Test Customer"} == body["data"]
    assert {k: body["data"][k] for k in ("object_id", "object_type", "customer_id")} == {
        "object_id": customer,
        "object_type": "customer",
        "customer_id": customer,
    }
    [delivery] = deliveries(app)
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 1


def test_retries_after_500s_with_backoff_then_succeeds(app, receiver, http):
    endpoint(app, receiver.url)
    receiver.script = [Reply(500), Reply(503)]
    emit(app, "obj_1")
    start = app.clock.now()
    assert deliver(app, http) == 1
    [delivery] = deliveries(app)
    assert delivery["status"] == "pending" and delivery["last_status_code"] == 500
    assert start + timedelta(seconds=24) <= delivery["next_attempt_at"] <= start + timedelta(seconds=36)
    assert deliver(app, http) == 0  # not due yet
    advance(app, seconds=40)
    assert deliver(app, http) == 1
    [delivery] = deliveries(app)
    assert app.clock.now() + timedelta(seconds=48) <= delivery["next_attempt_at"]
    advance(app, seconds=80)
    assert deliver(app, http) == 1
    [delivery] = deliveries(app)
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 3
    assert [a["status_code"] for a in attempts(app)] == [500, 503, 200]
    assert len(set(receiver.event_ids())) == 1 and len(receiver.received) == 3


def test_a_timeout_is_a_failed_attempt(app, receiver, http):
    endpoint(app, receiver.url)
    receiver.script = [Reply(200, delay_s=1.0)]
    emit(app, "obj_1")
    assert deliver(app, http, timeout_s=0.2) == 1
    [attempt] = attempts(app)
    assert attempt["status_code"] is None and "timed out" in attempt["error"]
    [delivery] = deliveries(app)
    assert delivery["status"] == "pending" and delivery["next_attempt_at"] > app.clock.now()
    advance(app, minutes=1)
    assert deliver(app, http, timeout_s=5) == 1
    assert deliveries(app)[0]["status"] == "succeeded"


def test_events_of_one_object_arrive_in_order(app, receiver, http):
    endpoint(app, receiver.url)
    receiver.script = [Reply(500)]
    first = emit(app, "obj_a", "meter.deactivated")
    second = emit(app, "obj_a", "meter.reactivated")
    other = emit(app, "obj_b", "meter.deactivated")
    one_by_one = {"concurrency": 1}  # so that the scripted 500 goes to obj_a's first event
    assert deliver(app, http, **one_by_one) == 2  # obj_a's first (fails) and obj_b's; obj_a's second waits
    assert receiver.event_ids() == [first, other]
    advance(app, minutes=1)
    assert deliver(app, http, **one_by_one) == 1  # the first again; the second waited while it was pending
    assert deliver(app, http, **one_by_one) == 1
    assert receiver.event_ids() == [first, other, first, second]
    assert {d["status"] for d in deliveries(app)} == {"succeeded"}


def test_nothing_is_delivered_for_a_rolled_back_transaction(app, receiver, http):
    b.seller(app)
    endpoint(app, receiver.url)
    with pytest.raises(RuntimeError), app.uow() as uow:
        accounts.create_customer(uow, "Ghost", currency_code="EUR", country="DE")
        raise RuntimeError("changed my mind")
    assert deliver(app, http) == 0
    kept = b.customer(app, None)
    assert deliver(app, http) == 1
    assert [r.json["data"]["object_id"] for r in receiver.received] == [kept]
    assert len(deliveries(app)) == 1


def test_a_worker_that_claimed_and_died_is_replaced_after_its_lease(app, receiver, http):
    endpoint(app, receiver.url)
    event = emit(app, "obj_1")
    webhooks.fan_out(app.engine, app.clock)
    [claimed] = webhooks.claim(app.engine, app.clock.now(), 10, timedelta(seconds=60))  # ...and the worker dies
    assert webhooks.deliver_due(app.engine, app.clock, http) == 0  # still leased
    advance(app, seconds=61)
    assert webhooks.deliver_due(app.engine, app.clock, http) == 1
    assert receiver.event_ids() == [event]
    assert [a["status_code"] for a in attempts(app)] == [200]
    assert deliveries(app)[0]["status"] == "succeeded"


CHILD = """
import sys
from datetime import datetime
import httpx
from remit.adapters.db.engine import make_engine
from remit.bootstrap import Remit
from remit.domain.clock import FixedClock
from remit.service_layer import webhooks
remit = Remit(make_engine(sys.argv[1]), FixedClock(datetime.fromisoformat(sys.argv[2])))
with httpx.Client(trust_env=False) as client:
    webhooks.deliver_due(remit.engine, remit.clock, client, timeout_s=30)
"""


def test_a_worker_process_killed_mid_request_loses_nothing(app, receiver, http):
    endpoint(app, receiver.url)
    event = emit(app, "obj_1")
    webhooks.fan_out(app.engine, app.clock)
    hold = threading.Event()
    receiver.script = [Reply(200, hold=hold)]
    url = app.engine.url.render_as_string(hide_password=False)
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, app.clock.now().isoformat()])
    try:
        assert receiver.got_request.wait(30), "the worker never called"
        child.kill()
        child.wait(10)
    finally:
        hold.set()
    [delivery] = deliveries(app)
    assert delivery["status"] == "pending" and delivery["next_attempt_at"] > app.clock.now()  # its lease
    assert attempts(app) == []
    advance(app, minutes=10)
    assert webhooks.deliver_due(app.engine, app.clock, http) == 1
    assert receiver.event_ids() == [event, event]  # at least once: a duplicate, never a loss
    assert [a["status_code"] for a in attempts(app)] == [200]
    assert deliveries(app)[0]["status"] == "succeeded"


def test_gives_up_after_three_days_and_resend_starts_again(app, receiver, http):
    endpoint(app, receiver.url)
    receiver.default = Reply(500)
    emit(app, "obj_1")
    first_at = app.clock.now()
    deliver(app, http)
    for _ in range(60):
        [delivery] = deliveries(app)
        if delivery["status"] != "pending":
            break
        app.clock.move_to(delivery["next_attempt_at"])
        assert webhooks.deliver_due(app.engine, app.clock, http) == 1
    assert delivery["status"] == "failed" and delivery["next_attempt_at"] is None
    times = [a["attempted_at"] for a in attempts(app)]
    assert times[0] == first_at and times[-1] == first_at + timedelta(days=3)
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert max(gaps) <= timedelta(hours=6) and gaps[1] > gaps[0]
    assert 15 <= len(times) <= 30
    advance(app, hours=1)
    receiver.default = Reply(200)
    with app.uow() as uow:
        resent = webhooks.resend(uow, delivery["id"])
    assert resent["status"] == "pending" and resent["attempt_count"] == 0
    assert resent["next_attempt_at"] == app.clock.now()
    assert webhooks.deliver_due(app.engine, app.clock, http) == 1
    assert deliveries(app)[0]["status"] == "succeeded"
    assert len(attempts(app)) == len(times) + 1


def test_endpoints_see_only_their_entity_and_mode(app, receiver, http):
    de = b.seller(app)
    with app.uow() as uow:
        fr = accounts.create_legal_entity(uow, "Acme SAS", "FR", "EUR")
    clock_id = b.clock(app, b.utc(2026, 1, 1))
    everything = endpoint(app, receiver.url)["id"]
    de_only = endpoint(app, receiver.url, ["customer.created"], legal_entity_id=de)["id"]
    test_mode = endpoint(app, receiver.url, livemode=False)["id"]
    invoices_only = endpoint(app, receiver.url, ["invoice.*"])["id"]
    de_live = b.customer(app, None, legal_entity_id=de)
    fr_live = b.customer(app, None, legal_entity_id=fr)
    de_test = b.customer(app, clock_id, legal_entity_id=de)
    emit(app, "plan_1", "plan.created")  # no customer: endpoints not limited to an entity, either mode
    webhooks.fan_out(app.engine, app.clock)
    by_endpoint: dict[str, set[str]] = {}
    for d in deliveries(app):
        by_endpoint.setdefault(d["endpoint_id"], set()).add(d["object_id"])
    assert by_endpoint == {
        everything: {de_live, fr_live, "plan_1"},
        de_only: {de_live},
        test_mode: {de_test, "plan_1"},
    }
    assert invoices_only not in by_endpoint


def test_a_disabled_endpoint_gets_nothing(app, receiver, http):
    ep = endpoint(app, receiver.url)
    with app.uow() as uow:
        webhooks.disable_endpoint(uow, ep["id"])
    emit(app, "obj_1")
    assert deliver(app, http) == 0
    assert receiver.received == [] and deliveries(app) == []


# --- PostgreSQL: several workers, late commits ----------------------------------------------------------------------


@pytest.fixture
def pg_app(postgres_url: str) -> Iterator[Remit]:
    app = Remit(make_engine(postgres_url, pool_size=10), FixedClock(b.utc(2026, 1, 1)))
    with app.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())
    yield app
    app.engine.dispose()


def _raw_event(conn: Any, object_id: str) -> None:
    conn.execute(
        insert(t.events).values(
            public_id=new_id("evt"),
            type="thing.updated",
            object_type="thing",
            object_id=object_id,
            customer_id=None,
            data={},
            created_at=b.utc(2026, 1, 1),
        )
    )


@pytest.mark.postgres
def test_two_workers_deliver_each_event_once_in_order(pg_app, receiver, http):
    app = pg_app
    endpoint(app, receiver.url)
    emitted = [emit(app, f"obj_{n % 8}", n=n) for n in range(48)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            while webhooks.fan_out(app.engine, app.clock, batch=5):
                pass
            barrier.wait()
            while any(d["status"] == "pending" for d in deliveries(app)):
                webhooks.deliver_due(app.engine, app.clock, http, limit=4, concurrency=2)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len(deliveries(app)) == 48
    received = receiver.event_ids()
    assert sorted(received) == sorted(emitted)  # each exactly once
    for n in range(8):
        mine = [e for i, e in enumerate(emitted) if i % 8 == n]
        assert [e for e in received if e in mine] == mine
    assert len(attempts(app)) == 48


@pytest.mark.postgres
def test_fan_out_waits_for_a_transaction_that_commits_a_lower_id_late(pg_app, receiver, http):
    app = pg_app
    endpoint(app, receiver.url)
    with app.engine.connect() as slow:
        tx = slow.begin()
        _raw_event(slow, "obj_1")  # takes the lower id, commits last
        later = emit(app, "obj_1")
        assert webhooks.fan_out(app.engine, app.clock, settle_s=0.2) == 0
        assert deliveries(app) == []
        tx.commit()
    assert webhooks.fan_out(app.engine, app.clock) == 2
    assert webhooks.deliver_due(app.engine, app.clock, http) == 1
    assert webhooks.deliver_due(app.engine, app.clock, http) == 1
    assert receiver.event_ids()[1] == later  # the late-committed, lower id went first


@pytest.mark.postgres
def test_fan_out_passes_the_gap_of_a_rolled_back_insert(pg_app, receiver, http):
    app = pg_app
    endpoint(app, receiver.url)
    with app.engine.connect() as conn:
        tx = conn.begin()
        _raw_event(conn, "obj_ghost")
        tx.rollback()
    kept = emit(app, "obj_1")
    assert webhooks.fan_out(app.engine, app.clock) == 1
    assert webhooks.deliver_due(app.engine, app.clock, http) == 1
    assert receiver.event_ids() == [kept]


# --- the API --------------------------------------------------------------------------------------------------------


def test_api_registers_lists_and_resends(app, receiver, http):
    from fastapi.testclient import TestClient

    from remit.entrypoints.api.app import create_app
    from remit.service_layer import api_keys

    entity = b.seller(app)
    with app.uow() as uow:
        keys = {s: api_keys.create_key(uow, s, [s])["secret"] for s in ("read", "admin")}
        keys["test"] = api_keys.create_key(uow, "t", ["admin"], livemode=False)["secret"]
        keys["other"] = api_keys.create_key(uow, "o", ["admin"], accounts.create_legal_entity(uow, "O", "FR", "EUR"))[
            "secret"
        ]
    client = TestClient(create_app(app))

    def call(method: str, path: str, key: str = "admin", **kwargs: Any) -> httpx.Response:
        return client.request(method, f"/v1{path}", headers={"Authorization": f"Bearer {keys[key]}"}, **kwargs)

    body = {"url": receiver.url, "event_types": ["customer.*"]}
    assert call("POST", "/webhook_endpoints", "read", json=body).status_code == 403
    assert call("GET", "/webhook_endpoints", "read").json()["error"]["code"] == "insufficient_scope"
    created = call("POST", "/webhook_endpoints", json=body)
    assert created.status_code == 201, created.json()
    ep = created.json()
    assert ep["secret"].startswith("whsec_") and ep["livemode"] is True and ep["object"] == "webhook_endpoint"
    bad = call("POST", "/webhook_endpoints", json={"url": "ftp://x.example/", "event_types": ["*"]})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "url"
    assert call("POST", "/webhook_endpoints", json={**body, "legal_entity_id": entity}, key="other").status_code == 403
    listed = call("GET", "/webhook_endpoints").json()["data"]
    assert [e["id"] for e in listed] == [ep["id"]] and listed[0]["secret"] is None
    assert call("GET", "/webhook_endpoints", "test").json()["data"] == []
    assert call("GET", f"/webhook_endpoints/{ep['id']}/deliveries", "other").status_code == 404

    b.customer(app, None, legal_entity_id=entity)
    receiver.script = [Reply(500)]
    assert deliver(app, http) == 1
    page = call("GET", f"/webhook_endpoints/{ep['id']}/deliveries").json()
    [delivery] = page["data"]
    assert delivery["event_type"] == "customer.created" and delivery["status"] == "pending"
    assert [a["status_code"] for a in delivery["attempts"]] == [500] and delivery["attempt_count"] == 1
    resent = call("POST", f"/webhook_deliveries/{delivery['id']}/resend")
    assert resent.status_code == 200 and resent.json()["next_attempt_at"] == "2026-01-01T00:00:00Z"
    assert webhooks.deliver_due(app.engine, app.clock, http) == 1
    done = call("GET", f"/webhook_endpoints/{ep['id']}/deliveries", params={"status": "succeeded"}).json()["data"]
    assert [d["id"] for d in done] == [delivery["id"]] and len(done[0]["attempts"]) == 2
    assert call("POST", f"/webhook_deliveries/{delivery['id']}/resend", "test").status_code == 404
    disabled = call("POST", f"/webhook_endpoints/{ep['id']}/disable").json()
    assert disabled["active"] is False
    assert call("POST", f"/webhook_deliveries/{delivery['id']}/resend").status_code == 409


def test_api_and_cli_subscribe_to_every_documented_type_and_refuse_unknown_ones(app, tmp_path, monkeypatch):
    """Every type of the catalog (the one docs/webhooks.md lists) and every family can be subscribed to; a type
    Remit never records (a typo) is refused with a clear error and registers nothing, instead of matching nothing
    for ever."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from remit.domain.event_types import EVENT_TYPES, FAMILIES
    from remit.entrypoints.api.app import create_app
    from remit.entrypoints.cli.main import app as cli
    from remit.service_layer import api_keys

    b.seller(app)
    with app.uow() as uow:
        key = api_keys.create_key(uow, "admin", ["admin"])["secret"]
    client = TestClient(create_app(app))
    headers = {"Authorization": f"Bearer {key}"}
    url = "https://example.com/hooks"
    wanted = [*EVENT_TYPES, *(f"{f}.*" for f in sorted(FAMILIES))]
    created = client.post("/v1/webhook_endpoints", headers=headers, json={"url": url, "event_types": wanted})
    assert created.status_code == 201, created.json()
    assert created.json()["event_types"] == wanted
    for typo in ("invoice.payed", "invoices.*", "thing.updated"):
        bad = client.post("/v1/webhook_endpoints", headers=headers, json={"url": url, "event_types": [typo]})
        assert bad.status_code == 422, bad.json()
        error = bad.json()["error"]
        assert (error["code"], error["field"]) == ("invalid_event_type", "event_types") and typo in error["message"]
    listed = client.get("/v1/webhook_endpoints", headers=headers).json()["data"]
    assert [e["id"] for e in listed] == [created.json()["id"]]

    monkeypatch.setenv("REMIT_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "--country", "DE", "--currency", "EUR"]).exit_code == 0
    ok = runner.invoke(cli, ["webhooks", "create", "--url", url, "--event", "wallet.depleted", "--json"])
    assert ok.exit_code == 0, ok.output
    typo = runner.invoke(cli, ["webhooks", "create", "--url", url, "--event", "wallet.deplted"])
    assert typo.exit_code == 2 and "invalid_event_type" in typo.output
