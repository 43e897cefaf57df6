"""The prompt builder: parts on and off, relevant-table selection, the budget's dropping order, repairs."""

from __future__ import annotations

import dataclasses

import pytest

from events import ContextExample, Turn
from services.core.llm.base import estimate_tokens
from services.core.prompt import (
    PromptOptions,
    build_prompt,
    build_repair_messages,
    select_tables,
    table_scores,
)
from services.core.schema import Column, ForeignKey, SchemaInfo, Table


def shop_schema(dialect: str = "sqlite") -> SchemaInfo:
    return SchemaInfo(
        dialect,  # type: ignore[arg-type]
        [
            Table(
                "customers",
                [
                    Column("id", "INTEGER", primary_key=True),
                    Column("name", "TEXT", samples=["Alice", "Bob"]),
                    Column("loyalty_tier", "TEXT", samples=["gold", "silver", "bronze", "none"]),
                ],
            ),
            Table(
                "orders",
                [
                    Column("id", "INTEGER", primary_key=True),
                    Column("customer_id", "INTEGER"),
                    Column("status", "TEXT", samples=["paid", "returned"]),
                    Column("total", "REAL", samples=[12.5, 80.0]),
                ],
                [ForeignKey("customer_id", "customers", "id")],
            ),
            Table("suppliers", [Column("id", "INTEGER", primary_key=True), Column("company", "TEXT")]),
            Table("warehouses", [Column("id", "INTEGER", primary_key=True), Column("city", "TEXT")]),
        ],
    )


def big_schema() -> SchemaInfo:
    """The shop schema plus 20 filler tables, so selection is forced."""
    schema = shop_schema()
    for i in range(20):
        schema.tables.append(Table(f"filler_{i}", [Column("id", "INTEGER"), Column(f"thing_{i}", "TEXT")]))
    schema.tables.append(
        Table(
            "order_items",
            [Column("order_id", "INTEGER"), Column("sku", "TEXT")],
            [ForeignKey("order_id", "orders", "id")],
        )
    )
    return schema


def example(i: int, sql: str, score: float, source: str = "project") -> ContextExample:
    return ContextExample(
        example_id=f"{source[0]}{i}", source=source, question=f"{source} question {i}?", sql=sql, score=score
    )  # type: ignore[arg-type]


EXAMPLES = [
    example(1, "SELECT COUNT(*) FROM orders WHERE status = 'paid'", 0.9),
    example(2, "SELECT name FROM customers", 0.5),
]
FEWSHOT = [
    example(1, "SELECT COUNT(*) FROM invoices", 0.7, "library"),
    example(2, "SELECT SUM(amount) FROM payments", 0.4, "library"),
]
HISTORY = [
    Turn(question="How many orders in 2021?", sql="SELECT COUNT(*) FROM orders WHERE year = 2021"),
    Turn(question="How many orders in 2022?", sql="SELECT COUNT(*) FROM orders WHERE year = 2022"),
]
QUESTION = "How many orders were returned?"


def full_prompt(**kwargs: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "history": HISTORY,
        "examples": EXAMPLES,
        "fewshot": FEWSHOT,
        "options": PromptOptions.full(),
        "budget_tokens": 5000,
        "count_tokens": estimate_tokens,
    }
    return build_prompt(QUESTION, shop_schema(), **(args | kwargs))  # type: ignore[arg-type]


def test_baseline_is_create_table_text_and_a_plain_instruction() -> None:
    prompt = build_prompt(
        QUESTION,
        shop_schema(),
        history=HISTORY,
        examples=EXAMPLES,
        fewshot=FEWSHOT,
        options=PromptOptions.baseline(),
    )
    assert prompt.parts == ["instruction", "schema"]
    assert [m["role"] for m in prompt.messages] == ["system", "user"]
    system = prompt.messages[0]["content"]
    assert "CREATE TABLE orders (" in system and "customer_id INTEGER REFERENCES customers(id)" in system
    assert "returned" not in system  # no sample values
    assert "project question 1?" not in system and "invoices" not in system
    assert prompt.messages[-1]["content"] == QUESTION


def test_full_prompt_has_every_part_in_order() -> None:
    prompt = full_prompt()
    assert prompt.parts == [
        "instruction",
        "reasoning",
        "schema",
        "sample_values",
        "fewshot",
        "examples",
        "history",
    ]
    system = prompt.messages[0]["content"]
    assert (
        "orders(id INTEGER PK, customer_id INTEGER -> customers.id, status TEXT e.g. 'paid'/'returned'"
        in system
    )
    assert "loyalty_tier TEXT e.g. 'gold'/'silver'/'bronze')" in system  # at most three samples
    assert "```sql" in system and "invoices" not in system  # library examples come after the fixed part
    assert "SELECT COUNT(*) FROM invoices" in prompt.messages[1]["content"]
    # Library examples, then project examples and history as chat turns, the question last; the best example
    # sits closest to the question.
    roles = [m["role"] for m in prompt.messages]
    assert roles == ["system", "user"] + ["user", "assistant"] * 4 + ["user"]
    assert prompt.messages[2]["content"] == "project question 2?"
    assert prompt.messages[4]["content"] == "project question 1?"
    assert prompt.messages[7]["content"] == "```sql\nSELECT COUNT(*) FROM orders WHERE year = 2021\n```"
    assert prompt.messages[-1]["content"] == QUESTION
    assert [e.example_id for e in prompt.examples_used] == ["p1", "p2", "l1", "l2"]
    assert prompt.dropped == [] and not prompt.over_budget
    assert prompt.tokens == sum(estimate_tokens(m["content"]) + 4 for m in prompt.messages)


def test_fewshot_best_example_is_rendered_last() -> None:
    block = full_prompt().messages[1]["content"]
    assert block.index("FROM payments") < block.index("FROM invoices")


@pytest.mark.parametrize(
    ("max_examples", "shown"),
    [(None, ["project question 1?", "project question 2?"]), (1, ["project question 1?"]), (0, [])],
)
def test_max_examples_shows_the_most_similar_project_examples(
    max_examples: int | None, shown: list[str]
) -> None:
    prompt = full_prompt(options=PromptOptions.full().but(max_examples=max_examples))
    project_questions = [e.question for e in prompt.examples_used if e.source == "project"]
    assert project_questions == shown
    user_turns = [m["content"] for m in prompt.messages if m["role"] == "user"]
    assert all(q in user_turns for q in shown)
    assert not any(e.question in user_turns for e in EXAMPLES if e.question not in shown)
    assert [e.source for e in prompt.examples_used].count("library") == 2  # library examples are not cut
    # The note on following the examples' patterns only where some are shown; fixed per project either way.
    assert ("follow their SQL patterns" in prompt.messages[0]["content"]) == (max_examples != 0)


@pytest.mark.parametrize(("env", "expected"), [("", None), (" ", None), ("3", 3), ("0", 0)])
def test_prompt_examples_setting_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: str, expected: int | None
) -> None:
    from services.infra.prompt_settings import prompt_options
    from services.infra.settings import Settings

    monkeypatch.setenv("QUERYLIFT_PROMPT_EXAMPLES", env)
    assert prompt_options(Settings()).max_examples == expected


def test_the_system_message_is_the_same_for_every_question_of_a_project() -> None:
    """Everything that varies with the question comes after the system message, so a model can evaluate
    that prefix once per project and schema version."""
    first = full_prompt(value_hints=["'paid' is in orders.status"])
    second = build_prompt(
        "Which customers are gold?",
        shop_schema(),
        history=[],
        examples=[example(7, "SELECT name FROM customers WHERE loyalty_tier = 'gold'", 0.8)],
        fewshot=[],
        options=PromptOptions.full(),
        budget_tokens=5000,
    )
    assert first.messages[0] == second.messages[0]
    assert first.part_tokens["prefix"] == second.part_tokens["prefix"] > 0
    assert "value_hints" in first.parts
    assert first.messages[-1]["content"] == f"{QUESTION}\n(Database values: 'paid' is in orders.status.)"
    assert set(first.part_tokens) == {"prefix", "fewshot", "examples_and_history", "value_hints", "question"}
    assert sum(first.part_tokens.values()) == first.tokens


@pytest.mark.parametrize(
    ("flag", "part"),
    [
        ("reasoning", "reasoning"),
        ("sample_values", "sample_values"),
        ("history", "history"),
        ("examples", "examples"),
        ("fewshot", "fewshot"),
    ],
)
def test_each_part_can_be_switched_off(flag: str, part: str) -> None:
    prompt = full_prompt(options=PromptOptions.full().but(**{flag: False}))
    assert part not in prompt.parts
    assert "schema" in prompt.parts
    everything = "\n".join(m["content"] for m in prompt.messages)
    marker = {
        "reasoning": "silently identify",
        "sample_values": "'returned'",
        "history": "2022",
        "examples": "project question 1?",
        "fewshot": "invoices",
    }[flag]
    assert marker not in everything
    assert marker in "\n".join(m["content"] for m in full_prompt().messages)


def test_compact_schema_off_renders_create_table_with_sample_comments() -> None:
    prompt = full_prompt(options=PromptOptions.full().but(compact_schema=False))
    assert "  status TEXT, -- e.g. 'paid', 'returned'" in prompt.messages[0]["content"]


def test_history_turns_without_sql_are_skipped_and_capped() -> None:
    turns = [Turn(question=f"q{i}", sql=f"SELECT {i}") for i in range(5)] + [Turn(question="no sql")]
    prompt = full_prompt(history=turns, examples=[], options=PromptOptions.full().but(max_history=3))
    users = [m["content"] for m in prompt.messages[2:] if m["role"] == "user"]  # after the library block
    assert users == ["q3", "q4", QUESTION]


def test_domain_note_goes_into_the_instruction() -> None:
    prompt = full_prompt(domain_note="Revenue means orders.total of paid orders.")
    assert "domain_note" in prompt.parts
    assert "About this data: Revenue means orders.total" in prompt.messages[0]["content"]


def test_relevance_scores_use_names_columns_and_sample_values() -> None:
    scores = table_scores("Which gold customers returned orders?", shop_schema())
    assert scores["customers"] > 0 and scores["orders"] > 0
    assert scores["suppliers"] == 0 and scores["warehouses"] == 0
    # 'gold' is only a sample value of customers.loyalty_tier.
    assert table_scores("list gold members", shop_schema())["customers"] > 0


def test_large_schema_keeps_relevant_tables_neighbours_and_example_tables() -> None:
    schema = big_schema()
    examples = [example(1, "SELECT city FROM warehouses", 0.8)]
    prompt = build_prompt("total of returned orders", schema, examples=examples, options=PromptOptions.full())
    assert "orders" in prompt.tables  # named in the question
    assert "customers" in prompt.tables and "order_items" in prompt.tables  # FK neighbours
    assert "warehouses" in prompt.tables  # used by an example
    assert not any(t.startswith("filler_") for t in prompt.tables)
    assert "suppliers" not in prompt.tables


def test_relevant_tables_only_narrows_a_small_schema_too() -> None:
    options = PromptOptions.full().but(relevant_tables_only=True)
    prompt = build_prompt("companies we buy from", shop_schema(), options=options)
    assert prompt.tables == ["suppliers"] or "suppliers" in prompt.tables
    assert "warehouses" not in prompt.tables
    assert "warehouses(" not in prompt.messages[0]["content"]


def test_selection_respects_max_tables_and_falls_back_when_nothing_matches() -> None:
    tables, _ = select_tables("zzz qqq", big_schema(), [], max_tables=5)
    assert [t.name for t in tables] == [t.name for t in big_schema().tables[:5]]
    tables, _ = select_tables("orders by customers", big_schema(), [], max_tables=2)
    assert {t.name for t in tables} == {"orders", "customers"}


def test_budget_drops_what_varies_before_the_schema() -> None:
    without_fewshot = full_prompt(fewshot=[])
    prompt = full_prompt(budget_tokens=without_fewshot.tokens)
    assert prompt.dropped == ["fewshot:l2", "fewshot:l1"]
    assert "sample_values" in prompt.parts and prompt.tokens <= without_fewshot.tokens


def test_budget_dropping_order_when_nothing_fits() -> None:
    prompt = full_prompt(budget_tokens=1, value_hints=["'paid' is in orders.status"])
    assert prompt.over_budget
    assert prompt.dropped[:8] == [
        "fewshot:l2",  # worst library example first
        "fewshot:l1",
        "history:0",  # turns before the last one
        "example:p2",  # worst project example first
        "example:p1",
        "value:'paid' is in orders.status",
        "sample_values",  # only then the fixed part
        # then tables unrelated to "How many orders were returned?", listed last first, FK neighbours last
        "table:warehouses",
    ]
    assert prompt.dropped[8:] == ["table:suppliers", "table:customers", "history:1"]
    assert prompt.tables == ["orders"]
    assert prompt.parts == ["instruction", "reasoning", "schema"]


def test_budget_stops_dropping_as_soon_as_it_fits() -> None:
    reference = full_prompt(history=HISTORY[-1:], fewshot=[])
    prompt = full_prompt(budget_tokens=reference.tokens)
    assert prompt.dropped == ["fewshot:l2", "fewshot:l1", "history:0"]
    assert (
        "examples" in prompt.parts and "sample_values" in prompt.parts and prompt.tokens <= reference.tokens
    )


def test_budget_uses_the_given_token_counter() -> None:
    calls: list[str] = []

    def count(text: str) -> int:
        calls.append(text)
        return len(text)  # characters: a far bigger count than the estimate

    prompt = full_prompt(count_tokens=count, budget_tokens=full_prompt().tokens)
    assert calls and prompt.dropped  # the stricter counter forced drops the estimate would not


@pytest.mark.parametrize(
    ("dialect", "name", "quoted"),
    [
        ("sqlite", "SQLite", '"order lines"'),
        ("postgres", "PostgreSQL", '"order lines"'),
        ("mysql", "MySQL", "`order lines`"),
    ],
)
def test_dialect_is_named_and_odd_identifiers_are_quoted(dialect: str, name: str, quoted: str) -> None:
    schema = shop_schema(dialect)
    schema.tables.append(Table("order lines", [Column("qty", "INTEGER")]))
    prompt = build_prompt(QUESTION, schema, options=PromptOptions.full())
    system = prompt.messages[0]["content"]
    assert f"You write {name} SQL" in system and f"Database schema ({name})" in system
    assert f"{quoted}(qty INTEGER)" in system
    baseline = build_prompt(QUESTION, schema, options=PromptOptions.baseline())
    assert baseline.messages[0]["content"].startswith(f"Write one {name} SQL query")
    repair = build_repair_messages(prompt, "SELECT x FROM orders", "no such column: x")
    assert f"corrected {name} query" in repair[-1]["content"]


def test_repair_messages_append_previous_sql_and_error() -> None:
    prompt = full_prompt()
    original = [dict(m) for m in prompt.messages]
    repair = build_repair_messages(prompt, "SELECT bogus FROM orders;", "unknown column orders.bogus")
    assert repair[: len(original)] == original
    assert [dict(m) for m in prompt.messages] == original  # the prompt is not modified
    # Marked as the model's own reply: the chat before it was a prompt, which the gguf backend reuses.
    assert repair[-2] == {
        "role": "assistant",
        "content": "```sql\nSELECT bogus FROM orders\n```",
        "segment_start": True,
    }
    assert repair[-1]["role"] == "user"
    assert "unknown column orders.bogus" in repair[-1]["content"] and "```sql" in repair[-1]["content"]


def test_repair_without_sql_says_so() -> None:
    repair = build_repair_messages(full_prompt(), "  ", "no SQL found in the answer")
    assert repair[-2]["content"] == "(no SQL query)"
    assert "contained no usable SQL" in repair[-1]["content"]


def test_training_render_call_works_with_defaults() -> None:
    # services.training.dataset renders prompts as build_prompt(question, schema, options=PromptOptions()).
    prompt = build_prompt(QUESTION, shop_schema(), options=PromptOptions())
    assert prompt.parts == ["instruction", "reasoning", "schema", "sample_values"]
    assert PromptOptions() == PromptOptions.full()
    assert dataclasses.replace(PromptOptions.baseline()).reasoning is False
