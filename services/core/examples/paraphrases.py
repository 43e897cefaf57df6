"""The words a project's users put for one another, learned from its own verified examples.

Two verified questions whose queries are the same but for their values, and whose shapes (``parts.shape``)
differ in one place, say that the two wordings of that place mean the same in this project: "which rivers
*flow* through X" and "which rivers *run* through Y", "how many people live in the *united states*" and "... in
the *us*". A new question that is a verified one but for such a wording asks what the verified one asks.

A wording pair is learned only where the project's examples support it at least ``min_support`` times and
never contradict it (two examples that differ only in that place but whose queries differ: "highest point"
and "highest elevation" are the same in some of a geography project's questions and not in others, so they
are not learned). Only substitutions are learned, never a word dropped: a word left out changes what is asked
too often ("rivers" against "rivers in the state").
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import asyncpg
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from services.core.examples.masking import sql_values
from services.core.examples.parts import shape
from services.core.examples.store import usable_pairs
from services.core.sql.dialects import glot_dialect
from services.core.words import has_number

Shape = tuple[str, ...]
Wording = tuple[Shape, Shape]
_VALUE = shape("x", ["x"])[0]
#: Longest wording learned, in content words.
_MAX_WORDS = 3


def _difference(a: Shape, b: Shape) -> Wording:
    """The one place where ``a`` and ``b`` differ: what stands in each between their common start and end."""
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    return a[start : len(a) - end], b[start : len(b) - end]


def _not_wording(words: Shape) -> bool:
    """A place holding a value or a number: what differs there is what is asked about, not how it is said
    ("in 2023" against "in 2025")."""
    return _VALUE in words or has_number(words)


def _key(a: Shape, b: Shape) -> Wording | None:
    """The wording pair that turns ``a`` into ``b`` (order-free), or None when they differ by more than one
    learnable substitution."""
    x, y = _difference(a, b)
    if not x or not y or len(x) > _MAX_WORDS or len(y) > _MAX_WORDS or _not_wording(x) or _not_wording(y):
        return None
    return (x, y) if x <= y else (y, x)


@lru_cache(maxsize=8192)
def _query_form(sql: str, dialect: str) -> str:
    """The query with its literals masked: two examples with the same form ask the same thing of other values."""
    try:
        tree = sqlglot.parse_one(sql, read=glot_dialect(dialect))
    except SqlglotError:
        return " ".join(sql.split())
    if tree is None:
        return " ".join(sql.split())
    return tree.transform(lambda n: exp.var("_v") if isinstance(n, exp.Literal) else n).sql(
        dialect=glot_dialect(dialect)
    )


def example_shape(question: str, sql: str, dialect: str) -> Shape:
    """A verified example's question shape, its query's literals as the values it names."""
    return shape(question, sql_values(sql, dialect))


@dataclass(frozen=True)
class Paraphrases:
    """Wording pairs that mean the same in one project."""

    wordings: frozenset[Wording] = field(default_factory=frozenset)

    def same_ask(self, a: Shape, b: Shape) -> bool:
        """Whether shapes ``a`` and ``b`` ask the same: equal, or equal but for one learned wording."""
        if a == b:
            return True
        key = _key(a, b)
        return key is not None and key in self.wordings

    def __len__(self) -> int:
        return len(self.wordings)


def learn(examples: Iterable[tuple[str, str]], dialect: str, *, min_support: int = 2) -> Paraphrases:
    """The wording pairs ``examples`` (question, SQL) support at least ``min_support`` times and never
    contradict.

    Two shapes differ by one wording exactly when, cut at the same places, they share what comes before and
    after the cut: shapes are grouped by every such (before, after) with up to ``_MAX_WORDS`` words between,
    so a project's examples are compared only with those they can differ from by one wording (not every pair
    with every pair, which a large project could not afford)."""
    forms: dict[Shape, set[str]] = {}
    for question, sql in examples:
        forms.setdefault(example_shape(question, sql, dialect), set()).add(_query_form(sql, dialect))
    around: dict[tuple[Shape, Shape], list[Shape]] = {}
    for found in forms:
        for start in range(len(found)):
            for end in range(start + 1, min(start + _MAX_WORDS, len(found)) + 1):
                around.setdefault((found[:start], found[end:]), []).append(found[start:end])
    support: Counter[Wording] = Counter()
    contradicted: set[Wording] = set()
    for (before, after), middles in around.items():
        for i, x in enumerate(middles):
            for y in middles[i + 1 :]:
                # Only where the cut is as tight as it goes (the pair is counted once, at its own difference).
                if x[0] == y[0] or x[-1] == y[-1] or _not_wording(x) or _not_wording(y):
                    continue
                key = (x, y) if x <= y else (y, x)
                if forms[(*before, *x, *after)] & forms[(*before, *y, *after)]:
                    support[key] += 1
                else:
                    contradicted.add(key)
    return Paraphrases(frozenset(k for k, n in support.items() if n >= min_support and k not in contradicted))


async def learn_project(pool: asyncpg.Pool, project_id: str, dialect: str) -> Paraphrases:
    """The wordings a project's usable examples support, as of now."""
    pairs = await usable_pairs(pool, project_id)
    # Grouping a large project's examples takes a moment: off the event loop.
    return await asyncio.to_thread(learn, [(question, sql) for _, question, sql in pairs], dialect)


class ProjectParaphrases:
    """Per-process cache of projects' learned paraphrases, learned again at most every ``ttl_s`` seconds (new
    verified examples add wordings; a stale set only misses some)."""

    def __init__(self, pool: asyncpg.Pool, *, ttl_s: float = 300.0, max_projects: int = 64) -> None:
        self.pool = pool
        self.ttl_s = ttl_s
        self.max_projects = max_projects
        self._known: dict[str, tuple[float, Paraphrases]] = {}

    async def get(self, project_id: str, dialect: str) -> Paraphrases:
        now = time.monotonic()
        hit = self._known.get(project_id)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        learned = await learn_project(self.pool, project_id, dialect)
        if len(self._known) >= self.max_projects:
            self._known.pop(next(iter(self._known)))
        self._known[project_id] = (now, learned)
        return learned


__all__ = ["Paraphrases", "ProjectParaphrases", "example_shape", "learn", "learn_project"]
