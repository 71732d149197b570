"""Monthly partitions of ``usage_events`` on PostgreSQL, kept a year ahead.

The migration created one partition per month of 2025-2030 and a default partition for any other time. Events
dated in a month without a partition land in the default one, where aggregation can no longer skip the months it
does not need. So the months to come are created ahead of time: by `remit worker` (on start and then daily), by
`remit migrate`, and on demand with `remit db partitions`. A month is created only when missing; if the default
partition already holds events of that month (the maintenance did not run for a year, or events were imported for
a month before its partition existed), they are moved into the new partition in the same transaction, so nothing
is lost and no event is counted twice. SQLite has no partitions: nothing to do there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import Connection, Engine, text

MONTHS_AHEAD = 12
PARENT = "usage_events"
DEFAULT = "usage_events_default"


@dataclass(frozen=True)
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


def existing(conn: Connection) -> set[str]:
    """The names of usage_events' partitions."""
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :parent"
        ),
        {"parent": PARENT},
    )
    return {name for (name,) in rows}


@dataclass(frozen=True)
class Created:
    name: str
    start: date
    end: date
    moved: int  # events moved in from the default partition


def ensure_usage_partitions(engine: Engine, today: date, months_ahead: int = MONTHS_AHEAD) -> list[Created]:
    """Create the missing partitions of this month and the ``months_ahead`` after it, each in a transaction of its
    own; what was created. Nothing on SQLite."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        have = existing(conn)
    created: list[Created] = []
    for month in months_from(today, months_ahead):
        if month.name in have:
            continue
        with engine.begin() as conn:
            # One maintainer at a time (two workers starting together): the second finds the month made.
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('remit.usage_partitions'))"))
            conn.execute(text("SET LOCAL TimeZone = 'UTC'"))  # months in UTC, as the bounds below say
            if month.name in existing(conn):
                continue
            created.append(_create(conn, month))
    return created


def _create(conn: Connection, month: Month) -> Created:
    bounds = {"start": month.start, "end": month.end}
    waiting = conn.execute(
        text(f"SELECT count(*) FROM {DEFAULT} WHERE occurred_at >= :start AND occurred_at < :end"), bounds
    ).scalar_one()
    values = f"FOR VALUES FROM ('{month.start.isoformat()} 00:00:00+00') TO ('{month.end.isoformat()} 00:00:00+00')"
    if not waiting:
        conn.execute(text(f"CREATE TABLE {month.name} PARTITION OF {PARENT} {values}"))
        return Created(month.name, month.start, month.end, 0)
    # The default partition holds events of this month: a partition for it cannot be created beside them. Make
    # the table, move the events into it, then attach it (PostgreSQL builds its indexes and checks its rows).
    conn.execute(text(f"CREATE TABLE {month.name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
    moved = conn.execute(
        text(
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE occurred_at >= :start AND occurred_at < :end RETURNING *) "
            f"INSERT INTO {month.name} SELECT * FROM moved"
        ),
        bounds,
    ).rowcount
    conn.execute(text(f"ALTER TABLE {PARENT} ATTACH PARTITION {month.name} {values}"))
    return Created(month.name, month.start, month.end, int(moved))
