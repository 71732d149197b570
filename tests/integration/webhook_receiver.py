"""A real HTTP receiver for webhook tests: ThreadingHTTPServer on 127.0.0.1, answers scripted per request."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    delay_s: float = 0.0  # sleep before answering (a timeout, for a short client timeout)
    hold: threading.Event | None = None  # wait for this before answering (a worker killed mid-request)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event_id(self) -> str:
        return self.headers["remit-event-id"]


@dataclass
class Receiver:
    url: str = ""
    default: Reply = field(default_factory=Reply)
    script: list[Reply] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    got_request: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, headers: dict[str, str], body: bytes) -> Reply:
        with self.lock:
            self.received.append(Received(headers, body, time.monotonic()))
            reply = self.script.pop(0) if self.script else self.default
        self.got_request.set()
        return reply

    def event_ids(self) -> list[str]:
        with self.lock:
            return [r.event_id for r in self.received]

    def wait_for(self, count: int, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"expected {count} requests, got {len(self.received)}"
            time.sleep(0.02)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            reply = receiver.take({k.lower(): v for k, v in self.headers.items()}, body)
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if reply.hold is not None:
                reply.hold.wait(30)
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:  # the caller gave up or died: exactly what some tests do
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    server.block_on_close = False
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
