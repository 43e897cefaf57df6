"""Choosing the project examples for one question's prompt (DAIL-SQL style selection).

1. The question is embedded with its masked form (``masking.retrieval_text``); the vector index returns
   the project's most similar usable examples.
2. Reranking: the right SQL shape for the question is unknown, but the most similar examples vote on it
   (DAIL's pre-predicted skeleton). A candidate whose skeleton agrees with the other top candidates is
   more likely to show the right shape, so relevance blends question similarity with that support.
3. Diversification: MMR over skeletons, so k examples don't all demonstrate one shape unless they are
   much more similar than the alternatives.
4. Templates first: a candidate whose question is this question with other values
   (``services.core.template_match``) leads the list, so the prompt shows it and generation can answer
   from it directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from events.internal import ContextExample
from services.core.examples.embedder import Embedder, embed_async
from services.core.examples.index import VectorIndex
from services.core.examples.masking import mask_question, retrieval_text, skeleton_similarity
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


def templates_first(
    question: str,
    dialect: str,
    candidates: Sequence[Candidate],
    chosen: list[tuple[Candidate, float]],
    k: int,
    most: int = 2,
) -> list[tuple[Candidate, float]]:
    """``chosen`` with up to ``most`` candidates that are templates of ``question`` moved (or brought in)
    to the front, still at most ``k``."""
    adapted = adaptations(question, candidates, dialect, limit=most)
    if not adapted:
        return chosen
    by_id = {c.example_id: c for c in candidates}
    relevance = {c.example_id: score for c, score in chosen}
    lead = [
        (by_id[a.example_id], relevance.get(a.example_id, by_id[a.example_id].similarity)) for a in adapted
    ]
    leading = {c.example_id for c, _ in lead}
    return (lead + [(c, score) for c, score in chosen if c.example_id not in leading])[:k]


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
) -> list[ContextExample]:
    """Up to ``k`` of the project's usable examples for ``question``, best first (source='project').

    ``known_values``: the question's words the project's value index found as database values; they are
    masked as values (as examples are by their SQL's literals), so questions of one shape meet.
    ``min_similarity`` drops examples about something else entirely: an unrelated demonstration costs prompt
    tokens and can mislead a small model more than no demonstration.
    """
    if k <= 0:
        return []
    masked = mask_question(question, schema, known_values)
    vector = (await embed_async(embedder, [retrieval_text(question, masked)]))[0]
    search_examples = getattr(index, "search_examples", None)
    if search_examples is not None:
        # An index that lives beside the examples (pgvector) returns them in the same round trip.
        found = await search_examples(project_id, vector, max(candidates, k))
    else:
        hits = await index.search(project_id, vector, max(candidates, k))
        # The index is trusted for similarity only: project and usability are re-checked on the rows.
        stored = await load_usable(pool, project_id, [example_id for example_id, _ in hits])
        found = [
            (row, similarity)
            for example_id, similarity in hits
            if (row := stored.get(uuid.UUID(str(example_id)))) is not None
        ]
    if not found:
        return []
    pool_candidates = [
        Candidate(str(row.id), row.question, row.sql, row.sql_skeleton, similarity, row.quality)
        for row, similarity in found
    ]
    chosen = select_from_candidates(pool_candidates, k, diversity=diversity, min_similarity=min_similarity)
    chosen = templates_first(question, schema.dialect, pool_candidates, chosen, k)
    return [
        ContextExample(
            example_id=c.example_id, source="project", question=c.question, sql=c.sql, score=round(score, 4)
        )
        for c, score in chosen
    ]
