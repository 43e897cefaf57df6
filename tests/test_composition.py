"""Questions of a new shape made of two known ones: where a question is cut (``parts.splits``), when two
phrases ask the same thing (``parts.shape``), which pairs of verified examples compose and into what SQL
(table-driven), and the pipeline answering from a composition on a real database without calling the model.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from events import ContextExample
from services.core.composition import compositions, nest, open_compositions
from services.core.customer_db import CustomerDatabases, discover_schema
from services.core.examples.embedder import Embedder, get_embedder
from services.core.examples.index_pgvector import PgVectorIndex
from services.core.examples.parts import shape, splits, stand_in_value
from services.core.examples.selection import part_examples, select_examples
from services.core.examples.store import add_verified_example
from services.core.schema import Column, SchemaInfo, Table
from services.core.sql import check_sql
from services.core.values import ColumnValues, ValueIndex
from services.generation.pipeline import EXAMPLE_MODEL, GenerationConfig, GenerationResult, generate_answer
from services.infra.llm.scripted import ScriptedLLM, last_user_message
from tests.customer_databases import fresh_mysql, fresh_postgres

SCHEMA = SchemaInfo(
    "sqlite",
    [
        Table(
            "product",
            [
                Column("name", "TEXT", samples=["widget", "gadget", "gizmo"]),
                Column("category", "TEXT", samples=["tools", "toys"]),
                Column("price", "REAL", samples=[9.5, 20.0]),
            ],
            row_count=3,
        ),
        Table(
            "orders",
            [
                Column("id", "INTEGER", primary_key=True),
                Column("product", "TEXT", samples=["widget", "gadget"]),
                Column("customer", "TEXT", samples=["ana", "bob"]),
            ],
        ),
        Table(
            "customer",
            [
                Column("name", "TEXT", samples=["ana", "bob", "cyd"]),
                Column("city", "TEXT", samples=["lisbon", "porto"]),
            ],
        ),
    ],
)

PRODUCTS = [("widget", "tools", 9.5), ("gadget", "toys", 20.0), ("gizmo", "tools", 4.0)]
ORDERS = [(1, "widget", "ana"), (2, "widget", "bob"), (3, "widget", "cyd"), (4, "gadget", "ana")]
CUSTOMERS = [("ana", "lisbon"), ("bob", "porto"), ("cyd", "lisbon")]


def value_index() -> ValueIndex:
    return ValueIndex(
        [
            ColumnValues("product", "name", tuple(p[0] for p in PRODUCTS), True),
            ColumnValues("product", "category", ("tools", "toys"), True),
            ColumnValues("orders", "product", ("widget", "gadget"), True),
            ColumnValues("orders", "customer", ("ana", "bob", "cyd"), True),
            ColumnValues("customer", "name", ("ana", "bob", "cyd"), True),
            ColumnValues("customer", "city", ("lisbon", "porto"), True),
        ]
    )


@dataclass
class Example:
    example_id: str
    question: str
    sql: str
    score: float = 0.9


MOST_ORDERED = "SELECT product FROM orders GROUP BY product ORDER BY COUNT(*) DESC LIMIT 1"
EXAMPLES = [
    Example("most-ordered", "which product has the most orders", MOST_ORDERED),
    Example("price", "what is the price of gadget", "SELECT price FROM product WHERE name = 'gadget'"),
    Example("live-in", "which customers live in porto", "SELECT name FROM customer WHERE city = 'porto'"),
    Example("city-of", "which city is bob from", "SELECT city FROM customer WHERE name = 'bob'"),
    Example(
        "busiest-city",
        "which city has the most customers",
        "SELECT city FROM customer GROUP BY city ORDER BY COUNT(*) DESC LIMIT 1",
    ),
    Example("buyers", "who ordered gizmo", "SELECT customer FROM orders WHERE product = 'gizmo'"),
    Example(
        "bought-by", "which products has bob ordered", "SELECT product FROM orders WHERE customer = 'bob'"
    ),
    Example(
        "cheapest", "which product has the lowest price", "SELECT name FROM product ORDER BY price LIMIT 1"
    ),
    Example(
        "category", "what is the category of gadget", "SELECT category FROM product WHERE name = 'gadget'"
    ),
    Example("in-city", "who are the customers in porto", "SELECT name FROM customer WHERE city = 'porto'"),
    Example(
        "last-order", "what is the largest order of bob", "SELECT MAX(id) FROM orders WHERE customer = 'bob'"
    ),
    Example(
        "buyer-count",
        "how many customers ordered gizmo",
        "SELECT COUNT(DISTINCT customer) FROM orders WHERE product = 'gizmo'",
    ),
]


# (question, the expected cuts' phrases, longest first)
SPLITS = [
    (
        "what is the price of the product with the most orders",
        [
            "the price of the product with the most orders",
            "price of the product with the most orders",
            "the product with the most orders",
            "product with the most orders",
            "the most orders",
            "most orders",
        ],
    ),
    # A phrase never starts with a word that continues a clause ("with ...", "that ...").
    ("who ordered the gizmo", ["the gizmo"]),
    ("where", []),
    # Leading blanks do not shift the cut.
    ("  who ordered the gizmo", ["the gizmo"]),
]


@pytest.mark.parametrize(("question", "phrases"), SPLITS)
def test_splits(question: str, phrases: list[str]) -> None:
    found = splits(question)
    assert [s.phrase for s in found] == phrases
    assert all(f"{s.prefix} {s.phrase}" == question.strip() for s in found)


# (phrase, its values, example question, its values, same ask?)
SHAPES = [
    ("the product with the most orders", [], "which product has the most orders", [], True),
    # Superlatives of one direction ask for the same extreme.
    ("the city with the largest population", [], "what city has the highest population", [], True),
    ("the city with the largest population", [], "what city has the smallest population", [], False),
    # Order matters: the state with the largest population is not the population of the largest state.
    ("the state with the largest population", [], "what is the population of the largest state", [], False),
    # Plurals and -ing forms are one word; values are one placeholder whatever their words.
    ("states bordering new york", ["new york"], "what states border texas", ["texas"], True),
    # A value on one side only asks something else.
    ("the customers in lisbon", ["lisbon"], "which customers are there", [], False),
    ("the product with the most orders", [], "which product has the most returned orders", [], False),
]


@pytest.mark.parametrize(("phrase", "phrase_values", "example", "example_values", "same"), SHAPES)
def test_shape(
    phrase: str, phrase_values: list[str], example: str, example_values: list[str], same: bool
) -> None:
    assert (shape(phrase, phrase_values) == shape(example, example_values)) is same


def test_stand_in_value_is_a_sample_of_the_returned_column() -> None:
    assert stand_in_value(MOST_ORDERED, SCHEMA) == "widget"
    assert stand_in_value("SELECT o.customer FROM orders AS o WHERE o.id = 1", SCHEMA) == "ana"
    # A number, an aggregate or several columns stand for no value.
    assert stand_in_value("SELECT price FROM product", SCHEMA) is None
    assert stand_in_value("SELECT COUNT(*) FROM orders", SCHEMA) is None
    assert stand_in_value("SELECT name, city FROM customer", SCHEMA) is None


# (question, composed SQL or None)
COMPOSITIONS = [
    (
        "what is the price of the product with the most orders",
        f"SELECT price FROM product WHERE name IN ({MOST_ORDERED})",
    ),
    # The inner phrase names a value of its own, swapped into the inner example's query.
    (
        "what is the price of the products ana has ordered",
        "SELECT price FROM product WHERE name IN (SELECT product FROM orders WHERE customer = 'ana')",
    ),
    # ... or the inner example's own value.
    (
        "what is the price of the products bob has ordered",
        "SELECT price FROM product WHERE name IN (SELECT product FROM orders WHERE customer = 'bob')",
    ),
    (
        "who ordered the product with the most orders",
        f"SELECT customer FROM orders WHERE product IN ({MOST_ORDERED})",
    ),
    # Rows of one table matched back to it by a column no two rows share (every product name is another row).
    (
        "what is the category of the product with the lowest price",
        "SELECT category FROM product WHERE name IN (SELECT name FROM product ORDER BY price LIMIT 1)",
    ),
    # ... but not by a column rows share (two customers live in lisbon): which rows the inner query meant is
    # lost, and the model is asked instead.
    ("which customers live in the city ana is from", None),
    # No verified example asks for the inner phrase.
    ("what is the price of the product with the fewest orders", None),
    # The inner query returns cities, the outer one compares product names: not the same kind of thing.
    ("what is the price of the city with the most customers", None),
    # Nothing to nest: the question is one example with another value (the template match answers it).
    ("what is the price of widget", None),
]


@pytest.mark.parametrize(("question", "expected"), COMPOSITIONS)
def test_compositions(question: str, expected: str | None) -> None:
    found = compositions(question, EXAMPLES, SCHEMA, value_index(), limit=1)
    assert (found[0].sql if found else None) == expected
    # The outer questions above ask for all that matches: several rows are an answer.
    assert not any(c.single for c in found)


def test_the_stand_in_value_is_not_a_value_the_outer_question_names() -> None:
    """The cheapest product's stand-in would be 'widget', the first sample; the outer question names widget
    itself, and nesting in place of every 'widget' would drop it from the question."""
    both = Example(
        "both",
        "who ordered gadget and gizmo",
        "SELECT customer FROM orders WHERE product = 'gadget' "
        "INTERSECT SELECT customer FROM orders WHERE product = 'gizmo'",
    )
    found = compositions(
        "who ordered widget and the product with the lowest price", [*EXAMPLES, both], SCHEMA, value_index()
    )
    assert [c.sql for c in found] == [
        "SELECT customer FROM orders WHERE product = 'widget' INTERSECT SELECT customer FROM orders WHERE "
        "product IN (SELECT name FROM product ORDER BY price LIMIT 1)"
    ]
    assert stand_in_value("SELECT name FROM product", SCHEMA, avoid="who ordered widget and") == "gadget"


def test_a_superlative_outer_question_asks_for_one_answer() -> None:
    found = compositions(
        "what is the largest order of the customers in lisbon", EXAMPLES, SCHEMA, value_index()
    )
    assert [(c.sql, c.single) for c in found] == [
        (
            "SELECT MAX(id) FROM orders WHERE customer IN (SELECT name FROM customer WHERE city = 'lisbon')",
            True,
        )
    ]


# (question, the phrase left to the model, the outer example and its value; or None)
OPEN = [
    (
        "how many customers ordered the product with the fewest orders",
        ("the product with the fewest orders", "buyer-count", "gizmo"),
    ),
    # The outer question must name no value of its own: the example's one value is the phrase's place.
    ("how many customers in lisbon ordered the product with the fewest orders", None),
    # The phrase only names a value: there is nothing to ask the model.
    ("how many customers ordered the gadget product", None),
    # No example has the outer question's shape.
    ("how many customers returned the product with the fewest orders", None),
]


@pytest.mark.parametrize(("question", "expected"), OPEN)
def test_open_compositions(question: str, expected: tuple[str, str, str] | None) -> None:
    found = open_compositions(question, EXAMPLES, SCHEMA, value_index())
    assert ((found[0].cut.phrase, found[0].outer_id, found[0].value) if found else None) == expected


# (outer SQL, value, composed or None)
NESTS = [
    (
        "SELECT price FROM product WHERE name = 'widget' AND category = 'tools'",
        "widget",
        "SELECT price FROM product WHERE name IN (SELECT product FROM orders) AND category = 'tools'",
    ),
    # Every comparison with the value is replaced, on either side of the '='.
    (
        "SELECT COUNT(*) FROM orders WHERE 'widget' = product OR product = 'WIDGET'",
        "widget",
        "SELECT COUNT(*) FROM orders WHERE product IN (SELECT product FROM orders) OR product IN "
        "(SELECT product FROM orders)",
    ),
    # The value anywhere but in column = value: the meaning would change.
    ("SELECT price FROM product WHERE name LIKE 'widget'", "widget", None),
    ("SELECT price FROM product WHERE name = 'gadget'", "widget", None),
]


@pytest.mark.parametrize(("outer", "value", "expected"), NESTS)
def test_nest(outer: str, value: str, expected: str | None) -> None:
    assert nest(outer, value, "SELECT product FROM orders", "sqlite") == expected


# --- the pipeline, on a real SQLite database ---------------------------------------------------------------


@pytest.fixture
def shop_db(tmp_path: Path) -> str:
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE product (name TEXT, category TEXT, price REAL)")
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, product TEXT, customer TEXT)")
        db.execute("CREATE TABLE customer (name TEXT, city TEXT)")
        db.executemany("INSERT INTO product VALUES (?, ?, ?)", PRODUCTS)
        db.executemany("INSERT INTO orders VALUES (?, ?, ?)", ORDERS)
        db.executemany("INSERT INTO customer VALUES (?, ?)", CUSTOMERS)
    return f"sqlite:///{path}"


CONTEXT = [
    ContextExample(example_id=e.example_id, source="project", question=e.question, sql=e.sql, score=e.score)
    for e in EXAMPLES
]


async def test_pipeline_answers_from_a_composition_without_the_model_scripted_llm(shop_db: str) -> None:
    question = "what is the price of the product with the most orders"
    llm = ScriptedLLM(default="SELECT price FROM product WHERE name = 'gizmo'")
    config = GenerationConfig(template_answers=True, value_templates=True, composed_answers=True)
    databases = CustomerDatabases()
    try:
        composed = await generate_answer(
            llm,
            databases,
            question=question,
            schema=SCHEMA,
            database_url=shop_db,
            examples=CONTEXT,
            config=config,
            values=value_index(),
        )
        assert composed.ok and composed.sql_source == "example" and composed.model == EXAMPLE_MODEL
        assert composed.confidence_basis == "composed_examples" and 0.5 <= composed.confidence < 0.8
        assert composed.example_ids == ["price", "most-ordered"]
        assert composed.result is not None and composed.result.rows == [(9.5,)]
        assert llm.calls == []

        # Switched off, the same question goes to the model.
        config.composed_answers = False
        modelled = await generate_answer(
            llm,
            databases,
            question=question,
            schema=SCHEMA,
            database_url=shop_db,
            examples=CONTEXT,
            config=config,
            values=value_index(),
        )
        assert modelled.sql_source == "model" and len(llm.calls) == 1
        assert modelled.result is not None and modelled.result.rows == [(4.0,)]
    finally:
        await databases.close()


async def test_pipeline_asks_the_model_for_the_inner_phrase_alone_scripted_llm(shop_db: str) -> None:
    question = "how many customers ordered the product with the fewest orders"
    fewest = "SELECT product FROM orders GROUP BY product ORDER BY COUNT(*) LIMIT 1"
    whole = "SELECT COUNT(*) FROM customer"
    config = GenerationConfig(
        template_answers=True, value_templates=True, composed_answers=True, decomposed_answers=True
    )
    databases = CustomerDatabases()

    async def answer(llm: ScriptedLLM) -> GenerationResult:
        return await generate_answer(
            llm, databases, question=question, schema=SCHEMA, database_url=shop_db, examples=CONTEXT,
            config=config, values=value_index(),
        )  # fmt: skip

    try:
        llm = ScriptedLLM([(r"^the product with the fewest orders", fewest)], default=whole)
        result = await answer(llm)
        assert [last_user_message(c.messages) for c in llm.calls] == ["the product with the fewest orders"]
        assert (
            result.ok
            and result.confidence_basis == "composed_model"
            and result.example_ids == ["buyer-count"]
        )
        assert result.sql == f"SELECT COUNT(DISTINCT customer) FROM orders WHERE product IN ({fewest})"
        assert result.result is not None and result.result.rows == [(1,)]

        # The phrase's query returns cities where the outer query compares products: the whole question goes
        # to the model as usual.
        llm = ScriptedLLM(
            [(r"^the product with the fewest orders", "SELECT city FROM customer")], default=whole
        )
        result = await answer(llm)
        assert len(llm.calls) == 2 and last_user_message(llm.calls[1].messages) == question
        assert result.sql == whole and result.confidence_basis == "single_candidate"
        # Both prompts mark their question as a segment's start: what comes before it (the examples) is the
        # same in both, and a backend that keeps evaluated prompts reuses it for the whole question.
        phrase_prompt, whole_prompt = (c.messages for c in llm.calls)
        assert phrase_prompt[:-1] == whole_prompt[:-1]
        assert phrase_prompt[-1].get("segment_start") and whole_prompt[-1].get("segment_start")
        assert not any(m.get("segment_start") for m in whole_prompt[:-1])
    finally:
        await databases.close()


# --- retrieval of the parts, on the real embedded PostgreSQL + pgvector with the real sentence model --------


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return get_embedder("all-MiniLM-L6-v2")


async def test_retrieval_brings_the_examples_of_both_parts(pool: asyncpg.Pool, embedder: Embedder) -> None:
    project_id = f"parts-{uuid.uuid4().hex[:10]}"
    await pool.execute(
        "INSERT INTO projects (id, name, database_url, dialect) VALUES ($1, $1, 'sqlite:///unused.db', 'sqlite')",
        project_id,
    )
    version_id = await pool.fetchval(
        "INSERT INTO schema_versions (project_id, hash, schema) VALUES ($1, $2, $3) RETURNING id",
        project_id,
        SCHEMA.structure_hash(),
        SCHEMA.to_json(),
    )
    index = PgVectorIndex(pool)
    fillers = [
        ("how many orders are there", "SELECT COUNT(*) FROM orders"),
        ("which products are tools", "SELECT name FROM product WHERE category = 'tools'"),
        ("what is the cheapest product", "SELECT name FROM product ORDER BY price LIMIT 1"),
    ]
    for question, sql in [*((e.question, e.sql) for e in EXAMPLES), *fillers]:
        await add_verified_example(
            pool, index, embedder, project_id=project_id, question=question, sql=sql, source="import",
            quality=1.0, schema=SCHEMA, schema_version_id=version_id,
        )  # fmt: skip
    question = "what is the price of the product with the most orders"
    parts = await part_examples(
        pool, index, embedder, project_id=project_id, question=question, schema=SCHEMA, min_similarity=0.85
    )
    assert [c.question for c, _ in parts] == [
        "which product has the most orders",
        "what is the price of gadget",
    ]

    whole = await select_examples(
        pool, index, embedder, project_id=project_id, question=question, schema=SCHEMA, k=2
    )
    with_parts = await select_examples(
        pool, index, embedder, project_id=project_id, question=question, schema=SCHEMA, k=2, parts=2
    )
    assert [e.question for e in with_parts[:2]] == [c.question for c, _ in parts]
    assert {e.example_id for e in whole} <= {e.example_id for e in with_parts}
    # Composable from what retrieval returned, as the generation consumer will.
    found = compositions(question, with_parts, SCHEMA, value_index(), limit=1)
    assert found and found[0].sql == f"SELECT price FROM product WHERE name IN ({MOST_ORDERED})"

    # A question that is an example with another value needs no parts.
    plain = await select_examples(
        pool, index, embedder, project_id=project_id, question="what is the price of widget", schema=SCHEMA, k=2,
        parts=2,
    )  # fmt: skip
    assert len(plain) == 2 and plain[0].question == "what is the price of gadget"


# --- composed queries on the three engines ------------------------------------------------------------------

_DDL = (
    "CREATE TABLE product (name varchar(20), category varchar(20), price real)",
    "CREATE TABLE orders (id int PRIMARY KEY, product varchar(20), customer varchar(20))",
    "CREATE TABLE customer (name varchar(20), city varchar(20))",
)


_SHOP_ROWS = {"product": PRODUCTS, "orders": ORDERS, "customer": CUSTOMERS}


@pytest.fixture(scope="module")
async def shop_pg(customer_pg_admin: str) -> AsyncIterator[str]:
    yield await fresh_postgres(customer_pg_admin, "ql_test_composition", _DDL, _SHOP_ROWS)


@pytest.fixture(scope="module")
async def shop_mysql(customer_mysql: tuple[str, int, str]) -> AsyncIterator[str]:
    yield await fresh_mysql(customer_mysql, "ql_test_composition", _DDL, _SHOP_ROWS)


async def _price_of_the_most_ordered(url: str) -> list[float]:
    """The composition of "what is the price of the product with the most orders" on ``url``'s engine:
    discovered schema, collected values, the guarded path."""
    databases = CustomerDatabases()
    try:
        schema = await discover_schema(url)
        values = ValueIndex(await databases.column_values(url, schema))
        found = compositions(
            "what is the price of the product with the most orders", EXAMPLES, schema, values
        )
        assert found, "no composition"
        check = check_sql(found[0].sql, schema)
        assert check.checked is not None, check.message
        result = await databases.run(url, check.checked, timeout_s=10, row_limit=10)
        return [float(v) for (v,) in result.rows]
    finally:
        await databases.close()


async def test_a_composed_query_runs_on_sqlite(shop_db: str) -> None:
    assert await _price_of_the_most_ordered(shop_db) == [9.5]


async def test_a_composed_query_runs_on_postgres(shop_pg: str) -> None:
    assert await _price_of_the_most_ordered(shop_pg) == [9.5]


async def test_a_composed_query_runs_on_mysql(shop_mysql: str) -> None:
    """MySQL and MariaDB take the inner query's LIMIT only inside a derived table."""
    assert await _price_of_the_most_ordered(shop_mysql) == [9.5]
