"""The webhook worker: fan out new events, deliver what is due, sleep a little when there is nothing to do.
Each round also evaluates usage alerts and thresholds of real customers that received usage (``usage_monitor``).

`remit worker` runs this loop on PostgreSQL (start as many as you like, on any machines); on SQLite `remit serve`
runs it in a thread of the server process (SQLite has one writer, so one worker is all it needs).
"""

from __future__ import annotations

import logging
import threading

import httpx

from remit.bootstrap import Remit
from remit.service_layer import usage_monitor, webhooks

log = logging.getLogger("remit.webhooks")


def tick(remit: Remit, client: httpx.Client, batch: int = 500, limit: int = 20) -> bool:
    """One round; True when it did some work (so the loop goes on without sleeping)."""
    watched = _watch_usage(remit)
    fanned = webhooks.fan_out(remit.engine, remit.clock, batch)
    sent = webhooks.deliver_due(remit.engine, remit.clock, client, limit)
    return bool(fanned or sent or watched)


def _watch_usage(remit: Remit) -> bool:
    """Usage alerts and thresholds of real customers that received usage since the last round (a query that
    finds nothing when none did). A failure is logged and does not hold webhooks back."""
    try:
        result = usage_monitor.evaluate(remit.uow, max_batches=5)
    except Exception:
        log.exception("usage alert evaluation failed; the customers are evaluated again next round")
        return False
    return bool(result.customers)


def run_worker(
    remit: Remit,
    stop_event: threading.Event,
    poll_s: float = 0.5,
    http_client: httpx.Client | None = None,
) -> None:
    """Loop until ``stop_event`` is set. A failing round (database restarting...) is logged and retried."""
    client = http_client or httpx.Client(follow_redirects=False)
    try:
        while not stop_event.is_set():
            try:
                busy = tick(remit, client)
            except Exception:  # keep delivering: claims that were in flight come back when their lease ends
                log.exception("webhook worker round failed; retrying")
                busy = False
            if not busy:
                stop_event.wait(poll_s)
    finally:
        if http_client is None:
            client.close()


def start_in_thread(remit: Remit, poll_s: float = 0.5) -> tuple[threading.Thread, threading.Event]:
    """Run the worker in a daemon thread (for `remit serve` on SQLite); set the event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, args=(remit, stop, poll_s), name="remit-webhooks", daemon=True)
    thread.start()
    return thread, stop
