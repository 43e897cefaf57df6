"""The threshold trigger: one training.requested per project when enough new verified examples piled up."""

from __future__ import annotations

import uuid

import asyncpg

from events import TrainingRequested
from services.core.projects import training_threshold

_COUNT = """
SELECT count(*) FILTER (WHERE e.created_at > coalesce(last.requested_at, '-infinity')) AS new,
       count(*) AS total
FROM examples e
LEFT JOIN LATERAL (
    SELECT max(requested_at) AS requested_at FROM training_jobs
    WHERE project_id = $1 AND status <> 'failed' AND status <> 'cancelled'
) last ON true
WHERE e.project_id = $1 AND e.verified AND NOT e.stale AND NOT e.rated_down
"""


async def maybe_request_training(
    pool: asyncpg.Pool, project_id: str, *, default_threshold: int, cause: uuid.UUID
) -> TrainingRequested | None:
    """Claims the project's single open-job slot (a unique partial index) before emitting, so redelivery or
    concurrent consumers can never request two trainings."""
    job_id = uuid.uuid5(uuid.NAMESPACE_OID, f"training:{cause}")
    threshold = await training_threshold(pool, project_id) or default_threshold
    claimed = await pool.fetchrow("SELECT status, examples_count FROM training_jobs WHERE id = $1", job_id)
    if claimed is not None:
        # This very cause claimed the slot before a crash kept its request from going out: emit it again with
        # the same id (downstream drops a duplicate), unless the job has moved on already.
        if claimed["status"] != "requested":
            return None
        request = TrainingRequested(
            project_id=project_id,
            examples_count=claimed["examples_count"],
            new_examples=threshold,
            threshold=threshold,
        )
        request.event_id = job_id
        return request
    counts = await pool.fetchrow(_COUNT, project_id)
    if counts is None or counts["new"] < threshold:
        return None
    inserted = await pool.fetchval(
        "INSERT INTO training_jobs (id, project_id, status, examples_count) VALUES ($1, $2, 'requested', $3)"
        " ON CONFLICT DO NOTHING RETURNING id",
        job_id,
        project_id,
        counts["total"],
    )
    if inserted is None:
        return None  # another job of the project is open
    request = TrainingRequested(
        project_id=project_id,
        examples_count=counts["total"],
        new_examples=counts["new"],
        threshold=threshold,
    )
    request.event_id = job_id
    return request
