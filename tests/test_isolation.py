"""Tenant isolation: one project's examples, feedback, training data and adapters never reach another project's
answers. Two projects share one schema (the sample shop) and the same questions, so only isolation keeps them
apart; each layer is tested directly and through the five real consumers (scripted model)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from events import ChatAnswer, ChatFeedback, ModelUpdated
from services.client import QueryliftClient
from services.core import model_registry as registry
from services.core.examples.embedder import get_embedder
from services.core.examples.index_pgvector import PgVectorIndex
from services.core.examples.selection import select_examples
from services.core.examples.store import add_verified_example
from services.core.projects import load_schema
from services.generation.serving import ModelRouter
from services.infra.llm.scripted import ScriptedLLM
from services.infra.settings import Settings
from services.query.register import register_project
from services.training.dataset import export_jsonl
from services.wiring import Overrides
from tests.conftest import SAMPLE_DB, unique, wait_until
from tests.pipeline_harness import running_pipeline

SQL = "SELECT status, COUNT(*) FROM orders GROUP BY status"
QUESTION = "how many orders are there per status"


@dataclass
class Tenants:
    client: QueryliftClient
    a: str
    b: str
    schema_version: dict[str, int]
    llm: ScriptedLLM


@pytest.fixture(scope="module")
async def tenants(
    pg_dsn: str, broker, tmp_path_factory: pytest.TempPathFactory, pool: asyncpg.Pool
) -> AsyncIterator[Tenants]:
    tmp = tmp_path_factory.mktemp("isolation")
    versions = {}
    names = [unique("tenant-a"), unique("tenant-b")]
    for name in names:
        database = tmp / f"{name}.sqlite"
        shutil.copy(SAMPLE_DB, database)
        _, version_id, _ = await register_project(pool, project_id=name, database_url=f"sqlite:///{database}")
        versions[name] = version_id
    settings = Settings(
        database_url=pg_dsn,  # type: ignore[arg-type]
        kafka_bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"iso{uuid.uuid4().hex[:6]}.",
        topic_partitions=2,
        data_dir=tmp,
        metrics_port=0,
        training_threshold=1000,
    )
    llm = ScriptedLLM(default=f"```sql\n{SQL}\n```")
    overrides = Overrides(llm=llm, embedder=get_embedder(settings.embedding_model))
    async with running_pipeline(settings, overrides) as client:
        yield Tenants(client, names[0], names[1], versions, llm)


async def _learned_example(pool: asyncpg.Pool, t: Tenants, question: str) -> tuple[ChatAnswer, uuid.UUID]:
    """Project A answers ``question`` and a user rates it 5: A now has a verified example."""
    answer = await t.client.ask(t.a, question, conversation_id=f"learn-{uuid.uuid4().hex[:6]}", timeout_s=120)
    assert isinstance(answer, ChatAnswer)
    await t.client.feedback(ChatFeedback(project_id=t.a, answer_id=answer.event_id, rating=5, thumbs="up"))
    row = await wait_until(
        lambda: pool.fetchrow(
            "SELECT id, project_id FROM examples WHERE answer_id = $1 AND verified", answer.event_id
        )
    )
    assert row["project_id"] == t.a
    return answer, row["id"]


async def test_examples_learned_by_one_project_never_reach_another_scripted_llm(
    tenants: Tenants, pool: asyncpg.Pool
) -> None:
    t = tenants
    _, example_id = await _learned_example(pool, t, QUESTION)
    # The same question in A retrieves the example; in B it does not, though B's schema is identical.
    in_a = await t.client.ask(t.a, QUESTION, conversation_id="iso-a", timeout_s=120)
    in_b = await t.client.ask(t.b, QUESTION, conversation_id="iso-b", timeout_s=120)
    assert isinstance(in_a, ChatAnswer) and isinstance(in_b, ChatAnswer)
    assert str(example_id) in {e.example_id for e in in_a.examples_used}
    assert not [e for e in in_b.examples_used if e.source == "project"]


async def test_retrieval_layer_filters_by_project(tenants: Tenants, pool: asyncpg.Pool) -> None:
    t = tenants
    embedder = get_embedder("all-MiniLM-L6-v2")
    index = PgVectorIndex(pool)
    schema = await load_schema(pool, t.schema_version[t.a])
    question = f"which store sold the most bikes {uuid.uuid4().hex[:4]}"
    await add_verified_example(
        pool,
        index,
        embedder,
        project_id=t.a,
        question=question,
        sql="SELECT store_id, COUNT(*) FROM orders GROUP BY store_id ORDER BY 2 DESC LIMIT 1",
        source="import",
        quality=1.0,
        schema=schema,
        schema_version_id=t.schema_version[t.a],
    )
    for_a = await select_examples(
        pool, index, embedder, project_id=t.a, question=question, schema=schema, k=4
    )
    for_b = await select_examples(
        pool, index, embedder, project_id=t.b, question=question, schema=schema, k=4
    )
    assert any(e.question == question for e in for_a)
    assert not any(e.question == question for e in for_b)
    # Even the raw vector index answers per project.
    vector = embedder.embed([question])[0]
    hits_b = await index.search(t.b, vector, 50)
    rows = await pool.fetch(
        "SELECT project_id FROM examples WHERE id = ANY($1::uuid[])", [h[0] for h in hits_b]
    )
    assert {r["project_id"] for r in rows} <= {t.b}


async def test_feedback_naming_another_projects_answer_changes_nothing_scripted_llm(
    tenants: Tenants, pool: asyncpg.Pool
) -> None:
    t = tenants
    answer = await t.client.ask(
        t.a, "number of orders per status please", conversation_id="fb-a", timeout_s=120
    )
    assert isinstance(answer, ChatAnswer)
    # B's user (or a forged event) judges and "corrects" A's answer, under B's project id.
    hostile = ChatFeedback(
        project_id=t.b, answer_id=answer.event_id, rating=1, corrected_sql="SELECT COUNT(*) FROM customers"
    )
    await t.client.feedback(hostile)
    marker = await t.client.ask(t.b, "orders per status for b", conversation_id="fb-b", timeout_s=120)
    assert isinstance(marker, ChatAnswer)
    await wait_until(lambda: pool.fetchrow("SELECT 1 FROM feedback WHERE id = $1", hostile.event_id))
    # Stored under B, never applied to A's answer: no example, no rating-down, nothing learnt for either project.
    row = await pool.fetchrow(
        "SELECT project_id, corrected_sql_ok FROM feedback WHERE id = $1", hostile.event_id
    )
    assert row["project_id"] == t.b and row["corrected_sql_ok"] is None
    assert await pool.fetchval("SELECT count(*) FROM examples WHERE answer_id = $1", answer.event_id) == 0


async def test_training_export_contains_only_the_projects_own_examples_scripted_llm(
    tenants: Tenants, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    t = tenants
    question = f"how many orders were returned {uuid.uuid4().hex[:4]}"
    await _learned_example(pool, t, question)
    a_count = await export_jsonl(pool, t.a, tmp_path / "a.jsonl")
    b_count = await export_jsonl(pool, t.b, tmp_path / "b.jsonl")
    a_text = (tmp_path / "a.jsonl").read_text(encoding="utf-8")
    b_text = (tmp_path / "b.jsonl").read_text(encoding="utf-8")
    assert a_count >= 1 and question in a_text
    assert question not in b_text
    b_rows = await pool.fetch(
        "SELECT question FROM examples WHERE project_id = $1 AND verified AND NOT stale AND NOT rated_down",
        t.b,
    )
    assert b_count == len(b_rows)
    for a_question in await pool.fetch("SELECT question FROM examples WHERE project_id = $1", t.a):
        assert a_question["question"] not in b_text


async def test_one_projects_adapter_serves_only_that_project_scripted_llm(
    tenants: Tenants, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    t = tenants
    adapter_dir = tmp_path / "adapter-a"
    adapter_dir.mkdir()
    version = await registry.register_candidate(
        pool, t.a, base_model="smollm2-135m-instruct", adapter_path=str(adapter_dir), checksum="x"
    )
    await registry.promote(pool, t.a, version.version)
    # Direct: the router gives A its adapter and B the base model.
    router = ModelRouter(pool)
    assert (await router.choose(t.a, uuid.uuid4()))[0] is not None
    assert (await router.choose(t.b, uuid.uuid4()))[0] is None
    # Through the pipeline: the generation consumer learns of A's adapter from model.updated.
    await t.client.bus.publish(
        ModelUpdated(
            project_id=t.a,
            model_version_id=version.id,
            version=version.version,
            base_model="smollm2-135m-instruct",
            adapter_path=str(adapter_dir),
            status="active",
        )
    )
    in_a = await t.client.ask(
        t.a, "orders per status with the adapter", conversation_id="ad-a", timeout_s=120
    )
    in_b = await t.client.ask(
        t.b, "orders per status without the adapter", conversation_id="ad-b", timeout_s=120
    )
    assert isinstance(in_a, ChatAnswer) and isinstance(in_b, ChatAnswer)
    assert in_a.adapter_version == version.version
    assert in_b.adapter_version is None
    calls_b = [c for c in t.llm.calls if "without the adapter" in c.last_user]
    assert calls_b and all(c.adapter is None for c in calls_b)
    calls_a = [c for c in t.llm.calls if "with the adapter" in c.last_user]
    assert calls_a and all(c.adapter is not None and c.adapter.project_id == t.a for c in calls_a)
