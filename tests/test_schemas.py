"""The committed schemas/ match the event models, and real events validate against them."""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from events import (
    EVENT_TYPES,
    ChartSpec,
    ChartType,
    ChatAnswer,
    ChatError,
    ChatFeedback,
    ChatQuestion,
    ContextExample,
    ContextReady,
    DeadLetter,
    ErrorCode,
    ModelUpdated,
    QueryResolved,
    TrainingRequested,
    TrainingStatus,
    Turn,
    UsedExample,
)
from events.export import (
    ASYNCAPI_FILE,
    CONSUMERS,
    EXPORTED_TYPES,
    asyncapi_document,
    drift,
    render_all,
    schema_filename,
    topic_of,
)
from services.cli import cmd_schemas

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def cli_main(argv: list[str]) -> int:
    """The `querylift schemas` subcommands alone, so other command groups' imports don't matter here."""
    parser = argparse.ArgumentParser(prog="querylift")
    cmd_schemas.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def _samples() -> dict[type[BaseModel], BaseModel]:
    question = ChatQuestion.model_validate(
        dict(project_id="acme-shop", conversation_id="c1", user_id="u1", question="How many orders?")
    )
    resolved = QueryResolved.model_validate(
        dict(
            project_id="acme-shop",
            question_event_id=question.event_id,
            correlation_id=question.event_id,
            conversation_id="c1",
            user_id="u1",
            question="How many orders in May?",
            asked_at_ms=1.7e12,
            dialect="postgres",
            schema_version_id=3,
            history=[Turn(question="How many orders?", sql="SELECT count(*) FROM orders", answer_text="42")],
            timings_ms={"query": 3.5},
        )
    )
    answer = ChatAnswer.model_validate(
        dict(
            project_id="acme-shop",
            question_event_id=question.event_id,
            conversation_id="c1",
            user_id="u1",
            question="Orders per month",
            answer_text="12 months of orders",
            sql="SELECT month, count(*) FROM orders GROUP BY month",
            columns=["month", "count"],
            rows_preview=[["2024-05", 12], ["2024-06", None]],
            row_count=2,
            chart=ChartSpec.model_validate(
                {"type": ChartType.bar, "x": "month", "y": ["count"], "title": "Orders"}
            ),
            model="qwen2.5-coder-0.5b-instruct",
            adapter_version=2,
            arm="candidate",
            examples_used=[UsedExample(example_id="e1", source="project", score=0.91)],
            timings_ms={"llm": 812.0},
        )
    )
    return {
        ChatQuestion: question,
        QueryResolved: resolved,
        ContextReady: ContextReady.model_validate(
            dict(
                project_id="acme-shop",
                query=resolved,
                examples=[
                    ContextExample(example_id="e1", source="project", question="q", sql="SELECT 1", score=0.8)
                ],
            )
        ),
        ChatAnswer: answer,
        ChatError: ChatError.model_validate(
            dict(
                project_id="acme-shop",
                code=ErrorCode.invalid_sql,
                message="no such column",
                stage="generation",
            )
        ),
        ChatFeedback: ChatFeedback.model_validate(
            dict(project_id="acme-shop", answer_id=answer.event_id, rating=4, chart_relevant=True)
        ),
        TrainingRequested: TrainingRequested.model_validate(
            dict(project_id="acme-shop", examples_count=150, new_examples=100, threshold=100)
        ),
        TrainingStatus: TrainingStatus.model_validate(
            dict(
                project_id="acme-shop",
                job_id=uuid.uuid4(),
                status="running",
                progress=0.5,
                metrics={"loss": 1.2},
            )
        ),
        ModelUpdated: ModelUpdated.model_validate(
            dict(
                project_id="acme-shop",
                model_version_id=7,
                version=2,
                base_model="smollm2-135m-instruct",
                status="active",
            )
        ),
        DeadLetter: DeadLetter.model_validate(
            dict(
                consumer="query",
                source_topic="chat.question",
                partition=0,
                offset=17,
                key="acme-shop",
                reason="unparseable",
                error="not UTF-8 JSON",
                payload_text="{oops",
                payload_size=5,
            )
        ),
    }


def _validator(model: type[BaseModel]) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / schema_filename(model)).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_committed_schemas_match_the_models() -> None:
    stale = drift(SCHEMAS)
    assert not stale, f"schemas/ is out of date ({stale}); run `querylift schemas export`"
    generated = set(render_all())
    on_disk = {p.name for p in SCHEMAS.iterdir() if p.is_file()}
    assert on_disk == generated, f"unexpected or missing files in schemas/: {on_disk ^ generated}"


def test_every_event_type_and_the_dead_letter_is_exported() -> None:
    names = set(render_all())
    models: tuple[type[BaseModel], ...] = (*EVENT_TYPES, DeadLetter)
    for model in models:
        assert schema_filename(model) in names
    assert len({schema_filename(m) for m in EXPORTED_TYPES}) == len(EXPORTED_TYPES)


@pytest.mark.parametrize("model", EXPORTED_TYPES, ids=lambda m: m.__name__)
def test_real_events_validate_against_the_json_schema(model: type[BaseModel]) -> None:
    event = _samples()[model]
    document = json.loads(event.model_dump_json())
    _validator(model).validate(document)


@pytest.mark.parametrize("model", EVENT_TYPES, ids=lambda m: m.__name__)
def test_the_json_schema_rejects_what_the_model_rejects(model: type[BaseModel]) -> None:
    validator = _validator(model)
    good: dict[str, Any] = json.loads(_samples()[model].model_dump_json())
    bad_cases = {
        "missing project_id": {k: v for k, v in good.items() if k != "project_id"},
        "project_id with a space": good | {"project_id": "acme shop"},
        "unknown field": good | {"surprise": 1},
        "wrong type discriminator": good | {"type": "something.else"},
        "event_id not a uuid": good | {"event_id": "not-a-uuid"},
    }
    for label, doc in bad_cases.items():
        assert not validator.is_valid(doc), f"JSON Schema accepted {label}"
        with pytest.raises(ValueError):
            model.model_validate(doc)


def test_asyncapi_document_is_consistent() -> None:
    doc = yaml.safe_load((SCHEMAS / ASYNCAPI_FILE).read_text())
    assert doc == asyncapi_document()
    assert doc["asyncapi"].startswith("3.0")

    def resolve(ref: str) -> Any:
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part]
        return node

    addresses = {ch["address"] for ch in doc["channels"].values()}
    assert addresses == {topic_of(m) for m in EXPORTED_TYPES}
    for channel in doc["channels"].values():
        for message_ref in channel["messages"].values():
            message = resolve(message_ref["$ref"])
            payload = message["payload"]["$ref"]
            assert (SCHEMAS / payload.removeprefix("./")).is_file()
            key = message["bindings"]["kafka"]["key"]
            assert key["type"] == "string" and "project_id" in key["description"]

    for consumer in CONSUMERS:
        ops = [op for op in doc["operations"].values() if op["tags"] == [{"name": consumer.name}]]
        received = {resolve(op["channel"]["$ref"])["address"] for op in ops if op["action"] == "receive"}
        sent = {resolve(op["channel"]["$ref"])["address"] for op in ops if op["action"] == "send"}
        assert received == set(consumer.receives)
        assert sent == {*consumer.sends, DeadLetter.topic}
        for op in ops:
            for message_ref in op["messages"]:
                resolve(message_ref["$ref"])  # the operation's message exists on its channel
            if op["action"] == "receive":
                assert op["bindings"]["kafka"]["groupId"]["enum"] == [consumer.group_id]


def test_cli_export_writes_what_check_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "schemas"
    assert cli_main(["schemas", "check", "--out", str(out)]) == 1
    assert cli_main(["schemas", "export", "--out", str(out)]) == 0
    assert cli_main(["schemas", "check", "--out", str(out)]) == 0
    (out / "chat.question.v1.json").write_text("{}")
    assert cli_main(["schemas", "check", "--out", str(out)]) == 1
    assert "chat.question.v1.json" in capsys.readouterr().out


def test_documented_topology_matches_the_handlers() -> None:
    """AsyncAPI, KEDA and compose are derived from CONSUMERS: it must say what each handler really consumes."""
    from events.export import CONSUMERS
    from services.feedback.handler import FeedbackHandler
    from services.generation.handler import GenerationHandler
    from services.query.handler import QueryHandler
    from services.retrieval.handler import RetrievalHandler
    from services.training.handler import TrainingHandler

    handlers = {
        h.name: h
        for h in (QueryHandler, RetrievalHandler, GenerationHandler, FeedbackHandler, TrainingHandler)
    }
    for consumer in CONSUMERS:
        assert set(consumer.receives) == set(handlers[consumer.name].subscriptions), consumer.name
