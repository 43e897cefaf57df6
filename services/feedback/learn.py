"""Turning judged answers into examples: verify, correct or reject, then index at once."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from services.core.answers import record_correction_checked
from services.core.customer_db import (
    CustomerDatabases,
    DatabaseUnavailable,
    QueryFailed,
    QueryTimeout,
    SqlRefused,
)
from services.core.examples.embedder import Embedder
from services.core.examples.index import VectorIndex
from services.core.examples.store import add_verified_example, apply_correction, mark_rated_down
from services.core.projects import load_project, load_schema
from services.core.sql import check_sql
from services.core.sql.mechanical import canonical_example_sql
from services.feedback.rules import Decision, judge

log = logging.getLogger(__name__)


class Learner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        index: VectorIndex,
        embedder: Embedder,
        databases: CustomerDatabases,
        *,
        sql_timeout_s: float = 10.0,
    ) -> None:
        self.pool = pool
        self.index = index
        self.embedder = embedder
        self.databases = databases
        self.sql_timeout_s = sql_timeout_s

    async def apply(self, answer: asyncpg.Record, feedback: asyncpg.Record) -> Decision:
        decision = judge(
            rating=feedback["rating"],
            thumbs=feedback["thumbs"],
            corrected_sql=feedback["corrected_sql"],
            answer_ok=bool(answer["ok"]),
        )
        project_id = answer["project_id"]
        project = await load_project(self.pool, project_id)
        if project is None or project.schema_version_id is None:
            return Decision("none", 0.0)
        schema = await load_schema(self.pool, project.schema_version_id)
        if decision.action == "correct":
            # Stored in the dialect's canonical form, so the model never learns a style the check refuses.
            corrected = canonical_example_sql(feedback["corrected_sql"], schema)
            ok = await self._correction_runs(project.database_url, corrected, schema)
            await record_correction_checked(self.pool, feedback["id"], ok)
            if not ok:
                # An unverifiable correction still tells us the answer was wrong.
                await mark_rated_down(self.pool, self.index, project_id, answer["id"])
                return Decision("reject", 0.0)
            await apply_correction(
                self.pool,
                self.index,
                self.embedder,
                project_id=project_id,
                answer_id=answer["id"],
                question=answer["question"],
                corrected_sql=check_sql(corrected, schema).sql or corrected,
                schema=schema,
                schema_version_id=project.schema_version_id,
            )
        elif decision.action == "verify" and answer["sql"]:
            await add_verified_example(
                self.pool,
                self.index,
                self.embedder,
                project_id=project_id,
                question=answer["question"],
                sql=canonical_example_sql(answer["sql"], schema),
                source="answer",
                quality=decision.quality,
                schema=schema,
                schema_version_id=project.schema_version_id,
                answer_id=answer["id"],
            )
        elif decision.action == "reject":
            await mark_rated_down(self.pool, self.index, project_id, answer["id"])
        return decision

    async def _correction_runs(self, database_url: str, sql: str, schema: Any) -> bool:
        """A corrected SQL is trusted only once it passes the same checks as generated SQL and runs read-only."""
        try:
            await self.databases.check_and_run(
                database_url, sql, schema, timeout_s=self.sql_timeout_s, row_limit=1
            )
        except (SqlRefused, QueryFailed, QueryTimeout, DatabaseUnavailable):
            return False
        return True
