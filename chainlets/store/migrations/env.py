"""Alembic's entry point for the store's migrations: run on the connection `migrate` opened."""

import sqlalchemy as sa
from alembic import context

from chainlets.errors import ConfigurationError

# Taken for the migration's transaction on PostgreSQL, so replicas starting together apply
# each migration once (on SQLite, `BEGIN IMMEDIATE` serializes them).
_ADVISORY_LOCK = 0x636861696E72756E  # "chainrun"

if context.is_offline_mode():
    raise ConfigurationError("the store's migrations run against a database; "
                           "offline (--sql) mode is not supported")

connection: sa.Connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                           {"key": _ADVISORY_LOCK})
    context.run_migrations()
