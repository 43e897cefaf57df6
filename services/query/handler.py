"""Ingress: validate a chat.question, resolve its project, schema version and conversation context."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

import asyncpg

from events import ChatError, ChatQuestion, ErrorCode, Event, QueryResolved
from services.core.projects import admit_question
from services.infra.consumer import BaseHandler
from services.infra.errors import question_error


class QueryHandler(BaseHandler):
    name: ClassVar[str] = "query"
    answer_path: ClassVar[bool] = True
    subscriptions: ClassVar[dict[str, type[Event]]] = {ChatQuestion.topic: ChatQuestion}

    def __init__(self, pool: asyncpg.Pool, *, history_turns: int = 3) -> None:
        self.pool = pool
        self.history_turns = history_turns

    def ordering_key(self, event: Event) -> str:
        # A question's context is its own conversation's history: other conversations need not wait.
        if isinstance(event, ChatQuestion):
            return f"{event.project_id}/{event.conversation_id}"
        return event.project_id

    async def handle(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, ChatQuestion)
        started = time.perf_counter()
        project, history = await admit_question(
            self.pool,
            event_id=event.event_id,
            project_id=event.project_id,
            conversation_id=event.conversation_id,
            user_id=event.user_id,
            question=event.question,
            history_turns=self.history_turns,
        )
        if project is None or project.schema_version_id is None:
            message = (
                f"Project {event.project_id!r} is not registered. Register its database with "
                f"`querylift project add {event.project_id} --database URL`, then ask again."
            )
            return [
                question_error(
                    project_id=event.project_id,
                    question_event_id=event.event_id,
                    conversation_id=event.conversation_id,
                    user_id=event.user_id,
                    code=ErrorCode.unknown_project,
                    stage=self.name,
                    message=message,
                )
            ]
        resolved = QueryResolved(
            project_id=event.project_id,
            correlation_id=event.event_id,
            question_event_id=event.event_id,
            conversation_id=event.conversation_id,
            user_id=event.user_id,
            question=event.question,
            asked_at_ms=event.occurred_at.timestamp() * 1000,
            dialect=project.dialect,  # type: ignore[arg-type]
            domain=project.domain,
            schema_version_id=project.schema_version_id,
            history=history,
            timings_ms={"query": (time.perf_counter() - started) * 1000},
        )
        return [resolved.with_derived_id(event.event_id, "resolved")]

    def on_invalid(self, topic: str, raw: dict[str, Any] | None, error: str) -> Sequence[Event]:
        """A malformed question still gets a chat.error when it says which project it is for."""
        if not raw or not isinstance(raw.get("project_id"), str):
            return ()
        try:
            question_id = uuid.UUID(str(raw.get("event_id")))
        except ValueError:
            question_id = None
        try:
            err = ChatError(
                project_id=raw["project_id"],
                question_event_id=question_id,
                correlation_id=question_id,
                conversation_id=raw["conversation_id"]
                if isinstance(raw.get("conversation_id"), str)
                else None,
                user_id=raw["user_id"] if isinstance(raw.get("user_id"), str) else None,
                code=ErrorCode.invalid_event,
                message=f"The chat.question was rejected: {error}"[:2000],
                stage=self.name,
            )
        except ValueError:
            return ()  # not even the project id is usable: the dead letter alone records it
        if question_id is not None:
            err.with_derived_id(question_id, "error")
        return [err]
