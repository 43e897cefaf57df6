"""A verified example adapted through the project's values: the example's SQL with each of its literal values
replaced by the value the question names *for the same column*.

The strict template match (``services.core.template_match``) wants the two questions word for word alike
but for the values; people rephrase ("what states neighbor maine" after "what states border kansas",
"population of tempe arizona" after "how many people live in austin texas"). Here the link is the database
itself: every literal of the example that its own question named is compared with a column; the new question
must name, for each of them, a value that the value index finds in that very column (and no literal may be
left without one); and the example must be one retrieval found very similar once values are masked. The
caller checks and runs the adapted SQL and answers from it only when the result holds something.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import sqlglot
from sqlglot import exp

from services.core.schema import SchemaInfo
from services.core.sql.dialects import glot_dialect
from services.core.values import ValueIndex, ValueMatch, column_literals, normalize


@dataclass(frozen=True)
class ValueAdaptation:
    example_id: str
    sql: str
    substitutions: tuple[tuple[str, str], ...]


class _Example(Protocol):
    example_id: str
    question: str
    sql: str
    score: float


def value_adaptations(
    question: str,
    examples: Sequence[_Example],
    schema: SchemaInfo,
    index: ValueIndex,
    *,
    min_score: float,
    limit: int = 2,
) -> list[ValueAdaptation]:
    """Adaptations of the most similar examples (retrieval score at least ``min_score``), best first."""
    mentioned = index.matches(question)
    if not mentioned:
        return []
    out: list[ValueAdaptation] = []
    for example in sorted(examples, key=lambda e: -e.score):
        if example.score < min_score or len(out) >= limit:
            continue
        adapted = _adapt(question, example, schema, mentioned)
        if adapted is not None and adapted.sql not in {a.sql for a in out}:
            out.append(adapted)
    return out


#: Words that carry no part of what is asked (superlatives and the like do, so they are not here).
_FUNCTION_WORDS = frozenset(
    """a an the of in on at to for by with from and or is are was were be been do does did what which who whom
    where when how me give show list tell find that this these those there it its as all each any some please
    i we you can could would""".split()
)


def _content(text: str, values: list[str]) -> set[str]:
    value_words = {w for v in values for w in normalize(v).split()}
    return {w for w in normalize(text).split() if w not in value_words and w not in _FUNCTION_WORDS}


def _same_ask(question: str, example: str, question_values: list[str], example_values: list[str]) -> bool:
    """Whether the two questions differ, values aside, by at most one content word put for another
    ("neighbor" for "border", "reside" for "live"). A word more ("cities in states that border X" against
    "states that border X"), a word less ("cities in X" against "major cities in X") or several asks something
    else."""
    mine, theirs = _content(question, question_values), _content(example, example_values)
    return len(mine - theirs) == len(theirs - mine) <= 1


def _adapt(
    question: str, example: _Example, schema: SchemaInfo, mentioned: list[ValueMatch]
) -> ValueAdaptation | None:
    try:
        tree = sqlglot.parse_one(example.sql, read=glot_dialect(schema.dialect))
    except Exception:  # an example that no longer parses adapts to nothing
        return None
    asked = set(normalize(example.question).split())
    replacements: dict[str, str] = {}
    used: set[int] = set()
    for literal, columns in column_literals(tree, schema):
        value = literal.this
        words = normalize(value).split()
        if not words or not set(words) <= asked:
            continue  # a value the example's question did not name (a fixed filter): it stays
        if value in replacements:
            continue
        holders = {f"{t}.{c}".lower() for t, c in columns}
        choice = next(
            (
                i
                for i, m in enumerate(mentioned)
                if i not in used and holders & {c.lower() for c in m.columns}
            ),
            None,
        )
        if choice is None:
            return None  # the question names no value for this column: it asks something else
        used.add(choice)
        replacements[value] = mentioned[choice].value
    if not replacements or used != set(range(len(mentioned))) or all(k == v for k, v in replacements.items()):
        return None  # nothing swapped, or the question names values the example has no place for
    if not _same_ask(question, example.question, [m.phrase for m in mentioned], list(replacements)):
        return None
    copy = tree.copy()
    for literal, _ in column_literals(copy, schema):
        if literal.this in replacements:
            literal.replace(exp.Literal.string(replacements[literal.this]))
    return ValueAdaptation(
        example_id=example.example_id,
        sql=copy.sql(dialect=glot_dialect(schema.dialect), comments=False),
        substitutions=tuple(replacements.items()),
    )


__all__ = ["ValueAdaptation", "value_adaptations"]
