"""The adapter's training data: value variants of verified examples (made, run through the guarded path on a
real SQLite database, kept only when they return rows), serving-like prompts with similar examples that
never include the example itself nor a held-out one, and the gate's rules."""

from __future__ import annotations

import random
import sqlite3
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest

from events import ContextExample
from services.core.customer_db import CustomerDatabases, discover_schema
from services.core.values import ColumnValues, ValueIndex
from services.infra.settings import Settings
from services.training.augment import spread, value_variants
from services.training.dataset import ProjectDataset, TrainingExample, default_render, to_chat
from services.training.enrich import EnrichOptions, enrich, with_context
from services.training.evaluate import gate
from services.training.job import training_render

CITIES = [
    ("boston", "massachusetts", 650000),
    ("worcester", "massachusetts", 200000),
    ("denver", "colorado", 700000),
    ("austin", "texas", 950000),
    ("dallas", "texas", 1300000),
]
STATES = [("massachusetts", "boston"), ("colorado", "denver"), ("texas", "austin"), ("ohio", "columbus")]


def _database(tmp_path: Path) -> str:
    path = tmp_path / "geo.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE city (city_name TEXT, state_name TEXT, population INTEGER)")
        conn.execute("CREATE TABLE state (state_name TEXT, capital TEXT)")
        conn.executemany("INSERT INTO city VALUES (?, ?, ?)", CITIES)
        conn.executemany("INSERT INTO state VALUES (?, ?)", STATES)
    return f"sqlite:///{path}"


def _index() -> ValueIndex:
    return ValueIndex(
        [
            # 'springfield' was collected once but is no longer in the table: its variants return nothing.
            ColumnValues("city", "city_name", (*(c for c, _, _ in CITIES), "springfield"), True),
            ColumnValues("city", "state_name", ("massachusetts", "colorado", "texas"), True),
            ColumnValues("state", "state_name", tuple(s for s, _ in STATES), True),
            ColumnValues("state", "capital", tuple(c for _, c in STATES), True),
        ]
    )


def _example(question: str, sql: str) -> TrainingExample:
    return TrainingExample(id=uuid.uuid5(uuid.NAMESPACE_URL, question), question=question, sql=sql)


VARIANT_CASES = [
    # (question, sql, what every variant must satisfy)
    (
        "how many people live in Boston",
        "SELECT population FROM city WHERE city_name = 'boston'",
        "city.city_name",
    ),
    (
        "cities in texas with more than 100000 people",
        "SELECT city_name FROM city WHERE state_name = 'texas' AND population > 100000",
        "city.state_name",
    ),
]


@pytest.mark.parametrize(("question", "sql", "column"), VARIANT_CASES)
async def test_variants_vary_one_named_value_in_question_and_sql_alike(
    tmp_path: Path, question: str, sql: str, column: str
) -> None:
    schema = await discover_schema(_database(tmp_path))
    variants = value_variants(question, sql, schema, _index(), per_example=3, rng=random.Random(1))
    assert variants and len(variants) <= 3
    for v in variants:
        assert v.column == column and v.value.lower() in v.question.lower() and f"'{v.value}'" in v.sql
        assert v.question != question and v.sql != sql
    again = value_variants(question, sql, schema, _index(), per_example=3, rng=random.Random(1))
    assert again == variants  # seeded: the same data every run


async def test_no_variants_where_the_question_does_not_name_the_value(tmp_path: Path) -> None:
    schema = await discover_schema(_database(tmp_path))
    # 'texas' is a fixed filter the question does not say: varying it would make the pair disagree.
    fixed = value_variants(
        "how many big cities are there",
        "SELECT count(*) FROM city WHERE state_name = 'texas'",
        schema,
        _index(),
        per_example=3,
        rng=random.Random(1),
    )
    assert fixed == []
    broken = value_variants("x", "SELEC nothing", schema, _index(), per_example=3, rng=random.Random(1))
    assert broken == []


def test_unseen_pattern_prompts_show_only_examples_of_another_shape() -> None:
    """With the share at 1 every training prompt is a question of a pattern the context never shows; at 0 the
    most similar examples come back whatever their shape (here the same shape with other values)."""
    pool = [
        _example("population of boston", "SELECT population FROM city WHERE city_name = 'boston'"),
        _example("population of denver", "SELECT population FROM city WHERE city_name = 'denver'"),
        _example("population of austin", "SELECT population FROM city WHERE city_name = 'austin'"),
        _example("how many cities are there", "SELECT COUNT(*) FROM city"),
        _example("capital of texas", "SELECT capital FROM state WHERE state_name = 'texas' ORDER BY capital"),
    ]
    asked = _example("population of dallas", "SELECT population FROM city WHERE city_name = 'dallas'")
    [similar] = with_context([asked], pool, _index(), 2)
    assert len(similar.context) == 2 and all(c.question.startswith("population of") for c in similar.context)
    [unseen] = with_context([asked], pool, _index(), 2, unseen_pattern_share=1.0)
    assert {c.question for c in unseen.context} == {"how many cities are there", "capital of texas"}
    # The share draws which prompts: about half of many, the same ones for the same seed.
    many = [_example(f"population of town {i}", asked.sql) for i in range(200)]
    drawn = [e.context for e in with_context(many, pool, _index(), 1, unseen_pattern_share=0.5, seed=3)]
    other_shape = sum(c[0].question in ("how many cities are there", "capital of texas") for c in drawn)
    assert 70 < other_shape < 130
    again = [e.context for e in with_context(many, pool, _index(), 1, unseen_pattern_share=0.5, seed=3)]
    assert drawn == again


def test_spread_takes_variants_round_robin_over_examples() -> None:
    from services.training.augment import ValueVariant

    many = [ValueVariant("a", f"a{i}", "s", "t.c", "v") for i in range(5)]
    few = [ValueVariant("b", f"b{i}", "s", "t.c", "v") for i in range(2)]
    assert [v.question for v in spread(many + few, 4)] == ["a0", "b0", "a1", "b1"]


async def test_enriched_dataset_keeps_variants_that_return_rows_and_prompts_like_serving(
    tmp_path: Path,
) -> None:
    url = _database(tmp_path)
    schema = await discover_schema(url)
    train = [
        _example("how many people live in boston", "SELECT population FROM city WHERE city_name = 'boston'"),
        _example("what is the capital of texas", "SELECT capital FROM state WHERE state_name = 'texas'"),
        _example("how many cities are there", "SELECT count(*) FROM city"),
    ]
    held_out = [
        _example("how many people live in denver", "SELECT population FROM city WHERE city_name = 'denver'")
    ]
    dataset = ProjectDataset("p", schema, train, held_out, default_render)
    databases = CustomerDatabases()
    try:
        enriched = await enrich(
            dataset,
            index=_index(),
            databases=databases,
            database_url=url,
            options=EnrichOptions(variants_per_example=5, max_variants=50, context_examples=2),
        )
    finally:
        await databases.close()
    variants = [e for e in enriched.train if e.origin == "value_variant"]
    composition = enriched.describe()
    assert composition["verified"] == 3 and composition["value_variants"] == len(variants) > 0
    assert composition["variants_tried"] >= len(variants) and composition["validation"] == 1
    questions = {v.question for v in variants}
    assert "how many people live in worcester" in questions and "what is the capital of ohio" in questions
    assert "how many people live in springfield" not in questions  # it ran, and returned no rows
    assert "how many people live in denver" not in questions  # a held-out question is never made again
    for v in variants:
        assert v.sql.startswith("SELECT") and v.question not in {e.question for e in train}
    for example in enriched.train + enriched.validation:
        context_ids = {c.example_id for c in example.context}
        assert str(example.id) not in context_ids
        assert context_ids <= {
            str(e.id) for e in train
        }  # only verified training examples, never held-out ones
        assert all(c.question != example.question for c in example.context)
    first = enriched.validation[0]
    chat = to_chat(first, schema, enriched.render)
    # The serving prompt: system, the similar examples as turns, the question with the values it names.
    assert chat[0]["role"] == "system" and chat[-1]["role"] == "assistant"
    assert len(chat) == 2 + 2 * len(first.context) + 1
    assert "denver" in chat[-2]["content"] and chat[-1]["content"].count("```") == 2


async def test_without_a_value_index_the_dataset_only_gains_context(tmp_path: Path) -> None:
    url = _database(tmp_path)
    schema = await discover_schema(url)
    train = [
        _example("how many cities are there", "SELECT count(*) FROM city"),
        _example("how many states are there", "SELECT count(*) FROM state"),
    ]
    dataset = ProjectDataset("p", schema, train, [], default_render)
    enriched = await enrich(dataset, index=None, databases=None, database_url=None, options=EnrichOptions())
    assert [e.origin for e in enriched.train] == ["verified", "verified"]
    assert [c.question for c in enriched.train[0].context] == ["how many states are there"]


async def test_training_prompts_are_made_as_serving_makes_them_when_asked(tmp_path: Path) -> None:
    schema = await discover_schema(_database(tmp_path))
    example = _example(
        "what is the population of boston", "SELECT population FROM city WHERE city_name = 'boston'"
    )
    note = "US cities and the states they are in"

    def prompt(serving: bool) -> str:
        settings = Settings(
            data_dir=tmp_path, log_json=False, training_serving_prompts=serving, column_hints=True
        )
        return "\n".join(m["content"] for m in to_chat(example, schema, training_render(settings, note)))

    served, plain = prompt(True), prompt(False)
    # The project's description and the column hint the product's prompt carries; neither in the plain one.
    assert note in served and "'population' is city.population" in served
    assert note not in plain and "'population' is city.population" not in plain


@pytest.mark.parametrize(
    ("aliases", "shown"),
    [
        ("table_number", "SELECT CITY0.POPULATION FROM CITY AS CITY0 WHERE CITY0.CITY_NAME = 'boston'"),
        (
            "as_written",
            "SELECT CITYalias0.POPULATION FROM CITY AS CITYalias0 WHERE CITYalias0.CITY_NAME = 'boston'",
        ),
    ],
)
async def test_the_taught_answer_is_written_as_the_prompts_examples_are(
    tmp_path: Path, aliases: Literal["table_number", "as_written"], shown: str
) -> None:
    """With short example aliases in the serving prompt, the answer an adapter is taught has them too: one
    style in its prompts' examples and its targets."""
    schema = await discover_schema(_database(tmp_path))
    sql = "SELECT CITYalias0.POPULATION FROM CITY AS CITYalias0 WHERE CITYalias0.CITY_NAME = 'boston'"
    context = ContextExample(
        example_id="c1", source="project", score=0.9, question="population of boston", sql=sql
    )
    example = replace(_example("what is the population of boston", sql), context=(context,))
    settings = Settings(
        data_dir=tmp_path, log_json=False, training_serving_prompts=True, example_aliases=aliases
    )
    chat = to_chat(example, schema, training_render(settings, None))
    assert chat[-1] == {"role": "assistant", "content": f"```sql\n{shown}\n```"}
    assert chat[-3]["content"] == f"```sql\n{shown}\n```"  # the example turn in its prompt
    # The plain training prompt shows and teaches the SQL as stored.
    plain = to_chat(
        example,
        schema,
        training_render(settings.model_copy(update={"training_serving_prompts": False}), None),
    )
    assert plain[-1]["content"] == f"```sql\n{sql}\n```"


@pytest.mark.parametrize(
    ("candidate", "current", "margin", "examples", "passes", "judged"),
    [
        (0.5, 0.5, 0.0, 10, False, True),  # a tie proves nothing
        (0.6, 0.5, 0.0, 10, True, True),
        (0.6, 0.5, 0.1, 10, False, True),  # a gain, but not past the margin
        (0.8, 0.5, 0.1, 10, True, True),
        (0.4, 0.5, 0.0, 10, False, True),
        (0.0, 0.0, 0.0, 10, False, True),  # nothing right on the held-out split
        (1.0, 0.0, 0.0, 4, False, False),  # too few held-out examples to judge: a person decides
        (1.0, 1.0, 0.0, 10, False, True),
    ],
)
def test_gate(
    candidate: float, current: float, margin: float, examples: int, passes: bool, judged: bool
) -> None:
    verdict = gate(candidate, current, margin, examples=examples, min_examples=5)
    assert (verdict.passed, verdict.judged) == (passes, judged) and verdict.reason
