"""What the review console ranks and counts: plain functions over facts read from the system of record.

* ``estimated_confidence``: for answers stored before chat.answer carried a confidence, an estimate from how
  they were made. An answer from a verified example was right before with other values; one the model wrote
  and that ran on the first try is a fair guess; a repaired one or one that returned nothing is shaky; a
  failure has nothing to trust. Newer answers carry the generation consumer's own confidence.
* ``pattern_statuses``: whether each answer's SQL pattern (its skeleton: structure without names or values)
  was one the project had verified at the time it was given.
* ``review_order``: the queue of answers nobody judged yet, in the order a verification teaches most: low
  confidence first (a correction there fixes what is most likely wrong), then patterns the project has not
  verified (a verification there opens a pattern retrieval and template answers can reuse), newest first.
* ``learning_series``: the project's answers in chronological groups: share answered from verified
  examples, rating average, answers per pattern status.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from events import LOW_CONFIDENCE

PatternStatus = Literal["example", "verified", "new", "failed"]
PATTERN_STATUSES: tuple[PatternStatus, ...] = ("example", "verified", "new", "failed")
PATTERN_LABELS: dict[PatternStatus, str] = {
    "example": "answered from a verified example",
    "verified": "pattern verified before",
    "new": "new pattern",
    "failed": "no answer",
}

HIGH_CONFIDENCE = 0.8


def estimated_confidence(
    *, ok: bool, sql_source: str, repaired: bool, row_count: int, schema_valid: bool = True
) -> float:
    """A confidence in [0, 1] from how the answer was made (not calibrated: an order for review)."""
    if not ok or not schema_valid:
        return 0.0
    if sql_source == "example":
        return 0.9
    confidence = 0.6
    if repaired:
        confidence = 0.35
    if row_count == 0:
        confidence = min(confidence, 0.3)
    return confidence


def confidence_words(confidence: float) -> str:
    if confidence >= HIGH_CONFIDENCE:
        return "high"
    if confidence >= LOW_CONFIDENCE:
        return "medium"
    return "low"


@dataclass(frozen=True)
class AnswerPattern:
    """One answer as ``pattern_statuses`` needs it."""

    created_at: datetime
    ok: bool
    from_example: bool
    skeleton: str | None


def pattern_statuses(
    answers: Sequence[AnswerPattern], verified: Sequence[tuple[datetime, str]]
) -> list[PatternStatus]:
    """For each answer, its pattern status at the time it was given (``verified``: when each verified
    example of the project was made, and its skeleton)."""
    pending = sorted(verified)
    known: set[str] = set()
    statuses: dict[int, PatternStatus] = {}
    position = 0
    for index in sorted(range(len(answers)), key=lambda i: answers[i].created_at):
        answer = answers[index]
        while position < len(pending) and pending[position][0] <= answer.created_at:
            known.add(pending[position][1])
            position += 1
        if not answer.ok:
            statuses[index] = "failed"
        elif answer.from_example:
            statuses[index] = "example"
        elif answer.skeleton is not None and answer.skeleton in known:
            statuses[index] = "verified"
        else:
            statuses[index] = "new"
    return [statuses[i] for i in range(len(answers))]


@dataclass(frozen=True)
class ReviewItem:
    answer_id: uuid.UUID
    question: str
    created_at: datetime
    confidence: float
    pattern_verified: bool


def review_order(items: Sequence[ReviewItem]) -> list[ReviewItem]:
    """Low confidence first, then unverified patterns, then newest."""

    def bucket(item: ReviewItem) -> int:
        if item.confidence < LOW_CONFIDENCE:
            return 0
        return 1 if item.confidence < HIGH_CONFIDENCE else 2

    by_time = sorted(items, key=lambda item: item.created_at, reverse=True)
    return sorted(by_time, key=lambda item: (bucket(item), item.pattern_verified))


@dataclass(frozen=True)
class LearningFacts:
    created_at: datetime
    status: PatternStatus
    #: Mean rating of the answer's feedback, when it has any.
    rating: float | None


@dataclass(frozen=True)
class LearningPoint:
    first: int  # 1-based position of the group's first answer
    last: int
    started_at: datetime
    from_examples_share: float
    rating_average: float | None
    by_status: dict[PatternStatus, int] = field(default_factory=dict)

    @property
    def answers(self) -> int:
        return self.last - self.first + 1


def learning_series(facts: Sequence[LearningFacts], groups: int = 10) -> list[LearningPoint]:
    """The answers in chronological order, cut into at most ``groups`` groups of equal size."""
    ordered = sorted(facts, key=lambda f: f.created_at)
    if not ordered:
        return []
    size = max(1, math.ceil(len(ordered) / groups))
    points = []
    for start in range(0, len(ordered), size):
        chunk = ordered[start : start + size]
        ratings = [f.rating for f in chunk if f.rating is not None]
        answered = [f for f in chunk if f.status != "failed"]
        points.append(
            LearningPoint(
                first=start + 1,
                last=start + len(chunk),
                started_at=chunk[0].created_at,
                from_examples_share=(
                    sum(f.status == "example" for f in answered) / len(answered) if answered else 0.0
                ),
                rating_average=sum(ratings) / len(ratings) if ratings else None,
                by_status={s: sum(f.status == s for f in chunk) for s in PATTERN_STATUSES},
            )
        )
    return points
