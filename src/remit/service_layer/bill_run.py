"""The bill run: for every account with something due, write what is missing. Set-wise, in batches.

Each batch is one transaction: it claims its customers (on PostgreSQL with ``FOR UPDATE SKIP LOCKED``, so runs
started together share the work and never bill an account twice), loads everything it needs in a handful of
queries, runs the pure generator per subscription, and writes invoices, lines and events in bulk. The unique key
on (subscription, charge, period, revision) is the last line of defence: a duplicate aborts the batch, and the
batch is retried, finding nothing left to do.

A customer whose billing fails (usage sent in absurd quantities, data no price can rate) does not stop the run:
the failing batch is split in halves, each billed on its own, down to the customers that fail alone. Each of them
is recorded in ``bill_run_failures`` with the error and announced as ``bill_run.customer_failed``; nothing of its
attempt is written, its review marks stay where they were, and every later run tries it again. An error that is
not one customer's (the database went away) stops the run, which is then marked ``failed`` with the error.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import multiprocessing
import pickle
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Text, bindparam, case, cast, func, or_, select, update

from remit.adapters.db import driver, usage_read_ahead
from remit.adapters.db import tables as t
from remit.adapters.db.engine import make_engine
from remit.adapters.db.id_lists import ID_LIST_TYPES, id_list_value, in_id_list
from remit.adapters.db.ids import new_id
from remit.adapters.db.mappers import coupon_from_row, load_prices, negotiated, timeline_event_from_row, with_overrides
from remit.adapters.db.usage_queries import ReadAheadSpan, Span, Window, aggregate_usage, transaction_values
from remit.adapters.db.usage_read_ahead import UsageReadAhead
from remit.domain.billing_events import TimelineEvent, status_on, status_since
from remit.domain.catalog.model import Price, Timing, dimension_key
from remit.domain.clock import Clock
from remit.domain.errors import RemitError
from remit.domain.invoicing.generator import (
    NO_PINS,
    AppliedCoupon,
    BilledTotals,
    LineKey,
    NewLine,
    Pinned,
    SubscriptionTerms,
    UsageData,
    UsageWindowKey,
    diff,
    has_usage,
    propose,
    usage_windows,
)
from remit.domain.money import Currency, RoundingPolicy, currency
from remit.domain.rating.aggregations import Meter
from remit.domain.subscriptions.periods import Interval
from remit.service_layer import wallet_ledger, wallets
from remit.service_layer.accounts import local_date, local_midnight
from remit.service_layer.invoices import Event, InvoiceDraft, write_events, write_invoices
from remit.service_layer.usage import meter_from_row, needs_review

__all__ = ["InvoiceDraft", "run", "bill_customers", "compute_drafts"]
from remit.service_layer.unit_of_work import UnitOfWork, isolating, retrying

UowFactory = Callable[[], UnitOfWork]
BATCH_SIZE = 5000
log = logging.getLogger("remit.bill_run")


@dataclass(frozen=True)
class CustomerFailure:
    """A customer a bill run could not bill, and why."""

    customer_id: str
    code: str
    message: str
    field: str | None = None


@dataclass
class BatchOutcome:
    invoice_ids: list[str] = field(default_factory=list)
    failures: list[CustomerFailure] = field(default_factory=list)

    def add(self, other: BatchOutcome) -> BatchOutcome:
        self.invoice_ids.extend(other.invoice_ids)
        self.failures.extend(other.failures)
        return self


@dataclass
class BillRunResult:
    id: str
    as_of: datetime
    customers_seen: int = 0
    invoices_created: int = 0
    invoice_ids: list[str] = field(default_factory=list)
    failures: list[CustomerFailure] = field(default_factory=list)


def _candidate_customers(uow: UnitOfWork, test_clock_id: str | None, after: str, limit: int) -> list[str]:
    """The first ``limit`` customers after ``after``, in id order, of the real world (or of one test clock), with a
    subscription under review or an uninvoiced pending item.

    One query per kind of work, each a semi-join that walks ``ix_customers_test_clock_id_id`` from ``after`` and
    stops at ``limit``: a batch costs the same whatever the number of customers. (An ``OR`` of two ``EXISTS`` would
    let PostgreSQL hash the whole subscriptions table for every batch, and a ``UNION`` sorts everything after
    ``after``.) The repeated ``customer_id > after`` lets a merge join start where the batch starts.
    """
    c, s, p = t.customers.c, t.subscriptions.c, t.pending_items.c
    clock_filter = (c.test_clock_id == test_clock_id) if test_clock_id else c.test_clock_id.is_(None)
    work = (
        select(s.id).where(s.customer_id == c.id, s.customer_id > after, needs_review()),
        select(p.id).where(p.customer_id == c.id, p.customer_id > after, p.invoice_id.is_(None)),
    )
    found: set[str] = set()
    for exists in work:
        query = select(c.id).where(clock_filter, c.id > after, exists.exists()).order_by(c.id).limit(limit)
        found.update(uow.conn.execute(query).scalars())
    return sorted(found)[:limit]


def run(
    make_uow: UowFactory,
    as_of: datetime,
    *,
    test_clock_id: str | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> BillRunResult:
    """Bill everything due up to ``as_of`` for real customers, or for the customers of one test clock.

    ``workers``: on PostgreSQL, bill up to this many batches at once, each in its own process (started only when
    there are at least two batches: more than ``batch_size`` customers with something due). Rating and writing a
    batch is mostly Python, and one interpreter runs Python on one core at a time, so batches billed in threads
    would wait for each other; processes use every core, while PostgreSQL keeps them apart (each batch locks its
    customers; invoice numbers are reserved under the series' row lock, so they stay gapless and in order of
    commit). On SQLite, whose database has one writer at a time, batches are billed one after the other."""
    result = BillRunResult(new_id("billrun"), as_of)
    with make_uow() as uow:
        uow.insert_many(
            t.bill_runs,
            [
                {
                    "id": result.id,
                    "as_of": as_of,
                    "test_clock_id": test_clock_id,
                    "status": "running",
                    "customers_seen": 0,
                    "invoices_created": 0,
                    "started_at": uow.now,
                }
            ],
        )
        spec = _worker_spec(uow) if workers > 1 else None
        engine = uow.engine
        suspects = _recent_failures(uow, test_clock_id)

    def done(batch: Sequence[str], outcome: BatchOutcome) -> None:
        result.customers_seen += len(batch)
        result.invoices_created += len(outcome.invoice_ids)
        result.invoice_ids.extend(outcome.invoice_ids)
        result.failures.extend(outcome.failures)
        if progress is not None:
            progress(len(batch))

    unbillable: frozenset[str] = frozenset()

    def batches() -> Iterator[list[str]]:
        after = ""
        while True:
            with make_uow() as uow:
                found = _candidate_customers(uow, test_clock_id, after, batch_size)
            if not found:
                return
            after = found[-1]
            batch = [c for c in found if c not in unbillable] if unbillable else found
            if batch:
                yield batch

    try:
        # First the credits: recurring grants that fell due (so that they can pay), then expiry (expired credits
        # pay nothing; a recurring grant given late, by a run after its day, may have expired already). A customer
        # whose credits cannot be brought up to date is not billed: its invoice would be paid by the wrong credits.
        credit_failures = _credits_due(make_uow, as_of, test_clock_id, result.id, batch_size, suspects)
        if credit_failures:
            unbillable = frozenset(f.customer_id for f in credit_failures)
            result.customers_seen += len(credit_failures)
            result.failures.extend(credit_failures)
        found = batches()
        first = next(found, None)
        second = next(found, None) if first is not None and spec is not None else None
        if second is None:  # one batch (or one worker): no process to start
            # On SQLite, the next batch's usage is aggregated on the other core while this one is billed.
            read_ahead = UsageReadAhead(engine) if first is not None and usage_read_ahead.available(engine) else None
            try:
                sequence = itertools.chain(() if first is None else (first,), found)
                batch = next(sequence, None)
                while batch is not None:
                    upcoming = next(sequence, None)
                    done(batch, bill_batch(make_uow, batch, as_of, result.id, read_ahead, upcoming, suspects))
                    batch = upcoming
            finally:
                if read_ahead is not None:
                    read_ahead.close()
        else:
            assert first is not None and spec is not None
            found_all = itertools.chain((first, second), found)
            _bill_in_processes(spec, workers, found_all, as_of, result.id, done, suspects)
    except BaseException as exc:
        _finish(make_uow, result, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    _finish(make_uow, result, "done", None)
    return result


def _finish(make_uow: UowFactory, result: BillRunResult, status: str, error: str | None) -> None:
    """Record how the run ended. A run that stopped is marked ``failed`` with its error, when the database can
    still be reached (else it stays ``running``, as a run whose process died does). Its customers that failed
    are counted from their rows; and a stopped run's invoices too: parts of a split batch, or batches of other
    workers, may have committed after the last one it was told of."""
    f, i = t.bill_run_failures.c, t.invoices.c
    invoices: Any = result.invoices_created
    if status != "done":
        invoices = select(func.count()).where(i.bill_run_id == result.id).scalar_subquery()
    try:
        with make_uow() as uow:
            uow.conn.execute(
                update(t.bill_runs)
                .where(t.bill_runs.c.id == result.id)
                .values(
                    status=status,
                    customers_seen=result.customers_seen,
                    invoices_created=invoices,
                    customers_failed=select(func.count()).where(f.bill_run_id == result.id).scalar_subquery(),
                    error=error,
                    finished_at=uow.now,
                )
            )
    except Exception:
        if status == "done":
            raise
        log.exception("bill run %s stopped and could not be marked failed", result.id)


def _credits_due(
    make_uow: UowFactory,
    as_of: datetime,
    test_clock_id: str | None,
    run_id: str,
    batch_size: int,
    suspects: frozenset[str] = frozenset(),
) -> list[CustomerFailure]:
    """Grant the recurring credits due by ``as_of`` and expire the credits whose time is up, for the real world
    or one test clock, in batches of customers, each batch one transaction. A batch that fails for a reason of its
    customers' is split like a bill run's batch, down to the customers that fail alone, which are recorded as
    failures of the run and returned; ``suspects`` (customers recent runs could not bill) go one by one."""
    with make_uow() as uow:
        due = wallets.customers_with_grants_due(uow, as_of, test_clock_id)
        due |= wallet_ledger.customers_with_expiry_due(uow, as_of, test_clock_id)
    ordered = sorted(due - suspects)
    failures: list[CustomerFailure] = []
    for start in range(0, len(ordered), batch_size):
        failures.extend(_credits_batch(make_uow, ordered[start : start + batch_size], as_of, test_clock_id, run_id))
    for customer_id in sorted(due & suspects):
        failures.extend(_credits_batch(make_uow, [customer_id], as_of, test_clock_id, run_id))
    return failures


def _credits_batch(
    make_uow: UowFactory, batch: Sequence[str], as_of: datetime, test_clock_id: str | None, run_id: str
) -> list[CustomerFailure]:
    failures: list[CustomerFailure] = []

    def attempt(part: Sequence[str]) -> None:
        def once() -> None:
            with make_uow() as uow:
                wallets.grant_recurring_due(uow, as_of, test_clock_id, part)
                wallet_ledger.expire_due(uow, as_of, test_clock_id, part)

        retrying(once)

    def failed(customer_id: str, exc: Exception) -> None:
        failures.append(_record_failure(make_uow, run_id, customer_id, as_of, exc, CREDITS_STEP))

    isolating(batch, attempt, failed)
    return failures


SUSPECT_DAYS = 7


def _recent_failures(uow: UnitOfWork, test_clock_id: str | None) -> frozenset[str]:
    """Customers that runs (of the real world, or of this test clock) could not bill in the last week: usually
    none, or a few whose cause nobody has fixed yet."""
    f, r = t.bill_run_failures.c, t.bill_runs.c
    clock = (r.test_clock_id == test_clock_id) if test_clock_id else r.test_clock_id.is_(None)
    since = uow.now - timedelta(days=SUSPECT_DAYS)
    query = select(f.customer_id).join(t.bill_runs, r.id == f.bill_run_id).where(clock, f.failed_at >= since)
    return frozenset(uow.conn.execute(query.distinct()).scalars())


def bill_batch(
    make_uow: UowFactory,
    batch: Sequence[str],
    as_of: datetime,
    run_id: str,
    read_ahead: UsageReadAhead | None = None,
    upcoming: Sequence[str] | None = None,
    suspects: frozenset[str] = frozenset(),
) -> BatchOutcome:
    """Bill a batch in one transaction; if it fails for a reason of its customers' (not the database's), bill
    its halves, each on its own, down to the single customers that fail, which are recorded. A batch with one
    failing customer costs about twice its billing: the failed attempts stop where the error is raised.
    ``suspects`` (customers recent runs could not bill) are billed one by one, after the others, so a customer
    that fails run after run until someone fixes it costs each run one small attempt, not a batch split."""
    alone = [c for c in batch if c in suspects] if suspects else []
    if alone:
        others = [c for c in batch if c not in suspects]
        outcome = bill_batch(make_uow, others, as_of, run_id, read_ahead, upcoming) if others else BatchOutcome()
        for customer_id in alone:
            outcome.add(bill_batch(make_uow, [customer_id], as_of, run_id))
        return outcome
    failures: list[CustomerFailure] = []

    def attempt(part: Sequence[str]) -> list[str]:
        # Only the whole batch reads ahead: if it fails, the read-ahead started for ``upcoming`` is dropped (the
        # failed batch never said it ended), and the next batch aggregates its own usage.
        if part is batch:
            return _bill_batch_with_retry(make_uow, part, as_of, run_id, read_ahead, upcoming)
        return _bill_batch_with_retry(make_uow, part, as_of, run_id)

    def failed(customer_id: str, exc: Exception) -> None:
        failures.append(_record_failure(make_uow, run_id, customer_id, as_of, exc))

    billed = isolating(batch, attempt, failed)
    return BatchOutcome([invoice_id for ids in billed for invoice_id in ids], failures)


# What a failure's message starts with when the customer failed before billing, in the credits step.
CREDITS_STEP = "Its wallet credits could not be brought up to date (recurring grants and expiry), so it was not billed"


def _record_failure(
    make_uow: UowFactory, run_id: str, customer_id: str, as_of: datetime, exc: Exception, step: str | None = None
) -> CustomerFailure:
    """Record why a customer could not be billed: a row of ``bill_run_failures`` and the event
    ``bill_run.customer_failed``, in one transaction. An error Remit explains keeps its code and message; any
    other is ``internal_error``, with its traceback in the log. ``step``: what failed, when it was not the billing
    itself; the message starts with it."""
    if isinstance(exc, RemitError):
        message = f"{step}: {exc.message}" if step else exc.message
        failure = CustomerFailure(customer_id, exc.code, message, exc.field)
        log.warning("bill run %s could not bill customer %s: %s (%s)", run_id, customer_id, message, exc.code)
    else:
        what = step if step else "Billing this customer failed"
        message = f"{what}: an unexpected error ({type(exc).__name__}: {exc})"[:2000]
        failure = CustomerFailure(customer_id, "internal_error", message)
        log.error("bill run %s could not bill customer %s", run_id, customer_id, exc_info=exc)
    with make_uow() as uow:
        uow.insert_many(
            t.bill_run_failures,
            [
                {
                    "bill_run_id": run_id,
                    "customer_id": customer_id,
                    "code": failure.code,
                    "message": failure.message,
                    "field": failure.field,
                    "failed_at": uow.now,
                }
            ],
        )
        uow.emit(
            "bill_run.customer_failed",
            "bill_run",
            run_id,
            {
                "bill_run_id": run_id,
                "customer_id": customer_id,
                "as_of": as_of.isoformat(),
                "error": {"code": failure.code, "message": failure.message, "field": failure.field},
            },
            customer_id,
            as_of,
        )
    return failure


@dataclass(frozen=True)
class _WorkerSpec:
    """What a worker process needs to open the same database with the same clock."""

    url: str
    clock: Clock


def _worker_spec(uow: UnitOfWork) -> _WorkerSpec | None:
    """How a worker process reaches this unit of work's database and clock; None if it cannot (SQLite, or a clock
    that cannot be sent to another process)."""
    if not uow.is_postgres:
        return None
    try:
        pickle.dumps(uow.clock)
    except (pickle.PicklingError, TypeError, AttributeError):
        return None
    return _WorkerSpec(uow.engine.url.render_as_string(hide_password=False), uow.clock)


def _bill_in_processes(
    spec: _WorkerSpec,
    workers: int,
    batches: Iterable[list[str]],
    as_of: datetime,
    run_id: str,
    done: Callable[[Sequence[str], BatchOutcome], None],
    suspects: frozenset[str] = frozenset(),
) -> None:
    """Bill the batches in ``workers`` processes, reporting each to ``done`` in the order found. One batch more
    than there are workers waits in the queue, so no worker idles while the next batch is looked up. Customers
    that fail are isolated by each worker (``bill_batch``); an error that stops the run stops it here too: the
    batches not started are cancelled, the ones running finish (each is its own transaction, so what they billed
    is complete), and the error is raised."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of this process's connections
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start, initargs=(spec,))
    running: deque[tuple[Sequence[str], Future[BatchOutcome]]] = deque()
    try:
        for batch in batches:
            among = frozenset(c for c in batch if c in suspects) if suspects else frozenset()
            running.append((batch, pool.submit(_worker_bill, batch, as_of, run_id, among)))
            while len(running) > workers:
                finished, future = running.popleft()
                done(finished, future.result())
        while running:
            finished, future = running.popleft()
            done(finished, future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_WORKER: list[UowFactory] = []  # in a worker process: its unit-of-work factory


def _worker_start(spec: _WorkerSpec) -> None:
    engine = make_engine(spec.url, pool_size=2, max_overflow=0)
    _WORKER[:] = [lambda: UnitOfWork(engine, spec.clock)]
    gc.freeze()  # what the worker imported and built lives as long as it does: no collection need walk it


def _worker_bill(batch: Sequence[str], as_of: datetime, run_id: str, suspects: frozenset[str]) -> BatchOutcome:
    return bill_batch(_WORKER[0], batch, as_of, run_id, suspects=suspects)


_paused = 0  # batches running with the collector paused (threads of one process may bill batches at once)
_resume = False  # whether the collector was running when the first of them paused it
_paused_lock = threading.Lock()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a batch is billed, and resume it after.

    A batch builds hundreds of thousands of objects that live until it ends (rows, terms, lines, invoices); they
    outlive the young generations, and each full collection walks them all again, as often as the batch grows by
    a quarter. With CPython's default thresholds a usage bill run of 20,000 customers on SQLite spent 1.0-1.2 s
    in 1,717 collections (0.01 s in 6 with the pause), and took 7.1-8.6 s instead of 5.5-6.7 s. Almost all of it
    is freed by reference counting when the batch ends; the few cycles it makes are collected once the collector
    resumes. The pause is process-wide and counted: it ends with the last batch running, and only if the
    collector was running before."""
    global _paused, _resume
    with _paused_lock:
        if _paused == 0:
            _resume = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if _paused == 0 and _resume:
                gc.enable()


def _bill_batch_with_retry(
    make_uow: UowFactory,
    batch: Sequence[str],
    as_of: datetime,
    run_id: str,
    read_ahead: UsageReadAhead | None = None,
    upcoming: Sequence[str] | None = None,
) -> list[str]:
    skipped: list[str] = []

    def attempt() -> list[str]:
        skipped.clear()
        with _collector_paused(), make_uow() as uow:
            return bill_customers(
                uow, batch, as_of, run_id, skip_locked=True, read_ahead=read_ahead, upcoming=upcoming, skipped=skipped
            )

    invoice_ids = retrying(attempt)
    if not skipped:
        return invoice_ids
    # Customers whose lock another transaction held (an API request, the usage monitor, another run): billed
    # now, once it is free, rather than passed over by a run that would report them done. Another run's customers
    # are found billed by then, and nothing is written twice.
    rest = list(skipped)

    def again() -> list[str]:
        with _collector_paused(), make_uow() as uow:
            return bill_customers(uow, rest, as_of, run_id)

    return invoice_ids + retrying(again)


@dataclass
class _Batch:
    customers: dict[str, Mapping[Any, Any]]
    entities: dict[str, Mapping[Any, Any]]
    subs: Sequence[Mapping[Any, Any]]
    events: dict[str, list[TimelineEvent]]
    coupons: dict[str, list[AppliedCoupon]]
    overrides: dict[str, list[Mapping[Any, Any]]]
    billed: dict[str, dict[LineKey, BilledTotals]]
    pending: dict[str, list[Mapping[Any, Any]]]
    balances: dict[str, int]
    prices: dict[str, Price]
    usage: dict[str, UsageData] = field(default_factory=dict)  # per customer, for the as-of time being billed
    terms: dict[str, SubscriptionTerms | None] = field(default_factory=dict)  # per subscription, made once
    # Per subscription, its periods invoiced at another price than the customer's now (``_pin_invoiced``): only
    # subscriptions of customers with negotiated prices can have any.
    pinned: dict[str, Pinned] = field(default_factory=dict)
    views: dict[str, Mapping[str, Price]] = field(default_factory=dict)  # per customer with overrides, made once
    # Whether any of the customers held wallet credits when the batch was loaded (a preview that finds none
    # skips reading them; finalizing reads them anyway, under its locks).
    credits: bool = True


def _ids(uow: UnitOfWork, column: Any, ids: Iterable[str]) -> Any:
    """``column IN ids``, for a statement built per call (see ``_statement`` for the ones built once)."""
    variant, value = id_list_value(ids, uow.is_postgres)
    return in_id_list(column, variant, bindparam(None, value, type_=ID_LIST_TYPES[variant]))


# Statements whose only parameter is a list of ids (``:ids``), built once per name and variant: building a
# statement and computing its cache key cost more CPU than running it for a small batch (a preview bills one
# customer through these same statements).
_BUILT: dict[tuple[str, str], Any] = {}


def _statement(
    uow: UnitOfWork, name: str, ids: Iterable[str], build: Callable[[Callable[[Any], Any], bool], Any]
) -> tuple[Any, dict[str, Any]]:
    """The statement ``name`` and its parameters for these ids. ``build(in_ids, postgres)`` makes the statement,
    with ``in_ids(column)`` for ``column IN :ids``; it is called once per name and variant."""
    variant, value = id_list_value(ids, uow.is_postgres)
    stmt = _BUILT.get((name, variant))
    if stmt is None:
        param = bindparam("ids", type_=ID_LIST_TYPES[variant])
        stmt = _BUILT[name, variant] = build(lambda column: in_id_list(column, variant, param), uow.is_postgres)
    return stmt, {"ids": value}


_CUSTOMER_COLUMNS = ("id", "legal_entity_id", "currency", "timezone", "test_clock_id")
_SUBSCRIPTION_COLUMNS = (
    "id",
    "customer_id",
    "currency",
    "status",
    "interval_unit",
    "interval_count",
    "anchor_on",
    "trial_end_on",
    "ended_on",
    "reviewed_from_on",
    "billed_through_on",
)


# An already billed line, as the subscriptions statement lists it (see ``_billed_totals``).
_BILLED_FIELDS = (
    "charge_key",
    "period_start_on",
    "period_end_on",
    "revision",
    "id",
    "subtotal_minor",
    "discount_minor",
    "quantity",
    "price_id",
    "kind",
)


def _subscriptions_query(in_ids: Callable[[Any], Any], postgres: bool) -> Any:
    """The subscriptions under review, one row each in customer and subscription order, with two JSON arrays (as
    text): its timeline (each event not revoked as [effective day, kind, seq, items]) and the lines already billed
    for its periods that may still change (``_BILLED_FIELDS``). One statement where there were three: each
    statement costs a round trip and, on this machine, more CPU than these small lookups themselves."""
    s, ev, ln = t.subscriptions.c, t.subscription_events.c, t.invoice_lines.c
    agg, array = (func.json_agg, func.json_build_array) if postgres else (func.json_group_array, func.json_array)
    items = ev["items"] if postgres else func.json(ev["items"])  # SQLite keeps JSON as text: embed it as JSON
    timeline = (
        select(agg(array(ev.effective_on, ev.kind, ev.seq, items)))
        .where(ev.subscription_id == s.id, ev.revoked_at.is_(None))
        .scalar_subquery()
    )
    billed = (
        select(agg(array(*(ln[name] for name in _BILLED_FIELDS))))
        .where(ln.subscription_id == s.id, or_(s.reviewed_from_on.is_(None), ln.period_end_on > s.reviewed_from_on))
        .scalar_subquery()
    )
    return (
        select(
            *(s[name] for name in _SUBSCRIPTION_COLUMNS),
            cast(timeline, Text).label("timeline"),
            cast(billed, Text).label("billed"),
        )
        .where(in_ids(s.customer_id), needs_review())
        .order_by(s.customer_id, s.id)
    )


def _locked_subscriptions_query(in_ids: Callable[[Any], Any], postgres: bool) -> Any:
    # Locked before their usage is read: ingestion of a late event updates these rows (to reopen the period), so
    # it either commits before the usage is read here, or waits and reopens after this batch commits.
    query = _subscriptions_query(in_ids, postgres)
    return query.with_for_update(of=t.subscriptions) if postgres else query


def _coupons_query(in_ids: Callable[[Any], Any], _postgres: bool) -> Any:
    sub_customer = t.subscriptions.alias("s")
    return (
        select(t.coupons, t.subscription_coupons.c.subscription_id, t.subscription_coupons.c.applied_on)
        .join(t.subscription_coupons, t.subscription_coupons.c.coupon_id == t.coupons.c.id)
        .join(sub_customer, sub_customer.c.id == t.subscription_coupons.c.subscription_id)
        .where(in_ids(sub_customer.c.customer_id))
        # Coupons stack: each takes its share of what the ones before it left, so their order is money. They apply
        # in the order they were added (ids grow with time), never in whatever order the database's plan returns.
        .order_by(t.subscription_coupons.c.subscription_id, t.subscription_coupons.c.id)
    )


def _balances_query(in_ids: Callable[[Any], Any], _postgres: bool) -> Any:
    bt = t.balance_transactions.c
    return select(bt.customer_id, func.sum(bt.amount_minor)).where(in_ids(bt.customer_id)).group_by(bt.customer_id)


def _credited_query(in_ids: Callable[[Any], Any], _postgres: bool) -> Any:
    """What credit notes credited on the customers' subscription lines, per key (subscription, charge, period):
    a correction of a key credits no more than its lines still hold (``BilledTotals.credited_minor``). From the
    invoices credited (indexed by customer), through their credit notes and lines."""
    inv, cn, cnl, ln = t.invoices.c, t.credit_notes.c, t.credit_note_lines.c, t.invoice_lines.c
    return (
        select(ln.subscription_id, ln.charge_key, ln.period_start_on, func.sum(cnl.amount_minor))
        .select_from(t.invoices)
        .join(t.credit_notes, cn.invoice_id == inv.id)
        .join(t.credit_note_lines, cnl.credit_note_id == cn.id)
        .join(t.invoice_lines, ln.id == cnl.invoice_line_id)
        .where(in_ids(inv.customer_id), inv.credited_minor > 0, ln.subscription_id.is_not(None))
        .group_by(ln.subscription_id, ln.charge_key, ln.period_start_on)
    )


def _credits_query(in_ids: Callable[[Any], Any], _postgres: bool) -> Any:
    """Wallet grants the customers could pay with (only asked whether there are any: see ``_Batch.credits``)."""
    g = t.wallet_grants.c
    return select(g.id).where(in_ids(g.customer_id), g.status == "active", g.remaining_minor > 0)


def _overrides_query(in_ids: Callable[[Any], Any], _postgres: bool) -> Any:
    return select(t.price_overrides).where(in_ids(t.price_overrides.c.customer_id))


def _pending_query(in_ids: Callable[[Any], Any], _postgres: bool) -> Any:
    p = t.pending_items.c
    return select(t.pending_items).where(in_ids(p.customer_id), p.invoice_id.is_(None))


# The lookups most customers have nothing for: their EXISTS answers, read with the customers (``load_head``), say
# which of them to run, so a batch (a preview: one customer) without coupons, price overrides, pending items or
# balance entries runs none of them. Each EXISTS is its lookup's own statement, so the two always agree.
_SPARSE: tuple[tuple[str, Callable[[Callable[[Any], Any], bool], Any]], ...] = (
    ("coupons", _coupons_query),
    ("overrides", _overrides_query),
    ("pending", _pending_query),
    ("balances", _balances_query),
    ("credits", _credits_query),
    ("credited", _credited_query),
)


_ENTITY = "entity__"  # the head's labels of the legal entity's columns
# The legal entity's columns billing reads: rounding, and numbering and finalizing invoices.
_ENTITY_COLUMNS = ("id", "rounding_policy", "auto_finalize", "invoice_prefix", "payment_terms_days")
_HAS = "has__"  # and of the sparse lookups' answers


def _head_query(in_ids: Callable[[Any], Any], postgres: bool) -> Any:
    """The customers and their legal entities (the columns billing reads) with the sparse lookups' EXISTS
    answers for each: what ``_load_batch`` reads before the subscriptions, in one statement. Each EXISTS is its
    lookup's own statement, correlated to the customer's row."""
    c, le = t.customers.c, t.legal_entities

    def own(column: Any) -> Any:
        return column == c.id

    return (
        select(
            *(c[name] for name in _CUSTOMER_COLUMNS),
            *(le.c[name].label(_ENTITY + name) for name in _ENTITY_COLUMNS),
            *(build(own, postgres).exists().label(_HAS + name) for name, build in _SPARSE),
        )
        .join_from(t.customers, le, le.c.id == c.legal_entity_id)
        .where(in_ids(c.id))
    )


@dataclass(frozen=True)
class Head:
    """What ``load_head`` read: customers by id, their legal entities by id, and which sparse lookups have rows
    for any of the customers."""

    customers: dict[str, dict[str, Any]]
    entities: dict[str, dict[str, Any]]
    present: dict[str, bool]


def load_head(uow: UnitOfWork, customer_ids: Iterable[str]) -> Head:
    """The customers' billing columns, legal entities and sparse answers, in one statement (a customer that does
    not exist is not in ``customers``)."""
    customers: dict[str, dict[str, Any]] = {}
    entities: dict[str, dict[str, Any]] = {}
    present = dict.fromkeys((name for name, _ in _SPARSE), False)
    width, entity_width = len(_CUSTOMER_COLUMNS), len(_ENTITY_COLUMNS)
    for row in driver.rows(uow.conn, *_statement(uow, "head", customer_ids, _head_query)):
        customer = dict(zip(_CUSTOMER_COLUMNS, row[:width], strict=True))
        customers[customer["id"]] = customer
        entity_id = customer["legal_entity_id"]
        if entity_id not in entities:
            entities[entity_id] = dict(zip(_ENTITY_COLUMNS, row[width : width + entity_width], strict=True))
        for name, value in zip(present, row[width + entity_width :], strict=True):
            present[name] = present[name] or bool(value)
    return Head(customers, entities, present)


def _load_batch(
    uow: UnitOfWork,
    customer_ids: Sequence[str],
    *,
    lock: bool = True,
    head: Head | None = None,
) -> _Batch:
    """Everything billing these customers needs, in a fixed number of queries. Customers and subscriptions are
    loaded with the columns billing reads (not addresses and tax ids); identical timelines and coupons are parsed
    once per batch and shared (they are immutable).

    ``lock``: lock the subscriptions (PostgreSQL) before their usage is read, as a bill run that writes must; a
    computation that writes nothing (a preview, live usage) passes False and takes no lock. ``head``: what
    ``load_head`` read for these customers, when the caller has just read it (a preview, which checks the
    customer's visibility on it first)."""
    conn = uow.conn

    def run(name: str, ids: Iterable[str], build: Callable[[Callable[[Any], Any], bool], Any]) -> Any:
        return conn.execute(*_statement(uow, name, ids, build))

    head = head if head is not None else load_head(uow, customer_ids)
    rows: dict[str, Mapping[Any, Any]] = dict(head.customers)
    entities: dict[str, Mapping[Any, Any]] = dict(head.entities)
    present = head.present
    name, build = (
        ("locked_subscriptions", _locked_subscriptions_query) if lock else ("subscriptions", _subscriptions_query)
    )
    subs: list[dict[str, Any]] = []
    events: dict[str, list[TimelineEvent]] = {}
    billed: dict[str, dict[LineKey, BilledTotals]] = {}
    price_ids: set[str] = set()
    timelines: dict[str, list[TimelineEvent]] = {}  # parsed once per distinct timeline (same plan, same day...)
    width = len(_SUBSCRIPTION_COLUMNS)
    for row in driver.rows(uow.conn, *_statement(uow, name, customer_ids, build)):
        sub = dict(zip(_SUBSCRIPTION_COLUMNS, row[:width], strict=True))
        subs.append(sub)
        timeline, lines = row[width], row[width + 1]
        if timeline and timeline != "[]":
            parsed = timelines.get(timeline)
            if parsed is None:
                parsed = timelines[timeline] = [
                    timeline_event_from_row(
                        {"effective_on": date.fromisoformat(on), "kind": kind, "items": items, "seq": seq}
                    )
                    for on, kind, seq, items in json.loads(timeline)
                ]
                price_ids.update(i.price_id for event in parsed for i in event.items)
            events[sub["id"]] = list(parsed)
        if lines and lines != "[]":
            billed[sub["id"]] = _billed_totals(sub["id"], json.loads(lines))
    coupons: dict[str, list[AppliedCoupon]] = defaultdict(list)
    applied: dict[tuple[str, date], AppliedCoupon] = {}
    for row in run("coupons", customer_ids, _coupons_query).mappings() if present["coupons"] else ():
        one = applied.get((row["id"], row["applied_on"]))
        if one is None:
            one = applied[(row["id"], row["applied_on"])] = AppliedCoupon(coupon_from_row(row), row["applied_on"])
        coupons[row["subscription_id"]].append(one)
    overrides: dict[str, list[Mapping[Any, Any]]] = defaultdict(list)
    for row in run("overrides", customer_ids, _overrides_query).mappings() if present["overrides"] else ():
        overrides[row["customer_id"]].append(row)
    pending: dict[str, list[Mapping[Any, Any]]] = defaultdict(list)
    for row in run("pending", customer_ids, _pending_query).mappings() if present["pending"] else ():
        pending[row["customer_id"]].append(row)
    balances = run("balances", customer_ids, _balances_query).all() if present["balances"] else []
    credited_rows = run("credited", customer_ids, _credited_query) if present["credited"] else ()
    for sub_id, charge, start_on, credited in credited_rows:
        key = (sub_id, charge, start_on)
        found = billed.get(sub_id, {}).get(key)
        if found is not None:  # keys of periods that can no longer change are not loaded
            billed[sub_id][key] = replace(found, credited_minor=int(credited))
    batch = _Batch(
        rows,
        entities,
        subs,
        events,
        coupons,
        overrides,
        billed,
        pending,
        {k: int(v) for k, v in balances},
        load_prices(conn, price_ids),
        credits=bool(present["credits"]),
    )
    if overrides:
        _pin_invoiced(uow, batch)
        _pin_commitments(uow, batch)
    return batch


def customer_prices(batch: _Batch, customer_id: str) -> Mapping[str, Price]:
    """The catalog as this customer is billed by it now: its negotiated prices replace the list prices."""
    overrides = batch.overrides.get(customer_id)
    if not overrides:
        return batch.prices
    found = batch.views.get(customer_id)
    if found is None:
        found = batch.views[customer_id] = with_overrides(batch.prices, overrides)
    return found


def pinned_of(batch: _Batch, sub_id: str) -> Pinned:
    return batch.pinned.get(sub_id, NO_PINS) if batch.pinned else NO_PINS


def _negotiating(
    batch: _Batch,
) -> Iterator[tuple[Mapping[Any, Any], list[Mapping[Any, Any]], Mapping[LineKey, BilledTotals]]]:
    """The batch's subscriptions whose customer negotiated prices and which have lines billed in periods that may
    still change, with those negotiated prices and lines: the only ones a pin can concern."""
    for sub in batch.subs:
        overrides = batch.overrides.get(sub["customer_id"])
        billed = batch.billed.get(sub["id"]) if overrides else None
        if billed and overrides:
            yield sub, overrides, billed


def _pin_invoiced(uow: UnitOfWork, batch: _Batch) -> None:
    """A period keeps the price it was first invoiced at: a negotiated price set or changed since applies to the
    periods not invoiced yet. For the subscriptions of customers with negotiated prices, the lines of the periods
    that may still change, of the prices they negotiated, are read (one query, and only for them): each such
    period takes the price its first line rated by the price's own model recorded (``negotiated_price`` in the
    line's details; no record: the list price). Lines a dimension's own model rated, and credits of charges no
    longer measured, say nothing of it; a period with only those takes the customer's price now. Periods whose
    price is the customer's now are not pinned, so that the generator's memos stay shared."""
    wanted: dict[tuple[str, str, date], None] = {}  # (subscription, price, period start)
    for sub, overrides, billed in _negotiating(batch):
        overridden = {row["price_id"] for row in overrides}
        for key, before in billed.items():
            price_id = before.price_id or key[1]
            if price_id in overridden:
                wanted[(sub["id"], price_id, key[2])] = None
    if not wanted:
        return
    ln, inv, s = t.invoice_lines.c, t.invoices.c, t.subscriptions.c
    query = (
        select(ln.subscription_id, ln.price_id, ln.period_start_on, ln.details)
        .join_from(t.invoice_lines, t.invoices, inv.id == ln.invoice_id)
        .join(t.subscriptions, s.id == ln.subscription_id)
        .where(
            _ids(uow, ln.subscription_id, sorted({sub_id for sub_id, _p, _d in wanted})),
            _ids(uow, ln.price_id, sorted({price_id for _s, price_id, _d in wanted})),
            or_(s.reviewed_from_on.is_(None), ln.period_end_on > s.reviewed_from_on),
        )
        .order_by(inv.created_at, ln.revision, ln.id)  # each period's first lines first
    )
    decided: set[tuple[str, str, date]] = set()
    pins: dict[str, dict[tuple[str, date], Price]] = {}
    customer_of = {sub["id"]: sub["customer_id"] for sub in batch.subs}
    for sub_id, price_id, period_start, details in uow.conn.execute(query):
        key = (sub_id, price_id, period_start)
        if key not in wanted or key in decided:
            continue
        base = batch.prices.get(price_id)
        if base is None or not _rated_by_price_model(base, details):
            continue
        decided.add(key)
        record = details.get("negotiated_price")
        current = customer_prices(batch, customer_of[sub_id])[price_id]
        if record is None:
            invoiced = base
        elif (
            record.get("override_id") == current.override_id
            and record.get("model") == current.model.kind
            and (record.get("config") == current.model.to_config())
        ):
            continue  # invoiced at the customer's price now
        else:
            invoiced = negotiated(base, record["override_id"], record["model"], record["config"])
        pins.setdefault(sub_id, {})[(price_id, period_start)] = invoiced
    batch.pinned.update(pins)


def _pin_commitments(uow: UnitOfWork, batch: _Batch) -> None:
    """A period invoiced without a true-up line (its usage met the commitment) keeps the commitment it was
    invoiced under too, though no line recorded it: a negotiated commitment set or changed since applies to the
    periods not invoiced yet, and a late event or a canceled one that re-rates the period compares its usage
    with the commitment it had. That commitment is read from the history of the customer's negotiated price
    (``price_override.set`` records what each change replaced): the first change recorded after the period's
    lines billed in arrears were first invoiced (``invoice.created``) replaced it; none since: the price now.
    Only for customers with a negotiated commitment, and periods that may still change."""
    wanted: dict[tuple[str, str, date], None] = {}  # (subscription, commitment price, period start)
    for sub, overrides, billed in _negotiating(batch):
        minimums = {r["price_id"] for r in overrides if (p := batch.prices.get(r["price_id"])) and p.is_minimum}
        lined = {(before.price_id or key[1], key[2]) for key, before in billed.items()}
        for price_id in minimums:
            for period_start in sorted({key[2] for key in billed}):
                if (price_id, period_start) not in lined:
                    wanted[(sub["id"], price_id, period_start)] = None
    if not wanted:
        return
    ln, inv = t.invoice_lines.c, t.invoices.c
    sub_ids = sorted({sub_id for sub_id, _p, _d in wanted})
    first_invoice: dict[tuple[str, date], str] = {}  # (subscription, period start) -> its first in-arrears invoice
    for sub_id, price_id, period_start, invoice_id in uow.conn.execute(
        select(ln.subscription_id, ln.price_id, ln.period_start_on, ln.invoice_id)
        .join_from(t.invoice_lines, t.invoices, inv.id == ln.invoice_id)
        .where(
            _ids(uow, ln.subscription_id, sub_ids),
            ln.period_start_on >= min(period_start for _s, _p, period_start in wanted),
        )
        .order_by(inv.created_at, ln.revision, ln.id)
    ):
        price = batch.prices.get(price_id)
        if price is not None and price.timing is Timing.IN_ARREARS:
            first_invoice.setdefault((sub_id, period_start), invoice_id)
    customer_of = {sub["id"]: sub["customer_id"] for sub in batch.subs}
    e = t.events.c
    invoice_event: dict[str, int] = {}
    changes: dict[tuple[str, str], list[tuple[int, Mapping[str, Any]]]] = defaultdict(list)
    for event_id, type_, object_id, customer_id, data in uow.conn.execute(
        select(e.id, e.type, e.object_id, e.customer_id, e.data)
        .where(
            _ids(uow, e.customer_id, sorted({customer_of[sub_id] for sub_id in sub_ids})),
            e.type.in_(("invoice.created", "price_override.set")),
        )
        .order_by(e.id)
    ):
        if type_ == "invoice.created":
            invoice_event[object_id] = event_id
        else:
            changes[(customer_id, data["price_id"])].append((event_id, data))
    pins: dict[str, dict[tuple[str, date], Price]] = {}
    for sub_id, price_id, period_start in wanted:
        invoice_id = first_invoice.get((sub_id, period_start))
        invoiced_at = invoice_event.get(invoice_id) if invoice_id else None
        if invoiced_at is None:
            continue  # not invoiced yet: the customer's price now
        later = [data for event_id, data in changes[(customer_of[sub_id], price_id)] if event_id > invoiced_at]
        if not later:
            continue  # unchanged since: the customer's price now
        base = batch.prices[price_id]
        replaced = later[0]
        if "previous_model" in replaced:
            model, config = replaced["previous_model"], replaced["previous_config"]
            invoiced = negotiated(base, replaced["override_id"], model, config)
        else:
            invoiced = base  # negotiated after the period was invoiced: it was invoiced under the list price
        pins.setdefault(sub_id, {})[(price_id, period_start)] = invoiced
    for sub_id, found in pins.items():
        batch.pinned[sub_id] = {**batch.pinned.get(sub_id, {}), **found}


def _rated_by_price_model(base: Price, details: Mapping[str, Any]) -> bool:
    """Whether a line was rated by its price's own model (the list price's, or the negotiated one), which it then
    records; not a dimension's own model, nor a credit of a charge no longer measured (it rates nothing)."""
    used = details.get("usage") or {}
    if used.get("nothing_measured"):
        return False
    group = used.get("group")
    if base.usage is not None and base.usage.dimensions and isinstance(group, dict) and group:
        return dimension_key(tuple(str(v) for v in group.values())) not in base.usage.dimensions
    return True


def _billed_totals(sub_id: str, lines: Sequence[Sequence[Any]]) -> dict[LineKey, BilledTotals]:
    """What was already billed for one subscription's periods that may still change, per key, from its lines as
    the subscriptions statement lists them (``_BILLED_FIELDS``; days as ISO text, the quantity as text)."""
    acc: dict[LineKey, list[Any]] = {}
    for charge, p_start, p_end, revision, line_id, subtotal, discount, qty, price_id, kind in lines:
        key = (sub_id, charge, p_start and date.fromisoformat(p_start))
        entry = acc.get(key)
        if entry is None:
            acc[key] = [
                subtotal,
                discount,
                revision,  # the lowest revision: the key's first line (revision 0, unless a draft lost it)
                line_id,
                p_end and date.fromisoformat(p_end),
                Decimal(qty),
                revision,
                price_id or "",
                kind,
            ]
        else:
            entry[0] += subtotal
            entry[1] += discount
            if revision < entry[2]:
                entry[2], entry[3] = revision, line_id
            if revision > entry[6]:
                entry[5], entry[6], entry[8] = Decimal(qty), revision, kind
    # The next line's revision follows the highest one billed, not the number of lines: a line taken off a
    # draft leaves a gap, and the key's later revisions stay taken.
    return {k: BilledTotals(v[0], v[1], v[6] + 1, v[3], v[4], v[5], v[7], v[8]) for k, v in acc.items()}


def bill_customers(
    uow: UnitOfWork,
    customer_ids: Sequence[str],
    as_of: datetime,
    run_id: str | None,
    skip_locked: bool = False,
    write: bool = True,
    read_ahead: UsageReadAhead | None = None,
    upcoming: Sequence[str] | None = None,
    skipped: list[str] | None = None,
) -> list[str]:
    """Generate and write the invoices due for these customers as of a time. Returns the new invoice ids.
    ``skip_locked``: customers another transaction holds are left out (added to ``skipped``, if given).

    The events this produces are written here, in bulk and in the order they happen, rather than queued on the
    unit of work. ``read_ahead`` (SQLite): what the previous batch read ahead is used if still valid, and the
    ``upcoming`` batch's usage is read ahead while this one is billed."""
    locked = uow.lock_customers(customer_ids, skip_locked=skip_locked)
    if skipped is not None and len(locked) < len(set(customer_ids)):
        skipped.extend(sorted(set(customer_ids) - set(locked)))
    if not locked:
        return []
    version = usage_read_ahead.version(uow.conn) if read_ahead is not None else None
    batch = _load_batch(uow, locked)
    ahead = read_ahead.take(version) if read_ahead is not None and version is not None else None
    meters, windows = load_usage(uow, batch, as_of, read_ahead=ahead)
    if read_ahead is not None and version is not None and upcoming:
        read_ahead.start(version, upcoming, meters, windows)
    drafts, reviewed = compute_drafts(batch, as_of)
    if not write:
        return []
    events: list[Event] = []
    _mark_reviewed(uow, batch, reviewed, events, as_of)
    invoice_ids = write_invoices(uow, drafts, batch.entities, batch.balances, run_id, events=events)
    write_events(uow, events)
    if read_ahead is not None:
        read_ahead.ended(uow.conn)
    return invoice_ids


def compute_drafts(batch: _Batch, as_of: datetime) -> tuple[list[InvoiceDraft], dict[str, tuple[date, str]]]:
    subs_by_customer: dict[str, list[Mapping[Any, Any]]] = defaultdict(list)
    for sub in batch.subs:
        subs_by_customer[sub["customer_id"]].append(sub)
    drafts: list[InvoiceDraft] = []
    reviewed: dict[str, tuple[date, str]] = {}
    # Looked up once per batch rather than per customer or subscription: all pure.
    policies: dict[str, RoundingPolicy] = {}
    local_days: dict[str, date] = {}
    statuses: dict[tuple[tuple[TimelineEvent, ...], date | None, date], str] = {}
    no_billed: dict[LineKey, BilledTotals] = {}
    for customer_id, customer in batch.customers.items():
        entity_id = customer["legal_entity_id"]
        policy = policies.get(entity_id)
        if policy is None:
            policy = policies[entity_id] = RoundingPolicy(batch.entities[entity_id]["rounding_policy"])
        as_of_on = local_days.get(customer["timezone"])
        if as_of_on is None:
            as_of_on = local_days[customer["timezone"]] = local_date(as_of, customer["timezone"])
        prices = customer_prices(batch, customer_id)
        lines: list[NewLine] = []
        for sub in subs_by_customer.get(customer_id, ()):
            sub_id = sub["id"]
            terms = _terms(batch, sub)
            if terms is None:
                continue
            events = terms.events
            usage = batch.usage.get(customer_id)
            pinned = pinned_of(batch, sub_id)
            proposed = propose(terms, prices, as_of_on, policy, usage, pinned)
            meters = usage.meters if usage is not None else None
            billed = batch.billed.get(sub_id, no_billed)
            lines.extend(diff(proposed, billed, as_of_on, prices, meters, pinned, terms.billed_through_on))
            key = (events, sub["trial_end_on"], as_of_on)
            status = statuses.get(key)
            if status is None:
                status = statuses[key] = status_on(events, sub["trial_end_on"], as_of_on).value
            reviewed[sub_id] = (as_of_on, status)
        pending = batch.pending.get(customer_id, [])
        if lines or pending:
            drafts.append(
                InvoiceDraft(
                    customer=customer,
                    lines=lines,
                    pending_items=pending,
                    issued_on=as_of_on,
                    at=as_of,
                    reason="subscription_cycle",
                )
            )
    return drafts, reviewed


def _terms(batch: _Batch, sub: Mapping[Any, Any]) -> SubscriptionTerms | None:
    """The subscription's terms, made once per batch (loading the usage and billing both need them)."""
    sub_id = sub["id"]
    if sub_id in batch.terms:
        return batch.terms[sub_id]
    terms = batch.terms[sub_id] = _make_terms(batch, sub)
    return terms


def _make_terms(batch: _Batch, sub: Mapping[Any, Any]) -> SubscriptionTerms | None:
    sub_id = sub["id"]
    sub_events = batch.events.get(sub_id)
    if not sub_events:
        return None
    return SubscriptionTerms(
        id=sub_id,
        customer_id=sub["customer_id"],
        currency=_currency(sub["currency"]),
        interval=_interval(sub["interval_unit"], sub["interval_count"]),
        anchor_on=sub["anchor_on"],
        trial_end_on=sub["trial_end_on"],
        events=tuple(sub_events),
        coupons=tuple(batch.coupons.get(sub_id, ())),
        reviewed_from_on=sub["reviewed_from_on"],
        billed_through_on=sub["billed_through_on"],
    )


def load_usage(
    uow: UnitOfWork,
    batch: _Batch,
    as_of: datetime,
    as_of_by_subscription: Mapping[str, datetime] | None = None,
    read_ahead: Mapping[Span, ReadAheadSpan] | None = None,
) -> tuple[dict[str, Meter], list[Window]]:
    """The meter aggregates the batch's usage prices need as of a time: one query for the whole batch (two with
    time-weighted meters). Windows are the customer's local days, as UTC instants. ``as_of_by_subscription``:
    another time for some subscriptions (live usage looks at each subscription's own open period).
    ``read_ahead``: spans already aggregated (``aggregate_usage``). Returns the meters and the windows
    aggregated."""
    batch.usage = {}
    if not any(p.usage is not None for p in batch.prices.values()):
        return {}, []
    windows: list[Window] = []
    per_transaction: list[Window] = []
    wanted: dict[str, list[tuple[UsageWindowKey, Window]]] = defaultdict(list)
    days: dict[tuple[datetime, str], date] = {}  # (time, zone) -> local day: pure, so looked up once
    midnights: dict[tuple[date, str], datetime] = {}

    def midnight(on: date, tz: str) -> datetime:
        found = midnights.get((on, tz))
        if found is None:
            found = midnights[(on, tz)] = local_midnight(on, tz)
        return found

    for sub in batch.subs:
        terms = _terms(batch, sub)
        if terms is None:
            continue
        customer = batch.customers[sub["customer_id"]]
        prices = customer_prices(batch, customer["id"])
        if not has_usage(terms, prices):
            continue
        tz = customer["timezone"]
        at = as_of_by_subscription.get(sub["id"], as_of) if as_of_by_subscription else as_of
        on = days.get((at, tz))
        if on is None:
            on = days[(at, tz)] = local_date(at, tz)
        for key, one_by_one in usage_windows(terms, prices, on, pinned_of(batch, sub["id"])):
            meter, start_on, end_on = key
            window = Window(customer["id"], meter, midnight(start_on, tz), midnight(end_on, tz))
            windows.append(window)
            if one_by_one:
                per_transaction.append(window)
            wanted[customer["id"]].append((key, window))
    if not windows:
        return {}, []
    meters = {r["code"]: meter_from_row(r) for r in uow.conn.execute(select(t.meters)).mappings()}
    distinct = list(dict.fromkeys(windows))
    zones = {customer_id: batch.customers[customer_id]["timezone"] for customer_id in wanted}
    found = aggregate_usage(uow.conn, meters, distinct, read_ahead=read_ahead, timezones=zones)
    by_window: dict[tuple[str, str, datetime, datetime], dict[tuple[str, ...], Any]] = defaultdict(dict)
    for (customer_id, meter, start, end, group), agg in found.items():
        by_window[(customer_id, meter, start, end)][group] = agg
    values: dict[tuple[str, str, datetime, datetime], dict[tuple[str, ...], list[Decimal]]] = defaultdict(dict)
    for (customer_id, meter, start, end, group), found_values in transaction_values(
        uow.conn, list(dict.fromkeys(per_transaction))
    ).items():
        values[(customer_id, meter, start, end)][group] = found_values
    for customer_id, keys in wanted.items():
        batch.usage[customer_id] = UsageData(
            meters,
            {key: by_window.get((w.customer_id, w.meter_code, w.start, w.end), {}) for key, w in keys},
            {key: values.get((w.customer_id, w.meter_code, w.start, w.end), {}) for key, w in keys},
        )
    return meters, distinct


_CURRENCIES: dict[str, Currency] = {}


def _currency(code: str) -> Currency:
    found = _CURRENCIES.get(code)
    if found is None:
        found = _CURRENCIES[code] = currency(code)
    return found


_INTERVALS: dict[tuple[str, int], Interval] = {}


def _interval(unit: str, count: int) -> Interval:
    key = (unit, count)
    found = _INTERVALS.get(key)
    if found is None:
        found = _INTERVALS[key] = Interval.parse(unit, count)
    return found


def _mark_reviewed(
    uow: UnitOfWork, batch: _Batch, reviewed: Mapping[str, tuple[date, str]], events: list[Event], as_of: datetime
) -> None:
    """Advance each subscription's review mark; statuses that changed (trial ended, canceled...) add events, dated
    by the run's "as of" (a test clock's step, for its customers), like the invoices it writes."""
    by_day: dict[date, list[str]] = defaultdict(list)
    changed: list[dict[str, Any]] = []
    for sub in batch.subs:
        found = reviewed.get(sub["id"])
        if found is None:
            continue
        day, status = found
        if sub["reviewed_from_on"] is None or day > sub["reviewed_from_on"]:
            by_day[day].append(sub["id"])
        if status != sub["status"]:
            changed.append({"b_id": sub["id"], "b_status": status})
            # Out of a pause into anything but the end (active, or back in its trial) is a resume.
            resumed = sub["status"] == "paused" and status != "canceled"
            terms = _terms(batch, sub)
            since = status_since(terms.events, sub["trial_end_on"], day) if terms is not None else None
            events.append(
                (
                    "subscription.resumed" if resumed else _STATUS_EVENTS.get(status, "subscription.updated"),
                    "subscription",
                    sub["id"],
                    {
                        # The same fields as when the change takes effect at once (subscriptions.py).
                        "effective_on": since.isoformat() if since is not None else None,
                        "status": status,
                        "previous_status": sub["status"],
                    },
                    sub["customer_id"],
                    as_of,
                )
            )
    s = t.subscriptions.c
    for day, ids in by_day.items():
        billed_through = case(
            (or_(s.billed_through_on.is_(None), s.billed_through_on < day), day), else_=s.billed_through_on
        )
        for chunk in _chunks(ids, 5000):
            uow.conn.execute(
                update(t.subscriptions)
                .where(_ids(uow, s.id, chunk))
                .values(reviewed_from_on=day, billed_through_on=billed_through)
            )
    if changed:
        uow.conn.execute(
            update(t.subscriptions)
            .where(t.subscriptions.c.id == bindparam("b_id"))
            .values(status=bindparam("b_status"), updated_at=uow.now),
            changed,
        )


_STATUS_EVENTS = {
    "active": "subscription.activated",
    "canceled": "subscription.canceled",
    "paused": "subscription.paused",
}


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
