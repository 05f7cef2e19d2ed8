"""The Alembic migrations build exactly the schema the code declares, on SQLite and PostgreSQL."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from outlast.runtime.store.db import Database
from outlast.runtime.store.schema import metadata


def test_migrations_match_the_declared_schema(tmp_path, store):
    db = Database(store or f"sqlite:///{tmp_path / 'm.db'}")
    db.migrate()
    db.migrate()  # idempotent
    with db.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    db.dispose()
