"""The routes the gate answers itself (entrypoints/api/direct.py) answer exactly as FastAPI does, and leave to
FastAPI everything outside the plain case."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from remit.adapters.db import tables as t
from remit.entrypoints.api import direct
from remit.entrypoints.api.app import ApiSettings, create_app
from remit.entrypoints.api.deps import Read
from remit.entrypoints.api.schemas import CustomerPublic
from tests.e2e.api.conftest import PLAN

CUSTOMER = {"name": "Initech", "email": "ap@initech.example", "currency": "EUR", "country": "DE"}
VOLATILE = {"id", "created_at"}  # differ between two objects created by the same request


@pytest.fixture
def answers(api: Any, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether the gate answered each request itself (True) or passed it on (False); requests to an app with
    direct routes off are not counted."""
    seen: list[bool] = []
    original = direct.answer

    async def spy(*args: Any, **kwargs: Any) -> bool:
        answered = await original(*args, **kwargs)
        if args[0]:
            seen.append(answered)
        return answered

    monkeypatch.setattr(direct, "answer", spy)
    return seen


def _fastapi_only(api: Any) -> TestClient:
    """The same app on the same database, with the gate's direct routes off: FastAPI answers everything."""
    return TestClient(create_app(api.remit, ApiSettings(direct_routes=False)))


def _same(a: Any, b: Any) -> None:
    assert a.status_code == b.status_code
    assert a.headers["content-type"] == b.headers["content-type"]
    left, right = a.json(), b.json()
    if "error" in left:
        left["error"].pop("request_id"), right["error"].pop("request_id")
    assert {k: v for k, v in left.items() if k not in VOLATILE} == {k: v for k, v in right.items() if k not in VOLATILE}


def test_the_busiest_routes_are_answered_directly_and_as_fastapi_answers_them(api, answers):
    fastapi = _fastapi_only(api)
    assert api.post("/plans", PLAN).status_code == 201

    created = api.post("/customers", CUSTOMER, key="write")
    _same(created, fastapi.post("/v1/customers", json=CUSTOMER, headers=api.h("write")))
    assert created.status_code == 201 and created.headers["request-id"].startswith("req_")
    customer = created.json()["id"]

    body = {"customer_id": customer, "plan": "pro", "quantity": 3}
    subscribed = api.post("/subscriptions", body, key="write")
    _same(subscribed, fastapi.post("/v1/subscriptions", json=body, headers=api.h("write")))
    assert subscribed.status_code == 201

    for path in (f"/customers/{customer}", f"/customers/{customer}/upcoming_invoice"):
        ours = api.get(path, key="read")
        theirs = fastapi.get(f"/v1{path}", headers=api.h("read"))
        assert ours.status_code == 200
        assert ours.content == theirs.content  # byte for byte: same model, same serialiser
    assert answers == [False, True, True, True, True]  # POST /plans is not a direct route


def test_domain_errors_get_the_same_envelope(api, answers):
    fastapi = _fastapi_only(api)
    missing = api.get("/customers/cus_missing", key="read")
    _same(missing, fastapi.get("/v1/customers/cus_missing", headers=api.h("read")))
    assert missing.status_code == 404
    assert missing.json()["error"]["request_id"] == missing.headers["request-id"]
    no_plan = api.post("/subscriptions", {"customer_id": "cus_missing", "plan": "pro"}, key="write")
    assert no_plan.status_code == 404 and no_plan.json()["error"]["field"] == "customer_id"
    assert answers == [True, True]


def test_everything_else_is_left_to_fastapi(api, answers):
    invalid = api.post("/customers", {**CUSTOMER, "currency": 12}, key="write")
    assert invalid.status_code == 422 and invalid.json()["error"]["field"] == "currency"
    unknown_field = api.post("/customers", {**CUSTOMER, "colour": "red"}, key="write")
    assert unknown_field.status_code == 422 and unknown_field.json()["error"]["code"] == "unknown_field"
    as_text = api.client.post(
        "/v1/customers", content=b'{"name": "X", "currency": "EUR", "country": "DE"}', headers=api.h("write")
    )  # no Content-Type: FastAPI does not read the body as JSON
    assert as_text.status_code == 422
    with_type = {**api.h("write"), "Content-Type": "text/plain"}
    plain = api.client.post(
        "/v1/customers", content=b'{"name": "X", "currency": "EUR", "country": "DE"}', headers=with_type
    )
    assert plain.status_code == 422
    read_only = api.post("/customers", CUSTOMER, key="read")
    assert read_only.status_code == 403 and read_only.json()["error"]["code"] == "insufficient_scope"
    created = api.post("/customers", CUSTOMER, key="write").json()["id"]
    with_query = api.get(f"/customers/{created}", key="read", expand="nothing")
    assert with_query.status_code == 200 and with_query.json()["id"] == created
    assert api.get("/customers", key="read").status_code == 200  # not a direct route
    assert answers == [False, False, False, False, False, True, False, False]
    with api.remit.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.customers)).scalar_one() == 1


def test_the_routes_response_options_are_the_serialisers():
    router = APIRouter()

    @router.get("/things/{thing_id}", response_model=CustomerPublic, response_model_exclude_none=True)
    @direct.threaded
    def thing(thing_id: str, ctx: Read) -> Any:
        raise AssertionError("never called")

    (found,) = direct.collect([router], "/v1")["GET"]
    row = {
        "id": "cus_1",
        "legal_entity_id": "le_1",
        "external_id": None,
        "name": "Initech",
        "email": None,
        "currency": "EUR",
        "country": "DE",
        "language": "en",
        "timezone": "UTC",
        "address": {},
        "tax_ids": [],
        "test_clock_id": None,
        "livemode": True,
        "balance": "0.00",
        "created_at": "2026-01-01T00:00:00Z",
    }
    value, problems = found.response.validate(row, {}, loc=("response",))
    assert not problems
    assert b"null" not in found.response.serialize_json(value, **found.dump)
    assert b'"email":null' in found.response.serialize_json(value)  # what exclude_none leaves out


def test_idempotent_requests_are_answered_directly_and_replayed(api, answers):
    first = api.post("/customers", CUSTOMER, key="write", **{"Idempotency-Key": "direct-1"})
    again = api.post("/customers", CUSTOMER, key="write", **{"Idempotency-Key": "direct-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert answers == [True]  # the replay is answered from the stored response


# Route functions for routers built in the tests below; none of them is ever called.
def _by_number(number: int, ctx: Read) -> Any:
    raise AssertionError("never called")


def _unscoped(thing_id: str) -> Any:
    raise AssertionError("never called")


def _one(thing_id: str, ctx: Read) -> Any:
    raise AssertionError("never called")


def _search(ctx: Read) -> Any:
    raise AssertionError("never called")


def _router(*routes: tuple[str, Any, dict[str, Any]], lenient: bool = False) -> APIRouter:
    """GET routes (path, function, options) in this order; a function is made direct with ``@threaded`` unless
    the options say ``plain``. ``lenient``: a router that reads a body without a Content-Type as JSON."""
    router = APIRouter(strict_content_type=False) if lenient else APIRouter()
    for path, fn, options in routes:
        plain = options.pop("plain", False)
        router.get(path, response_model=CustomerPublic, **options)(fn if plain else direct.threaded(fn))
    return router


@pytest.mark.parametrize(
    ("router", "problem"),
    [
        (_router(("/things/{number}", _by_number, {})), "path parameters are strings"),
        (_router(("/things/{thing_id}", _unscoped, {})), "exactly one dependency"),
        (_router(("/things/{thing_id}", _one, {"response_class": PlainTextResponse})), "default response class"),
        (_router(("/things/{thing_id}", _one, {}), lenient=True), "strict default"),
        (
            _router(("/things/search", _search, {"plain": True}), ("/things/{thing_id}", _one, {})),
            "may not shadow /v1/things/search",
        ),
    ],
)
def test_a_route_that_cannot_be_answered_directly_is_refused_when_the_app_is_built(router, problem):
    with pytest.raises(TypeError, match=problem):
        direct.collect([router], "/v1")


def test_a_direct_route_after_routes_it_does_not_shadow_is_taken():
    router = _router(("/things/{thing_id}/usage", _one, {"plain": True}), ("/things/{thing_id}", _one, {}))
    assert [r.path.pattern for r in direct.collect([router], "/v1")["GET"]] == ["^/v1/things/(?P<thing_id>[^/]+)$"]
