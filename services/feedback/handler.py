"""Feedback consumer: stores every outcome and every judgement, learns from them, and requests training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import asyncpg

from events import LOW_CONFIDENCE, ChatAnswer, ChatError, ChatFeedback, Event
from services.core.answers import (
    answer_row,
    feedback_for_answer,
    review_queue_size,
    store_answer,
    store_answer_details,
    store_error,
    store_feedback,
)
from services.feedback.learn import Learner
from services.feedback.trigger import maybe_request_training
from services.infra import metrics
from services.infra.consumer import BaseHandler


class FeedbackHandler(BaseHandler):
    name: ClassVar[str] = "feedback"
    subscriptions: ClassVar[dict[str, type[Event]]] = {
        ChatAnswer.topic: ChatAnswer,
        ChatError.topic: ChatError,
        ChatFeedback.topic: ChatFeedback,
    }

    def __init__(self, pool: asyncpg.Pool, learner: Learner, *, training_threshold: int) -> None:
        self.pool = pool
        self.learner = learner
        self.training_threshold = training_threshold

    async def handle(self, event: Event) -> Sequence[Event]:
        if isinstance(event, ChatAnswer):
            await store_answer(self.pool, event)
            if event.confidence < LOW_CONFIDENCE:
                await self._count_review_queue(event.project_id)
            await store_answer_details(self.pool, event)
            # Feedback can overtake its answer (they travel on different topics): apply what waited.
            return await self._learn(event.project_id, event.event_id, event.event_id)
        if isinstance(event, ChatError):
            await store_error(self.pool, event)
            metrics.ERRORS.labels(event.code.value, event.stage).inc()
            if event.question_event_id is None:
                return ()
            return await self._learn(event.project_id, event.event_id, event.event_id)
        assert isinstance(event, ChatFeedback)
        await store_feedback(self.pool, event)
        await self._count_review_queue(event.project_id)
        if event.rating is not None:
            metrics.FEEDBACK_RATINGS.labels(event.project_id, str(event.rating)).inc()
            metrics.FEEDBACK_RATING_POINTS.labels(event.project_id).inc(event.rating)
        if event.thumbs is not None:
            metrics.FEEDBACK_THUMBS.labels(event.project_id, event.thumbs).inc()
        if event.corrected_sql:
            metrics.FEEDBACK_CORRECTIONS.labels(event.project_id).inc()
        if event.chart_relevant is not None:
            metrics.CHART_FEEDBACK.labels(event.project_id, str(event.chart_relevant).lower()).inc()
        return await self._learn(event.project_id, event.answer_id, event.event_id, judged=True)

    async def _count_review_queue(self, project_id: str) -> None:
        size = await review_queue_size(self.pool, project_id, below=LOW_CONFIDENCE)
        metrics.REVIEW_QUEUE.labels(project_id).set(size)

    async def _learn(
        self, project_id: str, answer_id: object, cause: object, judged: bool = False
    ) -> Sequence[Event]:
        # Most answers have no feedback yet when they are stored: one read settles that.
        feedbacks = await feedback_for_answer(self.pool, project_id, answer_id)
        if not feedbacks:
            return ()
        answer = await answer_row(self.pool, project_id, answer_id)
        if answer is None:
            return ()
        learned = False
        decision = None
        for feedback in feedbacks:
            decision = await self.learner.apply(answer, feedback)
            learned = learned or decision.action in ("verify", "correct")
        if judged and decision is not None and decision.action != "none":
            verdict = "good" if decision.action == "verify" else "bad"
            metrics.FEEDBACK_BY_ARM.labels(project_id, answer["arm"], verdict).inc()
        if not learned:
            return ()
        request = await maybe_request_training(
            self.pool,
            project_id,
            default_threshold=self.training_threshold,
            cause=cause,  # type: ignore[arg-type]
        )
        return [request] if request else ()
