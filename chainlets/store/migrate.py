"""Schema migrations: alembic revisions shipped in this package, applied on start."""

import asyncio
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from chainlets.errors import ConfigurationError
from chainlets.store.dialect import WRITE, create_sync_engine, database_url, sync_url

__all__ = ["MIGRATIONS", "current_revision", "head_revision", "upgrade", "upgrade_async"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _sync(url: str | URL | None) -> URL:
    return sync_url(url if isinstance(url, URL) else database_url(url))


def upgrade(url: str | URL | None = None, revision: str = "head") -> None:
    """Bring the database at `url` (as `CHAINRUNNER_DATABASE_URL` takes it) to `revision`,
    in one transaction; a database already there is left alone."""
    engine = create_sync_engine(_sync(url), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            config = _config()
            config.attributes["connection"] = connection.execution_options(**{WRITE: True})
            command.upgrade(config, revision)
            connection.commit()
    finally:
        engine.dispose()


async def upgrade_async(url: str | URL | None = None) -> None:
    """`upgrade` from async code (alembic is synchronous; it runs in a worker thread)."""
    await asyncio.to_thread(upgrade, url)


def current_revision(url: str | URL | None = None) -> str | None:
    """The revision the database is at (None: never migrated)."""
    engine = create_sync_engine(_sync(url), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships its revisions
        raise ConfigurationError(f"no migrations under {MIGRATIONS}")
    return head
