"""The Weaviate VectorIndex against a real Weaviate server (QUERYLIFT_WEAVIATE_URL=http://host:8080)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest

from services.core.examples.index_weaviate import WeaviateIndex, connection_params, tenant_name

WEAVIATE_URL = os.environ.get("QUERYLIFT_WEAVIATE_URL")
needs_weaviate = pytest.mark.skipif(
    not WEAVIATE_URL, reason="QUERYLIFT_WEAVIATE_URL is not set: no Weaviate server to test against"
)


def test_tenant_names_are_valid_and_distinct() -> None:
    assert tenant_name("shop_1-eu") == "shop_1-eu"
    dotted = tenant_name("acme.prod")
    assert dotted != tenant_name("acme_prod") and dotted.startswith("acme_prod-")
    long = tenant_name("p" * 128)
    assert len(long) <= 64 and long != tenant_name("p" * 127)


def test_connection_params() -> None:
    assert connection_params("http://weaviate:8080") == {
        "http_host": "weaviate",
        "http_port": 8080,
        "http_secure": False,
        "grpc_host": "weaviate",
        "grpc_port": 50051,
        "grpc_secure": False,
    }
    secure = connection_params("https://vectors.example.com?grpc_port=443")
    assert secure["http_port"] == 443 and secure["grpc_port"] == 443 and secure["http_secure"] is True


@pytest.fixture
async def index() -> AsyncIterator[WeaviateIndex]:
    assert WEAVIATE_URL
    # A collection of its own per run, so tests never see leftovers and never touch real data.
    idx = WeaviateIndex(WEAVIATE_URL, collection=f"QueryliftTest{uuid.uuid4().hex[:8]}")
    yield idx
    client = await idx._connected()
    await client.collections.delete(idx.collection_name)
    await idx.close()


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=384).astype(np.float32)
    return v / np.linalg.norm(v)


@needs_weaviate
async def test_upsert_search_delete_and_tenant_isolation(index: WeaviateIndex) -> None:
    rng = np.random.default_rng(11)
    a_items = [(uuid.uuid4(), _unit(rng)) for _ in range(5)]
    b_items = [(uuid.uuid4(), _unit(rng)) for _ in range(3)]
    await index.upsert("project.a", a_items)
    await index.upsert("project-b", b_items)

    target_id, target = a_items[2]
    hits = await index.search("project.a", target, 3)
    assert hits[0][0] == target_id and hits[0][1] == pytest.approx(1.0, abs=1e-4)
    assert {h[0] for h in await index.search("project.a", target, 10)} == {i for i, _ in a_items}
    # Identical vector, other project: only B's own examples.
    assert {h[0] for h in await index.search("project-b", target, 10)} == {i for i, _ in b_items}
    assert await index.search("project-without-tenant", target, 10) == []

    # Upsert replaces the vector of an existing id.
    await index.upsert("project.a", [(target_id, -target)])
    assert (await index.search("project.a", target, 5))[0][0] != target_id

    await index.delete("project.a", [target_id])
    assert target_id not in {h[0] for h in await index.search("project.a", target, 10)}
    await index.delete("project-without-tenant", [target_id])  # nothing to delete is not an error
