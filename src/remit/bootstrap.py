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

    def uow(self, read_only: bool = False) -> UnitOfWork:
        return UnitOfWork(self.engine, self.clock, read_only)


def bootstrap(settings: Settings | None = None, clock: Clock | None = None, auto_migrate: bool = True) -> Remit:
    settings = settings or Settings()
    engine = make_engine(settings.database_url)
    if auto_migrate and needs_migration(engine):
        migrate(engine)
    return Remit(engine, clock or SystemClock())
