"""`chainrunner db`: migrate the store's database and prune finished invocations.

Exit codes: 0 done, 1 the database could not be reached or refused the work, 2 a bad URL or
setting (nothing was changed).
"""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click

from chainlets.errors import ChainrunnerError

# Light at import: `chainrunner --help` lists this group, so the store (SQLAlchemy, pydantic)
# is imported by the commands that use it (tests/test_startup.py).
if TYPE_CHECKING:
    from chainlets.store import PurgeCounts, StoreSettings

__all__ = ["db"]

DATABASE_URL_ENV = "CHAINRUNNER_DATABASE_URL"  # chainlets.store.settings' names
RETENTION_ENV = "CHAINRUNNER_RETENTION_DAYS"

_URL_HELP = (f"Database URL (default: ${DATABASE_URL_ENV}, else .chainrunner/chainrunner.db "
             "under the working directory): sqlite:///relative.db, sqlite:////abs/path.db, "
             "postgresql://user@host/db.")


@contextmanager
def _errors() -> Iterator[None]:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except ChainrunnerError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(2) from exc
    except (SQLAlchemyError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        click.echo(f"error: the database refused or could not be reached: {reason}", err=True)
        raise click.exceptions.Exit(1) from exc


def _settings(url: str | None) -> "StoreSettings":
    from chainlets.store import StoreSettings

    settings = StoreSettings.from_env()
    return StoreSettings(url=url or settings.url, limits=settings.limits,
                         retention_s=settings.retention_s, lease_s=settings.lease_s)


def _shown(url: str | None) -> str:
    from chainlets.store.dialect import database_url

    return database_url(url).render_as_string(hide_password=True)


@click.group()
def db() -> None:
    """The store's database: schema migrations and retention."""


@db.command("upgrade")
@click.option("--url", help=_URL_HELP)
def upgrade_command(url: str | None) -> None:
    """Apply every migration the database lacks (the service also does this on start)."""
    from chainlets.store.migrate import current_revision, head_revision, upgrade

    with _errors():
        settings = _settings(url)
        before = current_revision(settings.url)
        upgrade(settings.url)
        head = head_revision()
        change = "already at" if before == head else f"upgraded from {before or 'empty'} to"
        click.echo(f"{_shown(settings.url)}: {change} revision {head} (head)")


async def _prune(settings: "StoreSettings", before: datetime) -> "PurgeCounts":
    from chainlets.store import open_store

    store = await open_store(settings)
    try:
        return await store.purge(before)
    finally:
        await store.close()


@db.command("prune")
@click.option("--url", help=_URL_HELP)
@click.option("--older-than-days", type=click.FloatRange(min=0), default=None,
              help=f"Delete invocations finished longer ago than this (default: "
                   f"${RETENTION_ENV}, else 7), with their steps and events.")
def prune_command(url: str | None, older_than_days: float | None) -> None:
    """Delete finished invocations past the retention age, and unused deleted chains."""
    with _errors():
        settings = _settings(url)
        age = timedelta(days=older_than_days) if older_than_days is not None \
            else timedelta(seconds=settings.retention_s)
        counts = asyncio.run(_prune(settings, datetime.now(UTC) - age))
        click.echo(f"{_shown(settings.url)}: pruned {counts.invocations} invocations "
                   f"({counts.steps} steps, {counts.events} events) finished over {age} ago, "
                   f"and {counts.chains} deleted chains")
