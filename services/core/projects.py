"""The ``projects`` and ``schema_versions`` tables: customer projects and their schema versions. Every
statement on these two tables is here (other tables' statements may join them to scope rows by project)."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from events import Turn
from services.core.schema import SchemaInfo

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
    #: What the project's database account may do beyond reading its schema (empty when it is read-only).
    role_warnings: tuple[str, ...] = ()
    #: When the project's column values were last collected (value grounding); None before the first time.
    values_collected_at: dt.datetime | None = None


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
        role_warnings=tuple(row["role_warnings"] or ()) if "role_warnings" in row else (),
        values_collected_at=row["values_collected_at"] if "values_collected_at" in row else None,
    )


async def load_project(pool: asyncpg.Pool, project_id: str) -> Project | None:
    row = await pool.fetchrow("SELECT * FROM projects WHERE id = $1", project_id)
    return _project(row) if row else None


class ProjectCache:
    """Project rows kept for ``ttl_s`` seconds, so a consumer that needs one per question (generation) does
    not read the same row hundreds of times a second. A change (new database URL, removal) is seen within
    ``ttl_s``; unknown projects are never cached, so a project registered a moment ago is found at once."""

    def __init__(self, pool: asyncpg.Pool, ttl_s: float = 5.0) -> None:
        self.pool = pool
        self.ttl_s = ttl_s
        self._rows: dict[str, tuple[float, Project]] = {}

    async def get(self, project_id: str) -> Project | None:
        now = time.monotonic()
        hit = self._rows.get(project_id)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        project = await load_project(self.pool, project_id)
        if project is None:
            self._rows.pop(project_id, None)
        elif self.ttl_s > 0:
            self._rows[project_id] = (now, project)
        return project


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


# One round trip for everything ingress needs: the project, the question recorded (only for a project with a
# schema), and the conversation's last answered turns, oldest first.
_ADMIT = """
WITH p AS (
    SELECT * FROM projects WHERE id = $1
), conversation AS (
    INSERT INTO conversations (id, project_id, user_id)
    SELECT $2, p.id, $3 FROM p WHERE p.current_schema_version_id IS NOT NULL
    ON CONFLICT DO NOTHING
), message AS (
    INSERT INTO messages (id, project_id, conversation_id, user_id, question)
    SELECT $4, p.id, $2, $3, $5 FROM p WHERE p.current_schema_version_id IS NOT NULL
    ON CONFLICT (id) DO NOTHING
)
SELECT p.*, (
    SELECT coalesce(json_agg(json_build_object('question', t.question, 'sql', t.sql,
                                               'answer_text', t.answer_text) ORDER BY t.created_at), '[]'::json)
    FROM (SELECT question, sql, answer_text, created_at FROM answers
          WHERE project_id = $1 AND conversation_id = $2 AND ok
          ORDER BY created_at DESC LIMIT $6) AS t
) AS history
FROM p
"""


async def admit_question(
    pool: asyncpg.Pool,
    *,
    event_id: Any,
    project_id: str,
    conversation_id: str,
    user_id: str,
    question: str,
    history_turns: int = 3,
) -> tuple[Project | None, list[Turn]]:
    """The question's project and conversation history; the question is recorded when the project exists
    and has a schema. ``(None, [])`` for an unknown project."""
    row = await pool.fetchrow(_ADMIT, project_id, conversation_id, user_id, event_id, question, history_turns)
    if row is None:
        return None, []
    history = [Turn(**turn) for turn in row["history"]]
    return _project(row), history


async def record_role_warnings(pool: asyncpg.Pool, project_id: str, warnings: list[str]) -> None:
    await pool.execute("UPDATE projects SET role_warnings = $2 WHERE id = $1", project_id, warnings)


async def projects_with_role_warnings(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, list[str]]:
    """Projects whose database account may do more than read, with what it may do."""
    rows = await conn.fetch(
        "SELECT id, role_warnings FROM projects WHERE cardinality(role_warnings) > 0 ORDER BY id"
    )
    return {r["id"]: list(r["role_warnings"]) for r in rows}


async def delete_project(pool: asyncpg.Pool, project_id: str) -> None:
    """The project and everything that cascades from it (examples, versions, conversations...)."""
    await pool.execute("DELETE FROM projects WHERE id = $1", project_id)


async def training_threshold(pool: asyncpg.Pool, project_id: str) -> int | None:
    """The project's own number of new examples that asks for a training, if it set one."""
    value = await pool.fetchval("SELECT training_threshold FROM projects WHERE id = $1", project_id)
    return int(value) if value is not None else None


async def canary_share(pool: asyncpg.Pool | asyncpg.Connection, project_id: str) -> float:
    value = await pool.fetchval("SELECT canary_share FROM projects WHERE id = $1", project_id)
    return float(value or 0.0)


async def set_canary_share(conn: asyncpg.Connection, project_id: str, share: float) -> None:
    """Called inside the model registry's transaction, so the share and the canary's status change together."""
    await conn.execute("UPDATE projects SET canary_share = $2 WHERE id = $1", project_id, share)


async def mark_values_collected(conn: asyncpg.Connection, project_id: str) -> dt.datetime:
    """Called inside the column values' replacing transaction; returns the time recorded."""
    collected: dt.datetime = await conn.fetchval(
        "UPDATE projects SET values_collected_at = clock_timestamp() WHERE id = $1 RETURNING values_collected_at",
        project_id,
    )
    return collected


async def values_collected_at(pool: asyncpg.Pool, project_id: str) -> dt.datetime | None:
    value: dt.datetime | None = await pool.fetchval(
        "SELECT values_collected_at FROM projects WHERE id = $1", project_id
    )
    return value


async def current_schema(pool: asyncpg.Pool, project_id: str) -> SchemaInfo | None:
    """The project's current schema, else its newest recorded one; None when it has none."""
    raw = await pool.fetchval(
        "SELECT s.schema FROM schema_versions s JOIN projects p ON p.id = s.project_id"
        " WHERE s.project_id = $1 ORDER BY (s.id = p.current_schema_version_id) DESC, s.id DESC LIMIT 1",
        project_id,
    )
    if raw is None:
        return None
    return SchemaInfo.from_json(json.loads(raw) if isinstance(raw, str) else raw)
