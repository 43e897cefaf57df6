"""Customer projects and their schema versions in the system of record."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from events import Turn
from services.common.schema import SchemaInfo

_PROJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class ProjectError(Exception):
    """A project could not be registered; the message says why and what to do."""


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    database_url: str
    dialect: str
    domain: str | None
    description: str | None
    schema_version_id: int | None
    training_threshold: int | None
    canary_share: float


def _project(row: asyncpg.Record) -> Project:
    return Project(
        id=row["id"],
        name=row["name"],
        database_url=row["database_url"],
        dialect=row["dialect"],
        domain=row["domain"],
        description=row["description"],
        schema_version_id=row["current_schema_version_id"],
        training_threshold=row["training_threshold"],
        canary_share=float(row["canary_share"]),
    )


async def load_project(pool: asyncpg.Pool, project_id: str) -> Project | None:
    row = await pool.fetchrow("SELECT * FROM projects WHERE id = $1", project_id)
    return _project(row) if row else None


async def list_projects(pool: asyncpg.Pool) -> list[Project]:
    return [_project(r) for r in await pool.fetch("SELECT * FROM projects ORDER BY id")]


_schema_cache: dict[int, SchemaInfo] = {}


async def load_schema(pool: asyncpg.Pool, schema_version_id: int) -> SchemaInfo:
    """Schema versions never change once written, so they are cached for the life of the process."""
    cached = _schema_cache.get(schema_version_id)
    if cached is None:
        data = await pool.fetchval("SELECT schema FROM schema_versions WHERE id = $1", schema_version_id)
        if data is None:
            raise ProjectError(f"schema version {schema_version_id} does not exist")
        cached = _schema_cache[schema_version_id] = SchemaInfo.from_json(data)
    return cached


async def store_schema_version(pool: asyncpg.Pool, project_id: str, schema: SchemaInfo) -> tuple[int, bool]:
    """Record the schema (a new version only if its structure changed); returns (version id, changed)."""
    digest = schema.structure_hash()
    async with pool.acquire() as conn, conn.transaction():
        current = await conn.fetchval(
            "SELECT current_schema_version_id FROM projects WHERE id = $1", project_id
        )
        version_id = await conn.fetchval(
            "INSERT INTO schema_versions (project_id, hash, schema) VALUES ($1, $2, $3)"
            " ON CONFLICT (project_id, hash) DO UPDATE SET schema = EXCLUDED.schema RETURNING id",
            project_id,
            digest,
            schema.to_json(),
        )
        await conn.execute(
            "UPDATE projects SET current_schema_version_id = $2 WHERE id = $1", project_id, version_id
        )
    _schema_cache.pop(version_id, None)
    return int(version_id), current != version_id


async def upsert_project(
    pool: asyncpg.Pool,
    *,
    project_id: str,
    database_url: str,
    dialect: str,
    domain: str | None,
    description: str | None,
    training_threshold: int | None = None,
    name: str | None = None,
) -> None:
    if not _PROJECT_ID.match(project_id):
        raise ProjectError(
            f"project name {project_id!r} is not valid: use letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    await pool.execute(
        "INSERT INTO projects (id, name, database_url, dialect, domain, description, training_threshold)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (id) DO UPDATE SET database_url = EXCLUDED.database_url, dialect = EXCLUDED.dialect,"
        " domain = COALESCE(EXCLUDED.domain, projects.domain),"
        " description = COALESCE(EXCLUDED.description, projects.description),"
        " training_threshold = COALESCE(EXCLUDED.training_threshold, projects.training_threshold)",
        project_id,
        name or project_id,
        database_url,
        dialect,
        domain,
        description,
        training_threshold,
    )


async def record_question(
    pool: asyncpg.Pool, *, event_id: Any, project_id: str, conversation_id: str, user_id: str, question: str
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO conversations (id, project_id, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            conversation_id,
            project_id,
            user_id,
        )
        await conn.execute(
            "INSERT INTO messages (id, project_id, conversation_id, user_id, question) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (id) DO NOTHING",
            event_id,
            project_id,
            conversation_id,
            user_id,
            question,
        )


async def recent_turns(
    pool: asyncpg.Pool, project_id: str, conversation_id: str, *, limit: int = 3
) -> list[Turn]:
    rows = await pool.fetch(
        "SELECT question, sql, answer_text FROM answers WHERE project_id = $1 AND conversation_id = $2 AND ok"
        " ORDER BY created_at DESC LIMIT $3",
        project_id,
        conversation_id,
        limit,
    )
    return [Turn(question=r["question"], sql=r["sql"], answer_text=r["answer_text"]) for r in reversed(rows)]
