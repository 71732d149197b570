"""Monthly partitions of ``usage_events`` on PostgreSQL, kept a year ahead.

The migration created one partition per month of 2025-2030 and a default partition for any other time. Events
dated in a month without a partition land in the default one, where aggregation can no longer skip the months it
does not need. So the months to come are created ahead of time: by `remit worker` (on start and then daily), by
`remit migrate`, and on demand with `remit db partitions`. A month is created only when missing; if the default
partition already holds events of that month (the maintenance did not run for a year, or events were imported for
a month before its partition existed), they are moved into the new partition in the same transaction, so nothing
is lost and no event is counted twice. Months of the past that have no partition (the migration's start in 2025
and earlier: history imported from a legacy system) are made too, when the default partition holds events of
them, so that their events also sit in a partition of their month. SQLite has no partitions: nothing to do there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from remit.domain.errors import Conflict

MONTHS_AHEAD = 12
MAX_MONTHS = 240  # months made in one call at the most
LOCK_TIMEOUT_MS = 2000
LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a lock_timeout that ran out
PARENT = "usage_events"
DEFAULT = "usage_events_default"


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @property
    def name(self) -> str:
        return f"{PARENT}_{self.year}_{self.month:02d}"

    @property
    def start(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def end(self) -> date:
        return date(self.year + (self.month == 12), self.month % 12 + 1, 1)

    def plus(self, months: int) -> Month:
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)


def months_from(today: date, months_ahead: int = MONTHS_AHEAD) -> list[Month]:
    """This month and the ``months_ahead`` that follow it."""
    first = Month(today.year, today.month)
    return [first.plus(i) for i in range(months_ahead + 1)]


_PARTITIONS = text(
    "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :parent"
)
_RANGE = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


def _bounds(conn: Connection) -> dict[str, tuple[datetime, datetime]]:
    """Each range partition's bounds, as instants (read in UTC: the text PostgreSQL gives depends on the session's
    time zone, and the migration's partitions were made in whatever zone the server had)."""
    conn.execute(text("SET LOCAL TimeZone = 'UTC'"))
    out: dict[str, tuple[datetime, datetime]] = {}
    for name, bound in conn.execute(_PARTITIONS, {"parent": PARENT}):
        found = _RANGE.search(bound or "")
        if found:
            try:
                out[name] = (datetime.fromisoformat(found[1]), datetime.fromisoformat(found[2]))
            except ValueError:  # 'infinity', made by hand: not a month of ours, and no neighbour to fit
                continue
    return out


@dataclass(frozen=True)
class Created:
    name: str
    start: date
    end: date
    moved: int  # events moved in from the default partition


def _utc_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


_WAITING = text(
    f"SELECT DISTINCT EXTRACT(YEAR FROM occurred_at AT TIME ZONE 'UTC')::int, "
    f"EXTRACT(MONTH FROM occurred_at AT TIME ZONE 'UTC')::int FROM {DEFAULT}"
)


def _waiting(conn: Connection) -> list[Month]:
    """The months (in UTC) of the events in the default partition: none on a well-kept database, so the scan is
    of an empty table; after a backfill of history, the months to make."""
    return sorted(Month(year, month) for year, month in conn.execute(_WAITING))


def months_wanted(today: date, months_ahead: int, newest: Month | None) -> list[Month]:
    """This month and the ``months_ahead`` after it; and, if the newest partition ends before this month (the
    upkeep did not run for a while), the months in between, whose events wait in the default partition."""
    first = Month(today.year, today.month)
    if newest is not None and (newest.year, newest.month) < (first.year, first.month):
        first = newest.plus(1)
    last = Month(today.year, today.month).plus(months_ahead)
    out: list[Month] = []
    month = first
    while (month.year, month.month) <= (last.year, last.month) and len(out) < MAX_MONTHS:
        out.append(month)
        month = month.plus(1)
    return out


class PartitionsBusy(Conflict):
    """usage_events (or its default partition) stayed in use longer than ``LOCK_TIMEOUT_MS``: try again later.
    ``created``: the months made before."""

    def __init__(self, month: str | None, created: list[Created]) -> None:
        what = f"{month} could not be created" if month else f"The months of {DEFAULT} could not be read"
        super().__init__(
            "partitions_busy",
            f"{what} now: usage_events was in use"
            + (f" ({len(created)} month(s) made before it)" if created else "")
            + ". The worker tries again every 5 minutes; or run `remit db partitions` later.",
        )
        self.created = created


def ensure_usage_partitions(engine: Engine, today: date, months_ahead: int = MONTHS_AHEAD) -> list[Created]:
    """Create the missing monthly partitions (see ``months_wanted``), each in a transaction of its own; what was
    created. Nothing on SQLite. Raises ``PartitionsBusy`` (having made the months before) when a lock waits too
    long."""
    if engine.dialect.name != "postgresql":
        return []
    try:
        with engine.begin() as conn:
            _limit_waits(conn)
            bounds = _bounds(conn)
            waiting = _waiting(conn)
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        raise PartitionsBusy(None, []) from None
    monthly = sorted(m for name in bounds if (m := _month_of(name)) is not None)
    ahead = months_wanted(today, months_ahead, monthly[-1] if monthly else None)
    wanted = ahead + [m for m in waiting if m not in set(ahead)]  # the months to come first
    created: list[Created] = []
    for month in wanted[:MAX_MONTHS]:
        if month.name in bounds:
            continue
        with engine.begin() as conn:
            # One maintainer at a time (two workers starting together): the second finds the month made.
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('remit.usage_partitions'))"))
            _limit_waits(conn)
            try:
                current = _bounds(conn)
                if month.name in current:
                    continue
                made = _create(conn, month, current)
            except OperationalError as exc:
                if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                    raise
                raise PartitionsBusy(month.name, created) from None
            if made is not None:
                created.append(made)
    return created


def _limit_waits(conn: Connection) -> None:
    """Waiting for a lock on usage_events or a partition makes its readers and writers wait behind: give up soon,
    and try again later."""
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'"))


def _month_of(name: str) -> Month | None:
    found = re.fullmatch(rf"{PARENT}_(\d{{4}})_(\d{{2}})", name)
    return Month(int(found[1]), int(found[2])) if found else None


def _create(conn: Connection, month: Month, current: dict[str, tuple[datetime, datetime]]) -> Created | None:
    """The month's partition, from where its neighbours end and begin (so that it neither overlaps them nor leaves
    a gap, whatever zone they were made in), else from its first to its last UTC midnight. The default partition
    is locked first, so no event of the month can land there meanwhile; its events of the month are moved in; the
    table is then attached, which takes only a light lock on usage_events (ingestion into other months goes on)."""
    lower, upper = _utc_midnight(month.start), _utc_midnight(month.end)
    before, after = current.get(month.plus(-1).name), current.get(month.plus(1).name)
    if before is not None:
        lower = before[1]
    if after is not None:
        upper = after[0]
    if lower >= upper:
        return None
    conn.execute(text(f"LOCK TABLE {DEFAULT} IN ACCESS EXCLUSIVE MODE"))
    conn.execute(text(f"CREATE TABLE {month.name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
    moved = conn.execute(
        text(
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE occurred_at >= :lower AND occurred_at < :upper RETURNING *) "
            f"INSERT INTO {month.name} SELECT * FROM moved"
        ),
        {"lower": lower, "upper": upper},
    ).rowcount
    values = f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
    conn.execute(text(f"ALTER TABLE {PARENT} ATTACH PARTITION {month.name} {values}"))
    return Created(month.name, month.start, month.end, int(moved))
