"""Wordings a project's users put for one another, learned from its verified examples: what is learned, what a
contradiction or a single pair keeps out, an example reworded that way answering through the templates, and a
project's wordings learned from its own usable examples in the system of record."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from services.core.examples.paraphrases import (
    Paraphrases,
    ProjectParaphrases,
    example_shape,
    learn,
    learn_project,
)
from services.core.examples.parts import shape
from services.core.schema import Column, SchemaInfo, Table
from services.core.value_templates import shape_adaptations
from services.core.values import ColumnValues, ValueIndex
from tests.conftest import unique

RUNS = "SELECT river FROM flows WHERE region = '{}'"
COUNT_RUNS = "SELECT COUNT(river) FROM flows WHERE region = '{}'"
TALLEST = "SELECT MAX(height) FROM peaks WHERE region = '{}'"
NAMED = "SELECT name FROM peaks WHERE region = '{}' ORDER BY height DESC LIMIT 1"

# The project's verified examples: (question, SQL). A wording is learned from two different contexts ("which
# rivers ... through" and "how many rivers ... through"); questions that differ in function words only are one.
HISTORY = [
    ("which rivers run through north", RUNS.format("north")),
    ("which rivers flow through south", RUNS.format("south")),
    ("what rivers run through east", RUNS.format("east")),
    ("what rivers flow through west", RUNS.format("west")),
    ("how many rivers run through north", COUNT_RUNS.format("north")),
    ("how many rivers flow through east", COUNT_RUNS.format("east")),
    # 'summit' and 'peak' mean the same twice...
    ("how high is the tallest summit in north", TALLEST.format("north")),
    ("how high is the tallest peak in south", TALLEST.format("south")),
    ("what is the highest summit of east", TALLEST.format("east")),
    ("what is the highest peak of west", TALLEST.format("west")),
    # ... 'height' and 'elevation' once only...
    ("what is the height of the top of north", TALLEST.format("north")),
    ("what is the elevation of the top of south", TALLEST.format("south")),
    # ... and 'mountain' and 'peak' mean the same once but not another time: contradicted.
    ("which mountain is tallest in north", NAMED.format("north")),
    ("which peak is tallest in south", NAMED.format("south")),
    ("which mountain is biggest in east", TALLEST.format("east")),
    ("which peak is biggest in west", NAMED.format("west")),
]
REGIONS = ["north", "south", "east", "west"]


def learned() -> Paraphrases:
    return learn(HISTORY, "sqlite")


# (question, example question, same ask?)
CASES = [
    ("which rivers flow through north", "which rivers run through south", True),
    ("how high is the tallest summit in west", "how high is the tallest peak in north", True),
    # One pair is not enough support.
    ("what is the height of the top of west", "what is the elevation of the top of east", False),
    # A contradicted wording is not learned.
    ("which mountain is tallest in west", "which peak is tallest in east", False),
    # Two places differing is more than one wording.
    ("which rivers flow into north", "which rivers run through south", False),
    # Values never stand in a wording.
    ("which rivers flow through north", "which rivers flow through south", True),
]


@pytest.mark.parametrize(("question", "example", "same"), CASES)
def test_learned_wordings(question: str, example: str, same: bool) -> None:
    ours = shape(question, [r for r in REGIONS if r in question])
    theirs = shape(example, [r for r in REGIONS if r in example])
    assert learned().same_ask(ours, theirs) is same


def test_nothing_is_learned_from_one_example_or_none() -> None:
    assert len(learn([], "sqlite")) == 0
    assert len(learn(HISTORY[:1], "sqlite")) == 0
    wordings = learned().wordings
    assert {(("flow",), ("run",)), (("peak",), ("summit",))} <= wordings
    assert (("elevation",), ("height",)) not in wordings and (("mountain",), ("peak",)) not in wordings


def test_a_number_is_never_learned_as_a_wording() -> None:
    # The year is in the SQL only inside a longer literal, so the questions' years are not masked as values:
    # "since 2023" against "since 2024" looks like a wording put for another, in two contexts, never
    # contradicted. It is what is asked about.
    rivers = "SELECT COUNT(river) FROM flows WHERE region = '{}' AND since >= '{}-01-01'"
    peaks = "SELECT COUNT(name) FROM peaks WHERE region = '{}' AND since >= '{}-01-01'"
    history = [
        ("how many rivers run through north since 2023", rivers.format("north", 2023)),
        ("how many rivers run through south since 2024", rivers.format("south", 2024)),
        ("how many peaks stand in north since 2023", peaks.format("north", 2023)),
        ("how many peaks stand in south since 2024", peaks.format("south", 2024)),
    ]
    assert len(learn(history, "sqlite")) == 0
    ours = shape("how many rivers run through east since 2025", ["east"])
    theirs = example_shape(*history[0], "sqlite")
    assert Paraphrases(frozenset({(("2023",), ("2025",))})).same_ask(ours, theirs) is False


def test_an_example_in_other_words_answers_with_the_questions_values() -> None:
    schema = SchemaInfo("sqlite", [Table("flows", [Column("river", "TEXT"), Column("region", "TEXT")])])
    index = ValueIndex([ColumnValues("flows", "region", tuple(REGIONS), True)])

    class Example:
        example_id = "runs"
        question = "which rivers run through north"
        sql = RUNS.format("north")
        score = 0.9

    question = "which rivers flow through west"
    assert shape_adaptations(question, [Example()], schema, index) == []
    [adapted] = shape_adaptations(question, [Example()], schema, index, paraphrases=learned())
    assert adapted.sql == RUNS.format("west")
    assert example_shape(Example.question, Example.sql, "sqlite") == shape(
        "which rivers run through <x>", ["<x>"]
    )


# --- a project's wordings, from the system of record ----------------------------------------------------------


async def _project_with(pool: asyncpg.Pool, examples: list[tuple[str, str]], **flags: bool) -> str:
    project = unique("para")
    await pool.execute(
        "INSERT INTO projects (id, name, database_url, dialect) VALUES ($1, $1, 'sqlite:///x.db', 'sqlite')",
        project,
    )
    for question, sql in examples:
        await _add(pool, project, question, sql, **flags)
    return project


async def _add(pool: asyncpg.Pool, project: str, question: str, sql: str, **flags: bool) -> None:
    await pool.execute(
        "INSERT INTO examples (id, project_id, question, sql, source, verified, rated_down, stale)"
        " VALUES ($1, $2, $3, $4, 'import', true, $5, $6)",
        uuid.uuid4(),
        project,
        question,
        sql,
        flags.get("rated_down", False),
        flags.get("stale", False),
    )


# Two contexts in which 'flow' and 'run' are interchangeable: the least support that teaches the pair.
_FLOW_RUN = [
    ("which rivers flow through texas", RUNS.format("texas")),
    ("which rivers run through ohio", RUNS.format("ohio")),
    ("how many rivers flow through iowa", COUNT_RUNS.format("iowa")),
    ("how many rivers run through utah", COUNT_RUNS.format("utah")),
]


async def test_a_project_learns_from_its_own_usable_examples_only(pool: asyncpg.Pool) -> None:
    flow, run = ("flow",), ("run",)
    ours = await _project_with(pool, _FLOW_RUN)
    rated_down = await _project_with(pool, _FLOW_RUN, rated_down=True)
    assert (flow, run) in (await learn_project(pool, ours, "sqlite")).wordings
    assert len(await learn_project(pool, rated_down, "sqlite")) == 0
    # Another project's examples teach this one nothing.
    empty = await _project_with(pool, [])
    assert len(await learn_project(pool, empty, "sqlite")) == 0


async def test_the_cache_learns_again_only_after_its_ttl(pool: asyncpg.Pool) -> None:
    project = await _project_with(pool, _FLOW_RUN[:2])
    cache = ProjectParaphrases(pool, ttl_s=3600)
    assert len(await cache.get(project, "sqlite")) == 0  # one context is not enough
    for question, sql in _FLOW_RUN[2:]:
        await _add(pool, project, question, sql)
    assert len(await cache.get(project, "sqlite")) == 0  # still the learned set
    assert len(await ProjectParaphrases(pool, ttl_s=0).get(project, "sqlite")) == 1
