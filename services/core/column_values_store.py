"""The ``column_values`` table: each project's indexed column values (see ``services.core.values``).

Always read and written by project id, so no project ever sees another's values. A process keeps each
project's index in memory, keyed by when its values were collected, so a refresh is seen at once.
"""

from __future__ import annotations

import datetime as dt
import time

import asyncpg

from services.core.projects import mark_values_collected, values_collected_at
from services.core.values import ColumnValues, ValueIndex


async def replace_values(pool: asyncpg.Pool, project_id: str, columns: list[ColumnValues]) -> dt.datetime:
    """The project's values become ``columns``; returns the collection time recorded on the project."""
    rows = [(project_id, c.table, c.column, v, c.complete) for c in columns for v in c.values]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM column_values WHERE project_id = $1", project_id)
        if rows:
            await conn.copy_records_to_table(
                "column_values",
                records=rows,
                columns=["project_id", "table_name", "column_name", "value", "complete"],
            )
        return await mark_values_collected(conn, project_id)


class ValueIndexes:
    """Per-process cache of projects' value indexes."""

    def __init__(self, pool: asyncpg.Pool, max_projects: int = 64, ttl_s: float = 5.0) -> None:
        self.pool = pool
        self.max_projects = max_projects
        self.ttl_s = ttl_s
        self._indexes: dict[str, tuple[dt.datetime | None, ValueIndex]] = {}
        self._collected: dict[str, tuple[float, dt.datetime | None]] = {}

    async def current(self, project_id: str) -> ValueIndex | None:
        """The project's index, for a consumer that has no project row at hand; when its values were
        collected is read at most every ``ttl_s`` seconds."""
        now = time.monotonic()
        known = self._collected.get(project_id)
        if known is None or now - known[0] >= self.ttl_s:
            collected = await values_collected_at(self.pool, project_id)
            known = self._collected[project_id] = (now, collected)
        return await self.get(project_id, known[1])

    async def get(self, project_id: str, collected_at: dt.datetime | None) -> ValueIndex | None:
        """The project's index as of ``collected_at`` (from its project row); None when it has no values."""
        if collected_at is None:
            return None
        hit = self._indexes.get(project_id)
        if hit is not None and hit[0] == collected_at:
            return hit[1]
        rows = await self.pool.fetch(
            "SELECT table_name, column_name, value, complete FROM column_values WHERE project_id = $1 "
            "ORDER BY table_name, column_name",
            project_id,
        )
        index = ValueIndex.from_rows(
            (r["table_name"], r["column_name"], r["value"], r["complete"]) for r in rows
        )
        if len(self._indexes) >= self.max_projects:
            self._indexes.pop(next(iter(self._indexes)))
        self._indexes[project_id] = (collected_at, index)
        return index
