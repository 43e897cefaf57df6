"""Execution match: do two queries return the same result? Used by adapter evaluation and the benchmark.

Rows are compared as a multiset (order only matters when the gold query orders its output), with values
normalised so that the same answer from different engines or casts compares equal: ``3`` == ``3.0``,
floats rounded, ``Decimal`` treated as a number, bytes and dates compared by their text.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import sqlglot

FLOAT_DIGITS = 6


def _norm_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float | Decimal):
        number = float(value)
        if math.isnan(number):
            return "nan"
        if math.isinf(number):
            return "inf" if number > 0 else "-inf"
        rounded = round(number, FLOAT_DIGITS)
        # An integral float equals the int: SUM over integers is 6 in one engine and 6.0 in another.
        if rounded.is_integer():
            return int(rounded)
        return rounded
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return str(value) if not isinstance(value, str) else value


def normalise_row(row: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(_norm_value(v) for v in row)


def _rows(rows: Sequence[Any]) -> list[tuple[Any, ...]]:
    out = []
    for row in rows:
        if isinstance(row, dict):
            out.append(normalise_row(row.values()))
        elif isinstance(row, list | tuple):
            out.append(normalise_row(row))
        else:  # asyncpg Record, sqlite3.Row and other sequence-likes
            out.append(normalise_row(tuple(row)))
    return out


def results_match(gold_rows: Sequence[Any], pred_rows: Sequence[Any], ordered: bool) -> bool:
    """True when both results hold the same rows (as a multiset; in the same order when ``ordered``).

    Column names are ignored (aliases differ freely); column order is not, as in the usual execution-accuracy
    metric.
    """
    gold, pred = _rows(gold_rows), _rows(pred_rows)
    if len(gold) != len(pred):
        return False
    if ordered:
        return gold == pred
    return Counter(gold) == Counter(pred)


def gold_is_ordered(sql: str, dialect: str | None = None) -> bool:
    """Whether the outermost query has an ORDER BY, i.e. whether row order is part of the answer."""
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return _textual_order_by(sql)
    if tree is None:
        return False
    # A top-level set operation (UNION ...) carries its own ORDER BY; a CTE's body does not count.
    return tree.args.get("order") is not None


def _textual_order_by(sql: str) -> bool:
    """Fallback for SQL sqlglot cannot parse: an ORDER BY at parenthesis depth zero."""
    depth = 0
    upper = sql.upper()
    for i, ch in enumerate(upper):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and upper.startswith("ORDER", i) and upper[i + 5 : i + 6].isspace():
            rest = upper[i + 5 :].lstrip()
            if rest.startswith("BY"):
                return True
    return False
