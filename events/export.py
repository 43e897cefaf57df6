"""Export the event contracts as JSON Schema files and an AsyncAPI 3.0 document.

Producers in other languages build against ``schemas/``; ``tests/test_schemas.py`` regenerates everything in
memory and fails when the committed files drift from the pydantic models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from events import EVENT_TYPES, DeadLetter

ASYNCAPI_FILE = "asyncapi.yaml"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Version of the contract as a whole; bump it when an event type or topology changes incompatibly.
API_VERSION = "1.0.0"
DEFAULT_PARTITIONS = 6


@dataclass(frozen=True)
class ConsumerTopology:
    """Which topics one consumer group reads and writes (every consumer may also dead-letter)."""

    name: str
    receives: tuple[str, ...]
    sends: tuple[str, ...]

    @property
    def group_id(self) -> str:
        return f"querylift-{self.name}"


#: The five consumers in pipeline order (``querylift up`` gives consumer i metrics port base + i).
CONSUMERS: tuple[ConsumerTopology, ...] = (
    ConsumerTopology("query", ("chat.question",), ("query.resolved", "chat.error")),
    ConsumerTopology("retrieval", ("query.resolved",), ("retrieval.context", "chat.error")),
    ConsumerTopology("generation", ("retrieval.context", "model.updated"), ("chat.answer", "chat.error")),
    ConsumerTopology("feedback", ("chat.answer", "chat.error", "chat.feedback"), ("training.requested",)),
    ConsumerTopology(
        "training", ("training.requested", "chat.feedback"), ("training.status", "model.updated")
    ),
)

EXPORTED_TYPES: tuple[type[BaseModel], ...] = (*EVENT_TYPES, DeadLetter)


def type_name(model: type[BaseModel]) -> str:
    """The ``type`` discriminator value, e.g. ``chat.question`` or ``dead_letter``."""
    return str(model.model_fields["type"].default)


def schema_version(model: type[BaseModel]) -> int:
    return int(model.model_fields["schema_version"].default)


def schema_filename(model: type[BaseModel]) -> str:
    return f"{type_name(model)}.v{schema_version(model)}.json"


def topic_of(model: type[BaseModel]) -> str:
    return str(model.topic)  # type: ignore[attr-defined]


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema (validation mode: what a producer must send) with dialect and id."""
    body = model.model_json_schema(mode="validation")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:querylift:event:{type_name(model)}:v{schema_version(model)}",
        **body,
    }


def _message_name(model: type[BaseModel]) -> str:
    return model.__name__


def _channel_id(topic: str) -> str:
    head, *rest = topic.replace("_", ".").split(".")
    return head + "".join(part.capitalize() for part in rest)


def asyncapi_document() -> dict[str, Any]:
    """An AsyncAPI 3.0 description of querylift's topics, messages and the five consumers' operations."""
    by_topic = {topic_of(m): m for m in EXPORTED_TYPES}
    key_schema = {
        "type": "string",
        "description": "The event's project_id: one project's events stay in order on one partition.",
    }
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    for model in EXPORTED_TYPES:
        name = _message_name(model)
        topic = topic_of(model)
        is_dlq = model is DeadLetter
        doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else name
        messages[name] = {
            "name": name,
            "title": type_name(model),
            "summary": doc,
            "contentType": "application/json",
            "payload": {"$ref": f"./{schema_filename(model)}"},
            "bindings": {
                "kafka": {
                    "key": (
                        {
                            "type": "string",
                            "description": "Key of the original message (its project_id), when it had one.",
                        }
                        if is_dlq
                        else key_schema
                    ),
                    "bindingVersion": "0.5.0",
                }
            },
        }
        channels[_channel_id(topic)] = {
            "address": topic,
            "title": topic,
            "description": (
                f"Carries {type_name(model)} events (schema_version {schema_version(model)}). "
                "Deployments may prepend QUERYLIFT_TOPIC_PREFIX to the address."
            ),
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {"kafka": {"partitions": DEFAULT_PARTITIONS, "bindingVersion": "0.5.0"}},
        }

    operations: dict[str, Any] = {}
    for consumer in CONSUMERS:
        group = {"type": "string", "enum": [consumer.group_id]}
        for action, topics in (("receive", consumer.receives), ("send", (*consumer.sends, DeadLetter.topic))):
            for topic in topics:
                model = by_topic[topic]
                channel = _channel_id(topic)
                op: dict[str, Any] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{channel}"},
                    "summary": f"The {consumer.name} consumer {'reads' if action == 'receive' else 'publishes'} {topic}.",
                    "messages": [{"$ref": f"#/channels/{channel}/messages/{_message_name(model)}"}],
                    "tags": [{"name": consumer.name}],
                }
                if action == "receive":
                    op["bindings"] = {"kafka": {"groupId": group, "bindingVersion": "0.5.0"}}
                verb = "Receive" if action == "receive" else "Send"
                operations[f"{consumer.name}{verb}{channel[0].upper()}{channel[1:]}"] = op

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "querylift events",
            "version": API_VERSION,
            "description": (
                "Event-driven text-to-SQL. Upstream chat products publish chat.question and chat.feedback and "
                "read chat.answer, chat.error and training.status. Every message is JSON, keyed by project_id; "
                "consumers drop an event whose event_id they already processed (at-least-once delivery made "
                "effectively once). Events a consumer cannot handle go to querylift.dlq with the reason."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "localhost:9092",
                "protocol": "kafka",
                "description": "Apache Kafka of docker-compose.yml (or any Kafka-compatible broker).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render_all() -> dict[str, str]:
    """File name → exact file content of everything ``querylift schemas export`` writes."""
    files = {
        schema_filename(m): json.dumps(json_schema(m), indent=2, ensure_ascii=False) + "\n"
        for m in EXPORTED_TYPES
    }
    header = "# Generated by `querylift schemas export` from events/*.py; do not edit by hand.\n"
    files[ASYNCAPI_FILE] = header + yaml.safe_dump(
        asyncapi_document(), sort_keys=False, allow_unicode=True, width=110
    )
    return files


def write_all(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in render_all().items():
        path = out / name
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


def drift(out: Path) -> list[str]:
    """Names of files in ``out`` that are missing or differ from what the models generate."""
    return [
        name
        for name, content in render_all().items()
        if not (out / name).is_file() or (out / name).read_text(encoding="utf-8") != content
    ]
