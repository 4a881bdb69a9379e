"""Alembic environment: always run with a connection handed in by
``SqlStore.migrate`` (the app's own engine and settings)."""

from alembic import context

from openopen8.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover
    raise RuntimeError("run migrations through openopen8 (SqlStore.migrate), not the alembic CLI")

context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
