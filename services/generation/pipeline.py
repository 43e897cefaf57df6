"""Question + context → checked, executed SQL with an answer and a chart. No Kafka here: the generation
consumer and the accuracy benchmark both call :func:`generate_answer`.

First, when a retrieved project example is this question with other values (``template_answers``), its SQL
with the question's values is checked and run; a non-empty result answers without a model call.

The loop: prompt → model → extract SQL → static check (one statement, read-only, known schema) → execute
read-only → answer. A failed check, a database error, or an unlikely empty result is fed back to the model
for a repair round (``repair_rounds``); unsafe SQL is never repaired into running, it is refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from events import ChartSpec, ContextExample, ErrorCode, Turn
from services.common.schema import SchemaInfo
from services.common.template_match import adaptations
from services.core.customer_db import (
    CustomerDatabases,
    DatabaseUnavailable,
    QueryFailed,
    QueryResult,
    QueryTimeout,
)
from services.core.sql import check_sql, extract_sql
from services.generation.answer_text import summarize
from services.generation.chart import suggest_chart
from services.generation.llm.base import LLM, AdapterRef, ChatMessage
from services.generation.prompt import PromptOptions, build_prompt, build_repair_messages

# Wording that makes an empty result plausible: no repair round is spent on those.
_EMPTY_OK_WORDS = ("any ", "is there", "are there", "does ", "do ", "whether", "none", "no ")


@dataclass
class GenerationConfig:
    prompt: PromptOptions = field(default_factory=PromptOptions.full)
    static_check: bool = True
    repair_rounds: int = 1
    execution_repair: bool = True
    budget_tokens: int = 3072
    max_tokens: int = 256
    timeout_s: float = 10.0
    row_limit: int = 1000
    preview_rows: int = 20
    #: Answer from a project example that is this question with other values, before asking the model.
    template_answers: bool = False
    #: Adapted examples tried (each is checked and run) before the model is asked.
    template_tries: int = 2


#: GenerationResult.model of an answer whose SQL came from a verified example.
EXAMPLE_MODEL = "verified-example"


@dataclass
class GenerationResult:
    ok: bool
    sql: str
    error_code: ErrorCode | None = None
    error_message: str | None = None
    result: QueryResult | None = None
    schema_valid: bool = False
    executed: bool = False
    attempts: int = 0
    repaired: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    answer_text: str = ""
    chart: ChartSpec | None = None
    model: str = ""
    adapter_version: int | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    prompt_parts: list[str] = field(default_factory=list)
    sql_source: Literal["model", "example"] = "model"
    #: The project example whose SQL answered (sql_source == "example").
    example_id: str | None = None

    def preview(self, n: int) -> list[list[Any]]:
        return [list(r) for r in (self.result.rows[:n] if self.result else [])]


def _add(timings: dict[str, float], stage: str, started: float) -> None:
    timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - started) * 1000


async def generate_answer(
    llm: LLM,
    databases: CustomerDatabases,
    *,
    question: str,
    schema: SchemaInfo,
    database_url: str,
    history: list[Turn] | None = None,
    examples: list[ContextExample] | None = None,
    fewshot: list[ContextExample] | None = None,
    config: GenerationConfig | None = None,
    adapter: AdapterRef | None = None,
    domain_note: str | None = None,
) -> GenerationResult:
    config = config or GenerationConfig()
    timings: dict[str, float] = {}
    if config.template_answers and examples:
        from_example = await _answer_from_example(
            databases, question, schema, database_url, examples, config, timings
        )
        if from_example is not None:
            return _finish(from_example, question, timings)
    started = time.perf_counter()
    prompt = build_prompt(
        question,
        schema,
        history=history or [],
        examples=examples or [],
        fewshot=fewshot or [],
        options=config.prompt,
        budget_tokens=config.budget_tokens,
        count_tokens=llm.count_tokens,
        domain_note=domain_note,
    )
    _add(timings, "prompt", started)
    out = GenerationResult(ok=False, sql="", prompt_parts=list(prompt.parts))
    messages: list[ChatMessage] = list(prompt.messages)
    rounds_left = config.repair_rounds
    # An empty but valid result is kept in case the repair round does worse.
    fallback: tuple[str, QueryResult, bool] | None = None

    while True:
        started = time.perf_counter()
        completion = await llm.complete(messages, max_tokens=config.max_tokens, adapter=adapter)
        _add(timings, "llm", started)
        out.attempts += 1
        out.prompt_tokens += completion.prompt_tokens
        out.completion_tokens += completion.completion_tokens
        out.model = completion.model
        out.adapter_version = completion.adapter_version
        previous_sql = out.sql
        sql = extract_sql(completion.text)
        if out.attempts > 1 and sql and sql != previous_sql:
            out.repaired = True
        out.sql = sql

        started = time.perf_counter()
        check = check_sql(sql, schema)
        _add(timings, "check", started)
        out.sql = check.sql or sql
        out.schema_valid = check.ok
        if check.unsafe:
            # Unsafe output is refused, never "repaired": a model steered into writing stays refused.
            out.error_code = ErrorCode.unsafe_sql
            out.error_message = f"The generated statement was refused: {check.message}"
            break
        if not check.ok and config.static_check:
            if rounds_left > 0:
                rounds_left -= 1
                messages = build_repair_messages(prompt, out.sql, check.message)
                continue
            out.error_code = ErrorCode.invalid_sql
            out.error_message = f"No valid SQL could be written for this question: {check.message}"
            break
        if check.checked is None:
            # Without the static check (an ablation), schema errors reach the database, which reports them;
            # but nothing runs that the check did not approve: what it cannot parse or resolve stays here.
            out.error_code = ErrorCode.invalid_sql
            out.error_message = f"No valid SQL could be written for this question: {check.message}"
            if (
                check.code in ("unknown_table", "unknown_column")
                and config.execution_repair
                and rounds_left > 0
            ):
                rounds_left -= 1
                messages = build_repair_messages(
                    prompt, out.sql, f"The database returned an error: {check.message}"
                )
                continue
            break

        started = time.perf_counter()
        try:
            result = await databases.run(
                database_url, check.checked, timeout_s=config.timeout_s, row_limit=config.row_limit
            )
        except (QueryFailed, QueryTimeout) as exc:
            _add(timings, "execute", started)
            if config.execution_repair and rounds_left > 0:
                rounds_left -= 1
                messages = build_repair_messages(prompt, out.sql, f"The database returned an error: {exc}")
                continue
            out.error_code = ErrorCode.execution_failed
            out.error_message = f"The SQL did not run: {exc}"
            break
        _add(timings, "execute", started)
        out.executed = True
        out.result = result
        if (
            not result.rows
            and config.execution_repair
            and rounds_left > 0
            and not any(w in question.lower() for w in _EMPTY_OK_WORDS)
        ):
            rounds_left -= 1
            fallback = (out.sql, result, out.schema_valid)
            messages = build_repair_messages(
                prompt,
                out.sql,
                "The query ran but returned no rows, which is unlikely for this question. "
                "Check the filter values against the sample values and the join conditions.",
            )
            continue
        out.ok = True
        out.error_code = None
        out.error_message = None
        break

    if not out.ok and fallback is not None and out.error_code != ErrorCode.unsafe_sql:
        out.sql, out.result, out.schema_valid = fallback
        out.ok, out.executed, out.error_code, out.error_message = True, True, None, None
    return _finish(out, question, timings)


async def _answer_from_example(
    databases: CustomerDatabases,
    question: str,
    schema: SchemaInfo,
    database_url: str,
    examples: list[ContextExample],
    config: GenerationConfig,
    timings: dict[str, float],
) -> GenerationResult | None:
    """The first adapted project example that passes the static check and returns rows, or None. Only a
    result with something in it counts: no rows, or one row of zeros and NULLs (a COUNT or SUM over nothing),
    usually means the swapped value belongs to another column or is not in the data, and the model does
    better there."""
    started = time.perf_counter()
    project = [e for e in examples if e.source == "project"]
    adapted = adaptations(question, project, schema.dialect, limit=config.template_tries)
    _add(timings, "template", started)
    for candidate in adapted:
        started = time.perf_counter()
        check = check_sql(candidate.sql, schema)
        _add(timings, "check", started)
        if check.checked is None:
            continue
        sql = check.checked.text
        started = time.perf_counter()
        try:
            result = await databases.run(
                database_url, check.checked, timeout_s=config.timeout_s, row_limit=config.row_limit
            )
        except (QueryFailed, QueryTimeout):
            continue
        finally:
            _add(timings, "execute", started)
        if _says_nothing(result):
            continue
        return GenerationResult(
            ok=True,
            sql=sql,
            result=result,
            schema_valid=True,
            executed=True,
            attempts=0,
            model=EXAMPLE_MODEL,
            sql_source="example",
            example_id=candidate.example_id,
        )
    return None


def _says_nothing(result: QueryResult) -> bool:
    if not result.rows:
        return True
    return len(result.rows) == 1 and all(value is None or value == 0 for value in result.rows[0])


def _finish(out: GenerationResult, question: str, timings: dict[str, float]) -> GenerationResult:
    if out.ok and out.result is not None:
        started = time.perf_counter()
        rows = [list(r) for r in out.result.rows]
        out.answer_text = summarize(question, out.result.columns, rows, len(rows), out.result.truncated)
        if out.result.notes:
            out.answer_text += f" (Note: {'; '.join(out.result.notes)}.)"
        out.chart = suggest_chart(question, out.result.columns, rows[:200])
        _add(timings, "answer", started)
    out.timings_ms = timings
    return out


__all__ = ["EXAMPLE_MODEL", "DatabaseUnavailable", "GenerationConfig", "GenerationResult", "generate_answer"]
