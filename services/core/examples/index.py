"""Where example embeddings are searched: one interface, a pgvector and a Weaviate implementation.

Every call names the project: an index never returns another project's examples, whatever the vector.
Only verified, non-stale, not rated-down examples are searchable; the examples repository removes an
example from the index (``delete``) when it stops being usable and ``upsert``s it when it is usable again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class VectorIndex(Protocol):
    async def upsert(self, project_id: str, items: Sequence[tuple[uuid.UUID, np.ndarray]]) -> None:
        """Store (or replace) the vectors of these examples of ``project_id``."""
        ...

    async def search(self, project_id: str, vector: np.ndarray, k: int) -> list[tuple[uuid.UUID, float]]:
        """Up to ``k`` usable examples of ``project_id``, most similar first, with cosine similarity."""
        ...

    async def delete(self, project_id: str, ids: Sequence[uuid.UUID]) -> None:
        """Make these examples unsearchable."""
        ...


def vector_literal(vector: np.ndarray | Sequence[float]) -> str:
    """pgvector's text form ``[x,y,...]``, so no client-side codec is needed."""
    return _literal_of(np.asarray(vector, dtype=np.float32).ravel().tobytes())


@lru_cache(maxsize=4096)
def _literal_of(raw: bytes) -> str:
    # Repeated questions search with the same vector; formatting 384 floats is the costly part. tolist()
    # yields Python floats in one C call; formatting each numpy scalar was a visible cost.
    return "[" + ",".join(map(repr, np.frombuffer(raw, dtype=np.float32).tolist())) + "]"


def parse_vector(text: str) -> np.ndarray:
    return np.asarray([float(x) for x in text.strip("[]").split(",") if x], dtype=np.float32)
