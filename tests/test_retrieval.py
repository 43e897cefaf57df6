"""Retrieval on the real embedded PostgreSQL + pgvector with the real sentence model (all-MiniLM-L6-v2)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import numpy as np
import pytest

from events import ContextReady, QueryResolved
from services.core.examples.embedder import Embedder, get_embedder
from services.core.examples.index import vector_literal
from services.core.examples.index_pgvector import PgVectorIndex
from services.core.examples.masking import retrieval_text, sql_skeleton
from services.core.examples.selection import Candidate, select_examples, select_from_candidates
from services.core.examples.store import (
    add_verified_example,
    apply_correction,
    count_verified_since,
    is_valid_for,
    mark_rated_down,
    mark_stale_for_schema,
    names_for,
    reembed_all,
)
from services.core.schema import Column, SchemaInfo, Table
from services.retrieval.handler import RetrievalHandler

SCHEMA = SchemaInfo(
    dialect="sqlite",
    tables=[
        Table(
            "customers",
            [
                Column("id", "INTEGER", primary_key=True),
                Column("name", "TEXT"),
                Column("city", "TEXT", samples=["Paris", "Berlin", "Lisbon"]),
            ],
        ),
        Table(
            "orders",
            [
                Column("id", "INTEGER", primary_key=True),
                Column("customer_id", "INTEGER"),
                Column("order_date", "TEXT"),
                Column("status", "TEXT", samples=["shipped", "cancelled"]),
                Column("total", "REAL"),
            ],
        ),
        Table(
            "products",
            [Column("id", "INTEGER", primary_key=True), Column("name", "TEXT"), Column("price", "REAL")],
        ),
    ],
)

# Without the products table: examples that read it must become stale.
SCHEMA_NO_PRODUCTS = SchemaInfo(dialect="sqlite", tables=[t for t in SCHEMA.tables if t.name != "products"])

EXAMPLES = [
    (
        "How many orders has each customer placed?",
        "SELECT c.name, COUNT(o.id) FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.name",
    ),
    ("What is the most expensive product?", "SELECT name FROM products ORDER BY price DESC LIMIT 1"),
    ("How many customers live in Paris?", "SELECT COUNT(*) FROM customers WHERE city = 'Paris'"),
    ("What was the total revenue in 2023?", "SELECT SUM(total) FROM orders WHERE order_date LIKE '2023%'"),
    ("Which orders were cancelled?", "SELECT id FROM orders WHERE status = 'cancelled'"),
    ("List all products cheaper than 20", "SELECT name, price FROM products WHERE price < 20"),
]

# (paraphrased question, the stored question it must retrieve first)
PARAPHRASES = [
    ("Count the orders per customer", EXAMPLES[0][0]),
    ("Which product has the highest price?", EXAMPLES[1][0]),
    ("Number of customers located in Berlin", EXAMPLES[2][0]),
    ("Sum of order totals for the year 2022", EXAMPLES[3][0]),
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return get_embedder("all-MiniLM-L6-v2")


async def _new_project(pool: asyncpg.Pool) -> tuple[str, int]:
    project_id = f"ret-{uuid.uuid4().hex[:10]}"
    await pool.execute(
        "INSERT INTO projects (id, name, database_url, dialect) VALUES ($1, $1, 'sqlite:///unused.db', 'sqlite')",
        project_id,
    )
    version_id: int = await pool.fetchval(
        "INSERT INTO schema_versions (project_id, hash, schema) VALUES ($1, $2, $3) RETURNING id",
        project_id,
        SCHEMA.structure_hash(),
        SCHEMA.to_json(),
    )
    return project_id, version_id


@pytest.fixture
async def project(pool: asyncpg.Pool) -> AsyncIterator[tuple[str, int]]:
    yield await _new_project(pool)


async def _add_all(
    pool: asyncpg.Pool, index: PgVectorIndex, embedder: Embedder, project_id: str, version_id: int
) -> dict[str, uuid.UUID]:
    ids = {}
    for question, sql in EXAMPLES:
        ids[question] = await add_verified_example(
            pool,
            index,
            embedder,
            project_id=project_id,
            question=question,
            sql=sql,
            source="import",
            quality=1.0,
            schema=SCHEMA,
            schema_version_id=version_id,
        )
    return ids


async def _select(
    pool: asyncpg.Pool, index: PgVectorIndex, embedder: Embedder, project_id: str, question: str, k: int = 3
):  # type: ignore[no-untyped-def]
    return await select_examples(
        pool, index, embedder, project_id=project_id, question=question, schema=SCHEMA, k=k
    )


def test_embedder_normalised_and_batched(embedder: Embedder) -> None:
    vectors = embedder.embed([f"question number {i}" for i in range(70)] + [""])
    assert vectors.shape == (71, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:70], axis=1), 1.0, atol=1e-4)
    assert embedder.dim == 384 and embedder.embed([]).shape == (0, 384)
    assert get_embedder("all-MiniLM-L6-v2") is embedder


@pytest.mark.parametrize(("question", "expected"), PARAPHRASES)
async def test_similar_question_retrieves_its_example(
    pool: asyncpg.Pool, embedder: Embedder, project: tuple[str, int], question: str, expected: str
) -> None:
    index = PgVectorIndex(pool)
    await _add_all(pool, index, embedder, *project)
    chosen = await _select(pool, index, embedder, project[0], question, k=1)
    assert [c.question for c in chosen] == [expected]
    assert chosen[0].source == "project" and chosen[0].score > 0.3


async def test_add_is_idempotent(pool: asyncpg.Pool, embedder: Embedder, project: tuple[str, int]) -> None:
    index = PgVectorIndex(pool)
    project_id, version_id = project
    answer_id = uuid.uuid4()
    kwargs = dict(
        project_id=project_id,
        question="How many products are there?",
        sql="SELECT COUNT(*) FROM products",
        source="answer",
        quality=0.8,
        schema=SCHEMA,
        schema_version_id=version_id,
        answer_id=answer_id,
    )
    first = await add_verified_example(pool, index, embedder, **kwargs)  # type: ignore[arg-type]
    second = await add_verified_example(pool, index, embedder, **kwargs)  # type: ignore[arg-type]
    assert first == second
    row = await pool.fetchrow(
        "SELECT count(*) AS n, max(embedding_model) AS model FROM examples WHERE project_id = $1", project_id
    )
    assert row["n"] == 1 and row["model"] == embedder.name
    stored = await pool.fetchrow(
        "SELECT masked_question, sql_skeleton, tables FROM examples WHERE id = $1", first
    )
    assert stored["masked_question"] == "how many <tab> are there?"
    assert stored["sql_skeleton"] == "SELECT COUNT(*) FROM _"
    assert stored["tables"] == ["products"]
    assert await count_verified_since(pool, project_id) == 1


async def test_cross_project_isolation(pool: asyncpg.Pool, embedder: Embedder) -> None:
    index = PgVectorIndex(pool)
    project_a, version_a = await _new_project(pool)
    project_b, version_b = await _new_project(pool)
    ids_a = set((await _add_all(pool, index, embedder, project_a, version_a)).values())

    # B has nothing yet: even the identical question returns nothing.
    for question, _ in EXAMPLES:
        assert await _select(pool, index, embedder, project_b, question) == []

    own = await add_verified_example(
        pool,
        index,
        embedder,
        project_id=project_b,
        question="How many customers live in Lisbon?",
        sql="SELECT COUNT(*) FROM customers WHERE city = 'Lisbon'",
        source="import",
        quality=1.0,
        schema=SCHEMA,
        schema_version_id=version_b,
    )
    for question, _ in EXAMPLES:
        chosen = await _select(pool, index, embedder, project_b, question, k=5)
        assert {uuid.UUID(c.example_id) for c in chosen} <= {own}
        assert not ids_a & {uuid.UUID(c.example_id) for c in chosen}
        # The index alone must also filter by project, whatever the vector.
        hits = await index.search(project_b, embedder.embed([question])[0], 50)
        assert {h[0] for h in hits} == {own}
    # A still sees its own examples.
    chosen_a = await _select(pool, index, embedder, project_a, EXAMPLES[2][0], k=1)
    assert uuid.UUID(chosen_a[0].example_id) in ids_a


async def test_rated_down_example_is_never_returned(
    pool: asyncpg.Pool, embedder: Embedder, project: tuple[str, int]
) -> None:
    index = PgVectorIndex(pool)
    project_id, version_id = project
    await _add_all(pool, index, embedder, project_id, version_id)
    answer_id = uuid.uuid4()
    bad = await add_verified_example(
        pool,
        index,
        embedder,
        project_id=project_id,
        question="What is the average order total?",
        sql="SELECT MAX(total) FROM orders",
        source="answer",
        quality=0.5,
        schema=SCHEMA,
        schema_version_id=version_id,
        answer_id=answer_id,
    )
    before = await _select(pool, index, embedder, project_id, "average order total", k=1)
    assert before[0].example_id == str(bad)

    assert await mark_rated_down(pool, index, project_id, answer_id) is True
    assert await mark_rated_down(pool, index, project_id, uuid.uuid4()) is False
    after = await _select(pool, index, embedder, project_id, "average order total", k=10)
    assert str(bad) not in {c.example_id for c in after}
    hits = await index.search(project_id, embedder.embed(["what is the average <tab> <col>?"])[0], 50)
    assert bad not in {h[0] for h in hits}
    assert await pool.fetchval("SELECT rated_down FROM examples WHERE id = $1", bad) is True


async def test_correction_replaces_wrong_sql(
    pool: asyncpg.Pool, embedder: Embedder, project: tuple[str, int]
) -> None:
    index = PgVectorIndex(pool)
    project_id, version_id = project
    answer_id = uuid.uuid4()
    question = "What is the average order total?"
    original = await add_verified_example(
        pool,
        index,
        embedder,
        project_id=project_id,
        question=question,
        sql="SELECT MAX(total) FROM orders",
        source="answer",
        quality=0.5,
        schema=SCHEMA,
        schema_version_id=version_id,
        answer_id=answer_id,
    )
    await mark_rated_down(pool, index, project_id, answer_id)
    corrected = "SELECT AVG(total) FROM orders"
    fixed = await apply_correction(
        pool,
        index,
        embedder,
        project_id=project_id,
        answer_id=answer_id,
        question=question,
        corrected_sql=corrected,
        schema=SCHEMA,
        schema_version_id=version_id,
    )
    assert fixed == original
    rows = await pool.fetch(
        "SELECT sql, source, rated_down, sql_skeleton FROM examples WHERE answer_id = $1", answer_id
    )
    assert len(rows) == 1
    assert (
        rows[0]["sql"] == corrected and rows[0]["source"] == "correction" and rows[0]["rated_down"] is False
    )
    assert rows[0]["sql_skeleton"] == sql_skeleton(corrected, "sqlite")
    chosen = await _select(pool, index, embedder, project_id, "mean total of orders", k=1)
    assert chosen[0].sql == corrected

    # A correction for an answer that never became an example creates one.
    new_answer = uuid.uuid4()
    created = await apply_correction(
        pool,
        index,
        embedder,
        project_id=project_id,
        answer_id=new_answer,
        question="How many products are there?",
        corrected_sql="SELECT COUNT(*) FROM products",
        schema=SCHEMA,
        schema_version_id=version_id,
    )
    assert await pool.fetchval(
        "SELECT source FROM examples WHERE id = $1 AND answer_id = $2", created, new_answer
    ) == ("correction")


async def test_stale_on_schema_change_and_revived(
    pool: asyncpg.Pool, embedder: Embedder, project: tuple[str, int]
) -> None:
    index = PgVectorIndex(pool)
    project_id, version_id = project
    ids = await _add_all(pool, index, embedder, project_id, version_id)
    product_ids = {ids[q] for q, sql in EXAMPLES if "products" in sql}

    assert await mark_stale_for_schema(pool, index, project_id, SCHEMA_NO_PRODUCTS, version_id + 1000) == len(
        product_ids
    )
    stale = {
        r["id"]
        for r in await pool.fetch("SELECT id FROM examples WHERE project_id = $1 AND stale", project_id)
    }
    assert stale == product_ids
    chosen = await _select(pool, index, embedder, project_id, "What is the most expensive product?", k=6)
    assert not product_ids & {uuid.UUID(c.example_id) for c in chosen}
    # Running it again marks nothing new.
    assert await mark_stale_for_schema(pool, index, project_id, SCHEMA_NO_PRODUCTS, version_id + 1000) == 0

    # The table comes back: the examples are valid and retrievable again.
    assert await mark_stale_for_schema(pool, index, project_id, SCHEMA, version_id, embedder) == 0
    assert (
        await pool.fetchval("SELECT count(*) FROM examples WHERE project_id = $1 AND stale", project_id) == 0
    )
    chosen = await _select(pool, index, embedder, project_id, "Which product has the highest price?", k=1)
    assert chosen[0].question == "What is the most expensive product?"


async def test_reembed_when_embedding_model_changes(
    pool: asyncpg.Pool, embedder: Embedder, project: tuple[str, int]
) -> None:
    index = PgVectorIndex(pool)
    project_id, version_id = project
    ids = await _add_all(pool, index, embedder, project_id, version_id)
    # Simulate examples embedded by another model: foreign vectors and another model name.
    rng = np.random.default_rng(7)
    for example_id in ids.values():
        noise = rng.normal(size=384).astype(np.float32)
        await pool.execute(
            "UPDATE examples SET embedding = $2::vector, embedding_model = 'old-model' WHERE id = $1",
            example_id,
            vector_literal(noise / np.linalg.norm(noise)),
        )
    assert await reembed_all(pool, index, embedder, project_id) == len(EXAMPLES)
    rows = await pool.fetch(
        "SELECT embedding_model, embedding::text AS e, question, masked_question FROM examples WHERE project_id = $1",
        project_id,
    )
    assert {r["embedding_model"] for r in rows} == {embedder.name}
    for row in rows:
        stored = np.asarray([float(x) for x in row["e"].strip("[]").split(",")], dtype=np.float32)
        fresh = embedder.embed([retrieval_text(row["question"], row["masked_question"])])[0]
        assert float(stored @ fresh) > 0.999
    assert await reembed_all(pool, index, embedder, project_id) == 0
    chosen = await _select(pool, index, embedder, project_id, PARAPHRASES[0][0], k=1)
    assert chosen[0].question == PARAPHRASES[0][1]


async def test_search_finds_a_small_projects_examples_among_many_others(
    pool: asyncpg.Pool, embedder: Embedder
) -> None:
    """HNSW filters after the graph walk; iterative scans must still find a small project's rows."""
    index = PgVectorIndex(pool)
    crowd, _ = await _new_project(pool)
    small, _ = await _new_project(pool)
    rng = np.random.default_rng(3)
    centre = rng.normal(size=384).astype(np.float32)
    centre /= np.linalg.norm(centre)
    rows = []
    for i in range(1500):
        v = centre + 0.05 * rng.normal(size=384).astype(np.float32)
        rows.append((uuid.uuid4(), crowd, f"q{i}", "SELECT 1", vector_literal(v / np.linalg.norm(v))))
    far = []
    for i in range(2):
        v = -centre + 0.3 * rng.normal(size=384).astype(np.float32)
        example_id = uuid.uuid4()
        far.append(example_id)
        rows.append((example_id, small, f"far {i}", "SELECT 1", vector_literal(v / np.linalg.norm(v))))
    await pool.executemany(
        "INSERT INTO examples (id, project_id, question, sql, source, verified, embedding, embedding_model)"
        " VALUES ($1, $2, $3, $4, 'import', true, $5::vector, 'test')",
        rows,
    )
    hits = await index.search(small, centre, 5)
    assert {h[0] for h in hits} == set(far)
    assert all(-1.0 <= score < 0.5 for _, score in hits)


def test_referenced_names_and_validity() -> None:
    sql = (
        "WITH big AS (SELECT customer_id FROM orders WHERE total > 100) "
        "SELECT c.name, p.price FROM customers AS c JOIN big ON big.customer_id = c.id, products p ORDER BY name"
    )
    tables, columns = names_for(sql, SCHEMA)
    assert tables == ["customers", "orders", "products"]
    assert columns == [
        "customers.id",
        "customers.name",
        "orders.customer_id",
        "orders.total",
        "products.price",
    ]
    assert is_valid_for(tables, columns, SCHEMA)
    assert not is_valid_for(tables, columns, SCHEMA_NO_PRODUCTS)
    assert not is_valid_for(["orders"], ["orders.discount"], SCHEMA)
    # A bare column is valid while one of the example's tables has it.
    assert is_valid_for(["customers", "orders"], ["name"], SCHEMA)
    assert not is_valid_for(["orders"], ["name"], SCHEMA)
    assert names_for("not sql at all (", SCHEMA) == ([], [])


def _cand(name: str, similarity: float, sql: str) -> Candidate:
    return Candidate(
        example_id=name, question=name, sql=sql, skeleton=sql_skeleton(sql, "sqlite"), similarity=similarity
    )


GROUP_COUNT = "SELECT {c}, COUNT(*) FROM {t} GROUP BY {c}"


def test_dail_rerank_prefers_skeleton_consistent_example() -> None:
    # The single most similar example has a shape none of the other close examples share.
    odd = _cand("odd", 0.80, "SELECT name FROM products WHERE price = (SELECT MAX(price) FROM products)")
    consistent = [
        _cand("g1", 0.79, GROUP_COUNT.format(c="city", t="customers")),
        _cand("g2", 0.78, GROUP_COUNT.format(c="status", t="orders")),
        _cand("g3", 0.77, GROUP_COUNT.format(c="category", t="products")),
    ]
    chosen = select_from_candidates([odd, *consistent], 1)
    assert chosen[0][0].example_id == "g1"
    # Without skeleton support, plain similarity would pick the odd one: the rerank is what changed it.
    plain = select_from_candidates([odd, *consistent], 1, skeleton_weight=0.0)
    assert plain[0][0].example_id == "odd"


def test_mmr_diversifies_skeletons_unless_far_more_similar() -> None:
    same = [_cand(f"s{i}", 0.70 - i * 0.01, GROUP_COUNT.format(c=f"c{i}", t="t")) for i in range(4)]
    other = _cand("other", 0.62, "SELECT name FROM products ORDER BY price DESC LIMIT 1")
    chosen = [c.example_id for c, _ in select_from_candidates([*same, other], 2)]
    assert chosen == ["s0", "other"]
    no_diversity = [c.example_id for c, _ in select_from_candidates([*same, other], 2, diversity=0.0)]
    assert no_diversity == ["s0", "s1"]
    # A much more similar same-shape example still wins over a different but weak one.
    weak = _cand("weak", 0.20, "SELECT name FROM products ORDER BY price DESC LIMIT 1")
    strong = [
        _cand("a", 0.90, GROUP_COUNT.format(c="x", t="t")),
        _cand("b", 0.88, GROUP_COUNT.format(c="y", t="t")),
    ]
    assert [c.example_id for c, _ in select_from_candidates([*strong, weak], 2)] == ["a", "b"]


class _CountingEmbedder(Embedder):
    """The real model, counting the texts it actually runs on."""

    def __init__(self, name: str, cache_size: int) -> None:
        super().__init__(name, cache_size=cache_size)
        self.model_texts = 0

    def _embed_uncached(self, texts: list[str]) -> np.ndarray:
        self.model_texts += len(texts)
        return super()._embed_uncached(texts)


@pytest.mark.parametrize("cache_size", [10_000, 0])
async def test_each_question_text_runs_through_the_model_once_per_pass(
    pool: asyncpg.Pool, project: tuple[str, int], cache_size: int
) -> None:
    """The handler embeds a question's two texts (masked and plain) once each. prepare_batch does them for
    a whole poll up front when the cache can keep them, and skips them when there is no cache."""
    project_id, version_id = project
    counting = _CountingEmbedder("all-MiniLM-L6-v2", cache_size)
    handler = RetrievalHandler(pool, PgVectorIndex(pool), counting, top_k=3, fewshot_k=2)

    def resolved(question: str) -> QueryResolved:
        return QueryResolved(
            project_id=project_id,
            question_event_id=uuid.uuid4(),
            conversation_id="c",
            user_id="u",
            question=f"{question} {uuid.uuid4().hex[:6]}",
            asked_at_ms=0.0,
            dialect="sqlite",
            schema_version_id=version_id,
        )

    # The first question also embeds the few-shot library once; the second shows the per-question cost.
    for event in (
        resolved("Which orders were shipped?"),
        resolved("How many orders were cancelled in Paris?"),
    ):
        before = counting.model_texts
        await handler.prepare_batch([event])
        by_prepare = counting.model_texts - before
        [context] = await handler.handle(event)
        assert isinstance(context, ContextReady)
    by_handle = counting.model_texts - before - by_prepare
    if cache_size:
        assert (by_prepare, by_handle) == (2, 0)  # the handler found both texts in the cache
    else:
        assert (by_prepare, by_handle) == (0, 2)
