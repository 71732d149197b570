"""An API client on each database, with keys of every scope."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from remit.bootstrap import Remit
from remit.entrypoints.api.app import ApiSettings, create_app
from remit.service_layer import accounts, api_keys


@dataclass
class Api:
    remit: Remit
    client: TestClient
    entity: str
    keys: dict[str, str]

    def h(self, key: str = "admin", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[key]}", **extra}

    def post(self, path: str, json: Any = None, key: str = "admin", **headers: str) -> Any:
        return self.client.post(f"/v1{path}", json=json, headers=self.h(key, **headers))

    def get(self, path: str, key: str = "admin", **params: Any) -> Any:
        return self.client.get(f"/v1{path}", params=params, headers=self.h(key))

    def key(self, name: str, scopes: list[str], entity: str | None = None, livemode: bool = True) -> str:
        with self.remit.uow() as uow:
            self.keys[name] = api_keys.create_key(uow, name, scopes, entity, livemode)["secret"]
        return self.keys[name]


def make_api(remit: Remit, settings: ApiSettings | None = None) -> Api:
    with remit.uow() as uow:
        entity = accounts.create_legal_entity(uow, "Acme Cloud GmbH", "DE", "EUR")
    api = Api(remit, TestClient(create_app(remit, settings)), entity, {})
    for scope in ("read", "write", "admin"):
        api.key(scope, [scope])
    api.key("test_admin", ["admin"], livemode=False)
    return api


@pytest.fixture
def api(app: Remit) -> Iterator[Api]:
    yield make_api(app)


PLAN = {
    "code": "pro",
    "name": "Pro",
    "prices": [
        {"currency": "EUR", "model": "per_unit", "config": {"unit_price": "12.00"}, "interval": "month"},
        {"currency": "USD", "model": "per_unit", "config": {"unit_price": "13.00"}, "interval": "month"},
    ],
}
