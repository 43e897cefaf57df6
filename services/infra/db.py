"""The system of record: an asyncpg pool with migrations applied at start."""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

_MIGRATIONS_LOCK = 740_531_001  # pg_advisory_lock key: consumers starting together migrate once


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """What a connection needs before going back to the pool: no open transaction.

    asyncpg's default reset runs a query on every release (unlisten, reset all, unlock all). The system of
    record's sessions keep no such state: no LISTEN, session settings only from the startup packet (which
    RESET ALL would keep anyway), and the one session lock (migrations) is released explicitly. Skipping it
    saves a round trip per database call.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


#: Vector search settings for every session: HNSW is approximate and filters *after* the graph walk, so with
#: many projects in one table a project's few examples would be missed; iterative scans (pgvector >= 0.8)
#: keep walking until enough rows pass the project/usability filter. Set per session so a search is one
#: round trip instead of a transaction with two SET LOCALs.
SESSION_SETTINGS = {"hnsw.iterative_scan": "strict_order", "hnsw.ef_search": "100"}


async def create_pool(dsn: str, *, max_size: int = 10, min_size: int = 1) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_reset_connection,
        server_settings=SESSION_SETTINGS,
    )
    assert pool is not None
    return pool


def _migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("services.infra").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text()))
    return sorted(found)


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the numbered SQL files not applied yet; returns the names applied now."""
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATIONS_LOCK)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " number integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["number"] for r in await conn.fetch("SELECT number FROM schema_migrations")}
            for number, name, sql in _migration_files():
                if number in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (number, name) VALUES ($1, $2)", number, name
                    )
                applied_now.append(name)
                log.info("migration applied", extra={"migration": name})
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATIONS_LOCK)
    return applied_now


def record(row: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None
