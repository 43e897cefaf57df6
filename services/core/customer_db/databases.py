"""``CustomerDatabases``: the one way customer SQL runs.

``run`` takes only a ``CheckedSql``, which ``check_sql`` alone makes, and runs exactly its text on the engine of
its dialect under the configured limits; ``check_and_run`` checks and runs in one call. Every path that runs
customer SQL (answers, template answers, repair rounds, corrections, the training evaluator, the benchmarks)
goes through these two; ``tests/test_guarded_path.py`` fails if another appears.
"""

from __future__ import annotations

from services.core.customer_db.engine import Engine, QueryResult, RoleReport
from services.core.customer_db.errors import QueryFailed, SqlRefused
from services.core.customer_db.mysql import MySQLEngine
from services.core.customer_db.postgres import PostgresEngine
from services.core.customer_db.sqlite import SQLiteEngine
from services.core.customer_db.urls import dialect_of
from services.core.customer_db.values import QueryLimits
from services.core.schema import SchemaInfo
from services.core.sql import CheckedSql, SqlCheck, check_sql
from services.core.values import ColumnValues


class CustomerDatabases:
    """Read-only query execution against customer databases, with connections kept per URL."""

    def __init__(
        self,
        *,
        max_connections: int = 4,
        connect_timeout_s: float = 10.0,
        sqlite_workers: int | None = None,
        max_value_bytes: int = 1 << 20,
        max_result_bytes: int = 8 << 20,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.max_value_bytes = max_value_bytes
        self.max_result_bytes = max_result_bytes
        self._engines: dict[str, Engine] = {
            "sqlite": SQLiteEngine(sqlite_workers),
            "postgres": PostgresEngine(max_connections, connect_timeout_s),
            "mysql": MySQLEngine(max_connections, connect_timeout_s),
        }

    def limits(self, *, timeout_s: float, row_limit: int) -> QueryLimits:
        return QueryLimits(
            timeout_s=timeout_s,
            row_limit=row_limit,
            max_value_bytes=self.max_value_bytes,
            max_result_bytes=self.max_result_bytes,
        )

    async def run(self, url: str, checked: CheckedSql, *, timeout_s: float, row_limit: int) -> QueryResult:
        """Run an approved statement read-only; at most ``row_limit`` rows come back (``truncated`` says if
        more existed, ``notes`` if byte limits cut it).

        Raises DatabaseUnavailable (connecting failed; retryable), QueryFailed (the engine's message),
        QueryTimeout, or BadDatabaseURL."""
        if not isinstance(checked, CheckedSql):
            raise TypeError("CustomerDatabases.run takes a CheckedSql: check the SQL with check_sql first")
        limits = self.limits(timeout_s=timeout_s, row_limit=row_limit)
        dialect = dialect_of(url)
        if checked.dialect != dialect:
            raise QueryFailed(
                f"the statement was checked for {checked.dialect}, but the database is {dialect}"
            )
        return await self._engines[dialect].run_unchecked(url, checked.text, limits, checked.namespace)

    async def check_and_run(
        self, url: str, sql: str, schema: SchemaInfo, *, timeout_s: float, row_limit: int
    ) -> tuple[SqlCheck, QueryResult]:
        """Check ``sql`` against the project's schema and run what was approved; SqlRefused when refused."""
        check = check_sql(sql, schema)
        if check.checked is None:
            raise SqlRefused(check)
        return check, await self.run(url, check.checked, timeout_s=timeout_s, row_limit=row_limit)

    async def discover(self, url: str, *, sample_values: int = 3, timeout_s: float = 10.0) -> SchemaInfo:
        return await self._engines[dialect_of(url)].discover(url, sample_values, timeout_s)

    async def column_values(
        self, url: str, schema: SchemaInfo, *, timeout_s: float = 10.0
    ) -> list[ColumnValues]:
        """The distinct short text values of each text column, bounded (for value grounding)."""
        return await self._engines[dialect_of(url)].column_values(url, schema, timeout_s)

    async def inspect_role(
        self, url: str, namespace: str | None = None, *, timeout_s: float = 10.0
    ) -> RoleReport:
        return await self._engines[dialect_of(url)].inspect_role(url, namespace, timeout_s)

    async def ping(self, url: str) -> bool:
        """True when the database accepts a connection and answers SELECT 1."""
        return await self._engines[dialect_of(url)].ping(url, min(self.connect_timeout_s, 5.0))

    async def close(self) -> None:
        for engine in self._engines.values():
            await engine.close()
