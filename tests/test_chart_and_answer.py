"""Chart suggestions and answer texts derived from result shapes, and PNG rendering."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import pytest

from events import ChartSpec, ChartType
from services.generation.answer_text import format_value, summarize
from services.generation.chart import column_kind, render_chart_png, suggest_chart

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

CHART_CASES: list[tuple[str, list[str], list[list[Any]], ChartType, str | None, list[str], str | None]] = [
    # question, columns, rows, type, x, y, series
    ("How many orders?", ["count"], [[42]], ChartType.number, None, ["count"], None),
    ("Average order value?", ["avg"], [[decimal.Decimal("12.50")]], ChartType.number, None, ["avg"], None),
    ("Who is the top customer?", ["name"], [["Alice"]], ChartType.table, None, [], None),
    (
        "Revenue per month",
        ["month", "revenue"],
        [["2023-01", 10.0], ["2023-02", 12.0], ["2023-03", 9.5]],
        ChartType.line,
        "month",
        ["revenue"],
        None,
    ),
    (
        "Orders per day",
        ["day", "orders"],
        [[dt.date(2024, 1, 1), 3], [dt.date(2024, 1, 2), 5]],
        ChartType.line,
        "day",
        ["orders"],
        None,
    ),
    (
        "Sales by year",
        ["year", "sales"],
        [[2021, 5], [2022, 7], [2023, 9]],
        ChartType.line,
        "year",
        ["sales"],
        None,
    ),
    (
        "Sales by month name",
        ["m", "sales"],
        [["Jan", 1], ["Feb", 2], ["Mar", 3]],
        ChartType.line,
        "m",
        ["sales"],
        None,
    ),
    (
        "Revenue per year and region",
        ["year", "region", "revenue"],
        [[2022, "EU", 1], [2022, "US", 2], [2023, "EU", 3], [2023, "US", 4]],
        ChartType.line,
        "year",
        ["revenue"],
        "region",
    ),
    (
        "What share of orders does each status have?",
        ["status", "n"],
        [["paid", 70], ["returned", 10], ["open", 20]],
        ChartType.pie,
        "status",
        ["n"],
        None,
    ),
    (
        "Distribution of customers by tier",
        ["tier", "customers"],
        [["gold", 5], ["silver", 9]],
        ChartType.pie,
        "tier",
        ["customers"],
        None,
    ),
    (
        "Orders per status",
        ["status", "n"],
        [["paid", 70], ["returned", 10], ["open", 20]],
        ChartType.bar,
        "status",
        ["n"],
        None,
    ),
    (
        "Percentage of sales per city",  # share wording, but too many slices for a pie
        ["city", "pct"],
        [[f"city{i}", i] for i in range(12)],
        ChartType.bar,
        "city",
        ["pct"],
        None,
    ),
    (
        "Sales and returns per store",
        ["store", "sales", "returns"],
        [["A", 10, 1], ["B", 8, 2]],
        ChartType.bar,
        "store",
        ["sales", "returns"],
        None,
    ),
    (
        "Orders per status and tier",
        ["status", "tier", "n"],
        [["paid", "gold", 3], ["paid", "silver", 4], ["open", "gold", 1]],
        ChartType.bar,
        "status",
        ["n"],
        "tier",
    ),
    (
        "Orders per customer",
        ["customer_id", "n"],
        [[1, 3], [2, 5]],
        ChartType.bar,
        "customer_id",
        ["n"],
        None,
    ),
    ("List customers", ["name", "email"], [["A", "a@x"], ["B", "b@x"]], ChartType.table, None, [], None),
    ("Prices", ["price"], [[1.5], [2.5], [3.0]], ChartType.table, None, [], None),
    ("Nothing", ["n"], [], ChartType.table, None, [], None),
]


@pytest.mark.parametrize(("question", "columns", "rows", "kind", "x", "y", "series"), CHART_CASES)
def test_chart_choice(
    question: str,
    columns: list[str],
    rows: list[list[Any]],
    kind: ChartType,
    x: str | None,
    y: list[str],
    series: str | None,
) -> None:
    spec = suggest_chart(question, columns, rows)
    assert (spec.type, spec.x, spec.y, spec.series) == (kind, x, y, series)
    assert spec.title == question


def test_column_kinds() -> None:
    assert column_kind("order_date", ["2024-01-05", "2024-02-01T10:00:00"]) == "time"
    assert column_kind("quarter", ["2024-Q1", "2024-Q2"]) == "time"
    assert column_kind("month", [1, 2, 12]) == "time"
    assert column_kind("amount", [1, 2, 12]) == "number"
    assert column_kind("money", [1.5, None]) == "number"
    assert column_kind("flag", [True, False]) == "category"
    assert column_kind("empty", [None, None]) == "other"


SUMMARY_CASES: list[tuple[list[str], list[list[Any]], int, bool, str]] = [
    (["count"], [[42]], 1, False, "The answer is 42."),
    (["total"], [[1234567.891]], 1, False, "The answer is 1,234,567.89."),
    (["avg"], [[decimal.Decimal("12.50")]], 1, False, "The answer is 12.5."),
    (["n"], [[None]], 1, False, "The answer is empty (NULL)."),
    (["name", "total"], [["Alice", 30]], 1, False, "One row matched: name: Alice, total: 30."),
    (["name"], [["Alice"], ["Bob"]], 2, False, "2 rows: Alice; Bob."),
    (["status", "n"], [["paid", 70], ["open", 20]], 2, False, "2 rows: paid (70); open (20)."),
    (
        ["store", "sales", "returns"],
        [["A", 10, 1], ["B", 8, 2]],
        2,
        False,
        "2 rows: A (sales: 10, returns: 1); B (sales: 8, returns: 2).",
    ),
    ([], [], 0, False, "No rows matched."),
    (["n"], [[i] for i in range(40)], 40, False, "40 rows; first: 0; 1; 2."),
    (
        ["n"],
        [[i] for i in range(1000)],
        1000,
        True,
        "At least 1,000 rows (the row limit cut the result); first: 0; 1; 2.",
    ),
]


@pytest.mark.parametrize(("columns", "rows", "row_count", "truncated", "expected"), SUMMARY_CASES)
def test_summaries(
    columns: list[str], rows: list[list[Any]], row_count: int, truncated: bool, expected: str
) -> None:
    assert summarize("q?", columns, rows, row_count, truncated) == expected


def test_long_values_are_shortened() -> None:
    text = format_value("x" * 500)
    assert len(text) <= 60 and text.endswith("…")
    assert format_value(dt.date(2024, 3, 1)) == "2024-03-01"
    assert format_value(0.123456) == "0.1235"


@pytest.mark.parametrize(
    ("question", "columns", "rows"),
    [
        ("How many orders?", ["count"], [[42]]),
        ("Revenue per month", ["month", "revenue"], [["2023-01", 10.0], ["2023-02", 12.0]]),
        ("Orders per status and tier", ["status", "tier", "n"], [["paid", "gold", 3], ["open", "silver", 1]]),
        ("What share of orders per status?", ["status", "n"], [["paid", 7], ["open", 3]]),
        ("List customers", ["name", "email"], [["A", "a@x"], ["B", "b@x"]]),
        ("Nothing", ["n"], []),
    ],
)
def test_render_chart_png_writes_a_png(
    question: str, columns: list[str], rows: list[list[Any]], tmp_path: Path
) -> None:
    spec = suggest_chart(question, columns, rows)
    path = render_chart_png(spec, columns, rows, tmp_path / "sub" / "chart.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    # IHDR: width and height as the figure size times dpi.
    assert int.from_bytes(data[16:20], "big") == 700 and int.from_bytes(data[20:24], "big") == 420


def test_render_handles_an_explicit_spec(tmp_path: Path) -> None:
    spec = ChartSpec(type=ChartType.bar, x="s", y=["a", "b"], series=None, title=None)
    path = render_chart_png(spec, ["s", "a", "b"], [["x", 1, None], ["y", 2, 3]], tmp_path / "c.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
