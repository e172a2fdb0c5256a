"""Alembic environment: always run programmatically with a connection from storage.migrate."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the CLI entry points always pass one
    raise RuntimeError("run migrations with 'apikeys db upgrade' (storage.migrate.upgrade)")

applied = context.config.attributes.get("on_version_apply")  # a progress callback (apikeys db upgrade)
context.configure(connection=connection, target_metadata=None, transactional_ddl=True,
                  render_as_batch=connection.dialect.name == "sqlite", **({"on_version_apply": applied} if applied else {}))
with context.begin_transaction():
    context.run_migrations()
