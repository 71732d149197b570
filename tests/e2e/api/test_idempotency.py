"""Idempotency-Key on every POST: replay, conflicting reuse, and identical requests racing each other."""

import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from remit.adapters.db import tables as t
from remit.service_layer import api_keys, idempotency

CUSTOMER = {"name": "Initech", "currency": "EUR", "country": "DE"}
BODY = json.dumps(CUSTOMER).encode()


def _customers(api):
    with api.remit.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.customers)).scalar_one()


def test_same_key_same_request_replays_the_response(api):
    first = api.post("/customers", CUSTOMER, **{"Idempotency-Key": "k1"})
    second = api.post("/customers", CUSTOMER, **{"Idempotency-Key": "k1"})
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert _customers(api) == 1


def test_same_key_different_request_is_a_conflict(api):
    api.post("/customers", CUSTOMER, **{"Idempotency-Key": "k2"})
    other = api.post("/customers", {**CUSTOMER, "name": "Hooli"}, **{"Idempotency-Key": "k2"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert _customers(api) == 1


def test_errors_are_replayed_too_and_keys_are_per_api_key(api):
    bad = api.post("/customers", {**CUSTOMER, "currency": "XXX"}, **{"Idempotency-Key": "k3"})
    again = api.post("/customers", {**CUSTOMER, "currency": "XXX"}, **{"Idempotency-Key": "k3"})
    assert bad.status_code == again.status_code == 422
    other_key = api.post("/customers", CUSTOMER, key="write", **{"Idempotency-Key": "k3"})
    assert other_key.status_code == 201


def test_keys_expire_after_24_hours(api):
    from datetime import timedelta

    api.post("/customers", CUSTOMER, **{"Idempotency-Key": "k4"})
    api.remit.clock.move_to(api.remit.clock.now() + timedelta(hours=25))
    again = api.post("/customers", CUSTOMER, **{"Idempotency-Key": "k4"})
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    assert _customers(api) == 2


@pytest.mark.postgres
def test_identical_requests_racing_produce_one_effect(postgres_url):
    from datetime import UTC, datetime

    from remit.adapters.db.engine import make_engine
    from remit.bootstrap import Remit
    from remit.domain.clock import FixedClock
    from tests.e2e.api.conftest import make_api

    remit = Remit(make_engine(postgres_url, pool_size=20), FixedClock(datetime(2026, 1, 1, tzinfo=UTC)))
    with remit.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())
    api = make_api(remit)
    barrier = threading.Barrier(8)
    results = []

    def call() -> None:
        barrier.wait()
        results.append(api.post("/customers", CUSTOMER, **{"Idempotency-Key": "race"}))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert _customers(api) == 1
    created = {r.json()["id"] for r in results if r.status_code == 201}
    assert len(created) == 1
    for r in results:
        assert r.status_code == 201 or r.json()["error"]["code"] == "idempotency_request_in_progress"
    remit.engine.dispose()


def _post_body(api, key):
    """POST /customers with the body as BODY's bytes (so the test knows the request's fingerprint)."""
    headers = api.h(**{"Idempotency-Key": key, "Content-Type": "application/json"})
    return api.client.post("/v1/customers", content=BODY, headers=headers)


def _claimed_by_a_killed_request(api, key):
    """What a request with BODY under ``key`` leaves when its process is killed before it answers: the key
    claimed, in progress, its response never stored nor the key released."""
    now = api.remit.clock.now()
    principal = api_keys.authenticate(api.remit.engine, api.keys["admin"], now)
    print_ = idempotency.fingerprint("POST", "/v1/customers", "", BODY)
    assert isinstance(idempotency.claim(api.remit.engine, principal.key_id, key, print_, now), idempotency.Claimed)


def test_a_key_a_killed_request_left_in_progress_is_taken_over_once_its_lease_has_passed(api):
    _claimed_by_a_killed_request(api, "k5")
    busy = _post_body(api, "k5")
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "idempotency_request_in_progress"

    api.remit.clock.move_to(api.remit.clock.now() + idempotency.LEASE + timedelta(seconds=1))
    again = _post_body(api, "k5")

    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    replayed = _post_body(api, "k5")
    assert replayed.status_code == 201 and replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json() == again.json() and _customers(api) == 1
    other = api.post("/customers", {**CUSTOMER, "name": "Hooli"}, **{"Idempotency-Key": "k5"})
    assert other.json()["error"]["code"] == "idempotency_key_reused"


def test_a_busy_test_clock_answer_is_not_stored_under_the_key(api):
    """test_clock_busy says "try again later" (with Retry-After): the same request with the same key, sent once
    the clock is free, advances it (it does not replay the 409)."""
    clock = api.post("/test_clocks", {"name": "t", "frozen_at": "2026-01-01T00:00:00Z"}, key="test_admin").json()
    with api.remit.engine.begin() as conn:  # another advance is running
        conn.execute(
            update(t.test_clocks)
            .where(t.test_clocks.c.id == clock["id"])
            .values(status="advancing", claimed_until=api.remit.clock.now() + timedelta(minutes=1))
        )
    path = f"/test_clocks/{clock['id']}/advance"
    busy = api.post(path, {"to": "2026-02-01T00:00:00Z"}, key="test_admin", **{"Idempotency-Key": "k6"})
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "test_clock_busy"
    assert busy.headers["retry-after"] == "1"
    with api.remit.engine.begin() as conn:  # it has finished
        conn.execute(
            update(t.test_clocks).where(t.test_clocks.c.id == clock["id"]).values(status="ready", claimed_until=None)
        )

    again = api.post(path, {"to": "2026-02-01T00:00:00Z"}, key="test_admin", **{"Idempotency-Key": "k6"})

    assert again.status_code == 200 and "idempotent-replayed" not in again.headers
    assert again.json()["frozen_at"] == "2026-02-01T00:00:00Z" and again.json()["status"] == "ready"


@pytest.mark.postgres
def test_retries_racing_to_take_over_a_lapsed_key_produce_one_effect(postgres_url):
    from datetime import UTC, datetime

    from remit.adapters.db.engine import make_engine
    from remit.bootstrap import Remit
    from remit.domain.clock import FixedClock
    from tests.e2e.api.conftest import make_api

    remit = Remit(make_engine(postgres_url, pool_size=20), FixedClock(datetime(2026, 1, 1, tzinfo=UTC)))
    with remit.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())
    api = make_api(remit)
    _claimed_by_a_killed_request(api, "lapsed")
    remit.clock.move_to(remit.clock.now() + idempotency.LEASE + timedelta(seconds=1))
    barrier = threading.Barrier(8)
    results = []

    def call() -> None:
        barrier.wait()
        results.append(_post_body(api, "lapsed"))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert _customers(api) == 1
    assert len({r.json()["id"] for r in results if r.status_code == 201}) == 1
    for r in results:
        assert r.status_code == 201 or r.json()["error"]["code"] == "idempotency_request_in_progress"
    remit.engine.dispose()


def test_the_openapi_document_declares_the_idempotency_key_on_every_post(api):
    paths = api.client.get("/openapi.json").json()["paths"]
    posts = [op for path in paths.values() for method, op in path.items() if method == "post"]
    assert posts
    for op in posts:
        assert [p["name"] for p in op.get("parameters", []) if p["in"] == "header"] == ["Idempotency-Key"], op


def test_an_api_key_secret_is_never_stored_for_a_replay(api):
    first = api.post("/api_keys", {"scopes": ["read"]}, **{"Idempotency-Key": "k-key"})
    assert first.status_code == 201
    secret = first.json()["secret"]
    token = secret.split(".", 1)[1]
    with api.remit.engine.connect() as conn:
        stored = conn.execute(select(t.idempotency_keys.c.response_body)).scalars().all()
    assert stored and not any(token in (body or "") for body in stored)
    again = api.post("/api_keys", {"scopes": ["read"]}, **{"Idempotency-Key": "k-key"})
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == {**first.json(), "secret": None}  # the same key, created once, its secret shown once
    assert api.client.get("/v1/customers", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def test_a_request_killed_after_its_commit_is_not_done_again_once_its_lease_has_passed(api, monkeypatch):
    """The process stops between committing the work and storing its answer: the key stays in progress, but its
    work is marked committed in the work's own transaction, so a retry after the lease is told the answer was
    lost -- it does not create a second customer."""
    monkeypatch.setattr(idempotency, "complete", lambda *args: None)  # the answer is never stored
    first = _post_body(api, "k7")
    assert first.status_code == 201 and _customers(api) == 1
    monkeypatch.undo()

    busy = _post_body(api, "k7")  # within the lease: still running, as far as anyone can tell
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "idempotency_request_in_progress"
    api.remit.clock.move_to(api.remit.clock.now() + idempotency.LEASE + timedelta(seconds=1))
    lost = _post_body(api, "k7")

    assert lost.status_code == 409
    assert lost.json()["error"] | {"request_id": None} == {
        "code": "idempotency_answer_lost",
        "message": "The request with this idempotency key was carried out, but it stopped before its answer was"
        " stored; it is not done again. Read the object it created or changed to see the result.",
        "field": "Idempotency-Key",
        "request_id": None,
    }
    assert _customers(api) == 1


def test_a_failure_after_the_work_committed_is_stored_not_released(api, monkeypatch):
    """A 5xx normally releases the key so the request may run again; one whose work had committed is stored,
    and the same request replays it instead of creating the customer twice."""
    from remit.service_layer.unit_of_work import UnitOfWork

    commit = UnitOfWork.__exit__

    def commit_then_fail(self, *exc):
        commit(self, *exc)
        if exc[0] is None and not self.read_only:
            raise RuntimeError("failed after the commit")

    monkeypatch.setattr(UnitOfWork, "__exit__", commit_then_fail)
    with pytest.raises(RuntimeError):
        _post_body(api, "k8")
    monkeypatch.undo()
    assert _customers(api) == 1

    again = _post_body(api, "k8")
    assert again.status_code == 500 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["error"]["code"] == "internal_error"
    assert _customers(api) == 1


def test_a_failure_before_anything_committed_still_releases_the_key(api, monkeypatch):
    from remit.service_layer import accounts

    def broken(*args, **kwargs):
        raise RuntimeError("failed before the commit")

    monkeypatch.setattr(accounts, "create_customer_row", broken)
    with pytest.raises(RuntimeError):
        _post_body(api, "k9")
    monkeypatch.undo()
    again = _post_body(api, "k9")
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    assert _customers(api) == 1
