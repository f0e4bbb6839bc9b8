"""Open the configured store: migrate the database to the newest schema, then connect."""

from chainlets.store.dialect import database_url
from chainlets.store.migrate import upgrade_async
from chainlets.store.rows import Clock, IdFactory, new_id, system_clock
from chainlets.store.settings import StoreSettings
from chainlets.store.sql import SqlStore

__all__ = ["open_store"]


async def open_store(settings: StoreSettings | None = None, *, migrate: bool = True,
                     clock: Clock = system_clock, ids: IdFactory = new_id) -> SqlStore:
    """The store at `settings.url` (default: the environment's `CHAINRUNNER_DATABASE_URL`,
    else `.chainrunner/chainrunner.db` under the working directory), migrated first."""
    settings = settings or StoreSettings.from_env()
    url = database_url(settings.url)
    if migrate:
        await upgrade_async(url)
    return SqlStore(url, sync=settings.sync, limits=settings.limits, lease_s=settings.lease_s,
                    clock=clock, ids=ids)
