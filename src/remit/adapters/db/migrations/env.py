"""Alembic environment: runs on the engine Remit hands it (see remit.adapters.db.engine.migrate)."""

from alembic import context

from remit.adapters.db.engine import include_object_for
from remit.adapters.db.tables import metadata

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        include_object=include_object_for(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
