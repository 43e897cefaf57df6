"""Execution-consistency voting and confidence, through the real generation pipeline on a real SQLite database
with a scripted model (its greedy answer and its sampled alternatives are given), and the vote's own rules."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from events import ContextExample
from services.core.customer_db import CustomerDatabases, QueryResult, discover_schema
from services.core.schema import SchemaInfo
from services.generation.candidates import Candidate
from services.generation.pipeline import GenerationConfig, generate_answer
from services.generation.voting import confidence, vote
from services.infra.llm.scripted import ScriptedLLM

RIGHT = "SELECT name FROM city WHERE population > 1000"
SAME_RESULT = "SELECT name FROM city WHERE population >= 1001"
WRONG = "SELECT name FROM city"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[tuple[str, SchemaInfo, CustomerDatabases]]:
    path = tmp_path / "v.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE city (name TEXT, population INTEGER)")
        conn.executemany("INSERT INTO city VALUES (?, ?)", [("a", 5000), ("b", 20), ("c", 3000)])
    url = f"sqlite:///{path}"
    databases = CustomerDatabases()
    yield url, await discover_schema(url), databases
    await databases.close()


def model(greedy: str, alternatives: Sequence[str]) -> ScriptedLLM:
    return ScriptedLLM(
        default=f"```sql\n{greedy}\n```", alternatives=lambda _: [f"```sql\n{a}\n```" for a in alternatives]
    )


async def answer(llm: ScriptedLLM, db: tuple[str, SchemaInfo, CustomerDatabases], candidates: int):  # type: ignore[no-untyped-def]
    url, schema, databases = db
    return await generate_answer(
        llm,
        databases,
        question="which cities are big",
        schema=schema,
        database_url=url,
        config=GenerationConfig(vote_candidates=candidates, repair_rounds=0),
    )


async def test_the_majority_result_wins_over_the_greedy_answer_scripted_llm(db) -> None:  # type: ignore[no-untyped-def]
    llm = model(WRONG, [RIGHT, SAME_RESULT, WRONG, RIGHT])
    result = await answer(llm, db, candidates=5)
    assert result.ok and result.sql == RIGHT
    assert (result.candidates, result.agreeing) == (5, 3)
    assert result.confidence_basis == "agreement" and 0.5 < result.confidence < 0.9
    # The first call drew one alternative with the greedy answer, the second only the rest (no greedy again).
    assert [c.response != "" for c in llm.calls] == [True, False]
    assert result.attempts == 1


async def test_voting_stops_when_the_first_two_agree_scripted_llm(db) -> None:  # type: ignore[no-untyped-def]
    llm = model(RIGHT, [SAME_RESULT, WRONG, WRONG, WRONG])
    result = await answer(llm, db, candidates=5)
    assert result.sql == RIGHT and (result.candidates, result.agreeing) == (2, 2)
    assert len(llm.calls) == 1  # no second call: the candidates agreed
    assert result.confidence == pytest.approx(0.9)


async def test_without_voting_the_greedy_answer_stands_alone_scripted_llm(db) -> None:  # type: ignore[no-untyped-def]
    llm = model(WRONG, [RIGHT, RIGHT])
    result = await answer(llm, db, candidates=1)
    assert result.sql == WRONG and result.candidates == 1
    assert result.confidence_basis == "single_candidate" and result.confidence < 0.5
    assert llm.calls[0].response and len(llm.calls) == 1


async def test_candidates_that_do_not_run_do_not_vote_scripted_llm(db) -> None:  # type: ignore[no-untyped-def]
    llm = model("SELECT nope FROM city", ["DELETE FROM city", RIGHT, "SELECT * FROM nowhere"])
    result = await answer(llm, db, candidates=4)
    assert result.ok and result.sql == RIGHT and (result.candidates, result.agreeing) == (1, 1)


async def test_an_answer_from_a_verified_example_is_the_surest_scripted_llm(db) -> None:  # type: ignore[no-untyped-def]
    url, schema, databases = db
    example = ContextExample(
        example_id="e1",
        source="project",
        question="which cities have more than 1000 people",
        sql="SELECT name FROM city WHERE population > 1000",
        score=0.9,
    )
    result = await generate_answer(
        model(WRONG, []),
        databases,
        question="which cities have more than 2000 people",
        schema=schema,
        database_url=url,
        examples=[example],
        config=GenerationConfig(template_answers=True, vote_candidates=3),
    )
    assert result.sql_source == "example" and result.confidence_basis == "verified_example"
    assert result.confidence == pytest.approx(0.95)


def _ran(rows: list[tuple[object, ...]]) -> Candidate:
    return Candidate("SELECT 1", "ran", result=QueryResult(["x"], rows, False, 0.0))


def test_vote_groups_results_as_multisets_and_ties_go_to_the_first() -> None:
    a, b = _ran([(1,), (2,)]), _ran([(2,), (1,)])  # the same result in another order
    c, d = _ran([(3,)]), _ran([(3,)])
    assert vote([a, c, b, d]) is not None and vote([a, c, b, d]).winner == 0  # type: ignore[union-attr]
    assert vote([c, a, b]).winner == 1  # type: ignore[union-attr]
    assert vote([Candidate("x", "failed")]) is None


def test_confidence_falls_with_disagreement_emptiness_and_repairs() -> None:
    full = confidence(
        from_example=False, vote_result=vote([_ran([(1,)])] * 3), candidates=3, empty=False, repaired=False
    )
    split = confidence(
        from_example=False, vote_result=vote([_ran([(1,)]), _ran([(2,)]), _ran([(3,)])]), candidates=3,
        empty=False, repaired=False,
    )  # fmt: skip
    empty = confidence(from_example=False, vote_result=None, candidates=1, empty=True, repaired=True)
    assert (
        full[0] > split[0] > empty[0]
        and full[1] == split[1] == "agreement"
        and empty[1] == "single_candidate"
    )
