"""VectorIndex over the ``examples`` table's ``embedding`` column (HNSW, cosine)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
import numpy as np

from services.core.examples.index import vector_literal
from services.core.examples.store import StoredExample

_SEARCH = """
SELECT id, 1 - (embedding <=> $2::vector) AS similarity, question, sql, sql_skeleton, quality
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
        # Complete results rely on iterative HNSW scans, set for every session of the pool
        # (services.infra.db.SESSION_SETTINGS).
        return [
            (example.id, similarity)
            for example, similarity in await self.search_examples(project_id, vector, k)
        ]

    async def search_examples(
        self, project_id: str, vector: np.ndarray, k: int
    ) -> list[tuple[StoredExample, float]]:
        """``search`` with the examples themselves: the index is the examples table, so the rows found are
        already the project's usable examples and need no second read."""
        if k <= 0:
            return []
        rows = await self.pool.fetch(_SEARCH, project_id, vector_literal(vector), k)
        return [
            (
                StoredExample(
                    row["id"], row["question"], row["sql"], row["sql_skeleton"] or "", float(row["quality"])
                ),
                float(row["similarity"]),
            )
            for row in rows
        ]

    async def delete(self, project_id: str, ids: Sequence[uuid.UUID]) -> None:
        # The row keeps its flags; the embedding is dropped so the example cannot surface even if a
        # filter were ever forgotten. The repository re-embeds when an example becomes usable again.
        if ids:
            await self.pool.execute(
                "UPDATE examples SET embedding = NULL WHERE project_id = $1 AND id = ANY($2::uuid[])",
                project_id,
                list(ids),
            )
