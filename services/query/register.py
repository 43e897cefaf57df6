"""Registering a customer database: discover its schema, store it as a version, pick its domain."""

from __future__ import annotations

import asyncpg

from services.common.customer_db import BadDatabaseURL, DatabaseUnavailable, dialect_of, discover_schema
from services.common.schema import SchemaInfo
from services.query.projects import ProjectError, store_schema_version, upsert_project
from services.retrieval.index import VectorIndex


async def register_project(
    pool: asyncpg.Pool,
    *,
    project_id: str,
    database_url: str,
    domain: str | None = None,
    description: str | None = None,
    training_threshold: int | None = None,
    index: VectorIndex | None = None,
) -> tuple[SchemaInfo, int, str]:
    """Returns the discovered schema, its version id and the project's domain.

    ``index`` is the vector index stale examples are removed from (pgvector in the system of record by default).
    """
    try:
        dialect = dialect_of(database_url)
        schema = await discover_schema(database_url)
    except (BadDatabaseURL, DatabaseUnavailable) as exc:
        raise ProjectError(str(exc)) from None
    if not schema.tables:
        raise ProjectError(
            "the database has no tables querylift can read; check the URL and the role's grants"
        )
    if domain is None:
        from services.retrieval.fewshot import detect_domain

        domain = detect_domain(schema)
    await upsert_project(
        pool,
        project_id=project_id,
        database_url=database_url,
        dialect=dialect,
        domain=domain,
        description=description,
        training_threshold=training_threshold,
    )
    version_id, changed = await store_schema_version(pool, project_id, schema)
    if changed:
        from services.retrieval.examples import mark_stale_for_schema
        from services.retrieval.index_pgvector import PgVectorIndex

        await mark_stale_for_schema(pool, index or PgVectorIndex(pool), project_id, schema, version_id)
    return schema, version_id, domain
