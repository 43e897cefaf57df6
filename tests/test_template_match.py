"""Verified examples as templates: which question pairs adapt, and to what SQL (table-driven), and the
generation pipeline answering from an adapted example on a real database without calling the model."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from events import ContextExample
from services.core.customer_db import CustomerDatabases
from services.core.schema import Column, SchemaInfo, Table
from services.core.template_match import adapt, adaptations
from services.generation.pipeline import EXAMPLE_MODEL, GenerationConfig, GenerationResult, generate_answer
from services.infra.llm.scripted import ScriptedLLM

BIGGEST = (
    "SELECT city_name FROM city WHERE population = (SELECT MAX(population) FROM city "
    "WHERE state_name = 'kansas') AND state_name = 'kansas'"
)

# (question, example question, example SQL, adapted SQL or None)
CASES: list[tuple[str, str, str, str | None]] = [
    (
        "what is the biggest city in arizona",
        "what is the biggest city in kansas",
        BIGGEST,
        BIGGEST.replace("kansas", "arizona"),
    ),
    # Two values side by side, swapped word for word.
    (
        "what is the population of tempe arizona",
        "what is the population of boulder colorado",
        "SELECT population FROM city WHERE city_name = 'boulder' AND state_name = 'colorado'",
        "SELECT population FROM city WHERE city_name = 'tempe' AND state_name = 'arizona'",
    ),
    # A multi-word value replaced by a one-word value.
    (
        "how many people live in texas",
        "how many people live in new york",
        "SELECT population FROM state WHERE state_name = 'new york'",
        "SELECT population FROM state WHERE state_name = 'texas'",
    ),
    # The SQL's casing of the value wins over the question's.
    (
        "orders shipped to Lisbon",
        "orders shipped to paris",
        "SELECT id FROM orders WHERE city = 'PARIS'",
        "SELECT id FROM orders WHERE city = 'LISBON'",
    ),
    (
        "customers in new york",
        "customers in Paris",
        "SELECT name FROM customers WHERE city = 'Paris'",
        "SELECT name FROM customers WHERE city = 'New York'",
    ),
    # A year the SQL holds at the start of a pattern or a date: the number swapped, the rest kept.
    (
        "how many orders did the ghent store take in 2025",
        "how many orders did the porto store take in 2023",
        "SELECT COUNT(*) FROM orders WHERE city = 'porto' AND order_date LIKE '2023-%'",
        "SELECT COUNT(*) FROM orders WHERE city = 'ghent' AND order_date LIKE '2025-%'",
    ),
    (
        "orders since 2024",
        "orders since 2023",
        "SELECT id FROM orders WHERE day >= '2023-01-01'",
        "SELECT id FROM orders WHERE day >= '2024-01-01'",
    ),
    # A whole date put for a whole date; a word where the SQL's pattern has a number adapts to nothing.
    (
        "orders on 2024-02-03",
        "orders on 2023-01-01",
        "SELECT id FROM orders WHERE day = '2023-01-01'",
        "SELECT id FROM orders WHERE day = '2024-02-03'",
    ),
    ("orders in june", "orders in 2023", "SELECT id FROM orders WHERE day LIKE '2023-%'", None),
    # Numbers, and quotes inside a value.
    (
        "cities with more than 250000 people",
        "cities with more than 150000 people",
        "SELECT city_name FROM city WHERE population > 150000",
        "SELECT city_name FROM city WHERE population > 250000",
    ),
    (
        "books by o'brien",
        "books by smith",
        "SELECT title FROM books WHERE author = 'smith'",
        "SELECT title FROM books WHERE author = 'o''brien'",
    ),
    # Grammatical variants and articles do not change what is asked: the example's SQL as it is.
    (
        "which rivers are in texas",
        "what rivers is in texas",
        "SELECT river_name FROM river WHERE traverse = 'texas'",
        "SELECT river_name FROM river WHERE traverse = 'texas'",
    ),
    (
        "how many people lived in austin",
        "how many people live in the austin",
        "SELECT population FROM city WHERE city_name = 'austin'",
        "SELECT population FROM city WHERE city_name = 'austin'",
    ),
    # A changed word that is not one of the SQL's values changes the question: no template.
    (
        "what is the smallest city in kansas",
        "what is the biggest city in kansas",
        BIGGEST,
        None,
    ),
    (
        "what is the area of kansas",
        "what is the population of kansas",
        "SELECT population FROM state WHERE state_name = 'kansas'",
        None,
    ),
    # A word added or dropped that is not an article: no template ("major" is a filter).
    (
        "what major cities are in texas",
        "what cities are in texas",
        "SELECT city_name FROM city WHERE state_name = 'texas'",
        None,
    ),
    # A number where the SQL had a word, a word where it had a number.
    (
        "cities with more than many people",
        "cities with more than 150000 people",
        "SELECT city_name FROM city WHERE population > 150000",
        None,
    ),
    # Too little in common to be the same question.
    ("arizona", "kansas", "SELECT 1 FROM state WHERE state_name = 'kansas'", None),
    # One example value asked to become two different values.
    (
        "flights from paris to lisbon",
        "flights from paris to paris",
        "SELECT id FROM flights WHERE origin = 'paris' AND destination = 'paris'",
        None,
    ),
    # Hostile text is never written into SQL: only names and numbers are values.
    (
        "customers in lis\\' OR 1=1 -- bon",
        "customers in paris",
        "SELECT name FROM customers WHERE city = 'paris'",
        None,
    ),
    (
        "customers in lis\\bon",
        "customers in paris",
        "SELECT name FROM customers WHERE city = 'paris'",
        None,
    ),
    (
        "customers in paris; drop table customers",
        "customers in paris",
        "SELECT name FROM customers WHERE city = 'paris'",
        None,
    ),
    # A clause in the place of a value describes something; it is not a value to write into the SQL.
    (
        "what rivers are in states that border texas",
        "what rivers are in new mexico",
        "SELECT river_name FROM river WHERE traverse = 'new mexico'",
        None,
    ),
    (
        "how long is the longest river in california",
        "how long is the mississippi",
        "SELECT length FROM river WHERE river_name = 'mississippi'",
        None,
    ),
    # SQL that does not tokenize.
    ("biggest city in arizona", "biggest city in kansas", "SELECT 'kansas", None),
]


@pytest.mark.parametrize(("question", "example_question", "example_sql", "expected"), CASES)
def test_adapt(question: str, example_question: str, example_sql: str, expected: str | None) -> None:
    adapted = adapt(question, example_question, example_sql, "sqlite")
    assert (adapted.sql if adapted else None) == expected


def test_mysql_double_quoted_values_keep_their_quotes() -> None:
    adapted = adapt(
        "customers in lisbon",
        "customers in paris",
        'SELECT name FROM customers WHERE city = "paris"',
        "mysql",
    )
    assert adapted is not None and adapted.sql == 'SELECT name FROM customers WHERE city = "lisbon"'


@dataclass
class _Example:
    example_id: str
    question: str
    sql: str


def test_adaptations_prefer_the_closest_question_and_drop_duplicates() -> None:
    examples = [
        _Example("loose", "biggest city in kansas", BIGGEST),
        _Example("close", "what is the biggest city in kansas", BIGGEST),
        _Example("same-sql", "what is the biggest city in the kansas", BIGGEST),
        _Example("other", "what is the area of kansas", "SELECT area FROM state WHERE state_name = 'kansas'"),
    ]
    found = adaptations("what is the biggest city in arizona", examples, "sqlite", limit=3)
    assert [a.example_id for a in found] == ["close"]
    assert found[0].substitutions == (("kansas", "arizona"),)


# --- the pipeline, on a real SQLite database ---------------------------------------------------------------

SCHEMA = SchemaInfo(
    dialect="sqlite",
    tables=[
        Table(
            "city",
            [
                Column("city_name", "TEXT"),
                Column("state_name", "TEXT"),
                Column("population", "INTEGER"),
            ],
        )
    ],
)


@pytest.fixture
def city_db(tmp_path: Path) -> str:
    path = tmp_path / "geo.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE city (city_name TEXT, state_name TEXT, population INTEGER)")
        db.executemany(
            "INSERT INTO city VALUES (?, ?, ?)",
            [
                ("wichita", "kansas", 300000),
                ("topeka", "kansas", 120000),
                ("phoenix", "arizona", 1400000),
                ("tucson", "arizona", 500000),
            ],
        )
    return f"sqlite:///{path}"


EXAMPLE = ContextExample(
    example_id="ex-1", source="project", question="what is the biggest city in kansas", sql=BIGGEST, score=0.9
)


COUNT_EXAMPLE = ContextExample(
    example_id="ex-2",
    source="project",
    question="how many cities are in kansas",
    sql="SELECT COUNT(*) FROM city WHERE state_name = 'kansas'",
    score=0.8,
)


async def _generate(
    llm: ScriptedLLM, city_db: str, question: str, examples: list[ContextExample], config: GenerationConfig
) -> GenerationResult:
    databases = CustomerDatabases()
    try:
        return await generate_answer(
            llm,
            databases,
            question=question,
            schema=SCHEMA,
            database_url=city_db,
            examples=examples,
            config=config,
        )
    finally:
        await databases.close()


async def test_pipeline_answers_from_the_example_without_the_model_scripted_llm(city_db: str) -> None:
    llm = ScriptedLLM(default="SELECT 'never used'")
    config = GenerationConfig(template_answers=True)
    result = await _generate(llm, city_db, "What is the biggest city in Arizona", [EXAMPLE], config)
    assert not llm.calls
    assert result.ok and result.sql_source == "example" and result.example_ids == ["ex-1"]
    assert result.model == EXAMPLE_MODEL and result.attempts == 0
    assert result.result is not None and result.result.rows == [("phoenix",)]
    assert "phoenix" in result.answer_text


@pytest.mark.parametrize(
    ("question", "template_answers", "why"),
    [
        ("what is the biggest city in nevada", True, "the adapted SQL returns no rows"),
        ("what is the smallest city in kansas", True, "no example is this question with other values"),
        ("what is the biggest city in arizona", False, "template answers are off"),
        ("how many cities are in nevada", True, "a count over nothing is no evidence"),
    ],
)
async def test_pipeline_asks_the_model_otherwise_scripted_llm(
    city_db: str, question: str, template_answers: bool, why: str
) -> None:
    llm = ScriptedLLM(default="SELECT city_name FROM city ORDER BY population LIMIT 1")
    config = GenerationConfig(template_answers=template_answers, repair_rounds=0)
    result = await _generate(llm, city_db, question, [EXAMPLE, COUNT_EXAMPLE], config)
    assert len(llm.calls) == 1, why
    assert result.ok and result.sql_source == "model" and result.example_ids == [], why
    assert result.result is not None and result.result.rows == [("topeka",)]


async def test_library_examples_are_never_templates_scripted_llm(city_db: str) -> None:
    """Library examples come from other schemas: only the project's own verified examples adapt."""
    llm = ScriptedLLM(default="SELECT city_name FROM city ORDER BY population LIMIT 1")
    library = EXAMPLE.model_copy(update={"source": "library"})
    config = GenerationConfig(template_answers=True, repair_rounds=0)
    result = await _generate(llm, city_db, "what is the biggest city in arizona", [library], config)
    assert len(llm.calls) == 1 and result.sql_source == "model"
