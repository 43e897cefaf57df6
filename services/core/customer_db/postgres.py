"""PostgreSQL customer databases.

A statement runs on a pooled connection whose ``default_transaction_read_only`` is on and whose
``standard_conforming_strings`` is on (so the server reads string literals as sqlglot does), inside
``BEGIN READ ONLY`` with ``SET LOCAL statement_timeout`` (set again to the time left before every fetch) and
``SET LOCAL search_path`` to the project's registered schema, always rolled back; one statement per call
(extended protocol). The pool resets every connection it takes back (advisory locks, cursors, LISTEN,
settings), so no session state outlives a query.

Values are sized on the server: when the statement's result has variable-length columns, it runs as the inner
query of a fixed outer projection that sends NULL plus the size instead of any value over ``max_value_bytes``,
so an oversized value never reaches this process. Rows are fetched in batches under the result's byte budget.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence

import asyncpg

from services.core.customer_db.engine import QueryResult, RoleFinding, RoleReport
from services.core.customer_db.errors import BadDatabaseURL, DatabaseUnavailable, QueryFailed, QueryTimeout
from services.core.customer_db.urls import describe_server, pg_dsn, pg_schema, redact, scrub
from services.core.customer_db.values import (
    VALUE_SCAN_ROWS,
    QueryLimits,
    ResultBudget,
    column_values_sql,
    is_binary,
    is_textual,
    oversized,
    samples,
)
from services.core.schema import Column, ForeignKey, SchemaInfo, Table
from services.core.values import MAX_VALUE_CHARS, MAX_VALUES_PER_COLUMN, MAX_VALUES_PER_PROJECT, ColumnValues

SAMPLE_SCAN_ROWS = 1000
#: Server settings every connection starts with. standard_conforming_strings: backslashes in '...' are plain
#: characters, as sqlglot's PostgreSQL dialect reads them.
SERVER_SETTINGS = {
    "default_transaction_read_only": "on",
    "standard_conforming_strings": "on",
    "application_name": "querylift",
}
#: Result types whose values have a small fixed size: no outer size guard is needed for them.
_FIXED_TYPES = frozenset(
    {
        "bool",
        "int2",
        "int4",
        "int8",
        "float4",
        "float8",
        "numeric",
        "money",
        "oid",
        "date",
        "time",
        "timetz",
        "timestamp",
        "timestamptz",
        "interval",
        "uuid",
        "char",
        "inet",
        "cidr",
        "macaddr",
    }
)
#: Types whose size octet_length reports without decompressing; others are measured as text.
_TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "name", "bytea", "citext"})

CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
)


def unavailable(url: str, error: BaseException) -> DatabaseUnavailable:
    where = describe_server(url, 5432)
    if isinstance(error, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        hint = "the server refused the login: check the user name and password in the URL"
    elif isinstance(error, asyncpg.InvalidCatalogNameError):
        hint = "the database does not exist: check the database name in the URL"
    elif isinstance(error, asyncpg.TooManyConnectionsError):
        hint = "the server has no free connections; try again later or raise max_connections"
    elif isinstance(error, TimeoutError):
        hint = "the connection timed out: check the host, port and firewall"
    elif isinstance(error, socket.gaierror):
        hint = "the host name does not resolve: check the host in the URL"
    elif isinstance(error, OSError):
        hint = "the connection was refused or failed: check that the server is running and reachable"
    else:
        hint = f"{type(error).__name__}: {error}"
    return DatabaseUnavailable(scrub(f"cannot connect to PostgreSQL at {where}: {hint}", url))


def _bad_url(url: str, error: BaseException) -> BadDatabaseURL:
    return BadDatabaseURL(scrub(f"malformed PostgreSQL URL {redact(url)}: {error}", url))


async def connect(url: str, timeout_s: float) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(pg_dsn(url), timeout=timeout_s, server_settings=dict(SERVER_SETTINGS))
    except CONNECT_ERRORS as error:
        raise unavailable(url, error) from None
    except (ValueError, asyncpg.ClientConfigurationError) as error:
        raise _bad_url(url, error) from None


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _time_left(conn: asyncpg.Connection, deadline: float, limits: QueryLimits) -> float:
    """Seconds left to the statement, which become the server's statement_timeout for its next step.
    PostgreSQL starts the timeout afresh for every message of the extended protocol (a prepare, each fetch
    from a cursor), so one statement_timeout set at the start would allow a full timeout per batch of rows."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise QueryTimeout(f"query exceeded the {limits.timeout_s:g} s time limit")
    await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(left * 1000))}")
    return left


def size_guarded(text: str, types: Sequence[str], max_value_bytes: int) -> tuple[str, list[int]] | None:
    """The statement inside an outer projection that sends NULL instead of a value over the limit, and the
    value's size in an extra column; None when every column has a fixed size. Returns the SQL and, per result
    column, the index of its size column (-1 when it has none)."""
    guarded = [i for i, name in enumerate(types) if name not in _FIXED_TYPES]
    if not guarded:
        return None
    names = [f"c{i}" for i in range(len(types))]
    outer: list[str] = []
    size_at: list[int] = [-1] * len(types)
    for i, name in enumerate(types):
        col = f"q.{names[i]}"
        if i in guarded:
            size = f"octet_length({col})" if name in _TEXT_TYPES else f"octet_length({col}::text)"
            outer.append(f"CASE WHEN {size} > {max_value_bytes} THEN NULL ELSE {col} END")
        else:
            outer.append(col)
    for i in guarded:
        name = types[i]
        col = f"q.{names[i]}"
        size = f"octet_length({col})" if name in _TEXT_TYPES else f"octet_length({col}::text)"
        size_at[i] = len(outer)
        outer.append(f"CASE WHEN {size} > {max_value_bytes} THEN {size} END")
    # The checked statement is the inner query, byte for byte, on lines of its own.
    sql = f"SELECT {', '.join(outer)} FROM (\n{text}\n) AS q({', '.join(names)})"
    return sql, size_at


class PostgresEngine:
    dialect = "postgres"

    def __init__(self, max_connections: int = 4, connect_timeout_s: float = 10.0) -> None:
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self._pools: dict[str, asyncpg.Pool] = {}
        self._lock = asyncio.Lock()

    async def _pool(self, url: str) -> asyncpg.Pool:
        pool = self._pools.get(url)
        if pool is not None:
            return pool
        async with self._lock:
            pool = self._pools.get(url)
            if pool is None:
                try:
                    # The pool resets each connection it takes back (asyncpg's Connection.reset: advisory
                    # locks released, cursors closed, LISTEN ended, settings back to the connection's own).
                    pool = await asyncpg.create_pool(
                        pg_dsn(url),
                        min_size=0,
                        max_size=self.max_connections,
                        timeout=self.connect_timeout_s,
                        server_settings=dict(SERVER_SETTINGS),
                    )
                except CONNECT_ERRORS as error:
                    raise unavailable(url, error) from None
                except (ValueError, asyncpg.ClientConfigurationError) as error:
                    raise _bad_url(url, error) from None
                assert pool is not None
                self._pools[url] = pool
            return pool

    async def run_unchecked(
        self, url: str, text: str, limits: QueryLimits, namespace: str | None
    ) -> QueryResult:
        pool = await self._pool(url)
        try:
            conn = await pool.acquire(timeout=self.connect_timeout_s)
        except CONNECT_ERRORS as error:
            raise unavailable(url, error) from None
        try:
            started = time.monotonic()
            deadline = started + limits.timeout_s
            transaction = conn.transaction(readonly=True)
            await transaction.start()
            try:
                await _time_left(conn, deadline, limits)
                if namespace:
                    # The project's schema as registered, never the URL's options; pg_catalog stays first.
                    await conn.execute(f"SET LOCAL search_path = {quote(namespace)}")
                # Running a query first pins the transaction read-only: PostgreSQL refuses
                # "SET transaction_read_only = off" once a query has taken a snapshot.
                await conn.fetchval("SELECT 1")
                statement = await conn.prepare(text)
                attributes = statement.get_attributes()
                columns = [a.name for a in attributes]
                budget = ResultBudget(limits)
                # Rows without columns (SELECT FROM t) are fetched in batches too: counted against the row
                # limit, not collected whole.
                types = [a.type.name if a.type.kind == "scalar" else a.type.kind for a in attributes]
                guard = size_guarded(text, types, limits.max_value_bytes)
                size_at: list[int] = []
                if guard is not None:
                    await _time_left(conn, deadline, limits)
                    statement = await conn.prepare(guard[0])
                    size_at = guard[1]
                cursor = await statement.cursor()
                # With the guard every value is at most the value limit; without it, small and fixed.
                size = budget.batch(len(columns), None if guard is not None else 64)
                while True:
                    left = await _time_left(conn, deadline, limits)
                    records = await asyncio.wait_for(cursor.fetch(size), left + 5)
                    if not records:
                        break
                    rows = [self._row(r, size_at, len(columns), limits, budget) for r in records]
                    if not all(budget.add(row) for row in rows):
                        break
            finally:
                if not conn.is_closed():
                    try:
                        await transaction.rollback()
                    except (asyncpg.PostgresError, asyncpg.InterfaceError):
                        pass  # the statement may have ended the transaction itself
            return QueryResult(
                columns=columns,
                rows=budget.rows,
                truncated=budget.truncated,
                seconds=time.monotonic() - started,
                notes=budget.notes,
            )
        except asyncpg.QueryCanceledError:
            raise QueryTimeout(f"query exceeded the {limits.timeout_s:g} s time limit") from None
        except TimeoutError:
            conn.terminate()
            raise QueryTimeout(f"query exceeded the {limits.timeout_s:g} s time limit") from None
        except (asyncpg.ConnectionDoesNotExistError, asyncpg.PostgresConnectionError, OSError) as error:
            raise unavailable(url, error) from None
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise QueryFailed(scrub(str(error), url)) from None
        finally:
            await pool.release(conn)

    @staticmethod
    def _row(
        record: asyncpg.Record, size_at: list[int], width: int, limits: QueryLimits, budget: ResultBudget
    ) -> tuple[object, ...]:
        values = list(record.values())
        if not size_at:
            return tuple(values)
        out = values[:width]
        for i, at in enumerate(size_at):
            if at >= 0 and values[at] is not None:
                out[i] = oversized(int(values[at]), limits.max_value_bytes)
                budget.mark_oversized(f"values over {limits.max_value_bytes} bytes were not fetched")
        return tuple(out)

    async def discover(self, url: str, sample_values: int, timeout_s: float) -> SchemaInfo:
        schema = pg_schema(url)
        conn = await connect(url, timeout_s)
        try:
            async with conn.transaction(readonly=True):
                await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
                return await _discover_in(conn, schema, sample_values)
        except asyncpg.PostgresError as error:
            raise DatabaseUnavailable(
                scrub(f"cannot read the schema of {describe_server(url, 5432)}: {error}", url)
            ) from None
        finally:
            await conn.close()

    async def column_values(self, url: str, schema: SchemaInfo, timeout_s: float) -> list[ColumnValues]:
        namespace = schema.namespace or pg_schema(url)
        conn = await connect(url, timeout_s)
        out: list[ColumnValues] = []
        total = 0
        try:
            async with conn.transaction(readonly=True):
                await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
                for table in schema.tables:
                    for column in table.columns:
                        if total >= MAX_VALUES_PER_PROJECT:
                            return out
                        if not is_textual(column.type):
                            continue
                        sql = column_values_sql(
                            quote(column.name),
                            f"{quote(namespace)}.{quote(table.name)}",
                            text_cast="{}::text",
                            length="char_length({})",
                            max_chars=MAX_VALUE_CHARS,
                            limit=MAX_VALUES_PER_COLUMN,
                        )
                        try:
                            async with conn.transaction():  # a savepoint: one slow column skips only itself
                                values = [r["v"] for r in await conn.fetch(sql)]
                        except asyncpg.PostgresError:
                            continue
                        if values:
                            complete = (
                                len(values) <= MAX_VALUES_PER_COLUMN
                                and (table.row_count or 0) <= VALUE_SCAN_ROWS
                            )
                            out.append(
                                ColumnValues(
                                    table.name, column.name, tuple(values[:MAX_VALUES_PER_COLUMN]), complete
                                )
                            )
                            total += len(values)
            return out
        finally:
            await conn.close()

    async def ping(self, url: str, timeout_s: float) -> bool:
        try:
            conn = await connect(url, timeout_s)
            try:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout_s)
            finally:
                await conn.close()
        except (DatabaseUnavailable, BadDatabaseURL, OSError, TimeoutError, asyncpg.PostgresError):
            return False
        return True

    async def inspect_role(self, url: str, namespace: str | None, timeout_s: float) -> RoleReport:
        conn = await connect(url, timeout_s)
        try:
            async with conn.transaction(readonly=True):
                return await _inspect_role(conn, namespace or pg_schema(url))
        except asyncpg.PostgresError as error:
            raise DatabaseUnavailable(
                scrub(f"cannot inspect the role of {describe_server(url, 5432)}: {error}", url)
            ) from None
        finally:
            await conn.close()

    async def close(self) -> None:
        async with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.close()


#: Built-in roles whose members read files, run programs, read all data or see other sessions.
_POWERFUL_ROLES = (
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_read_all_data",
    "pg_write_all_data",
    "pg_read_all_settings",
    "pg_read_all_stats",
    "pg_stat_scan_tables",
    "pg_monitor",
    "pg_signal_backend",
    "pg_checkpoint",
    "pg_maintain",
    "pg_create_subscription",
)
_SYSTEM_NAMESPACE = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"


async def _inspect_role(conn: asyncpg.Connection, schema: str) -> RoleReport:
    role = await conn.fetchrow(
        "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
        "FROM pg_roles WHERE rolname = current_user"
    )
    report = RoleReport(role=str(role["rolname"]))
    add = report.findings.append
    for flag, what in (
        ("rolsuper", "is a superuser (reads and writes everything, server files included)"),
        ("rolcreaterole", "may create and alter roles"),
        ("rolcreatedb", "may create databases"),
        ("rolreplication", "may stream replication (reads every database)"),
        ("rolbypassrls", "bypasses row-level security"),
    ):
        if role[flag]:
            add(RoleFinding("refuse", f"role {report.role} {what}"))
    members = await conn.fetch(
        "SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[]) AND pg_has_role(current_user, oid, 'USAGE')",
        list(_POWERFUL_ROLES),
    )
    for row in members:
        add(RoleFinding("refuse", f"member of {row['rolname']}"))
    writable = await conn.fetch(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_SYSTEM_NAMESPACE} AND ("
        "has_table_privilege(c.oid, 'INSERT') OR has_table_privilege(c.oid, 'UPDATE') OR "
        "has_table_privilege(c.oid, 'DELETE') OR has_table_privilege(c.oid, 'TRUNCATE')) "
        "ORDER BY 1, 2 LIMIT 6"
    )
    if writable:
        shown = ", ".join(f"{r['nspname']}.{r['relname']}" for r in writable[:5])
        add(RoleFinding("refuse", f"may write tables ({shown}{', …' if len(writable) > 5 else ''})"))
    creatable = await conn.fetch(
        f"SELECT n.nspname FROM pg_namespace n WHERE {_SYSTEM_NAMESPACE} AND has_schema_privilege(n.oid, 'CREATE')"
    )
    if creatable:
        add(
            RoleFinding(
                "refuse", f"may create objects in schema {', '.join(r['nspname'] for r in creatable)}"
            )
        )
    if await conn.fetchval("SELECT has_database_privilege(current_database(), 'CREATE')"):
        add(RoleFinding("refuse", "may create schemas in the database"))
    other = await conn.fetch(
        "SELECT n.nspname, count(*) AS tables FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_SYSTEM_NAMESPACE} AND n.nspname <> $1 "
        "AND has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT') GROUP BY 1 ORDER BY 1",
        schema,
    )
    if other:
        shown = ", ".join(f"{r['nspname']} ({r['tables']} tables)" for r in other)
        add(RoleFinding("refuse", f"may read schemas other than the project's {schema}: {shown}"))
    databases = await conn.fetch(
        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
        "AND datname <> current_database() AND has_database_privilege(datname, 'CONNECT') ORDER BY 1"
    )
    if databases:
        names = [r["datname"] for r in databases]
        shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
        add(
            RoleFinding(
                "warn",
                f"may connect to other databases ({shown}); querylift never does, but "
                "REVOKE CONNECT ON DATABASE ... FROM PUBLIC keeps it that way",
            )
        )
    return report


async def _discover_in(conn: asyncpg.Connection, schema: str, sample_values: int) -> SchemaInfo:
    rels = await conn.fetch(
        "SELECT c.oid, c.relname, c.reltuples::bigint AS estimate FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relkind IN ('r', 'v', 'm', 'p', 'f') AND NOT c.relispartition "
        "AND has_table_privilege(c.oid, 'SELECT') ORDER BY c.relname",
        schema,
    )
    if not rels:
        return SchemaInfo(dialect="postgres", tables=[], namespace=schema)
    oids = [r["oid"] for r in rels]
    cols = await conn.fetch(
        "SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull "
        "FROM pg_attribute a WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attrelid, a.attnum",
        oids,
    )
    pks = await conn.fetch(
        "SELECT k.conrelid, a.attname FROM pg_constraint k "
        "JOIN LATERAL unnest(k.conkey) AS u(attnum) ON true "
        "JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum "
        "WHERE k.contype = 'p' AND k.conrelid = ANY($1::oid[])",
        oids,
    )
    fks = await conn.fetch(
        "SELECT k.conrelid, a.attname, rc.relname AS ref_table, ra.attname AS ref_column FROM pg_constraint k "
        "JOIN pg_class rc ON rc.oid = k.confrelid "
        "JOIN LATERAL unnest(k.conkey, k.confkey) AS u(src, dst) ON true "
        "JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.src "
        "JOIN pg_attribute ra ON ra.attrelid = k.confrelid AND ra.attnum = u.dst "
        "WHERE k.contype = 'f' AND k.conrelid = ANY($1::oid[]) ORDER BY k.conname",
        oids,
    )
    pk_set = {(r["conrelid"], r["attname"]) for r in pks}
    tables: list[Table] = []
    for rel in rels:
        oid, name = rel["oid"], rel["relname"]
        columns = [
            Column(
                name=c["attname"],
                type=c["type"],
                primary_key=(oid, c["attname"]) in pk_set,
                nullable=not c["attnotnull"],
            )
            for c in cols
            if c["attrelid"] == oid
        ]
        qualified = f"{quote(schema)}.{quote(name)}"
        try:
            async with conn.transaction():  # a savepoint: a slow count must not abort discovery
                row_count: int | None = await conn.fetchval(f"SELECT COUNT(*) FROM {qualified}")
        except asyncpg.QueryCanceledError:
            row_count = rel["estimate"] if rel["estimate"] >= 0 else None
        if sample_values > 0:
            for column in columns:
                if is_binary(column.type):
                    continue
                col = quote(column.name)
                try:
                    async with conn.transaction():
                        rows = await conn.fetch(
                            f"SELECT DISTINCT {col} AS v FROM (SELECT {col} FROM {qualified} WHERE {col} IS NOT NULL "
                            f"LIMIT {SAMPLE_SCAN_ROWS}) s LIMIT {sample_values * 3}"
                        )
                except (asyncpg.QueryCanceledError, asyncpg.UndefinedFunctionError):
                    continue  # e.g. json/point columns have no equality operator for DISTINCT
                column.samples = samples([r["v"] for r in rows], sample_values)
        table_fks = [
            ForeignKey(column=f["attname"], ref_table=f["ref_table"], ref_column=f["ref_column"])
            for f in fks
            if f["conrelid"] == oid
        ]
        tables.append(Table(name=name, columns=columns, foreign_keys=table_fks, row_count=row_count))
    return SchemaInfo(dialect="postgres", tables=tables, namespace=schema)
