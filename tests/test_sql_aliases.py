"""Example SQL shown without the table aliases it does not need, or with short ones: what changes, what must stay,
and that the query returns the same rows before and after on a real SQLite database."""

from __future__ import annotations

import sqlite3

import pytest

from events import ContextExample
from services.core.prompt import PromptOptions, build_prompt
from services.core.schema import Column, SchemaInfo, Table
from services.core.sql.aliases import AliasStyle, drop_table_aliases, renumber_table_aliases

CASES = [
    # The only table of each SELECT: no qualifier needed, inner and outer alike.
    (
        "SELECT C0.name FROM city AS C0 WHERE C0.pop = (SELECT MAX(C1.pop) FROM city AS C1 WHERE C1.state = 'ohio')",
        "SELECT name FROM city WHERE pop = (SELECT MAX(pop) FROM city WHERE state = 'ohio')",
    ),
    # Two tables: qualified by their own names.
    (
        "SELECT S0.name FROM state AS S0, city AS C0 WHERE C0.state = S0.name AND C0.pop > 10",
        "SELECT state.name FROM state CROSS JOIN city WHERE city.state = state.name AND city.pop > 10",
    ),
    # A correlated subquery refers to the outer alias: that alias stays, the inner one goes.
    (
        "SELECT C0.name FROM city AS C0 WHERE C0.pop = (SELECT MAX(C1.pop) FROM city AS C1 WHERE C1.state = C0.state)",
        "SELECT C0.name FROM city AS C0 WHERE C0.pop = (SELECT MAX(pop) FROM city WHERE state = C0.state)",
    ),
    # The same table twice in one SELECT: both aliases are what tell them apart.
    (
        "SELECT A.name FROM city AS A JOIN city AS B ON A.state = B.state WHERE B.name = 'x'",
        "SELECT A.name FROM city AS A JOIN city AS B ON A.state = B.state WHERE B.name = 'x'",
    ),
    # Nothing to drop: returned as written, byte for byte.
    ("SELECT name  FROM city WHERE pop > 1", "SELECT name  FROM city WHERE pop > 1"),
    # Not SQL: returned as written.
    ("SELEKT what", "SELEKT what"),
]


@pytest.mark.parametrize(("sql", "expected"), CASES)
def test_drop_table_aliases(sql: str, expected: str) -> None:
    assert drop_table_aliases(sql, "sqlite") == expected


@pytest.fixture()
def cities() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(
        """
        CREATE TABLE state (name TEXT, area INT);
        CREATE TABLE city (name TEXT, state TEXT, pop INT);
        INSERT INTO state VALUES ('ohio', 10), ('utah', 20);
        INSERT INTO city VALUES ('a', 'ohio', 5), ('b', 'ohio', 7), ('c', 'utah', 3), ('d', 'utah', 9);
        """
    )
    return db


@pytest.mark.parametrize(("sql", "_expected"), CASES[:4])
def test_the_shorter_query_returns_the_same_rows(
    cities: sqlite3.Connection, sql: str, _expected: str
) -> None:
    before = sorted(cities.execute(sql).fetchall())
    after = sorted(cities.execute(drop_table_aliases(sql, "sqlite")).fetchall())
    assert before == after


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_other_dialects_keep_their_quoting(dialect: str) -> None:
    quote = '"' if dialect == "postgres" else "`"
    sql = f"SELECT c0.{quote}Name{quote} FROM city AS c0 WHERE c0.pop > 3"
    assert drop_table_aliases(sql, dialect) == f"SELECT {quote}Name{quote} FROM city WHERE pop > 3"


CITY_SCHEMA = SchemaInfo(
    dialect="sqlite",
    tables=[Table(name="city", columns=[Column(name="name", type="TEXT"), Column(name="pop", type="INT")])],
)


def _city_example(sql: str) -> ContextExample:
    return ContextExample(example_id="e1", source="project", score=0.9, question="biggest city", sql=sql)


def test_the_prompt_shows_plain_example_sql_only_when_asked() -> None:
    example = _city_example("SELECT C0.name FROM city AS C0 ORDER BY C0.pop DESC LIMIT 1")
    plain = build_prompt(
        "smallest city", CITY_SCHEMA, examples=[example], options=PromptOptions(plain_example_sql=True)
    )
    aliased = build_prompt("smallest city", CITY_SCHEMA, examples=[example], options=PromptOptions())
    shown = [m["content"] for m in plain.messages if m["role"] == "assistant"]
    assert shown == ["```sql\nSELECT name FROM city ORDER BY pop DESC LIMIT 1\n```"]
    assert [m["content"] for m in aliased.messages if m["role"] == "assistant"] == [
        f"```sql\n{example.sql}\n```"
    ]
    assert plain.tokens < aliased.tokens
    assert plain.examples_used[0].sql == example.sql  # what the answer paths read is the stored example


RENUMBERED: list[tuple[str, AliasStyle, str]] = [
    # Each alias named by its table and a count per table; the query's shape (which alias where) is kept.
    (
        "SELECT CITYalias0.name FROM city AS CITYalias0 WHERE CITYalias0.pop = "
        "( SELECT MAX( CITYalias1.pop ) FROM city AS CITYalias1 WHERE CITYalias1.state = CITYalias0.state )",
        "table_number",
        "SELECT city0.name FROM city AS city0 WHERE city0.pop = "
        "( SELECT MAX( city1.pop ) FROM city AS city1 WHERE city1.state = city0.state )",
    ),
    # By initials: two tables of one initial share the count, so every alias stays distinct.
    (
        "SELECT CITYalias0.name FROM city AS CITYalias0, state AS STATEalias0, country AS COUNTRYalias0 "
        "WHERE CITYalias0.state = STATEalias0.name AND COUNTRYalias0.name = 'usa'",
        "initial_number",
        "SELECT c0.name FROM city AS c0, state AS s0, country AS c1 WHERE c0.state = s0.name AND c1.name = 'usa'",
    ),
    # Quoted names stay quoted; a string that reads like an alias is a value, not a name.
    (
        'SELECT "CITYalias0".name FROM city AS "CITYalias0" WHERE "CITYalias0".name <> \'CITYalias0\'',
        "table_number",
        'SELECT "city0".name FROM city AS "city0" WHERE "city0".name <> \'CITYalias0\'',
    ),
    # Aliases already short: nothing to gain, returned byte for byte.
    ("SELECT a.name  FROM city AS a", "table_number", "SELECT a.name  FROM city AS a"),
    # A new name that is a table's already, or a column named like an alias: returned as written.
    (
        "SELECT longalias.name FROM city AS longalias, city0 WHERE city0.x = 1",
        "table_number",
        "SELECT longalias.name FROM city AS longalias, city0 WHERE city0.x = 1",
    ),
    (
        "SELECT longalias.longalias FROM city AS longalias",
        "table_number",
        "SELECT longalias.longalias FROM city AS longalias",
    ),
    # One alias defined twice (two scopes): returned as written.
    (
        "SELECT X.name FROM city AS X WHERE X.pop > (SELECT AVG(X.pop) FROM city AS X)",
        "initial_number",
        "SELECT X.name FROM city AS X WHERE X.pop > (SELECT AVG(X.pop) FROM city AS X)",
    ),
    # No aliases, or not SQL: as written.
    ("SELECT name FROM city", "table_number", "SELECT name FROM city"),
    ("SELEKT what", "initial_number", "SELEKT what"),
]


@pytest.mark.parametrize(("sql", "style", "expected"), RENUMBERED)
def test_renumber_table_aliases(sql: str, style: AliasStyle, expected: str) -> None:
    assert renumber_table_aliases(sql, "sqlite", style) == expected


@pytest.mark.parametrize(("sql", "style", "_expected"), RENUMBERED[:2])
def test_renumbered_query_returns_the_same_rows(
    cities: sqlite3.Connection, sql: str, style: AliasStyle, _expected: str
) -> None:
    cities.execute("CREATE TABLE country (name TEXT)")
    cities.execute("INSERT INTO country VALUES ('usa')")
    before = sorted(cities.execute(sql).fetchall())
    after = sorted(cities.execute(renumber_table_aliases(sql, "sqlite", style)).fetchall())
    assert before == after and before


def test_the_prompt_shows_short_aliases_only_when_asked() -> None:
    example = _city_example(
        "SELECT CITYalias0.name FROM city AS CITYalias0 ORDER BY CITYalias0.pop DESC LIMIT 1"
    )
    short = build_prompt(
        "smallest city",
        CITY_SCHEMA,
        examples=[example],
        options=PromptOptions(example_aliases="table_number"),
    )
    as_written = build_prompt("smallest city", CITY_SCHEMA, examples=[example], options=PromptOptions())
    assert [m["content"] for m in short.messages if m["role"] == "assistant"] == [
        "```sql\nSELECT city0.name FROM city AS city0 ORDER BY city0.pop DESC LIMIT 1\n```"
    ]
    assert short.tokens < as_written.tokens
    assert short.examples_used[0].sql == example.sql  # what the answer paths read is the stored example
