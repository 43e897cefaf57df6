"""A project's LoRA training data: its verified examples, split and rendered exactly as inference prompts them.

Only examples that are verified, not stale (still valid for the current schema) and not rated down are used,
and only the given project's: an adapter never sees another customer's questions. The split comes first; the
training side may then grow by value variants and carry similar examples in its prompts
(``services.training.enrich``), the held-out side only gets the same kind of prompt.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg

from events.internal import ContextExample
from services.core.examples import store
from services.core.llm.base import ChatMessage
from services.core.projects import current_schema
from services.core.prompt import PromptOptions, build_prompt, example_sql_as_shown
from services.core.schema import SchemaInfo


@dataclass(frozen=True)
class TrainingExample:
    id: uuid.UUID
    question: str
    sql: str
    #: A verified example as stored, or a value variant of one (``services.training.augment``).
    origin: Literal["verified", "value_variant"] = "verified"
    #: Similar examples the serving prompt would carry for this question (never the example itself).
    context: tuple[ContextExample, ...] = ()
    #: The database values the question names, as the serving prompt states them.
    value_hints: tuple[str, ...] = ()


@dataclass(frozen=True)
class Render:
    """Prompts made as serving makes them with ``options`` and the project's description: instructions and
    schema, the similar examples retrieval would find (as chat turns) and the values the question names; so
    the adapter learns to use retrieval, not to replace it. The answer is written as the prompt's examples are
    (short table aliases when serving shows them so): otherwise the adapter would learn one style from its
    prompts' examples and be taught another by its targets."""

    options: PromptOptions = field(default_factory=PromptOptions)
    domain_note: str | None = None
    budget_tokens: int = 3072

    def __call__(self, example: TrainingExample, schema: SchemaInfo) -> list[ChatMessage]:
        """The (system, user, ...) prompt messages for the example's question."""
        prompt = build_prompt(
            example.question,
            schema,
            examples=list(example.context),
            value_hints=list(example.value_hints) or None,
            options=self.options,
            domain_note=self.domain_note,
            budget_tokens=self.budget_tokens,
        )
        return list(prompt.messages)

    def answer(self, sql: str, dialect: str) -> str:
        """The example's SQL as the answer the adapter is taught."""
        return example_sql_as_shown(sql, dialect, self.options)


@dataclass
class ProjectDataset:
    project_id: str
    schema: SchemaInfo
    train: list[TrainingExample]
    validation: list[TrainingExample]
    render: Render = field(repr=False)
    #: How the training side was made: verified examples, value variants tried and kept, prompts with
    #: similar examples (shown in training.status and the registry).
    composition: dict[str, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.train) + len(self.validation)

    @property
    def verified_train(self) -> list[TrainingExample]:
        return [e for e in self.train if e.origin == "verified"]

    def describe(self) -> dict[str, int]:
        return {
            "verified": len(self.verified_train),
            "value_variants": len(self.train) - len(self.verified_train),
            "validation": len(self.validation),
            **self.composition,
        }

    def train_records(self) -> list[dict[str, Any]]:
        return [{"messages": to_chat(e, self.schema, self.render)} for e in self.train]

    def validation_records(self) -> list[dict[str, Any]]:
        return [{"messages": to_chat(e, self.schema, self.render)} for e in self.validation]


class NoSchema(Exception):
    """The project has no recorded schema, so its prompts cannot be rendered."""


#: The full prompt with no project description and the prompt switches at their library defaults.
default_render = Render(PromptOptions())


def assistant_content(sql: str) -> str:
    return f"```sql\n{sql.strip().rstrip(';')}\n```"


def prompt_messages(example: TrainingExample, schema: SchemaInfo, render: Render) -> list[ChatMessage]:
    """The prompt up to the answer: the rendered chat without its final assistant turn (example turns in
    it are context and stay)."""
    messages = render(example, schema)
    while messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return messages


def to_chat(example: TrainingExample, schema: SchemaInfo, render: Render) -> list[ChatMessage]:
    return [
        *prompt_messages(example, schema, render),
        ChatMessage(role="assistant", content=assistant_content(render.answer(example.sql, schema.dialect))),
    ]


def split(
    examples: list[TrainingExample], validation_share: float, seed: int
) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Seeded split, independent of the order rows came back in; at least one example on each side from two."""
    ordered = sorted(examples, key=lambda e: str(e.id))
    random.Random(seed).shuffle(ordered)
    if len(ordered) < 2:
        return ordered, []
    n_val = min(len(ordered) - 1, max(1, round(len(ordered) * validation_share)))
    return ordered[n_val:], ordered[:n_val]


async def load_examples(pool: asyncpg.Pool, project_id: str) -> list[TrainingExample]:
    return [
        TrainingExample(id=id_, question=question, sql=sql)
        for id_, question, sql in await store.usable_pairs(pool, project_id)
    ]


async def load_schema(pool: asyncpg.Pool, project_id: str) -> SchemaInfo:
    """The project's current schema (the one inference prompts with), else its newest recorded one."""
    schema = await current_schema(pool, project_id)
    if schema is None:
        raise NoSchema(f"project {project_id!r} has no recorded schema")
    return schema


async def load_dataset(
    pool: asyncpg.Pool,
    project_id: str,
    *,
    validation_share: float,
    seed: int,
    render: Render | None = None,
) -> ProjectDataset:
    examples = await load_examples(pool, project_id)
    schema = await load_schema(pool, project_id)
    train, validation = split(examples, validation_share, seed)
    return ProjectDataset(project_id, schema, train, validation, render or default_render)


async def export_jsonl(
    pool: asyncpg.Pool, project_id: str, path: Path, *, render: Render | None = None
) -> int:
    """Write the project's usable examples as chat-messages JSONL (``{"messages": [...]}`` a line)."""
    examples = await load_examples(pool, project_id)
    schema = await load_schema(pool, project_id) if examples else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for example in examples:
            assert schema is not None
            record = {"messages": to_chat(example, schema, render or default_render)}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(examples)


async def mark_trained(
    pool: asyncpg.Pool, project_id: str, example_ids: list[uuid.UUID], version: int
) -> None:
    """Remember which model version learnt each example (the trigger counts the examples added since)."""
    await store.mark_trained(pool, project_id, example_ids, version)
