"""Customer databases: schema discovery, role inspection and read-only execution of checked SQL for SQLite,
PostgreSQL and MySQL/MariaDB, one engine per dialect behind one protocol (``engine.Engine``).

Generated SQL is untrusted. ``services.core.sql.check_sql`` approves one read-only query; this layer runs only
what it approved (``CustomerDatabases.run`` takes a ``CheckedSql``), with limits that hold on its own: read-only
sessions and transactions, statement timeouts, bytes per value and per result, and no session state that
outlives a statement. The third line is the database account itself: ``readonly_role_sql`` prints the
statements for one that can only read, and ``querylift project add`` refuses a stronger one by default.
"""

from __future__ import annotations

from services.core.customer_db.databases import CustomerDatabases
from services.core.customer_db.engine import QueryResult, RoleFinding, RoleReport
from services.core.customer_db.errors import (
    BadDatabaseURL,
    CustomerDatabaseError,
    DatabaseUnavailable,
    QueryFailed,
    QueryTimeout,
    SqlRefused,
)
from services.core.customer_db.readonly_role import readonly_role_sql
from services.core.customer_db.urls import dialect_of, redact
from services.core.customer_db.values import QueryLimits, json_value
from services.core.schema import SchemaInfo


async def discover_schema(url: str, *, sample_values: int = 3, timeout_s: float = 10) -> SchemaInfo:
    """Tables, columns, keys, a few sample values and row counts of a customer database.

    ``timeout_s`` bounds connecting and each discovery statement on servers (a slow row count falls back to
    the planner's estimate where there is one); a SQLite discovery as a whole may take ten times that.
    """
    databases = CustomerDatabases(connect_timeout_s=timeout_s)
    try:
        return await databases.discover(url, sample_values=sample_values, timeout_s=timeout_s)
    finally:
        await databases.close()


async def ping(url: str, *, timeout_s: float = 5) -> bool:
    """True when the database accepts a connection and answers SELECT 1."""
    databases = CustomerDatabases(connect_timeout_s=timeout_s)
    try:
        return await databases.ping(url)
    except CustomerDatabaseError:
        return False
    finally:
        await databases.close()


async def inspect_role(url: str, namespace: str | None = None, *, timeout_s: float = 10) -> RoleReport:
    """What the account in ``url`` may do beyond reading the project's own schema."""
    databases = CustomerDatabases(connect_timeout_s=timeout_s)
    try:
        return await databases.inspect_role(url, namespace, timeout_s=timeout_s)
    finally:
        await databases.close()


__all__ = [
    "BadDatabaseURL",
    "CustomerDatabaseError",
    "CustomerDatabases",
    "DatabaseUnavailable",
    "QueryFailed",
    "QueryLimits",
    "QueryResult",
    "QueryTimeout",
    "RoleFinding",
    "RoleReport",
    "SqlRefused",
    "dialect_of",
    "discover_schema",
    "inspect_role",
    "json_value",
    "ping",
    "readonly_role_sql",
    "redact",
]
