"""DAIL-SQL style masking: compare questions and SQL by their *shape*, not by the project's names and values.

Two questions like "how many orders came from Paris" and "how many tickets came from Berlin" ask the same
kind of thing; once table/column words become ``<tab>``/``<col>`` and values become ``<val>`` their
embeddings agree, which is what makes an example useful as a demonstration.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from services.core.schema import SQLGLOT_DIALECT, SchemaInfo, derived

TAB = "<tab>"
COL = "<col>"
VAL = "<val>"

# Words that appear inside identifiers (created_at, is_active) but mean nothing alone in a question.
_STOPWORDS = frozenset(
    "a an and are as at be by do for from has have how in is it its no not of on or per than that the to "
    "was what when where which who with id ids".split()
)

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|“[^”]*”|‘[^’]*’")
_DATE = re.compile(r"\b\d{4}-\d{1,2}(?:-\d{1,2})?\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b")
_NUMBER = re.compile(r"(?<![\w<])[-+]?\$?\d+(?:[.,]\d+)*%?(?![\w>])")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def split_identifier(name: str) -> list[str]:
    """``order_items`` → [order, items]; ``customerId`` → [customer, id]; lower-cased."""
    parts: list[str] = []
    for chunk in re.split(r"[_\W]+", name):
        parts.extend(p.lower() for p in _CAMEL.findall(chunk))
    return [p for p in parts if p]


def word_forms(word: str) -> set[str]:
    """A word and its naive singular/plural so 'orders' in a question matches table 'order'."""
    forms = {word}
    if word.endswith("ies") and len(word) > 4:
        forms.add(word[:-3] + "y")
    elif word.endswith("es") and len(word) > 4:
        forms.update({word[:-2], word[:-1]})
    elif word.endswith("s") and len(word) > 3 and not word.endswith("ss"):
        forms.add(word[:-1])
    if word.endswith("y") and len(word) > 3:
        forms.add(word[:-1] + "ies")
    else:
        forms.update({word + "s", word + "es"})
    return forms


def _phrase_pattern(words: list[str]) -> str:
    alternatives = [
        "(?:" + "|".join(re.escape(f) for f in sorted(word_forms(w), key=len, reverse=True)) + ")"
        for w in words
    ]
    return r"(?<![\w<])" + r"[\s_\-]+".join(alternatives) + r"(?![\w>])"


def _schema_phrases(schema: SchemaInfo) -> list[tuple[list[str], str]]:
    """(words, mask) pairs, most specific first: whole table names, whole column names, then single parts."""
    whole: list[tuple[list[str], str]] = []
    parts: list[tuple[list[str], str]] = []
    seen: set[tuple[str, ...]] = set()

    def add(words: list[str], mask: str, into: list[tuple[list[str], str]]) -> None:
        key = tuple(words)
        if not words or key in seen:
            return
        if len(words) == 1 and (words[0] in _STOPWORDS or len(words[0]) < 2 or words[0].isdigit()):
            return
        seen.add(key)
        into.append((words, mask))

    # Tables before columns: a word that names both ("customer" table and customer_id column) is a table.
    for table in schema.tables:
        add(split_identifier(table.name), TAB, whole)
    for table in schema.tables:
        for column in table.columns:
            add(split_identifier(column.name), COL, whole)
    for table in schema.tables:
        for word in split_identifier(table.name):
            add([word], TAB, parts)
    for table in schema.tables:
        for column in table.columns:
            for word in split_identifier(column.name):
                add([word], COL, parts)
    whole.sort(key=lambda item: len(item[0]), reverse=True)
    return whole + parts


def _sample_values(schema: SchemaInfo) -> list[str]:
    values: list[str] = []
    for table in schema.tables:
        for column in table.columns:
            for sample in column.samples:
                if isinstance(sample, str) and sample.strip() and not sample.strip().isdigit():
                    values.append(sample.strip())
    return values


@dataclass
class _Masks:
    values: list[re.Pattern[str]]
    phrases: list[tuple[re.Pattern[str], str]]


def _schema_masks(schema: SchemaInfo) -> _Masks:
    """The schema's value and phrase patterns, compiled once per schema object (building the patterns was
    most of the cost of masking a question)."""

    def build() -> _Masks:
        values = {v for v in _sample_values(schema) if len(v) >= 2}
        return _Masks(
            values=[_value_pattern(v) for v in sorted(values, key=len, reverse=True)],
            phrases=[(re.compile(_phrase_pattern(words)), mask) for words, mask in _schema_phrases(schema)],
        )

    return derived(schema, "masking.masks", build)


def _value_pattern(value: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w<])" + re.escape(value) + r"(?![\w>])", re.IGNORECASE)


_MASKED_PER_SCHEMA = 2048


def mask_question(question: str, schema: SchemaInfo, known_values: Iterable[str] = ()) -> str:
    """Replace literal values with ``<val>`` and schema words with ``<tab>``/``<col>``; lower-cased."""
    extra = {v for v in known_values if len(v) >= 2}
    if extra:
        return _mask(question, schema, extra)
    # Retrieval masks one question several times (embedding, project and library selection), and chat
    # questions repeat: the schema's own masking is remembered per schema.
    recent: dict[str, str] = derived(schema, "masking.questions", dict)
    masked = recent.get(question)
    if masked is None:
        masked = _mask(question, schema, extra)
        if len(recent) >= _MASKED_PER_SCHEMA:
            recent.clear()
        recent[question] = masked
    return masked


def _mask(question: str, schema: SchemaInfo, extra: set[str]) -> str:
    text = _QUOTED.sub(f" {VAL} ", question)
    masks = _schema_masks(schema)
    patterns = masks.values
    if extra:
        values = {v for v in _sample_values(schema) if len(v) >= 2} | extra
        patterns = [_value_pattern(v) for v in sorted(values, key=len, reverse=True)]
    # Longest first so "New York City" is one value rather than "New York" plus a stray word.
    for pattern in patterns:
        text = pattern.sub(f" {VAL} ", text)
    text = _DATE.sub(f" {VAL} ", text)
    text = _NUMBER.sub(f" {VAL} ", text)
    text = text.lower()
    for phrase, mask in masks.phrases:
        text = phrase.sub(f" {mask} ", text)
    text = re.sub(r"\s+", " ", text).strip()
    # "<val> <val>" from adjacent literals carries no more shape than one.
    return re.sub(rf"(?:{re.escape(VAL)} )+{re.escape(VAL)}", VAL, text)


def _mask_node(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Column | exp.Table | exp.Identifier):
        return exp.var("_")
    if isinstance(node, exp.Literal):
        return exp.var(VAL)
    return node


def _token_skeleton(sql: str, dialect: str) -> str:
    """Fallback for SQL sqlglot cannot parse: keep keywords, blank names, mask literals."""
    try:
        tokens = sqlglot.tokenize(sql, read=SQLGLOT_DIALECT.get(dialect, dialect))
    except SqlglotError:
        return " ".join(sql.split())
    out: list[str] = []
    for token in tokens:
        if token.token_type in (TokenType.STRING, TokenType.NUMBER, TokenType.NATIONAL_STRING):
            out.append(VAL)
        elif token.token_type in (TokenType.VAR, TokenType.IDENTIFIER):
            out.append("_")
        else:
            out.append(token.text.upper())
    return " ".join(out)


def sql_skeleton(sql: str, dialect: str = "sqlite") -> str:
    """SQL with structure and keywords kept, names as ``_`` and literals as ``<val>``."""
    try:
        tree = sqlglot.parse_one(sql, read=SQLGLOT_DIALECT.get(dialect, dialect))
    except SqlglotError:
        return _token_skeleton(sql, dialect)
    if tree is None:
        return _token_skeleton(sql, dialect)
    return tree.transform(_mask_node).sql(dialect=SQLGLOT_DIALECT.get(dialect, dialect))


_SKELETON_TOKEN = re.compile(r"<val>|\w+|[^\w\s]")


def skeleton_tokens(skeleton: str) -> list[str]:
    return _SKELETON_TOKEN.findall(skeleton.upper())


@lru_cache(maxsize=1 << 16)
def skeleton_similarity(a: str, b: str) -> float:
    """Token-sequence similarity of two skeletons in [0, 1] (1: same shape).

    Cached: reranking compares the same stored skeletons (library and project examples) question after
    question, and difflib on token lists is the retrieval stage's largest CPU cost otherwise."""
    if a == b:
        return 1.0
    ta, tb = skeleton_tokens(a), skeleton_tokens(b)
    if not ta or not tb:
        return 0.0
    return difflib.SequenceMatcher(a=ta, b=tb, autojunk=False).ratio()


def sql_values(sql: str, dialect: str) -> list[str]:
    """The string literals of a query: the values its question names (masked as such when it is embedded)."""
    try:
        tree = sqlglot.parse_one(sql, read=SQLGLOT_DIALECT.get(dialect, dialect))
    except SqlglotError:  # unreadable SQL names no values
        return []
    if tree is None:
        return []
    return [str(node.this) for node in tree.find_all(exp.Literal) if node.is_string]


def retrieval_text(question: str, masked: str) -> str:
    """The text embedded for a project's own examples: the question followed by its masked form.

    DAIL-SQL embeds the masked question alone because it transfers examples *across* databases. Within one
    project the table and column words are shared by every example and say which data is asked about, so
    dropping them confuses "most expensive product" with "cancelled orders"; the masked half still pulls
    questions of the same shape together (and values like 'Paris'/'Berlin' apart matter less).
    """
    return f"{' '.join(question.split())} | {masked}"
