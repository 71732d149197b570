"""Engines for the two supported databases, and schema migration on first use."""

from __future__ import annotations

import select
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, exc, inspect

from remit.adapters import fastjson

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_URL = "sqlite:///remit.db"


SQLITE_CACHE_KIB = 64 * 1024


def make_engine(url: str = DEFAULT_URL, **kwargs: Any) -> Engine:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    kwargs.setdefault("json_serializer", fastjson.dumps_strict)  # JSON columns: invoice lines, events, audit
    if url.startswith("sqlite"):
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    # Connections are kept, not opened and closed under load (a new one costs PostgreSQL a process, and has none of
    # the prepared statements psycopg makes of repeated queries): up to 20 per process, more than `remit serve`
    # uses (entrypoints/api/threads.py: THREADS), and 10 more for a burst.
    kwargs.setdefault("pool_size", 20)
    # JIT compilation off for Remit's sessions: its statements are short, or batches of index lookups, for which
    # compiling costs far more than it saves; and the planner decides on JIT from cost estimates, which for a
    # bill-run batch's subscriptions (two correlated lookups per subscription) crossed the thresholds and spent
    # 250 ms compiling a statement that runs in 35 ms. Prepared statements do not keep the compiled code either.
    connect_args = kwargs.setdefault("connect_args", {})
    connect_args["options"] = " ".join(filter(None, (connect_args.get("options"), "-c jit=off")))
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_recycle", 3600)
    pre_ping = kwargs.pop("pool_pre_ping", None)
    engine = create_engine(url, pool_pre_ping=bool(pre_ping), **kwargs)
    if pre_ping is None:
        _check_on_checkout(engine)
    return engine


def _check_on_checkout(engine: Engine) -> None:
    """A stale connection (the server restarted, or closed it) is replaced before use, like ``pool_pre_ping``
    but without its round trip on every checkout: an idle connection whose socket has something to read has
    been told something by the server (usually that it is going away), and only then is it pinged."""

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
            raise exc.DisconnectionError()
        pgconn = getattr(dbapi_connection, "pgconn", None)
        if pgconn is None:
            return
        poller = select.poll()
        try:
            poller.register(pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
        except Exception:  # the connection is already closed
            raise exc.DisconnectionError() from None
        if poller.poll(0) and not engine.dialect._do_ping_w_event(dbapi_connection):
            raise exc.DisconnectionError()


def _configure_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE: a write transaction takes the write lock when it starts, so two
    writers queue instead of failing half-way (SQLite's answer to one writer per account)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # A 64 MiB page cache per connection instead of SQLite's 2 MiB: past a few hundred thousand invoices the
        # indexes outgrow 2 MiB, and every insert then reads pages back from the file (measured: the bill run's
        # CPU per subscription grew 1.5x from 100k to 1M subscriptions with the default).
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config  # imported when migrating: Alembic (with Mako and Pygments) is a quarter of
    # the time a process takes to import what billing needs, and bill-run workers and most commands never migrate

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest revision."""
    from alembic import command

    command.upgrade(alembic_config(engine), "head")


def needs_migration(engine: Engine) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return True
        return MigrationContext.configure(conn).get_current_revision() != head


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Schema comparison ignores the monthly partitions of usage_events: they are created by migrations and
    operators, not declared one by one in the tables."""
    table = obj.table.name if type_ in ("index", "column", "unique_constraint", "foreign_key_constraint") else name
    return not (isinstance(table, str) and table.startswith("usage_events_"))


def include_object_for(dialect: str) -> Any:
    """``include_object`` that also leaves out declared indexes meant for another database (``ddl_if``)."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "index" and not reflected:
            ddl_if = getattr(obj, "_ddl_if", None)
            if ddl_if is not None and ddl_if.dialect is not None and ddl_if.dialect != dialect:
                return False
        return include_object(obj, name, type_, reflected, compare_to)

    return include
