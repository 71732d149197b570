"""Property-based fuzzing of the whole API from its own OpenAPI document (schemathesis, in-process).

Every generated request, valid or not, must get a documented answer: no 5xx, and every response (status, headers,
content type, body) must match the schema. Schemathesis' pytest plugin does not load under pytest 9, so the test
drives its Hypothesis strategies directly, one test per operation.
"""

from datetime import UTC, datetime
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig

from remit.adapters.db.engine import make_engine, migrate
from remit.bootstrap import Remit
from remit.domain.clock import FixedClock
from remit.entrypoints.api.app import ApiSettings, create_app
from tests.e2e.api.conftest import PLAN, make_api

CONFIG = SchemathesisConfig.from_path(Path(__file__).resolve().parents[3] / "schemathesis.toml")


def _operations() -> list[str]:
    remit = Remit(make_engine("sqlite://"), FixedClock(datetime(2026, 1, 1, tzinfo=UTC)))
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(remit), config=CONFIG)
    return sorted(op.ok().label for op in schema.get_all_operations())


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    remit = Remit(engine, FixedClock(datetime(2026, 1, 1, tzinfo=UTC)))
    api = make_api(remit, ApiSettings(rate_limit_per_s=100_000, rate_limit_burst=100_000))
    api.post("/plans", PLAN)
    customer = api.post("/customers", {"name": "Fuzz", "currency": "EUR", "country": "DE"}).json()
    api.post("/subscriptions", {"customer_id": customer["id"], "plan": "pro"})
    api.post("/bill_runs", {})
    api.schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app, config=CONFIG)
    yield api
    engine.dispose()


@pytest.mark.parametrize("label", _operations())
def test_operation_conforms_to_the_schema(fuzz_api, label):
    operation = fuzz_api.schema.find_operation_by_label(label)
    headers = fuzz_api.h()

    @given(case=operation.as_strategy())
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case):
        case.call_and_validate(headers=headers)

    run()
