"""DAIL-SQL's second pass: examples chosen again by the shape of a drafted query (``selection.by_draft``), and
the pipeline asking again with them only when the choice changed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from events import ContextExample
from services.core.customer_db import CustomerDatabases
from services.core.examples.selection import by_draft
from services.core.schema import Column, SchemaInfo, Table
from services.generation.pipeline import GenerationConfig, GenerationResult, generate_answer
from services.infra.llm.scripted import ScriptedLLM

SCHEMA = SchemaInfo(
    "sqlite",
    [Table("sales", [Column("region", "TEXT"), Column("product", "TEXT"), Column("amount", "REAL")])],
)


def example(example_id: str, question: str, sql: str, score: float) -> ContextExample:
    return ContextExample(example_id=example_id, source="project", question=question, sql=sql, score=score)


FILTER = example("filter", "sales in the north", "SELECT amount FROM sales WHERE region = 'north'", 0.9)
TOTAL = example("total", "total sales", "SELECT SUM(amount) FROM sales", 0.85)
GROUPED = example(
    "grouped",
    "best selling product per region",
    "SELECT region, product FROM sales GROUP BY region, product ORDER BY SUM(amount) DESC",
    0.8,
)
TOP = example(
    "top",
    "which region sells most",
    "SELECT region FROM sales GROUP BY region ORDER BY SUM(amount) DESC LIMIT 1",
    0.75,
)

# (draft, examples offered, k, chosen ids best first)
CASES = [
    # A grouped draft brings the grouped examples in, ahead of more similar questions of another shape.
    (
        "SELECT product FROM sales GROUP BY product ORDER BY SUM(amount) DESC LIMIT 1",
        [FILTER, TOTAL, GROUPED, TOP],
        2,
        ["top", "grouped"],
    ),
    # A plain filter keeps the filter example first.
    ("SELECT amount FROM sales WHERE region = 'south'", [FILTER, TOTAL, GROUPED, TOP], 1, ["filter"]),
    # No draft (the model wrote no query) leaves question similarity in charge.
    ("", [TOP, FILTER, TOTAL], 2, ["filter", "total"]),
]


@pytest.mark.parametrize(("draft", "offered", "k", "expected"), CASES)
def test_by_draft(draft: str, offered: list[ContextExample], k: int, expected: list[str]) -> None:
    assert [e.example_id for e in by_draft(draft, offered, k, "sqlite")] == expected


@pytest.fixture
def sales_db(tmp_path: Path) -> str:
    path = tmp_path / "sales.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE sales (region TEXT, product TEXT, amount REAL)")
        db.executemany(
            "INSERT INTO sales VALUES (?, ?, ?)",
            [("north", "tea", 5.0), ("north", "coffee", 9.0), ("south", "tea", 7.0)],
        )
    return f"sqlite:///{path}"


async def _answer(llm: ScriptedLLM, sales_db: str, examples: list[ContextExample]) -> GenerationResult:
    databases = CustomerDatabases()
    try:
        return await generate_answer(
            llm,
            databases,
            question="which product sells most",
            schema=SCHEMA,
            database_url=sales_db,
            examples=examples,
            reserve=[GROUPED, TOP],
            config=GenerationConfig(draft_reselect=True),
        )
    finally:
        await databases.close()


async def test_the_draft_brings_examples_of_its_shape_and_the_model_is_asked_again_scripted_llm(
    sales_db: str,
) -> None:
    grouped = "SELECT product FROM sales GROUP BY product ORDER BY SUM(amount) DESC LIMIT 1"
    llm = ScriptedLLM(default=grouped)
    result = await _answer(llm, sales_db, [FILTER, TOTAL])
    assert len(llm.calls) == 2
    second = "\n".join(m["content"] for m in llm.calls[1].messages)
    assert TOP.sql in second and GROUPED.sql in second and FILTER.sql not in second
    assert result.ok and result.sql == grouped and not result.repaired
    assert result.result is not None and result.result.rows == [("tea",)]


async def test_a_draft_whose_examples_stay_the_same_is_the_answer_scripted_llm(sales_db: str) -> None:
    llm = ScriptedLLM(default="SELECT SUM(amount) FROM sales WHERE region = 'north'")
    result = await _answer(llm, sales_db, [FILTER, TOTAL])
    assert len(llm.calls) == 1 and result.ok and result.result is not None
    assert result.result.rows == [(14.0,)]
