"""A corrected SQL is checked and run before it is accepted, so the person correcting sees its rows and a
correction that would be refused or fail never reaches the learning loop (the feedback consumer checks it
again: a correction that stopped running by then is not learned)."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from services.core.customer_db import (
    CustomerDatabaseError,
    CustomerDatabases,
    SqlRefused,
    json_value,
)
from services.core.projects import load_project, load_schema

#: Rows of a correction's result shown to the person who wrote it.
PREVIEW_ROWS = 20


@dataclass(frozen=True)
class CorrectionTrial:
    ok: bool
    #: What runs (the checked text) when ok; otherwise what the person typed.
    sql: str
    message: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[object]] = field(default_factory=list)
    row_count: int = 0
    truncated: bool = False


async def try_correction(
    pool: asyncpg.Pool,
    databases: CustomerDatabases,
    project_id: str,
    sql: str,
    *,
    timeout_s: float,
    row_limit: int,
) -> CorrectionTrial:
    """Check ``sql`` against the project's current schema and run it read-only."""
    project = await load_project(pool, project_id)
    if project is None or project.schema_version_id is None:
        return CorrectionTrial(False, sql, f"project {project_id!r} has no schema")
    schema = await load_schema(pool, project.schema_version_id)
    try:
        check, result = await databases.check_and_run(
            project.database_url, sql, schema, timeout_s=timeout_s, row_limit=row_limit
        )
    except SqlRefused as exc:
        return CorrectionTrial(False, sql, f"refused by the SQL check: {exc.check.message}")
    except CustomerDatabaseError as exc:
        return CorrectionTrial(False, sql, f"the database could not run it: {exc}")
    rows = [[json_value(v) for v in row] for row in result.rows[:PREVIEW_ROWS]]
    return CorrectionTrial(
        True,
        check.sql or sql,
        f"{len(result.rows)} row(s){' (cut at the row limit)' if result.truncated else ''}",
        columns=result.columns,
        rows=rows,
        row_count=len(result.rows),
        truncated=result.truncated,
    )
