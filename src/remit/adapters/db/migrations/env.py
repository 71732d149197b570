"""Alembic environment: runs on the engine Remit hands it (see remit.adapters.db.engine.migrate)."""

from alembic import context
from sqlalchemy import Connection

from remit.adapters.db.engine import include_object_for
from remit.adapters.db.tables import metadata


def _sqlite_foreign_keys(connection: Connection, on: bool) -> None:
    # SQLite changes a table's constraints by rebuilding it (copy, drop, rename), and dropping a table that other
    # tables' foreign keys point at fails while they are checked; the setting only takes effect outside a
    # transaction, hence on the driver's connection before anything begins. SQLite's own recipe for it; a rebuild
    # copies every row as it is, so the references stay whole.
    connection.connection.driver_connection.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")  # type: ignore[union-attr]


engine = context.config.attributes["engine"]
with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        _sqlite_foreign_keys(connection, False)
    try:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=True,
            include_object=include_object_for(connection.dialect.name),
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if sqlite:
            connection.rollback()
            _sqlite_foreign_keys(connection, True)
