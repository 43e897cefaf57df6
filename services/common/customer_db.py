"""Customer databases: schema discovery and read-only query execution for SQLite, PostgreSQL and MySQL/MariaDB.

Generated SQL is untrusted. ``services.generation.sql_check`` rejects anything but one read-only query, and this
module is the second line of defence: whatever reaches ``CustomerDatabases.execute`` runs

* SQLite: on a connection opened read-only (``file:...?mode=ro``) with ``PRAGMA query_only=ON``, an authorizer
  that allows only reads and ordinary functions, no attachable databases, and a progress handler that interrupts
  the statement at its deadline;
* PostgreSQL: on connections whose ``default_transaction_read_only`` is on, inside ``BEGIN READ ONLY`` with
  ``SET LOCAL statement_timeout``, always rolled back; one statement per call (extended protocol);
* MySQL/MariaDB: on sessions set to ``SET SESSION TRANSACTION READ ONLY`` with multi-statements switched off,
  inside ``START TRANSACTION READ ONLY`` with ``max_statement_time`` (MariaDB, seconds) or
  ``max_execution_time`` (MySQL, ms) and ``sql_select_limit``, always rolled back.

The third line is the database account itself: give querylift a role that can only read. ``readonly_role_sql``
prints the statements; for a PostgreSQL database ``shop`` and role ``querylift_ro``::

    CREATE ROLE "querylift_ro" LOGIN PASSWORD 'change-me';
    ALTER ROLE "querylift_ro" SET default_transaction_read_only = on;
    ALTER ROLE "querylift_ro" SET statement_timeout = '30s';
    GRANT CONNECT ON DATABASE "shop" TO "querylift_ro";
    GRANT USAGE ON SCHEMA public TO "querylift_ro";
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO "querylift_ro";
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "querylift_ro";

and for MySQL/MariaDB::

    CREATE USER 'querylift_ro'@'%' IDENTIFIED BY 'change-me';
    GRANT SELECT, SHOW VIEW ON `shop`.* TO 'querylift_ro'@'%';

(no FILE, PROCESS or SUPER privileges). SQLite has no accounts: make the file read-only for the user querylift runs
as (``chmod a-w``, or a read-only mount); querylift opens it read-only in any case.

URLs: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (SQLAlchemy style) or a plain path ending
in .sqlite/.sqlite3/.db; ``postgresql://user:pass@host:5432/db?search_path=sales``; ``mysql://user:pass@host:3306/db``
or ``mariadb://...``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import math
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import aiomysql
import asyncpg
import pymysql
from pymysql.constants import CLIENT

from services.common.schema import Column, Dialect, ForeignKey, SchemaInfo, Table

#: Sample strings longer than this are cut (prompt space is precious; long text rarely helps the model).
SAMPLE_MAX_CHARS = 60
#: Rows scanned per column to find distinct samples, so discovery stays fast on large tables.
SAMPLE_SCAN_ROWS = 1000
#: Result bytes shown in full below this size; larger values become a placeholder.
BYTES_INLINE_MAX = 32

_BINARY_TYPE = re.compile(r"blob|binary|bytea|image|geometry|point|polygon", re.I)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


# --- errors -------------------------------------------------------------------------------------------------


class CustomerDatabaseError(Exception):
    """Base class; messages are meant for people and never contain passwords."""

    retryable = False


class BadDatabaseURL(CustomerDatabaseError, ValueError):
    """The URL names no database kind querylift supports, or is malformed."""


class DatabaseUnavailable(CustomerDatabaseError):
    """The database could not be reached or refused the login; worth retrying later."""

    retryable = True


class QueryFailed(CustomerDatabaseError):
    """The engine rejected the statement; the message is the engine's, usable to repair the SQL."""


class QueryTimeout(CustomerDatabaseError):
    """The statement ran past its time limit and was cancelled."""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool
    seconds: float


# --- URLs -----------------------------------------------------------------------------------------------------

_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def dialect_of(url: str) -> Dialect:
    """'sqlite', 'postgres' or 'mysql' for a database URL (or a plain SQLite path)."""
    text = (url or "").strip()
    scheme = text.split("://", 1)[0].lower().split("+", 1)[0] if "://" in text else ""
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgres", "postgresql"):
        return "postgres"
    if scheme in ("mysql", "mariadb"):
        return "mysql"
    if not scheme and text.lower().endswith(_SQLITE_SUFFIXES):
        return "sqlite"
    shown = redact(text) if text else "(empty)"
    raise BadDatabaseURL(
        f"unsupported database URL {shown}: use sqlite:///path/to/file.db (or a path ending in .sqlite/.db), "
        "postgresql://user:password@host:5432/database or mysql://user:password@host:3306/database"
    )


def redact(url: str) -> str:
    """The URL with its password replaced by ***."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", url)


def _scrub(message: str, url: str) -> str:
    """Remove the URL's password from a driver message, in case a driver echoes it."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in {password, unquote(password) if password else None} - {None, ""}:
        message = message.replace(str(secret), "***")
    return message


def sqlite_path(url: str) -> Path:
    text = url.strip()
    if "://" not in text:
        return Path(text)
    rest = text.split("://", 1)[1]
    rest = rest.split("?", 1)[0]
    if not rest.startswith("/"):
        raise BadDatabaseURL(
            f"SQLite URL {text} has a host part; write sqlite:///relative.db or sqlite:////abs.db"
        )
    path = Path(unquote(rest[1:]))
    if not path.is_absolute() and not path.exists() and Path("/", path).exists():
        path = Path("/", path)  # sqlite:///tmp/x.db usually means /tmp/x.db
    return path


@dataclass(frozen=True)
class _ServerURL:
    host: str
    port: int
    user: str | None
    password: str | None
    database: str | None
    query: dict[str, str]


def _server_url(url: str, default_port: int) -> _ServerURL:
    try:
        parts = urlsplit(url.strip())
        port = parts.port or default_port
    except ValueError as error:
        raise BadDatabaseURL(f"malformed database URL {redact(url)}: {error}") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    database = unquote(parts.path.lstrip("/")) or None
    return _ServerURL(
        host=parts.hostname or "localhost",
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        database=database,
        query=query,
    )


def _pg_dsn(url: str) -> str:
    """asyncpg wants postgresql:// (or postgres://); accept SQLAlchemy-style postgresql+driver:// too."""
    scheme, rest = url.strip().split("://", 1)
    return f"postgresql://{rest}" if "+" in scheme else url.strip()


def _pg_schema(url: str) -> str:
    query = _server_url(url, 5432).query
    if query.get("search_path"):
        return query["search_path"].split(",")[0].strip().strip('"')
    match = re.search(r"search_path\s*=\s*([^\s,]+)", query.get("options", ""))
    return match.group(1).strip('"') if match else "public"


# --- value conversion -----------------------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    """A JSON-friendly version of a database value."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return raw.hex() if len(raw) <= BYTES_INLINE_MAX else f"<{len(raw)} bytes>"
    if isinstance(value, (uuid.UUID, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


def _sample(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None
    converted = json_value(value)
    if isinstance(converted, str) and len(converted) > SAMPLE_MAX_CHARS:
        return converted[: SAMPLE_MAX_CHARS - 1] + "…"
    return converted


def _samples(values: Sequence[Any], limit: int) -> list[Any]:
    out: list[Any] = []
    for value in values:
        sample = _sample(value)
        if sample is not None and sample not in out:
            out.append(sample)
        if len(out) >= limit:
            break
    return out


def _is_binary(type_name: str) -> bool:
    return bool(_BINARY_TYPE.search(type_name))


# --- SQLite ---------------------------------------------------------------------------------------------------

_SQLITE_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
if hasattr(sqlite3, "SQLITE_RECURSIVE"):
    _SQLITE_ALLOWED_ACTIONS.add(sqlite3.SQLITE_RECURSIVE)
_SQLITE_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}


def _sqlite_authorizer(
    action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None
) -> int:
    if action not in _SQLITE_ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _SQLITE_DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _sqlite_connect(url: str, timeout_s: float) -> sqlite3.Connection:
    path = sqlite_path(url)
    if not path.is_file():
        raise DatabaseUnavailable(f"SQLite database file {path} does not exist (or is not a file)")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout_s, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # fails here if it is not a database
    except sqlite3.DatabaseError as error:
        raise DatabaseUnavailable(f"cannot open SQLite database {path}: {error}") from None
    if hasattr(conn, "setlimit"):
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    return conn


def _with_deadline(conn: sqlite3.Connection, timeout_s: float) -> Callable[[], bool]:
    deadline = time.monotonic() + timeout_s
    fired = threading.Event()

    def handler() -> int:
        if time.monotonic() > deadline:
            fired.set()
            return 1  # non-zero interrupts the statement
        return 0

    conn.set_progress_handler(handler, 1000)
    return fired.is_set


def _sqlite_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sqlite_discover(url: str, sample_values: int, timeout_s: float) -> SchemaInfo:
    conn = _sqlite_connect(url, timeout_s)
    try:
        _with_deadline(conn, max(timeout_s, 1.0) * 10)
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name"
            )
        ]
        tables: list[Table] = []
        for name in names:
            quoted = _sqlite_quote(name)
            info = conn.execute(f"PRAGMA table_info({quoted})").fetchall()
            columns = [
                Column(
                    name=r[1],
                    type=(r[2] or "").upper(),
                    primary_key=bool(r[5]),
                    nullable=not r[3] and not r[5],
                )
                for r in info
            ]
            fks = []
            for r in conn.execute(f"PRAGMA foreign_key_list({quoted})").fetchall():
                ref_column = r[4]
                if ref_column is None:  # references the parent's primary key
                    parent = conn.execute(f"PRAGMA table_info({_sqlite_quote(r[2])})").fetchall()
                    parent_pk = [p[1] for p in sorted((p for p in parent if p[5]), key=lambda p: p[5])]
                    ref_column = parent_pk[r[1]] if r[1] < len(parent_pk) else (parent_pk or ["rowid"])[0]
                fks.append(ForeignKey(column=r[3], ref_table=r[2], ref_column=ref_column))
            row_count = conn.execute(f"SELECT COUNT(*) FROM {quoted}").fetchone()[0]
            if sample_values > 0:
                for column in columns:
                    if _is_binary(column.type):
                        continue
                    col = _sqlite_quote(column.name)
                    rows = conn.execute(
                        f"SELECT DISTINCT {col} FROM (SELECT {col} FROM {quoted} WHERE {col} IS NOT NULL "
                        f"LIMIT {SAMPLE_SCAN_ROWS}) LIMIT {sample_values * 3}"
                    ).fetchall()
                    column.samples = _samples([r[0] for r in rows], sample_values)
            tables.append(Table(name=name, columns=columns, foreign_keys=fks, row_count=row_count))
        return SchemaInfo(dialect="sqlite", tables=tables)
    except sqlite3.DatabaseError as error:
        raise DatabaseUnavailable(
            f"cannot read the schema of SQLite database {sqlite_path(url)}: {error}"
        ) from None
    finally:
        conn.close()


#: Idle read-only connections per database file, keyed by the file's identity (device, inode, size, mtime),
#: so a replaced or rewritten file is opened afresh. Opening one costs more than most answers' queries.
_SQLITE_IDLE: dict[tuple[str, int, int, int, int], list[sqlite3.Connection]] = {}
_SQLITE_IDLE_LOCK = threading.Lock()
_SQLITE_IDLE_MAX = 4


def _sqlite_identity(url: str) -> tuple[str, int, int, int, int] | None:
    try:
        info = sqlite_path(url).stat()
    except OSError:
        return None
    return (url, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _sqlite_checkout(
    url: str, timeout_s: float
) -> tuple[sqlite3.Connection, tuple[str, int, int, int, int] | None]:
    identity = _sqlite_identity(url)
    if identity is not None:
        with _SQLITE_IDLE_LOCK:
            idle = _SQLITE_IDLE.get(identity)
            if idle:
                return idle.pop(), identity
    return _sqlite_connect(url, timeout_s), identity


def _sqlite_checkin(conn: sqlite3.Connection, identity: tuple[str, int, int, int, int] | None) -> None:
    if identity is not None and not conn.in_transaction:
        with _SQLITE_IDLE_LOCK:
            stale = [key for key in _SQLITE_IDLE if key[0] == identity[0] and key != identity]
            for key in stale:
                for old in _SQLITE_IDLE.pop(key):
                    old.close()
            idle = _SQLITE_IDLE.setdefault(identity, [])
            if len(idle) < _SQLITE_IDLE_MAX:
                idle.append(conn)
                return
    conn.close()


def _sqlite_execute(url: str, sql: str, timeout_s: float, row_limit: int) -> QueryResult:
    conn, identity = _sqlite_checkout(url, timeout_s)
    try:
        # A pooled connection keeps the authorizer and busy timeout of its last use.
        conn.set_authorizer(None)
        conn.execute(f"PRAGMA busy_timeout = {max(1, int(timeout_s * 1000))}")
        timed_out = _with_deadline(conn, timeout_s)
        conn.set_authorizer(_sqlite_authorizer)
        started = time.monotonic()
        try:
            cursor = conn.execute(sql)
            rows = cursor.fetchmany(row_limit + 1)
        except (sqlite3.DatabaseError, sqlite3.Warning, ValueError) as error:
            if timed_out():
                raise QueryTimeout(f"query exceeded the {timeout_s:g} s time limit") from None
            raise QueryFailed(str(error)) from None
        columns = [d[0] for d in cursor.description or []]
        cursor.close()  # an unfinished statement would hold the file's read lock while pooled
        return QueryResult(
            columns=columns,
            rows=[tuple(json_value(v) for v in r) for r in rows[:row_limit]],
            truncated=len(rows) > row_limit,
            seconds=time.monotonic() - started,
        )
    finally:
        conn.set_progress_handler(None, 0)
        _sqlite_checkin(conn, identity)


# --- PostgreSQL -----------------------------------------------------------------------------------------------

_PG_SERVER_SETTINGS = {"default_transaction_read_only": "on", "application_name": "querylift"}


def _pg_unavailable(url: str, error: BaseException) -> DatabaseUnavailable:
    where = _describe_server(url, 5432)
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
    return DatabaseUnavailable(_scrub(f"cannot connect to PostgreSQL at {where}: {hint}", url))


def _describe_server(url: str, default_port: int) -> str:
    try:
        parts = _server_url(url, default_port)
    except BadDatabaseURL:
        return redact(url)
    user = f"{parts.user}@" if parts.user else ""
    return f"{user}{parts.host}:{parts.port}/{parts.database or ''}"


_PG_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
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


async def _pg_connect(url: str, timeout_s: float) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(
            _pg_dsn(url), timeout=timeout_s, server_settings=dict(_PG_SERVER_SETTINGS)
        )
    except _PG_CONNECT_ERRORS as error:
        raise _pg_unavailable(url, error) from None
    except (ValueError, asyncpg.ClientConfigurationError) as error:
        raise BadDatabaseURL(_scrub(f"malformed PostgreSQL URL {redact(url)}: {error}", url)) from None


def _pg_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _pg_discover(url: str, sample_values: int, timeout_s: float) -> SchemaInfo:
    schema = _pg_schema(url)
    conn = await _pg_connect(url, timeout_s)
    try:
        async with conn.transaction(readonly=True):
            await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
            return await _pg_discover_in(conn, schema, sample_values)
    except asyncpg.PostgresError as error:
        raise DatabaseUnavailable(
            _scrub(f"cannot read the schema of {_describe_server(url, 5432)}: {error}", url)
        ) from None
    finally:
        await conn.close()


async def _pg_discover_in(conn: asyncpg.Connection, schema: str, sample_values: int) -> SchemaInfo:
    rels = await conn.fetch(
        "SELECT c.oid, c.relname, c.reltuples::bigint AS estimate FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relkind IN ('r', 'v', 'm', 'p', 'f') AND NOT c.relispartition "
        "AND has_table_privilege(c.oid, 'SELECT') ORDER BY c.relname",
        schema,
    )
    if not rels:
        return SchemaInfo(dialect="postgres", tables=[])
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
        qualified = f"{_pg_quote(schema)}.{_pg_quote(name)}"
        try:
            async with conn.transaction():  # a savepoint: a slow count must not abort discovery
                row_count: int | None = await conn.fetchval(f"SELECT COUNT(*) FROM {qualified}")
        except asyncpg.QueryCanceledError:
            row_count = rel["estimate"] if rel["estimate"] >= 0 else None
        if sample_values > 0:
            for column in columns:
                if _is_binary(column.type):
                    continue
                col = _pg_quote(column.name)
                try:
                    async with conn.transaction():
                        rows = await conn.fetch(
                            f"SELECT DISTINCT {col} AS v FROM (SELECT {col} FROM {qualified} WHERE {col} IS NOT NULL "
                            f"LIMIT {SAMPLE_SCAN_ROWS}) s LIMIT {sample_values * 3}"
                        )
                except (asyncpg.QueryCanceledError, asyncpg.UndefinedFunctionError):
                    continue  # e.g. json/point columns have no equality operator for DISTINCT
                column.samples = _samples([r["v"] for r in rows], sample_values)
        table_fks = [
            ForeignKey(column=f["attname"], ref_table=f["ref_table"], ref_column=f["ref_column"])
            for f in fks
            if f["conrelid"] == oid
        ]
        tables.append(Table(name=name, columns=columns, foreign_keys=table_fks, row_count=row_count))
    return SchemaInfo(dialect="postgres", tables=tables)


# --- MySQL / MariaDB ------------------------------------------------------------------------------------------

_MYSQL_UNREACHABLE = {2002, 2003, 2005, 2006, 2013, 1040, 1203}
_MYSQL_TIMEOUTS = {1969, 3024}  # MariaDB max_statement_time, MySQL max_execution_time


def _mysql_unavailable(url: str, error: BaseException) -> DatabaseUnavailable:
    where = _describe_server(url, 3306)
    code = error.args[0] if isinstance(error, pymysql.err.MySQLError) and error.args else None
    if code == 1045:
        hint = "the server refused the login: check the user name and password in the URL"
    elif code == 1049:
        hint = "the database does not exist: check the database name in the URL"
    elif code == 1044:
        hint = "the user may not access this database: grant it SELECT on the database"
    elif code in (1040, 1203):
        hint = "the server has no free connections; try again later"
    elif code in _MYSQL_UNREACHABLE or isinstance(error, OSError | TimeoutError):
        hint = "the connection was refused or timed out: check that the server is running and reachable"
    else:
        hint = f"{type(error).__name__}: {error}"
    return DatabaseUnavailable(_scrub(f"cannot connect to MySQL/MariaDB at {where}: {hint}", url))


async def _mysql_connect(url: str, timeout_s: float) -> aiomysql.Connection:
    parts = _server_url(url, 3306)
    if not parts.database:
        raise BadDatabaseURL(f"MySQL URL {redact(url)} names no database: add /database_name")
    conn = aiomysql.Connection(
        host=parts.host,
        port=parts.port,
        user=parts.user or "root",
        password=parts.password or "",
        db=parts.database,
        charset=parts.query.get("charset", "utf8mb4"),
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
        raise _mysql_unavailable(url, error) from None
    return conn


async def _mysql_is_mariadb(conn: aiomysql.Connection) -> bool:
    async with conn.cursor() as cur:
        await cur.execute("SELECT VERSION()")
        row = await cur.fetchone()
    return "mariadb" in str(row[0]).lower()


def _mysql_quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


async def _mysql_fetch(
    conn: aiomysql.Connection, sql: str, args: Sequence[Any] | None = None
) -> list[tuple[Any, ...]]:
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        return list(await cur.fetchall())


def _mysql_timeout_sql(timeout_s: float, mariadb: bool) -> str:
    if mariadb:
        return f"SET SESSION max_statement_time = {max(timeout_s, 0.001):.3f}"
    return f"SET SESSION max_execution_time = {max(1, int(timeout_s * 1000))}"


async def _mysql_discover(url: str, sample_values: int, timeout_s: float) -> SchemaInfo:
    conn = await _mysql_connect(url, timeout_s)
    try:
        mariadb = await _mysql_is_mariadb(conn)
        await _mysql_fetch(conn, _mysql_timeout_sql(timeout_s, mariadb))
        await _mysql_fetch(conn, "START TRANSACTION READ ONLY")
        table_rows = await _mysql_fetch(
            conn,
            "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_TYPE IN ('BASE TABLE', 'VIEW', 'SYSTEM VERSIONED') ORDER BY TABLE_NAME",
        )
        col_rows = await _mysql_fetch(
            conn,
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, ORDINAL_POSITION",
        )
        fk_rows = await _mysql_fetch(
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
            quoted = _mysql_quote(name)
            try:
                row_count: int | None = (await _mysql_fetch(conn, f"SELECT COUNT(*) FROM {quoted}"))[0][0]
            except pymysql.err.MySQLError:
                row_count = int(estimate) if estimate is not None else None
            if sample_values > 0:
                for column in columns:
                    if _is_binary(column.type):
                        continue
                    col = _mysql_quote(column.name)
                    try:
                        rows = await _mysql_fetch(
                            conn,
                            f"SELECT DISTINCT {col} FROM (SELECT {col} FROM {quoted} WHERE {col} IS NOT NULL "
                            f"LIMIT {SAMPLE_SCAN_ROWS}) s LIMIT {sample_values * 3}",
                        )
                    except pymysql.err.MySQLError:
                        continue
                    column.samples = _samples([r[0] for r in rows], sample_values)
            fks = [ForeignKey(column=f[1], ref_table=f[2], ref_column=f[3]) for f in fk_rows if f[0] == name]
            tables.append(Table(name=name, columns=columns, foreign_keys=fks, row_count=row_count))
        return SchemaInfo(dialect="mysql", tables=tables)
    except pymysql.err.MySQLError as error:
        raise DatabaseUnavailable(
            _scrub(f"cannot read the schema of {_describe_server(url, 3306)}: {error}", url)
        ) from None
    finally:
        conn.close()


class _MySQLPool:
    """A small pool of aiomysql connections with multi-statements off (aiomysql's own pool cannot do that)."""

    def __init__(self, url: str, max_size: int, connect_timeout_s: float) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[aiomysql.Connection] = []
        self._slots = asyncio.Semaphore(max_size)
        self.mariadb: bool | None = None

    async def acquire(self) -> aiomysql.Connection:
        await self._slots.acquire()
        try:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
            conn = await _mysql_connect(self.url, self.connect_timeout_s)
            if self.mariadb is None:
                self.mariadb = await _mysql_is_mariadb(conn)
            return conn
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: aiomysql.Connection, *, discard: bool = False) -> None:
        if discard or conn.closed:
            conn.close()
        else:
            self._idle.append(conn)
        self._slots.release()

    async def close(self) -> None:
        while self._idle:
            conn = self._idle.pop()
            conn.close()


# --- public API -----------------------------------------------------------------------------------------------


async def discover_schema(url: str, *, sample_values: int = 3, timeout_s: float = 10) -> SchemaInfo:
    """Tables, columns, keys, a few sample values and row counts of a customer database.

    ``timeout_s`` bounds connecting and each discovery statement on servers (a slow row count falls back to
    the planner's estimate where there is one); a SQLite discovery as a whole may take ten times that.
    """
    dialect = dialect_of(url)
    if dialect == "sqlite":
        return await asyncio.to_thread(_sqlite_discover, url, sample_values, timeout_s)
    if dialect == "postgres":
        return await _pg_discover(url, sample_values, timeout_s)
    return await _mysql_discover(url, sample_values, timeout_s)


async def ping(url: str, *, timeout_s: float = 5) -> bool:
    """True when the database accepts a connection and answers SELECT 1."""
    try:
        dialect = dialect_of(url)
        if dialect == "sqlite":
            await asyncio.to_thread(_sqlite_execute, url, "SELECT 1", timeout_s, 1)
        elif dialect == "postgres":
            conn = await _pg_connect(url, timeout_s)
            try:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout_s)
            finally:
                await conn.close()
        else:
            mconn = await _mysql_connect(url, timeout_s)
            try:
                await asyncio.wait_for(_mysql_fetch(mconn, "SELECT 1"), timeout_s)
            finally:
                mconn.close()
    except (CustomerDatabaseError, OSError, TimeoutError, asyncpg.PostgresError, pymysql.err.MySQLError):
        return False
    return True


class CustomerDatabases:
    """Read-only query execution against customer databases, with a connection pool per URL."""

    def __init__(
        self, *, max_connections: int = 4, connect_timeout_s: float = 10.0, inline_budget_s: float = 0.002
    ) -> None:
        self.max_connections = max_connections
        self.inline_budget_s = inline_budget_s
        self.connect_timeout_s = connect_timeout_s
        self._pg_pools: dict[str, asyncpg.Pool] = {}
        self._mysql_pools: dict[str, _MySQLPool] = {}
        self._lock = asyncio.Lock()

    async def execute(self, url: str, sql: str, *, timeout_s: float, row_limit: int) -> QueryResult:
        """Run one statement read-only; at most ``row_limit`` rows come back (``truncated`` says if more existed).

        Raises DatabaseUnavailable (connecting failed; retryable), QueryFailed (the engine's message),
        QueryTimeout, or BadDatabaseURL.
        """
        if row_limit < 0:
            raise ValueError("row_limit must be >= 0")
        dialect = dialect_of(url)
        if dialect == "sqlite":
            return await self._sqlite_execute(url, sql, timeout_s, row_limit)
        if dialect == "postgres":
            return await self._pg_execute(url, sql, timeout_s, row_limit)
        return await self._mysql_execute(url, sql, timeout_s, row_limit)

    async def _sqlite_execute(self, url: str, sql: str, timeout_s: float, row_limit: int) -> QueryResult:
        """Most answers' queries take well under a millisecond, less than a worker-thread hop (and the GIL
        handovers it causes) costs: they run on the event loop under a small time budget. A query that
        exhausts it is interrupted and run again in a worker thread with the full timeout, which is safe
        because the statement only reads."""
        budget = min(timeout_s, self.inline_budget_s)
        if budget > 0:
            try:
                return _sqlite_execute(url, sql, budget, row_limit)
            except (QueryTimeout, QueryFailed) as exc:
                # Out of budget, or a writer held the file longer than the budget lets it wait.
                retry = isinstance(exc, QueryTimeout) or "locked" in str(exc)
                if not retry or timeout_s <= budget:
                    raise
        return await asyncio.to_thread(_sqlite_execute, url, sql, timeout_s, row_limit)

    async def ping(self, url: str) -> bool:
        """True when the database answers SELECT 1 through this object's pool."""
        try:
            await self.execute(url, "SELECT 1", timeout_s=min(self.connect_timeout_s, 5.0), row_limit=1)
        except CustomerDatabaseError:
            return False
        return True

    async def close(self) -> None:
        async with self._lock:
            pg_pools, self._pg_pools = list(self._pg_pools.values()), {}
            mysql_pools, self._mysql_pools = list(self._mysql_pools.values()), {}
        for pool in pg_pools:
            await pool.close()
        for mpool in mysql_pools:
            await mpool.close()

    # -- PostgreSQL

    async def _pg_pool(self, url: str) -> asyncpg.Pool:
        pool = self._pg_pools.get(url)
        if pool is not None:
            return pool
        async with self._lock:
            pool = self._pg_pools.get(url)
            if pool is None:
                try:
                    pool = await asyncpg.create_pool(
                        _pg_dsn(url),
                        min_size=0,
                        max_size=self.max_connections,
                        timeout=self.connect_timeout_s,
                        server_settings=dict(_PG_SERVER_SETTINGS),
                    )
                except _PG_CONNECT_ERRORS as error:
                    raise _pg_unavailable(url, error) from None
                except (ValueError, asyncpg.ClientConfigurationError) as error:
                    raise BadDatabaseURL(
                        _scrub(f"malformed PostgreSQL URL {redact(url)}: {error}", url)
                    ) from None
                assert pool is not None
                self._pg_pools[url] = pool
            return pool

    async def _pg_execute(self, url: str, sql: str, timeout_s: float, row_limit: int) -> QueryResult:
        pool = await self._pg_pool(url)
        try:
            conn = await pool.acquire(timeout=self.connect_timeout_s)
        except _PG_CONNECT_ERRORS as error:
            raise _pg_unavailable(url, error) from None
        try:
            started = time.monotonic()
            transaction = conn.transaction(readonly=True)
            await transaction.start()
            try:
                await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
                # Running a query first pins the transaction read-only: PostgreSQL refuses
                # "SET transaction_read_only = off" once a query has taken a snapshot.
                await conn.fetchval("SELECT 1")
                statement = await conn.prepare(sql)
                columns = [a.name for a in statement.get_attributes()]
                if columns:
                    cursor = await statement.cursor()
                    records = await asyncio.wait_for(cursor.fetch(row_limit + 1), timeout_s + 5)
                else:
                    await asyncio.wait_for(statement.fetch(), timeout_s + 5)
                    records = []
            finally:
                if not conn.is_closed():
                    try:
                        await transaction.rollback()
                    except (asyncpg.PostgresError, asyncpg.InterfaceError):
                        pass  # the statement may have ended the transaction itself (e.g. COMMIT)
            return QueryResult(
                columns=columns,
                rows=[tuple(json_value(v) for v in r.values()) for r in records[:row_limit]],
                truncated=len(records) > row_limit,
                seconds=time.monotonic() - started,
            )
        except asyncpg.QueryCanceledError:
            raise QueryTimeout(f"query exceeded the {timeout_s:g} s time limit") from None
        except TimeoutError:
            conn.terminate()
            raise QueryTimeout(f"query exceeded the {timeout_s:g} s time limit") from None
        except (asyncpg.ConnectionDoesNotExistError, asyncpg.PostgresConnectionError, OSError) as error:
            raise _pg_unavailable(url, error) from None
        except asyncpg.PostgresError as error:
            raise QueryFailed(_scrub(str(error), url)) from None
        except asyncpg.InterfaceError as error:
            raise QueryFailed(_scrub(str(error), url)) from None
        finally:
            await pool.release(conn)

    # -- MySQL / MariaDB

    async def _mysql_pool(self, url: str) -> _MySQLPool:
        async with self._lock:
            pool = self._mysql_pools.get(url)
            if pool is None:
                _server_url(url, 3306)  # validate early
                pool = _MySQLPool(url, self.max_connections, self.connect_timeout_s)
                self._mysql_pools[url] = pool
            return pool

    async def _mysql_execute(self, url: str, sql: str, timeout_s: float, row_limit: int) -> QueryResult:
        pool = await self._mysql_pool(url)
        conn = await pool.acquire()
        discard = False
        try:
            started = time.monotonic()
            await _mysql_fetch(conn, _mysql_timeout_sql(timeout_s, bool(pool.mariadb)))
            await _mysql_fetch(conn, f"SET SESSION sql_select_limit = {row_limit + 1}")
            await _mysql_fetch(conn, "START TRANSACTION READ ONLY")
            cursor = await conn.cursor(aiomysql.SSCursor)
            try:
                await asyncio.wait_for(cursor.execute(sql), timeout_s + 5)
                columns = [d[0] for d in cursor.description or []]
                rows = (
                    list(await asyncio.wait_for(cursor.fetchmany(row_limit + 1), timeout_s + 5))
                    if columns
                    else []
                )
            except pymysql.err.MySQLError:
                raise  # the server reported an error: the protocol state is clean
            except BaseException:
                discard = True  # cancelled mid-result: the connection is in an unknown state
                raise
            if len(rows) > row_limit:
                # Draining the rest of an unbuffered result could take long; drop the connection instead.
                discard = True
            else:
                await cursor.close()
            return QueryResult(
                columns=columns,
                rows=[tuple(json_value(v) for v in r) for r in rows[:row_limit]],
                truncated=len(rows) > row_limit,
                seconds=time.monotonic() - started,
            )
        except TimeoutError:
            raise QueryTimeout(f"query exceeded the {timeout_s:g} s time limit") from None
        except pymysql.err.MySQLError as error:
            code = error.args[0] if error.args else None
            if code in _MYSQL_TIMEOUTS:
                raise QueryTimeout(f"query exceeded the {timeout_s:g} s time limit") from None
            if code in _MYSQL_UNREACHABLE:
                discard = True
                raise _mysql_unavailable(url, error) from None
            message = error.args[1] if len(error.args) > 1 else str(error)
            raise QueryFailed(_scrub(str(message), url)) from None
        finally:
            if not discard and not conn.closed:
                try:
                    await conn.rollback()
                except (pymysql.err.MySQLError, OSError):
                    discard = True
            pool.release(conn, discard=discard)


# --- read-only accounts ---------------------------------------------------------------------------------------


def readonly_role_sql(
    dialect: Dialect, role: str, database: str, *, password: str = "change-me"
) -> list[str]:
    """Statements a DBA runs to create a read-only login for querylift (see the module docstring).

    SQLite has no accounts: the list is empty; make the file read-only for querylift's OS user instead.
    """
    for label, value in (("role", role), ("database", database)):
        if not _IDENTIFIER.match(value):
            raise ValueError(f"{label} {value!r} must be a plain identifier (letters, digits, _ and $)")
    secret = password.replace("'", "''")
    if dialect == "postgres":
        quoted = f'"{role}"'
        return [
            f"CREATE ROLE {quoted} LOGIN PASSWORD '{secret}'",
            f"ALTER ROLE {quoted} SET default_transaction_read_only = on",
            f"ALTER ROLE {quoted} SET statement_timeout = '30s'",
            f'GRANT CONNECT ON DATABASE "{database}" TO {quoted}',
            f"GRANT USAGE ON SCHEMA public TO {quoted}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {quoted}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {quoted}",
        ]
    if dialect == "mysql":
        secret = secret.replace("\\", "\\\\")
        return [
            f"CREATE USER '{role}'@'%' IDENTIFIED BY '{secret}'",
            f"GRANT SELECT, SHOW VIEW ON `{database}`.* TO '{role}'@'%'",
        ]
    if dialect == "sqlite":
        return []
    raise ValueError(f"unknown dialect {dialect!r}")


__all__ = [
    "BadDatabaseURL",
    "CustomerDatabaseError",
    "CustomerDatabases",
    "DatabaseUnavailable",
    "QueryFailed",
    "QueryResult",
    "QueryTimeout",
    "dialect_of",
    "discover_schema",
    "json_value",
    "ping",
    "readonly_role_sql",
    "redact",
]
