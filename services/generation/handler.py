"""Generation consumer: retrieval.context → chat.answer or chat.error; model.updated → routing refresh."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import ClassVar

import asyncpg

from events import (
    ChatAnswer,
    ChatError,
    ContextReady,
    ErrorCode,
    Event,
    ModelUpdated,
    QueryResolved,
    UsedExample,
)
from services.core.column_values_store import ValueIndexes
from services.core.customer_db import CustomerDatabases, DatabaseUnavailable
from services.core.examples.paraphrases import ProjectParaphrases
from services.core.llm.base import LLM, ModelUnavailable
from services.core.projects import ProjectCache, load_schema
from services.generation.followups import suggest_followups
from services.generation.pipeline import GenerationConfig, generate_answer
from services.generation.serving import ModelRouter
from services.infra import metrics
from services.infra.consumer import BaseHandler
from services.infra.errors import question_error

log = logging.getLogger(__name__)


class GenerationHandler(BaseHandler):
    name: ClassVar[str] = "generation"
    answer_path: ClassVar[bool] = True
    subscriptions: ClassVar[dict[str, type[Event]]] = {
        ContextReady.topic: ContextReady,
        ModelUpdated.topic: ModelUpdated,
    }

    def __init__(
        self,
        pool: asyncpg.Pool,
        llm: LLM,
        databases: CustomerDatabases,
        config: GenerationConfig,
        router: ModelRouter | None = None,
        project_cache_s: float = 5.0,
        paraphrases: bool = False,
    ) -> None:
        self.pool = pool
        self.projects = ProjectCache(pool, project_cache_s)
        self.llm = llm
        self.databases = databases
        self.config = config
        self.router = router or ModelRouter(pool)
        self.values = ValueIndexes(pool)
        self.paraphrases = ProjectParaphrases(pool) if paraphrases else None

    def ordering_key(self, event: Event) -> str:
        # A model call takes long; only a conversation's own turns need to wait for each other.
        if isinstance(event, ContextReady):
            return f"{event.project_id}/{event.query.conversation_id}"
        return event.project_id

    async def close(self) -> None:
        await self.databases.close()
        await self.llm.close()

    async def handle(self, event: Event) -> Sequence[Event]:
        if isinstance(event, ModelUpdated):
            await self.router.apply(event)
            return ()
        assert isinstance(event, ContextReady)
        query = event.query
        base = {
            "project_id": query.project_id,
            "correlation_id": query.question_event_id,
            "question_event_id": query.question_event_id,
            "conversation_id": query.conversation_id,
            "user_id": query.user_id,
        }
        project = await self.projects.get(query.project_id)
        if project is None:
            message = f"Project {query.project_id!r} was removed while the question was in flight."
            return [self._error(query, ErrorCode.unknown_project, message)]
        schema = await load_schema(self.pool, query.schema_version_id)
        values = await self.values.get(project.id, project.values_collected_at)
        adapter, arm = await self.router.choose(query.project_id, query.question_event_id)
        try:
            result = await generate_answer(
                self.llm,
                self.databases,
                question=query.question,
                schema=schema,
                database_url=project.database_url,
                history=query.history,
                examples=event.examples,
                fewshot=event.fewshot,
                config=self.config,
                adapter=adapter,
                domain_note=project.description,
                values=values,
                reserve=event.reserve,
                paraphrases=(
                    await self.paraphrases.get(project.id, schema.dialect) if self.paraphrases else None
                ),
            )
        except ModelUnavailable as exc:
            message = f"The language model is unavailable: {exc}. Ask again once it is back."
            return [self._error(query, ErrorCode.model_unavailable, message, retryable=True)]
        except DatabaseUnavailable as exc:
            message = f"The project's database could not be reached: {exc}"
            return [self._error(query, ErrorCode.database_unavailable, message, retryable=True)]

        metrics.SQL_SCHEMA_VALID.labels(query.project_id, str(result.schema_valid).lower()).inc()
        from_example = result.sql_source == "example"
        if from_example:
            metrics.ANSWERS_FROM_EXAMPLES.labels(query.project_id).inc()
        else:
            metrics.LLM_TOKENS.labels("in", result.model).inc(result.prompt_tokens)
            metrics.LLM_TOKENS.labels("out", result.model).inc(result.completion_tokens)
            metrics.LLM_SECONDS.labels(result.model).observe(result.timings_ms.get("llm", 0.0) / 1000)
        if result.repaired:
            metrics.SQL_REPAIRS.labels(query.project_id).inc()
        for stage, ms in result.timings_ms.items():
            metrics.STAGE_SECONDS.labels(stage).observe(ms / 1000)
        if not result.ok:
            outcome = "refused" if result.error_code == ErrorCode.unsafe_sql else "error"
            metrics.SQL_EXECUTIONS.labels(query.project_id, outcome).inc()
            message = result.error_message or "No answer could be produced."
            return [
                self._error(query, result.error_code or ErrorCode.internal, message, sql=result.sql or None)
            ]

        metrics.SQL_EXECUTIONS.labels(query.project_id, "ok").inc()
        metrics.ANSWER_CONFIDENCE.labels(query.project_id, result.confidence_basis).observe(result.confidence)
        queued = result.model_timings.get("queue_s")
        if queued is not None:
            metrics.MODEL_QUEUE_SECONDS.labels(result.model).observe(queued)
        metrics.ANSWERS.labels(query.project_id, arm).inc()
        total_ms = time.time() * 1000 - query.asked_at_ms
        metrics.ANSWER_SECONDS.labels(query.project_id).observe(max(total_ms, 0) / 1000)
        assert result.result is not None
        # An answer from examples used those alone (one, or the two of a composition); no prompt was built.
        shown = [*event.examples, *event.fewshot]
        if from_example:
            shown = [e for e in event.examples if e.example_id in result.example_ids]
            # The adapter played no part: the answer counts for neither arm of an A/B comparison's model.
            adapter, arm = None, "control"
        used = [UsedExample(example_id=e.example_id, source=e.source, score=e.score) for e in shown]
        answer = ChatAnswer(
            **base,
            question=query.question,
            answer_text=result.answer_text,
            sql=result.sql,
            columns=result.result.columns,
            rows_preview=result.preview(self.config.preview_rows),
            row_count=len(result.result.rows),
            truncated=result.result.truncated,
            chart=result.chart,
            suggestions=suggest_followups(query.question, result.sql, event.examples, query.dialect),
            model=result.model,
            adapter_version=adapter.version if adapter else None,
            arm=arm,
            examples_used=used,
            schema_valid=result.schema_valid,
            repaired=result.repaired,
            attempts=result.attempts,
            sql_source=result.sql_source,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            confidence=result.confidence,
            confidence_basis=result.confidence_basis,
            candidates=result.candidates,
            agreeing=result.agreeing,
            timings_ms={**query.timings_ms, **event.timings_ms, **result.timings_ms, "total": total_ms},
        )
        return [answer.with_derived_id(query.question_event_id, "answer")]

    def on_failure(self, event: Event, error: BaseException) -> Sequence[Event]:
        if not isinstance(event, ContextReady):
            return ()
        message = "The answer could not be produced because of an internal error; it was recorded for the operators."
        return [self._error(event.query, ErrorCode.internal, message)]

    def _error(
        self,
        query: QueryResolved,
        code: ErrorCode,
        message: str,
        *,
        retryable: bool = False,
        sql: str | None = None,
    ) -> ChatError:
        return question_error(
            project_id=query.project_id,
            question_event_id=query.question_event_id,
            conversation_id=query.conversation_id,
            user_id=query.user_id,
            code=code,
            stage=self.name,
            message=message,
            retryable=retryable,
            sql=sql,
        )
