"""VectorIndex over the ``examples`` table's ``embedding`` column (HNSW, cosine)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
import numpy as np

from services.retrieval.index import vector_literal

# HNSW is approximate and filters *after* the graph walk: with many projects in one table a project's
# few examples would be missed. Iterative scans (pgvector >= 0.8) keep walking until enough rows pass the
# project/usability filter, so results stay complete while the index still does the work.
_SEARCH_SETTINGS = (
    "SET LOCAL hnsw.iterative_scan = strict_order",
    "SET LOCAL hnsw.ef_search = 100",
)

_SEARCH = """
SELECT id, 1 - (embedding <=> $2::vector) AS similarity
FROM examples
WHERE project_id = $1 AND verified AND NOT stale AND NOT rated_down AND embedding IS NOT NULL
ORDER BY embedding <=> $2::vector
LIMIT $3
"""


class PgVectorIndex:
    """The system of record is the index: ``upsert`` writes the embedding column, ``delete`` clears it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def upsert(self, project_id: str, items: Sequence[tuple[uuid.UUID, np.ndarray]]) -> None:
        if not items:
            return
        await self.pool.executemany(
            "UPDATE examples SET embedding = $3::vector WHERE project_id = $1 AND id = $2",
            [(project_id, example_id, vector_literal(vector)) for example_id, vector in items],
        )

    async def search(self, project_id: str, vector: np.ndarray, k: int) -> list[tuple[uuid.UUID, float]]:
        if k <= 0:
            return []
        async with self.pool.acquire() as conn, conn.transaction():
            for statement in _SEARCH_SETTINGS:
                await conn.execute(statement)
            rows = await conn.fetch(_SEARCH, project_id, vector_literal(vector), k)
        return [(row["id"], float(row["similarity"])) for row in rows]

    async def delete(self, project_id: str, ids: Sequence[uuid.UUID]) -> None:
        # The row keeps its flags; the embedding is dropped so the example cannot surface even if a
        # filter were ever forgotten. The repository re-embeds when an example becomes usable again.
        if ids:
            await self.pool.execute(
                "UPDATE examples SET embedding = NULL WHERE project_id = $1 AND id = ANY($2::uuid[])",
                project_id,
                list(ids),
            )
