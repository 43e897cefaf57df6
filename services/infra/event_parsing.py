"""Turning a record's bytes into a validated event, or into the reason it goes to the dead-letter topic."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from events import Event
from events.dead_letter import DeadLetterReason

MAX_EVENT_BYTES = 1_000_000
#: Envelope fields kept from an oversized event, so that its sender can be answered.
_ENVELOPE = ("event_id", "project_id", "conversation_id", "user_id", "schema_version")
#: Larger events are not even parsed for their envelope (the broker's own message limit is usually ~1 MB).
_ENVELOPE_PARSE_MAX = 64 * MAX_EVENT_BYTES


class Rejected(Exception):
    """Raised while parsing: the event goes to the dead-letter topic with this reason."""

    def __init__(self, reason: DeadLetterReason, error: str, raw: dict[str, Any] | None = None) -> None:
        super().__init__(error)
        self.reason: DeadLetterReason = reason
        self.error = error
        self.raw = raw


def _envelope(value: bytes) -> dict[str, Any] | None:
    if len(value) > _ENVELOPE_PARSE_MAX:
        return None
    try:
        raw = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(raw, dict):
        return None
    return {k: raw[k] for k in _ENVELOPE if isinstance(raw.get(k), (str, int)) and len(str(raw[k])) <= 256}


def parse_event(model: type[Event], value: bytes | None) -> Event:
    if value is None:
        raise Rejected("unparseable", "empty message")
    if len(value) > MAX_EVENT_BYTES:
        # Not handled, but its envelope still says who asked, so the asker can be told (a chat.error).
        raise Rejected(
            "invalid",
            f"event of {len(value)} bytes exceeds the {MAX_EVENT_BYTES}-byte limit",
            _envelope(value),
        )
    try:
        raw = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected("unparseable", f"not UTF-8 JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise Rejected("unparseable", "event is not a JSON object")
    version = raw.get("schema_version", 1)
    supported = model.model_fields["schema_version"].default
    if isinstance(version, int) and not isinstance(version, bool) and version > supported:
        raise Rejected(
            "unknown_version", f"{model.topic} schema_version {version} is newer than {supported}", raw
        )
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        summary = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<event>'}: {e['msg']}" for e in exc.errors()[:8]
        )
        raise Rejected("invalid", summary, raw) from None
