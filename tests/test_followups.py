"""Suggested next questions come from the project's verified examples near the question (a plain function)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from events import ChatAnswer, ContextExample
from services.generation.followups import suggest_followups


def example(question: str, sql: str, source: str = "project", score: float = 0.5) -> ContextExample:
    return ContextExample(example_id=question, source=source, question=question, sql=sql, score=score)  # type: ignore[arg-type]


ANSWER_SQL = "SELECT COUNT(*) FROM customers WHERE loyalty_tier = 'gold'"


def test_other_values_come_first_then_next_steps_on_the_same_tables() -> None:
    examples = [
        example("how many orders per status", "SELECT status, COUNT(*) FROM orders GROUP BY status"),
        example("customers per city", "SELECT city, COUNT(*) FROM customers GROUP BY city"),
        example(
            "how many silver customers are there",
            "SELECT COUNT(*) FROM customers WHERE loyalty_tier = 'silver'",
        ),
    ]
    got = suggest_followups("how many gold customers are there", ANSWER_SQL, examples, "sqlite")
    # Orders are another table: not the same analysis.
    assert got == ["how many silver customers are there", "customers per city"]


def test_the_question_itself_library_examples_and_duplicates_are_never_suggested() -> None:
    examples = [
        example("How many gold customers are there?", ANSWER_SQL),
        example("customers per city", "SELECT city, COUNT(*) FROM customers GROUP BY city", source="library"),
        example("customers by tier", "SELECT loyalty_tier, COUNT(*) FROM customers GROUP BY 1"),
        example("Customers by tier", "SELECT loyalty_tier, COUNT(*) FROM customers GROUP BY loyalty_tier"),
    ]
    got = suggest_followups("how many gold customers are there", ANSWER_SQL, examples, "sqlite")
    assert got == ["customers by tier"]


def test_at_most_three_more_tables_in_common_first() -> None:
    answer_sql = (
        "SELECT c.city, COUNT(*) FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.city"
    )
    examples = [example(f"orders question {i}", "SELECT COUNT(*) FROM orders") for i in range(4)]
    examples.append(
        example(
            "orders per customer tier",
            "SELECT c.loyalty_tier, COUNT(*) FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY 1",
        )
    )
    got = suggest_followups("orders per city", answer_sql, examples, "sqlite")
    assert got == ["orders per customer tier", "orders question 0", "orders question 1"]


def test_without_sql_only_the_same_question_with_other_values_is_suggested() -> None:
    examples = [
        example("customers per city", "SELECT city, COUNT(*) FROM customers GROUP BY city"),
        example(
            "how many silver customers are there",
            "SELECT COUNT(*) FROM customers WHERE loyalty_tier = 'silver'",
        ),
    ]
    assert suggest_followups("how many gold customers are there", "", examples, "sqlite") == [
        "how many silver customers are there"
    ]


def test_chat_answer_holds_at_most_three_suggestions() -> None:
    base = dict(
        project_id="p",
        question_event_id="6f1d5a52-2b8e-4c61-9a53-4d1f0f3c7a10",
        conversation_id="c",
        user_id="u",
        question="q",
        answer_text="a",
        sql="SELECT 1",
        model="m",
    )
    assert ChatAnswer(**base).suggestions == []  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ChatAnswer(**base, suggestions=["a", "b", "c", "d"])  # type: ignore[arg-type]
