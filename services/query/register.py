"""Registering a customer database: inspect its account, discover its schema, store it as a version, pick its
domain."""

from __future__ import annotations

import asyncpg

from services.core.column_values_store import replace_values
from services.core.customer_db import (
    BadDatabaseURL,
    CustomerDatabases,
    DatabaseUnavailable,
    RoleReport,
    dialect_of,
    discover_schema,
    inspect_role,
    readonly_role_sql,
)
from services.core.customer_db.urls import server_url
from services.core.examples.fewshot import detect_domain
from services.core.examples.index import VectorIndex
from services.core.examples.index_pgvector import PgVectorIndex
from services.core.examples.store import mark_stale_for_schema
from services.core.projects import ProjectError, record_role_warnings, store_schema_version, upsert_project
from services.core.schema import SchemaInfo
from services.core.values import ColumnValues


async def register_project(
    pool: asyncpg.Pool,
    *,
    project_id: str,
    database_url: str,
    domain: str | None = None,
    description: str | None = None,
    training_threshold: int | None = None,
    index: VectorIndex | None = None,
    allow_privileged_role: bool = False,
) -> tuple[SchemaInfo, int, str]:
    """Returns the discovered schema, its version id and the project's domain.

    The database account is inspected first: one that may do more than read the project's schema (a
    superuser, file or server privileges, write grants, other schemas or databases) is refused unless
    ``allow_privileged_role``; what it may do is recorded either way and shown by ``querylift status``.
    ``index`` is the vector index stale examples are removed from (pgvector in the system of record by default).
    """
    try:
        dialect = dialect_of(database_url)
        schema = await discover_schema(database_url)
        role = await inspect_role(database_url, schema.namespace)
    except (BadDatabaseURL, DatabaseUnavailable) as exc:
        raise ProjectError(str(exc)) from None
    if role.privileged and not allow_privileged_role:
        raise ProjectError(privileged_role_message(role, database_url, schema))
    if not schema.tables:
        raise ProjectError(
            "the database has no tables querylift can read; check the URL and the role's grants"
        )
    if domain is None:
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
    await record_role_warnings(pool, project_id, role.lines())
    version_id, changed = await store_schema_version(pool, project_id, schema)
    # Values are collected after the schema, with its row counts; a database that will not give them is
    # still registered (answers then go without value hints).
    try:
        values = await collect_values(database_url, schema)
    except DatabaseUnavailable:
        values = []
    await replace_values(pool, project_id, values)
    if changed:
        await mark_stale_for_schema(pool, index or PgVectorIndex(pool), project_id, schema, version_id)
    return schema, version_id, domain


def privileged_role_message(role: RoleReport, database_url: str, schema: SchemaInfo) -> str:
    """Why the account is refused, and the statements that create one querylift accepts."""
    found = "; ".join(f.what for f in role.findings if f.level == "refuse")
    database = server_url(database_url, 0).database or "your_database"
    try:
        statements = readonly_role_sql(
            schema.dialect, "querylift_ro", database, schema=schema.namespace or "public"
        )
    except ValueError:
        statements = readonly_role_sql(schema.dialect, "querylift_ro", "your_database")
    shown = "\n".join(f"  {s};" for s in statements)
    return (
        f"the database account {role.role} may do more than read the project's schema ({found}). "
        "Generated SQL is checked before it runs, but a read-only account is the layer that holds even if a "
        f"check were ever passed. Create one and register with its URL:\n{shown}\n"
        "or pass --allow-privileged-role to register with this account anyway (the warning stays in "
        "`querylift status`)."
    )


async def collect_values(database_url: str, schema: SchemaInfo) -> list[ColumnValues]:
    databases = CustomerDatabases()
    try:
        return await databases.column_values(database_url, schema)
    finally:
        await databases.close()
