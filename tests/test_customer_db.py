"""The customer-database layer against real engines: SQLite files, PostgreSQL 15 and MariaDB on localhost.

Each server test creates its own database ``ql_test_custdb`` and drops it afterwards. Ordinary queries go through
the guarded path (``check_and_run``). Writes passed straight to an engine (``raw``, bypassing the static check,
as only these tests do) must be refused by the engine, proving the read-only layer on its own.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiomysql
import asyncpg
import pytest

from services.core.customer_db import (
    BadDatabaseURL,
    CustomerDatabases,
    DatabaseUnavailable,
    QueryFailed,
    QueryResult,
    QueryTimeout,
    dialect_of,
    discover_schema,
    json_value,
    ping,
    readonly_role_sql,
    redact,
)
from services.core.schema import SchemaInfo

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql://postgres@127.0.0.1:5432/ql_test_custdb"
MYSQL_URL = "mysql://root@127.0.0.1:3306/ql_test_custdb"
DB_NAME = "ql_test_custdb"

FIXTURE_SQL = [
    "CREATE TABLE country (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL, continent VARCHAR(20))",
    "CREATE TABLE city (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL, population INTEGER, "
    "country_id INTEGER REFERENCES country(id), gdp NUMERIC(10,2), founded DATE, notes TEXT, photo {blob})",
    "INSERT INTO country (id, name, continent) VALUES (1, 'France', 'Europe'), (2, 'Japan', 'Asia'), "
    "(3, 'Kenya', 'Africa')",
]
CITY_ROWS = [
    (1, "Paris", 2100000, 1, 12.5, "0508-01-01"),
    (2, "Lyon", 520000, 1, 3.25, "0043-01-01"),
    (3, "Tokyo", 13900000, 2, 99.75, "1457-01-01"),
    (4, "Osaka", 2700000, 2, None, None),
    (5, "Nairobi", 4400000, 3, 7.0, "1899-01-01"),
]
LONG_NOTE = "x" * 500


def _fixture_statements(blob: str) -> list[str]:
    statements = [s.format(blob=blob) for s in FIXTURE_SQL]
    values = ", ".join(
        f"({i}, '{n}', {p}, {c}, {'NULL' if g is None else g}, {'NULL' if f is None else repr(f)}, "
        f"'{LONG_NOTE if i == 1 else 'short'}', NULL)"
        for i, n, p, c, g, f in CITY_ROWS
    )
    statements.append(
        f"INSERT INTO city (id, name, population, country_id, gdp, founded, notes, photo) VALUES {values}"
    )
    # A wide table for the row-limit test.
    statements.append("CREATE TABLE numbers (n INTEGER PRIMARY KEY)")
    statements.append("INSERT INTO numbers (n) VALUES " + ", ".join(f"({i})" for i in range(1, 251)))
    return statements


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    path = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = ON")
    for statement in _fixture_statements("BLOB"):
        conn.execute(statement)
    conn.execute("UPDATE city SET photo = X'DEADBEEF' WHERE id = 1")
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
async def pg_url() -> AsyncIterator[str]:
    try:
        admin = await asyncpg.connect(PG_ADMIN, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        pytest.fail(f"PostgreSQL 15 at 127.0.0.1:5432 is needed: {error}")
    await admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {DB_NAME}")
    conn = await asyncpg.connect(PG_URL)
    for statement in _fixture_statements("BYTEA"):
        await conn.execute(statement)
    await conn.execute("UPDATE city SET photo = '\\xdeadbeef'::bytea WHERE id = 1")
    await conn.close()
    yield PG_URL
    await admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    await admin.close()


@pytest.fixture(scope="module")
async def mysql_url() -> AsyncIterator[str]:
    try:
        admin = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    except Exception as error:
        pytest.fail(f"MariaDB at 127.0.0.1:3306 is needed: {error}")
    async with admin.cursor() as cur:
        await cur.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
        await cur.execute(f"CREATE DATABASE {DB_NAME}")
        await cur.execute(f"USE {DB_NAME}")
        for statement in _fixture_statements("BLOB"):
            await cur.execute(statement.replace("REFERENCES country(id)", ""))
        await cur.execute(
            "ALTER TABLE city ADD CONSTRAINT fk_country FOREIGN KEY (country_id) REFERENCES country(id)"
        )
        await cur.execute("UPDATE city SET photo = X'DEADBEEF' WHERE id = 1")
    yield MYSQL_URL
    async with admin.cursor() as cur:
        await cur.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
    admin.close()


async def raw(dbs: CustomerDatabases, url: str, sql: str, *, timeout_s: float, row_limit: int) -> QueryResult:
    """Run a statement on the engine directly, without the check: the layer's own defences, tested alone."""
    engine = dbs._engines[dialect_of(url)]
    return await engine.run_unchecked(url, sql, dbs.limits(timeout_s=timeout_s, row_limit=row_limit), None)


async def guarded(
    dbs: CustomerDatabases, url: str, sql: str, *, timeout_s: float, row_limit: int
) -> QueryResult:
    """The product's path: check against the discovered schema, then run what was approved."""
    schema = await discover_schema(url)
    _, result = await dbs.check_and_run(url, sql, schema, timeout_s=timeout_s, row_limit=row_limit)
    return result


@pytest.fixture
async def dbs() -> AsyncIterator[CustomerDatabases]:
    databases = CustomerDatabases(max_connections=2, connect_timeout_s=5)
    yield databases
    await databases.close()


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def any_url(request: pytest.FixtureRequest) -> str:
    fixture = {"sqlite": "sqlite_url", "postgres": "pg_url", "mysql": "mysql_url"}[request.param]
    return str(request.getfixturevalue(fixture))


# --- URLs -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "dialect"),
    [
        ("sqlite:///data/shop.db", "sqlite"),
        ("sqlite:////tmp/shop.sqlite", "sqlite"),
        ("/var/data/shop.sqlite", "sqlite"),
        ("shop.db", "sqlite"),
        ("postgres://u:p@h/db", "postgres"),
        ("postgresql://u@h:5433/db?search_path=sales", "postgres"),
        ("postgresql+asyncpg://u@h/db", "postgres"),
        ("mysql://root@127.0.0.1:3306/shop", "mysql"),
        ("mariadb://root@127.0.0.1/shop", "mysql"),
    ],
)
def test_dialect_of(url: str, dialect: str) -> None:
    assert dialect_of(url) == dialect


@pytest.mark.parametrize("url", ["", "oracle://u:secret@h/db", "http://example.com", "shop.csv", "mssql://x"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(BadDatabaseURL) as info:
        dialect_of(url)
    assert "secret" not in str(info.value)
    assert "postgresql://" in str(info.value)  # tells the person what would work


async def test_bad_url_in_execute_and_discover(dbs: CustomerDatabases) -> None:
    with pytest.raises(BadDatabaseURL):
        await raw(dbs, "redis://localhost", "SELECT 1", timeout_s=1, row_limit=1)
    with pytest.raises(BadDatabaseURL):
        await discover_schema("ftp://x/y")


def test_redact() -> None:
    assert redact("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert "s3cret" not in redact("mysql://bob:s3cret@db/x")


# --- discovery ------------------------------------------------------------------------------------------------


def _check_discovered(schema: SchemaInfo, dialect: str) -> None:
    assert schema.dialect == dialect
    assert {t.name for t in schema.tables} == {"city", "country", "numbers"}
    city = schema.table("city")
    assert city is not None and city.row_count == 5
    assert [c.name for c in city.columns] == [
        "id", "name", "population", "country_id", "gdp", "founded", "notes", "photo"
    ]  # fmt: skip
    id_col, name_col = city.column("id"), city.column("name")
    assert id_col is not None and id_col.primary_key and not id_col.nullable
    assert name_col is not None and not name_col.primary_key and not name_col.nullable
    population = city.column("population")
    assert population is not None and population.nullable and "int" in population.type.lower()
    assert len(name_col.samples) == 3 and set(name_col.samples) <= {n for _, n, *_ in CITY_ROWS}
    gdp = city.column("gdp")
    assert gdp is not None and gdp.samples and all(isinstance(v, float) for v in gdp.samples)
    notes = city.column("notes")
    assert notes is not None and all(len(v) <= 60 for v in notes.samples) and notes.samples
    photo = city.column("photo")
    assert photo is not None and photo.samples == []  # blobs are never sampled
    founded = city.column("founded")
    assert founded is not None and all(isinstance(v, str) for v in founded.samples)
    assert [(fk.column, fk.ref_table, fk.ref_column) for fk in city.foreign_keys] == [
        ("country_id", "country", "id")
    ]
    country = schema.table("country")
    assert country is not None and country.row_count == 3 and country.foreign_keys == []
    numbers = schema.table("numbers")
    assert numbers is not None and numbers.row_count == 250
    # The result survives the JSON round trip used to store schema versions.
    assert SchemaInfo.from_json(schema.to_json()).structure_hash() == schema.structure_hash()


async def test_discover_sqlite(sqlite_url: str) -> None:
    _check_discovered(await discover_schema(sqlite_url), "sqlite")


async def test_discover_postgres(pg_url: str) -> None:
    _check_discovered(await discover_schema(pg_url), "postgres")


async def test_discover_mysql(mysql_url: str) -> None:
    _check_discovered(await discover_schema(mysql_url), "mysql")


async def test_discover_sample_count_is_respected(sqlite_url: str) -> None:
    schema = await discover_schema(sqlite_url, sample_values=1)
    city = schema.table("city")
    assert city is not None and all(len(c.samples) <= 1 for c in city.columns)
    schema = await discover_schema(sqlite_url, sample_values=0)
    assert all(not c.samples for t in schema.tables for c in t.columns)


async def test_discover_postgres_search_path(pg_url: str) -> None:
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(
        "CREATE SCHEMA IF NOT EXISTS sales; CREATE TABLE IF NOT EXISTS sales.deal (id int PRIMARY KEY)"
    )
    await admin.close()
    schema = await discover_schema(f"{pg_url}?search_path=sales")
    assert [t.name for t in schema.tables] == ["deal"]


async def test_discover_missing_sqlite_file(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable, match="does not exist"):
        await discover_schema(f"sqlite:///{tmp_path / 'nope.db'}")


async def test_discover_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DatabaseUnavailable):
        await discover_schema(str(path))


# --- execution ------------------------------------------------------------------------------------------------


async def test_execute_returns_rows(dbs: CustomerDatabases, any_url: str) -> None:
    result = await guarded(
        dbs,
        any_url,
        "SELECT c.name, c.gdp, c.founded, k.continent FROM city c JOIN country k ON k.id = c.country_id "
        "WHERE c.population > 1000000 ORDER BY c.population DESC",
        timeout_s=5,
        row_limit=100,
    )
    assert [c.lower() for c in result.columns] == ["name", "gdp", "founded", "continent"]
    assert [r[0] for r in result.rows] == ["Tokyo", "Nairobi", "Osaka", "Paris"]
    assert result.rows[0][1] == pytest.approx(99.75) and isinstance(result.rows[0][1], float)
    assert result.rows[0][2] == "1457-01-01"
    assert result.rows[2][1] is None
    assert not result.truncated and result.seconds >= 0
    # Every value is JSON-friendly.
    assert all(isinstance(v, (str, int, float, type(None))) for r in result.rows for v in r)


async def test_execute_bytes_become_hex(dbs: CustomerDatabases, any_url: str) -> None:
    result = await guarded(dbs, any_url, "SELECT photo FROM city WHERE id = 1", timeout_s=5, row_limit=5)
    assert result.rows == [("deadbeef",)]


async def test_row_limit_truncates(dbs: CustomerDatabases, any_url: str) -> None:
    result = await guarded(dbs, any_url, "SELECT n FROM numbers ORDER BY n", timeout_s=5, row_limit=10)
    assert result.truncated and [r[0] for r in result.rows] == list(range(1, 11))
    exact = await guarded(
        dbs, any_url, "SELECT n FROM numbers WHERE n <= 10 ORDER BY n", timeout_s=5, row_limit=10
    )
    assert not exact.truncated and len(exact.rows) == 10
    # The pool stays usable after a truncated (abandoned) result.
    again = await guarded(dbs, any_url, "SELECT COUNT(*) FROM numbers", timeout_s=5, row_limit=10)
    assert again.rows == [(250,)]


SLOW_QUERIES = {
    "sqlite": "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT COUNT(*) FROM r",
    "postgres": "SELECT pg_sleep(30)",
    "mysql": "SELECT COUNT(*) FROM numbers a, numbers b, numbers c, numbers d WHERE a.n + b.n + c.n + d.n > 3",
}


async def test_timeout_fires(dbs: CustomerDatabases, any_url: str) -> None:
    dialect = dialect_of(any_url)
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        await raw(dbs, any_url, SLOW_QUERIES[dialect], timeout_s=1, row_limit=10)
    assert time.monotonic() - started < 8
    result = await raw(dbs, any_url, "SELECT COUNT(*) FROM country", timeout_s=5, row_limit=10)
    assert result.rows == [(3,)]


WRITES = [
    "INSERT INTO country (id, name, continent) VALUES (9, 'Peru', 'America')",
    "UPDATE country SET name = 'X'",
    "DELETE FROM country",
    "DROP TABLE country",
    "CREATE TABLE evil (a INTEGER)",
]


@pytest.mark.parametrize("statement", WRITES)
async def test_writes_are_refused_by_the_engine(dbs: CustomerDatabases, any_url: str, statement: str) -> None:
    with pytest.raises(QueryFailed) as info:
        await raw(dbs, any_url, statement, timeout_s=5, row_limit=10)
    message = str(info.value).lower()
    assert any(w in message for w in ("read-only", "read only", "readonly", "not authorized")), message
    after = await raw(dbs, any_url, "SELECT id, name FROM country ORDER BY id", timeout_s=5, row_limit=10)
    assert after.rows == [(1, "France"), (2, "Japan"), (3, "Kenya")]


async def test_multiple_statements_are_refused(dbs: CustomerDatabases, any_url: str) -> None:
    with pytest.raises(QueryFailed):
        await raw(dbs, any_url, "SELECT 1; DELETE FROM country", timeout_s=5, row_limit=10)
    after = await raw(dbs, any_url, "SELECT COUNT(*) FROM country", timeout_s=5, row_limit=10)
    assert after.rows == [(3,)]


async def test_engine_errors_are_query_failed(dbs: CustomerDatabases, any_url: str) -> None:
    with pytest.raises(QueryFailed) as info:
        await raw(dbs, any_url, "SELECT pop FROM city", timeout_s=5, row_limit=10)
    assert "pop" in str(info.value)
    # and the connection is still fine afterwards
    assert (await raw(dbs, any_url, "SELECT 1", timeout_s=5, row_limit=1)).rows == [(1,)]


async def test_sqlite_cannot_attach_or_load(dbs: CustomerDatabases, sqlite_url: str, tmp_path: Path) -> None:
    target = tmp_path / "other.db"
    with pytest.raises(QueryFailed):
        await raw(dbs, sqlite_url, f"ATTACH DATABASE '{target}' AS other", timeout_s=5, row_limit=1)
    assert not target.exists()
    with pytest.raises(QueryFailed):
        await raw(dbs, sqlite_url, "SELECT load_extension('/tmp/nothing.so')", timeout_s=5, row_limit=1)


async def test_postgres_session_cannot_be_made_writable(dbs: CustomerDatabases, pg_url: str) -> None:
    # Even a statement that tries to lift the read-only mode leaves the next query read-only.
    with pytest.raises(QueryFailed, match="read-write"):
        await raw(dbs, pg_url, "SET transaction_read_only = off", timeout_s=5, row_limit=1)
    # (Refused as read-only, or, since its result is text, as a data-modifying WITH inside the size guard.)
    with pytest.raises(QueryFailed, match=r"read-only|data-modifying"):
        await raw(
            dbs,
            pg_url,
            "WITH s AS (SELECT set_config('transaction_read_only', 'off', true)), "
            "d AS (DELETE FROM country RETURNING id) SELECT * FROM s, d",
            timeout_s=5,
            row_limit=1,
        )
    # Allowed, but rolled back with the transaction (and RESET when the connection goes back to the pool).
    await raw(dbs, pg_url, "SET SESSION default_transaction_read_only = off", timeout_s=5, row_limit=1)
    with pytest.raises(QueryFailed, match="read-only"):
        await raw(dbs, pg_url, "DELETE FROM country", timeout_s=5, row_limit=1)
    after = await raw(dbs, pg_url, "SELECT COUNT(*) FROM country", timeout_s=5, row_limit=1)
    assert after.rows == [(3,)]


async def test_concurrent_queries_share_the_pool(dbs: CustomerDatabases, any_url: str) -> None:
    results = await asyncio.gather(
        *(
            guarded(dbs, any_url, f"SELECT n FROM numbers WHERE n = {i}", timeout_s=5, row_limit=5)
            for i in range(1, 9)
        )
    )
    assert [r.rows for r in results] == [[(i,)] for i in range(1, 9)]


# --- unreachable / credentials ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:topsecret@127.0.0.1:1/ql_test_custdb",
        "mysql://root:topsecret@127.0.0.1:1/ql_test_custdb",
    ],
)
async def test_unreachable_server(dbs: CustomerDatabases, url: str) -> None:
    with pytest.raises(DatabaseUnavailable) as info:
        await raw(dbs, url, "SELECT 1", timeout_s=2, row_limit=1)
    assert info.value.retryable
    assert "topsecret" not in str(info.value) and "127.0.0.1:1" in str(info.value)
    with pytest.raises(DatabaseUnavailable):
        await discover_schema(url, timeout_s=2)
    assert not await ping(url, timeout_s=2)
    assert not await dbs.ping(url)


async def test_missing_database_and_bad_credentials(
    dbs: CustomerDatabases, pg_url: str, mysql_url: str
) -> None:
    with pytest.raises(DatabaseUnavailable, match="does not exist"):
        await raw(
            dbs, "postgresql://postgres@127.0.0.1:5432/ql_no_such_db", "SELECT 1", timeout_s=2, row_limit=1
        )
    with pytest.raises(DatabaseUnavailable, match="does not exist"):
        await discover_schema("mysql://root@127.0.0.1:3306/ql_no_such_db")
    with pytest.raises(DatabaseUnavailable, match="refused the login") as info:
        await discover_schema("mysql://ql_nobody:hunter2@127.0.0.1:3306/ql_test_custdb")
    assert "hunter2" not in str(info.value)


async def test_ping(dbs: CustomerDatabases, any_url: str) -> None:
    assert await ping(any_url)
    assert await dbs.ping(any_url)


async def test_url_spellings(dbs: CustomerDatabases, pg_url: str, mysql_url: str) -> None:
    for url in (
        pg_url.replace("postgresql://", "postgres://"),
        pg_url.replace("postgresql://", "postgresql+asyncpg://"),
    ):
        assert (await guarded(dbs, url, "SELECT COUNT(*) FROM city", timeout_s=5, row_limit=1)).rows == [(5,)]
    url = mysql_url.replace("mysql://", "mariadb://")
    assert (await guarded(dbs, url, "SELECT COUNT(*) FROM city", timeout_s=5, row_limit=1)).rows == [(5,)]


async def test_missing_sqlite_file_is_unavailable(dbs: CustomerDatabases, tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable):
        await raw(dbs, f"sqlite:///{tmp_path}/missing.sqlite", "SELECT 1", timeout_s=1, row_limit=1)
    assert not (tmp_path / "missing.sqlite").exists()  # read-only open never creates the file


# --- read-only accounts -------------------------------------------------------------------------------------------


async def test_readonly_role_postgres(pg_url: str) -> None:
    role = f"ql_ro_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_URL)
    try:
        for statement in readonly_role_sql("postgres", role, DB_NAME, password="pw-Ro1"):
            await admin.execute(statement)
        ro = await asyncpg.connect(f"postgresql://{role}:pw-Ro1@127.0.0.1:5432/{DB_NAME}")
        assert await ro.fetchval("SELECT COUNT(*) FROM city") == 5
        with pytest.raises(asyncpg.PostgresError):
            await ro.execute("BEGIN READ WRITE; DELETE FROM country; COMMIT")
        await ro.close()
        assert await admin.fetchval("SELECT COUNT(*) FROM country") == 3
    finally:
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_readonly_role_mysql(mysql_url: str) -> None:
    role = f"ql_ro_{uuid.uuid4().hex[:8]}"
    admin = await aiomysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    try:
        async with admin.cursor() as cur:
            for statement in readonly_role_sql("mysql", role, DB_NAME, password="pw-Ro1"):
                await cur.execute(statement)
        ro = await aiomysql.connect(
            host="127.0.0.1", user=role, password="pw-Ro1", db=DB_NAME, autocommit=True
        )
        async with ro.cursor() as cur:
            await cur.execute("SELECT COUNT(*) FROM city")
            assert (await cur.fetchone())[0] == 5
            with pytest.raises(aiomysql.OperationalError):
                await cur.execute("DELETE FROM country")
        ro.close()
    finally:
        async with admin.cursor() as cur:
            await cur.execute(f"DROP USER IF EXISTS '{role}'@'%'")
            await cur.execute(f"SELECT COUNT(*) FROM {DB_NAME}.country")
            assert (await cur.fetchone())[0] == 3
        admin.close()


def test_readonly_role_sql_validates_names() -> None:
    assert readonly_role_sql("sqlite", "ro", "shop") == []
    with pytest.raises(ValueError):
        readonly_role_sql("postgres", "ro; DROP TABLE x", "shop")
    with pytest.raises(ValueError):
        readonly_role_sql("mysql", "ro", "shop`; --")
    statements = readonly_role_sql("postgres", "querylift_ro", "shop", password="it's")
    assert "'it''s'" in statements[0]
    assert all("INSERT" not in s and "ALL PRIVILEGES" not in s for s in statements)


def test_json_value() -> None:
    from datetime import date, datetime, timedelta
    from decimal import Decimal

    assert json_value(Decimal("1.50")) == 1.5
    assert json_value(Decimal("NaN")) is None
    assert json_value(float("inf")) is None
    assert json_value(date(2024, 1, 2)) == "2024-01-02"
    assert json_value(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05"
    assert json_value(timedelta(minutes=1)) == 60.0
    assert json_value(b"\x01\x02") == "0102"
    assert json_value(b"x" * 100) == "<100 bytes>"
    assert json_value(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert json_value([Decimal(1), None]) == [1.0, None]


def test_sqlite_connection_is_read_only_without_the_authorizer(sqlite_url: str) -> None:
    # execute() adds an authorizer on top; the connection underneath must refuse writes on its own.
    from services.core.customer_db.sqlite_statement import connect

    conn = connect(sqlite_url, 5)
    try:
        for statement in ("DELETE FROM country", "DROP TABLE country", "PRAGMA query_only = OFF"):
            try:
                conn.execute(statement)
            except sqlite3.OperationalError as error:
                assert "readonly" in str(error) or "read-only" in str(error)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("INSERT INTO country (id, name) VALUES (9, 'x')")
    finally:
        conn.close()
    check = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    assert check.execute("SELECT COUNT(*) FROM country").fetchone() == (3,)
    check.close()


async def test_sqlite_statements_run_in_a_worker_process_that_is_replaced_after_a_kill(
    dbs: CustomerDatabases, sqlite_url: str
) -> None:
    """A statement whose single VM step outlasts its timeout (quadratic instr of large values) cannot be
    interrupted: its worker process is killed at the deadline and the next statement gets a new one."""
    quadratic = "SELECT instr(printf('%.*c', 1000000, 'a'), printf('%.*c', 300000, 'a') || 'b')"
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        await raw(dbs, sqlite_url, quadratic, timeout_s=0.5, row_limit=1)
    assert time.monotonic() - started < 0.5 * 1.1 + 0.2  # the kill, plus starting nothing new
    result = await raw(dbs, sqlite_url, "SELECT COUNT(*) FROM country", timeout_s=5, row_limit=1)
    assert result.rows == [(3,)]


async def test_sqlite_reader_waits_for_a_writer(dbs: CustomerDatabases, sqlite_url: str) -> None:
    path = sqlite_url.split("///", 1)[1]
    await raw(dbs, sqlite_url, "SELECT COUNT(*) FROM country", timeout_s=5, row_limit=1)  # pooled now
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    release = asyncio.get_running_loop().call_later(0.3, writer.execute, "COMMIT")
    try:
        result = await raw(dbs, sqlite_url, "SELECT COUNT(*) FROM country", timeout_s=5, row_limit=1)
    finally:
        release.cancel()
        if writer.in_transaction:
            writer.execute("COMMIT")
        writer.close()
    assert result.rows == [(3,)]
