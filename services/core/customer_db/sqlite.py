"""SQLite customer databases: statements run in killable worker processes (``sqlite_workers``) on read-only
connections (``sqlite_statement``); schema discovery, whose statements are querylift's own, runs in a thread."""

from __future__ import annotations

import asyncio
import os
import sqlite3

from services.core.customer_db.engine import QueryResult, RoleFinding, RoleReport
from services.core.customer_db.errors import DatabaseUnavailable
from services.core.customer_db.sqlite_statement import close_idle, column_values, connect, discover
from services.core.customer_db.sqlite_workers import SQLiteWorkers
from services.core.customer_db.urls import sqlite_path
from services.core.customer_db.values import QueryLimits
from services.core.schema import SchemaInfo
from services.core.sql.functions import sqlite_function_names
from services.core.values import ColumnValues


class SQLiteEngine:
    dialect = "sqlite"

    def __init__(self, workers: int | None = None) -> None:
        self._workers = SQLiteWorkers(sqlite_function_names(), workers)

    async def run_unchecked(
        self, url: str, text: str, limits: QueryLimits, namespace: str | None
    ) -> QueryResult:
        return await self._workers.run(url, text, limits)

    async def discover(self, url: str, sample_values: int, timeout_s: float) -> SchemaInfo:
        return await asyncio.to_thread(discover, url, sample_values, timeout_s)

    async def column_values(self, url: str, schema: SchemaInfo, timeout_s: float) -> list[ColumnValues]:
        return await asyncio.to_thread(column_values, url, schema, timeout_s)

    async def ping(self, url: str, timeout_s: float) -> bool:
        def _ping() -> None:
            conn = connect(url, timeout_s)
            try:
                conn.execute("SELECT 1").fetchone()
            finally:
                conn.close()

        try:
            await asyncio.to_thread(_ping)
        except (DatabaseUnavailable, sqlite3.DatabaseError, OSError):
            return False
        return True

    async def inspect_role(self, url: str, namespace: str | None, timeout_s: float) -> RoleReport:
        """SQLite has no accounts; querylift opens the file read-only whatever its permissions, but a file its
        OS user may write is worth knowing about."""
        path = sqlite_path(url)
        report = RoleReport(role=f"OS user {os.getuid() if hasattr(os, 'getuid') else '?'}")
        if os.access(path, os.W_OK):
            report.findings.append(
                RoleFinding(
                    "warn",
                    f"{path} is writable by querylift's OS user (it is opened read-only anyway; "
                    "chmod a-w or a read-only mount makes sure)",
                )
            )
        return report

    async def close(self) -> None:
        await asyncio.to_thread(self._workers.close)
        close_idle()
