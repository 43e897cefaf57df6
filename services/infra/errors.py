"""Building chat.error events for a question from any stage."""

from __future__ import annotations

import uuid

from events import ChatError, ErrorCode


def question_error(
    *,
    project_id: str,
    question_event_id: uuid.UUID,
    conversation_id: str | None,
    user_id: str | None,
    code: ErrorCode,
    stage: str,
    message: str,
    retryable: bool = False,
    sql: str | None = None,
) -> ChatError:
    """A chat.error whose id derives from the question, so a question yields at most one error event."""
    error = ChatError(
        project_id=project_id,
        correlation_id=question_event_id,
        question_event_id=question_event_id,
        conversation_id=conversation_id,
        user_id=user_id,
        code=code,
        stage=stage,
        message=message,
        retryable=retryable,
        sql=sql,
    )
    return error.with_derived_id(question_event_id, "error")  # type: ignore[no-any-return]
