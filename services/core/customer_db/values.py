"""Database values made JSON-friendly, and the byte budget a result is fetched under.

A row limit does not bound memory (five rows of 150 MB values are five rows), so every engine fetches rows
through a ``ResultBudget``: values longer than ``max_value_bytes`` are cut with a note, and fetching stops once
the result holds ``max_result_bytes``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

#: Sample strings longer than this are cut (prompt space is precious; long text rarely helps the model).
SAMPLE_MAX_CHARS = 60
#: Result bytes shown in full below this size; larger values become a placeholder.
BYTES_INLINE_MAX = 32

_BINARY_TYPE = re.compile(r"blob|binary|bytea|image|geometry|point|polygon", re.I)


def json_value(value: Any) -> Any:
    """A JSON-friendly version of a database value."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return raw.hex() if len(raw) <= BYTES_INLINE_MAX else f"<{len(raw)} bytes>"
    if isinstance(value, (uuid.UUID, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


def sample(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None
    converted = json_value(value)
    if isinstance(converted, str) and len(converted) > SAMPLE_MAX_CHARS:
        return converted[: SAMPLE_MAX_CHARS - 1] + "…"
    return converted


def samples(values: Sequence[Any], limit: int) -> list[Any]:
    out: list[Any] = []
    for value in values:
        converted = sample(value)
        if converted is not None and converted not in out:
            out.append(converted)
        if len(out) >= limit:
            break
    return out


def is_binary(type_name: str) -> bool:
    return bool(_BINARY_TYPE.search(type_name))


_TEXT_TYPE = re.compile(r"char|text|clob|string|enum|citext|name|^$", re.I)
#: Rows read per column when collecting its distinct values, so registration stays fast on large tables.
VALUE_SCAN_ROWS = 200_000


def is_textual(type_name: str) -> bool:
    """Whether a column's declared type holds text (SQLite columns without a declared type may too)."""
    return bool(_TEXT_TYPE.search(type_name.strip())) and not is_binary(type_name)


def column_values_sql(
    column: str, table: str, *, text_cast: str, length: str, max_chars: int, limit: int
) -> str:
    """The most frequent distinct short text values of one column, at most ``limit`` + 1 (one more than kept
    tells whether the column has more), read from at most VALUE_SCAN_ROWS rows. Identifiers come quoted."""
    return (
        f"SELECT v FROM (SELECT {text_cast.format(column)} AS v FROM {table} WHERE {column} IS NOT NULL "
        f"LIMIT {VALUE_SCAN_ROWS}) s WHERE {length.format('v')} BETWEEN 1 AND {max_chars} "
        f"GROUP BY v ORDER BY COUNT(*) DESC, v LIMIT {limit + 1}"
    )


def oversized(size: int, limit: int) -> str:
    """What stands in a result for a value the database did not send because it was too large."""
    return f"<value of {size} bytes, over the {limit}-byte limit>"


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value) if len(value) < 256 else len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(_size(v) for v in value) + 8
    if isinstance(value, dict):
        return sum(_size(k) + _size(v) for k, v in value.items()) + 8
    return 8


@dataclass(frozen=True)
class QueryLimits:
    """What one statement may take: time, rows, bytes per value and bytes for the whole result."""

    timeout_s: float
    row_limit: int
    max_value_bytes: int = 1 << 20
    max_result_bytes: int = 8 << 20

    def __post_init__(self) -> None:
        if self.row_limit < 0:
            raise ValueError("row_limit must be >= 0")
        if self.max_value_bytes < 1 or self.max_result_bytes < 1:
            raise ValueError("byte limits must be positive")


@dataclass
class ResultBudget:
    """Collects fetched rows as JSON-friendly tuples until the row limit or the byte budget is reached."""

    limits: QueryLimits
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    truncated: bool = False
    notes: list[str] = field(default_factory=list)
    _bytes: int = 0

    def batch(self, columns: int, widest: int | None = None) -> int:
        """Rows to fetch at once so that one batch, however wide its values (``widest`` bytes each: the value
        limit unless the columns are known to be small), holds at most four times the byte budget: memory stays
        bounded while ordinary results still come in few round trips."""
        per_row = max(1, columns) * (widest or self.limits.max_value_bytes)
        return max(1, min(100, 4 * self.limits.max_result_bytes // per_row))

    def add(self, row: Sequence[Any]) -> bool:
        """Keep a row; False once nothing more should be fetched (this row may still have been kept)."""
        if len(self.rows) >= self.limits.row_limit:
            self.truncated = True
            return False
        converted = []
        for value in row:
            converted.append(self._value(value))
        size = sum(_size(v) for v in converted)
        if self.rows and self._bytes + size > self.limits.max_result_bytes:
            self._cut_by_bytes()
            return False
        self.rows.append(tuple(converted))
        self._bytes += size
        if self._bytes >= self.limits.max_result_bytes:
            self._cut_by_bytes()
            return False
        return True

    def mark_oversized(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def _cut_by_bytes(self) -> None:
        self.truncated = True
        self.mark_oversized(
            f"result cut at {len(self.rows)} rows: it reached the {self.limits.max_result_bytes}-byte limit"
        )

    def _value(self, value: Any) -> Any:
        converted = json_value(value)
        cap = self.limits.max_value_bytes
        if isinstance(converted, str) and len(converted) > cap // 4 and _size(converted) > cap:
            self.mark_oversized(f"values longer than {cap} bytes were cut")
            return converted[:cap] + "…"
        return converted
