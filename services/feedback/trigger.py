"""The threshold trigger: one training.requested per project when enough new verified examples piled up."""

from __future__ import annotations

import uuid

import asyncpg

from events import TrainingRequested
from services.core import model_registry
from services.core.examples import store
from services.core.projects import training_threshold


async def maybe_request_training(
    pool: asyncpg.Pool, project_id: str, *, default_threshold: int, cause: uuid.UUID
) -> TrainingRequested | None:
    """Claims the project's single open-job slot (a unique partial index) before emitting, so redelivery or
    concurrent consumers can never request two trainings."""
    job_id = uuid.uuid5(uuid.NAMESPACE_OID, f"training:{cause}")
    threshold = await training_threshold(pool, project_id) or default_threshold
    claimed = await model_registry.get_job(pool, job_id)
    if claimed is not None:
        # This very cause claimed the slot before a crash kept its request from going out: emit it again with
        # the same id (downstream drops a duplicate), unless the job has moved on already.
        if claimed.status != "requested":
            return None
        request = TrainingRequested(
            project_id=project_id,
            examples_count=claimed.examples_count,
            new_examples=threshold,
            threshold=threshold,
        )
        request.event_id = job_id
        return request
    new, total = await store.usable_since_last_training(pool, project_id)
    if new < threshold:
        return None
    if not await model_registry.claim_requested_job(pool, job_id, project_id, total):
        return None  # another job of the project is open
    request = TrainingRequested(
        project_id=project_id,
        examples_count=total,
        new_examples=new,
        threshold=threshold,
    )
    request.event_id = job_id
    return request
