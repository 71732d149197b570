"""A request that fails on Remit's side (the database connection dropped mid-request): the client gets a 500 in
the API's one error envelope, with the request id, never a bare text page; its Idempotency-Key is released, so
the retry with the same key does the work once, and a third request replays that answer."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from remit.adapters.db import tables as t
from remit.service_layer import accounts, wallets


def _dropped(*_args: Any, **_kwargs: Any) -> Any:
    raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))


def _count(api: Any, table: Any) -> int:
    with api.remit.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _assert_internal_error(resp: Any) -> None:
    assert resp.status_code == 500
    assert resp.headers["content-type"] == "application/json"
    error = resp.json()["error"]
    assert error["code"] == "internal_error" and error["message"] and error["field"] is None
    assert error["request_id"] == resp.headers["request-id"]


@pytest.mark.parametrize("idempotency_key", [None, "k-500"])
def test_a_route_the_gate_answers_itself(api: Any, monkeypatch: pytest.MonkeyPatch, idempotency_key: Any) -> None:
    """POST /customers is answered by the gate (direct.py) in the plain case."""
    server = TestClient(api.client.app, raise_server_exceptions=False)
    headers = api.h(**({"Idempotency-Key": idempotency_key} if idempotency_key else {}))
    body = {"name": "Initech", "currency": "EUR", "country": "DE"}
    with monkeypatch.context() as patch:
        patch.setattr(accounts, "create_customer_row", _dropped)
        _assert_internal_error(server.post("/v1/customers", json=body, headers=headers))
    assert _count(api, t.customers) == 0
    retried = server.post("/v1/customers", json=body, headers=headers)
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
    if idempotency_key:
        replayed = server.post("/v1/customers", json=body, headers=headers)
        assert replayed.headers["idempotent-replayed"] == "true" and replayed.json() == retried.json()
    assert _count(api, t.customers) == 1


@pytest.mark.parametrize("idempotency_key", [None, "k-500"])
def test_a_route_fastapi_answers(api: Any, monkeypatch: pytest.MonkeyPatch, idempotency_key: Any) -> None:
    """POST /wallets/{id}/grants goes through FastAPI's routing and middleware."""
    customer = api.post("/customers", {"name": "Initech", "currency": "EUR", "country": "DE"}).json()["id"]
    wallet = api.post("/wallets", {"customer_id": customer}).json()["id"]
    server = TestClient(api.client.app, raise_server_exceptions=False)
    headers = api.h(**({"Idempotency-Key": idempotency_key} if idempotency_key else {}))
    path = f"/v1/wallets/{wallet}/grants"
    real = wallets._record_granted

    def written_then_dropped(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)  # the grant's rows are written, then the connection drops: all rolled back
        _dropped()

    with monkeypatch.context() as patch:
        patch.setattr(wallets, "_record_granted", written_then_dropped)
        _assert_internal_error(server.post(path, json={"credits": "30"}, headers=headers))
    assert _count(api, t.wallet_grants) == _count(api, t.wallet_transactions) == 0
    retried = server.post(path, json={"credits": "30"}, headers=headers)
    assert retried.status_code == 201
    if idempotency_key:
        replayed = server.post(path, json={"credits": "30"}, headers=headers)
        assert replayed.headers["idempotent-replayed"] == "true" and replayed.json() == retried.json()
    assert api.get(f"/wallets/{wallet}").json()["balance_credits"] == "30"  # granted once
