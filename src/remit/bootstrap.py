"""Builds Remit from one settings object: the database, the clock, the unit-of-work factory."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sqlalchemy import Engine

from remit.adapters.db.engine import DEFAULT_URL, make_engine, migrate, needs_migration
from remit.domain.clock import Clock, SystemClock
from remit.service_layer.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default_factory=lambda: os.environ.get("REMIT_DATABASE_URL", DEFAULT_URL))


@dataclass
class Remit:
    engine: Engine
    clock: Clock
    # PostgreSQL: a pool of connections that stay in autocommit mode, for read-only units of work. Switching a
    # pooled connection to autocommit and back on every read cost about 10% of a `GET /v1/customers/{id}`.
    readers: Engine | None = None

    def uow(self, read_only: bool = False) -> UnitOfWork:
        if read_only and self.readers is not None:
            return UnitOfWork(self.readers, self.clock, read_only=True, autocommits=True)
        return UnitOfWork(self.engine, self.clock, read_only)

    def dispose(self) -> None:
        self.engine.dispose()
        if self.readers is not None:
            self.readers.dispose()


def bootstrap(settings: Settings | None = None, clock: Clock | None = None, auto_migrate: bool = True) -> Remit:
    settings = settings or Settings()
    engine = make_engine(settings.database_url)
    if auto_migrate and needs_migration(engine):
        migrate(engine)
    return Remit(engine, clock or SystemClock(), read_engine(engine))


def read_engine(engine: Engine) -> Engine | None:
    """For ``Remit.readers``: on PostgreSQL, an engine on the same database whose connections stay in autocommit
    mode (a pool of its own: up to 8 connections per process, 8 more for a burst). None on SQLite."""
    if engine.dialect.name != "postgresql":
        return None
    url = engine.url.render_as_string(hide_password=False)
    return make_engine(url, isolation_level="AUTOCOMMIT", pool_size=8, max_overflow=8)
