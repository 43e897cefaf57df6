"""Composed answers: a question of a new shape answered by nesting one verified example inside another.

"What is the area of the state with the smallest population density" has no verified example, but the
project may have verified both "what state has the smallest population density" (the *inner* example: it
returns a state) and "what is the area of texas" (the *outer* one: it filters on a state). The outer query
with its state filter ``= 'texas'`` turned into ``IN (<the inner query>)`` asks exactly the new question.
Small models rarely write that nesting themselves, even with both examples in the prompt.

The match is strict, because a composed answer is given without the model:

* the inner phrase must say what the inner example's question says, word for word once function words are
  dropped and words are reduced to their stems, values aside ("the state with the largest population" and
  "what state has the largest population" agree; "... largest area" does not);
* values the inner phrase names take the place of the example's values in the same columns (value index);
* the outer question, with a value of the column the inner query returns standing in for the phrase, must be
  the outer example's question with other values (``template_match``) or name values for the same columns
  and ask the same thing (``value_templates``);
* the stand-in value must sit in plain ``column = value`` comparisons of the outer query.

The caller checks and runs the composed SQL and answers from it only when the result holds something.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from services.core.examples.masking import sql_values
from services.core.examples.parts import Split, returned_column, shape, splits, stand_in_value
from services.core.schema import SchemaInfo
from services.core.sql.dialects import glot_dialect
from services.core.template_match import adapt
from services.core.value_templates import shape_adaptations, with_values
from services.core.values import ValueIndex, column_literals


class ExampleLike(Protocol):
    example_id: str
    question: str
    sql: str
    score: float


@dataclass(frozen=True)
class Composition:
    """The outer example's query with the inner example's query in place of one of its values."""

    sql: str
    inner_id: str
    outer_id: str
    phrase: str
    #: The outer question asks for one thing ("what is *the highest* point in ..."): a result of several
    #: distinct rows means the nesting answers something else (the highest point of each state).
    single: bool = False


def _inner_sql(phrase: str, example: ExampleLike, schema: SchemaInfo, index: ValueIndex) -> str | None:
    """The inner example's query for ``phrase`` (the phrase's values in place of the example's), or None when
    the phrase asks something else."""
    mentioned = index.matches(phrase)
    if shape(phrase, [m.phrase for m in mentioned]) != shape(
        example.question, sql_values(example.sql, schema.dialect)
    ):
        return None
    return with_values(example.question, example.sql, schema, mentioned)


def _outer_sqls(
    question: str, examples: Sequence[ExampleLike], schema: SchemaInfo, index: ValueIndex
) -> Iterable[tuple[str, str]]:
    """(example id, query) of the examples that are ``question`` with other values: word for word
    (``template_match``), or asking the same thing (``value_templates.shape_adaptations``)."""
    for example in examples:
        adapted = adapt(
            question, example.question, example.sql, schema.dialect, example_id=example.example_id
        )
        if adapted is not None:
            yield example.example_id, adapted.sql
    for reworded in shape_adaptations(question, examples, schema, index, limit=len(examples)):
        yield reworded.example_id, reworded.sql


def nest(outer_sql: str, value: str, inner_sql: str, dialect: str) -> str | None:
    """``outer_sql`` with every ``column = 'value'`` turned into ``column IN (inner_sql)``; None when the value
    is not there, or appears anywhere but in such a comparison."""
    read = glot_dialect(dialect)
    try:
        outer = sqlglot.parse_one(outer_sql, read=read)
        inner = sqlglot.parse_one(inner_sql, read=read)
    except SqlglotError:
        return None
    if outer is None or not isinstance(inner, exp.Select):
        return None
    literals = [
        node
        for node in outer.find_all(exp.Literal)
        if node.is_string and node.this.strip().lower() == value.strip().lower()
    ]
    if not literals:
        return None
    if dialect == "mysql" and inner.args.get("limit") is not None:
        # MySQL and MariaDB refuse LIMIT in an IN subquery ("the product with the most orders" ends in one)
        # but take it in a derived table inside it.
        inner = exp.select("*").from_(
            exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier("nested")))
        )
    for literal in literals:
        comparison = literal.parent
        if not isinstance(comparison, exp.EQ):
            return None
        column = comparison.left if comparison.right is literal else comparison.right
        if not isinstance(column, exp.Column):
            return None
        comparison.replace(exp.In(this=column.copy(), query=exp.Subquery(this=inner.copy())))
    return outer.sql(dialect=read, comments=False)


#: Share of the smaller column's indexed values the other must hold for two columns to hold the same things.
_SAME_KIND_OVERLAP = 0.5


def _same_kind(
    returned: tuple[str, str],
    grouped: bool,
    outer_sql: str,
    value: str,
    schema: SchemaInfo,
    index: ValueIndex,
) -> bool:
    """Whether the column the inner query returns holds the same kind of thing as every column the outer
    query compares the stand-in value with: the same column, or two whose indexed values mostly agree (state
    names in two tables, not river names and state names that share a few words)."""
    try:
        tree = sqlglot.parse_one(outer_sql, read=glot_dialect(schema.dialect))
    except SqlglotError:
        return False
    compared = [
        cols for literal, cols in column_literals(tree, schema) if literal.this.lower() == value.lower()
    ]
    if not compared or any(not cols for cols in compared):
        return False
    ours = index.column(*returned)
    for table, column in (pair for cols in compared for pair in cols):
        if (table.lower(), column.lower()) == (returned[0].lower(), returned[1].lower()):
            if not grouped and not _is_key(table, column, schema, index):
                # "the populations of the major cities of texas": the inner query picks rows of the very table
                # the outer one filters, and matching them back by a name that other rows share (a city name
                # found in several states) brings those other rows in too.
                return False
            continue
        theirs = index.column(table, column)
        if ours is None or theirs is None:
            return False
        shared = len({v.lower() for v in ours.values} & {v.lower() for v in theirs.values})
        if shared < _SAME_KIND_OVERLAP * min(len(ours.values), len(theirs.values)):
            return False
    return True


#: How ``parts.shape`` writes a value.
_PLACE = shape("x", ["x"])[0]
_SUPERLATIVE = re.compile(r"\b(?:\w{2,}est|most|least|best|worst|first|last)\b", re.IGNORECASE)


def _names_a_value(phrase: str, index: ValueIndex) -> bool:
    """Whether ``phrase`` only names a value ("the missouri river": a value of river.river_name and the word
    its column is named by): a value to compare with, not a question of its own to answer with a query.
    "the customers in lisbon" is a question of its own (lisbon is a city; customers are what is asked for)."""
    mentioned = index.matches(phrase)
    phrase_shape = shape(phrase, [m.phrase for m in mentioned])
    words = [w for w in phrase_shape if w != _PLACE]
    if len(phrase_shape) > 2 or len(words) != 1:
        return False
    column_words = {
        w
        for m in mentioned
        for held in m.columns
        for w in shape(held.rpartition(".")[2].replace("_", " "), [])
    }
    return words[0] in column_words


def _asks_for_one(text: str) -> bool:
    """Whether ``text`` holds a superlative ("highest", "most"): what it asks for is one thing."""
    return _SUPERLATIVE.search(text) is not None


def _groups_by_returned(sql: str, dialect: str) -> bool:
    try:
        tree = sqlglot.parse_one(sql, read=glot_dialect(dialect))
    except SqlglotError:
        return False
    if not isinstance(tree, exp.Select) or not tree.args.get("group") or len(tree.expressions) != 1:
        return False
    selected = tree.expressions[0].unalias()
    return any(g == selected for g in tree.args["group"].expressions)


def _is_key(table: str, column: str, schema: SchemaInfo, index: ValueIndex) -> bool:
    """Whether no two rows of ``table`` share a value of ``column``: a primary key, or a column whose distinct
    values, all indexed, are as many as the table's rows."""
    known = schema.table(table)
    if known is None:
        return False
    described = known.column(column)
    if described is not None and described.primary_key:
        return True
    values = index.column(table, column)
    return values is not None and values.complete and len(values.values) == known.row_count


def compositions(
    question: str,
    examples: Sequence[ExampleLike],
    schema: SchemaInfo,
    index: ValueIndex,
    *,
    limit: int = 2,
) -> list[Composition]:
    """Up to ``limit`` distinct composed queries for ``question`` from ``examples``, longest inner phrase
    first."""
    found: list[Composition] = []
    for cut in splits(question):
        if _names_a_value(cut.phrase, index):
            continue
        for inner in examples:
            inner_sql = _inner_sql(cut.phrase, inner, schema, index)
            if inner_sql is None:
                continue
            composed = _compose(cut, inner, inner_sql, examples, schema, index)
            if composed is not None and all(c.sql != composed.sql for c in found):
                found.append(composed)
                if len(found) == limit:
                    return found
    return found


def _compose(
    cut: Split,
    inner: ExampleLike,
    inner_sql: str,
    examples: Sequence[ExampleLike],
    schema: SchemaInfo,
    index: ValueIndex,
) -> Composition | None:
    value = stand_in_value(inner_sql, schema, avoid=cut.prefix)
    if value is None:
        return None
    others = [e for e in examples if e.example_id != inner.example_id]
    returned = returned_column(inner_sql, schema.dialect)
    grouped = _groups_by_returned(inner_sql, schema.dialect)
    for outer_id, outer_sql in _outer_sqls(cut.outer(value), others, schema, index):
        if returned is None or not _same_kind(returned, grouped, outer_sql, value, schema, index):
            continue
        sql = nest(outer_sql, value, inner_sql, schema.dialect)
        if sql is not None:
            return Composition(
                sql=sql,
                inner_id=inner.example_id,
                outer_id=outer_id,
                phrase=cut.phrase,
                single=_asks_for_one(cut.prefix),
            )
    return None


@dataclass(frozen=True)
class OpenComposition:
    """An outer example that fits around a phrase no example answers: the phrase's query is still to be
    written (by the model, for the phrase alone), then nested in place of ``value``."""

    cut: Split
    outer_id: str
    outer_sql: str
    value: str

    @property
    def single(self) -> bool:
        return _asks_for_one(self.cut.prefix)

    def close(self, inner_sql: str, schema: SchemaInfo, index: ValueIndex) -> str | None:
        """The outer query with ``inner_sql`` nested, or None when the inner query does not return the kind
        of thing the outer one compares (``compositions``' rules)."""
        returned = returned_column(inner_sql, schema.dialect)
        if returned is None or not _same_kind(
            returned,
            _groups_by_returned(inner_sql, schema.dialect),
            self.outer_sql,
            self.value,
            schema,
            index,
        ):
            return None
        return nest(self.outer_sql, self.value, inner_sql, schema.dialect)


def open_compositions(
    question: str, examples: Sequence[ExampleLike], schema: SchemaInfo, index: ValueIndex, *, limit: int = 1
) -> list[OpenComposition]:
    """Cuts of ``question`` whose outer question, with one value in the inner phrase's place, is an example's
    question (the same shape, its one named value where the phrase stands), longest phrase first. Only
    outer questions that name no value of their own: the example's one value is the phrase's place."""
    found: list[OpenComposition] = []
    for cut in splits(question):
        if index.matches(cut.prefix) or _names_a_value(cut.phrase, index):
            continue
        wanted = (*shape(cut.prefix, []), _PLACE)
        for example in examples:
            named = [
                v for v in sql_values(example.sql, schema.dialect) if v.lower() in example.question.lower()
            ]
            if len(set(named)) != 1 or shape(example.question, named) != wanted:
                continue
            found.append(OpenComposition(cut, example.example_id, example.sql, named[0]))
            break
        if len(found) >= limit:
            break
    return found


__all__ = ["Composition", "OpenComposition", "compositions", "nest", "open_compositions"]
