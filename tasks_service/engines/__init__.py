"""The databases a store can live in: SQLite (one file) and PostgreSQL (many hosts)."""

from __future__ import annotations

from store import Store
from tasks_service.config import Settings


def is_postgres_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


async def open_store(settings: Settings) -> Store:
    """The store that TASKS_DB names (a file path, or a postgresql:// URL), opened and migrated.

    Engines are imported here, when chosen: asyncpg is loaded only by those who use it.
    """
    store: Store
    if is_postgres_url(settings.db):
        from tasks_service.engines.postgres import PostgresStore

        store = PostgresStore(settings.db)
    else:
        from tasks_service.engines.sqlite import SqliteStore

        store = SqliteStore(settings.db, synchronous=settings.sqlite_synchronous)
    await store.open()
    return store
