"""Webhooks from the command line and in real processes: `remit webhooks ...`, `remit serve` delivering on SQLite
(the in-process worker), `remit worker` on PostgreSQL stopping cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from remit.adapters.db import tables as t
from remit.adapters.db.engine import make_engine
from remit.bootstrap import Remit, Settings, bootstrap
from remit.domain.clock import FixedClock
from remit.entrypoints.cli.main import app as cli
from remit.service_layer import webhooks
from tests import builders as b
from tests.integration.webhook_receiver import Receiver, Reply, running_receiver

runner = CliRunner()
EXE = str(Path(sys.executable).with_name("remit"))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


def remit(*args: str, code: int = 0) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == code, (result.output, getattr(result, "stderr", ""))
    return str(result.stdout)


def test_the_cli_registers_lists_shows_deliveries_and_resends(tmp_path, monkeypatch, receiver):
    monkeypatch.setenv("REMIT_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    remit("init", "--country", "DE", "--currency", "EUR")
    ep = json.loads(remit("webhooks", "create", "--url", receiver.url, "--event", "customer.created", "--json"))
    assert ep["secret"].startswith("whsec_") and ep["event_types"] == ["customer.created"]
    assert [e["id"] for e in json.loads(remit("webhooks", "list", "--json"))] == [ep["id"]]
    assert "secret" not in json.loads(remit("webhooks", "list", "--json"))[0]
    remit("webhooks", "create", "--url", "ftp://example.com", "--event", "*", code=2)
    remit("customers", "create", "--name", "Globex", "--currency", "EUR", "--country", "FR")
    app = bootstrap(Settings())
    receiver.script = [Reply(500)]
    with httpx.Client(trust_env=False) as client:
        webhooks.fan_out(app.engine, app.clock)
        assert webhooks.deliver_due(app.engine, app.clock, client) == 1
    [delivery] = json.loads(remit("webhooks", "deliveries", ep["id"], "--json"))
    assert delivery["status"] == "pending" and [a["status_code"] for a in delivery["attempts"]] == [500]
    assert "Deliveries" in remit("webhooks", "deliveries", ep["id"])
    resent = json.loads(remit("webhooks", "resend", delivery["id"], "--json"))
    assert resent["status"] == "pending" and resent["id"] == delivery["id"]
    remit("webhooks", "resend", "whd_nope", code=3)
    assert json.loads(remit("webhooks", "disable", ep["id"], "--json"))["active"] is False


def test_remit_worker_refuses_sqlite(tmp_path, monkeypatch):
    monkeypatch.setenv("REMIT_DATABASE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    result = runner.invoke(cli, ["worker"])
    assert result.exit_code == 4
    assert "worker_needs_postgres" in result.output and "remit" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(env: dict[str, str], *args: str) -> dict[str, str]:
    out = subprocess.run([EXE, *args, "--json"], env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out))


def test_remit_serve_delivers_webhooks_on_sqlite(tmp_path, receiver):
    env = {**os.environ, "REMIT_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}"}
    _run(env, "init", "--currency", "EUR", "--country", "DE")
    secret = _run(env, "webhooks", "create", "--url", receiver.url, "--event", "customer.created")["secret"]
    key = _run(env, "keys", "create", "--scope", "write")["secret"]
    port = _free_port()
    server = subprocess.Popen([EXE, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{base}/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        created = httpx.post(
            f"{base}/v1/customers",
            headers={"Authorization": f"Bearer {key}"},
            json={"name": "Globex", "currency": "EUR", "country": "FR"},
            timeout=10,
        )
        assert created.status_code == 201
        receiver.wait_for(1, timeout_s=20)
    finally:
        server.terminate()
        assert server.wait(timeout=20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    [got] = receiver.received
    assert got.json["data"]["object_id"] == created.json()["id"]
    assert webhooks.verify_signature(secret, got.headers["remit-signature"], got.body)


@pytest.mark.postgres
def test_remit_worker_delivers_on_postgres_and_stops_on_sigterm(postgres_url, receiver):
    app = Remit(make_engine(postgres_url), FixedClock(b.utc(2026, 1, 1)))
    with app.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            conn.execute(table.delete())
    b.seller(app)
    with app.uow() as uow:
        secret = webhooks.create_endpoint(uow, receiver.url, ["customer.created"])["secret"]
    url = app.engine.url.render_as_string(hide_password=False)
    env = {**os.environ, "REMIT_DATABASE_URL": url}
    worker = subprocess.Popen([EXE, "worker", "--poll", "0.1"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        customer = b.customer(app, None)
        receiver.wait_for(1, timeout_s=20)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=20)
    assert worker.returncode == 0 and "Worker stopped" in out
    [got] = receiver.received
    assert got.json["data"]["object_id"] == customer
    assert webhooks.verify_signature(secret, got.headers["remit-signature"], got.body)
    app.engine.dispose()
