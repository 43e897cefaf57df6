"""A verified example as a template: when a question is one of the project's verified questions with other
values ("biggest city in arizona" after "biggest city in kansas"), the example's SQL with the question's
values answers it, without a model call.

Chat users repeat the same questions about different things, and a small model re-deriving a verified query
gets it wrong a good share of the time (a nested superlative, a filter copied from a neighbouring example).
The match is strict on purpose: the questions must agree word for word except for spans that are literal
values in the example's SQL (or grammatical variants such as is/are), so an adapted query asks what the
example asked. The caller still checks and runs it, and falls back to the model when it returns nothing.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import sqlglot
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from services.core.schema import SQLGLOT_DIALECT

_WORD = re.compile(r"\d+(?:[.,:/-]\d+)*|[^\W_]+(?:['’][^\W_]+)?")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
#: A string literal that opens with a number and goes on as a date or a pattern ('2023-%', '2023-01-01'): the
#: number is a value the question may name ("orders in 2023"), the rest is the query's.
_LEADING_NUMBER = re.compile(r"(\d+)[-/%]")
# Words that differ between two phrasings of one question without changing what is asked.
_VARIANTS = ("what which", "is are was were", "do does did", "live lives lived", "a an the")
_CLASS = {word: group for group in _VARIANTS for word in group.split()}
_DROPPABLE = frozenset({"a", "an", "the"})
# What a value typed in a question may contain. Anything else (quotes of another kind, backslashes,
# semicolons, comment markers) is not a name or a number and is never written into SQL.
_SAFE_VALUE = re.compile(r"[^\W_]+(?:[ .,'’&/:-]+[^\W_]+)*\.?")
#: Words that start a clause: a span holding one ("states that border texas", "longest river in california") is
#: a description of something, not a value, even where the example had a value in its place.
_CLAUSE_WORDS = frozenset("that which who whom whose where than with in".split())


class ExampleLike(Protocol):
    example_id: str
    question: str
    sql: str


@dataclass(frozen=True)
class Adaptation:
    """The example's SQL with the question's values, and how closely the questions agree."""

    example_id: str
    sql: str
    shared_words: int
    substitutions: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Word:
    text: str
    start: int
    end: int

    @property
    def key(self) -> str:
        return self.text.lower().replace("’", "'")


@dataclass(frozen=True)
class _Literal:
    start: int
    end: int
    value: str
    quote: str  # "" for a number


def _words(text: str) -> list[_Word]:
    return [_Word(m.group(0), m.start(), m.end()) for m in _WORD.finditer(text)]


@lru_cache(maxsize=4096)
def _literals(sql: str, dialect: str) -> tuple[_Literal, ...] | None:
    """String and number literals with their positions in ``sql``; None when it does not tokenize.
    Cached: the same verified examples come back for question after question."""
    try:
        tokens = sqlglot.tokenize(sql, read=SQLGLOT_DIALECT.get(dialect, dialect))
    except SqlglotError:
        return None
    found: list[_Literal] = []
    for token in tokens:
        raw = sql[token.start : token.end + 1]
        if token.token_type == TokenType.STRING and raw[:1] in ("'", '"') and raw[-1:] == raw[:1]:
            found.append(_Literal(token.start, token.end + 1, token.text, raw[0]))
            leading = _LEADING_NUMBER.match(raw, 1)
            if leading:
                # Only the digits, written back as they are: a number put for a number keeps the literal whole.
                found.append(
                    _Literal(leading.start(1) + token.start, leading.end(1) + token.start, leading[1], "")
                )
        elif token.token_type == TokenType.NUMBER and _NUMBER.fullmatch(raw):
            found.append(_Literal(token.start, token.end + 1, raw, ""))
    return tuple(found)


def _same_case(new: str, old: str) -> str:
    """The new value written the way the example's SQL wrote the value it replaces (a database compares
    'Arizona' and 'arizona' as different values; users type either)."""
    if old.islower():
        return new.lower()
    if old.isupper():
        return new.upper()
    if old.istitle():
        return new.title()
    return new


def _span(text: str, words: Sequence[_Word]) -> str:
    return text[words[0].start : words[-1].end]


def adapt(
    question: str, example_question: str, example_sql: str, dialect: str, *, example_id: str = ""
) -> Adaptation | None:
    """The example's SQL rewritten for ``question``, or None when the two questions differ in more than
    the values the SQL names (or the SQL does not tokenize)."""
    ours, theirs = _words(question), _words(example_question)
    if not ours or not theirs:
        return None
    matcher = difflib.SequenceMatcher(a=[w.key for w in theirs], b=[w.key for w in ours], autojunk=False)
    needed = max(2, (len(ours) + 1) // 2)
    if sum(block.size for block in matcher.get_matching_blocks()) < needed:
        return None  # most candidates end here, before their SQL is looked at
    literals = _literals(example_sql, dialect)
    if literals is None:
        return None
    by_value = {literal.value.lower() for literal in literals}
    shared = 0
    # example value (lower-cased) -> (its text in the example question, the question's value)
    swaps: dict[str, tuple[str, str]] = {}
    swapped: dict[str, int] = {}

    def swap(old: str, new: str) -> bool:
        if not _SAFE_VALUE.fullmatch(new):
            return False
        if any(w.key in _CLAUSE_WORDS for w in _words(new)) and not any(
            w.key in _CLAUSE_WORDS for w in _words(old)
        ):
            return False
        key = old.lower()
        if key not in by_value or swaps.get(key, (old, new))[1].lower() != new.lower():
            return False  # not a value of the SQL, or one value asked to become two
        swaps[key] = (old, new)
        swapped[key] = swapped.get(key, 0) + 1
        return True

    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            shared += i2 - i1
            continue
        old_words, new_words = theirs[i1:i2], ours[j1:j2]
        if op in ("insert", "delete"):
            if all(w.key in _DROPPABLE for w in (*old_words, *new_words)):
                continue
            return None
        if len(old_words) == len(new_words) and all(
            o.key == n.key or _CLASS.get(o.key, o.key) == _CLASS.get(n.key, n.key)
            for o, n in zip(old_words, new_words, strict=True)
        ):
            continue
        if swap(_span(example_question, old_words), _span(question, new_words)):
            continue
        # "boulder colorado" → "tempe arizona": two values side by side, swapped word for word.
        if len(old_words) != len(new_words):
            return None
        for o, n in zip(old_words, new_words, strict=True):
            if o.key != n.key and not swap(o.text, n.text):
                return None
    if shared < needed:
        return None
    for key, times in swapped.items():
        # "from paris to paris" → "from paris to lisbon": which 'paris' of the SQL is which is unknowable.
        if len(re.findall(rf"(?<!\w){re.escape(key)}(?!\w)", example_question.lower())) != times:
            return None

    pieces: list[str] = []
    cursor = 0
    for literal in literals:
        replacement = swaps.get(literal.value.lower())
        if replacement is None or literal.start < cursor:
            continue  # not swapped, or the leading number of a literal already replaced whole
        value = _same_case(replacement[1], literal.value)
        if literal.quote:
            text = literal.quote + value.replace(literal.quote, literal.quote * 2) + literal.quote
        elif _NUMBER.fullmatch(value):
            text = value
        else:
            return None  # a word where the SQL had a number
        pieces.append(example_sql[cursor : literal.start])
        pieces.append(text)
        cursor = literal.end
    pieces.append(example_sql[cursor:])
    return Adaptation(
        example_id=example_id,
        sql="".join(pieces),
        shared_words=shared,
        substitutions=tuple((old, new) for old, new in swaps.values()),
    )


def adaptations(
    question: str, examples: Iterable[ExampleLike], dialect: str, limit: int = 3
) -> list[Adaptation]:
    """Up to ``limit`` distinct adapted queries, the closest questions first (most shared words, then
    fewest values swapped, then the examples' own order)."""
    found: list[tuple[int, int, int, Adaptation]] = []
    for order, example in enumerate(examples):
        adapted = adapt(question, example.question, example.sql, dialect, example_id=example.example_id)
        if adapted is not None:
            found.append((-adapted.shared_words, len(adapted.substitutions), order, adapted))
    found.sort(key=lambda item: item[:3])
    chosen: list[Adaptation] = []
    for *_, adapted in found:
        if all(adapted.sql != c.sql for c in chosen):
            chosen.append(adapted)
        if len(chosen) == limit:
            break
    return chosen
