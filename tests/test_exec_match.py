"""Execution match: the comparison evaluation and the accuracy benchmark rely on."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from services.core.exec_match import gold_is_ordered, results_match

MATCH_CASES: list[tuple[list[Any], list[Any], bool, bool, str]] = [
    # (gold, predicted, ordered, expected, why)
    ([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], False, True, "row order ignored when unordered"),
    ([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], True, False, "row order matters when ordered"),
    ([(1, "a"), (2, "b")], [(1, "a"), (2, "b")], True, True, "same order"),
    ([(1,), (1,), (2,)], [(1,), (2,), (2,)], False, False, "multiset, not set: duplicates count"),
    ([(1,), (1,)], [(1,)], False, False, "different row counts"),
    ([(6,)], [(6.0,)], False, True, "int equals integral float"),
    ([(2.5,)], [(Decimal("2.5"),)], False, True, "Decimal equals float"),
    ([(1 / 3,)], [(0.3333333333,)], False, True, "floats rounded"),
    ([(0.5,)], [(0.51,)], False, False, "different floats differ"),
    ([(None, 1)], [(None, 1)], False, True, "None equals None"),
    ([(None,)], [(0,)], False, False, "None is not zero"),
    ([("1",)], [(1,)], False, False, "text is not a number"),
    ([(1, 2)], [(2, 1)], False, False, "column order matters"),
    ([], [], True, True, "both empty"),
    ([{"n": 3}], [[3]], False, True, "dict rows compare by values"),
    ([(True,)], [(1,)], False, True, "bool as int (SQLite has no booleans)"),
    ([(dt.date(2024, 1, 2),)], [("2024-01-02",)], False, True, "date equals its ISO text"),
]


@pytest.mark.parametrize(
    ("gold", "pred", "ordered", "expected", "why"), MATCH_CASES, ids=[c[4] for c in MATCH_CASES]
)
def test_results_match(gold: list, pred: list, ordered: bool, expected: bool, why: str) -> None:
    assert results_match(gold, pred, ordered) is expected, why


def test_results_match_is_symmetric_on_all_cases() -> None:
    for gold, pred, ordered, expected, why in MATCH_CASES:
        assert results_match(pred, gold, ordered) is expected, why


ORDER_CASES = [
    ("SELECT a FROM t ORDER BY a", True),
    ("select a from t order by a desc limit 3", True),
    ("SELECT a FROM t", False),
    ("SELECT * FROM (SELECT a FROM t ORDER BY a) x", False),
    ("WITH c AS (SELECT a FROM t ORDER BY a) SELECT * FROM c", False),
    ("WITH c AS (SELECT a FROM t) SELECT * FROM c ORDER BY a", True),
    ("SELECT a FROM t UNION SELECT b FROM u ORDER BY 1", True),
    ("SELECT a, ROW_NUMBER() OVER (ORDER BY a) FROM t", False),
    ("SELECT a FROM t WHERE b IN (SELECT b FROM u ORDER BY b)", False),
]


@pytest.mark.parametrize(("sql", "expected"), ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_gold_is_ordered(sql: str, expected: bool) -> None:
    assert gold_is_ordered(sql) is expected
