"""`remit serve`'s app (server.build_app): what its start-up prepares before the first request."""

import gc

from fastapi.testclient import TestClient

from remit.entrypoints.api import server


def test_start_up_freezes_what_it_built_and_collects_young_objects_less_often(tmp_path, monkeypatch):
    monkeypatch.setenv("REMIT_DATABASE_URL", f"sqlite:///{tmp_path / 'serve.db'}")
    before = gc.get_threshold()
    try:
        with TestClient(server.build_app()) as client:
            assert gc.get_threshold() == server.GC_THRESHOLDS
            assert gc.get_freeze_count() > 0
            # The routes were prepared at start-up; the first request is answered as usual.
            assert client.get("/v1/customers").status_code == 401
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
