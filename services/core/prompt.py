"""The prompt that asks a small model for one SQL query: instruction, schema, examples, history, question.

Every part can be switched off (``PromptOptions``) so benchmarks can measure what each one is worth. The
models are small (0.5B and less), so the prompt stays plain and short: the reasoning frame asks the model to
check names against the schema *silently* and reply with one ```sql block, because a small model asked to
think aloud rambles and the answer must remain extractable.

The system message (instructions, schema, sample values) is the same for every question of a project, so a
local model evaluates it once per project and schema version and reuses it (``llm.llama_decode``); what varies
comes after it. When the prompt is over its token budget, the varying parts are dropped first (library
examples, conversation turns before the last one, project examples from the least similar, value hints), then
sample values, then tables unrelated to the question. The best examples are placed last, closest to the
question, where small models weigh them most.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from events import ContextExample, Turn
from services.core.column_hints import column_hints
from services.core.llm.base import ChatMessage, estimate_tokens
from services.core.schema import Column, SchemaInfo, Table, derived
from services.core.sql.aliases import AliasStyle, drop_table_aliases, renumber_table_aliases
from services.core.words import singular as _stem

DIALECT_NAMES: dict[str, str] = {"sqlite": "SQLite", "postgres": "PostgreSQL", "mysql": "MySQL"}

_DIALECT_HINTS: dict[str, str] = {
    "sqlite": "For date parts use strftime (e.g. strftime('%Y', col)).",
    "postgres": "For date parts use EXTRACT(YEAR FROM col) or date_trunc; double-quote mixed-case names.",
    "mysql": "For date parts use YEAR(col), MONTH(col) or DATE_FORMAT; backtick-quote unusual names.",
}

# Per-message overhead of chat templates (role markers, separators), so the budget is not exceeded by them.
_MESSAGE_OVERHEAD = 4

_STOPWORDS = frozenset(
    """a an the of in on at to for by with from and or not no is are was were be been do does did what which who
    whom whose how many much show list give me all each every per that this these those there their it its
    as than then into over under about between get find tell return please i we you our my your have has had
    can could would should will any some one id""".split()
)
_SAFE_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENT_PIECE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


@dataclass(frozen=True)
class PromptOptions:
    """Which prompt parts are used. ``PromptOptions()`` is the full prompt; ``baseline()`` the bare one."""

    reasoning: bool = True
    sample_values: bool = True
    compact_schema: bool = True
    history: bool = True
    examples: bool = True
    fewshot: bool = True
    relevant_tables_only: bool = False
    #: Tables kept when selecting relevant ones; a schema with more tables than this is always narrowed.
    max_tables: int = 12
    max_history: int = 3
    max_samples: int = 3
    #: Values of the database that the question mentions, with the columns that hold them.
    value_hints: bool = True
    #: Numeric columns the question names by their own words, where one table has them (``column_hints``); the
    #: product turns it on (``QUERYLIFT_COLUMN_HINTS``), the benchmark's other strategies keep their prompts.
    column_hints: bool = False
    #: Project examples' SQL shown without the table aliases it does not need (``services.core.sql.aliases``):
    #: fewer tokens to read and, since the model copies the style, to write (``QUERYLIFT_PLAIN_EXAMPLE_SQL``).
    plain_example_sql: bool = False
    #: Project examples' table aliases renamed short (``CITYalias0`` -> ``CITY0``; ``services.core.sql.aliases``),
    #: the query's shape kept: fewer tokens to read and to write (``QUERYLIFT_EXAMPLE_ALIASES``); None: as written.
    example_aliases: AliasStyle | None = None
    #: Project examples shown, the most similar first (None: all given); the rest still count for table choice
    #: (``QUERYLIFT_PROMPT_EXAMPLES``).
    max_examples: int | None = None
    #: Column hints also for a name several tables share, by the one table the question names (``column_hints``'
    #: ``named_table``, QUERYLIFT_COLUMN_HINTS_NAMED_TABLE).
    column_hints_named_table: bool = False
    #: Value hints narrowed by the word next to the value that names a table ("the colorado river" names
    #: river.river_name alone; ``ValueIndex.hints``) (``QUERYLIFT_ENTITY_VALUE_HINTS``).
    entity_value_hints: bool = False

    @classmethod
    def baseline(cls) -> PromptOptions:
        """CREATE TABLE-like schema text and a plain instruction, nothing else."""
        return cls(
            reasoning=False,
            sample_values=False,
            compact_schema=False,
            history=False,
            examples=False,
            fewshot=False,
            relevant_tables_only=False,
            value_hints=False,
        )

    @classmethod
    def full(cls) -> PromptOptions:
        return cls()

    def but(self, **changes: Any) -> PromptOptions:
        """A copy with some flags changed (ablations)."""
        return replace(self, **changes)


@dataclass
class Prompt:
    messages: list[ChatMessage]
    tokens: int
    #: Part names included: instruction, reasoning, domain_note, schema, sample_values, fewshot, examples, history.
    parts: list[str]
    #: What the budget removed, in order: sample_values, fewshot:<id>, history:<index>, example:<id>, table:<name>.
    dropped: list[str]
    dialect: str = "sqlite"
    tables: list[str] = field(default_factory=list)
    #: Examples (project and library) that are in the prompt, best first.
    examples_used: list[ContextExample] = field(default_factory=list)
    over_budget: bool = False
    #: Tokens per part: "prefix" (the system message), "fewshot", "examples_and_history", "value_hints",
    #: "question".
    part_tokens: dict[str, int] = field(default_factory=dict)


# --- relevance ---------------------------------------------------------------------------------------------


def words(text: str) -> set[str]:
    """Lower-cased, crudely singularised content words of a question or an identifier (snake and camel case)."""
    out: set[str] = set()
    for token in re.findall(r"[A-Za-z0-9]+", text):
        pieces = _IDENT_PIECE.findall(token) or [token]
        for piece in [*pieces, token] if len(pieces) > 1 else pieces:
            lowered = piece.lower()
            if lowered not in _STOPWORDS and len(lowered) > 1:
                out.add(_stem(lowered))
    return out


@dataclass(frozen=True)
class _TableWords:
    """What relevance scoring needs of one table, worked out once per loaded schema."""

    name: str
    name_words: frozenset[str]
    column_words: frozenset[str]
    #: Per column, one pattern per usable sample value (a value named in the question points at its table).
    sample_patterns: tuple[tuple[re.Pattern[str], ...], ...]


def _sample_pattern(value: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![a-z0-9]){re.escape(value.strip().lower())}(?![a-z0-9])")


def _table_words(schema: SchemaInfo) -> list[_TableWords]:
    def build() -> list[_TableWords]:
        out = []
        for table in schema.tables:
            column_words: set[str] = set()
            for column in table.columns:
                column_words |= words(column.name)
            patterns = tuple(
                tuple(
                    _sample_pattern(v) for v in column.samples if isinstance(v, str) and len(v.strip()) >= 3
                )
                for column in table.columns
            )
            out.append(
                _TableWords(table.name, frozenset(words(table.name)), frozenset(column_words), patterns)
            )
        return out

    return derived(schema, "prompt.table_words", build)


def table_scores(question: str, schema: SchemaInfo) -> dict[str, float]:
    """How strongly each table relates to the question (name, column and sample-value word overlap)."""
    q_words = words(question)
    q_lower = question.lower()
    scores: dict[str, float] = {}
    for table in _table_words(schema):
        score = 3.0 * len(table.name_words & q_words)
        if table.name_words and table.name_words <= q_words:
            score += 2.0  # the whole name is in the question: "orders" beats "order_items" for "orders"
        for patterns in table.sample_patterns:
            score += 2.0 * sum(1 for pattern in patterns if pattern.search(q_lower))
        score += len(table.column_words & q_words)
        scores[table.name] = score
    return scores


def tables_in_sql(sql: str, schema: SchemaInfo) -> set[str]:
    """Names of the schema's tables that a query mentions (word match; good enough for selection)."""
    lowered = sql.lower()
    return {
        t.name
        for t in schema.tables
        if re.search(rf"(?<![a-z0-9_]){re.escape(t.name.lower())}(?![a-z0-9_])", lowered)
    }


def _neighbours(schema: SchemaInfo, names: set[str]) -> set[str]:
    lowered = {n.lower() for n in names}
    out: set[str] = set()
    for table in schema.tables:
        for fk in table.foreign_keys:
            if table.name.lower() in lowered:
                out.add(fk.ref_table)
            if fk.ref_table.lower() in lowered:
                out.add(table.name)
    known = {t.name.lower(): t.name for t in schema.tables}
    return {known[n.lower()] for n in out if n.lower() in known} - names


def select_tables(
    question: str, schema: SchemaInfo, example_sql: list[str], max_tables: int
) -> tuple[list[Table], dict[str, float]]:
    """Tables relevant to the question, their FK neighbours and tables the examples use, in schema order.

    Returns the tables and a keep-priority per table (higher is kept longer under budget pressure).
    """
    scores = table_scores(question, schema)
    used_by_examples: set[str] = set()
    for sql in example_sql:
        used_by_examples |= tables_in_sql(sql, schema)
    ranked = sorted((t.name for t in schema.tables if scores[t.name] > 0), key=lambda n: -scores[n])
    chosen: list[str] = ranked[:max_tables]
    for name in sorted(used_by_examples, key=lambda n: -scores[n]):
        if len(chosen) < max_tables and name not in chosen:
            chosen.append(name)
    for name in sorted(_neighbours(schema, set(chosen)), key=lambda n: -scores[n]):
        if len(chosen) < max_tables and name not in chosen:
            chosen.append(name)
    if not chosen:
        chosen = [t.name for t in schema.tables[:max_tables]]
    priority = _priorities(schema, scores, used_by_examples)
    keep = set(chosen)
    return [t for t in schema.tables if t.name in keep], priority


def _priorities(schema: SchemaInfo, scores: dict[str, float], used_by_examples: set[str]) -> dict[str, float]:
    relevant = {n for n, s in scores.items() if s > 0}
    supporting = (_neighbours(schema, relevant) | used_by_examples) - relevant
    return {
        t.name: scores[t.name]
        + (10.0 if t.name in relevant else 0.0)
        + (0.5 if t.name in supporting else 0.0)
        for t in schema.tables
    }


# --- rendering ---------------------------------------------------------------------------------------------


def _ident(name: str, dialect: str) -> str:
    if _SAFE_IDENT.fullmatch(name):
        return name
    if dialect == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def _literal(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float | decimal.Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        value = value.isoformat()
    text = str(value).replace("\n", " ")
    if len(text) > 40:
        text = text[:37] + "..."
    return "'" + text.replace("'", "''") + "'"


def _samples(column: Column, limit: int) -> list[str]:
    out: list[str] = []
    for value in column.samples:
        literal = _literal(value)
        if literal is not None and literal not in out:
            out.append(literal)
        if len(out) >= limit:
            break
    return out


def _fk_targets(table: Table) -> dict[str, tuple[str, str]]:
    return {fk.column.lower(): (fk.ref_table, fk.ref_column) for fk in table.foreign_keys}


def render_table_compact(table: Table, dialect: str, samples: int) -> str:
    """``TABLE(col type PK, col2 type -> REF.col e.g. 'a'/'b', ...)``"""
    refs = _fk_targets(table)
    cols: list[str] = []
    for column in table.columns:
        text = f"{_ident(column.name, dialect)} {column.type or 'TEXT'}".rstrip()
        if column.primary_key:
            text += " PK"
        ref = refs.get(column.name.lower())
        if ref:
            text += f" -> {_ident(ref[0], dialect)}.{_ident(ref[1], dialect)}"
        values = _samples(column, samples) if samples else []
        if values:
            text += " e.g. " + "/".join(values)
        cols.append(text)
    return f"{_ident(table.name, dialect)}({', '.join(cols)})"


def render_table_create(table: Table, dialect: str, samples: int) -> str:
    """A CREATE TABLE-like block; sample values, when wanted, as trailing comments."""
    refs = _fk_targets(table)
    lines: list[str] = []
    for column in table.columns:
        text = f"  {_ident(column.name, dialect)} {column.type or 'TEXT'}".rstrip()
        if column.primary_key:
            text += " PRIMARY KEY"
        ref = refs.get(column.name.lower())
        if ref:
            text += f" REFERENCES {_ident(ref[0], dialect)}({_ident(ref[1], dialect)})"
        lines.append(text)
    body = []
    for i, line in enumerate(lines):
        sep = "," if i < len(lines) - 1 else ""
        values = _samples(table.columns[i], samples) if samples else []
        body.append(f"{line}{sep}" + (f" -- e.g. {', '.join(values)}" if values else ""))
    return f"CREATE TABLE {_ident(table.name, dialect)} (\n" + "\n".join(body) + "\n);"


def render_schema(tables: list[Table], dialect: str, *, compact: bool, samples: int) -> str:
    render = render_table_compact if compact else render_table_create
    key = f"prompt.render/{dialect}/{compact}/{samples}"

    def rendered(table: Table) -> str:
        # A table renders the same for every question (and every budget-trimming pass over one prompt).
        return derived(table, key, lambda: render(table, dialect, samples))

    return "\n".join(rendered(t) for t in tables)


#: How every answer shown to the model starts, and how its own must: a backend that writes it into the prompt
#: (the GGUF backend's ``llm_reply_fence``) saves decoding it.
SQL_BLOCK_OPENING = "```sql\n"


def sql_block(sql: str) -> str:
    """How the model is asked to answer, and how example answers are shown to it."""
    return f"{SQL_BLOCK_OPENING}{sql.strip().rstrip(';').strip()}\n```"


_EXAMPLES_NOTE = (
    "Questions answered correctly on this database may come before the last question: follow their SQL "
    "patterns, but take every filter value from the last question."
)


def _render_fewshot(examples: list[ContextExample]) -> str:
    # Given best first; rendered best last so the most similar example sits next to the question.
    pairs = [f"Question: {e.question.strip()}\n{sql_block(e.sql)}" for e in reversed(examples)]
    return "Examples from similar databases (their tables may differ from this schema):\n" + "\n".join(pairs)


def _with_values(question: str, hints: list[str], columns: list[str] | None = None) -> str:
    """The question, then the database values and the columns it mentions: on the question's own lines they
    stay tied to it (a separate message made a small model treat them as a question of their own)."""
    out = question
    if hints:
        out += f"\n(Database values: {'; '.join(hints)}.)"
    if columns:
        out += f"\n(Columns: {'; '.join(columns)}.)"
    return out


def _example_turns(examples: list[ContextExample], dialect: str, options: PromptOptions) -> list[ChatMessage]:
    # Chat turns rather than inline text: a small model then answers the question exactly as the example
    # answers look (one sql block) instead of continuing a "Question: ... SQL: ..." list. Best last.
    turns: list[ChatMessage] = []
    for e in reversed(examples):
        turns.append(ChatMessage(role="user", content=e.question.strip()))
        turns.append(
            ChatMessage(role="assistant", content=sql_block(example_sql_as_shown(e.sql, dialect, options)))
        )
    return turns


def example_sql_as_shown(sql: str, dialect: str, options: PromptOptions) -> str:
    """A project example's SQL as the prompt shows it (``plain_example_sql``, else ``example_aliases``); an
    adapter trained on such prompts learns to answer in the same style."""
    if options.plain_example_sql:
        return plain_example_sql(sql, dialect)
    if options.example_aliases is not None:
        return short_alias_sql(sql, dialect, options.example_aliases)
    return sql


@lru_cache(maxsize=4096)
def short_alias_sql(sql: str, dialect: str, style: AliasStyle) -> str:
    """An example's SQL as the prompt shows it with ``example_aliases``: its table aliases renamed short."""
    return renumber_table_aliases(sql, dialect, style)


@lru_cache(maxsize=4096)
def plain_example_sql(sql: str, dialect: str) -> str:
    """An example's SQL as the prompt shows it with ``plain_example_sql``: without aliases it does not need."""
    return drop_table_aliases(sql, dialect)


def _history_turns(turns: list[Turn]) -> list[ChatMessage]:
    out: list[ChatMessage] = []
    for turn in turns:
        if not turn.sql:
            continue  # a turn that produced no SQL gives a follow-up nothing to build on
        out.append(ChatMessage(role="user", content=turn.question.strip()))
        out.append(ChatMessage(role="assistant", content=sql_block(turn.sql)))
    return out


def _system_text(dialect: str, options: PromptOptions, samples_shown: bool, domain_note: str | None) -> str:
    """The fixed instructions: the same text for every question of a project (no per-question part), so the
    whole system message, schema included, is a prefix the model evaluates once."""
    name = DIALECT_NAMES.get(dialect, dialect)
    if not options.reasoning:
        lines = [f"Write one {name} SQL query that answers the question about the database below."]
        if options.compact_schema:
            lines.append("Join tables on the listed keys (->).")
        lines.append("Return only the SQL query.")
    else:
        lines = [
            f"You write {name} SQL queries for the database described below.",
            "First, silently identify the tables and columns the question needs and check each one against "
            "the schema. Use only tables and columns that exist there; join on the listed keys"
            + (" (->)." if options.compact_schema else "."),
            _DIALECT_HINTS.get(dialect, ""),
        ]
        if samples_shown:
            lines.append("Spell filter values exactly as in the sample values.")
        if options.examples and options.max_examples != 0:
            # Small models copy literal values from demonstrations; say which question the values come from.
            lines.append(_EXAMPLES_NOTE)
        lines.append("Reply with exactly one SQL query in a ```sql code block and nothing else.")
    if domain_note:
        lines.append(f"About this data: {domain_note.strip()}")
    return "\n".join(line for line in lines if line)


# --- assembly under a budget -------------------------------------------------------------------------------


@dataclass
class _State:
    tables: list[Table]
    samples: bool
    fewshot: list[ContextExample]
    history: list[tuple[int, Turn]]
    examples: list[ContextExample]
    values: list[str]
    columns: list[str] = field(default_factory=list)


def build_prompt(
    question: str,
    schema: SchemaInfo,
    *,
    history: list[Turn] | None = None,
    examples: list[ContextExample] | None = None,
    fewshot: list[ContextExample] | None = None,
    options: PromptOptions | None = None,
    budget_tokens: int = 3072,
    count_tokens: Callable[[str], int] = estimate_tokens,
    domain_note: str | None = None,
    value_hints: list[str] | None = None,
) -> Prompt:
    """The chat messages for ``question``, fitted into ``budget_tokens`` by dropping the least useful parts.

    Order: the system message (instructions, domain note, schema with sample values) is the same for every
    question of a project and schema version, so a model can evaluate it once and reuse it; then what varies:
    library examples, project examples and conversation turns as chat turns, values the question mentions,
    and the question. Over budget, the varying parts go first (library examples, earlier turns, project
    examples from the least similar, value hints), then sample values, then tables unrelated to the question.
    """
    options = options or PromptOptions()
    dialect = schema.dialect
    project_examples = list(examples or []) if options.examples else []
    library_examples = list(fewshot or []) if options.fewshot else []
    turns = list(history or []) if options.history else []
    first_turn = max(0, len(turns) - options.max_history)
    numbered_turns = list(enumerate(turns))[first_turn:]

    example_sql = [e.sql for e in project_examples]
    if options.relevant_tables_only or len(schema.tables) > options.max_tables:
        tables, priority = select_tables(question, schema, example_sql, options.max_tables)
    else:
        tables = list(schema.tables)
        _, priority = select_tables(question, schema, example_sql, len(schema.tables))

    state = _State(
        tables=tables,
        samples=options.sample_values and any(c.samples for t in tables for c in t.columns),
        fewshot=library_examples,
        history=numbered_turns,
        examples=project_examples[: options.max_examples],
        values=list(value_hints or []) if options.value_hints else [],
        columns=(
            column_hints(question, schema, named_table=options.column_hints_named_table)
            if options.column_hints
            else []
        ),
    )

    def render() -> tuple[list[ChatMessage], list[str]]:
        parts = ["instruction"]
        if options.reasoning:
            parts.append("reasoning")
        if domain_note:
            parts.append("domain_note")
        system = _system_text(dialect, options, state.samples, domain_note)
        samples = options.max_samples if state.samples else 0
        schema_text = render_schema(state.tables, dialect, compact=options.compact_schema, samples=samples)
        blocks = [system, f"Database schema ({DIALECT_NAMES.get(dialect, dialect)}):\n{schema_text}"]
        parts.append("schema")
        if state.samples:
            parts.append("sample_values")
        messages = [ChatMessage(role="system", content="\n\n".join(blocks))]
        if state.fewshot:
            messages.append(ChatMessage(role="user", content=_render_fewshot(state.fewshot)))
            parts.append("fewshot")
        if state.examples:
            messages += _example_turns(state.examples, dialect, options)
            parts.append("examples")
        history_turns = _history_turns([t for _, t in state.history])
        if history_turns:
            messages += history_turns
            parts.append("history")
        if state.values:
            parts.append("value_hints")
        if state.columns:
            parts.append("column_hints")
        messages.append(
            ChatMessage(role="user", content=_with_values(question.strip(), state.values, state.columns))
        )
        return messages, parts

    def measure(messages: list[ChatMessage]) -> int:
        return sum(count_tokens(m["content"]) + _MESSAGE_OVERHEAD for m in messages)

    def drop_steps() -> Iterator[str]:
        while state.fewshot:
            yield f"fewshot:{state.fewshot.pop().example_id}"
        while len(state.history) > 1:
            yield f"history:{state.history.pop(0)[0]}"
        while state.examples:
            yield f"example:{state.examples.pop().example_id}"
        while state.values:
            yield f"value:{state.values.pop()}"
        while state.columns:
            yield f"column:{state.columns.pop()}"
        if state.samples:
            state.samples = False
            yield "sample_values"
        yield from drop_tables(lambda t: priority.get(t.name, 0.0) < 10.0)
        while state.history:
            yield f"history:{state.history.pop(0)[0]}"
        yield from drop_tables(lambda t: True)

    def drop_tables(eligible: Callable[[Table], bool]) -> Iterator[str]:
        while len(state.tables) > 1:
            candidates = [
                (priority.get(t.name, 0.0), -i, t) for i, t in enumerate(state.tables) if eligible(t)
            ]
            if not candidates:
                return
            # Lowest priority first; among equals, the one listed last.
            _, _, victim = min(candidates, key=lambda c: (c[0], c[1]))
            state.tables.remove(victim)
            yield f"table:{victim.name}"

    messages, parts = render()
    tokens = measure(messages)
    dropped: list[str] = []
    if tokens > budget_tokens:
        for what in drop_steps():
            dropped.append(what)
            messages, parts = render()
            tokens = measure(messages)
            if tokens <= budget_tokens:
                break
    return Prompt(
        messages=messages,
        tokens=tokens,
        parts=parts,
        dropped=dropped,
        dialect=dialect,
        tables=[t.name for t in state.tables],
        examples_used=[*state.examples, *state.fewshot],
        over_budget=tokens > budget_tokens,
        part_tokens=_part_tokens(messages, parts, count_tokens),
    )


def _part_tokens(
    messages: list[ChatMessage], parts: list[str], count: Callable[[str], int]
) -> dict[str, int]:
    """Tokens per part (what each part costs, for the benchmark): the system message as 'prefix', then each
    varying part's messages."""
    out = {"prefix": count(messages[0]["content"]) + _MESSAGE_OVERHEAD}
    rest = messages[1:-1]
    names = [p for p in parts if p in ("fewshot", "examples", "history", "value_hints", "column_hints")]
    index = 0
    if "fewshot" in names:
        out["fewshot"] = count(rest[index]["content"]) + _MESSAGE_OVERHEAD
        index += 1
    out["examples_and_history"] = sum(count(m["content"]) + _MESSAGE_OVERHEAD for m in rest[index:])
    out["question"] = count(messages[-1]["content"]) + _MESSAGE_OVERHEAD
    if "value_hints" in names or "column_hints" in names:
        # The hints are the lines after the question's own ("\n(Database values: ...)", "\n(Columns: ...)").
        text = messages[-1]["content"]
        cut = min(i for i in (text.rfind("\n(Database values:"), text.rfind("\n(Columns:")) if i >= 0)
        bare = count(text[:cut]) + _MESSAGE_OVERHEAD
        out["value_hints"] = out["question"] - bare
        out["question"] = bare
    return out


def question_starts_segment(prompt: Prompt) -> Prompt:
    """``prompt`` with its question marked as the start of a segment (``ChatMessage.segment_start``): another
    prompt of the same answer has the same chat before its own question (a decomposed question's phrase and
    the whole question share examples and history), and a backend that keeps evaluated prompts reuses it."""
    *head, question = prompt.messages
    marked: ChatMessage = {**question, "segment_start": True}
    return replace(prompt, messages=[*head, marked])


def build_repair_messages(prompt: Prompt, sql: str, error: str) -> list[ChatMessage]:
    """The original prompt, the model's previous query and what was wrong with it, asking for a fix."""
    name = DIALECT_NAMES.get(prompt.dialect, prompt.dialect)
    error_text = " ".join(error.split())
    if len(error_text) > 600:
        error_text = error_text[:597] + "..."
    messages = list(prompt.messages)
    if sql.strip():
        messages.append(ChatMessage(role="assistant", content=sql_block(sql), segment_start=True))
        problem = f"That query is wrong: {error_text}"
    else:
        messages.append(ChatMessage(role="assistant", content="(no SQL query)", segment_start=True))
        problem = f"That answer contained no usable SQL query: {error_text}"
    messages.append(
        ChatMessage(
            role="user",
            content=f"{problem}\nWrite a corrected {name} query for the same question, using only tables and "
            "columns from the schema. Reply with only the SQL in a ```sql code block.",
        )
    )
    return messages


__all__ = [
    "DIALECT_NAMES",
    "Prompt",
    "PromptOptions",
    "build_prompt",
    "build_repair_messages",
    "example_sql_as_shown",
    "question_starts_segment",
    "render_schema",
    "select_tables",
    "sql_block",
    "table_scores",
    "tables_in_sql",
    "words",
]
