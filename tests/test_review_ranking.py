"""The console's ranking and counting: confidence estimate, pattern status, review queue, learning series."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.console.review import (
    AnswerPattern,
    LearningFacts,
    ReviewItem,
    estimated_confidence,
    learning_series,
    pattern_statuses,
    review_order,
)

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_confidence_follows_how_the_answer_was_made() -> None:
    example = estimated_confidence(ok=True, sql_source="example", repaired=False, row_count=3)
    first_try = estimated_confidence(ok=True, sql_source="model", repaired=False, row_count=3)
    repaired = estimated_confidence(ok=True, sql_source="model", repaired=True, row_count=3)
    empty = estimated_confidence(ok=True, sql_source="model", repaired=False, row_count=0)
    failed = estimated_confidence(ok=False, sql_source="model", repaired=False, row_count=0)
    assert example > first_try > repaired > empty > failed == 0.0


def test_a_pattern_counts_as_verified_only_from_the_time_it_was_verified() -> None:
    answers = [
        AnswerPattern(at(0), True, False, "SELECT COUNT(*) FROM _ WHERE _ = <val>"),
        AnswerPattern(at(10), True, False, "SELECT COUNT(*) FROM _ WHERE _ = <val>"),
        AnswerPattern(at(11), True, True, "SELECT COUNT(*) FROM _ WHERE _ = <val>"),
        AnswerPattern(at(12), True, False, "SELECT _, COUNT(*) FROM _ GROUP BY _"),
        AnswerPattern(at(13), False, False, None),
    ]
    verified = [(at(5), "SELECT COUNT(*) FROM _ WHERE _ = <val>")]
    assert pattern_statuses(answers, verified) == ["new", "verified", "example", "new", "failed"]
    # The order of the input is kept in the output.
    assert pattern_statuses(list(reversed(answers)), verified) == [
        "failed",
        "new",
        "example",
        "verified",
        "new",
    ]


def item(confidence: float, verified: bool, minute: int) -> ReviewItem:
    return ReviewItem(uuid.uuid4(), f"q{minute}", at(minute), confidence, verified)


def test_review_queue_low_confidence_first_then_unverified_patterns_then_newest() -> None:
    high_new = item(0.9, False, 1)
    medium_verified = item(0.6, True, 2)
    medium_new_old = item(0.6, False, 3)
    medium_new_recent = item(0.6, False, 4)
    failed = item(0.0, False, 0)
    low_verified = item(0.35, True, 5)
    queue = review_order([high_new, medium_verified, medium_new_old, failed, medium_new_recent, low_verified])
    assert queue == [failed, low_verified, medium_new_recent, medium_new_old, medium_verified, high_new]


def test_learning_series_groups_answers_in_time_order() -> None:
    statuses = ["new", "new", "failed", "verified", "example", "example"]
    ratings = [1.0, None, None, 5.0, 4.0, None]
    facts = [LearningFacts(at(i), s, r) for i, (s, r) in enumerate(zip(statuses, ratings, strict=True))]  # type: ignore[arg-type]
    points = learning_series(list(reversed(facts)), groups=3)
    assert [(p.first, p.last) for p in points] == [(1, 2), (3, 4), (5, 6)]
    assert [p.from_examples_share for p in points] == [0.0, 0.0, 1.0]
    assert [p.rating_average for p in points] == [1.0, 5.0, 4.0]
    assert points[1].by_status == {"example": 0, "verified": 1, "new": 0, "failed": 1}
    assert points[0].started_at == at(0)
    assert learning_series([]) == []
