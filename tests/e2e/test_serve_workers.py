"""`remit serve --workers N` (entrypoints/api/balancer.py): one supervisor hands each new connection to the worker
process holding the fewest, restarts a worker that dies, and stops them all on SIGTERM. The workers here serve
tests/e2e/pid_app.py, which answers with the id of the process that served the request."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(port: int, app: str = "tests.e2e.pid_app:build", workers: int = 2) -> subprocess.Popen[str]:
    code = f"from remit.entrypoints.api.balancer import serve; serve('127.0.0.1', {port}, {workers}, app={app!r})"
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


class Client:
    """One keep-alive HTTP/1.1 connection, asked which process serves it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def pid(self) -> int:
        self.sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        assert self.file.readline().split()[1] == b"200"
        length = 0
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return int(json.loads(self.file.read(length))["pid"])

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _wait_up(port: int) -> None:
    for _ in range(200):
        try:
            probe = Client(port)
        except OSError:
            time.sleep(0.05)
            continue
        probe.pid()
        probe.close()
        time.sleep(0.3)  # the worker's note that the probe closed reaches the supervisor
        return
    raise AssertionError("the server did not start")


def _stop(server: subprocess.Popen[str]) -> str:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    output, _ = server.communicate(timeout=30)
    return output


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_connections_opened_together_are_split_evenly_and_new_ones_go_where_fewest_are_open():
    port = _free_port()
    server = _start(port)
    clients: list[Client] = []
    try:
        _wait_up(port)
        # Eight connections opened at once, before any request: the case uvicorn's shared socket gives to one worker.
        clients = [Client(port) for _ in range(8)]
        pids = [c.pid() for c in clients]
        assert sorted(Counter(pids).values()) == [4, 4]
        # Close every connection of one worker: the next four all go to it.
        emptied = pids[0]
        for client, pid in zip(list(clients), pids, strict=True):
            if pid == emptied:
                client.close()
                clients.remove(client)
        time.sleep(0.3)
        fresh = [Client(port) for _ in range(4)]
        clients += fresh
        assert [c.pid() for c in fresh] == [emptied] * 4
    finally:
        for client in clients:
            client.close()
        _stop(server)
    assert server.returncode == 0


def test_a_worker_that_dies_is_replaced_and_sigterm_stops_them_all():
    port = _free_port()
    server = _start(port)
    clients: list[Client] = []
    try:
        _wait_up(port)
        clients = [Client(port) for _ in range(2)]
        first, second = (c.pid() for c in clients)
        assert first != second
        os.kill(first, signal.SIGKILL)
        replacement = None
        for _ in range(200):  # the supervisor starts another, and the next connection goes to it (none open)
            probe = Client(port)
            try:
                pid = probe.pid()
            except OSError:  # handed to the dying worker before the supervisor saw it go
                pid = first
            finally:
                probe.close()
            if pid not in (first, second):
                replacement = pid
                break
            time.sleep(0.1)
        assert replacement is not None
        assert clients[1].pid() == second  # the other worker's connection was not disturbed
        assert server.poll() is None
    finally:
        for client in clients:
            client.close()
        output = _stop(server)
    assert server.returncode == 0
    assert "exited (code -9); starting another" in output
    assert not _alive(second) and not _alive(replacement)


def test_a_worker_that_cannot_start_stops_the_server_with_an_error():
    server = _start(_free_port(), app="tests.e2e.no_such_module:build")
    output, _ = server.communicate(timeout=60)
    assert server.returncode != 0
    assert "a server process exited while starting" in output


@pytest.mark.parametrize("workers", [1, 2])
def test_remit_serve_with_workers_answers(tmp_path, workers):
    env = {**os.environ, "REMIT_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}"}
    exe = str(Path(sys.executable).with_name("remit"))
    subprocess.run([exe, "init", "--currency", "EUR", "--country", "DE"], env=env, check=True, capture_output=True)
    port = _free_port()
    server = subprocess.Popen(
        [exe, "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_up_http(port)
        answers = []
        for _ in range(4):
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            answers.append(c.makefile("rb").readline())
            c.close()
        assert all(a.split()[1] == b"200" for a in answers)
    finally:
        _stop(server)
    if workers > 1:
        assert server.returncode == 0  # (one worker: uvicorn ends by raising the SIGTERM it caught again)


def _wait_up_http(port: int) -> None:
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                if c.makefile("rb").readline().split()[1:2] == [b"200"]:
                    return
        except (OSError, IndexError):
            pass
        time.sleep(0.1)
    raise AssertionError("remit serve did not start")
