"""Execution-consistency voting and the confidence of an answer.

Candidates that ran are grouped by their result (the multiset of rows, so two SQL spellings of one answer
agree); the largest group wins, ties going to the group of the model's own (greedy) first answer. The
confidence of an answer is a number in [0, 1] with the evidence it rests on: an answer from a verified
example is as sure as querylift gets; a model-written one is as sure as its candidates agree, less when its
result is empty or needed a repair. The bands are calibrated on the benchmark (bench/README.md: accuracy per
confidence bucket), and an upstream product may show a low-confidence answer as a draft.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from services.generation.candidates import Candidate

Basis = Literal[
    "verified_example",
    "adapted_example",
    "composed_examples",
    "composed_model",
    "agreement",
    "single_candidate",
]


#: Answers from examples, by how directly the example asked the question (calibrated in bench/README.md).
_EXAMPLE_CONFIDENCE: dict[str, float] = {
    "verified_example": 0.95,
    "adapted_example": 0.8,
    "composed_examples": 0.75,
    "composed_model": 0.5,
}


@dataclass(frozen=True)
class Vote:
    winner: int  # index into the candidates
    agreeing: int  # candidates whose result equals the winner's
    voters: int  # candidates that ran


def result_key(candidate: Candidate) -> str:
    """The candidate's result as a comparable value: rows as a sorted multiset, with the column count."""
    assert candidate.result is not None
    rows = sorted(json.dumps(list(r), default=str) for r in candidate.result.rows)
    return json.dumps([len(candidate.result.columns), rows, candidate.result.truncated])


def vote(candidates: Sequence[Candidate]) -> Vote | None:
    """The winning candidate among those that ran (candidates[0] is the greedy answer); None if none ran."""
    ran = [i for i, c in enumerate(candidates) if c.outcome == "ran" and c.result is not None]
    if not ran:
        return None
    groups: dict[str, list[int]] = {}
    for i in ran:
        groups.setdefault(result_key(candidates[i]), []).append(i)
    # Largest group; among equals the one holding the earliest candidate (the greedy answer when it ran).
    best = max(groups.values(), key=lambda members: (len(members), -members[0]))
    return Vote(winner=best[0], agreeing=len(best), voters=len(ran))


def agreement_settled(candidates: Sequence[Candidate], wanted: int) -> bool:
    """Whether the first candidates already agree, so drawing more cannot change the winner's group."""
    result = vote(candidates)
    return result is not None and result.agreeing >= wanted and result.agreeing == len(candidates)


def confidence(
    *,
    from_example: bool,
    vote_result: Vote | None,
    candidates: int,
    empty: bool,
    repaired: bool,
    basis: Basis = "verified_example",
) -> tuple[float, Basis]:
    if from_example:
        return _EXAMPLE_CONFIDENCE.get(basis, 0.95), basis
    if vote_result is None or candidates <= 1:
        score = 0.45 - (0.15 if empty else 0.0) - (0.1 if repaired else 0.0)
        return round(max(score, 0.05), 3), "single_candidate"
    share = vote_result.agreeing / candidates
    score = 0.2 + 0.7 * share - (0.2 if empty else 0.0) - (0.05 if repaired else 0.0)
    return round(min(max(score, 0.05), 0.9), 3), "agreement"


__all__ = ["Basis", "Vote", "agreement_settled", "confidence", "result_key", "vote"]
