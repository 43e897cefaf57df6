"""Schema linking hints: the one column a question's words name (``services/core/column_hints.py``)."""

from __future__ import annotations

import pytest

from services.core.column_hints import column_hints
from services.core.prompt import PromptOptions, build_prompt
from services.core.schema import Column, SchemaInfo, Table


def _schema() -> SchemaInfo:
    def table(name: str, *columns: str) -> Table:
        # "name:TYPE"; text where no type is given.
        parts = [c.partition(":") for c in columns]
        return Table(name=name, columns=[Column(name=n, type=kind or "TEXT") for n, _, kind in parts])

    return SchemaInfo(
        dialect="sqlite",
        tables=[
            table("state", "state_name", "population:int", "area:double", "capital", "density:double"),
            table("city", "city_name", "population:INTEGER", "state_name"),
            table("lake", "lake_name", "area:REAL", "state_name"),
            table(
                "highlow", "state_name", "highestPoint:numeric(8,2)", "lowest_elevation:bigint", "high_point"
            ),
            table("order_item", "id:int", "unit_price:decimal(10, 2)", "order_item:int", "unit_note"),
        ],
    )


CASES = [
    # question, hints
    ("what are the population densities of each state", ["'densities' is state.density"]),
    # Text columns are left to the value hints.
    ("what are the capital city in texas", []),
    ("what is the high point of ohio", []),
    ("show the unit notes", []),
    # A name two tables share says nothing about which table.
    ("what is the population of boston", []),
    ("what is the area of alaska", []),
    # Several words, camelCase and snake_case names alike; the longest first.
    (
        "what is the lowest elevation and the highest point of ohio",
        ["'lowest elevation' is highlow.lowest_elevation", "'highest point' is highlow.highestPoint"],
    ),
    ("average unit prices per order", ["'unit prices' is order_item.unit_price"]),
    # Ids, names and a column named like its table are not attributes.
    ("list every city name and its id", []),
    ("which order item is most common", []),
    ("how many rivers are there", []),
]


@pytest.mark.parametrize(("question", "hints"), CASES, ids=[c[0] for c in CASES])
def test_column_hints(question: str, hints: list[str]) -> None:
    assert column_hints(question, _schema()) == hints


NAMED_TABLE_CASES = [
    # question, hints with named_table (the plain hints of each are in CASES or empty)
    # A shared name resolved by the one table the question names.
    ("what city has the largest population", ["'population' is city.population"]),
    ("what is the area of the texas state", ["'area' is state.area"]),
    # Only the column's own word: "populous" is not population (it could as well be "popular").
    ("what is the most populous state", []),
    # Two holders named, or none: still nothing.
    ("what is the population of the largest city in the state", []),
    ("what is the population of boston", []),
    # Beside a word with a hint of its own, the shared name is part of that name.
    ("which state has the smallest population density", ["'density' is state.density"]),
    # Unique names as before.
    ("what are the population densities of each state", ["'densities' is state.density"]),
    # The named table has no column of that name.
    ("what is the population of the largest lake", []),
]


@pytest.mark.parametrize(("question", "hints"), NAMED_TABLE_CASES, ids=[c[0] for c in NAMED_TABLE_CASES])
def test_column_hints_by_the_named_table(question: str, hints: list[str]) -> None:
    assert column_hints(question, _schema(), named_table=True) == hints


def test_hints_are_on_the_question_line_only_when_switched_on() -> None:
    question = "what are the population densities of each state"
    off = build_prompt(question, _schema())
    on = build_prompt(question, _schema(), options=PromptOptions().but(column_hints=True))
    assert "(Columns:" not in off.messages[-1]["content"]
    assert on.messages[-1]["content"] == f"{question}\n(Columns: 'densities' is state.density.)"
    assert "column_hints" in on.parts
    # The fixed prefix a project's questions share is unchanged: the hint costs no prefix reuse.
    assert on.messages[0] == off.messages[0]
    assert on.part_tokens["question"] == off.part_tokens["question"]
    assert on.part_tokens["value_hints"] > 0


def test_column_hints_go_with_value_hints_and_are_dropped_over_budget() -> None:
    question = "what are the population densities of each state"
    prompt = build_prompt(
        question,
        _schema(),
        options=PromptOptions().but(column_hints=True),
        value_hints=["'texas' is in state.state_name"],
    )
    assert prompt.messages[-1]["content"].endswith(
        "\n(Database values: 'texas' is in state.state_name.)\n(Columns: 'densities' is state.density.)"
    )
    bare = build_prompt(question, _schema())
    tight = build_prompt(
        question,
        _schema(),
        options=PromptOptions().but(column_hints=True),
        value_hints=["'texas' is in state.state_name"],
        budget_tokens=bare.tokens,
    )
    # Value hints go first, then the column hints, before anything of the schema.
    assert tight.dropped == ["value:'texas' is in state.state_name", "column:'densities' is state.density"]
    assert "(Columns:" not in tight.messages[-1]["content"]
