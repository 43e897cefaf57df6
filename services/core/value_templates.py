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

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import sqlglot
from sqlglot import exp

from services.core.examples.masking import sql_values
from services.core.examples.paraphrases import Paraphrases, example_shape
from services.core.examples.parts import shape
from services.core.schema import SchemaInfo
from services.core.sql.dialects import glot_dialect
from services.core.values import ValueIndex, ValueMatch, column_literals, normalize
from services.core.words import has_number


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


def shape_adaptations(
    question: str,
    examples: Sequence[_Example],
    schema: SchemaInfo,
    index: ValueIndex,
    *,
    limit: int = 2,
    paraphrases: Paraphrases | None = None,
    entity_words: bool = False,
) -> list[ValueAdaptation]:
    """Examples that ask what ``question`` asks in other words (``parts.shape``: the same content words in the
    same order once function words, plural and -ing endings and the wording of a superlative are set aside:
    "which state has the highest population" for "what is the state with the largest population"; and, with
    ``paraphrases``, but for one wording the project's own examples use interchangeably), with the question's
    values in place of theirs; in the examples' order.

    With ``entity_words``, where no example matches so, the question's table words are read as what they
    name: a value next to a word naming its table is that table's thing, the word part of the value ("the
    population of new york city" asks "the population of <a city>"), and only examples comparing it with that
    table's name column fit; a table word after a column holding that table's things says nothing more ("the
    capital city of texas" asks "the capital of texas")."""
    mentioned = index.matches(question)
    out = _shape_matches(question, examples, schema, mentioned, limit, paraphrases)
    if out or not entity_words:
        return out
    read = index.entity_phrases(question)
    if [m.phrase for m in read] != [m.phrase for m in mentioned]:
        out = _shape_matches(question, examples, schema, read, limit, paraphrases, same_columns=True)
    shorter = index.without_appositions(question)
    if out or shorter == normalize(question):
        return out
    return _shape_matches(shorter, examples, schema, index.matches(shorter), limit, paraphrases)


def _shape_matches(
    question: str,
    examples: Sequence[_Example],
    schema: SchemaInfo,
    mentioned: Sequence[ValueMatch],
    limit: int,
    paraphrases: Paraphrases | None,
    *,
    same_columns: bool = False,
) -> list[ValueAdaptation]:
    ours = shape(question, [m.phrase for m in mentioned])
    same = (paraphrases or Paraphrases()).same_ask
    out: list[ValueAdaptation] = []
    for example in examples:
        if len(out) >= limit:
            break
        if not same(ours, example_shape(example.question, example.sql, schema.dialect)):
            continue
        sql = with_values(example.question, example.sql, schema, mentioned)
        if sql is None or sql in {a.sql for a in out}:
            continue
        if same_columns and not _compares_in_place(sql, schema, mentioned):
            continue  # the example's own value, but in another column ('new york' the state)
        out.append(ValueAdaptation(example_id=example.example_id, sql=sql, substitutions=()))
    return out


def _compares_in_place(sql: str, schema: SchemaInfo, mentioned: Sequence[ValueMatch]) -> bool:
    """Whether ``sql`` compares each mentioned value with one of the columns the match names."""
    try:
        tree = sqlglot.parse_one(sql, read=glot_dialect(schema.dialect))
    except Exception:  # SQL that does not parse fits nothing
        return False
    placed = {
        (normalize(literal.this), f"{t}.{c}".lower())
        for literal, columns in column_literals(tree, schema)
        for t, c in columns
    }
    return all(any((normalize(m.value), column.lower()) in placed for column in m.columns) for m in mentioned)


def with_values(
    example_question: str, example_sql: str, schema: SchemaInfo, mentioned: Sequence[ValueMatch]
) -> str | None:
    """``example_sql`` for a question naming ``mentioned``: as it is when those are its own values (or there
    are none), with them swapped in for its values of the same columns otherwise; None when they do not fit."""
    if not mentioned:
        return example_sql
    swapped = swap_values(example_question, example_sql, schema, mentioned)
    if swapped is not None:
        return swapped[0]
    own = {v.lower() for v in sql_values(example_sql, schema.dialect)}
    return example_sql if all(m.value.lower() in own for m in mentioned) else None


#: Words that carry no part of what is asked (superlatives and the like do, so they are not here).
_FUNCTION_WORDS = frozenset(
    """a an the of in on at to for by with from and or is are was were be been do does did what which who whom
    where when how me give show list tell find that this these those there it its as all each any some please
    i we you can could would""".split()
)


def _content(text: str, values: list[str]) -> Counter[str]:
    value_words = {w for v in values for w in normalize(v).split()}
    return Counter(w for w in normalize(text).split() if w not in value_words and w not in _FUNCTION_WORDS)


def _same_ask(question: str, example: str, question_values: list[str], example_values: list[str]) -> bool:
    """Whether the two questions differ, values aside, by at most one content word put for another
    ("neighbor" for "border", "reside" for "live"). A word more ("cities in states that border X" against
    "states that border X"), a word less ("cities in X" against "major cities in X") or several asks something
    else; so does a word said twice where the other says it once ("states that border states that border X"
    against "states that border X")."""
    mine, theirs = _content(question, question_values), _content(example, example_values)
    if has_number((mine - theirs) + (theirs - mine)):
        # A number is a value, never another wording: "the porto store in 2023" is not "... in 2025" (a year
        # the SQL may hold in a pattern, '2023-%', that no value swap reaches).
        return False
    return (mine - theirs).total() == (theirs - mine).total() <= 1


def _adapt(
    question: str, example: _Example, schema: SchemaInfo, mentioned: list[ValueMatch]
) -> ValueAdaptation | None:
    swapped = swap_values(example.question, example.sql, schema, mentioned)
    if swapped is None:
        return None
    sql, replacements = swapped
    if not _same_ask(question, example.question, [m.phrase for m in mentioned], [v for v, _ in replacements]):
        return None
    return ValueAdaptation(example_id=example.example_id, sql=sql, substitutions=replacements)


def swap_values(
    example_question: str, example_sql: str, schema: SchemaInfo, mentioned: Sequence[ValueMatch]
) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """``example_sql`` with each literal its question named replaced by the ``mentioned`` value found in the
    same column, and the (old, new) pairs; None when a literal has no such value, a mentioned value has no
    place, or nothing changes. Whether the two questions ask the same thing is the caller's to judge."""
    try:
        tree = sqlglot.parse_one(example_sql, read=glot_dialect(schema.dialect))
    except Exception:  # an example that no longer parses adapts to nothing
        return None
    asked = set(normalize(example_question).split())
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
    copy = tree.copy()
    for literal, _ in column_literals(copy, schema):
        if literal.this in replacements:
            literal.replace(exp.Literal.string(replacements[literal.this]))
    return copy.sql(dialect=glot_dialect(schema.dialect), comments=False), tuple(replacements.items())


__all__ = ["ValueAdaptation", "shape_adaptations", "swap_values", "value_adaptations", "with_values"]
