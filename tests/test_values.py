"""Value grounding: collecting a project's column values on all three engines, matching a question against them,
checking a query's literals, mechanical fixes, and one project never seeing another's values."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import sqlglot

from services.core.column_values_store import ValueIndexes
from services.core.customer_db import CustomerDatabases, discover_schema
from services.core.projects import load_project
from services.core.schema import Column, SchemaInfo, Table
from services.core.sql.mechanical import canonical_example_sql
from services.core.value_templates import value_adaptations
from services.core.values import ColumnValues, ValueIndex, literal_problems, with_fixed_literals
from services.generation.candidates import run_candidate
from services.query.register import register_project
from tests.conftest import unique
from tests.customer_databases import fresh_mysql, fresh_postgres

CITIES = [("new york", "new york", 8000000), ("albany", "new york", 100000), ("austin", "texas", 900000)]
STATES = [("new york", "albany"), ("texas", "austin"), ("ohio", "columbus")]
SCHEMA = SchemaInfo(
    "sqlite",
    [
        Table(
            "city",
            [Column("city_name", "TEXT"), Column("state_name", "TEXT"), Column("population", "INTEGER")],
        ),
        Table("state", [Column("state_name", "TEXT"), Column("capital", "TEXT"), Column("country", "TEXT")]),
    ],
)


def index() -> ValueIndex:
    return ValueIndex(
        [
            ColumnValues("city", "city_name", ("new york", "albany", "austin"), True),
            ColumnValues("city", "state_name", ("new york", "texas"), True),
            ColumnValues("state", "state_name", ("new york", "texas", "ohio"), True),
            ColumnValues("state", "capital", ("albany", "austin", "columbus"), True),
            ColumnValues("state", "country", ("usa",), True),
        ]
    )


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        # a value in two columns, the one of the table the question names first
        ("what is the population of albany city", ["'albany' is in city.city_name"]),
        ("which state has the capital albany", ["'albany' is in state.capital"]),
        # a misspelt phrase is named with its stored spelling
        ("how many people live in new yrok", ["'new yrok' is stored as 'new york' in city.city_name, city.state_name, state.state_name"]),
        # a value held by many columns, with no table named, says nothing; nor do constant columns or short words
        ("population of ohio and usa", ["'ohio' is in state.state_name"]),
        ("how long is it", []),
    ],
)  # fmt: skip
def test_hints_name_only_the_values_that_tell_something(question: str, expected: list[str]) -> None:
    assert index().hints(question) == expected


def places() -> ValueIndex:
    """Values where a phrase's words and the stored values disagree on what is named: 'amazon river' is also
    stored whole as a sight, 'mount everest' as a summit."""
    return ValueIndex(
        [
            ColumnValues("river", "river_name", ("amazon", "nile", "danube"), True),
            ColumnValues("river", "crosses", ("brazil", "egypt", "austria"), True),
            ColumnValues("region", "region_name", ("amazon", "nile", "sahara"), True),
            ColumnValues("sight", "feature", ("amazon river", "sahara desert"), True),
            ColumnValues("mountain", "mountain_name", ("everest", "fuji"), True),
            ColumnValues("summit", "peak", ("mount everest", "mount fuji"), True),
            ColumnValues("city", "city_name", ("kansas city", "springfield"), True),
            ColumnValues("city", "state_name", ("kansas", "ohio"), True),
        ]
    )


@pytest.mark.parametrize(
    ("question", "plain", "entity"),
    [
        # the phrase's last word names a table whose name column holds the rest
        ("how long is the amazon river", ["'amazon river' is in sight.feature"], ["'amazon' is in river.river_name"]),
        # a clipped table word ("mount" for mountain) at the phrase's start
        ("how tall is mount everest", ["'mount everest' is in summit.peak"], ["'everest' is in mountain.mountain_name"]),
        # the word next to the value names one of the tables the question names
        ("which regions border the nile river", ["'nile' is in river.river_name, region.region_name"], ["'nile' is in river.river_name"]),
        # nothing next to the value names a table: unchanged
        ("how long is the amazon", ["'amazon' is in river.river_name, region.region_name"], ["'amazon' is in river.river_name, region.region_name"]),
        # the whole phrase is already the named table's thing; another table's *_name column is not a name column
        ("what is the population of kansas city", ["'kansas city' is in city.city_name"], ["'kansas city' is in city.city_name"]),
        ("which cities are in kansas city state", ["'kansas city' is in city.city_name"], ["'kansas city' is in city.city_name"]),
        # a stored phrase whose edge word names no table that holds the rest: unchanged
        ("where is the sahara desert", ["'sahara desert' is in sight.feature"], ["'sahara desert' is in sight.feature"]),
    ],
)  # fmt: skip
def test_entity_words_name_the_table_a_value_belongs_to(
    question: str, plain: list[str], entity: list[str]
) -> None:
    assert places().hints(question) == plain
    assert places().hints(question, entity_words=True) == entity


def test_matches_prefer_the_longest_phrase_and_never_overlap() -> None:
    matches = index().matches("cities of new york state near albany")
    assert [(m.phrase, m.value) for m in matches] == [("new york", "new york"), ("albany", "albany")]
    assert matches[0].columns == ("city.city_name", "city.state_name", "state.state_name")


def _tree(sql: str) -> sqlglot.exp.Expr:
    return sqlglot.parse_one(sql, read="sqlite")


def test_literal_problems_name_the_closest_values_and_the_mechanical_fix() -> None:
    tree = _tree(
        "SELECT c.population FROM city AS c WHERE c.city_name = 'New York' OR c.state_name IN ('texsa', 'texas') "
        "OR city_name LIKE 'aust%' OR c.city_name <> 'austin'"
    )
    problems = literal_problems(tree, SCHEMA, index())
    assert [(p.literal, p.columns, p.fix) for p in problems] == [
        ("New York", ("city.city_name",), "new york"),  # differs only in case: one right fix
        ("texsa", ("city.state_name",), None),
    ]
    assert (
        problems[1]
        .message()
        .startswith("'texsa' is not a value of city.state_name; the closest values are 'texas'")
    )
    fixed = with_fixed_literals(tree, {"New York": "new york"})
    assert "c.city_name = 'new york'" in fixed.sql(dialect="sqlite")


@pytest.mark.parametrize(
    ("where", "fix", "kind"),
    [
        # the question's phrase with a word the column does not store: the one value among its words
        ("city_name = 'mount albany'", "albany", "words"),
        ("city_name = 'new york city'", "new york", "words"),
        ("state_name IN ('state of texas', 'ohio')", "texas", "words"),
        ("city_name = 'NEW YORK'", "new york", "case"),  # case and spacing first
        # two values among its words: no one right fix
        ("city_name = 'albany austin'", None, None),
        # <> with a value the column never holds filters nothing: replacing it would change the answer
        ("city_name <> 'mount albany'", None, None),
        # a word of a value is not the value ('york' is no city here)
        ("city_name = 'york'", None, None),
        # values under four letters ('usa' in a constant column aside) are too common to mean one value
        ("code = 'ny state'", None, None),
    ],
)  # fmt: skip
def test_a_literal_with_one_value_among_its_words_has_that_value_as_its_fix(
    where: str, fix: str | None, kind: str | None
) -> None:
    schema = SchemaInfo(
        "sqlite", [*SCHEMA.tables, Table("region", [Column("code", "TEXT"), Column("name", "TEXT")])]
    )
    values = ValueIndex([*index().columns, ColumnValues("region", "code", ("ny", "tx"), True)])
    table = "region" if "code" in where else "state" if "state_name" in where else "city"
    [problem, *_] = literal_problems(_tree(f"SELECT 1 FROM {table} WHERE {where}"), schema, values)
    assert (problem.fix, problem.fix_kind) == (fix, kind)


def test_literals_of_columns_not_fully_indexed_are_never_flagged() -> None:
    partial = ValueIndex([ColumnValues("city", "city_name", ("new york",), False)])
    assert literal_problems(_tree("SELECT 1 FROM city WHERE city_name = 'zzz'"), SCHEMA, partial) == []


def test_sqlite_double_quoted_values_become_strings_in_the_canonical_form() -> None:
    sql = 'SELECT population FROM city WHERE state_name = "texas" AND "city_name" <> "austin"'
    assert canonical_example_sql(sql, SCHEMA) == (
        "SELECT population FROM city WHERE state_name = 'texas' AND \"city_name\" <> 'austin'"
    )
    postgres = SchemaInfo("postgres", SCHEMA.tables, namespace="public")
    assert canonical_example_sql(sql, postgres) == sql  # elsewhere double quotes name columns


# --- collection on the engines, storage, isolation ---------------------------------------------------------


def _sqlite(path: Path, cities: list[tuple[str, str, int]], states: list[tuple[str, str]] = STATES) -> str:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE city (city_name TEXT, state_name TEXT, population INTEGER, notes TEXT)")
        db.execute("CREATE TABLE state (state_name TEXT, capital TEXT)")
        db.executemany("INSERT INTO city VALUES (?, ?, ?, ?)", [(*c, "x" * 200) for c in cities])
        db.executemany("INSERT INTO state VALUES (?, ?)", states)
    return f"sqlite:///{path}"


_DDL = [
    "CREATE TABLE city (city_name varchar(40), state_name text, population int, notes text)",
    "CREATE TABLE state (state_name text, capital text)",
]
_ROWS = {"city": [(*c, "x" * 200) for c in CITIES], "state": STATES}


@pytest.fixture(scope="module")
async def pg_url(customer_pg_admin: str) -> AsyncIterator[str]:
    yield await fresh_postgres(customer_pg_admin, "ql_test_values", _DDL, _ROWS)


@pytest.fixture(scope="module")
async def mysql_url(customer_mysql: tuple[str, int, str]) -> AsyncIterator[str]:
    yield await fresh_mysql(customer_mysql, "ql_test_values", _DDL, _ROWS)


async def test_a_literal_fixed_through_its_words_runs_with_the_stored_value(tmp_path: Path) -> None:
    url = _sqlite(tmp_path / "c.sqlite", CITIES)
    schema = await discover_schema(url)
    databases = CustomerDatabases()
    try:
        values = ValueIndex(await databases.column_values(url, schema))
        sql = "SELECT population FROM city WHERE city_name = 'mount albany'"
        runs = {
            word_fixes: await run_candidate(
                sql,
                schema=schema,
                databases=databases,
                database_url=url,
                values=values,
                mechanical_fixes=True,
                word_fixes=word_fixes,
                timeout_s=5.0,
                row_limit=10,
            )
            for word_fixes in (True, False)
        }
    finally:
        await databases.close()
    fixed, unfixed = runs[True], runs[False]
    assert fixed.fixed == ["literal_words"] and "'albany'" in fixed.sql and fixed.value_problems == []
    assert fixed.result is not None and list(fixed.result.rows) == [(100000,)]
    # Without the fix the query runs as written, finds nothing, and the problem names the value for a repair.
    assert unfixed.fixed == [] and unfixed.result is not None and list(unfixed.result.rows) == []
    assert unfixed.value_problems[0].fix == "albany" and "albany" in unfixed.value_problems[0].closest


def _expected(columns: list[ColumnValues]) -> dict[tuple[str, str], set[str]]:
    return {(c.table, c.column): set(c.values) for c in columns}


async def _collected(url: str) -> list[ColumnValues]:
    schema = await discover_schema(url)
    databases = CustomerDatabases()
    try:
        return await databases.column_values(url, schema)
    finally:
        await databases.close()


def _check_collected(columns: list[ColumnValues]) -> None:
    # Text columns only (no numbers), no value longer than the limit (the 200-character notes), all complete.
    assert _expected(columns) == {
        ("city", "city_name"): {"new york", "albany", "austin"},
        ("city", "state_name"): {"new york", "texas"},
        ("state", "state_name"): {"new york", "texas", "ohio"},
        ("state", "capital"): {"albany", "austin", "columbus"},
    }
    assert all(c.complete for c in columns)


async def test_values_are_collected_on_sqlite(tmp_path: Path) -> None:
    _check_collected(await _collected(_sqlite(tmp_path / "v.sqlite", CITIES)))


async def test_values_are_collected_on_postgres(pg_url: str) -> None:
    _check_collected(await _collected(pg_url))


async def test_values_are_collected_on_mysql(mysql_url: str) -> None:
    _check_collected(await _collected(mysql_url))


async def test_registration_stores_each_projects_values_apart(pool: asyncpg.Pool, tmp_path: Path) -> None:
    """Two projects with different databases: each index holds its own database's values only."""
    first, second = unique("values-a"), unique("values-b")
    await register_project(pool, project_id=first, database_url=_sqlite(tmp_path / "a.sqlite", CITIES))
    await register_project(
        pool,
        project_id=second,
        database_url=_sqlite(
            tmp_path / "b.sqlite", [("springfield", "ohio", 1), ("dayton", "ohio", 2)], [("ohio", "columbus")]
        ),
    )
    indexes = ValueIndexes(pool)
    a, b = await load_project(pool, first), await load_project(pool, second)
    assert a is not None and b is not None
    index_a = await indexes.get(first, a.values_collected_at)
    index_b = await indexes.get(second, b.values_collected_at)
    assert index_a is not None and index_b is not None
    values_a = {v for c in index_a.columns for v in c.values}
    values_b = {v for c in index_b.columns for v in c.values}
    assert "springfield" in values_b and "springfield" not in values_a
    assert "austin" in values_a and "austin" not in values_b
    assert index_b.hints("population of springfield city") == ["'springfield' is in city.city_name"]
    assert index_a.hints("population of springfield city") == []
    # A refresh is seen at once: the cache is keyed by when the values were collected.
    await register_project(pool, project_id=second, database_url=_sqlite(tmp_path / "c.sqlite", CITIES))
    refreshed = await load_project(pool, second)
    assert refreshed is not None and refreshed.values_collected_at != b.values_collected_at
    index_c = await indexes.get(second, refreshed.values_collected_at)
    assert index_c is not None and "springfield" not in {v for c in index_c.columns for v in c.values}


# --- verified examples adapted through the values --------------------------------------------------------


@dataclass
class Example:
    example_id: str
    question: str
    sql: str
    score: float


BORDER = Example(
    "e1", "what states border texas", "SELECT state_name FROM state WHERE state_name = 'texas'", 0.9
)
LIVE = Example(
    "e2",
    "how many people live in austin texas",
    "SELECT population FROM city WHERE city_name = 'austin' AND state_name = 'texas'",
    0.85,
)


@pytest.mark.parametrize(
    ("question", "examples", "expected"),
    [
        # reworded, one value named for the example's one column
        ("which states neighbor ohio", [BORDER], "SELECT state_name FROM state WHERE state_name = 'ohio'"),
        # two values, each for its own column, in the question's order or not
        ("how many people reside in albany new york", [LIVE],
         "SELECT population FROM city WHERE city_name = 'albany' AND state_name = 'new york'"),
        # asked otherwise (more than one word apart, values aside): not the example's question
        ("what is the population of albany new york", [LIVE], None),
        ("what cities are in states that border ohio", [BORDER], None),
        ("states ohio", [BORDER], None),
        # a value for no column of the example, or a value too many, or too few: no adaptation
        ("which states neighbor columbus", [BORDER], None),
        ("what states border texas and ohio", [BORDER], None),
        ("how many people live in albany", [LIVE], None),
        # a number the question puts for the example's is a value no swap reaches (the SQL holds it in a
        # pattern), not another wording
        ("how many people live in albany new york in 2024",
         [Example("e4", "how many people live in austin texas in 2023",
                  "SELECT population FROM city WHERE city_name = 'austin' AND state_name = 'texas' AND note LIKE '2023-%'",
                  0.9)],
         None),
        # an example retrieval found only loosely similar is not adapted
        ("which states neighbor ohio", [Example("e3", BORDER.question, BORDER.sql, 0.5)], None),
    ],
)  # fmt: skip
def test_examples_adapt_through_the_values_the_question_names(
    question: str, examples: list[Example], expected: str | None
) -> None:
    adapted = value_adaptations(question, examples, SCHEMA, index(), min_score=0.75)
    assert [a.sql for a in adapted] == ([expected] if expected else [])


def test_values_mask_a_question_as_its_example_is_masked_by_its_sql() -> None:
    """An example is embedded with its SQL's literals masked; a new question with the values the index
    finds in it masked: questions of one shape then read the same, whatever the values."""
    from services.core.examples.masking import mask_question, sql_values

    example_sql = "SELECT population FROM city WHERE city_name = 'austin' AND state_name = 'texas'"
    assert sql_values(example_sql, "sqlite") == ["austin", "texas"]
    example = mask_question("how many people live in austin texas", SCHEMA, sql_values(example_sql, "sqlite"))
    question = "how many people live in albany new york"
    known = [m.phrase for m in index().matches(question)]
    assert known == ["albany", "new york"]
    assert mask_question(question, SCHEMA, known) == example
    assert mask_question(question, SCHEMA) != example  # without the index the values stay words
