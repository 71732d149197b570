"""`remit serve` as a real process: the API answers over HTTP on the port it was given."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_on_its_port(tmp_path):
    env = {**os.environ, "REMIT_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}"}
    exe = str(Path(sys.executable).with_name("remit"))
    subprocess.run([exe, "init", "--currency", "EUR", "--country", "DE"], env=env, check=True, capture_output=True)
    key = json.loads(
        subprocess.run(
            [exe, "keys", "create", "--scope", "write", "--json"], env=env, check=True, capture_output=True, text=True
        ).stdout
    )
    assert key["secret"].startswith("rk_live_") and key["id"].startswith("key_")
    port = _free_port()
    server = subprocess.Popen(
        [exe, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {key['secret']}"}
        created = httpx.post(
            f"{base}/v1/customers",
            headers=headers,
            timeout=10,
            json={"name": "Globex", "email": "ap@globex.example", "currency": "EUR", "country": "FR"},
        )
        assert created.status_code == 201
        listed = httpx.get(f"{base}/v1/customers", headers=headers, timeout=10).json()
        assert [c["id"] for c in listed["data"]] == [created.json()["id"]]
        assert httpx.get(f"{base}/docs", timeout=10).status_code == 200
        assert httpx.get(f"{base}/v1/customers", timeout=10).status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=10)
