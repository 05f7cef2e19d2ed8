"""Alembic environment: migrations run on the connection the runtime hands in."""

from alembic import context

from outlast.runtime.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through outlast.runtime.store.db.Database.migrate()")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
