"""Table-driven tests of the static SQL checks: (dialect, sql, expected code) in the style of sqlglot's tests."""

from __future__ import annotations

import pytest

from services.core.schema import Column, ForeignKey, SchemaInfo, Table
from services.core.sql import check_sql, extract_sql, referenced_names


def make_schema(dialect: str) -> SchemaInfo:
    return SchemaInfo(
        dialect,  # type: ignore[arg-type]
        [
            Table(
                "city",
                [
                    Column("id", "integer", primary_key=True, nullable=False),
                    Column("name", "text"),
                    Column("population", "integer"),
                    Column("country_id", "integer"),
                    Column("founded", "date"),
                ],
                [ForeignKey("country_id", "country", "id")],
            ),
            Table(
                "country",
                [
                    Column("id", "integer", primary_key=True, nullable=False),
                    Column("name", "text"),
                    Column("continent", "text"),
                    Column("gdp", "numeric"),
                ],
            ),
            Table(
                "Orders",
                [
                    Column("OrderID", "integer", primary_key=True),
                    Column("city_id", "integer"),
                    Column("amount", "numeric"),
                    Column("placed_at", "timestamp"),
                ],
            ),
        ],
        namespace={"postgres": "public", "mysql": "shop"}.get(dialect),
    )


DIALECTS = ("sqlite", "postgres", "mysql")

# --- writing statements, whatever the dialect ----------------------------------------------------------------
WRITES = [
    "INSERT INTO city (id, name) VALUES (99, 'X')",
    "INSERT INTO city SELECT * FROM city",
    "UPDATE city SET population = 0",
    "UPDATE city SET name = 'x' WHERE id = 1",
    "DELETE FROM city",
    "DELETE FROM city WHERE id IN (SELECT id FROM city)",
    "DROP TABLE city",
    "DROP VIEW IF EXISTS v",
    "CREATE TABLE t2 (a int)",
    "CREATE TABLE t2 AS SELECT * FROM city",
    "CREATE VIEW v AS SELECT * FROM city",
    "CREATE INDEX i ON city (name)",
    "ALTER TABLE city ADD COLUMN x int",
    "ALTER TABLE city RENAME TO town",
]
WRITE_CASES = [(d, sql, "not_read_only") for d in DIALECTS for sql in WRITES]

DIALECT_REJECTIONS: list[tuple[str, str, str]] = [
    # SQLite
    ("sqlite", "PRAGMA table_info(city)", "not_read_only"),
    ("sqlite", "PRAGMA writable_schema = ON", "not_read_only"),
    ("sqlite", "ATTACH DATABASE '/tmp/other.db' AS other", "not_read_only"),
    ("sqlite", "DETACH DATABASE other", "not_read_only"),
    ("sqlite", "VACUUM", "not_read_only"),
    ("sqlite", "VACUUM INTO '/tmp/copy.db'", "not_read_only"),
    ("sqlite", "REINDEX city", "not_read_only"),
    ("sqlite", "REPLACE INTO city (id, name) VALUES (1, 'x')", "not_read_only"),
    ("sqlite", "INSERT OR REPLACE INTO city (id) VALUES (1)", "not_read_only"),
    ("sqlite", "BEGIN TRANSACTION", "not_read_only"),
    ("sqlite", "SELECT load_extension('/tmp/evil.so')", "forbidden"),
    ("sqlite", "SELECT readfile('/etc/passwd')", "forbidden"),
    ("sqlite", "SELECT writefile('/tmp/x', name) FROM city", "forbidden"),
    ("sqlite", "SELECT fts3_tokenizer('simple')", "forbidden"),
    ("sqlite", "SELECT * FROM sqlite_master", "forbidden"),
    ("sqlite", "SELECT name FROM sqlite_schema", "forbidden"),
    ("sqlite", "SELECT sql FROM sqlite_temp_master", "forbidden"),
    ("sqlite", "SELECT * FROM other.city", "forbidden"),
    ("sqlite", "SELECT name FROM city; SELECT name FROM country", "multiple_statements"),
    ("sqlite", "SELECT 1; DROP TABLE city", "multiple_statements"),
    ("sqlite", "SELECT * INTO backup FROM city", "not_read_only"),
    ("sqlite", "SELECT * FROM pragma_table_info('city')", "forbidden"),
    ("sqlite", "SELECT * FROM pragma_database_list", "forbidden"),
    # PostgreSQL
    ("postgres", "WITH d AS (DELETE FROM city RETURNING *) SELECT * FROM d", "not_read_only"),
    ("postgres", "WITH u AS (UPDATE city SET name = 'x' RETURNING id) SELECT id FROM u", "not_read_only"),
    (
        "postgres",
        "WITH i AS (INSERT INTO city (id) VALUES (5) RETURNING id) SELECT id FROM i",
        "not_read_only",
    ),
    ("postgres", "SELECT * INTO city_copy FROM city", "not_read_only"),
    ("postgres", "SELECT * FROM city FOR UPDATE", "not_read_only"),
    ("postgres", "SELECT * FROM city FOR SHARE", "not_read_only"),
    ("postgres", "SELECT * FROM city FOR NO KEY UPDATE", "not_read_only"),
    ("postgres", "SELECT name FROM (SELECT name FROM city FOR UPDATE) AS c", "not_read_only"),
    (
        "postgres",
        "MERGE INTO city c USING country k ON c.id = k.id WHEN MATCHED THEN DELETE",
        "not_read_only",
    ),
    ("postgres", "TRUNCATE city", "not_read_only"),
    ("postgres", "GRANT SELECT ON city TO public", "not_read_only"),
    ("postgres", "REVOKE SELECT ON city FROM public", "not_read_only"),
    ("postgres", "SET search_path = other", "not_read_only"),
    ("postgres", "SET default_transaction_read_only = off", "not_read_only"),
    ("postgres", "RESET ALL", "not_read_only"),
    ("postgres", "COPY city TO '/tmp/city.csv'", "not_read_only"),
    ("postgres", "COPY city FROM PROGRAM 'curl evil'", "not_read_only"),
    ("postgres", "CALL refresh_everything()", "not_read_only"),
    ("postgres", "EXECUTE stmt", "not_read_only"),
    ("postgres", "PREPARE s AS SELECT 1", "not_read_only"),
    ("postgres", "DO $$ BEGIN DELETE FROM city; END $$", "not_read_only"),
    ("postgres", "LOCK TABLE city", "not_read_only"),
    ("postgres", "VACUUM city", "not_read_only"),
    ("postgres", "COMMIT", "not_read_only"),
    ("postgres", "EXPLAIN ANALYZE DELETE FROM city", "not_read_only"),
    ("postgres", "LISTEN channel", "not_read_only"),
    ("postgres", "SELECT pg_read_file('/etc/passwd')", "forbidden"),
    ("postgres", "SELECT pg_read_binary_file('/etc/passwd')", "forbidden"),
    ("postgres", "SELECT * FROM pg_ls_dir('.')", "forbidden"),
    ("postgres", "SELECT lo_import('/etc/passwd')", "forbidden"),
    ("postgres", "SELECT lo_export(1, '/tmp/x')", "forbidden"),
    ("postgres", "SELECT * FROM dblink('host=evil', 'SELECT 1') AS t(a int)", "forbidden"),
    ("postgres", "SELECT dblink_exec('host=evil', 'DROP TABLE x')", "forbidden"),
    ("postgres", "SELECT pg_sleep(10)", "forbidden"),
    ("postgres", "SELECT pg_catalog.pg_sleep(10)", "forbidden"),
    ("postgres", "SELECT name FROM city WHERE pg_sleep(1) IS NOT NULL", "forbidden"),
    ("postgres", "SELECT current_setting('data_directory')", "forbidden"),
    ("postgres", "SELECT set_config('statement_timeout', '0', false)", "forbidden"),
    ("postgres", "SELECT pg_terminate_backend(1)", "forbidden"),
    ("postgres", "SELECT pg_cancel_backend(1)", "forbidden"),
    ("postgres", "SELECT pg_advisory_lock(1)", "forbidden"),
    ("postgres", "SELECT query_to_xml('DELETE FROM city', true, true, '')", "forbidden"),
    ("postgres", "SELECT nextval('city_id_seq')", "forbidden"),
    ("postgres", "SELECT * FROM pg_catalog.pg_authid", "forbidden"),
    ("postgres", "SELECT * FROM pg_shadow", "forbidden"),
    ("postgres", "SELECT * FROM pg_stat_activity", "forbidden"),
    ("postgres", "SELECT table_name FROM information_schema.tables", "forbidden"),
    ("postgres", "SELECT * FROM other_schema.city", "forbidden"),
    ("postgres", "SELECT * FROM otherdb.public.city", "forbidden"),
    ("postgres", "SELECT $1", "forbidden"),
    ("postgres", "SELECT * FROM city, LATERAL pg_sleep(1)", "forbidden"),
    ("postgres", "SELECT name FROM city UNION ALL SELECT passwd FROM pg_shadow", "forbidden"),
    ("postgres", "SELECT * FROM city WHERE id = (SELECT pg_sleep(1))", "forbidden"),
    ("postgres", "SELECT pg_catalog.lower(name) FROM city", "forbidden"),
    ("postgres", 'SELECT "pg_sleep"(1)', "forbidden"),
    ("postgres", "TABLE city", "not_read_only"),
    ("postgres", "VALUES (1)", "not_read_only"),
    ("postgres", "(DELETE FROM city)", "parse_error"),
    ("postgres", "SELECT 1; SELECT 2", "multiple_statements"),
    ("postgres", "SELECT/**/1;DROP TABLE city", "multiple_statements"),
    ("postgres", "SELECT name FROM city;\nDELETE FROM city", "multiple_statements"),
    # MySQL / MariaDB
    ("mysql", "REPLACE INTO city (id, name) VALUES (1, 'x')", "not_read_only"),
    ("mysql", "LOAD DATA INFILE '/etc/passwd' INTO TABLE city", "not_read_only"),
    ("mysql", "LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE city", "not_read_only"),
    ("mysql", "LOCK TABLES city READ", "not_read_only"),
    ("mysql", "UNLOCK TABLES", "not_read_only"),
    ("mysql", "SET @a = 1", "not_read_only"),
    ("mysql", "SET SESSION TRANSACTION READ WRITE", "not_read_only"),
    ("mysql", "SET GLOBAL max_execution_time = 0", "not_read_only"),
    ("mysql", "USE mysql", "not_read_only"),
    ("mysql", "HANDLER city OPEN", "not_read_only"),
    ("mysql", "CALL sp()", "not_read_only"),
    ("mysql", "SHOW TABLES", "not_read_only"),
    ("mysql", "START TRANSACTION", "not_read_only"),
    ("mysql", "INSERT INTO city (id) VALUES (1) ON DUPLICATE KEY UPDATE name = 'x'", "not_read_only"),
    ("mysql", "SELECT * FROM city FOR UPDATE", "not_read_only"),
    ("mysql", "SELECT * FROM city LOCK IN SHARE MODE", "not_read_only"),
    ("mysql", "SELECT name FROM city INTO OUTFILE '/tmp/x.txt'", "forbidden"),
    ("mysql", "SELECT * FROM city INTO DUMPFILE '/tmp/x'", "forbidden"),
    ("mysql", "SELECT name INTO OUTFILE '/tmp/x' FROM city", "forbidden"),
    ("mysql", "SELECT name INTO @n FROM city LIMIT 1", "not_read_only"),
    ("mysql", "SELECT name FROM city LIMIT 1 INTO @n", "not_read_only"),
    ("mysql", "SELECT SLEEP(5)", "forbidden"),
    ("mysql", "SELECT name FROM city WHERE SLEEP(1) = 0", "forbidden"),
    ("mysql", "SELECT BENCHMARK(100000000, MD5('x'))", "forbidden"),
    ("mysql", "SELECT LOAD_FILE('/etc/passwd')", "forbidden"),
    ("mysql", "SELECT sys_exec('rm -rf /')", "forbidden"),
    ("mysql", "SELECT GET_LOCK('x', 10)", "forbidden"),
    ("mysql", "SELECT @@datadir", "forbidden"),
    ("mysql", "SELECT @a := 1", "forbidden"),
    ("mysql", "SELECT user, authentication_string FROM mysql.user", "forbidden"),
    ("mysql", "SELECT * FROM information_schema.tables", "forbidden"),
    ("mysql", "SELECT * FROM performance_schema.threads", "forbidden"),
    ("mysql", "SELECT * FROM sys.sys_config", "forbidden"),
    ("mysql", "SELECT * FROM otherdb.city", "forbidden"),
    ("mysql", "SELECT 1; SELECT 2", "multiple_statements"),
    ("mysql", "SELECT 1 -- x\n; DROP TABLE city", "multiple_statements"),
    ("mysql", "SELECT name FROM city; UPDATE city SET name = 'x'", "multiple_statements"),
    # MariaDB reads ROLLUP(x) / CUBE(x) as calls of stored functions of those names.
    ("mysql", "SELECT country_id FROM city GROUP BY ROLLUP (country_id)", "forbidden"),
    ("mysql", "SELECT country_id FROM city GROUP BY CUBE (country_id)", "forbidden"),
    ("mysql", "SELECT name['], (SELECT secret FROM other.secrets) AS s, 1 ['] FROM city", "forbidden"),
    # PostgreSQL reads q.f, where q has no column f, as the call f(q) (attribute notation), and (v).f as a
    # field of v or the call f(v): record_out, pg_column_size, num_nulls ... run though never allowed.
    ("postgres", "SELECT s.record_out FROM (SELECT 1 + 1) AS s", "unknown_column"),
    ("postgres", "SELECT j.pg_column_size FROM json_each('{\"a\": 1}') AS j", "unknown_column"),
    ("postgres", 'SELECT s.num_nulls FROM (SELECT 1 AS "NUM_NULLS") AS s', "unknown_column"),
    (
        "postgres",
        'SELECT S.num_nulls FROM (SELECT 1 AS num_nulls) AS "S", (SELECT 2 AS z) AS s',
        "unknown_column",
    ),
    ("postgres", 'SELECT c.pg_typeof FROM (SELECT name AS "PG_TYPEOF" FROM city) AS c', "unknown_column"),
    ("postgres", "SELECT (s).pg_typeof FROM (SELECT 1 + 1) AS s", "forbidden"),
    ("postgres", "SELECT (c).row_to_json FROM city AS c", "forbidden"),
]

REJECTIONS = WRITE_CASES + DIALECT_REJECTIONS


@pytest.mark.parametrize(("dialect", "sql", "expected"), REJECTIONS)
def test_rejections(dialect: str, sql: str, expected: str) -> None:
    result = check_sql(sql, make_schema(dialect))
    assert not result.ok
    assert result.code == expected, result.message
    assert result.message and result.message != "ok"


def test_there_are_enough_rejection_cases() -> None:
    assert len(REJECTIONS) >= 60
    assert {d for d, _, _ in DIALECT_REJECTIONS} == set(DIALECTS)


# --- legitimate queries --------------------------------------------------------------------------------------
ACCEPTED: list[tuple[str, str]] = [
    ("sqlite", "SELECT name FROM city"),
    ("sqlite", "SELECT name FROM city;"),
    ("sqlite", "select NAME from CITY where Population > 1000"),
    ("sqlite", "SELECT c.name, k.name FROM city AS c JOIN country AS k ON c.country_id = k.id"),
    (
        "sqlite",
        "SELECT k.continent, SUM(c.population) AS total FROM city c JOIN country k "
        "ON c.country_id = k.id GROUP BY k.continent HAVING SUM(c.population) > 10 ORDER BY total DESC",
    ),
    ("sqlite", "SELECT name FROM city ORDER BY population DESC LIMIT 5 OFFSET 5"),
    ("sqlite", "SELECT strftime('%Y', founded) AS y, COUNT(*) FROM city GROUP BY y"),
    ("sqlite", "SELECT date('now', '-7 days')"),
    ("sqlite", "SELECT rowid, name FROM city"),
    ("sqlite", 'SELECT "name" FROM "city"'),
    ("sqlite", "SELECT name FROM city UNION SELECT name FROM country"),
    ("sqlite", "SELECT name FROM city INTERSECT SELECT name FROM country"),
    ("sqlite", "SELECT name FROM city EXCEPT SELECT name FROM country ORDER BY name"),
    ("sqlite", "SELECT * FROM main.city"),
    ("sqlite", "SELECT o.OrderID, o.amount FROM Orders o WHERE o.amount > (SELECT AVG(amount) FROM orders)"),
    (
        "postgres",
        "SELECT name, population, RANK() OVER (PARTITION BY country_id ORDER BY population DESC) "
        "AS r FROM city",
    ),
    (
        "postgres",
        "SELECT name, CASE WHEN population > 1000000 THEN 'big' ELSE 'small' END AS size FROM city "
        "ORDER BY size, name",
    ),
    ("postgres", "SELECT COUNT(DISTINCT country_id) FROM city"),
    (
        "postgres",
        "SELECT DATE_TRUNC('month', placed_at) AS m, SUM(amount) FROM \"Orders\" GROUP BY 1 ORDER BY 1",
    ),
    (
        "postgres",
        "SELECT EXTRACT(YEAR FROM founded) AS y FROM city WHERE founded > CURRENT_DATE - INTERVAL '10 years'",
    ),
    (
        "postgres",
        "WITH big AS (SELECT id, name FROM city WHERE population > 100) SELECT b.name FROM big AS b",
    ),
    (
        "postgres",
        "WITH per AS (SELECT country_id, COUNT(*) AS n FROM city GROUP BY country_id) "
        "SELECT k.name, per.n FROM per JOIN country k ON k.id = per.country_id ORDER BY per.n DESC",
    ),
    (
        "postgres",
        "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 5) SELECT n FROM seq",
    ),
    ("postgres", "SELECT t.name FROM (SELECT name, population FROM city) AS t WHERE t.population > 5"),
    ("postgres", "SELECT * FROM (SELECT * FROM city) AS t WHERE t.population > 5"),
    (
        "postgres",
        "SELECT name FROM city c WHERE EXISTS (SELECT 1 FROM country k WHERE k.id = c.country_id "
        "AND continent = 'Asia')",
    ),
    ("postgres", "SELECT name FROM city WHERE country_id IN (SELECT id FROM country WHERE gdp > 1.5)"),
    ("postgres", "SELECT public.city.name FROM public.city"),
    ("postgres", "SELECT name FROM city ORDER BY name NULLS LAST LIMIT 10"),
    (
        "postgres",
        "SELECT DISTINCT ON (country_id) country_id, name FROM city ORDER BY country_id, population DESC",
    ),
    ("postgres", "SELECT name::text, population::numeric / 1000 FROM city"),
    ("postgres", "SELECT COUNT(*) FILTER (WHERE population > 10) FROM city"),
    ("postgres", "SELECT x FROM generate_series(1, 3) AS g(x)"),
    ("postgres", "SELECT g.x FROM generate_series(1, 3) AS g(x)"),
    ("postgres", "SELECT j.key, j.value FROM json_each('{\"a\": 1}') AS j(key, value)"),
    ("postgres", 'SELECT t."Total" FROM (SELECT COUNT(*) AS "Total" FROM city) AS t'),
    (
        "postgres",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT r.n + 1 FROM r WHERE r.n < 3) SELECT r.n FROM r",
    ),
    ("postgres", "SELECT c.* FROM city c"),
    ("postgres", "SELECT name FROM city -- the largest ones\nORDER BY population DESC"),
    ("mysql", "SELECT `name` FROM `city` WHERE `population` > 10 LIMIT 10, 5"),
    ("mysql", "SELECT name FROM city WHERE founded > DATE_SUB(NOW(), INTERVAL 7 DAY)"),
    ("mysql", "SELECT YEAR(founded) AS y, COUNT(*) AS n FROM city GROUP BY y HAVING n > 1 ORDER BY n DESC"),
    ("mysql", "SELECT IFNULL(name, 'none'), CONCAT(name, '!') FROM country"),
    (
        "mysql",
        "SELECT name, SUM(population) OVER (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) "
        "FROM city",
    ),
    ("mysql", "SELECT 1 FROM dual"),
    ("mysql", "SELECT country_id, COUNT(*) FROM city GROUP BY country_id WITH ROLLUP"),
    ("mysql", "SELECT DATE_FORMAT(founded, '%Y-%m') AS ym, COUNT(*) FROM city GROUP BY ym"),
    (
        "sqlite",
        "SELECT CAST(strftime('%Y', founded) AS INTEGER), julianday('now') - julianday(founded) FROM city",
    ),
    ("postgres", "SELECT to_char(founded, 'YYYY'), now() - founded FROM city WHERE name ILIKE '%a%'"),
    ("mysql", "SELECT name FROM city WHERE name LIKE 'A%' AND name <> 'INSERT INTO x; DROP TABLE city'"),
    (
        "mysql",
        "SELECT k.name, COUNT(c.id) FROM country k LEFT JOIN city c ON c.country_id = k.id GROUP BY k.name",
    ),
]


@pytest.mark.parametrize(("dialect", "sql"), ACCEPTED)
def test_accepted(dialect: str, sql: str) -> None:
    result = check_sql(sql, make_schema(dialect))
    assert result.ok, f"{result.code}: {result.message}"
    assert result.code == "ok"
    assert result.sql and not result.sql.rstrip().endswith(";")
    # The normalised statement must itself pass the check (it is what runs).
    assert check_sql(result.sql, make_schema(dialect)).ok


# --- schema validity --------------------------------------------------------------------------------------------
SCHEMA_CASES: list[tuple[str, str, str, str]] = [
    # (dialect, sql, expected code, a fragment the message must contain)
    ("sqlite", "SELECT name FROM towns", "unknown_table", "towns"),
    ("sqlite", "SELECT name FROM city JOIN towns ON towns.id = city.id", "unknown_table", "towns"),
    ("sqlite", "SELECT pop FROM city", "unknown_column", "population"),
    ("sqlite", "SELECT city.pop FROM city", "unknown_column", "city.pop"),
    ("sqlite", "SELECT c.pop FROM city c", "unknown_column", "c.pop"),
    ("sqlite", 'SELECT name FROM city WHERE name = "Paris"', "unknown_column", "single quotes"),
    ("postgres", "SELECT k.name FROM city c", "unknown_table", "k"),
    (
        "postgres",
        "SELECT c.continent FROM city c JOIN country k ON c.country_id = k.id",
        "unknown_column",
        "c.continent",
    ),
    ("postgres", "SELECT name FROM city ORDER BY pop", "unknown_column", "pop"),
    (
        "postgres",
        "SELECT country_id, COUNT(*) AS n FROM city GROUP BY country_id HAVING total > 1",
        "unknown_column",
        "total",
    ),
    (
        "postgres",
        "WITH big AS (SELECT name FROM city) SELECT b.population FROM big b",
        "unknown_column",
        "b.population",
    ),
    ("postgres", "SELECT t.name FROM (SELECT name AS n FROM city) t", "unknown_column", "t.name"),
    ("postgres", "SELECT * FROM (SELECT * FROM city) t WHERE t.gdp > 1", "unknown_column", "t.gdp"),
    (
        "postgres",
        'SELECT name FROM city WHERE id IN (SELECT city_no FROM "Orders")',
        "unknown_column",
        "city_no",
    ),
    ("postgres", "SELECT name FROM city UNION SELECT nom FROM country", "unknown_column", "nom"),
    ("mysql", "SELECT name FROM citys", "unknown_table", "city"),
    ("mysql", "SELECT amount FROM city", "unknown_column", "amount"),
    ("mysql", "SELECT o.total FROM Orders o", "unknown_column", "o.total"),
    ("postgres", "SELECT t.count FROM (SELECT COUNT(*) FROM city) AS t", "unknown_column", "count(t)"),
    ("postgres", "SELECT j.key FROM json_each('{}') AS j", "unknown_column", "AS j(key, value)"),
]


@pytest.mark.parametrize(("dialect", "sql", "expected", "fragment"), SCHEMA_CASES)
def test_schema_validity(dialect: str, sql: str, expected: str, fragment: str) -> None:
    result = check_sql(sql, make_schema(dialect))
    assert not result.ok
    assert result.code == expected, result.message
    assert fragment.lower() in result.message.lower()


def test_unknown_column_message_lists_the_tables_columns() -> None:
    result = check_sql("SELECT city.pop FROM city", make_schema("sqlite"))
    assert result.message.startswith("column city.pop does not exist; city has columns: ")
    assert "population" in result.message and "country_id" in result.message


def test_referenced_tables_and_columns_are_reported() -> None:
    result = check_sql(
        "SELECT c.name, k.continent FROM city c JOIN country k ON c.country_id = k.id WHERE population > 1",
        make_schema("postgres"),
    )
    assert result.ok
    assert result.tables == {"city", "country"}
    assert result.columns == {
        "city.name",
        "city.country_id",
        "city.population",
        "country.continent",
        "country.id",
    }


def test_cleaned_sql_drops_comments_and_semicolon() -> None:
    result = check_sql("SELECT name /* hidden */ FROM city -- note\n;", make_schema("mysql"))
    assert result.ok
    assert "hidden" not in result.sql and "note" not in result.sql and ";" not in result.sql


def test_mysql_executable_comment_cannot_smuggle_code() -> None:
    # MySQL executes /*! ... */; sqlglot treats it as a comment, so the cleaned statement must not contain it.
    result = check_sql("SELECT name FROM city /*!50000 , SLEEP(5) */", make_schema("mysql"))
    assert "SLEEP" not in result.sql.upper()


@pytest.mark.parametrize("sql", ["", "   ", ";", " ;; ", "-- only a comment"])
def test_empty(sql: str) -> None:
    assert check_sql(sql, make_schema("sqlite")).code == "empty"


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("sqlite", "SELECT FROM WHERE"),
        ("postgres", "SELECT name FROM city WHERE (population > 1"),
        ("mysql", "SELECT 'unterminated FROM city"),
        ("postgres", "SELEC name FROM city"),
    ],
)
def test_parse_errors(dialect: str, sql: str) -> None:
    result = check_sql(sql, make_schema(dialect))
    assert not result.ok
    assert result.code in ("parse_error", "not_read_only")
    assert result.message


def test_referenced_names_without_schema() -> None:
    tables, columns = referenced_names(
        "WITH per AS (SELECT country_id, COUNT(*) AS n FROM city GROUP BY country_id) "
        "SELECT k.name, per.n FROM per JOIN country k ON k.id = per.country_id",
        "postgres",
    )
    assert tables == {"city", "country"}
    assert columns == {"city.country_id", "country.name", "country.id"}
    tables, columns = referenced_names("SELECT name, pop FROM City ORDER BY pop", "sqlite")
    assert tables == {"city"} and columns == {"city.name", "city.pop"}
    tables, columns = referenced_names("SELECT name FROM a JOIN b ON a.id = b.a_id", "mysql")
    assert tables == {"a", "b"} and columns == {"name", "a.id", "b.a_id"}
    assert referenced_names("this is not sql ((", "sqlite") == (set(), set())


# --- extracting SQL from model output ---------------------------------------------------------------------------
EXTRACT_CASES: list[tuple[str, str]] = [
    ("SELECT name FROM city", "SELECT name FROM city"),
    ("SELECT name FROM city;", "SELECT name FROM city"),
    ("SELECT name FROM city;;  \n", "SELECT name FROM city"),
    ("```sql\nSELECT name\nFROM city\n```", "SELECT name\nFROM city"),
    ("```SQL\nSELECT 1;\n```\nThis returns one.", "SELECT 1"),
    (
        "Here is the query:\n```sql\nSELECT name FROM city;\n```\nIt lists the cities.",
        "SELECT name FROM city",
    ),
    ("```\nSELECT name FROM city\n```", "SELECT name FROM city"),
    ("```sql\nSELECT name FROM city", "SELECT name FROM city"),
    ("SQL: SELECT name FROM city", "SELECT name FROM city"),
    ("sql: select name from city;", "select name from city"),
    ("To answer this, we count cities. SELECT COUNT(*) FROM city;", "SELECT COUNT(*) FROM city"),
    ("SELECT name FROM city\n\nExplanation: this selects names.", "SELECT name FROM city"),
    ("SELECT name FROM city\nThis query returns all city names.", "SELECT name FROM city"),
    ("SELECT name FROM city; -- done", "SELECT name FROM city"),
    ("SELECT name FROM city; This lists the names.", "SELECT name FROM city"),
    ("SELECT ';' AS s FROM city; Done.", "SELECT ';' AS s FROM city"),
    (
        "WITH big AS (\n  SELECT id FROM city\n)\nSELECT id FROM big",
        "WITH big AS (\n  SELECT id FROM city\n)\nSELECT id FROM big",
    ),
    ("The answer:\nWITH t AS (SELECT 1 AS x) SELECT x FROM t;", "WITH t AS (SELECT 1 AS x) SELECT x FROM t"),
    (
        "SELECT name\nFROM city\nWHERE population > 5\nORDER BY name",
        "SELECT name\nFROM city\nWHERE population > 5\nORDER BY name",
    ),
    ("SELECT 1; DROP TABLE city", "SELECT 1; DROP TABLE city"),
    ("DROP TABLE city;", "DROP TABLE city"),
    ("I cannot answer that question.", ""),
    ("", ""),
    ("```python\nprint('hi')\n```", ""),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACT_CASES)
def test_extract_sql(text: str, expected: str) -> None:
    assert extract_sql(text) == expected


def test_extracted_multi_statement_is_still_rejected() -> None:
    sql = extract_sql("```sql\nSELECT name FROM city; DELETE FROM city;\n```")
    assert check_sql(sql, make_schema("postgres")).code == "multiple_statements"
