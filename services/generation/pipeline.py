"""Question + context → checked, executed SQL with an answer and a chart. No Kafka here: the generation
consumer and the accuracy benchmark both call :func:`generate_answer`.

First, when a retrieved project example is this question with other values (``template_answers``), its SQL
with the question's values is checked and run; a non-empty result answers without a model call.

The loop: prompt (with the values the question mentions) → model → extract SQL → static check (one statement,
read-only, known schema) with mechanical fixes → execute read-only → answer. A failed check, a database error,
or an unlikely empty result (naming literals that match no value of their column) is fed back to the model for
a repair round (``repair_rounds``); unsafe SQL is never repaired into running, it is refused. With voting on,
sampled alternatives of the first prompt are run too and the result most candidates agree on answers; every
answer carries a confidence (``voting``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from events import ChartSpec, ContextExample, ErrorCode, Turn
from services.core.composition import compositions
from services.core.customer_db import (
    CustomerDatabases,
    DatabaseUnavailable,
    QueryFailed,
    QueryResult,
    QueryTimeout,
)
from services.core.examples.paraphrases import Paraphrases
from services.core.examples.selection import by_draft
from services.core.llm.base import LLM, AdapterRef, ChatMessage, Completion
from services.core.prompt import (
    Prompt,
    PromptOptions,
    build_prompt,
    build_repair_messages,
    question_starts_segment,
)
from services.core.schema import SchemaInfo
from services.core.sql import check_sql, extract_sql
from services.core.template_match import adaptations
from services.core.value_readings import by_prominence
from services.core.value_templates import shape_adaptations, value_adaptations
from services.core.values import ValueIndex
from services.generation.answer_text import summarize
from services.generation.candidates import Candidate, one_answer, run_candidate, says_nothing
from services.generation.chart import suggest_chart
from services.generation.decompose import answer_by_parts
from services.generation.voting import Basis, agreement_settled, confidence, vote

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
    #: Fix mechanically what has one right fix (SQLite double-quoted strings, a literal's case) instead of
    #: spending a repair round on it.
    mechanical_fixes: bool = True
    #: With ``mechanical_fixes``: a literal that must equal a value of its column and holds exactly one of them
    #: among its words ('mount mckinley', the column storing 'mckinley') becomes that value.
    literal_word_fixes: bool = True
    #: A literal that matches no value of the column it is compared with (the value index) makes an empty
    #: result's repair round name the closest values.
    value_check: bool = True
    #: Candidates drawn for execution-consistency voting (1: the greedy answer alone). Voting stops early
    #: when the first two agree.
    vote_candidates: int = 1
    #: Answer from a very similar verified example adapted through the values the question names for the same
    #: columns (needs the value index; services.core.value_templates), when the strict template match fails.
    value_templates: bool = False
    value_template_min_score: float = 0.70
    #: Answer from an example that asks the same in other words (services.core.value_templates
    #: .shape_adaptations: the same content words in order), the question's values swapped in.
    shape_templates: bool = False
    #: With ``shape_templates``: a value next to a word naming its table ("new york city") is that table's
    #: thing, the word part of the value, where no example fits the question as worded.
    entity_templates: bool = False
    #: Among equally close template matches, the one reading the question's values as the things the
    #: database refers to from more places first ('washington' the state, not the city).
    prominent_readings: bool = False
    #: Answer a question of a new shape from two verified examples, one nested in the other
    #: (services.core.composition), when no template answers; needs the value index.
    composed_answers: bool = False
    #: Where an example fits around the question's inner phrase but none answers the phrase, ask the model for
    #: the phrase alone and nest its query in the example's (services.generation.decompose).
    decomposed_answers: bool = False
    #: Draft a query, then choose the prompt's project examples again among them and the reserve by the
    #: draft's shape (services.core.examples.selection.by_draft) and ask once more.
    draft_reselect: bool = False
    #: Spend a repair round on a reply that was cut off (it looped or reached max_tokens) or on SQL that ran
    #: into the time limit. Off: the same model with the same prompt tends to loop again or keep the same
    #: joins, and such a round costs a second decode or a second time limit.
    repair_runaways: bool = False


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
    #: The project examples whose SQL answered (sql_source == "example"): one, or for a composed answer its
    #: outer and inner examples; for a decomposed answer the outer example.
    example_ids: list[str] = field(default_factory=list)
    #: How sure the answer is, in [0, 1], and the evidence (services.generation.voting).
    confidence: float = 0.0
    confidence_basis: Basis = "single_candidate"
    #: Candidates that ran and how many of them gave the answer's result (voting).
    candidates: int = 0
    agreeing: int = 0
    #: Mechanical fixes applied to the SQL that answered.
    fixes: list[str] = field(default_factory=list)
    value_hints: list[str] = field(default_factory=list)
    #: Tokens per prompt part of the first prompt (prefix, examples, ...), and the model's own timings.
    prompt_part_tokens: dict[str, int] = field(default_factory=dict)
    model_timings: dict[str, float] = field(default_factory=dict)

    def preview(self, n: int) -> list[list[Any]]:
        return [list(r) for r in (self.result.rows[:n] if self.result else [])]


def _add(timings: dict[str, float], stage: str, started: float) -> None:
    timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - started) * 1000


def _merge_model_timings(out: GenerationResult, completion: Completion) -> None:
    for key, value in completion.timings.items():
        out.model_timings[key] = out.model_timings.get(key, 0.0) + value


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
    values: ValueIndex | None = None,
    reserve: list[ContextExample] | None = None,
    paraphrases: Paraphrases | None = None,
) -> GenerationResult:
    config = config or GenerationConfig()
    timings: dict[str, float] = {}
    if config.template_answers and examples:
        from_example = await answer_from_examples(
            databases, question, schema, database_url, examples, config, timings, values, paraphrases
        )
        if from_example is not None:
            from_example.confidence, from_example.confidence_basis = confidence(
                from_example=True,
                vote_result=None,
                candidates=1,
                empty=False,
                repaired=False,
                basis=from_example.confidence_basis,
            )
            return _finish(from_example, question, timings)
    started = time.perf_counter()
    prompt_for = _Prompter(llm, schema, config, history or [], fewshot or [], domain_note, values)
    hints = prompt_for.hints(question)
    prompt = prompt_for(question, examples or [], hints)
    _add(timings, "prompt", started)
    out = GenerationResult(
        ok=False,
        sql="",
        prompt_parts=list(prompt.parts),
        value_hints=hints,
        prompt_part_tokens=dict(prompt.part_tokens),
    )
    run = _Runner(llm, databases, schema, database_url, config, adapter, values, out, timings)
    if config.decomposed_answers and values is not None and examples:
        decomposed = await _answer_by_parts(run, question, examples, prompt_for)
        if decomposed is not None:
            return _finish(decomposed, question, timings)
        if out.attempts:
            # The phrase's prompt was evaluated: the whole question's shares everything before the question.
            prompt = question_starts_segment(prompt)
    messages: list[ChatMessage] = list(prompt.messages)
    voting = config.vote_candidates >= 2
    completion = await run.complete(messages, alternatives=1 if voting else 0)
    if config.draft_reselect and reserve and examples:
        # DAIL-SQL's second pass: the first reply is a draft; examples whose queries look like it may show
        # the right shape better than those whose questions merely sound alike.
        project = [e for e in examples if e.source == "project"]
        draft = extract_sql(completion.text)
        chosen = by_draft(draft, [*project, *reserve], len(project), schema.dialect) if draft else project
        # Only a change among the examples the prompt shows is worth another call.
        shown = config.prompt.max_examples
        if {e.example_id for e in chosen[:shown]} != {e.example_id for e in project[:shown]}:
            prompt = prompt_for(question, [*chosen, *(e for e in examples if e.source != "project")], hints)
            messages = list(prompt.messages)
            completion = await run.complete(messages, alternatives=1 if voting else 0)
    alternatives = list(completion.alternatives)
    rounds_left = config.repair_rounds
    # An empty but valid result is kept in case the repair round does worse.
    fallback: Candidate | None = None
    final: Candidate | None = None

    while True:
        previous_sql = out.sql
        sql = extract_sql(completion.text)
        if previous_sql and sql and sql != previous_sql:
            out.repaired = True
        out.sql = sql
        candidate = await run.candidate(sql)
        final = candidate
        if not config.repair_runaways and (completion.runaway or candidate.timed_out):
            rounds_left = 0
        out.sql = candidate.sql or sql
        out.schema_valid = candidate.schema_valid
        if candidate.outcome == "refused":
            # Unsafe output is refused, never "repaired": a model steered into writing stays refused.
            out.error_code = ErrorCode.unsafe_sql
            out.error_message = f"The generated statement was refused: {candidate.message}"
            break
        problem: str | None = None
        if candidate.outcome == "invalid":
            schema_error = candidate.check is not None and candidate.check.code in (
                "unknown_table",
                "unknown_column",
            )
            if config.static_check and rounds_left > 0:
                problem = candidate.message
            elif not config.static_check and schema_error and config.execution_repair and rounds_left > 0:
                # Without the static check (an ablation) schema errors are what the database would report.
                problem = f"The database returned an error: {candidate.message}"
            else:
                out.error_code = ErrorCode.invalid_sql
                out.error_message = f"No valid SQL could be written for this question: {candidate.message}"
                break
        elif candidate.outcome == "failed":
            if config.execution_repair and rounds_left > 0:
                problem = f"The database returned an error: {candidate.message}"
            else:
                out.error_code = ErrorCode.execution_failed
                out.error_message = f"The SQL did not run: {candidate.message}"
                break
        else:
            assert candidate.result is not None
            out.executed = True
            out.result = candidate.result
            empty = not candidate.result.rows
            if (
                empty
                and config.execution_repair
                and rounds_left > 0
                and not any(w in question.lower() for w in _EMPTY_OK_WORDS)
            ):
                fallback = candidate
                problem = "The query ran but returned no rows, which is unlikely for this question. "
                if config.value_check and candidate.value_problems:
                    problem += "; ".join(p.message() for p in candidate.value_problems) + "."
                else:
                    problem += "Check the filter values against the sample values and the join conditions."
            else:
                out.ok = True
                out.error_code = None
                out.error_message = None
                break
        rounds_left -= 1
        messages = build_repair_messages(prompt, out.sql, problem)
        completion = await run.complete(messages)

    if not out.ok and fallback is not None and out.error_code != ErrorCode.unsafe_sql:
        final = fallback
        out.sql, out.result, out.schema_valid = fallback.sql, fallback.result, fallback.schema_valid
        out.ok, out.executed, out.error_code, out.error_message = True, True, None, None

    candidates = [final] if final is not None else []
    if voting and final is not None and out.error_code != ErrorCode.unsafe_sql:
        candidates = await run.vote_candidates(prompt.messages, final, alternatives)
    outcome = vote(candidates) if candidates else None
    if outcome is not None and candidates[outcome.winner] is not final:
        winner = candidates[outcome.winner]
        assert winner.result is not None
        out.sql, out.result, out.schema_valid, out.executed = winner.sql, winner.result, True, True
        out.ok, out.error_code, out.error_message = True, None, None
        final = winner
    if final is not None:
        out.fixes = list(final.fixed)
    out.candidates = outcome.voters if outcome is not None else 0
    out.agreeing = outcome.agreeing if outcome is not None else 0
    out.confidence, out.confidence_basis = confidence(
        from_example=False,
        vote_result=outcome,
        candidates=len(candidates),
        empty=bool(out.result is not None and not out.result.rows),
        repaired=out.repaired,
    )
    if not out.ok:
        out.confidence = 0.0
    return _finish(out, question, timings)


@dataclass
class _Prompter:
    """Builds the prompt of one answer's question (or of a part of it) with everything else the answer's."""

    llm: LLM
    schema: SchemaInfo
    config: GenerationConfig
    history: list[Turn]
    fewshot: list[ContextExample]
    domain_note: str | None
    values: ValueIndex | None

    def hints(self, text: str) -> list[str]:
        if self.values is None or not self.config.prompt.value_hints:
            return []
        return self.values.hints(text, entity_words=self.config.prompt.entity_value_hints)

    def __call__(self, text: str, examples: list[ContextExample], hints: list[str] | None = None) -> Prompt:
        return build_prompt(
            text,
            self.schema,
            history=self.history,
            examples=examples,
            fewshot=self.fewshot,
            options=self.config.prompt,
            budget_tokens=self.config.budget_tokens,
            count_tokens=self.llm.count_tokens,
            domain_note=self.domain_note,
            value_hints=self.hints(text) if hints is None else hints,
        )


@dataclass
class _Runner:
    """What one answer's model calls and candidates share."""

    llm: LLM
    databases: CustomerDatabases
    schema: SchemaInfo
    database_url: str
    config: GenerationConfig
    adapter: AdapterRef | None
    values: ValueIndex | None
    out: GenerationResult
    timings: dict[str, float]

    async def complete(
        self, messages: list[ChatMessage], *, alternatives: int = 0, first_alternative: int = 0
    ) -> Completion:
        started = time.perf_counter()
        completion = await self.llm.complete(
            messages,
            max_tokens=self.config.max_tokens,
            adapter=self.adapter,
            alternatives=alternatives,
            first_alternative=first_alternative,
        )
        _add(self.timings, "llm", started)
        if first_alternative == 0:
            self.out.attempts += 1
        self.out.prompt_tokens += completion.prompt_tokens
        self.out.completion_tokens += completion.completion_tokens
        self.out.model = completion.model
        self.out.adapter_version = completion.adapter_version
        _merge_model_timings(self.out, completion)
        return completion

    async def candidate(self, sql: str) -> Candidate:
        return await run_candidate(
            sql,
            schema=self.schema,
            databases=self.databases,
            database_url=self.database_url,
            values=self.values,
            mechanical_fixes=self.config.mechanical_fixes,
            word_fixes=self.config.literal_word_fixes,
            timeout_s=self.config.timeout_s,
            row_limit=self.config.row_limit,
            timings=self.timings,
        )

    async def vote_candidates(
        self, messages: list[ChatMessage], first: Candidate, alternatives: list[str]
    ) -> list[Candidate]:
        """The greedy answer and sampled alternatives of the first prompt, drawn until the first two agree
        or ``vote_candidates`` are in; alternatives after the first cost only their decoding."""
        if not alternatives:
            return [first]  # the backend cannot sample: the greedy answer alone
        started = time.perf_counter()
        wanted = self.config.vote_candidates
        candidates = [first]
        pending = list(alternatives)
        drawn = len(pending)
        while len(candidates) < wanted:
            if not pending:
                if agreement_settled(candidates, 2):
                    break
                more = await self.complete(
                    messages, alternatives=wanted - len(candidates), first_alternative=drawn
                )
                pending = list(more.alternatives)
                drawn += len(pending)
                if not pending:
                    break  # the backend cannot sample
            candidates.append(await self.candidate(extract_sql(pending.pop(0))))
            if len(candidates) == 2 and agreement_settled(candidates, 2):
                break
        _add(self.timings, "vote", started)
        return candidates


async def _answer_by_parts(
    run: _Runner, question: str, examples: list[ContextExample], prompt_for: _Prompter
) -> GenerationResult | None:
    """``run.out`` answered by the model writing the query of the question's inner phrase and an example's
    query built around it (services.generation.decompose), or None; its model call counts either way."""
    values = run.values
    assert values is not None

    async def complete(prompt: Prompt) -> str:
        return (await run.complete(list(prompt.messages))).text

    started = time.perf_counter()
    decomposed = await answer_by_parts(
        question,
        examples,
        run.schema,
        values,
        prompt_for=lambda text: question_starts_segment(prompt_for(text, examples)),
        complete=complete,
        run=run.candidate,
    )
    _add(run.timings, "decompose", started)
    if decomposed is None:
        return None
    out, answer = run.out, decomposed.candidate
    assert answer.result is not None
    out.sql, out.result, out.schema_valid, out.executed, out.ok = answer.sql, answer.result, True, True, True
    out.fixes = list(answer.fixed)
    out.example_ids = [decomposed.outer_id]
    out.confidence, out.confidence_basis = confidence(
        from_example=True,
        vote_result=None,
        candidates=1,
        empty=False,
        repaired=False,
        basis="composed_model",
    )
    return out


async def answer_from_examples(
    databases: CustomerDatabases,
    question: str,
    schema: SchemaInfo,
    database_url: str,
    examples: list[ContextExample],
    config: GenerationConfig,
    timings: dict[str, float],
    values: ValueIndex | None = None,
    paraphrases: Paraphrases | None = None,
) -> GenerationResult | None:
    """The first adapted project example that passes the static check and returns rows, or None: strict
    template matches first, then (with a value index) examples adapted through the values the question names
    for the same columns, then two examples composed (``composed_answers``). Only a result with something in
    it counts: no rows, or one row of zeros and NULLs (a COUNT or SUM over nothing), usually means the swapped
    value belongs to another column or is not in the data, and the model does better there."""
    project = [e for e in examples if e.source == "project"]
    for tries in _example_tries(question, project, schema, config, values, timings, paraphrases):
        for example_ids, candidate_sql, basis, single in tries:
            answer = await _run_example(databases, database_url, schema, config, timings, candidate_sql)
            if answer is None:
                continue
            sql, result = answer
            if single and not one_answer(result):
                continue  # the question asks for one thing; several answers answer another question
            return GenerationResult(
                ok=True,
                sql=sql,
                result=result,
                schema_valid=True,
                executed=True,
                attempts=0,
                model=EXAMPLE_MODEL,
                sql_source="example",
                example_ids=list(example_ids),
                confidence_basis=basis,
            )
    return None


def _example_tries(
    question: str,
    project: list[ContextExample],
    schema: SchemaInfo,
    config: GenerationConfig,
    values: ValueIndex | None,
    timings: dict[str, float],
    paraphrases: Paraphrases | None = None,
) -> Iterator[list[tuple[tuple[str, ...], str, Basis, bool]]]:
    """Adapted queries in the order they are tried, in groups: each group is only worked out once the ones
    before it answered nothing. The flag: whether the answer must be a single row."""
    started = time.perf_counter()
    if config.prominent_readings and values is not None:
        # More than will be tried: an equally close match beyond the limit may be the likelier reading.
        closest = adaptations(question, project, schema.dialect, limit=2 * config.template_tries)
        strict = by_prominence(closest, schema, values)[: config.template_tries]
    else:
        strict = adaptations(question, project, schema.dialect, limit=config.template_tries)
    _add(timings, "template", started)
    yield [((a.example_id,), a.sql, "verified_example", False) for a in strict]
    if values is None:
        return
    if config.shape_templates:
        started = time.perf_counter()
        reworded = shape_adaptations(
            question,
            project,
            schema,
            values,
            limit=config.template_tries,
            paraphrases=paraphrases,
            entity_words=config.entity_templates,
        )
        _add(timings, "template", started)
        yield [((a.example_id,), a.sql, "adapted_example", False) for a in reworded]
    if config.value_templates:
        started = time.perf_counter()
        adapted = value_adaptations(
            question,
            project,
            schema,
            values,
            min_score=config.value_template_min_score,
            limit=config.template_tries,
        )
        _add(timings, "template", started)
        yield [((a.example_id,), a.sql, "adapted_example", False) for a in adapted]
    if config.composed_answers:
        started = time.perf_counter()
        composed = compositions(question, project, schema, values, limit=config.template_tries)
        _add(timings, "template", started)
        yield [((c.outer_id, c.inner_id), c.sql, "composed_examples", c.single) for c in composed]


async def _run_example(
    databases: CustomerDatabases,
    database_url: str,
    schema: SchemaInfo,
    config: GenerationConfig,
    timings: dict[str, float],
    candidate_sql: str,
) -> tuple[str, QueryResult] | None:
    """The checked text and result of an adapted query, or None when it fails the check, does not run or
    says nothing."""
    started = time.perf_counter()
    check = check_sql(candidate_sql, schema)
    _add(timings, "check", started)
    if check.checked is None:
        return None
    started = time.perf_counter()
    try:
        result = await databases.run(
            database_url, check.checked, timeout_s=config.timeout_s, row_limit=config.row_limit
        )
    except (QueryFailed, QueryTimeout):
        return None
    finally:
        _add(timings, "execute", started)
    if says_nothing(result):
        return None
    return check.checked.text, result


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


__all__ = [
    "EXAMPLE_MODEL",
    "DatabaseUnavailable",
    "GenerationConfig",
    "GenerationResult",
    "answer_from_examples",
    "generate_answer",
]
