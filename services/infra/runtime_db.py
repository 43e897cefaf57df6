"""Where the system of record is: ``DATABASE_URL`` when set, else the embedded PostgreSQL under data_dir."""

from __future__ import annotations

import asyncpg

from services.infra.db import create_pool, migrate
from services.infra.embedded import EmbeddedPostgres
from services.infra.settings import Settings

_embedded: EmbeddedPostgres | None = None


def database_dsn(settings: Settings) -> str:
    """The DSN to use, starting the embedded server (kept under data_dir/pg) when none is configured."""
    global _embedded
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    if _embedded is None:
        _embedded = EmbeddedPostgres(settings.data_dir.resolve() / "pg").start()
    return _embedded.dsn


async def open_pool(settings: Settings, *, max_size: int | None = None) -> asyncpg.Pool:
    pool = await create_pool(database_dsn(settings), max_size=max_size or settings.db_pool_max)
    await migrate(pool)
    return pool
