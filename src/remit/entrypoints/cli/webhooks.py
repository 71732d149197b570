"""`remit webhooks ...` (endpoints, deliveries, re-send) and `remit worker` (the delivery loop on PostgreSQL)."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any

import typer

from remit.bootstrap import Remit, Settings, bootstrap
from remit.domain.errors import Conflict
from remit.entrypoints.cli.output import console, handle_errors, show
from remit.service_layer import webhooks

webhooks_app = typer.Typer(help="Webhook endpoints and deliveries.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ENDPOINT_COLUMNS = ["id", "url", "event_types", "legal_entity_id", "livemode", "active", "created_at"]
DELIVERY_COLUMNS = [
    "id",
    "event_id",
    "event_type",
    "object_id",
    "status",
    "attempt_count",
    "last_status_code",
    "next_attempt_at",
    "last_error",
]


def _app() -> Remit:
    return bootstrap(Settings())


@webhooks_app.command("create")
@handle_errors
def create(
    url: Annotated[str, typer.Option(help="http:// or https:// URL that receives the POSTs.")],
    event: Annotated[list[str], typer.Option("--event", help='An event type, "invoice.*" or "*"; repeat for several.')],
    legal_entity: Annotated[str | None, typer.Option("--legal-entity", help="Only this entity's events.")] = None,
    test: Annotated[bool, typer.Option("--test", help="A test-mode endpoint (test-clock customers' events).")] = False,
    as_json: Json = False,
) -> None:
    """Register an endpoint. Its signing secret is printed once."""
    with _app().uow() as uow:
        endpoint = webhooks.create_endpoint(uow, url, event, legal_entity, not test)
    show(webhooks.public(endpoint), as_json, "Webhook endpoint created: copy the secret now, it is not shown again")


@webhooks_app.command("list")
@handle_errors
def list_(as_json: Json = False) -> None:
    with _app().uow() as uow:
        rows = [webhooks.public(r) for r in webhooks.list_endpoints(uow)]
    show(rows, as_json, "Webhook endpoints", ENDPOINT_COLUMNS)


@webhooks_app.command("disable")
@handle_errors
def disable(endpoint_id: str, as_json: Json = False) -> None:
    """Stop sending to an endpoint."""
    with _app().uow() as uow:
        row = webhooks.disable_endpoint(uow, endpoint_id)
    show(webhooks.public(row), as_json, "Webhook endpoint disabled")


@webhooks_app.command("deliveries")
@handle_errors
def deliveries(
    endpoint_id: str,
    status: Annotated[str | None, typer.Option(help="pending, succeeded or failed")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Rows (newest first).")] = 20,
    as_json: Json = False,
) -> None:
    """An endpoint's deliveries, newest first, with their attempts (in --json)."""
    with _app().uow() as uow:
        rows = [webhooks.public(r) for r in webhooks.list_deliveries(uow, endpoint_id, limit=limit, status=status)]
    show(rows, as_json, "Deliveries", DELIVERY_COLUMNS)


@webhooks_app.command("resend")
@handle_errors
def resend(delivery_id: str, as_json: Json = False) -> None:
    """Send a delivery again now (a fresh 3-day retry window)."""
    with _app().uow() as uow:
        row = webhooks.resend(uow, delivery_id)
    show(_summary(webhooks.public(row)), as_json, "Delivery scheduled")


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "endpoint_id", "event_id", "status", "next_attempt_at")}


@handle_errors
def worker(poll: Annotated[float, typer.Option(help="Seconds to wait when there is nothing to do.")] = 0.5) -> None:
    """Deliver webhooks, evaluate usage alerts and thresholds, and keep usage_events' partitions a year ahead,
    until Ctrl-C or SIGTERM (PostgreSQL; run as many as you like)."""
    from remit.adapters.jobs.webhook_worker import run_worker

    remit = _app()
    if remit.engine.dialect.name == "sqlite":
        raise Conflict(
            "worker_needs_postgres",
            "On SQLite the webhook worker runs inside `remit serve`; `remit worker` is for PostgreSQL.",
        )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print(f"Delivering webhooks from {remit.engine.url.render_as_string(hide_password=True)} (Ctrl-C stops)")
    try:
        run_worker(remit, stop, poll)
    except KeyboardInterrupt:
        stop.set()
    console.print("Worker stopped")
