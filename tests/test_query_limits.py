"""Limits that hold on the engines themselves, whatever the statement (so these tests run statements on the
engines directly, as only the layer's own tests do): time within 10 % of the timeout on SQLite, an event loop
that keeps running, memory bounded by the byte limits rather than by the row limit, and no session state
(locks, variables, settings) that outlives a statement on a pooled connection."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomysql
import asyncpg
import pytest

from services.core.customer_db import CustomerDatabases, QueryFailed, QueryResult, QueryTimeout, dialect_of
from tests.conftest import with_database

DB = "ql_test_limits"


async def raw(
    dbs: CustomerDatabases, url: str, sql: str, *, timeout_s: float = 5, row_limit: int = 100
) -> QueryResult:
    engine = dbs._engines[dialect_of(url)]
    return await engine.run_unchecked(url, sql, dbs.limits(timeout_s=timeout_s, row_limit=row_limit), None)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    path = tmp_path / "limits.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO accounts VALUES (?, ?)", [(i, f"n{i}") for i in range(1, 6)])
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
async def pg_url(customer_pg_admin: str) -> AsyncIterator[str]:
    admin = await asyncpg.connect(customer_pg_admin)
    await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {DB}")
    await admin.close()
    url = with_database(customer_pg_admin, DB)
    conn = await asyncpg.connect(url)
    await conn.execute(
        "CREATE TABLE accounts (id int PRIMARY KEY, name text); INSERT INTO accounts SELECT g, 'n' || g FROM generate_series(1, 40) g"
    )
    await conn.close()
    yield url


@pytest.fixture(scope="module")
async def mysql_url(customer_mysql: tuple[str, int, str]) -> AsyncIterator[str]:
    host, port, user = customer_mysql
    conn = await aiomysql.connect(host=host, port=port, user=user, password="", autocommit=True)
    async with conn.cursor() as cur:
        await cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        await cur.execute(f"CREATE DATABASE {DB}")
        await cur.execute(f"CREATE TABLE {DB}.accounts (id int PRIMARY KEY, name text)")
        await cur.executemany(
            f"INSERT INTO {DB}.accounts VALUES (%s, %s)", [(i, f"n{i}") for i in range(1, 41)]
        )
    conn.close()
    yield f"mysql://{user}@{host}:{port}/{DB}"


@pytest.fixture
async def dbs() -> AsyncIterator[CustomerDatabases]:
    databases = CustomerDatabases(max_value_bytes=1 << 20, max_result_bytes=8 << 20)
    yield databases
    await databases.close()


# --- time -------------------------------------------------------------------------------------------------

#: Statements built to run long, each step as long as SQLite lets a step be.
SLOW_SQLITE = [
    # The statement that ran 12.7 s against a 0.5 s timeout, with printf instead of zeroblob (which the
    # authorizer refuses): each term loops for a tenth of a second inside one VM step before giving NULL.
    "SELECT "
    + ", ".join(f"length(hex(printf('%.*c', 100000000 + id + {i}, 'x')))" for i in range(30))
    + " FROM accounts",
    # One step that is quadratic in values the length limit allows.
    "SELECT instr(printf('%.*c', 1000000, 'a'), printf('%.*c', 300000, 'a') || 'b') FROM accounts",
    # Long steps in a loop that never ends by itself (the interrupt stops it).
    "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
    "SELECT max(length(hex(printf('%.*c', 400000, 'x')))) FROM r",
    "WITH RECURSIVE r(i, s) AS (SELECT 1, 'x' UNION ALL SELECT i + 1, substr(s || s, 1, 500000) FROM r) "
    "SELECT count(*) FROM r WHERE s LIKE '%y%'",
]


@pytest.mark.parametrize("statement", SLOW_SQLITE)
async def test_sqlite_deadline_holds_within_ten_percent(
    dbs: CustomerDatabases, sqlite_url: str, statement: str
) -> None:
    await raw(dbs, sqlite_url, "SELECT 1")  # a warm worker: the deadline is the statement's, not a start-up's
    timeout = 1.0
    started = time.monotonic()
    with pytest.raises((QueryTimeout, QueryFailed)) as info:
        await raw(dbs, sqlite_url, statement, timeout_s=timeout)
    elapsed = time.monotonic() - started
    assert elapsed <= timeout * 1.1, (elapsed, statement)
    assert isinstance(info.value, QueryTimeout), info.value


async def test_sqlite_slow_query_does_not_stall_the_event_loop(
    dbs: CustomerDatabases, sqlite_url: str
) -> None:
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    with pytest.raises(QueryTimeout):
        await raw(dbs, sqlite_url, SLOW_SQLITE[1], timeout_s=1.0)
    stop.set()
    await task
    assert len(gaps) > 20 and max(gaps) < 0.25, max(gaps)


async def test_postgres_deadline_holds_across_fetches(dbs: CustomerDatabases, pg_url: str) -> None:
    """PostgreSQL starts statement_timeout afresh for every fetch from a cursor: rows that each take a few
    milliseconds, fetched a batch at a time, ran for a timeout per batch (3x the limit here, 20x nominal)."""
    slow_rows = (
        "SELECT g.i, (SELECT count(*) FROM generate_series(1, 30000 + g.i * 0)) AS n "
        "FROM generate_series(1, 5000) AS g(i)"
    )
    timeout = 1.0
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        await raw(dbs, pg_url, slow_rows, timeout_s=timeout, row_limit=5000)
    assert time.monotonic() - started <= timeout * 1.5


# --- memory -----------------------------------------------------------------------------------------------


class PeakRss:
    """The largest resident set seen while a block runs, sampled every 5 ms (Linux /proc)."""

    def __init__(self) -> None:
        self.base = self._rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/statm").exists(), reason="needs Linux /proc to sample memory"
)


async def _within(limit_mb: float, run: Callable[[], object]) -> tuple[object, float]:
    with PeakRss() as rss:
        try:
            result = await run()  # type: ignore[misc]
        except (QueryFailed, QueryTimeout) as exc:
            result = exc
    assert rss.growth_mb < limit_mb, rss.growth_mb
    return result, rss.growth_mb


@needs_proc
async def test_sqlite_huge_values_cannot_be_made(dbs: CustomerDatabases, sqlite_url: str) -> None:
    # SQLite gives NULL for a printf past the length limit, and fails a function whose result would pass it.
    big = "SELECT printf('%.*c', 150000000, 'x') FROM accounts"
    result, _ = await _within(120, lambda: raw(dbs, sqlite_url, big, timeout_s=10))
    assert isinstance(result, QueryResult) and result.rows == [(None,)] * 5
    too_big = "SELECT hex(printf('%.*c', 600000, 'x')) FROM accounts"
    result, _ = await _within(120, lambda: raw(dbs, sqlite_url, too_big, timeout_s=10))
    assert isinstance(result, QueryFailed) and "1048576-byte limit" in str(result)


@needs_proc
async def test_postgres_huge_values_never_reach_the_process(dbs: CustomerDatabases, pg_url: str) -> None:
    sql = "SELECT id, repeat('x', 150000000) AS big FROM accounts WHERE id <= 5 ORDER BY id"
    result, _ = await _within(150, lambda: raw(dbs, pg_url, sql, timeout_s=30))
    assert isinstance(result, QueryResult), result
    assert [r[0] for r in result.rows] == [1, 2, 3, 4, 5]  # rows and order kept
    assert all(r[1] == "<value of 150000000 bytes, over the 1048576-byte limit>" for r in result.rows)
    assert result.notes and "not fetched" in result.notes[0]
    small = await raw(dbs, pg_url, "SELECT name, id FROM accounts ORDER BY id DESC LIMIT 2")
    assert small.rows == [("n40", 40), ("n39", 39)] and not small.notes


@needs_proc
async def test_mysql_result_bytes_are_bounded(dbs: CustomerDatabases, mysql_url: str) -> None:
    sql = "SELECT id, REPEAT('x', 16000000) AS big FROM accounts ORDER BY id"
    result, _ = await _within(200, lambda: raw(dbs, mysql_url, sql, timeout_s=30))
    assert isinstance(result, QueryResult), result
    assert result.truncated and len(result.rows) < 40
    assert all(len(r[1]) <= (1 << 20) + 1 for r in result.rows)  # each value cut to the value limit
    assert any("byte limit" in n for n in result.notes)


@needs_proc
async def test_postgres_rows_without_columns_are_bounded(dbs: CustomerDatabases, pg_url: str) -> None:
    """SELECT FROM t has rows and no columns: they were fetched all at once (70 MB per million) instead of
    under the row limit."""
    result, _ = await _within(
        50, lambda: raw(dbs, pg_url, "SELECT FROM generate_series(1, 3000000)", timeout_s=30, row_limit=10)
    )
    assert isinstance(result, QueryResult), result
    assert result.truncated and len(result.rows) == 10


async def test_sqlite_result_bytes_are_bounded(dbs: CustomerDatabases, sqlite_url: str) -> None:
    capped = CustomerDatabases(max_value_bytes=1 << 20, max_result_bytes=1 << 20)
    try:
        result = await raw(
            capped,
            sqlite_url,
            "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 100) "
            "SELECT i, printf('%.*c', 100000, 'x') FROM r",
        )
    finally:
        await capped.close()
    assert result.truncated and 5 <= len(result.rows) <= 11
    assert any("1048576-byte limit" in n for n in result.notes)


# --- session state ----------------------------------------------------------------------------------------


async def test_postgres_session_state_does_not_outlive_a_statement(
    dbs: CustomerDatabases, pg_url: str
) -> None:
    small = CustomerDatabases(max_connections=1)  # one connection: the next statement gets the same session
    try:
        await raw(small, pg_url, "SELECT pg_advisory_lock(424242)")
        await raw(small, pg_url, "SELECT set_config('application_name', 'ql-pwned', false)")
        after = await raw(small, pg_url, "SELECT current_setting('application_name'), pg_backend_pid()")
        first_pid = after.rows[0][1]
        assert after.rows[0][0] == "querylift"
        again = await raw(small, pg_url, "SELECT pg_backend_pid()")
        assert again.rows[0][0] == first_pid  # really the same pooled session
    finally:
        await small.close()
    conn = await asyncpg.connect(pg_url)
    try:
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 424242"
        )
    finally:
        await conn.close()
    assert held == 0


async def test_mysql_session_state_does_not_outlive_a_statement(
    dbs: CustomerDatabases, mysql_url: str
) -> None:
    await raw(dbs, mysql_url, "SELECT GET_LOCK('ql_test_pwned', 0)")
    await raw(dbs, mysql_url, "SELECT @ql_pwned := 5")
    assert (await raw(dbs, mysql_url, "SELECT @ql_pwned")).rows == [(None,)]
    conn = await aiomysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT IS_USED_LOCK('ql_test_pwned')")
            assert (await cur.fetchone())[0] is None
    finally:
        conn.close()


#: Server default sql_modes, and what a statement must return whatever the mode. The combination modes set
#: ANSI_QUOTES and PIPES_AS_CONCAT again when set, and MariaDB's MSSQL reads [...] as a quoted name:
#: SELECT name['], (SELECT ...) AS s, 1 ['] FROM t, a subscript of a string to sqlglot, read other tables.
SERVER_SQL_MODES = [
    (
        "ANSI_QUOTES,NO_BACKSLASH_ESCAPES,PIPES_AS_CONCAT",
        "SELECT \"id\", 'a\\'b', 1 || 0 FROM accounts WHERE id = 1",
    ),
    ("ANSI", "SELECT \"id\", 'a\\'b', 1 || 0 FROM accounts WHERE id = 1"),
    ("MSSQL", "SELECT \"id\", 'a\\'b', 1 || 0 FROM accounts WHERE id = 1"),
    ("ORACLE", "SELECT \"id\", 'a\\'b', 1 || 0 FROM accounts WHERE id = 1"),
    ("POSTGRESQL", "SELECT \"id\", 'a\\'b', 1 || 0 FROM accounts WHERE id = 1"),
    ("MSSQL", "SELECT name['], 'ql-pwned' AS s, 1 ['] FROM accounts WHERE id = 1"),
]


@pytest.mark.parametrize(("sql_mode", "sql"), SERVER_SQL_MODES)
async def test_mysql_reads_text_as_sqlglot_writes_it_whatever_the_sql_mode(
    mysql_url: str, sql_mode: str, sql: str
) -> None:
    """A server in ANSI_QUOTES / NO_BACKSLASH_ESCAPES mode (or a mode that implies them) would read the checked
    text differently; the session drops those modes, so double quotes stay strings, backslashes stay escapes
    and brackets stay brackets."""
    conn = await aiomysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT @@GLOBAL.sql_mode")
            (previous,) = await cur.fetchone()
            await cur.execute("SET GLOBAL sql_mode = %s", (sql_mode,))
        databases = CustomerDatabases()
        try:
            result: QueryResult | QueryFailed = await raw(databases, mysql_url, sql)
        except QueryFailed as error:
            result = error
        finally:
            await databases.close()
    finally:
        async with conn.cursor() as cur:
            await cur.execute("SET GLOBAL sql_mode = %s", (previous,))
        conn.close()
    if "[" in sql:  # no subscripts in MySQL: a syntax error, never the smuggled column
        assert isinstance(result, QueryFailed) and "syntax" in str(result), result
    else:
        assert isinstance(result, QueryResult) and result.rows == [("id", "a'b", 1)], result


async def test_mariadb_runs_regexp(dbs: CustomerDatabases, mysql_url: str) -> None:
    """sqlglot's MySQL dialect writes REGEXP as REGEXP_LIKE(), which MariaDB lacks; querylift's writes REGEXP."""
    from services.core.customer_db import discover_schema

    schema = await discover_schema(mysql_url)
    check, result = await dbs.check_and_run(
        mysql_url,
        "SELECT id FROM accounts WHERE name REGEXP '^n3[0-9]$' ORDER BY id",
        schema,
        timeout_s=5,
        row_limit=20,
    )
    assert check.checked is not None and "REGEXP '" in check.checked.text
    assert [r[0] for r in result.rows] == list(range(30, 40))
