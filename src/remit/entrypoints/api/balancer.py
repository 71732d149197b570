"""`remit serve --workers N`: N server processes on one port, each new connection handed to the one holding fewest.

Why not uvicorn's own workers: they share one listening socket, and a worker that wakes up takes every connection
waiting (its event loop accepts until the queue is empty). Connections that arrive together, such as a client's or
a proxy's pool of keep-alive connections opening at start, then land in one process, which does nearly all the work
on one core while the other idles. Measured with `bench/api.py` (32 keep-alive connections, 2 workers): splits of
2/30 and 4/28, and one run where all 32 went to one process (get customer 1,052 req/s against 2,400-2,500 when
split). Node.js's cluster module deals out connections from its primary process for the same reason.

How: this process (the supervisor) listens and accepts, and passes each connection's socket to a worker over a Unix
socket (SCM_RIGHTS). The worker serves it with uvicorn's own HTTP protocol, as if it had accepted it itself, and
tells the supervisor when it closes, so the next connection goes to the worker with the fewest open. Requests
never pass through the supervisor. It restarts a worker that dies (and gives up if one dies while starting: a
configuration error, such as a database it cannot reach, would only repeat), and on SIGINT or SIGTERM it stops
accepting and asks every worker to finish what it is serving (uvicorn's graceful shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import uvicorn

APP = "remit.entrypoints.api.server:build_app"
STOP_WAIT_S = 30.0  # how long workers may take to finish their requests when stopping

log = logging.getLogger("remit.serve")


class WorkerFailed(RuntimeError):
    """A worker exited while starting."""


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    channel: socket.socket  # the supervisor's end: connections go out; "ready" and "closed" notes come back
    ready: bool = False
    open: int = 0


def _spawn(app: str, log_level: str) -> _Worker:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # one message per connection
    process = subprocess.Popen(
        [sys.executable, "-m", "remit.entrypoints.api.balancer", str(theirs.fileno()), app, log_level],
        pass_fds=[theirs.fileno()],
    )
    theirs.close()
    ours.setblocking(False)
    return _Worker(process, ours)


def serve(host: str, port: int, workers: int, *, app: str = APP, log_level: str = "warning") -> None:
    """Listen on ``host:port`` and serve ``app`` (an import string of an app factory) from ``workers`` processes,
    until SIGINT or SIGTERM."""
    listener = socket.create_server((host, port), backlog=2048)
    listener.setblocking(False)
    wake_read, wake_write = socket.socketpair()
    wake_read.setblocking(False)
    wake_write.setblocking(False)
    previous_wakeup = signal.set_wakeup_fd(wake_write.fileno())
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    selector = selectors.DefaultSelector()
    pool: list[_Worker] = []

    def add(worker: _Worker) -> None:
        pool.append(worker)
        selector.register(worker.channel, selectors.EVENT_READ, worker)

    def remove(worker: _Worker) -> None:
        selector.unregister(worker.channel)
        worker.channel.close()
        pool.remove(worker)

    try:
        for _ in range(workers):
            add(_spawn(app, log_level))
        selector.register(listener, selectors.EVENT_READ, "accept")
        selector.register(wake_read, selectors.EVENT_READ, "wake")
        while not stopping:
            for key, _events in selector.select():
                if key.data == "accept":
                    _accept(listener, pool)
                elif key.data == "wake":
                    _drain(wake_read)
                else:
                    worker = key.data
                    if _read_notes(worker):
                        continue
                    # The channel closed: the worker is gone. Replace it, unless it could not start.
                    code = worker.process.wait()
                    remove(worker)
                    if stopping:
                        continue
                    if not worker.ready:
                        raise WorkerFailed(f"a server process exited while starting (exit code {code})")
                    log.warning("server process %s exited (code %s); starting another", worker.process.pid, code)
                    add(_spawn(app, log_level))
    finally:
        selector.close()
        listener.close()
        for worker in pool:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        for worker in pool:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            worker.channel.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(previous_wakeup)
        wake_read.close()
        wake_write.close()


def _accept(listener: socket.socket, pool: list[_Worker]) -> None:
    """Hand every waiting connection to the worker with the fewest open (the earliest among equals)."""
    while True:
        try:
            connection, _address = listener.accept()
        except BlockingIOError:
            return
        except OSError as exc:  # e.g. out of file descriptors: leave it queued, try again on the next wake-up
            log.error("accept failed: %s", exc)
            return
        with connection:
            for worker in sorted(pool, key=lambda w: w.open):
                try:
                    socket.send_fds(worker.channel, [b"c"], [connection.fileno()])
                except OSError:  # its channel is full or closed: try the next; a dead one is replaced on EOF
                    continue
                worker.open += 1
                break
            # If no worker took it, closing it here refuses it, as a full listen queue would.


def _read_notes(worker: _Worker) -> bool:
    """Read what the worker reports (started: "+", a connection closed: "-"); False when its channel has closed."""
    while True:
        try:
            note = worker.channel.recv(16)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not note:
            return False
        if note == b"+":
            worker.ready = True
        else:
            worker.open = max(0, worker.open - 1)


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        pass


class _HandedServer(uvicorn.Server):
    """A uvicorn server without a listening socket: it serves the connections the supervisor passes it."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket) -> None:
        super().__init__(config)
        self.channel = channel
        self._handing: set[asyncio.Task[Any]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])
        loop = asyncio.get_running_loop()
        channel, config, server_state, app_state = self.channel, self.config, self.server_state, self.lifespan.state

        class Counted(config.http_protocol_class):  # type: ignore[misc,name-defined]
            def connection_lost(self, exc: Exception | None) -> None:
                super().connection_lost(exc)
                with contextlib.suppress(OSError):  # the supervisor is gone or busy: it only steers by this
                    channel.send(b"-")

        def protocol() -> asyncio.Protocol:
            return Counted(config=config, server_state=server_state, app_state=app_state)

        channel.setblocking(False)
        loop.add_reader(channel.fileno(), self._receive, loop, protocol)
        channel.send(b"+")  # started: from now on, exiting is a crash, not a failure to start

    def _receive(self, loop: asyncio.AbstractEventLoop, protocol: Any) -> None:
        while True:
            try:
                message, fds, _flags, _address = socket.recv_fds(self.channel, 16, 4)
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message:  # the supervisor is gone: finish up like on SIGTERM
                loop.remove_reader(self.channel.fileno())
                self.should_exit = True
                return
            for fd in fds:
                task = loop.create_task(loop.connect_accepted_socket(protocol, socket.socket(fileno=fd)))
                self._handing.add(task)
                task.add_done_callback(self._handed)

    def _handed(self, task: asyncio.Task[Any]) -> None:
        self._handing.discard(task)
        if task.cancelled() or task.exception() is not None:  # e.g. the client left before it was served
            log.info("a connection could not be served: %s", None if task.cancelled() else task.exception())
            with contextlib.suppress(OSError):
                self.channel.send(b"-")  # it is not open here either

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().remove_reader(self.channel.fileno())
        await super().shutdown(sockets=[])


def _worker_main(fd: int, app: str, log_level: str) -> None:
    channel = socket.socket(fileno=fd)
    config = uvicorn.Config(app, factory=True, log_level=log_level, access_log=False)
    _HandedServer(config, channel).run()


if __name__ == "__main__":  # a worker, started by serve()
    _worker_main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
