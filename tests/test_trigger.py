"""The threshold trigger on the real system of record: exactly one training request per crossing."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from services.feedback.trigger import maybe_request_training
from tests.conftest import unique


async def _project(pool: asyncpg.Pool, threshold: int) -> str:
    project = unique("trig")
    await pool.execute(
        "INSERT INTO projects (id, name, database_url, dialect, training_threshold) VALUES ($1, $1, 'sqlite:///x.db', 'sqlite', $2)",
        project,
        threshold,
    )
    return project


async def _verified(pool: asyncpg.Pool, project: str, n: int, **flags: bool) -> None:
    for i in range(n):
        await pool.execute(
            "INSERT INTO examples (id, project_id, question, sql, source, verified, rated_down, stale)"
            " VALUES ($1, $2, $3, 'SELECT 1', 'answer', $4, $5, $6)",
            uuid.uuid4(),
            project,
            f"question {i} {uuid.uuid4().hex[:4]}",
            flags.get("verified", True),
            flags.get("rated_down", False),
            flags.get("stale", False),
        )


async def test_below_threshold_and_unusable_examples_request_nothing(pool: asyncpg.Pool) -> None:
    project = await _project(pool, 3)
    await _verified(pool, project, 2)
    await _verified(pool, project, 2, rated_down=True)
    await _verified(pool, project, 2, stale=True)
    await _verified(pool, project, 2, verified=False)
    assert await maybe_request_training(pool, project, default_threshold=100, cause=uuid.uuid4()) is None


async def test_concurrent_crossings_emit_exactly_one_request(pool: asyncpg.Pool) -> None:
    project = await _project(pool, 3)
    await _verified(pool, project, 3)
    results = await asyncio.gather(
        *(maybe_request_training(pool, project, default_threshold=100, cause=uuid.uuid4()) for _ in range(8))
    )
    requests = [r for r in results if r is not None]
    assert len(requests) == 1
    assert requests[0].new_examples == 3 and requests[0].threshold == 3
    assert await pool.fetchval("SELECT count(*) FROM training_jobs WHERE project_id = $1", project) == 1


async def test_redelivered_cause_re_emits_the_same_request_and_an_open_job_blocks_others(
    pool: asyncpg.Pool,
) -> None:
    project = await _project(pool, 2)
    await _verified(pool, project, 2)
    cause = uuid.uuid4()
    first = await maybe_request_training(pool, project, default_threshold=100, cause=cause)
    again = await maybe_request_training(pool, project, default_threshold=100, cause=cause)
    assert first is not None and again is not None and first.event_id == again.event_id
    await pool.execute("UPDATE training_jobs SET status = 'running' WHERE id = $1", first.event_id)
    assert await maybe_request_training(pool, project, default_threshold=100, cause=uuid.uuid4()) is None
    assert await maybe_request_training(pool, project, default_threshold=100, cause=cause) is None


async def test_after_a_finished_job_only_new_examples_count(pool: asyncpg.Pool) -> None:
    project = await _project(pool, 2)
    await _verified(pool, project, 2)
    first = await maybe_request_training(pool, project, default_threshold=100, cause=uuid.uuid4())
    assert first is not None
    await pool.execute("UPDATE training_jobs SET status = 'succeeded' WHERE id = $1", first.event_id)
    assert await maybe_request_training(pool, project, default_threshold=100, cause=uuid.uuid4()) is None
    await _verified(pool, project, 2)
    second = await maybe_request_training(pool, project, default_threshold=100, cause=uuid.uuid4())
    assert second is not None and second.new_examples == 2 and second.examples_count == 4
