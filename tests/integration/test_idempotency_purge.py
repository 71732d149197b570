"""Idempotency keys are kept 24 hours (api.md); after that their rows are deleted, a bounded batch at a time, by
the worker's periodic upkeep, not only ignored."""

import threading
from datetime import timedelta

from sqlalchemy import func, insert, select

from remit.adapters.db import tables as t
from remit.adapters.jobs import webhook_worker
from remit.service_layer.idempotency_purge import purge_expired


def _keys(app, ages_h, prefix="k"):
    now = app.clock.now()
    rows = [
        {
            "api_key_id": "key_1",
            "key": f"{prefix}{i}",
            "fingerprint": "f" * 64,
            "status_code": 201,
            "response_body": "{}",
            "created_at": now - timedelta(hours=age),
        }
        for i, age in enumerate(ages_h)
    ]
    with app.engine.begin() as conn:
        conn.execute(insert(t.idempotency_keys), rows)


def _left(app):
    with app.engine.connect() as conn:
        return sorted(conn.execute(select(t.idempotency_keys.c.key)).scalars())


def test_expired_keys_are_deleted_and_the_others_kept(app):
    _keys(app, [25, 24.5, 23.9, 1, 0])
    assert purge_expired(app.engine, app.clock.now()) == 2
    assert _left(app) == ["k2", "k3", "k4"]
    assert purge_expired(app.engine, app.clock.now()) == 0


def test_a_purge_is_bounded(app):
    _keys(app, [30] * 7)
    assert purge_expired(app.engine, app.clock.now(), batch=2, batches_max=3) == 6
    assert len(_left(app)) == 1
    assert purge_expired(app.engine, app.clock.now(), batch=2, batches_max=3) == 1


def test_the_worker_purges_expired_keys(app, monkeypatch):
    _keys(app, [48, 2])
    stop = threading.Event()
    rounds = []

    def tick(remit, client, batch=500, limit=20):
        rounds.append(1)
        stop.set()
        return False

    monkeypatch.setattr(webhook_worker, "tick", tick)
    webhook_worker.run_worker(app, stop, poll_s=0.01)
    assert rounds and _left(app) == ["k1"]
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.idempotency_keys)).scalar_one() == 1
