"""What the console reads from the system of record. Every query is filtered by the project of the page, so
one project's answers, examples and models never appear on another project's pages."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

import asyncpg

from events import ChartSpec
from services.console.review import (
    AnswerPattern,
    LearningFacts,
    LearningPoint,
    PatternStatus,
    ReviewItem,
    estimated_confidence,
    learning_series,
    pattern_statuses,
    review_order,
)
from services.core.examples.masking import sql_skeleton
from services.generation.pipeline import EXAMPLE_MODEL

#: Answers looked at for the queue and the learning chart (the most recent ones).
HISTORY_LIMIT = 2000


@dataclass(frozen=True)
class Judgement:
    rating: int | None
    thumbs: str | None
    corrected_sql: str | None
    corrected_sql_ok: bool | None
    comment: str | None


@dataclass(frozen=True)
class UsedExampleView:
    example_id: str
    source: str
    score: float
    question: str | None  # None for a library example or one no longer stored


@dataclass
class AnswerView:
    id: uuid.UUID
    question_event_id: uuid.UUID
    project_id: str
    conversation_id: str | None
    question: str
    ok: bool
    error_code: str | None
    sql: str | None
    answer_text: str | None
    row_count: int
    model: str | None
    adapter_version: int | None
    arm: str
    chart: ChartSpec | None
    created_at: datetime
    columns: list[str] = field(default_factory=list)
    rows_preview: list[list[object]] = field(default_factory=list)
    truncated: bool = False
    sql_source: str = "model"
    repaired: bool = False
    suggestions: list[str] = field(default_factory=list)
    judgements: list[Judgement] = field(default_factory=list)
    #: The example made from this answer: verified, rated down, stale or None (no feedback taught one).
    example_status: str | None = None
    example_sql: str | None = None
    examples_used: list[UsedExampleView] = field(default_factory=list)

    #: The confidence the answer was given (chat.answer.confidence); None for answers stored before it was.
    stored_confidence: float | None = None

    @property
    def confidence(self) -> float:
        if self.stored_confidence is not None:
            return self.stored_confidence if self.ok else 0.0
        return estimated_confidence(
            ok=self.ok, sql_source=self.sql_source, repaired=self.repaired, row_count=self.row_count
        )


_ANSWER_SELECT = """
SELECT a.*, d.columns AS d_columns, d.rows_preview, d.truncated, d.sql_source, d.repaired, d.suggestions,
       (SELECT coalesce(json_agg(json_build_object('rating', f.rating, 'thumbs', f.thumbs,
                       'corrected_sql', f.corrected_sql, 'corrected_sql_ok', f.corrected_sql_ok,
                       'comment', f.comment) ORDER BY f.created_at), '[]'::json)
          FROM feedback f WHERE f.answer_id = a.id AND f.project_id = a.project_id) AS judgements,
       e.verified AS e_verified, e.rated_down AS e_rated_down, e.stale AS e_stale, e.sql AS example_sql
FROM answers a
LEFT JOIN answer_details d ON d.answer_id = a.id AND d.project_id = a.project_id
LEFT JOIN examples e ON e.answer_id = a.id AND e.project_id = a.project_id
"""


def _example_status(row: asyncpg.Record) -> str | None:
    if row["e_verified"] is None:
        return None
    if row["e_rated_down"]:
        return "rated down"
    if row["e_stale"]:
        return "stale"
    return "verified" if row["e_verified"] else "unverified"


def _answer(row: asyncpg.Record) -> AnswerView:
    chart = row["chart"]
    return AnswerView(
        id=row["id"],
        question_event_id=row["question_event_id"],
        project_id=row["project_id"],
        conversation_id=row["conversation_id"],
        question=row["question"],
        ok=row["ok"],
        error_code=row["error_code"],
        sql=row["sql"],
        answer_text=row["answer_text"],
        row_count=row["row_count"] or 0,
        model=row["model"],
        adapter_version=row["adapter_version"],
        arm=row["arm"],
        chart=ChartSpec.model_validate(chart) if chart else None,
        created_at=row["created_at"],
        columns=list(row["d_columns"] or []),
        rows_preview=[list(r) for r in (row["rows_preview"] or [])],
        truncated=bool(row["truncated"]),
        sql_source=row["sql_source"] or ("example" if row["model"] == EXAMPLE_MODEL else "model"),
        repaired=bool(row["repaired"]),
        suggestions=list(row["suggestions"] or []),
        judgements=[Judgement(**j) for j in row["judgements"]],
        example_status=_example_status(row),
        example_sql=row["example_sql"],
        stored_confidence=row["confidence"],
    )


async def recent_answers(pool: asyncpg.Pool, project_id: str, limit: int = 50) -> list[AnswerView]:
    rows = await pool.fetch(
        _ANSWER_SELECT + " WHERE a.project_id = $1 ORDER BY a.created_at DESC LIMIT $2", project_id, limit
    )
    return [_answer(r) for r in rows]


async def answer(pool: asyncpg.Pool, project_id: str, answer_id: uuid.UUID) -> AnswerView | None:
    row = await pool.fetchrow(
        _ANSWER_SELECT + " WHERE a.project_id = $1 AND a.id = $2", project_id, answer_id
    )
    if row is None:
        return None
    view = _answer(row)
    used = row["examples_used"] or []
    ids = [u["example_id"] for u in used if u.get("source") == "project"]
    questions: dict[str, str] = {}
    if ids:
        for r in await pool.fetch(
            "SELECT id::text AS id, question FROM examples WHERE project_id = $1 AND id::text = ANY($2::text[])",
            project_id,
            ids,
        ):
            questions[r["id"]] = r["question"]
    view.examples_used = [
        UsedExampleView(u["example_id"], u["source"], float(u["score"]), questions.get(u["example_id"]))
        for u in used
    ]
    return view


async def answer_id_for_question(
    pool: asyncpg.Pool, project_id: str, question_event_id: uuid.UUID
) -> uuid.UUID | None:
    value = await pool.fetchval(
        "SELECT id FROM answers WHERE project_id = $1 AND question_event_id = $2",
        project_id,
        question_event_id,
    )
    return uuid.UUID(str(value)) if value is not None else None


async def question_asked(pool: asyncpg.Pool, project_id: str, question_event_id: uuid.UUID) -> str | None:
    value = await pool.fetchval(
        "SELECT question FROM messages WHERE project_id = $1 AND id = $2", project_id, question_event_id
    )
    return str(value) if value is not None else None


@lru_cache(maxsize=8192)
def _skeleton(sql: str, dialect: str) -> str:
    # An answer's SQL never changes: the same rows come back page after page.
    return sql_skeleton(sql, dialect)


async def _verified_skeletons(pool: asyncpg.Pool, project_id: str) -> list[tuple[datetime, str]]:
    rows = await pool.fetch(
        "SELECT updated_at, sql_skeleton FROM examples WHERE project_id = $1 AND verified AND NOT rated_down"
        " AND NOT stale AND sql_skeleton IS NOT NULL",
        project_id,
    )
    return [(r["updated_at"], r["sql_skeleton"]) for r in rows]


_HISTORY = """
SELECT a.id, a.question, a.created_at, a.ok, a.sql, a.model, a.row_count, a.confidence, d.sql_source, d.repaired,
       (SELECT avg(f.rating)::float FROM feedback f WHERE f.answer_id = a.id AND f.project_id = a.project_id)
           AS rating,
       EXISTS (SELECT 1 FROM feedback f WHERE f.answer_id = a.id AND f.project_id = a.project_id) AS judged
FROM answers a LEFT JOIN answer_details d ON d.answer_id = a.id AND d.project_id = a.project_id
WHERE a.project_id = $1 ORDER BY a.created_at DESC LIMIT $2
"""


@dataclass(frozen=True)
class _HistoryRow:
    id: uuid.UUID
    question: str
    created_at: datetime
    confidence: float
    rating: float | None
    judged: bool
    pattern: AnswerPattern


async def _history(pool: asyncpg.Pool, project_id: str, dialect: str) -> list[_HistoryRow]:
    found = []
    for r in await pool.fetch(_HISTORY, project_id, HISTORY_LIMIT):
        from_example = (r["sql_source"] or "") == "example" or r["model"] == EXAMPLE_MODEL
        found.append(
            _HistoryRow(
                id=r["id"],
                question=r["question"],
                created_at=r["created_at"],
                confidence=(
                    r["confidence"]
                    if r["confidence"] is not None
                    else estimated_confidence(
                        ok=r["ok"],
                        sql_source="example" if from_example else "model",
                        repaired=bool(r["repaired"]),
                        row_count=r["row_count"] or 0,
                    )
                ),
                rating=r["rating"],
                judged=r["judged"],
                pattern=AnswerPattern(
                    r["created_at"], r["ok"], from_example, _skeleton(r["sql"], dialect) if r["sql"] else None
                ),
            )
        )
    return found


async def review_queue(
    pool: asyncpg.Pool, project_id: str, dialect: str, limit: int = 50
) -> list[ReviewItem]:
    """Answers nobody judged yet, in the order a verification teaches most."""
    history = [h for h in await _history(pool, project_id, dialect) if not h.judged]
    verified = {skeleton for _, skeleton in await _verified_skeletons(pool, project_id)}
    items = [
        ReviewItem(
            answer_id=h.id,
            question=h.question,
            created_at=h.created_at,
            confidence=h.confidence,
            pattern_verified=h.pattern.skeleton is not None and h.pattern.skeleton in verified,
        )
        for h in history
    ]
    return review_order(items)[:limit]


async def learning(
    pool: asyncpg.Pool, project_id: str, dialect: str, groups: int = 10
) -> list[LearningPoint]:
    history = await _history(pool, project_id, dialect)
    statuses: list[PatternStatus] = pattern_statuses(
        [h.pattern for h in history], await _verified_skeletons(pool, project_id)
    )
    facts = [LearningFacts(h.created_at, s, h.rating) for h, s in zip(history, statuses, strict=True)]
    return learning_series(facts, groups)


@dataclass(frozen=True)
class ArmFigures:
    arm: str
    adapter_version: int | None
    answers: int
    answered: int
    rating_average: float | None
    judged_good: int
    judged_bad: int


async def arm_figures(pool: asyncpg.Pool, project_id: str) -> list[ArmFigures]:
    rows = await pool.fetch(
        """
        SELECT a.arm, a.adapter_version, count(DISTINCT a.id) AS answers,
               count(DISTINCT a.id) FILTER (WHERE a.ok) AS answered, avg(f.rating)::float AS rating,
               count(DISTINCT a.id) FILTER (WHERE f.rating >= 4 OR f.thumbs = 'up') AS good,
               count(DISTINCT a.id) FILTER (WHERE f.rating <= 2 OR f.thumbs = 'down'
                                                   OR f.corrected_sql IS NOT NULL) AS bad
        FROM answers a LEFT JOIN feedback f ON f.answer_id = a.id AND f.project_id = a.project_id
        WHERE a.project_id = $1 AND a.model IS DISTINCT FROM $2
        GROUP BY a.arm, a.adapter_version ORDER BY a.arm, a.adapter_version NULLS FIRST
        """,
        project_id,
        EXAMPLE_MODEL,
    )
    return [
        ArmFigures(
            r["arm"], r["adapter_version"], r["answers"], r["answered"], r["rating"], r["good"], r["bad"]
        )
        for r in rows
    ]
