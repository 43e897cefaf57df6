"""Choosing the project examples for one question's prompt (DAIL-SQL style selection).

1. The question is embedded with its masked form (``masking.retrieval_text``); the vector index returns
   the project's most similar usable examples.
2. Reranking: the right SQL shape for the question is unknown, but the most similar examples vote on it
   (DAIL's pre-predicted skeleton). A candidate whose skeleton agrees with the other top candidates is
   more likely to show the right shape, so relevance blends question similarity with that support.
3. Diversification: MMR over skeletons, so k examples don't all demonstrate one shape unless they are
   much more similar than the alternatives.
4. Templates first: a candidate whose question is this question with other values
   (``services.core.template_match``), or this question in other words (``parts.shape``), leads the list,
   so the prompt shows it and generation can answer from it directly.
5. Parts: for a question no candidate is a template of, examples of its parts (an inner phrase and the
   question around it, ``part_examples``) can lead instead, so a new shape made of known ones is shown
   both, and generation can nest one in the other (``services.core.composition``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import asyncpg
import numpy as np

from events.internal import ContextExample
from services.core.examples.embedder import Embedder, embed_async
from services.core.examples.index import VectorIndex
from services.core.examples.masking import (
    mask_question,
    retrieval_text,
    skeleton_similarity,
    sql_skeleton,
    sql_values,
)
from services.core.examples.paraphrases import Paraphrases, example_shape
from services.core.examples.parts import Split, shape, splits, stand_in_value
from services.core.examples.store import load_usable
from services.core.schema import SchemaInfo
from services.core.template_match import adaptations


@dataclass
class Candidate:
    example_id: str
    question: str
    sql: str
    skeleton: str
    similarity: float
    quality: float = 0.0


@dataclass
class Ranked:
    candidate: Candidate
    relevance: float
    support: float


def rerank(
    candidates: Sequence[Candidate], *, skeleton_weight: float = 0.25, voters: int = 5
) -> list[Ranked]:
    """Relevance = (1-w)·similarity + w·skeleton support of the ``voters`` most similar other candidates."""
    ordered = sorted(candidates, key=lambda c: c.similarity, reverse=True)
    top = ordered[:voters]
    ranked: list[Ranked] = []
    for candidate in ordered:
        others = [t for t in top if t is not candidate]
        weights = [max(t.similarity, 0.0) for t in others]
        if others and sum(weights) > 0:
            support = sum(
                w * skeleton_similarity(candidate.skeleton, t.skeleton)
                for w, t in zip(weights, others, strict=True)
            ) / sum(weights)
        else:
            # Nothing to vote: every candidate gets the same neutral support, so similarity decides.
            support = 0.5
        # Quality (0..1 from feedback) only breaks near-ties.
        quality = min(max(candidate.quality, 0.0), 1.0)
        relevance = (1 - skeleton_weight) * candidate.similarity + skeleton_weight * support + 0.02 * quality
        ranked.append(Ranked(candidate, relevance, support))
    ranked.sort(key=lambda r: r.relevance, reverse=True)
    return ranked


def select_from_candidates(
    candidates: Sequence[Candidate],
    k: int,
    *,
    diversity: float = 0.3,
    skeleton_weight: float = 0.25,
    min_similarity: float = -1.0,
) -> list[tuple[Candidate, float]]:
    """Pure selection (no database): rerank then MMR-diversify; returns (candidate, relevance), best first."""
    if k <= 0:
        return []
    pool = [
        r
        for r in rerank(candidates, skeleton_weight=skeleton_weight)
        if r.candidate.similarity >= min_similarity
    ]
    chosen: list[Ranked] = []
    while pool and len(chosen) < k:
        best_index, best_score = 0, float("-inf")
        for i, option in enumerate(pool):
            redundancy = max(
                (skeleton_similarity(option.candidate.skeleton, c.candidate.skeleton) for c in chosen),
                default=0.0,
            )
            score = option.relevance - diversity * redundancy
            if score > best_score:
                best_index, best_score = i, score
        chosen.append(pool.pop(best_index))
    return [(r.candidate, r.relevance) for r in chosen]


def template_ids(
    question: str,
    dialect: str,
    candidates: Sequence[Candidate],
    most: int = 2,
    known_values: Sequence[str] = (),
    paraphrases: Paraphrases | None = None,
) -> list[str]:
    """Up to ``most`` candidates that are templates of ``question``: this question with other values
    (``template_match``) first, then the same question in other words (``parts.shape``, and with
    ``paraphrases`` the project's own interchangeable wordings)."""
    found = [a.example_id for a in adaptations(question, candidates, dialect, limit=most)]
    ours = shape(question, [v for v in known_values if v.lower() in question.lower()])
    same = (paraphrases or Paraphrases()).same_ask
    for candidate in candidates:
        if len(found) >= most:
            break
        if candidate.example_id not in found and same(
            ours, example_shape(candidate.question, candidate.sql, dialect)
        ):
            found.append(candidate.example_id)
    return found


def templates_first(
    candidates: Sequence[Candidate], chosen: list[tuple[Candidate, float]], lead_ids: Sequence[str], k: int
) -> list[tuple[Candidate, float]]:
    """``chosen`` with the candidates ``lead_ids`` moved (or brought in) to the front, still at most ``k``."""
    if not lead_ids:
        return chosen
    by_id = {c.example_id: c for c in candidates}
    relevance = {c.example_id: score for c, score in chosen}
    lead = [(by_id[i], relevance.get(i, by_id[i].similarity)) for i in lead_ids]
    return (lead + [(c, score) for c, score in chosen if c.example_id not in lead_ids])[:k]


async def select_examples(
    pool: asyncpg.Pool,
    index: VectorIndex,
    embedder: Embedder,
    *,
    project_id: str,
    question: str,
    schema: SchemaInfo,
    k: int,
    candidates: int = 40,
    diversity: float = 0.3,
    min_similarity: float = 0.2,
    known_values: Sequence[str] = (),
    parts: int = 0,
    part_min_similarity: float = 0.85,
) -> list[ContextExample]:
    """``select_with_reserve`` without the reserve."""
    chosen, _ = await select_with_reserve(
        pool, index, embedder, project_id=project_id, question=question, schema=schema, k=k,
        candidates=candidates, diversity=diversity, min_similarity=min_similarity, known_values=known_values,
        parts=parts, part_min_similarity=part_min_similarity,
    )  # fmt: skip
    return chosen


async def select_with_reserve(
    pool: asyncpg.Pool,
    index: VectorIndex,
    embedder: Embedder,
    *,
    project_id: str,
    question: str,
    schema: SchemaInfo,
    k: int,
    candidates: int = 40,
    diversity: float = 0.3,
    min_similarity: float = 0.2,
    known_values: Sequence[str] = (),
    parts: int = 0,
    part_min_similarity: float = 0.85,
    reserve: int = 0,
    paraphrases: Paraphrases | None = None,
) -> tuple[list[ContextExample], list[ContextExample]]:
    """Up to ``k`` of the project's usable examples for ``question`` (and its parts), best first (source='project').

    ``known_values``: the question's words the project's value index found as database values; they are
    masked as values (as examples are by their SQL's literals), so questions of one shape meet.
    ``min_similarity`` drops examples about something else entirely: an unrelated demonstration costs prompt
    tokens and can mislead a small model more than no demonstration.
    ``parts``: when no example is this question with other values, up to this many examples of its parts
    (``part_examples``) lead the list, so the prompt shows the shapes a new question is made of; they come on
    top of the ``k`` (what was measured: bench/README.md, "First-time answers").
    ``paraphrases``: the project's interchangeable wordings, for finding templates (``template_ids``).
    ``reserve``: besides, up to this many further candidates, most similar first, for a second selection by
    the shape of a drafted query (``by_draft``).
    """
    if k <= 0:
        return [], []
    masked = mask_question(question, schema, known_values)
    vector = (await embed_async(embedder, [retrieval_text(question, masked)]))[0]
    pool_candidates = await _search(pool, index, project_id, vector, max(candidates, k))
    if not pool_candidates:
        return [], []
    chosen = select_from_candidates(pool_candidates, k, diversity=diversity, min_similarity=min_similarity)
    lead_ids = template_ids(
        question, schema.dialect, pool_candidates, known_values=known_values, paraphrases=paraphrases
    )
    chosen = templates_first(pool_candidates, chosen, lead_ids, k)
    if parts > 0 and not lead_ids:
        chosen = _with_parts(
            chosen,
            await part_examples(
                pool, index, embedder, project_id=project_id, question=question, schema=schema,
                min_similarity=part_min_similarity, known_values=known_values,
            ),
            parts,
        )  # fmt: skip
    taken = {c.example_id for c, _ in chosen}
    spare = [c for c in pool_candidates if c.example_id not in taken and c.similarity >= min_similarity][
        :reserve
    ]
    return [_context(c, score) for c, score in chosen], [_context(c, c.similarity) for c in spare]


def _context(candidate: Candidate, score: float) -> ContextExample:
    return ContextExample(
        example_id=candidate.example_id,
        source="project",
        question=candidate.question,
        sql=candidate.sql,
        score=round(score, 4),
    )


def by_draft(
    draft_sql: str, examples: Sequence[ContextExample], k: int, dialect: str, *, weight: float = 0.5
) -> list[ContextExample]:
    """DAIL-SQL's second pass: the ``k`` examples whose blend of question similarity (their score) and
    similarity of their query's skeleton to the drafted query's is highest, best first."""
    draft = sql_skeleton(draft_sql, dialect)
    ranked = sorted(
        examples,
        key=lambda e: (
            (1 - weight) * e.score + weight * skeleton_similarity(draft, sql_skeleton(e.sql, dialect))
        ),
        reverse=True,
    )
    return ranked[:k]


async def _search(
    pool: asyncpg.Pool, index: VectorIndex, project_id: str, vector: np.ndarray, k: int
) -> list[Candidate]:
    """The project's ``k`` usable examples most similar to ``vector``, as candidates."""
    search_examples = getattr(index, "search_examples", None)
    if search_examples is not None:
        # An index that lives beside the examples (pgvector) returns them in the same round trip.
        found = await search_examples(project_id, vector, k)
    else:
        hits = await index.search(project_id, vector, k)
        # The index is trusted for similarity only: project and usability are re-checked on the rows.
        stored = await load_usable(pool, project_id, [example_id for example_id, _ in hits])
        found = [
            (row, similarity)
            for example_id, similarity in hits
            if (row := stored.get(uuid.UUID(str(example_id)))) is not None
        ]
    return [
        Candidate(str(row.id), row.question, row.sql, row.sql_skeleton, similarity, row.quality)
        for row, similarity in found
    ]


async def part_examples(
    pool: asyncpg.Pool,
    index: VectorIndex,
    embedder: Embedder,
    *,
    project_id: str,
    question: str,
    schema: SchemaInfo,
    min_similarity: float,
    known_values: Sequence[str] = (),
    candidates: int = 8,
) -> list[tuple[Candidate, float]]:
    """The examples of the question's best split (``parts.splits``): the one for the inner phrase and the one
    for the outer question with a stand-in value, inner first; nothing unless both are at least
    ``min_similarity`` alike. An example that asks what its part asks (``parts.shape``) is preferred to a
    merely similar one, since only such a pair can be composed without the model; then the split whose
    weaker match is stronger wins."""
    cuts = splits(question)
    if not cuts:
        return []

    def named(text: str, extra: Sequence[str] = ()) -> list[str]:
        return [v for v in (*known_values, *extra) if v.lower() in text.lower()]

    def text(phrase: str, extra: Sequence[str] = ()) -> str:
        return retrieval_text(phrase, mask_question(phrase, schema, named(phrase, extra)))

    def says(phrase: str, extra: Sequence[str], example: Candidate) -> bool:
        ours = shape(phrase, named(phrase, extra))
        return ours == shape(example.question, sql_values(example.sql, schema.dialect))

    inner_vectors = await embed_async(embedder, [text(cut.phrase) for cut in cuts])
    plans: list[tuple[Split, Candidate, str, bool]] = []
    for cut, vector in zip(cuts, inner_vectors, strict=True):
        usable = [
            found
            for found in await _search(pool, index, project_id, vector, candidates)
            if stand_in_value(found.sql, schema, avoid=cut.prefix) is not None
        ]
        choice = _part_choice(usable, partial(says, cut.phrase, ()), min_similarity)
        if choice is not None:
            value = stand_in_value(choice[0].sql, schema, avoid=cut.prefix)
            assert value is not None
            plans.append((cut, choice[0], value, choice[1]))
    if not plans:
        return []
    outer_vectors = await embed_async(
        embedder, [text(cut.outer(value), [value]) for cut, _, value, _ in plans]
    )
    best: tuple[tuple[int, float], Candidate, Candidate] | None = None
    for (cut, inner, value, inner_exact), vector in zip(plans, outer_vectors, strict=True):
        outer_question = cut.outer(value)
        others = [
            found
            for found in await _search(pool, index, project_id, vector, candidates)
            if found.example_id != inner.example_id
        ]
        choice = _part_choice(others, partial(says, outer_question, [value]), min_similarity)
        if choice is None:
            continue
        outer, outer_exact = choice
        rank = (int(inner_exact) + int(outer_exact), min(inner.similarity, outer.similarity))
        if best is None or rank > best[0]:
            best = (rank, inner, outer)
    if best is None:
        return []
    _, inner, outer = best
    return [(inner, inner.similarity), (outer, outer.similarity)]


#: How much less alike an example that asks exactly what its part asks may be than a merely similar one: the
#: stand-in value and the missing rest of the question lower the similarity of the right example too.
_EXACT_SLACK = 0.2


def _part_choice(
    found: Sequence[Candidate], exact: Callable[[Candidate], bool], min_similarity: float
) -> tuple[Candidate, bool] | None:
    """The first of ``found`` (most similar first) that asks exactly what the part asks, at a little less
    similarity; else the most similar one at ``min_similarity``."""
    for candidate in found:
        if candidate.similarity >= min_similarity - _EXACT_SLACK and exact(candidate):
            return candidate, True
    if found and found[0].similarity >= min_similarity:
        return found[0], False
    return None


def _with_parts(
    chosen: list[tuple[Candidate, float]], found: list[tuple[Candidate, float]], most: int
) -> list[tuple[Candidate, float]]:
    """The part examples first (the prompt puts the first closest to the question), then the rest."""
    lead = found[:most]
    leading = {c.example_id for c, _ in lead}
    return lead + [(c, score) for c, score in chosen if c.example_id not in leading]
