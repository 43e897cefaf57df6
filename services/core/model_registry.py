"""The model registry (``model_versions``) and training-job bookkeeping (``training_jobs``).

A project serves at most one ``active`` version (enforced by a unique index) and at most one ``canary``;
having no active version means the base model. Promotion retires the previous active version; rollback
re-activates the version that was active before the current one (or falls back to the base model). Which
versions were once active is kept in ``metrics.promoted_at`` so candidates rejected by the gate and
replaced canaries are never "rolled back to".
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg

from services.core.llm.base import AdapterRef
from services.core.projects import canary_share, set_canary_share

VersionStatus = Literal["candidate", "canary", "active", "retired"]
JobStatus = Literal["requested", "submitted", "running", "succeeded", "failed", "cancelled", "rejected"]
OPEN_JOB_STATUSES = ("requested", "submitted", "running")
_COLUMNS = (
    "id, project_id, version, base_model, adapter_path, checksum, metrics, status, training_job_id, "
    "created_at, updated_at"
)


class RegistryError(Exception):
    """A registry operation that cannot be applied (unknown version, wrong state)."""


class JobAlreadyOpen(RegistryError):
    """The project already has an unfinished training job."""


@dataclass
class ModelVersion:
    id: int
    project_id: str
    version: int
    base_model: str
    adapter_path: str | None
    checksum: str | None
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    training_job_id: uuid.UUID | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ModelVersion:
        metrics = row["metrics"]
        if isinstance(metrics, str):  # a pool without the json codec
            metrics = json.loads(metrics)
        return cls(
            id=row["id"],
            project_id=row["project_id"],
            version=row["version"],
            base_model=row["base_model"],
            adapter_path=row["adapter_path"],
            checksum=row["checksum"],
            status=row["status"],
            metrics=dict(metrics or {}),
            training_job_id=row["training_job_id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def adapter_ref(self) -> AdapterRef | None:
        if not self.adapter_path:
            return None
        return AdapterRef(project_id=self.project_id, version=self.version, path=self.adapter_path)


@dataclass
class ServingState:
    """What a project serves now: the active version (None: base model) and an optional canary."""

    active: ModelVersion | None
    canary: ModelVersion | None
    canary_share: float


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


async def next_version(pool: asyncpg.Pool | asyncpg.Connection, project_id: str) -> int:
    value = await pool.fetchval(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE project_id = $1", project_id
    )
    return int(value)


async def register_candidate(
    pool: asyncpg.Pool,
    project_id: str,
    *,
    base_model: str,
    adapter_path: str | None,
    checksum: str | None,
    metrics: dict[str, Any] | None = None,
    training_job_id: uuid.UUID | None = None,
    version: int | None = None,
) -> ModelVersion:
    """Record a trained adapter as a candidate; ``version`` defaults to the project's next number."""
    async with pool.acquire() as conn, conn.transaction():
        # Serialise version numbering per project without a table lock.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('model_versions:' || $1))", project_id)
        if version is None:
            version = await next_version(conn, project_id)
        row = await conn.fetchrow(
            f"INSERT INTO model_versions (project_id, version, base_model, adapter_path, checksum, metrics, status,"
            f" training_job_id) VALUES ($1, $2, $3, $4, $5, $6, 'candidate', $7) RETURNING {_COLUMNS}",
            project_id,
            version,
            base_model,
            adapter_path,
            checksum,
            metrics or {},
            training_job_id,
        )
    return ModelVersion.from_row(row)


async def get_version(
    pool: asyncpg.Pool | asyncpg.Connection, project_id: str, version: int
) -> ModelVersion | None:
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS} FROM model_versions WHERE project_id = $1 AND version = $2", project_id, version
    )
    return ModelVersion.from_row(row) if row else None


async def list_versions(pool: asyncpg.Pool, project_id: str) -> list[ModelVersion]:
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM model_versions WHERE project_id = $1 ORDER BY version", project_id
    )
    return [ModelVersion.from_row(r) for r in rows]


async def _lock_project(conn: asyncpg.Connection, project_id: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('model_versions:' || $1))", project_id)


async def _set_status(
    conn: asyncpg.Connection, row_id: int, status: VersionStatus, metrics_patch: dict[str, Any] | None = None
) -> ModelVersion:
    row = await conn.fetchrow(
        f"UPDATE model_versions SET status = $2, metrics = metrics || $3::jsonb, updated_at = now()"
        f" WHERE id = $1 RETURNING {_COLUMNS}",
        row_id,
        status,
        metrics_patch or {},
    )
    return ModelVersion.from_row(row)


async def promote(pool: asyncpg.Pool, project_id: str, version: int) -> ModelVersion:
    """Make ``version`` the active one; the previously active version is retired. Idempotent."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock_project(conn, project_id)
        target = await get_version(conn, project_id, version)
        if target is None:
            raise RegistryError(f"project {project_id!r} has no model version {version}")
        if target.status == "active":
            return target
        # Retire first: the unique index allows one active row per project at any moment.
        await conn.execute(
            "UPDATE model_versions SET status = 'retired', updated_at = now()"
            " WHERE project_id = $1 AND status = 'active'",
            project_id,
        )
        if target.status == "canary":
            await set_canary_share(conn, project_id, 0.0)
        return await _set_status(
            conn, target.id, "active", {"promoted_at": _now_iso(), "rolled_back_at": None}
        )


async def set_canary(pool: asyncpg.Pool, project_id: str, version: int, share: float) -> ModelVersion:
    """Send ``share`` of the project's questions to ``version``; a previous canary is retired."""
    if not 0.0 <= share <= 1.0:
        raise ValueError("canary share must be within [0, 1]")
    async with pool.acquire() as conn, conn.transaction():
        await _lock_project(conn, project_id)
        target = await get_version(conn, project_id, version)
        if target is None:
            raise RegistryError(f"project {project_id!r} has no model version {version}")
        if target.status == "active":
            raise RegistryError(f"version {version} of {project_id!r} is already active")
        await conn.execute(
            "UPDATE model_versions SET status = 'retired', updated_at = now()"
            " WHERE project_id = $1 AND status = 'canary' AND id <> $2",
            project_id,
            target.id,
        )
        await set_canary_share(conn, project_id, share)
        return await _set_status(conn, target.id, "canary", {"canary_since": _now_iso()})


async def clear_canary(pool: asyncpg.Pool, project_id: str) -> ModelVersion | None:
    """Stop the canary (its version is retired); returns the version that was on canary, if any."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock_project(conn, project_id)
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM model_versions WHERE project_id = $1 AND status = 'canary'", project_id
        )
        await set_canary_share(conn, project_id, 0.0)
        if row is None:
            return None
        return await _set_status(conn, row["id"], "retired")


async def rollback(pool: asyncpg.Pool, project_id: str) -> ModelVersion | None:
    """Retire the active version and re-activate the one active before it; None means the base model."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock_project(conn, project_id)
        current = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM model_versions WHERE project_id = $1 AND status = 'active'", project_id
        )
        if current is not None:
            await _set_status(conn, current["id"], "retired", {"rolled_back_at": _now_iso()})
        # The most recently promoted version that was not itself rolled back.
        previous = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM model_versions WHERE project_id = $1 AND status = 'retired'"
            " AND metrics ? 'promoted_at' AND metrics->>'promoted_at' IS NOT NULL"
            " AND (metrics->>'rolled_back_at') IS NULL AND ($2::bigint IS NULL OR id <> $2)"
            " ORDER BY metrics->>'promoted_at' DESC LIMIT 1",
            project_id,
            current["id"] if current is not None else None,
        )
        if previous is None:
            return None
        return await _set_status(conn, previous["id"], "active", {"promoted_at": _now_iso()})


async def active_and_canary(pool: asyncpg.Pool, project_id: str) -> ServingState:
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM model_versions WHERE project_id = $1 AND status IN ('active', 'canary')",
        project_id,
    )
    share = await canary_share(pool, project_id)
    by_status = {r["status"]: ModelVersion.from_row(r) for r in rows}
    canary = by_status.get("canary")
    return ServingState(active=by_status.get("active"), canary=canary, canary_share=share if canary else 0.0)


async def reject_candidate(
    pool: asyncpg.Pool, project_id: str, version: int, metrics: dict[str, Any] | None = None
) -> ModelVersion:
    """A candidate that failed the evaluation gate: retired without ever serving."""
    async with pool.acquire() as conn, conn.transaction():
        target = await get_version(conn, project_id, version)
        if target is None:
            raise RegistryError(f"project {project_id!r} has no model version {version}")
        return await _set_status(conn, target.id, "retired", {**(metrics or {}), "rejected_at": _now_iso()})


async def update_metrics(pool: asyncpg.Pool, project_id: str, version: int, metrics: dict[str, Any]) -> None:
    await pool.execute(
        "UPDATE model_versions SET metrics = metrics || $3::jsonb, updated_at = now()"
        " WHERE project_id = $1 AND version = $2",
        project_id,
        version,
        metrics,
    )


# --- training jobs ----------------------------------------------------------------------------------------


@dataclass
class TrainingJob:
    id: uuid.UUID
    project_id: str
    status: str
    ray_job_id: str | None
    examples_count: int
    error: str | None
    metrics: dict[str, Any]
    requested_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


def _job(row: asyncpg.Record) -> TrainingJob:
    metrics = row["metrics"]
    if isinstance(metrics, str):
        metrics = json.loads(metrics)
    return TrainingJob(
        id=row["id"],
        project_id=row["project_id"],
        status=row["status"],
        ray_job_id=row["ray_job_id"],
        examples_count=row["examples_count"],
        error=row["error"],
        metrics=dict(metrics or {}),
        requested_at=row["requested_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


async def start_job(
    pool: asyncpg.Pool,
    project_id: str,
    job_id: uuid.UUID,
    *,
    examples_count: int = 0,
    status: JobStatus = "running",
    ray_job_id: str | None = None,
) -> TrainingJob:
    """Create (or move on) the job row; raises JobAlreadyOpen when another job of the project is unfinished.

    Idempotent for the same ``job_id``: a redelivered request updates its own row instead of failing.
    """
    try:
        row = await pool.fetchrow(
            "INSERT INTO training_jobs (id, project_id, status, ray_job_id, examples_count, started_at)"
            " VALUES ($1, $2, $3, $4, $5, CASE WHEN $3 = 'running' THEN now() END)"
            " ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status,"
            "  ray_job_id = COALESCE(EXCLUDED.ray_job_id, training_jobs.ray_job_id),"
            "  examples_count = GREATEST(EXCLUDED.examples_count, training_jobs.examples_count),"
            "  started_at = COALESCE(training_jobs.started_at, EXCLUDED.started_at)"
            " WHERE training_jobs.project_id = EXCLUDED.project_id"
            " RETURNING *",
            job_id,
            project_id,
            status,
            ray_job_id,
            examples_count,
        )
    except asyncpg.UniqueViolationError as exc:
        raise JobAlreadyOpen(f"project {project_id!r} already has an unfinished training job") from exc
    if row is None:
        raise RegistryError(f"training job {job_id} belongs to another project")
    return _job(row)


async def set_job_status(
    pool: asyncpg.Pool, job_id: uuid.UUID, status: JobStatus, *, ray_job_id: str | None = None
) -> None:
    await pool.execute(
        "UPDATE training_jobs SET status = $2, ray_job_id = COALESCE($3, ray_job_id),"
        " started_at = CASE WHEN $2 = 'running' THEN COALESCE(started_at, now()) ELSE started_at END"
        " WHERE id = $1",
        job_id,
        status,
        ray_job_id,
    )


async def finish_job(
    pool: asyncpg.Pool,
    job_id: uuid.UUID,
    status: JobStatus,
    error: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> TrainingJob:
    if status in OPEN_JOB_STATUSES:
        raise ValueError(f"{status!r} is not a final job status")
    row = await pool.fetchrow(
        "UPDATE training_jobs SET status = $2, error = $3, metrics = metrics || $4::jsonb, finished_at = now()"
        " WHERE id = $1 RETURNING *",
        job_id,
        status,
        error,
        metrics or {},
    )
    if row is None:
        raise RegistryError(f"no training job {job_id}")
    return _job(row)


async def get_job(pool: asyncpg.Pool, job_id: uuid.UUID) -> TrainingJob | None:
    row = await pool.fetchrow("SELECT * FROM training_jobs WHERE id = $1", job_id)
    return _job(row) if row else None


async def claim_requested_job(
    pool: asyncpg.Pool, job_id: uuid.UUID, project_id: str, examples_count: int
) -> bool:
    """Takes the project's single open-job slot (a unique partial index) for a requested job; False when
    another job of the project is open."""
    inserted = await pool.fetchval(
        "INSERT INTO training_jobs (id, project_id, status, examples_count) VALUES ($1, $2, 'requested', $3)"
        " ON CONFLICT DO NOTHING RETURNING id",
        job_id,
        project_id,
        examples_count,
    )
    return inserted is not None


async def first_job(pool: asyncpg.Pool, project_id: str) -> TrainingJob | None:
    row = await pool.fetchrow(
        "SELECT * FROM training_jobs WHERE project_id = $1 ORDER BY requested_at LIMIT 1", project_id
    )
    return _job(row) if row else None
