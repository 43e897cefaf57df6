"""A value that reads as two things: the reading the database refers to from more places first
(``value_readings``), and a value next to a word naming its table read as that table's thing in shape
templates (``ValueIndex.entity_phrases``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from events import ContextExample
from services.core.customer_db import CustomerDatabases, discover_schema
from services.core.schema import Column, SchemaInfo, Table
from services.core.template_match import adaptations
from services.core.value_readings import by_prominence
from services.core.value_templates import shape_adaptations
from services.core.values import ColumnValues, ValueIndex
from services.generation.pipeline import EXAMPLE_MODEL, GenerationConfig, generate_answer
from services.infra.llm.scripted import ScriptedLLM
from tests.customer_databases import fresh_sqlite

# 'victoria' is a region and a town; regions are referred to from towns and roads, the town from nowhere else.
REGIONS = [
    ("victoria", 6_500_000, "ballarat"),
    ("queensland", 5_200_000, "cairns"),
    ("tasmania", 570_000, "hobart"),
]
TOWNS = [
    ("victoria", "queensland", 3_000),
    ("hobart", "tasmania", 250_000),
    ("cairns", "queensland", 150_000),
    ("ballarat", "victoria", 110_000),
]
ROADS = [("bass highway", "tasmania"), ("bruce highway", "queensland"), ("hume highway", "victoria")]

SCHEMA = SchemaInfo(
    "sqlite",
    [
        Table(
            "region",
            [Column("region_name", "TEXT"), Column("population", "INTEGER"), Column("capital", "TEXT")],
        ),
        Table(
            "town",
            [Column("town_name", "TEXT"), Column("region_name", "TEXT"), Column("population", "INTEGER")],
        ),
        Table("road", [Column("road_name", "TEXT"), Column("region_name", "TEXT")]),
    ],
)


def index() -> ValueIndex:
    return ValueIndex(
        [
            ColumnValues("region", "region_name", tuple(r[0] for r in REGIONS), True),
            ColumnValues("region", "capital", tuple(r[2] for r in REGIONS), True),
            ColumnValues("town", "town_name", tuple(t[0] for t in TOWNS), True),
            ColumnValues("town", "region_name", tuple(dict.fromkeys(t[1] for t in TOWNS)), True),
            ColumnValues("road", "road_name", tuple(r[0] for r in ROADS), True),
            ColumnValues("road", "region_name", tuple(r[1] for r in ROADS), True),
        ]
    )


@pytest.mark.parametrize(
    ("value", "column", "expected"),
    [
        # the region's name is held by three columns of regions
        ("victoria", "region.region_name", 3),
        # the town's by its own column alone: the region columns share one value of four with it
        ("victoria", "town.town_name", 1),
        # a capital is a town: region.capital holds towns' names
        ("Hobart", "town.town_name", 2),
        # a column that does not hold the value, or is not indexed
        ("hobart", "region.region_name", 0),
        ("victoria", "region.population", 0),
    ],
)
def test_prominence_counts_the_columns_holding_a_value_as_the_same_kind_of_thing(
    value: str, column: str, expected: int
) -> None:
    assert index().prominence(value, column) == expected


@dataclass
class Example:
    example_id: str
    question: str
    sql: str
    score: float = 0.9


TOWN_POPULATION = Example(
    "town", "what is the population of cairns", "SELECT population FROM town WHERE town_name = 'cairns'"
)
REGION_POPULATION = Example(
    "region",
    "what is the population of tasmania",
    "SELECT population FROM region WHERE region_name = 'tasmania'",
)
REGION_OWN = Example(
    "region-own",
    "what is the population of victoria",
    "SELECT population FROM region WHERE region_name = 'victoria'",
)
TOWN_SQL = "SELECT population FROM town WHERE town_name = '{}'"
REGION_SQL = "SELECT population FROM region WHERE region_name = '{}'"


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        # equally close: the region, which roads and towns refer to, before the town
        ("what is the population of victoria", [REGION_SQL.format("victoria"), TOWN_SQL.format("victoria")]),
        # a town's name held by no region column: the town first
        ("what is the population of hobart", [TOWN_SQL.format("hobart"), REGION_SQL.format("hobart")]),
    ],
)
def test_equally_close_templates_read_a_value_as_the_more_prominent_thing(
    question: str, expected: list[str]
) -> None:
    found = adaptations(question, [TOWN_POPULATION, REGION_POPULATION], "sqlite", limit=4)
    assert [a.sql for a in by_prominence(found, SCHEMA, index())] == expected


def test_a_closer_template_is_never_passed_over_for_a_more_prominent_reading() -> None:
    # One word ("the") fewer in common with the question than the town example.
    looser = Example("region-looser", "what is population of tasmania", REGION_POPULATION.sql)
    found = adaptations("what is the population of victoria", [looser, TOWN_POPULATION], "sqlite", limit=4)
    assert [a.example_id for a in found] == ["town", "region-looser"]
    assert [a.example_id for a in by_prominence(found, SCHEMA, index())] == ["town", "region-looser"]


@pytest.mark.parametrize(
    ("question", "examples", "plain", "entity"),
    [
        # "victoria town" asks a town's population: only the town example fits, with the town's name
        ("what is the population of victoria town", [REGION_OWN, REGION_POPULATION, TOWN_POPULATION],
         [], [TOWN_SQL.format("victoria")]),
        # the table word before the value
        ("what is the population of town victoria", [REGION_POPULATION, TOWN_POPULATION],
         [], [TOWN_SQL.format("victoria")]),
        # no word names a table: the question as worded, unchanged by the switch
        ("what is the population of victoria", [REGION_OWN, TOWN_POPULATION],
         [REGION_SQL.format("victoria"), TOWN_SQL.format("victoria")],
         [REGION_SQL.format("victoria"), TOWN_SQL.format("victoria")]),
        # a word naming a table that does not hold the value changes nothing
        ("what is the population of hobart region", [REGION_POPULATION, TOWN_POPULATION], [], []),
    ],
)  # fmt: skip
def test_a_value_next_to_its_tables_word_is_that_tables_thing(
    question: str, examples: list[Example], plain: list[str], entity: list[str]
) -> None:
    assert [a.sql for a in shape_adaptations(question, examples, SCHEMA, index(), limit=3)] == plain
    found = shape_adaptations(question, examples, SCHEMA, index(), limit=3, entity_words=True)
    assert [a.sql for a in found] == entity


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        # a town word after a column holding towns' names adds nothing
        ("What is the capital town of Tasmania?", "what is the capital of tasmania"),
        ("which capital towns are in regions", "which capital are in regions"),
        # a town word before the column, or after a word naming no such column, stays
        ("which town is the capital of tasmania", "which town is the capital of tasmania"),
        ("what is the largest town of tasmania", "what is the largest town of tasmania"),
        # a word naming the column's own table is no apposition
        ("what is the capital region", "what is the capital region"),
    ],
)
def test_a_table_word_after_a_column_of_its_things_is_left_out(question: str, expected: str) -> None:
    assert index().without_appositions(question) == expected


CAPITAL = Example(
    "capital",
    "what is the capital of queensland",
    "SELECT capital FROM region WHERE region_name = 'queensland'",
)


def test_the_capital_town_is_asked_as_the_capital() -> None:
    question = "what is the capital town of tasmania"
    assert shape_adaptations(question, [CAPITAL], SCHEMA, index(), limit=3) == []
    found = shape_adaptations(question, [CAPITAL], SCHEMA, index(), limit=3, entity_words=True)
    assert [a.sql for a in found] == ["SELECT capital FROM region WHERE region_name = 'tasmania'"]


# --- the pipeline, on a real SQLite database ---------------------------------------------------------------


@pytest.fixture
def places_db(tmp_path: Path) -> str:
    ddl = [
        "CREATE TABLE region (region_name TEXT, population INTEGER, capital TEXT)",
        "CREATE TABLE town (town_name TEXT, region_name TEXT, population INTEGER)",
        "CREATE TABLE road (road_name TEXT, region_name TEXT)",
    ]
    return fresh_sqlite(tmp_path / "places.sqlite", ddl, {"region": REGIONS, "town": TOWNS, "road": ROADS})


def _context(*examples: Example) -> list[ContextExample]:
    return [
        ContextExample(
            example_id=e.example_id, source="project", question=e.question, sql=e.sql, score=e.score
        )
        for e in examples
    ]


@pytest.mark.parametrize(
    ("question", "switches", "rows", "by_model"),
    [
        # retrieval put the town example first; without the switch it answers
        ("what is the population of victoria", {}, [(3_000,)], False),
        ("what is the population of victoria", {"prominent_readings": True}, [(6_500_000,)], False),
        # "victoria town" is asked in no example's words: the model answers it, unless read as a town, the
        # town example's question
        ("what is the population of victoria town", {}, [(3_000,)], True),
        ("what is the population of victoria town", {"entity_templates": True}, [(3_000,)], False),
    ],
)
async def test_pipeline_answers_from_the_reading_the_database_supports_scripted_llm(
    places_db: str, question: str, switches: dict[str, bool], rows: list[tuple[int]], by_model: bool
) -> None:
    llm = ScriptedLLM(default="SELECT population FROM town WHERE town_name = 'victoria'")
    config = GenerationConfig(template_answers=True, value_templates=True, shape_templates=True, **switches)
    databases = CustomerDatabases()
    try:
        schema = await discover_schema(places_db)
        values = ValueIndex(await databases.column_values(places_db, schema))
        answer = await generate_answer(
            llm,
            databases,
            question=question,
            schema=schema,
            database_url=places_db,
            examples=_context(TOWN_POPULATION, REGION_POPULATION),
            config=config,
            values=values,
        )
        assert answer.ok and (answer.model == EXAMPLE_MODEL) is not by_model
        assert len(llm.calls) == int(by_model)
        assert answer.result is not None and answer.result.rows == rows
    finally:
        await databases.close()
