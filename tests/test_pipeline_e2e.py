"""The five consumers end to end on the real broker and PostgreSQL, with a scripted model (the tests are about
the pipeline: delivery, idempotency, dead letters, errors and feedback — not the model)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from events import ChatAnswer, ChatError, ChatFeedback, ChatQuestion, ErrorCode
from services.client import QueryliftClient
from services.infra.consumer import MAX_EVENT_BYTES
from services.infra.llm.scripted import ScriptedLLM
from services.infra.settings import Settings
from services.query.register import register_project
from services.wiring import Overrides
from tests.conftest import SAMPLE_DB, unique, wait_until
from tests.pipeline_harness import running_pipeline

GOLD = {
    "returned": "SELECT COUNT(*) FROM orders WHERE status = 'returned'",
    "per status": "SELECT status, COUNT(*) FROM orders GROUP BY status",
    "gold customers": "SELECT COUNT(*) FROM customers WHERE loyalty_tier = 'gold'",
}


def scripted_model() -> ScriptedLLM:
    # Answers by keyword, like a model that knows this schema; anything else gets an invalid column.
    rules = [(key, f"```sql\n{sql}\n```") for key, sql in GOLD.items()]
    rules.append((".*", "SELECT no_such_column FROM orders"))
    return ScriptedLLM(rules)


@pytest.fixture(scope="module")
async def stack(
    pg_dsn: str, broker, tmp_path_factory: pytest.TempPathFactory, pool: asyncpg.Pool
) -> AsyncIterator[tuple[QueryliftClient, str, Settings]]:
    from services.core.examples.embedder import get_embedder

    tmp = tmp_path_factory.mktemp("e2e")
    database = tmp / "bikeshop.sqlite"
    shutil.copy(SAMPLE_DB, database)
    settings = Settings(
        database_url=pg_dsn,  # type: ignore[arg-type]
        kafka_bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"e2e{uuid.uuid4().hex[:6]}.",
        topic_partitions=2,
        data_dir=tmp,
        metrics_port=0,
        training_threshold=1000,
        repair_rounds=1,
    )
    project = unique("shop")
    await register_project(pool, project_id=project, database_url=f"sqlite:///{database}")
    overrides = Overrides(llm=scripted_model(), embedder=get_embedder(settings.embedding_model))
    async with running_pipeline(settings, overrides) as client:
        _LLMS[id(client)] = overrides.llm
        yield client, project, settings


_LLMS: dict[int, ScriptedLLM] = {}


def stack_llm(stack: tuple[QueryliftClient, str, Settings]) -> ScriptedLLM:
    return _LLMS[id(stack[0])]


async def test_question_flows_through_all_five_consumers_scripted_llm(stack, pool: asyncpg.Pool) -> None:
    client, project, _ = stack
    outcome = await client.ask(project, "how many orders were returned?", timeout_s=120)
    assert isinstance(outcome, ChatAnswer), outcome
    assert outcome.sql == GOLD["returned"]
    assert outcome.columns and outcome.row_count == 1 and isinstance(outcome.rows_preview[0][0], int)
    assert outcome.chart is not None and outcome.chart.type.value == "number"
    assert {"query", "retrieval", "llm", "execute"} <= set(outcome.timings_ms)
    # The feedback consumer stored it: the answer is in the system of record.
    row = await wait_until(lambda: pool.fetchrow("SELECT * FROM answers WHERE id = $1", outcome.event_id))
    assert row["ok"] and row["project_id"] == project


async def test_duplicate_question_gives_one_answer_scripted_llm(stack, pool: asyncpg.Pool) -> None:
    client, project, _ = stack
    question = ChatQuestion(
        project_id=project, conversation_id="dup", user_id="u", question="number of orders per status"
    )
    first = await asyncio.wait_for(await client.publish(question), 120)
    await client.bus.publish(question)  # the upstream product retries: same event id
    await client.bus.publish(question)
    marker = await client.ask(project, "how many orders were returned", conversation_id="dup-marker")
    assert isinstance(first, ChatAnswer) and isinstance(marker, ChatAnswer)
    await asyncio.sleep(0.5)
    assert len(client.outcomes[question.event_id]) == 1
    assert (
        await pool.fetchval("SELECT count(*) FROM answers WHERE question_event_id = $1", question.event_id)
        == 1
    )
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE id = $1", question.event_id) == 1


async def test_malformed_events_are_dead_lettered_and_next_is_answered_scripted_llm(
    stack, pool: asyncpg.Pool
) -> None:
    client, project, _ = stack
    await client.bus.publish_raw(ChatQuestion.topic, b"\xff\xfe not json", key=project.encode())
    missing = {"event_id": str(uuid.uuid4()), "project_id": project, "question": "no conversation or user"}
    await client.bus.publish_raw(ChatQuestion.topic, json.dumps(missing).encode(), key=project.encode())
    outcome = await client.ask(project, "how many orders were returned", conversation_id="after-garbage")
    assert isinstance(outcome, ChatAnswer)

    async def both_letters() -> list[asyncpg.Record] | None:
        rows = await pool.fetch(
            "SELECT reason, error FROM dead_letters WHERE consumer = 'query' AND payload_text LIKE ANY($1)",
            ["%not json%", f"%{missing['event_id']}%"],
        )
        return rows if len(rows) >= 2 else None  # they are recorded apart: wait for both

    letters = await wait_until(both_letters)
    assert {r["reason"] for r in letters} == {"unparseable", "invalid"}
    # The malformed question that named its project also got a chat.error a person can act on.
    error = await wait_until(lambda: _outcome(client, uuid.UUID(missing["event_id"])))
    assert isinstance(error, ChatError) and error.code == ErrorCode.invalid_event
    assert "conversation_id" in error.message


async def test_oversized_question_is_dead_lettered_and_the_asker_told_scripted_llm(
    stack, pool: asyncpg.Pool
) -> None:
    client, project, _ = stack
    event = json.loads(
        ChatQuestion(
            project_id=project, conversation_id="big", user_id="u", question="how many orders"
        ).model_dump_json()
    )
    event["padding"] = "x" * (MAX_EVENT_BYTES + 10)
    await client.bus.publish_raw(ChatQuestion.topic, json.dumps(event).encode(), key=project.encode())
    error = await wait_until(lambda: _outcome(client, uuid.UUID(event["event_id"])), timeout_s=60)
    assert isinstance(error, ChatError) and error.code == ErrorCode.invalid_event
    assert "exceeds" in error.message and error.conversation_id == "big"
    letter = await wait_until(
        lambda: pool.fetchrow(
            "SELECT reason FROM dead_letters WHERE consumer = 'query' AND left(payload_text, 200) LIKE $1",
            f"%{event['event_id']}%",
        )
    )
    assert letter["reason"] == "invalid"


async def _outcome(client: QueryliftClient, qid: uuid.UUID):  # type: ignore[no-untyped-def]
    found = client.outcomes.get(qid)
    return found[0] if found else None


async def test_unknown_project_gives_chat_error(stack) -> None:
    client, _, _ = stack
    outcome = await client.ask("no-such-project", "how many orders?", timeout_s=60)
    assert isinstance(outcome, ChatError)
    assert outcome.code == ErrorCode.unknown_project
    assert "querylift project add no-such-project" in outcome.message


async def test_invalid_sql_after_repair_gives_chat_error_scripted_llm(stack) -> None:
    client, project, _ = stack
    outcome = await client.ask(project, "what is the meaning of life", timeout_s=60)
    assert isinstance(outcome, ChatError)
    assert outcome.code == ErrorCode.invalid_sql
    assert "no_such_column" in outcome.message


async def test_feedback_is_stored_and_teaches_retrieval_scripted_llm(stack, pool: asyncpg.Pool) -> None:
    client, project, _ = stack
    answer = await client.ask(project, "how many gold customers are there", conversation_id="fb")
    assert isinstance(answer, ChatAnswer)
    await client.feedback(ChatFeedback(project_id=project, answer_id=answer.event_id, rating=5, thumbs="up"))
    example = await wait_until(
        lambda: pool.fetchrow("SELECT * FROM examples WHERE answer_id = $1 AND verified", answer.event_id)
    )
    assert example["sql"] == GOLD["gold customers"] and example["project_id"] == project
    assert await pool.fetchval("SELECT rating FROM feedback WHERE answer_id = $1", answer.event_id) == 5
    # The next similar question retrieves it.
    again = await client.ask(project, "how many gold customers do we have", conversation_id="fb2")
    assert isinstance(again, ChatAnswer)
    assert any(e.source == "project" and e.example_id == str(example["id"]) for e in again.examples_used)


async def test_verified_question_asked_with_another_value_is_answered_from_it_scripted_llm(
    stack, pool: asyncpg.Pool
) -> None:
    """The scripted model knows nothing of silver customers: only the verified gold question can answer."""
    client, project, settings = stack
    llm = stack_llm(stack)
    answer = await client.ask(project, "how many gold customers are there", conversation_id="tpl")
    assert isinstance(answer, ChatAnswer)
    await client.feedback(ChatFeedback(project_id=project, answer_id=answer.event_id, rating=5))
    example = await wait_until(
        lambda: pool.fetchrow("SELECT * FROM examples WHERE answer_id = $1 AND verified", answer.event_id)
    )
    calls = len(llm.calls)
    silver = await client.ask(project, "how many silver customers are there", conversation_id="tpl2")
    assert isinstance(silver, ChatAnswer), silver
    assert silver.sql_source == "example" and silver.attempts == 0 and len(llm.calls) == calls
    # The example named is a verified one of this project (an earlier test may have verified the same
    # question too), and its SQL is what answered, with the question's value.
    [used] = silver.examples_used
    source = await pool.fetchrow(
        "SELECT question, sql FROM examples WHERE id = $1 AND project_id = $2 AND verified",
        uuid.UUID(used.example_id),
        project,
    )
    assert source is not None and source["question"] == example["question"]
    assert silver.sql == source["sql"].replace("'gold'", "'silver'")
    with sqlite3.connect(settings.data_dir / "bikeshop.sqlite") as db:
        expected = db.execute("SELECT COUNT(*) FROM customers WHERE loyalty_tier = 'silver'").fetchone()[0]
    assert silver.rows_preview == [[expected]]
    # A value the database does not hold returns nothing from the example, so the model is asked.
    platinum = await client.ask(project, "how many platinum customers are there", conversation_id="tpl3")
    assert len(llm.calls) > calls
    assert not isinstance(platinum, ChatAnswer) or platinum.sql_source == "model"


async def test_correction_replaces_wrong_sql_scripted_llm(stack, pool: asyncpg.Pool) -> None:
    client, project, _ = stack
    error = await client.ask(project, "list the cities of our stores", conversation_id="corr")
    assert isinstance(error, ChatError)
    corrected = "SELECT city FROM stores"
    await client.feedback(
        ChatFeedback(project_id=project, answer_id=error.event_id, rating=1, corrected_sql=corrected)
    )
    example = await wait_until(
        lambda: pool.fetchrow("SELECT * FROM examples WHERE answer_id = $1 AND verified", error.event_id)
    )
    assert example["sql"] == corrected and example["source"] == "correction"
    assert (
        await pool.fetchval("SELECT corrected_sql_ok FROM feedback WHERE answer_id = $1", error.event_id)
        is True
    )


async def test_unsafe_correction_is_not_trusted_scripted_llm(stack, pool: asyncpg.Pool) -> None:
    client, project, _ = stack
    answer = await client.ask(project, "number of orders per status", conversation_id="evil")
    assert isinstance(answer, ChatAnswer)
    await client.feedback(
        ChatFeedback(
            project_id=project, answer_id=answer.event_id, rating=1, corrected_sql="DELETE FROM orders"
        )
    )
    await wait_until(
        lambda: pool.fetchval(
            "SELECT corrected_sql_ok IS NOT NULL FROM feedback WHERE answer_id = $1", answer.event_id
        )
    )
    assert (
        await pool.fetchval("SELECT corrected_sql_ok FROM feedback WHERE answer_id = $1", answer.event_id)
        is False
    )
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM examples WHERE answer_id = $1 AND verified AND NOT rated_down",
            answer.event_id,
        )
        == 0
    )
    # The customer database is untouched.
    _, _, settings = stack
    with sqlite3.connect(settings.data_dir / "bikeshop.sqlite") as db:
        assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == 600


async def test_follow_up_question_carries_the_conversation_scripted_llm(stack) -> None:
    client, project, _ = stack
    llm = stack_llm(stack)
    first = await client.ask(project, "how many orders were returned", conversation_id="follow")
    assert isinstance(first, ChatAnswer)
    # The answer is stored by the feedback consumer; the next turn of the conversation must see it.
    await asyncio.sleep(1.0)
    calls_before = len(llm.calls)
    await client.ask(project, "and how many gold customers?", conversation_id="follow")
    prompt = "\n".join(m["content"] for m in llm.calls[calls_before].messages)
    assert "how many orders were returned" in prompt
    assert GOLD["returned"] in prompt
