"""Alembic environment: the connection is handed in by smtpauth_milter.store.engine."""

from alembic import context

from smtpauth_milter.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `smtpauth-milter db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
