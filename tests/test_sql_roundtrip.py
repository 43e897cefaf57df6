"""What runs is what was checked, as properties.

1. For statements with quoted identifiers and strings of any content in every position the dialects allow
   (hypothesis builds them, including content meant to break out of its quotes), whatever the check approves
   is a statement whose tree, parsed again from the exact text that will run, equals the tree the check
   inspected, and reads nothing but the project's table.
2. The engines read that text as sqlglot does: approved statements that select string literals and quoted
   aliases return exactly those values and column names from real SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import aiomysql
import asyncpg
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from services.core.customer_db import CustomerDatabases, discover_schema
from services.core.schema import Column, SchemaInfo, Table
from services.core.sql import check_sql
from services.core.sql.check import same_tree
from services.core.sql.dialects import glot_dialect
from tests.conftest import with_database

DIALECTS = ("sqlite", "postgres", "mysql")
SCHEMA = {
    d: SchemaInfo(
        d,  # type: ignore[arg-type]
        [Table("accounts", [Column("id", "integer"), Column("name", "text"), Column("d", "date")])],
        namespace={"postgres": "public", "mysql": "ql_roundtrip"}.get(d),
    )
    for d in DIALECTS
}

#: Characters that matter to tokenizers: every quote, escape and comment opener, brackets, separators, and
#: words that would turn smuggled text into a second query.
_PIECES = st.sampled_from(
    ["'", '"', "`", "\\", "[", "]", "(", ")", ",", ";", "/*", "*/", "/*+", "/*!", "--", "#", "$$", "$q$",
     "\n", " ", "E'", "U&'", "x'", "N'", "::", " AS ", "SELECT ", " FROM ", "secrets", "sqlite_master",
     "other.secrets", "pg_catalog.version()", "a", "Z", "1", "é", "%"]
)  # fmt: skip
payload = st.lists(_PIECES, min_size=0, max_size=12).map("".join)

_IDENT_QUOTES = {"sqlite": ['"', "`", "["], "postgres": ['"'], "mysql": ["`", '"']}
_TEMPLATES = {
    "common": [
        "SELECT {s} FROM accounts",
        "SELECT {i} FROM accounts",
        "SELECT id AS {i} FROM accounts",
        "SELECT CAST(id AS {i}) FROM accounts",
        "SELECT EXTRACT({i} FROM d) FROM accounts",
        "SELECT * FROM accounts WHERE name = {s}",
        "SELECT * FROM accounts WHERE name LIKE {s}",
        "SELECT id FROM accounts ORDER BY {i}",
        "SELECT {i}.id FROM accounts AS {i}",
        "SELECT COUNT(*) AS {i} FROM accounts GROUP BY name HAVING name <> {s}",
        "SELECT COALESCE(name, {s}) FROM accounts",
        "SELECT CASE WHEN name = {s} THEN {s} ELSE {i} END FROM accounts",
        "SELECT {s} AS {i}, {s} FROM accounts",
    ],
    "sqlite": ["SELECT CHAR(65 USING {i}) FROM accounts", "SELECT strftime({s}, d) FROM accounts"],
    "postgres": [
        "SELECT id::{i} FROM accounts",
        "SELECT DATE_PART({s}, d) FROM accounts",
        "SELECT DATE_TRUNC({s}, d) FROM accounts",
        "SELECT INTERVAL {s} {i} FROM accounts",
        "SELECT E{s} FROM accounts",
    ],
    "mysql": [
        "SELECT CONVERT(name USING {i}) FROM accounts",
        "SELECT CAST(name AS CHAR CHARACTER SET {i}) FROM accounts",
        "SELECT TIMESTAMPADD({i}, 1, d) FROM accounts",
        "SELECT /*+ {p} */ id FROM accounts",
        "SELECT DATE_ADD(d, INTERVAL 1 {i}) FROM accounts",
    ],
}


@st.composite
def hostile_statements(draw: st.DrawFn, dialect: str) -> str:
    template = draw(st.sampled_from(_TEMPLATES["common"] + _TEMPLATES[dialect]))
    quote = draw(st.sampled_from(_IDENT_QUOTES[dialect]))
    close = "]" if quote == "[" else quote

    def ident() -> str:
        return quote + draw(payload) + close

    def string() -> str:
        return "'" + draw(payload) + "'"

    out = template
    while "{i}" in out or "{s}" in out or "{p}" in out:
        out = out.replace("{i}", ident(), 1).replace("{s}", string(), 1).replace("{p}", draw(payload), 1)
    return out


@pytest.mark.parametrize("dialect", DIALECTS)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_tree_checked_is_the_tree_of_what_runs(dialect: str, data: st.DataObject) -> None:
    statement = data.draw(hostile_statements(dialect))
    check = check_sql(statement, SCHEMA[dialect])
    if check.checked is None:
        return  # refused: nothing runs
    assert check.tree is not None
    runs = sqlglot.parse(check.checked.text, read=glot_dialect(dialect))
    assert len(runs) == 1 and runs[0] is not None
    assert same_tree(check.tree, runs[0]), (statement, check.checked.text)
    # What runs reads the project's own table and nothing else, and calls no function of another schema.
    tables = {t.name.lower() for t in runs[0].find_all(exp.Table)}
    assert tables <= {"accounts"}, (statement, check.checked.text)
    assert not any(t.db and t.db.lower() != SCHEMA[dialect].namespace for t in runs[0].find_all(exp.Table))
    assert not any(isinstance(n.parent, exp.Dot) for n in runs[0].find_all(exp.Func))


def test_same_tree_is_strict() -> None:
    """Names and literals compare character for character; function names alone compare case-blind."""
    read = glot_dialect("postgres")
    a, b = sqlglot.parse_one("SELECT Id FROM t", read=read), sqlglot.parse_one("SELECT id FROM t", read=read)
    assert not same_tree(a, b)
    assert not same_tree(
        sqlglot.parse_one("SELECT 'S'", read=read), sqlglot.parse_one("SELECT 's'", read=read)
    )
    c, d = (
        sqlglot.parse_one('SELECT "Id" FROM t', read=read),
        sqlglot.parse_one("SELECT Id FROM t", read=read),
    )
    assert not same_tree(c, d)
    assert same_tree(
        sqlglot.parse_one("SELECT lower(x)", read=read), sqlglot.parse_one("SELECT LOWER(x)", read=read)
    )


# --- the engines read what runs as sqlglot does -----------------------------------------------------------

_TEXT = st.lists(
    st.sampled_from([*"ab Z1'\"`\\%_$;,()/*-#\n\té", "$$", "*/", "/*", "--", "\\'", "''"]), max_size=16
).map("".join)


def _literal(dialect: str, value: str) -> str:
    """The value as a string literal written the way a model would (quotes doubled, MySQL backslashes too)."""
    body = value.replace("'", "''")
    if dialect == "mysql":
        body = body.replace("\\", "\\\\")
    return f"'{body}'"


def _ident(dialect: str, value: str) -> str:
    if dialect == "mysql":
        return "`" + value.replace("`", "``") + "`"
    return '"' + value.replace('"', '""') + '"'


@pytest.fixture(scope="module")
async def engines(
    tmp_path_factory: pytest.TempPathFactory, customer_pg_admin: str
) -> AsyncIterator[dict[str, tuple[str, SchemaInfo]]]:
    path = tmp_path_factory.mktemp("roundtrip") / "rt.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE accounts (id INTEGER, name TEXT, d DATE)")
        db.execute("INSERT INTO accounts VALUES (1, 'x', '2020-01-01')")
    urls = {"sqlite": f"sqlite:///{path}"}
    admin = await asyncpg.connect(customer_pg_admin)
    await admin.execute("DROP DATABASE IF EXISTS ql_roundtrip")
    await admin.execute("CREATE DATABASE ql_roundtrip")
    await admin.close()
    pg = with_database(customer_pg_admin, "ql_roundtrip")
    conn = await asyncpg.connect(pg)
    await conn.execute(
        "CREATE TABLE accounts (id integer, name text, d date); INSERT INTO accounts VALUES (1, 'x', '2020-01-01')"
    )
    await conn.close()
    urls["postgres"] = pg
    try:
        my = await aiomysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    except (OSError, aiomysql.Error):
        my = None  # MariaDB absent: its cases are skipped below
    if my is not None:
        async with my.cursor() as cur:
            for stmt in (
                "DROP DATABASE IF EXISTS ql_roundtrip",
                "CREATE DATABASE ql_roundtrip",
                "CREATE TABLE ql_roundtrip.accounts (id int, name text, d date)",
                "INSERT INTO ql_roundtrip.accounts VALUES (1, 'x', '2020-01-01')",
            ):
                await cur.execute(stmt)
        my.close()
        urls["mysql"] = "mysql://root@127.0.0.1:3306/ql_roundtrip"
    yield {d: (url, await discover_schema(url)) for d, url in urls.items()}


_CASES = st.lists(st.tuples(_TEXT, _TEXT.filter(lambda s: s.strip() != "")), min_size=1, max_size=3)


@pytest.mark.parametrize("dialect", DIALECTS)
@settings(max_examples=60, deadline=None)
@given(values=_CASES)
async def test_engines_read_literals_and_names_as_the_check_did(
    dialect: str, engines: dict[str, tuple[str, SchemaInfo]], values: list[tuple[str, str]]
) -> None:
    if dialect not in engines:
        pytest.skip("no MariaDB/MySQL at 127.0.0.1:3306: install mariadb-server")
    url, schema = engines[dialect]
    projections = ", ".join(
        f"{_literal(dialect, v)} AS {_ident(dialect, f'c{i}_{n.strip()[:20]}')}"
        for i, (v, n) in enumerate(values)
    )
    sql = f"SELECT {projections} FROM accounts"
    databases = CustomerDatabases()
    try:
        check, result = await databases.check_and_run(url, sql, schema, timeout_s=5, row_limit=5)
    finally:
        await databases.close()
    # The values and names sqlglot read are the values and names the engine returned.
    assert check.tree is not None and check.checked is not None
    seen = [p.this.this if isinstance(p.this, exp.Literal) else None for p in check.tree.expressions]
    assert list(result.rows[0]) == seen == [v for v, _ in values], (sql, check.checked.text)
    assert result.columns == [p.alias for p in check.tree.expressions], (sql, check.checked.text)


#: Options of the database URL (the operator's) that must not change how the server reads what runs (the
#: model's): in sjis and ujis Python encodes "¥" as the byte 0x5C, which the server reads as a backslash
#: escaping the quote after it, so 'x¥'' AS a, (SELECT ...) AS s #' ran the smuggled subquery.
URL_OPTIONS = [("mysql", "?charset=sjis"), ("mysql", "?charset=ujis"), ("mysql", "?charset=latin1")]
_YEN_VALUES = ["x¥' AS a, 1 AS b #", "¥", "‾¥\\", "a¥'' b", "¥\\'"]


@pytest.mark.parametrize(("dialect", "options"), URL_OPTIONS)
async def test_url_options_do_not_change_how_the_engine_reads_what_runs(
    dialect: str, options: str, engines: dict[str, tuple[str, SchemaInfo]]
) -> None:
    if dialect not in engines:
        pytest.skip("no MariaDB/MySQL at 127.0.0.1:3306: install mariadb-server")
    url, schema = engines[dialect]
    projections = ", ".join(f"{_literal(dialect, v)} AS c{i}" for i, v in enumerate(_YEN_VALUES))
    databases = CustomerDatabases()
    try:
        check, result = await databases.check_and_run(
            url + options, f"SELECT {projections} FROM accounts", schema, timeout_s=5, row_limit=5
        )
    finally:
        await databases.close()
    assert check.checked is not None
    assert result.columns == [f"c{i}" for i in range(len(_YEN_VALUES))], check.checked.text
    assert list(result.rows[0]) == _YEN_VALUES
