"""A short natural-language answer read off the result, without a model: it cannot hallucinate, and it says
plainly when nothing matched or when the row limit cut the result."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any

_MAX_LISTED = 5
_MAX_VALUE_CHARS = 60


def format_value(value: Any) -> str:
    if value is None:
        return "empty (NULL)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, decimal.Decimal):
        value = int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return format_value(int(value))
        digits = 2 if abs(value) >= 1 else 4
        text = f"{value:,.{digits}f}" if abs(value) >= 10_000 else f"{value:.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    text = " ".join(str(value).split())
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 1] + "…"


def _row_text(columns: list[str], row: list[Any]) -> str:
    if len(row) == 1:
        return format_value(row[0])
    if len(row) == 2:
        return f"{format_value(row[0])} ({format_value(row[1])})"
    rest = ", ".join(f"{c}: {format_value(v)}" for c, v in zip(columns[1:], row[1:], strict=False))
    return f"{format_value(row[0])} ({rest})"


def summarize(
    question: str, columns: list[str], rows: list[list[Any]], row_count: int, truncated: bool
) -> str:
    """One or two sentences describing the result of the query that answered ``question``."""
    if row_count == 0 or not rows:
        return "No rows matched."
    count_text = f"at least {row_count:,}" if truncated else f"{row_count:,}"
    if row_count == 1 and len(rows[0]) == 1:
        return f"The answer is {format_value(rows[0][0])}."
    if row_count == 1:
        pairs = ", ".join(f"{c}: {format_value(v)}" for c, v in zip(columns, rows[0], strict=False))
        return f"One row matched: {pairs}."
    if row_count <= _MAX_LISTED and not truncated:
        listed = "; ".join(_row_text(columns, r) for r in rows[:_MAX_LISTED])
        return f"{row_count} rows: {listed}."
    first = "; ".join(_row_text(columns, r) for r in rows[:3])
    note = " (the row limit cut the result)" if truncated else ""
    return f"{count_text.capitalize()} rows{note}; first: {first}."


__all__ = ["format_value", "summarize"]
