"""Suggested next questions for an answer, taken from the project's verified examples near the question.

A suggestion is only worth showing if the project answers it well, so every suggestion is the question of a
verified example that retrieval already selected for this question (``retrieval.context`` carries only
verified, current, not rated-down examples): asking it again is answered from that example. Two kinds, in
this order:

1. the same question with other values ("how many silver customers" after "how many gold customers"), found
   with the strict template match that template answers use;
2. the next step of the same analysis: another verified question about a table this answer's SQL read
   ("orders per status" after "orders returned"), most tables in common first.

Examples about other tables, and the question itself, are never suggested.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from events import ContextExample
from services.core.sql import referenced_names
from services.core.template_match import adapt

MAX_SUGGESTIONS = 3
_WORDS = re.compile(r"[^\W_]+")


def _normal(question: str) -> str:
    return " ".join(_WORDS.findall(question.lower()))


def suggest_followups(
    question: str,
    sql: str,
    examples: Sequence[ContextExample],
    dialect: str,
    *,
    limit: int = MAX_SUGGESTIONS,
) -> list[str]:
    """Up to ``limit`` questions of ``examples`` (best first) to offer after answering ``question`` with
    ``sql``."""
    asked = _normal(question)
    answer_tables = referenced_names(sql, dialect)[0] if sql else set()
    other_values: list[str] = []
    next_steps: list[tuple[float, int, str]] = []
    for order, example in enumerate(examples):
        if example.source != "project" or _normal(example.question) == asked:
            continue
        if adapt(question, example.question, example.sql, dialect) is not None:
            other_values.append(example.question)
            continue
        if not answer_tables:
            continue
        tables = referenced_names(example.sql, dialect)[0]
        shared = answer_tables & tables
        if shared:
            overlap = len(shared) / len(answer_tables | tables)
            next_steps.append((-overlap, order, example.question))
    next_steps.sort()
    chosen: list[str] = []
    seen: set[str] = {asked}
    for text in [*other_values, *(q for *_, q in next_steps)]:
        key = _normal(text)
        if key not in seen:
            seen.add(key)
            chosen.append(text)
        if len(chosen) == limit:
            break
    return chosen
