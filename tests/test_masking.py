"""DAIL-SQL masking of questions and SQL skeletons (pure functions, table-driven)."""

from __future__ import annotations

import pytest

from services.core.examples.masking import (
    mask_question,
    retrieval_text,
    skeleton_similarity,
    split_identifier,
    sql_skeleton,
)
from services.core.schema import Column, SchemaInfo, Table

SCHEMA = SchemaInfo(
    dialect="sqlite",
    tables=[
        Table(
            "customers",
            [
                Column("id", "INTEGER"),
                Column("first_name", "TEXT"),
                Column("city", "TEXT", samples=["Paris", "New York", 12]),
            ],
        ),
        Table(
            "order_items",
            [Column("orderId", "INTEGER"), Column("unitPrice", "REAL"), Column("created_at", "TEXT")],
        ),
        Table("categories", [Column("category_name", "TEXT")]),
    ],
)


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("order_items", ["order", "items"]),
        ("customerId", ["customer", "id"]),
        ("HTTPStatusCode", ["http", "status", "code"]),
        ("created_at", ["created", "at"]),
        ("Q3Revenue", ["q", "3", "revenue"]),
    ],
)
def test_split_identifier(name: str, parts: list[str]) -> None:
    assert split_identifier(name) == parts


@pytest.mark.parametrize(
    ("question", "masked", "known"),
    [
        ("How many customers live in New York?", "how many <tab> live in <val> ?", ()),
        ("How many customers live in paris", "how many <tab> live in <val>", ()),
        ("Show the first name of customers", "show the <col> of <tab>", ()),
        ("Average unit price of order items", "average <col> of <tab>", ()),
        ("Order items created after 2023-01-31", "<tab> <col> after <val>", ()),
        ("Customers with more than 3.5 orders", "<tab> with more than <val> <tab>", ()),
        ("List the category names", "list the <col>", ()),
        ("Which categories exist?", "which <tab> exist?", ()),
        ("Orders for 'ACME Corp' or \"Globex\"", "<tab> for <val> or <val>", ()),
        ("Revenue from the Gold tier", "revenue from the <val> tier", ("gold",)),
        ("Nothing from the schema here", "nothing from the schema here", ()),
    ],
)
def test_mask_question(question: str, masked: str, known: tuple[str, ...]) -> None:
    assert mask_question(question, SCHEMA, known) == masked


def test_mask_question_is_stable_and_schema_dependent() -> None:
    other = SchemaInfo(dialect="sqlite", tables=[Table("tickets", [Column("status", "TEXT")])])
    question = "How many customers have status open?"
    assert mask_question(question, SCHEMA) == "how many <tab> have status open?"
    assert mask_question(question, other) == "how many customers have <col> open?"
    assert (
        retrieval_text("  How many   customers? ", "how many <tab>?")
        == "How many customers? | how many <tab>?"
    )


@pytest.mark.parametrize(
    ("sql", "dialect", "skeleton"),
    [
        (
            "SELECT COUNT(*) FROM customers WHERE city = 'Paris'",
            "sqlite",
            "SELECT COUNT(*) FROM _ WHERE _ = <val>",
        ),
        (
            "select c.name, sum(o.total) as s from customers c join orders o on o.cid = c.id "
            "group by c.name having sum(o.total) > 100 order by s desc limit 5",
            "sqlite",
            "SELECT _, SUM(_) AS _ FROM _ JOIN _ ON _ = _ GROUP BY _ HAVING SUM(_) > <val> ORDER BY _ DESC LIMIT <val>",
        ),
        (
            "SELECT name FROM products WHERE id NOT IN (SELECT product_id FROM order_items)",
            "sqlite",
            "SELECT _ FROM _ WHERE NOT _ IN (SELECT _ FROM _)",
        ),
        (
            'SELECT "Order Id" FROM "My Table" WHERE x BETWEEN 1 AND 2',
            "postgres",
            "SELECT _ FROM _ WHERE _ BETWEEN <val> AND <val>",
        ),
        ("SELECT `a` FROM `t` LIMIT 10", "mysql", "SELECT _ FROM _ LIMIT <val>"),
    ],
)
def test_sql_skeleton(sql: str, dialect: str, skeleton: str) -> None:
    assert sql_skeleton(sql, dialect) == skeleton


def test_sql_skeleton_of_unparsable_sql_masks_tokens() -> None:
    assert (
        sql_skeleton("SELEC name FRM t WHERE x = 'a' AND y = 3", "sqlite")
        == "_ _ _ _ WHERE _ = <val> AND _ = <val>"
    )


@pytest.mark.parametrize(
    ("a", "b", "low", "high"),
    [
        ("SELECT COUNT(*) FROM t WHERE a = 1", "SELECT COUNT(*) FROM u WHERE b = 'x'", 1.0, 1.0),
        ("SELECT a FROM t ORDER BY a DESC LIMIT 1", "SELECT b FROM u ORDER BY c DESC LIMIT 3", 1.0, 1.0),
        ("SELECT a, COUNT(*) FROM t GROUP BY a", "SELECT a FROM t WHERE b = 1", 0.3, 0.8),
        (
            "SELECT a FROM t",
            "SELECT x, SUM(y) FROM t JOIN u ON t.i = u.i GROUP BY x HAVING SUM(y) > 2",
            0.0,
            0.5,
        ),
    ],
)
def test_skeleton_similarity(a: str, b: str, low: float, high: float) -> None:
    similarity = skeleton_similarity(sql_skeleton(a), sql_skeleton(b))
    assert low <= similarity <= high
    assert similarity == skeleton_similarity(sql_skeleton(b), sql_skeleton(a))


def test_skeleton_similarity_edges() -> None:
    assert skeleton_similarity("", "SELECT _ FROM _") == 0.0
    assert skeleton_similarity("SELECT _ FROM _", "SELECT _ FROM _") == 1.0
