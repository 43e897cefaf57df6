"""The curated few-shot libraries: every example parses and runs on SQLite; domain detection; selection."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter

import pytest
import sqlglot

from services.core.examples.embedder import Embedder, get_embedder
from services.core.examples.fewshot import (
    DOMAINS,
    FewshotLibrary,
    default_data_dir,
    detect_domain,
    load_library,
)
from services.core.schema import Column, SchemaInfo, Table


def _lines() -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    found = []
    for domain in DOMAINS:
        for line in (default_data_dir() / f"{domain}.jsonl").read_text().splitlines():
            if line.strip():
                found.append((domain, json.loads(line)))
    return found


LINES = _lines()


def test_every_domain_has_at_least_twelve_examples_with_unique_ids() -> None:
    counts = Counter(domain for domain, _ in LINES)
    assert set(counts) == set(DOMAINS)
    assert min(counts.values()) >= 12
    ids = [raw["id"] for _, raw in LINES]
    assert len(ids) == len(set(ids))
    for _, raw in LINES:
        assert set(raw) == {"id", "question", "sql", "schema"}
        assert raw["schema"]["tables"] and all(t["columns"] for t in raw["schema"]["tables"])


@pytest.mark.parametrize(("domain", "raw"), LINES, ids=[raw["id"] for _, raw in LINES])
def test_library_example_parses_and_runs_on_sqlite(domain: str, raw: dict) -> None:  # type: ignore[type-arg]
    sqlglot.parse_one(raw["sql"], read="sqlite")
    db = sqlite3.connect(":memory:")
    try:
        for table in raw["schema"]["tables"]:
            columns = ", ".join(f'"{c["name"]}" {c["type"]}' for c in table["columns"])
            db.execute(f'CREATE TABLE "{table["name"]}" ({columns})')
        # Runs on empty tables: catches unknown names, syntax SQLite rejects and wrong function use.
        db.execute(raw["sql"]).fetchall()
        plan = db.execute("EXPLAIN QUERY PLAN " + raw["sql"]).fetchall()
        assert plan
    finally:
        db.close()


def _schema(*tables: tuple[str, list[str]]) -> SchemaInfo:
    return SchemaInfo(
        dialect="sqlite", tables=[Table(name, [Column(c, "TEXT") for c in cols]) for name, cols in tables]
    )


@pytest.mark.parametrize(
    ("schema", "domain"),
    [
        (
            _schema(("respondents", ["id", "age"]), ("responses", ["id", "respondent_id", "submitted_at"])),
            "survey",
        ),
        (_schema(("survey_answers", ["question_id", "answer_text"])), "survey"),
        (_schema(("orders", ["id", "customer_id", "total"]), ("products", ["id", "price"])), "ecommerce"),
        (_schema(("ShoppingCart", ["cartId", "productId", "unitPrice"])), "ecommerce"),
        (_schema(("leads", ["id", "status"]), ("opportunities", ["account_id", "amount", "stage"])), "crm"),
        (_schema(("contacts", ["id", "email"]), ("deals", ["contact_id", "value"])), "crm"),
        (_schema(("events", ["user_id", "name"]), ("sessions", ["id", "user_id", "device"])), "analytics"),
        (_schema(("page_views", ["session_id", "url"]), ("daily_metrics", ["day", "value"])), "analytics"),
        (_schema(("employees", ["id", "salary"]), ("departments", ["id", "name"])), "generic"),
        (_schema(("flights", ["origin", "destination"]), ("airports", ["code", "city"])), "generic"),
        (_schema(("items", ["price"])), "generic"),  # one weak column hint is not enough
        (SchemaInfo(dialect="sqlite", tables=[]), "generic"),
    ],
)
def test_detect_domain(schema: SchemaInfo, domain: str) -> None:
    assert detect_domain(schema) == domain


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return get_embedder("all-MiniLM-L6-v2")


@pytest.mark.parametrize(
    ("question", "domain", "expected_id"),
    [
        ("Which 5 products sold the most units?", "ecommerce", "ec-01"),
        ("How many leads did each source bring in?", "crm", "crm-02"),
        ("Which pages were viewed most often?", "analytics", "an-02"),
        ("How many people responded from each country?", "survey", "sv-02"),
        ("Who earns more than the average salary?", "generic", "gen-12"),
    ],
)
def test_library_selects_relevant_examples(
    embedder: Embedder, question: str, domain: str, expected_id: str
) -> None:
    library = FewshotLibrary()
    chosen = library.select(question, domain, 3, embedder)
    assert len(chosen) == 3
    assert all(c.source == "library" for c in chosen)
    assert f"library:{expected_id}" in [c.example_id for c in chosen]
    allowed = {domain, "generic"}
    by_id = {f"library:{e.id}": e.domain for e in library.examples}
    assert all(by_id[c.example_id] in allowed for c in chosen)


def test_library_select_with_project_schema_and_unknown_domain(embedder: Embedder) -> None:
    library = FewshotLibrary()
    schema = _schema(("tickets", ["id", "status", "opened_at"]))
    chosen = library.select("How many tickets per status?", "no-such-domain", 2, embedder, schema=schema)
    assert len(chosen) == 2 and all(c.example_id.startswith("library:gen-") for c in chosen)
    assert library.select("anything", "crm", 0, embedder) == []
    # Parsed once per process.
    assert load_library(default_data_dir()) is library.examples
