"""The webhook worker: fan out new events, deliver what is due, sleep a little when there is nothing to do.
Each round also evaluates usage alerts and thresholds of real customers that received usage (``usage_monitor``);
on start and then daily it creates the coming months' partitions of usage_events (PostgreSQL; ``partitions``); on
start and then every ``PURGE_S`` it deletes idempotency keys past their 24 hours (``idempotency_purge``).

`remit worker` runs this loop on PostgreSQL (start as many as you like, on any machines); on SQLite `remit serve`
runs it in a thread of the server process (SQLite has one writer, so one worker is all it needs).
"""

from __future__ import annotations

import logging
import threading
import time

import httpx

from remit.adapters.db import partitions
from remit.bootstrap import Remit
from remit.service_layer import usage_monitor, webhooks
from remit.service_layer.idempotency_purge import purge_expired

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


UPKEEP_S = 24 * 3600.0  # partitions are made a year ahead: once a day is plenty
UPKEEP_RETRY_S = 300.0


def _upkeep(remit: Remit) -> bool:
    """The coming months' partitions of usage_events; whether it went well (a failure is retried later)."""
    try:
        for made in partitions.ensure_usage_partitions(remit.engine, remit.clock.now().date()):
            log.info("created partition %s (%s to %s; %d events moved in)", made.name, made.start, made.end, made.moved)
    except Exception:
        log.exception("creating the partitions of usage_events failed; retrying in %.0f s", UPKEEP_RETRY_S)
        return False
    return True


PURGE_S = 600.0  # expired idempotency keys: deleted within 10 minutes of their 24 hours


def _purge(remit: Remit) -> None:
    """Idempotency keys past their retention; a failure is logged and tried again next time."""
    try:
        purged = purge_expired(remit.engine, remit.clock.now())
    except Exception:
        log.exception("purging expired idempotency keys failed; retrying in %.0f s", PURGE_S)
        return
    if purged:
        log.info("purged %d expired idempotency keys", purged)


def run_worker(
    remit: Remit,
    stop_event: threading.Event,
    poll_s: float = 0.5,
    http_client: httpx.Client | None = None,
) -> None:
    """Loop until ``stop_event`` is set. A failing round (database restarting...) is logged and retried."""
    client = http_client or httpx.Client(follow_redirects=False)
    upkeep_due = purge_due = time.monotonic()
    try:
        while not stop_event.is_set():
            if time.monotonic() >= upkeep_due:
                upkeep_due = time.monotonic() + (UPKEEP_S if _upkeep(remit) else UPKEEP_RETRY_S)
            if time.monotonic() >= purge_due:
                _purge(remit)
                purge_due = time.monotonic() + PURGE_S
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
