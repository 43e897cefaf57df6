"""More training examples from what a project already has: value variants of its verified examples.

A verified example names values ("customers in Boston") that its SQL compares with a column
(``city = 'Boston'``). The column's other values, collected at registration (``column_values``), give the same
question about another value: "customers in Denver" with ``city = 'Denver'``. One value is varied at a time,
and only where the question names it word for word, so the rewritten question says exactly what the SQL
does. The caller runs each variant through the guarded path and keeps it only when it returns rows: a
variant whose result is empty teaches the model nothing about the project and may be a combination that
makes no sense ("orders of Denver shipped from Boston").

Variants are made from the training split only: the held-out examples the gate evaluates on, and anything
derived from them, never reach the adapter.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from services.core.schema import SchemaInfo
from services.core.sql.dialects import glot_dialect
from services.core.values import ValueIndex, column_literals, normalize


@dataclass(frozen=True)
class ValueVariant:
    """A verified example's question and SQL with one named value put for another of the same column."""

    source_question: str
    question: str
    sql: str
    column: str  # "table.column" whose value was varied
    value: str  # the value put in


def _named_at(question: str, value: str) -> tuple[int, int] | None:
    """Where the question names ``value`` as whole words, case aside (None: it does not, or twice)."""
    words = normalize(value).split()
    if not words:
        return None
    pattern = re.compile(
        r"(?<![\w])" + r"[\W_]+".join(re.escape(w) for w in words) + r"(?![\w])", re.IGNORECASE
    )
    found = list(pattern.finditer(question))
    if len(found) != 1:
        return None  # named twice (or not at all): which mention the SQL means is not clear
    return found[0].start(), found[0].end()


def value_variants(
    question: str,
    sql: str,
    schema: SchemaInfo,
    index: ValueIndex,
    *,
    per_example: int,
    rng: random.Random,
) -> list[ValueVariant]:
    """Up to ``per_example`` variants of one example, spread over the values it names (deterministic for
    a seeded ``rng``); literals its question does not name are fixed filters and stay."""
    try:
        tree = sqlglot.parse_one(sql, read=glot_dialect(schema.dialect))
    except Exception:  # an example that no longer parses has no variants
        return []
    options: list[tuple[int, str, str]] = []  # (literal position, column, other value)
    literals = column_literals(tree, schema)
    taken = {literal.this for literal, _ in literals}
    for position, (literal, columns) in enumerate(literals):
        if _named_at(question, literal.this) is None:
            continue
        for table, column in columns:
            held = index.column(table, column)
            if held is None or len(held.values) < 2:
                continue
            others = [
                v
                for v in held.values
                if v not in taken
                and normalize(v)
                and not normalize(v).isdigit()
                and _named_at(question, v) is None
            ]
            options += [(position, f"{held.table}.{held.column}", v) for v in others]
            break  # one column per literal: the one the comparison names first
    rng.shuffle(options)
    out: list[ValueVariant] = []
    seen: set[str] = set()
    for position, column, other in options:
        if len(out) >= per_example:
            break
        original = literals[position][0].this
        span = _named_at(question, original)
        assert span is not None
        new_question = question[: span[0]] + other + question[span[1] :]
        if new_question.lower() in seen:
            continue
        copy = tree.copy()
        target = column_literals(copy, schema)[position][0]
        target.replace(exp.Literal.string(other))
        new_sql = copy.sql(dialect=glot_dialect(schema.dialect), comments=False)
        seen.add(new_question.lower())
        out.append(ValueVariant(question, new_question, new_sql, column, other))
    return out


def spread(variants: Sequence[ValueVariant], limit: int) -> list[ValueVariant]:
    """At most ``limit`` variants, taken round-robin over their source examples so that no example's
    pattern crowds out the others."""
    by_source: dict[str, list[ValueVariant]] = {}
    for v in variants:
        by_source.setdefault(v.source_question, []).append(v)
    out: list[ValueVariant] = []
    queues = list(by_source.values())
    while len(out) < limit and any(queues):
        for queue in queues:
            if queue and len(out) < limit:
                out.append(queue.pop(0))
    return out


__all__ = ["ValueVariant", "spread", "value_variants"]
