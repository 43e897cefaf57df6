"""Execution accuracy of a model (base, or base + adapter) on a project's held-out examples.

For each example the model writes SQL from the same prompt inference uses; the SQL runs read-only on the
customer database and its rows are compared with the example's own SQL result (:func:`results_match`).
An example whose gold SQL no longer runs is left out rather than counted against the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.core.exec_match import gold_is_ordered, results_match
from services.core.llm.base import LLM, AdapterRef
from services.core.schema import SchemaInfo
from services.core.sql import extract_sql
from services.training.dataset import Render, TrainingExample, default_render, prompt_messages

log = logging.getLogger(__name__)


class _Result(Protocol):
    @property
    def rows(self) -> Sequence[Any]: ...


class Executor(Protocol):
    """What evaluation needs of ``services.core.customer_db.CustomerDatabases``: its guarded path, which
    checks a statement against the project's schema and runs only what the check approved."""

    async def check_and_run(
        self, database_url: str, sql: str, schema: SchemaInfo, /, *, timeout_s: float, row_limit: int
    ) -> tuple[Any, _Result]: ...


@dataclass
class ExampleOutcome:
    example_id: str
    predicted_sql: str
    correct: bool
    error: str | None = None


@dataclass
class EvalResult:
    label: str
    total: int = 0
    correct: int = 0
    skipped: int = 0
    seconds: float = 0.0
    outcomes: list[ExampleOutcome] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "accuracy": self.accuracy,
            "correct": self.correct,
            "total": self.total,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
        }


def gate(
    candidate_acc: float, current_acc: float, margin: float, *, examples: int, min_examples: int
) -> GateDecision:
    """Promote only on a strict gain of more than ``margin`` over the serving model, measured on at least
    ``min_examples`` held-out examples. A tie proves nothing (the candidate may only have learnt the same), nor
    does an adapter that answers none of them, however badly the serving model does; too few examples leave
    the adapter a candidate for a person to judge."""
    if examples < min_examples:
        return GateDecision(
            False, f"{examples} held-out examples; the gate needs {min_examples}", judged=False
        )
    if candidate_acc <= 0:
        return GateDecision(False, "the adapter answered none of the held-out examples")
    if candidate_acc <= current_acc + margin + 1e-9:
        return GateDecision(
            False,
            f"{candidate_acc:.0%} held-out accuracy is no gain over the serving model's {current_acc:.0%}",
        )
    return GateDecision(True, f"{candidate_acc:.0%} held-out accuracy against {current_acc:.0%}")


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    #: False when there was too little to judge on: the adapter stays a candidate rather than being rejected.
    judged: bool = True


@dataclass
class Evaluator:
    """Evaluates models on one project's examples; gold results are computed once and shared."""

    llm: LLM
    databases: Executor
    database_url: str
    schema: SchemaInfo
    render: Render = default_render
    max_tokens: int = 256
    timeout_s: float = 10.0
    row_limit: int = 1000
    _gold: dict[str, list[Any] | None] = field(default_factory=dict, init=False, repr=False)

    async def _rows(self, sql: str) -> list[Any]:
        _, result = await self.databases.check_and_run(
            self.database_url, sql, self.schema, timeout_s=self.timeout_s, row_limit=self.row_limit
        )
        return list(result.rows)

    async def _gold_rows(self, sql: str) -> list[Any] | None:
        if sql not in self._gold:
            try:
                self._gold[sql] = await self._rows(sql)
            except Exception as exc:  # a gold query that no longer runs says nothing about the model
                log.warning("gold SQL failed; example skipped", extra={"error": type(exc).__name__})
                self._gold[sql] = None
        return self._gold[sql]

    async def accuracy(
        self,
        examples: Sequence[TrainingExample],
        *,
        adapter: AdapterRef | None = None,
        label: str | None = None,
    ) -> EvalResult:
        started = time.perf_counter()
        result = EvalResult(label=label or (f"v{adapter.version}" if adapter else "base"))
        for example in examples:
            gold = await self._gold_rows(example.sql)
            if gold is None:
                result.skipped += 1
                continue
            messages = prompt_messages(example, self.schema, self.render)
            completion = await self.llm.complete(messages, max_tokens=self.max_tokens, adapter=adapter)
            predicted = extract_sql(completion.text)
            outcome = ExampleOutcome(str(example.id), predicted, False)
            if predicted:
                try:
                    rows = await self._rows(predicted)
                    outcome.correct = results_match(
                        gold, rows, gold_is_ordered(example.sql, self.schema.dialect)
                    )
                except Exception as exc:
                    outcome.error = f"{type(exc).__name__}: {exc}"[:300]
            else:
                outcome.error = "no SQL in the reply"
            result.total += 1
            result.correct += int(outcome.correct)
            result.outcomes.append(outcome)
        result.seconds = time.perf_counter() - started
        return result
