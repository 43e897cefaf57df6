"""Training consumer: training.requested → a LoRA job on Ray → training.status events and, when the adapter
beats the serving model, model.updated; chat.feedback → the canary's live ratings reviewed → model.updated when
they decide (promotion or rollback)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

import asyncpg

from events import ChatFeedback, Event, ModelUpdated, TrainingRequested, TrainingStatus
from services.core import model_registry as registry
from services.core.customer_db import CustomerDatabases
from services.core.llm.base import LLM
from services.infra import metrics
from services.infra.consumer import BaseHandler
from services.infra.settings import Settings
from services.training import canary
from services.training.announce import serving_changed
from services.training.job import run_training_job
from services.training.ray_runner import RayTrainingRunner

#: Builds the gate's model and the project's databases (the serving model as the composition root wires it).
EvaluatorFactory = Callable[[], tuple[LLM, CustomerDatabases]]

log = logging.getLogger(__name__)


class TrainingHandler(BaseHandler):
    name: ClassVar[str] = "training"
    subscriptions: ClassVar[dict[str, type[Event]]] = {
        TrainingRequested.topic: TrainingRequested,
        ChatFeedback.topic: ChatFeedback,
    }

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        trainer: RayTrainingRunner | None = None,
        evaluator: EvaluatorFactory | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self._runner = trainer
        # The gate compares with what serves the project today (the configured model or its adapter, as the
        # composition root builds it); made on the first training request, never for canary reviews.
        self._evaluator = evaluator
        self._evaluator_llm: LLM | None = None
        self._databases: CustomerDatabases | None = None

    def _runner_ready(self) -> RayTrainingRunner:
        if self._runner is None:
            self._runner = RayTrainingRunner(self.settings)
        return self._runner

    def _evaluation(self) -> tuple[LLM, CustomerDatabases]:
        if self._evaluator_llm is None or self._databases is None:
            if self._evaluator is None:
                raise RuntimeError("the training consumer was built without an evaluator for its gate")
            self._evaluator_llm, self._databases = self._evaluator()
        return self._evaluator_llm, self._databases

    async def close(self) -> None:
        if self._databases is not None:
            await self._databases.close()
        if self._runner is not None:
            self._runner.shutdown()

    async def handle(self, event: Event) -> Sequence[Event]:
        if isinstance(event, ChatFeedback):
            return await self._review_canary(event)
        assert isinstance(event, TrainingRequested)
        job = await registry.get_job(self.pool, event.event_id)
        if job is not None and job.status in ("succeeded", "failed", "cancelled", "rejected"):
            return ()  # finished before a crash let this request be redelivered
        started = time.perf_counter()
        statuses: list[Event] = [self._status(event, "submitted", 0.0, "LoRA training submitted to Ray")]
        metrics.TRAINING_JOBS.labels("submitted").inc()
        metrics.TRAINING_RUNNING.inc()
        llm, databases = self._evaluation()
        try:
            outcome = await run_training_job(
                self.pool,
                self.settings,
                self._runner_ready(),
                project_id=event.project_id,
                job_id=event.event_id,
                base_model=event.base_model,
                evaluator_llm=llm,
                databases=databases,
            )
        except registry.JobAlreadyOpen as exc:
            return [*statuses, self._status(event, "rejected", None, str(exc))]
        finally:
            metrics.TRAINING_RUNNING.dec()
        seconds = time.perf_counter() - started
        metrics.TRAINING_JOBS.labels(outcome.status).inc()
        metrics.TRAINING_SECONDS.labels(outcome.status).observe(seconds)
        out: list[Event] = [
            *statuses,
            self._status(
                event, outcome.status, 1.0, outcome.error or f"adapter {outcome.promoted}", outcome.metrics
            ),
        ]
        version = outcome.version
        if version is not None and outcome.promoted in ("active", "canary"):
            metrics.MODEL_VERSION.labels(event.project_id, outcome.promoted).set(version.version)
            update = ModelUpdated(
                project_id=event.project_id,
                model_version_id=version.id,
                version=version.version,
                base_model=version.base_model,
                adapter_path=version.adapter_path,
                adapter_checksum=version.checksum,
                status=outcome.promoted,
                canary_share=self.settings.canary_share if outcome.promoted == "canary" else 0.0,
                metrics=outcome.metrics,
            )
            out.append(update.with_derived_id(event.event_id, "model"))
        return out

    async def _review_canary(self, feedback: ChatFeedback) -> Sequence[Event]:
        """A rating may be the one that lets the canary's ratings decide. The feedback consumer stores
        ratings independently, so this one may not be counted yet: the next rating reviews again."""
        review = await canary.review(
            self.pool, feedback.project_id, min_ratings=self.settings.canary_min_ratings
        )
        if review is None or review.verdict.action == "wait":
            return ()
        log.info(
            "canary decided",
            extra={
                "project": feedback.project_id,
                "version": review.version,
                "action": review.verdict.action,
            },
        )
        serving = (await registry.active_and_canary(self.pool, feedback.project_id)).active
        if serving is not None:
            metrics.MODEL_VERSION.labels(feedback.project_id, "active").set(serving.version)
        update = serving_changed(feedback.project_id, serving, self.settings.training_base_model)
        return [update.with_derived_id(feedback.event_id, f"canary-{review.verdict.action}")]

    def _status(
        self,
        request: TrainingRequested,
        status: str,
        progress: float | None,
        message: str,
        extra: dict[str, object] | None = None,
    ) -> TrainingStatus:
        event = TrainingStatus(
            project_id=request.project_id,
            job_id=request.event_id,
            status=status,  # type: ignore[arg-type]
            progress=progress,
            message=message[:2000],
            metrics=extra or {},
        )
        return event.with_derived_id(request.event_id, f"status-{status}")  # type: ignore[no-any-return]

    def on_failure(self, event: Event, error: BaseException) -> Sequence[Event]:
        if not isinstance(event, TrainingRequested):
            return ()
        return [self._status(event, "failed", None, f"training failed: {type(error).__name__}: {error}")]
