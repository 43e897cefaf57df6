"""The parts of a question that no example covers as a whole.

A question of a shape the project has never verified is usually two shapes it has: "what is the area of
[the state with the smallest population density]" is "what is the area of <a state>" around "which state has
the smallest population density". Retrieval by the whole question finds neither reliably; searched for
separately, each part often has a verified example, and a small model shown both composes them far more
often than it invents the nesting.

Here only the text work, no database and no embeddings: where a question can be cut into an outer question
and an inner phrase, and which stand-in value the outer question gets in place of the phrase (a value of the
column the inner example's query returns, so the outer question is searched as the kind of question it is).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from services.core.schema import SchemaInfo
from services.core.sql.dialects import glot_dialect

_WORD = re.compile(r"\S+")
#: Words an inner phrase does not start with: a phrase starting with one of them is a clause's tail
#: ("that borders texas", "with the largest city") or a bare verb, not a thing the outer question names.
_NOT_A_START = frozenset(
    """that which who whom whose where when with without and or but than is are was were be been has have had
    do does did to of in on at by for from through into over under 's""".split()
)


_VALUE = "<v>"
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")
#: Words that join a phrase's content words without changing what it asks ("the state *that has* the largest
#: population" asks what "which state has the largest population" asks).
_GLUE = frozenset(
    """a an the of in on at to for by with from is are was were be been do does did what which who whom whose
    that this these those there it its as has have having me give show list tell find name please""".split()
)
#: Superlatives that ask for the same extreme of a quantity ("highest population", "largest population").
_EXTREMES = {
    "largest": "max",
    "biggest": "max",
    "greatest": "max",
    "highest": "max",
    "smallest": "min",
    "lowest": "min",
}


@dataclass(frozen=True)
class Split:
    """The question cut at ``phrase``: ``prefix`` + a value stands for the outer question."""

    prefix: str
    phrase: str

    def outer(self, value: str) -> str:
        return f"{self.prefix} {value}"


def splits(
    question: str, *, min_phrase_words: int = 2, min_prefix_words: int = 2, most: int = 8
) -> list[Split]:
    """Ways to cut ``question`` into an outer question and a trailing inner phrase, longest phrase first.

    Only trailing phrases: in questions the nested part is almost always last ("... of the state that borders
    the most states"); a phrase in the middle is left to the model."""
    text = question.strip()  # word offsets below are offsets into this text
    words = list(_WORD.finditer(text))
    found: list[Split] = []
    for k in range(min_prefix_words, len(words) - min_phrase_words + 1):
        first = words[k].group(0).lower()
        if first in _NOT_A_START:
            continue
        start = words[k].start()
        found.append(Split(prefix=text[:start].strip(), phrase=text[start:].strip()))
        if len(found) == most:
            break
    return found


def _stem(word: str) -> str:
    if word in _EXTREMES:
        return _EXTREMES[word]
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
        return word[:-1] if len(word) > 3 and word[-1] == word[-2] else word
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def shape(text: str, values: Sequence[str]) -> tuple[str, ...]:
    """What a phrase asks, as a comparable value: its content words as stems in order, each of ``values`` it
    names as one placeholder. Two phrases with the same shape ask the same thing of other values."""
    words = " ".join(_TOKEN.findall(text.lower()))
    padded = f" {words} "
    for value in sorted({" ".join(_TOKEN.findall(v.lower())) for v in values}, key=len, reverse=True):
        if value:
            padded = re.sub(rf"(?<= ){re.escape(value)}(?= )", _VALUE, padded)
    return tuple(w if w == _VALUE else _stem(w) for w in padded.split() if w not in _GLUE)


@lru_cache(maxsize=4096)
def returned_column(sql: str, dialect: str) -> tuple[str, str] | None:
    """(table or alias, column) of the single plain column the query returns; None for anything else
    (several columns, an aggregate, an expression): only a value can stand in for such a phrase."""
    try:
        tree = sqlglot.parse_one(sql, read=glot_dialect(dialect))
    except SqlglotError:
        return None
    if not isinstance(tree, exp.Select) or len(tree.expressions) != 1:
        return None
    selected = tree.expressions[0]
    if isinstance(selected, exp.Alias):
        selected = selected.this
    if not isinstance(selected, exp.Column):
        return None
    # The tables of this query's own FROM and joins (subqueries may reuse their aliases).
    sources = [tree.args.get("from_"), *tree.args.get("joins", [])]
    tables = [s.this for s in sources if s is not None and isinstance(s.this, exp.Table)]
    qualifier = selected.table
    if qualifier:
        named = [t for t in tables if qualifier.lower() in (t.alias_or_name.lower(), t.name.lower())]
        return (named[0].name, selected.name) if len(named) == 1 else None
    return (tables[0].name, selected.name) if len(tables) == 1 else None


def stand_in_value(sql: str, schema: SchemaInfo, avoid: str = "") -> str | None:
    """A sample value of the column ``sql`` returns, to stand for the phrase it answers; None when the query
    does not return one plain text column or the schema has no sample of it. A sample ``avoid`` names is
    skipped: the outer question's own value ("who ordered widget and <the cheapest product>") must not be
    taken for the stand-in, or the nesting replaces it too."""
    returned = returned_column(sql, schema.dialect)
    if returned is None:
        return None
    table_name, column_name = (name.lower() for name in returned)
    for table in schema.tables:
        if table.name.lower() != table_name:
            continue
        for column in table.columns:
            if column.name.lower() != column_name:
                continue
            for sample in column.samples:
                if isinstance(sample, str) and sample.strip() and not sample.strip().isdigit():
                    if not _names(avoid, sample.strip()):
                        return sample.strip()
    return None


def _names(text: str, value: str) -> bool:
    """Whether ``text`` holds ``value`` as whole words, case aside."""
    words = " ".join(_TOKEN.findall(value.lower()))
    return bool(words) and f" {words} " in f" {' '.join(_TOKEN.findall(text.lower()))} "


__all__ = ["Split", "returned_column", "shape", "splits", "stand_in_value"]
