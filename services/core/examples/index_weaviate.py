"""VectorIndex on Weaviate: one multi-tenant collection, one tenant per project.

Tenants give hard isolation (each is its own shard, a query names exactly one), so a project can never
see another's examples. Vectors are ours (self-provided, no vectorizer); each object's uuid *is* the
example id, and ``example_id`` is also kept as a property for inspection.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

COLLECTION = "QueryliftExample"
_DEFAULT_GRPC_PORT = 50051
_TENANT_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def tenant_name(project_id: str) -> str:
    """Weaviate tenant names allow ``[A-Za-z0-9_-]{1,64}``; project ids may also contain '.' and be longer."""
    if _TENANT_OK.match(project_id):
        return project_id
    digest = hashlib.sha256(project_id.encode()).hexdigest()[:12]
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", project_id)[:50]
    return f"{cleaned}-{digest}"


def connection_params(url: str) -> dict[str, Any]:
    """``http(s)://host:port[?grpc_port=N]`` → arguments of ``use_async_with_custom``."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    secure = parsed.scheme == "https"
    host = parsed.hostname or "localhost"
    grpc_port = int(parse_qs(parsed.query).get("grpc_port", [_DEFAULT_GRPC_PORT])[0])
    return {
        "http_host": host,
        "http_port": parsed.port or (443 if secure else 8080),
        "http_secure": secure,
        "grpc_host": host,
        "grpc_port": grpc_port,
        "grpc_secure": secure,
    }


class WeaviateIndex:
    """Connects lazily on first use, so it can be built synchronously from settings."""

    def __init__(self, url: str | None = None, *, client: Any = None, collection: str = COLLECTION) -> None:
        if url is None and client is None:
            raise ValueError("WeaviateIndex needs a url or a connected client")
        self.url = url
        self.client = client
        self.collection_name = collection
        self._known_tenants: set[str] = set()
        self._collection_ready = False
        self._connect_lock = asyncio.Lock()

    async def _connected(self) -> Any:
        async with self._connect_lock:
            if self.client is None:
                import weaviate

                assert self.url is not None
                client = weaviate.use_async_with_custom(**connection_params(self.url))
                await client.connect()
                self.client = client
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
            self._known_tenants.clear()
            self._collection_ready = False

    async def ensure_collection(self) -> None:
        client = await self._connected()
        if self._collection_ready:
            return
        from weaviate.classes.config import Configure, DataType, Property, VectorDistances

        if not await client.collections.exists(self.collection_name):
            try:
                await client.collections.create(
                    self.collection_name,
                    multi_tenancy_config=Configure.multi_tenancy(enabled=True),
                    vector_config=Configure.Vectors.self_provided(
                        vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
                    ),
                    properties=[Property(name="example_id", data_type=DataType.TEXT)],
                )
            except Exception:
                # Another consumer created it between our check and create; anything else resurfaces here.
                if not await client.collections.exists(self.collection_name):
                    raise
        self._collection_ready = True

    async def _tenant(self, project_id: str, *, create: bool) -> Any | None:
        """The project's tenant-scoped collection; None when it has no tenant yet and ``create`` is False."""
        await self.ensure_collection()
        name = tenant_name(project_id)
        collection = self.client.collections.get(self.collection_name)
        if name not in self._known_tenants:
            if not await collection.tenants.exists(name):
                if not create:
                    return None
                try:
                    await collection.tenants.create(name)
                except Exception:
                    if not await collection.tenants.exists(name):
                        raise
            self._known_tenants.add(name)
        return collection.with_tenant(name)

    async def upsert(self, project_id: str, items: Sequence[tuple[uuid.UUID, np.ndarray]]) -> None:
        if not items:
            return
        from weaviate.classes.data import DataObject

        tenant = await self._tenant(project_id, create=True)
        assert tenant is not None
        objects = [
            DataObject(
                uuid=example_id,
                properties={"example_id": str(example_id)},
                vector=np.asarray(vector, dtype=np.float32).tolist(),
            )
            for example_id, vector in items
        ]
        # Batch insert overwrites an object with the same uuid, which is the upsert we want.
        result = await tenant.data.insert_many(objects)
        if result.has_errors:
            first = next(iter(result.errors.values()))
            raise RuntimeError(f"weaviate upsert failed for {len(result.errors)} objects: {first.message}")

    async def search(self, project_id: str, vector: np.ndarray, k: int) -> list[tuple[uuid.UUID, float]]:
        if k <= 0:
            return []
        from weaviate.classes.query import MetadataQuery

        tenant = await self._tenant(project_id, create=False)
        if tenant is None:
            return []
        response = await tenant.query.near_vector(
            near_vector=np.asarray(vector, dtype=np.float32).tolist(),
            limit=k,
            return_metadata=MetadataQuery(distance=True),
        )
        hits: list[tuple[uuid.UUID, float]] = []
        for obj in response.objects:
            distance = obj.metadata.distance if obj.metadata.distance is not None else 1.0
            # Weaviate's cosine distance is 1 - cosine similarity.
            hits.append((uuid.UUID(str(obj.uuid)), 1.0 - float(distance)))
        return hits

    async def delete(self, project_id: str, ids: Sequence[uuid.UUID]) -> None:
        if not ids:
            return
        from weaviate.classes.query import Filter

        tenant = await self._tenant(project_id, create=False)
        if tenant is None:
            return
        await tenant.data.delete_many(where=Filter.by_id().contains_any([str(i) for i in ids]))
