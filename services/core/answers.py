"""The ``answers``, ``answer_details`` and ``feedback`` tables: answers, errors and feedback in the system of
record (every insert is idempotent on its event id), and the reads other modules make of them."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from events import ChatAnswer, ChatError, ChatFeedback


async def store_answer(pool: asyncpg.Pool, answer: ChatAnswer) -> bool:
    status = await pool.execute(
        "INSERT INTO answers (id, question_event_id, project_id, conversation_id, user_id, question, sql, answer_text,"
        " ok, schema_valid, row_count, model, adapter_version, arm, examples_used, chart, timings_ms, confidence,"
        " confidence_basis)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,true,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18)"
        " ON CONFLICT DO NOTHING",
        answer.event_id,
        answer.question_event_id,
        answer.project_id,
        answer.conversation_id,
        answer.user_id,
        answer.question,
        answer.sql,
        answer.answer_text,
        answer.schema_valid,
        answer.row_count,
        answer.model,
        answer.adapter_version,
        answer.arm,
        [u.model_dump() for u in answer.examples_used],
        answer.chart.model_dump() if answer.chart else None,
        answer.timings_ms,
        answer.confidence,
        answer.confidence_basis,
    )
    return status.endswith(" 1")


async def store_error(pool: asyncpg.Pool, error: ChatError) -> bool:
    if error.question_event_id is None:
        return False  # an invalid event with no question id: the dead-letter record is the trace
    question = await pool.fetchval("SELECT question FROM messages WHERE id = $1", error.question_event_id)
    status = await pool.execute(
        "INSERT INTO answers (id, question_event_id, project_id, conversation_id, user_id, question, sql, ok,"
        " error_code) SELECT $1,$2,$3,$4,$5,$6,$7,false,$8 WHERE EXISTS (SELECT 1 FROM projects WHERE id = $3)"
        " ON CONFLICT DO NOTHING",
        error.event_id,
        error.question_event_id,
        error.project_id,
        error.conversation_id,
        error.user_id,
        question or "",
        error.sql,
        error.code.value,
    )
    return status.endswith(" 1")


async def store_feedback(pool: asyncpg.Pool, feedback: ChatFeedback) -> bool:
    status = await pool.execute(
        "INSERT INTO feedback (id, answer_id, project_id, user_id, thumbs, rating, corrected_sql, comment, chart_relevant)"
        " SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9 WHERE EXISTS (SELECT 1 FROM projects WHERE id = $3)"
        " ON CONFLICT DO NOTHING",
        feedback.event_id,
        feedback.answer_id,
        feedback.project_id,
        feedback.user_id,
        feedback.thumbs,
        feedback.rating,
        feedback.corrected_sql,
        feedback.comment,
        feedback.chart_relevant,
    )
    return status.endswith(" 1")


async def answer_row(pool: asyncpg.Pool, project_id: str, answer_id: object) -> asyncpg.Record | None:
    # Filtered by project: feedback can never reach another project's answer.
    return await pool.fetchrow(
        "SELECT * FROM answers WHERE id = $1 AND project_id = $2", answer_id, project_id
    )


async def feedback_for_answer(pool: asyncpg.Pool, project_id: str, answer_id: object) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT * FROM feedback WHERE answer_id = $1 AND project_id = $2 ORDER BY created_at",
            answer_id,
            project_id,
        )
    )


async def review_queue(
    pool: asyncpg.Pool, project_id: str, *, below: float, limit: int = 50
) -> list[asyncpg.Record]:
    """The project's answers below ``below`` confidence that got no feedback, least sure first: where an
    analyst's verification teaches the project most."""
    return await pool.fetch(
        "SELECT a.id, a.question, a.sql, a.confidence, a.confidence_basis, a.created_at FROM answers a"
        " WHERE a.project_id = $1 AND a.ok AND a.confidence < $2"
        " AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.answer_id = a.id AND f.project_id = a.project_id)"
        " ORDER BY a.confidence, a.created_at LIMIT $3",
        project_id,
        below,
        limit,
    )


async def review_queue_size(pool: asyncpg.Pool, project_id: str, *, below: float) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM answers a WHERE a.project_id = $1 AND a.ok AND a.confidence < $2"
        " AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.answer_id = a.id AND f.project_id = a.project_id)",
        project_id,
        below,
    )
    return count


async def store_answer_details(pool: asyncpg.Pool, answer: ChatAnswer) -> None:
    """The preview, provenance and suggestions of a stored answer (what the review console shows)."""
    await pool.execute(
        "INSERT INTO answer_details (answer_id, project_id, columns, rows_preview, truncated, sql_source,"
        " repaired, attempts, suggestions)"
        " SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9 WHERE EXISTS (SELECT 1 FROM answers WHERE id = $1 AND project_id = $2)"
        " ON CONFLICT DO NOTHING",
        answer.event_id,
        answer.project_id,
        answer.columns,
        # JSON keeps what the event carried (numbers, text, null); dates and decimals are already strings there.
        answer.model_dump(mode="json", include={"rows_preview"})["rows_preview"],
        answer.truncated,
        answer.sql_source,
        answer.repaired,
        answer.attempts,
        answer.suggestions,
    )


_ARM_RATINGS = """
WITH latest AS (
    SELECT DISTINCT ON (f.answer_id) f.answer_id, f.thumbs, f.rating, f.corrected_sql
    FROM feedback f WHERE f.project_id = $1
    ORDER BY f.answer_id, f.created_at DESC
)
SELECT a.arm,
       count(*) AS answers,
       count(l.answer_id) AS rated,
       count(*) FILTER (WHERE l.thumbs = 'up' OR l.rating >= 4) AS good,
       count(*) FILTER (WHERE l.thumbs = 'down' OR l.rating <= 2 OR l.corrected_sql IS NOT NULL) AS bad
FROM answers a LEFT JOIN latest l ON l.answer_id = a.id
WHERE a.project_id = $1 AND a.created_at >= $2
  AND (a.arm = 'control' OR (a.arm = 'candidate' AND a.adapter_version = $3))
GROUP BY a.arm
"""


async def arm_ratings(
    pool: asyncpg.Pool, project_id: str, *, since: dt.datetime, candidate_version: int
) -> list[asyncpg.Record]:
    """Per arm since ``since`` (control, and the candidate of that version): answers, rated, good and bad,
    each answer judged by its latest feedback."""
    return list(await pool.fetch(_ARM_RATINGS, project_id, since, candidate_version))


async def answer_project(pool: asyncpg.Pool, answer_id: uuid.UUID) -> str | None:
    """The project an answer belongs to; None while it is not recorded (or never was)."""
    project = await pool.fetchval("SELECT project_id FROM answers WHERE id = $1", answer_id)
    return str(project) if project is not None else None


async def record_correction_checked(pool: asyncpg.Pool, feedback_id: uuid.UUID, ok: bool) -> None:
    """Whether a feedback's corrected SQL passed the check and ran (the learner tried it)."""
    await pool.execute("UPDATE feedback SET corrected_sql_ok = $2 WHERE id = $1", feedback_id, ok)


async def delete_answers(pool: asyncpg.Pool, project_id: str) -> None:
    """A project's answers with their details and feedback (they cascade from the answer)."""
    await pool.execute("DELETE FROM answers WHERE project_id = $1", project_id)
