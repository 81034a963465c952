"""Alembic environment: runs on the connection handed over by `rar_pipeline.warehouse.engine`."""

from alembic import context

from rar_pipeline.warehouse.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `rar-pipeline db upgrade`, which supplies the connection")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
