"""MySQL and MariaDB customer databases.

Every statement runs in a session of its own, closed afterwards, so nothing it could leave behind (a named
lock, a user variable, a temporary table) outlives it; a semaphore per URL bounds the sessions open at once.
The session is read-only (``SET SESSION TRANSACTION READ ONLY``, ``START TRANSACTION READ ONLY``), has
multi-statements switched off, local infile off, a statement time limit (MariaDB ``max_statement_time``, MySQL
``max_execution_time``), ``sql_select_limit`` and ``group_concat_max_len`` set, and an ``sql_mode`` without the
modes that change how text is read (ANSI_QUOTES, NO_BACKSLASH_ESCAPES, PIPES_AS_CONCAT), so the server reads
the statement as sqlglot's MySQL dialect wrote it. Rows are streamed (unbuffered cursor) under the result's
byte budget; the server's ``max_allowed_packet`` bounds one value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import aiomysql
import pymysql
from pymysql.constants import CLIENT

from services.core.customer_db.engine import QueryResult, RoleFinding, RoleReport
from services.core.customer_db.errors import BadDatabaseURL, DatabaseUnavailable, QueryFailed, QueryTimeout
from services.core.customer_db.urls import describe_server, redact, scrub, server_url
from services.core.customer_db.values import (
    VALUE_SCAN_ROWS,
    QueryLimits,
    ResultBudget,
    column_values_sql,
    is_binary,
    is_textual,
    samples,
)
from services.core.schema import Column, ForeignKey, SchemaInfo, Table
from services.core.values import MAX_VALUE_CHARS, MAX_VALUES_PER_COLUMN, MAX_VALUES_PER_PROJECT, ColumnValues

SAMPLE_SCAN_ROWS = 1000
UNREACHABLE = {2002, 2003, 2005, 2006, 2013, 1040, 1203}
TIMEOUTS = {1969, 3024}  # MariaDB max_statement_time, MySQL max_execution_time
#: sql_mode flags that change how a statement's text is read; sqlglot writes for a server without them. The
#: combination modes go too: setting one sets ANSI_QUOTES and PIPES_AS_CONCAT again, and MariaDB's MSSQL reads
#: [...] as a quoted name and ORACLE switches to another grammar.
_TEXT_MODES = frozenset(
    {
        "ANSI_QUOTES",
        "NO_BACKSLASH_ESCAPES",
        "PIPES_AS_CONCAT",
        "ANSI",
        "ORACLE",
        "MSSQL",
        "DB2",
        "POSTGRESQL",
        "MAXDB",
        "MYSQL323",
        "MYSQL40",
    }
)
#: The connection's character set. The statement is sent encoded by Python's codec and read by the server's:
#: only in UTF-8 do they agree on every character (Python encodes "¥" as byte 0x5C in sjis and ujis, which the
#: server reads as a backslash escaping the quote after it), so a charset option in the URL is not used.
_CHARSET = "utf8mb4"
#: Global privileges a read-only account never needs (USAGE means none).
_HARMLESS_GLOBAL = frozenset({"USAGE"})
_READ_PRIVILEGES = frozenset({"SELECT", "SHOW VIEW"})


def unavailable(url: str, error: BaseException) -> DatabaseUnavailable:
    where = describe_server(url, 3306)
    code = error.args[0] if isinstance(error, pymysql.err.MySQLError) and error.args else None
    if code == 1045:
        hint = "the server refused the login: check the user name and password in the URL"
    elif code == 1049:
        hint = "the database does not exist: check the database name in the URL"
    elif code == 1044:
        hint = "the user may not access this database: grant it SELECT on the database"
    elif code in (1040, 1203):
        hint = "the server has no free connections; try again later"
    elif code in UNREACHABLE or isinstance(error, OSError | TimeoutError):
        hint = "the connection was refused or timed out: check that the server is running and reachable"
    else:
        hint = f"{type(error).__name__}: {error}"
    return DatabaseUnavailable(scrub(f"cannot connect to MySQL/MariaDB at {where}: {hint}", url))


async def connect(url: str, timeout_s: float) -> aiomysql.Connection:
    parts = server_url(url, 3306)
    if not parts.database:
        raise BadDatabaseURL(f"MySQL URL {redact(url)} names no database: add /database_name")
    conn = aiomysql.Connection(
        host=parts.host,
        port=parts.port,
        user=parts.user or "root",
        password=parts.password or "",
        db=parts.database,
        charset=_CHARSET,
        connect_timeout=timeout_s,
        autocommit=False,
        local_infile=False,
        init_command="SET SESSION TRANSACTION READ ONLY",
    )
    # aiomysql always asks for multi-statement support; one statement per call is part of the safety story.
    conn.client_flag &= ~CLIENT.MULTI_STATEMENTS
    try:
        await asyncio.wait_for(conn._connect(), timeout_s + 1)
    except (pymysql.err.MySQLError, OSError, TimeoutError) as error:
        conn.close()
        raise unavailable(url, error) from None
    return conn


async def fetch(
    conn: aiomysql.Connection, sql: str, args: Sequence[Any] | None = None
) -> list[tuple[Any, ...]]:
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        return list(await cur.fetchall())


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _session_sql(timeout_s: float, mariadb: bool, sql_mode: str, limits: QueryLimits | None) -> str:
    timeout = (
        f"max_statement_time = {max(timeout_s, 0.001):.3f}"
        if mariadb
        else f"max_execution_time = {max(1, int(timeout_s * 1000))}"
    )
    modes = ",".join(m for m in sql_mode.split(",") if m and m.upper() not in _TEXT_MODES)
    parts = [f"SESSION {timeout}", "SESSION sql_mode = " + pymysql.converters.escape_string(modes).join("''")]
    if limits is not None:
        parts.append(f"SESSION sql_select_limit = {limits.row_limit + 1}")
        parts.append(f"SESSION group_concat_max_len = {max(4, limits.max_value_bytes)}")
    return "SET " + ", ".join(parts)


async def _prepare_session(
    conn: aiomysql.Connection, timeout_s: float, limits: QueryLimits | None = None
) -> bool:
    """Sets the session's limits and text-reading modes; returns whether the server is MariaDB."""
    version, sql_mode = (await fetch(conn, "SELECT VERSION(), @@SESSION.sql_mode"))[0]
    mariadb = "mariadb" in str(version).lower()
    await fetch(conn, _session_sql(timeout_s, mariadb, str(sql_mode or ""), limits))
    return mariadb


class MySQLEngine:
    dialect = "mysql"

    def __init__(self, max_connections: int = 4, connect_timeout_s: float = 10.0) -> None:
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self._slots: dict[str, asyncio.Semaphore] = {}

    def _slot(self, url: str) -> asyncio.Semaphore:
        slot = self._slots.get(url)
        if slot is None:
            server_url(url, 3306)  # validate early
            slot = self._slots[url] = asyncio.Semaphore(self.max_connections)
        return slot

    async def run_unchecked(
        self, url: str, text: str, limits: QueryLimits, namespace: str | None
    ) -> QueryResult:
        async with self._slot(url):
            conn = await connect(url, self.connect_timeout_s)
            try:
                return await self._run(conn, url, text, limits)
            finally:
                conn.close()  # a session per statement: no lock, variable or temporary table survives it

    async def _run(self, conn: aiomysql.Connection, url: str, text: str, limits: QueryLimits) -> QueryResult:
        try:
            started = time.monotonic()
            await _prepare_session(conn, limits.timeout_s, limits)
            await fetch(conn, "START TRANSACTION READ ONLY")
            cursor = await conn.cursor(aiomysql.SSCursor)
            budget = ResultBudget(limits)
            await asyncio.wait_for(cursor.execute(text), limits.timeout_s + 5)
            columns = [d[0] for d in cursor.description or []]
            # A value may be as large as the server's max_allowed_packet: fetch as few rows at once as keep
            # a batch inside the byte budget.
            size = budget.batch(len(columns), max(limits.max_value_bytes, 16 << 20))
            if columns:
                while True:
                    rows = await asyncio.wait_for(cursor.fetchmany(size), limits.timeout_s + 5)
                    if not rows or not all(budget.add(row) for row in rows):
                        break
            return QueryResult(
                columns=columns,
                rows=budget.rows,
                truncated=budget.truncated,
                seconds=time.monotonic() - started,
                notes=budget.notes,
            )
        except TimeoutError:
            raise QueryTimeout(f"query exceeded the {limits.timeout_s:g} s time limit") from None
        except pymysql.err.MySQLError as error:
            code = error.args[0] if error.args else None
            if code in TIMEOUTS:
                raise QueryTimeout(f"query exceeded the {limits.timeout_s:g} s time limit") from None
            if code in UNREACHABLE:
                raise unavailable(url, error) from None
            message = error.args[1] if len(error.args) > 1 else str(error)
            raise QueryFailed(scrub(str(message), url)) from None

    async def discover(self, url: str, sample_values: int, timeout_s: float) -> SchemaInfo:
        conn = await connect(url, timeout_s)
        try:
            await _prepare_session(conn, timeout_s)
            await fetch(conn, "START TRANSACTION READ ONLY")
            return await _discover_in(conn, sample_values)
        except pymysql.err.MySQLError as error:
            raise DatabaseUnavailable(
                scrub(f"cannot read the schema of {describe_server(url, 3306)}: {error}", url)
            ) from None
        finally:
            conn.close()

    async def column_values(self, url: str, schema: SchemaInfo, timeout_s: float) -> list[ColumnValues]:
        conn = await connect(url, timeout_s)
        out: list[ColumnValues] = []
        total = 0
        try:
            await _prepare_session(conn, timeout_s)
            await fetch(conn, "START TRANSACTION READ ONLY")
            for table in schema.tables:
                for column in table.columns:
                    if total >= MAX_VALUES_PER_PROJECT:
                        return out
                    if not is_textual(column.type):
                        continue
                    sql = column_values_sql(
                        quote(column.name),
                        quote(table.name),
                        text_cast="CAST({} AS CHAR)",
                        length="CHAR_LENGTH({})",
                        max_chars=MAX_VALUE_CHARS,
                        limit=MAX_VALUES_PER_COLUMN,
                    )
                    try:
                        values = [str(r[0]) for r in await fetch(conn, sql)]
                    except pymysql.err.MySQLError:
                        continue
                    if values:
                        complete = (
                            len(values) <= MAX_VALUES_PER_COLUMN and (table.row_count or 0) <= VALUE_SCAN_ROWS
                        )
                        out.append(
                            ColumnValues(
                                table.name, column.name, tuple(values[:MAX_VALUES_PER_COLUMN]), complete
                            )
                        )
                        total += len(values)
            return out
        except pymysql.err.MySQLError as error:
            raise DatabaseUnavailable(
                scrub(f"cannot read the values of {describe_server(url, 3306)}: {error}", url)
            ) from None
        finally:
            conn.close()

    async def ping(self, url: str, timeout_s: float) -> bool:
        try:
            conn = await connect(url, timeout_s)
            try:
                await asyncio.wait_for(fetch(conn, "SELECT 1"), timeout_s)
            finally:
                conn.close()
        except (DatabaseUnavailable, BadDatabaseURL, OSError, TimeoutError, pymysql.err.MySQLError):
            return False
        return True

    async def inspect_role(self, url: str, namespace: str | None, timeout_s: float) -> RoleReport:
        conn = await connect(url, timeout_s)
        try:
            return await _inspect_role(conn)
        except pymysql.err.MySQLError as error:
            raise DatabaseUnavailable(
                scrub(f"cannot inspect the account of {describe_server(url, 3306)}: {error}", url)
            ) from None
        finally:
            conn.close()

    async def close(self) -> None:
        return None


async def _inspect_role(conn: aiomysql.Connection) -> RoleReport:
    ((account, database),) = await fetch(conn, "SELECT CURRENT_USER(), DATABASE()")
    report = RoleReport(role=str(account))
    add = report.findings.append
    # information_schema shows the current account's own privileges (and those of its default roles).
    global_privileges = {
        str(r[0]).upper()
        for r in await fetch(conn, "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES")
    } - _HARMLESS_GLOBAL
    if global_privileges:
        shown = ", ".join(sorted(global_privileges)[:8]) + (", …" if len(global_privileges) > 8 else "")
        add(RoleFinding("refuse", f"has global privileges on every database ({shown})"))
    for schema, privilege in await fetch(
        conn, "SELECT DISTINCT TABLE_SCHEMA, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES"
    ):
        if str(schema) != database:
            add(RoleFinding("refuse", f"has {privilege} on another database, {schema}"))
        elif str(privilege).upper() not in _READ_PRIVILEGES:
            add(RoleFinding("refuse", f"has {privilege} on the project's database {database}"))
    for schema, table, privilege in await fetch(
        conn,
        "SELECT DISTINCT TABLE_SCHEMA, TABLE_NAME, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES "
        "ORDER BY 1, 2 LIMIT 20",
    ):
        if str(schema) != database:
            add(RoleFinding("refuse", f"has {privilege} on {schema}.{table}"))
        elif str(privilege).upper() not in _READ_PRIVILEGES:
            add(RoleFinding("refuse", f"has {privilege} on {table}"))
    return report


async def _discover_in(conn: aiomysql.Connection, sample_values: int) -> SchemaInfo:
    ((database,),) = await fetch(conn, "SELECT DATABASE()")
    table_rows = await fetch(
        conn,
        "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_TYPE IN ('BASE TABLE', 'VIEW', 'SYSTEM VERSIONED') ORDER BY TABLE_NAME",
    )
    col_rows = await fetch(
        conn,
        "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, ORDINAL_POSITION",
    )
    fk_rows = await fetch(
        conn,
        "SELECT TABLE_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME "
        "FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = DATABASE() "
        "AND REFERENCED_TABLE_NAME IS NOT NULL ORDER BY TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION",
    )
    tables: list[Table] = []
    for name, estimate in table_rows:
        columns = [
            Column(name=c[1], type=str(c[2]), primary_key=c[4] == "PRI", nullable=c[3] == "YES")
            for c in col_rows
            if c[0] == name
        ]
        quoted = quote(name)
        try:
            row_count: int | None = (await fetch(conn, f"SELECT COUNT(*) FROM {quoted}"))[0][0]
        except pymysql.err.MySQLError:
            row_count = int(estimate) if estimate is not None else None
        if sample_values > 0:
            for column in columns:
                if is_binary(column.type):
                    continue
                col = quote(column.name)
                try:
                    rows = await fetch(
                        conn,
                        f"SELECT DISTINCT {col} FROM (SELECT {col} FROM {quoted} WHERE {col} IS NOT NULL "
                        f"LIMIT {SAMPLE_SCAN_ROWS}) s LIMIT {sample_values * 3}",
                    )
                except pymysql.err.MySQLError:
                    continue
                column.samples = samples([r[0] for r in rows], sample_values)
        fks = [ForeignKey(column=f[1], ref_table=f[2], ref_column=f[3]) for f in fk_rows if f[0] == name]
        tables.append(Table(name=name, columns=columns, foreign_keys=fks, row_count=row_count))
    return SchemaInfo(dialect="mysql", tables=tables, namespace=str(database) if database else None)
