"""The REST API: FastAPI, versioned under /v1, with OpenAPI at /openapi.json and interactive docs at /docs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from remit import __version__
from remit.bootstrap import Remit
from remit.entrypoints.api import direct, errors
from remit.entrypoints.api.gate import ApiGate
from remit.entrypoints.api.routes import (
    accounts,
    alerts,
    catalog,
    events,
    invoices,
    subscriptions,
    usage,
    wallets,
    webhooks,
)


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))  # a setting, not money


@dataclass(frozen=True)
class ApiSettings:
    max_body_bytes: int = field(default_factory=lambda: int(os.environ.get("REMIT_MAX_BODY_BYTES", 1_048_576)))
    rate_limit_per_s: float = field(default_factory=lambda: _env_float("REMIT_RATE_LIMIT_PER_S", 100))
    rate_limit_burst: float = field(default_factory=lambda: _env_float("REMIT_RATE_LIMIT_BURST", 200))
    # The gate answers the busiest plain requests itself (entrypoints/api/direct.py); off only in tests that
    # compare its answers with FastAPI's.
    direct_routes: bool = True


class RemitAPI(FastAPI):
    """FastAPI with the gate (gate.py) in front of its whole middleware stack, not inside it: what the gate
    answers itself (its errors, usage events, the direct routes) skips FastAPI's middleware, and everything else
    passes through the gate and then FastAPI's stack as before."""

    gate_options: dict[str, Any]

    def build_middleware_stack(self) -> ASGIApp:
        return ApiGate(super().build_middleware_stack(), **self.gate_options)


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Repeat a request safely: the same key with the same body answers what the first answered; "
    "with another body, `idempotency_key_reused` (409). Up to 255 characters; a UUID is a good choice.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
}


def _declare_idempotency_key(app: FastAPI) -> None:
    """Every POST takes an ``Idempotency-Key`` header (read by the gate, not by the routes): the OpenAPI
    document says so on each."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path in schema.get("paths", {}).values():
            post = path.get("post")
            if post is not None:
                post.setdefault("parameters", []).append(dict(IDEMPOTENCY_KEY))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(remit: Remit, settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    app = RemitAPI(
        title="Remit API",
        version=__version__,
        description="Billing automation: catalog, customers, subscriptions, invoices, credit notes, test clocks. "
        "Authenticate with `Authorization: Bearer <API key>`. Every POST takes an `Idempotency-Key` header.",
    )
    app.state.remit = remit
    errors.install(app)
    _declare_idempotency_key(app)
    routers = [m.router for m in (accounts, catalog, subscriptions, invoices, events, usage, alerts, wallets, webhooks)]
    for router in routers:
        app.include_router(router, prefix="/v1", responses=errors.COMMON_ERRORS)
    app.gate_options = {
        "remit": remit,
        "max_body_bytes": settings.max_body_bytes,
        "rate_per_s": settings.rate_limit_per_s,
        "burst": settings.rate_limit_burst,
        "direct_routes": direct.collect(routers, "/v1") if settings.direct_routes else None,
    }
    return app
