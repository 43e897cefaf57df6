"""Replaying a project's history through the product: each past interaction becomes a stored answer with the
user's rating as feedback, and the feedback consumer's learner (``services.feedback.learn.Learner``, which
judges with ``services.feedback.rules.judge``) decides what is learnt. Verified answers become indexed
examples; rated-down ones are marked and never retrieved or trained on.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from bench.accuracy.data import HistoryItem
from events import ChatAnswer, ChatFeedback
from services.core.answers import (
    answer_row,
    delete_answers,
    feedback_for_answer,
    store_answer,
    store_feedback,
)
from services.core.projects import delete_project
from services.feedback.learn import Learner

_NAMESPACE = uuid.UUID("6f0d2a51-3c4e-4b8a-9e1d-2f7c5a9b0e47")


@dataclass
class ReplayStats:
    items: int = 0
    actions: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, int]:
        return {"items": self.items, **{k: self.actions[k] for k in ("verify", "reject", "correct", "none")}}


def _id(project_id: str, item: HistoryItem, kind: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{project_id}\n{item.id}\n{kind}")


async def reset_project(pool: asyncpg.Pool, project_id: str) -> None:
    """Forget everything a previous run stored for the project (its rows cascade from the project)."""
    await delete_answers(pool, project_id)
    await delete_project(pool, project_id)


async def replay_history(
    pool: asyncpg.Pool,
    learner: Learner,
    project_id: str,
    items: Sequence[HistoryItem],
    *,
    model: str = "history",
) -> ReplayStats:
    """Store each item as an answer plus its rating and let the learner apply it, oldest first."""
    stats = ReplayStats()
    for item in items:
        question_id = _id(project_id, item, "question")
        answer = ChatAnswer.model_validate(
            {
                "event_id": _id(project_id, item, "answer"),
                "project_id": project_id,
                "correlation_id": question_id,
                "question_event_id": question_id,
                "conversation_id": f"history-{item.id}",
                "user_id": "history",
                "question": item.question,
                "answer_text": "",
                "sql": item.sql,
                "model": model,
            }
        )
        feedback = ChatFeedback.model_validate(
            {
                "event_id": _id(project_id, item, "feedback"),
                "project_id": project_id,
                "correlation_id": question_id,
                "answer_id": answer.event_id,
                "user_id": "history",
                "rating": item.rating,
            }
        )
        await store_answer(pool, answer)
        await store_feedback(pool, feedback)
        row = await answer_row(pool, project_id, answer.event_id)
        assert row is not None
        for fb in await feedback_for_answer(pool, project_id, answer.event_id):
            decision = await learner.apply(row, fb)
            stats.actions[decision.action] += 1
        stats.items += 1
    return stats
