"""All configuration, read from environment variables (prefix ``QUERYLIFT_``) or a ``.env`` file.

A few well-known names are also accepted without the prefix (``DATABASE_URL``, ``RAY_ADDRESS``,
``OLLAMA_URL``, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``), so the usual platform conventions work.
Leaving ``kafka_bootstrap_servers`` or ``database_url`` empty makes ``querylift up`` start the embedded
broker or PostgreSQL for that address.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.infra.llm.cpu_weights import CpuWeights


def _alias(name: str, *bare: str) -> AliasChoices:
    return AliasChoices(f"QUERYLIFT_{name.upper()}", *bare)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUERYLIFT_", env_file=".env", extra="ignore")

    # --- infrastructure -------------------------------------------------------------------------------
    data_dir: Path = Field(Path(".querylift"), description="Embedded PostgreSQL data, model cache, adapters.")
    kafka_bootstrap_servers: str | None = Field(
        None,
        description="host:port[,host:port]; empty: the embedded Tansu broker is started by `querylift up`.",
    )
    topic_prefix: str = Field("", description="Prepended to every topic name (e.g. 'prod.').")
    topic_partitions: int = Field(6, ge=1, description="Partitions for topics querylift creates.")
    database_url: SecretStr | None = Field(
        None,
        validation_alias=_alias("database_url", "DATABASE_URL"),
        description="postgresql:// URL of the system of record; empty: embedded PostgreSQL 18 + pgvector.",
    )
    fetch_wait_ms: int = Field(
        5,
        ge=1,
        description="How long the broker may hold an empty fetch for consumers a question waits on (query, "
        "retrieval, generation) and for clients. The embedded Tansu broker can hold a fetch to the end of this "
        "wait, so it is part of every hop's latency; Apache Kafka answers as soon as data arrives (500 is fine there).",
    )
    background_fetch_wait_ms: int = Field(
        100,
        ge=1,
        description="The same for feedback and training, which no question waits on: fewer, fuller polls.",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="Event loop of `querylift run`: uvloop (less CPU per socket operation) or asyncio.",
    )
    db_pool_max: int = Field(10, ge=1, description="Max connections per consumer to the system of record.")
    ray_address: str | None = Field(
        None,
        validation_alias=_alias("ray_address", "RAY_ADDRESS"),
        description="Ray cluster; empty: local ray.init().",
    )
    metrics_port: int = Field(
        9400,
        ge=0,
        description="Base port for /metrics and /healthz; `querylift up` gives consumer i port+i; 0 disables.",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address the metrics server binds to (0.0.0.0 in containers)."
    )
    parent_pid: int | None = Field(
        None,
        description="Set by `querylift up` for the consumers it starts: a consumer stops, as on SIGTERM, once "
        "that process is gone, so a killed `up` leaves none running.",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_json: bool = Field(True, description="Structured JSON logs; false for human-readable lines.")

    project_cache_s: float = Field(
        5.0,
        ge=0,
        description="Seconds the generation consumer reuses a project's row (database URL, description) before "
        "reading it again; a change or removal is seen within this. 0 reads it for every question.",
    )

    # --- language model -------------------------------------------------------------------------------
    llm_backend: Literal["gguf", "transformers", "ollama", "openai", "scripted"] = Field(
        "gguf",
        description="gguf: local llama.cpp on CPU; transformers: local HF model with per-project peft adapters.",
    )
    llm_model: str = Field(
        "qwen2.5-coder-0.5b-instruct",
        description="gguf: a path or 'qwen2.5-coder-0.5b-instruct' (default: the faster on 2 cores) / "
        "'qwen2.5-coder-1.5b-instruct' (+17 points on first-time questions, about twice the time) / "
        "'smollm2-135m-instruct'; served backends: model name.",
    )
    ollama_url: str | None = Field(
        None,
        validation_alias=_alias("ollama_url", "OLLAMA_URL"),
        description="Ollama server for llm_backend=ollama.",
    )
    openai_base_url: str | None = Field(
        None,
        validation_alias=_alias("openai_base_url", "OPENAI_BASE_URL"),
        description="OpenAI-compatible server (vLLM, llama.cpp server, ...) for llm_backend=openai.",
    )
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=_alias("openai_api_key", "OPENAI_API_KEY"),
        description="Bearer key for the OpenAI-compatible server, if it needs one (never logged).",
    )
    llm_served_adapters: bool = Field(
        False,
        description="ollama/openai: ask for model '<llm_model>:<project>-v<version>' when a project has an adapter "
        "(exported with `querylift models export`).",
    )
    llm_timeout_s: float = Field(120.0, gt=0, description="Seconds one model call may take.")
    llm_retries: int = Field(2, ge=0, description="Retries with exponential backoff for served models.")
    llm_max_tokens: int = Field(256, ge=16, description="Completion tokens per SQL generation.")
    llm_threads: int = Field(2, ge=1, description="CPU threads for the local GGUF model.")
    llm_cpu_weights: CpuWeights = Field(
        "shipped",
        description="gguf: the model's weights as shipped, or requantized once (into the model cache) to a "
        "4-bit format llama.cpp repacks for its fast CPU kernels: 'q4_0' or 'iq4_nl' (see bench/README.md, "
        "'Weights the CPU runs fastest'). Where a trial in a child process finds that this CPU's llama.cpp "
        "cannot serve them repacked (seen: a Xeon with AMX), they are served plainly.",
    )
    llm_context_tokens: int = Field(4096, ge=512, description="Context window of the local model.")
    prompt_token_budget: int = Field(
        3072, ge=256, description="Prompt parts are dropped, least useful first, to fit."
    )
    llm_seed: int = Field(
        0,
        description="Sampling seed: answers are greedy; sampled voting candidates use this seed + their number.",
    )
    llm_vote_temperature: float = Field(
        0.7,
        gt=0,
        le=2,
        description="Temperature of the sampled voting candidates (the first answer is greedy).",
    )
    llm_prefix_cache_size: int = Field(
        8,
        ge=0,
        description="gguf: evaluated prompt prefixes (a project's instructions and schema) kept as saved model "
        "states, least recently used dropped; the live cache is reused whatever this says.",
    )
    llm_prefix_reuse: bool = Field(
        True,
        description="gguf: evaluate a project's fixed prompt prefix once and reuse it (off: every prompt whole).",
    )
    llm_prompt_batches: Literal["turns", "prompts"] = Field(
        "prompts",
        description="gguf: where a prompt's evaluation is cut into batches besides the end of the project's prefix: "
        "at the start of every answer in the chat (turns: examples' answers too), or only where an earlier prompt "
        "of the same question ended (prompts: a repair round's first prompt; fewer, larger batches, which a CPU "
        "evaluates faster).",
    )
    llm_lookup_tokens: int = Field(
        0,
        ge=0,
        description="gguf: prompt-lookup decoding, tokens proposed from the prompt per step and checked in one "
        "batch (0: off; measured slower on 2 CPU cores, see bench/README.md).",
    )
    llm_reply_fence: bool = Field(
        True,
        description="gguf: the line that opens the reply's SQL code block is written into the prompt, not "
        "decoded (three decoding steps less per answer; every prompt asks for exactly that block).",
    )
    llm_stop_on_loop: bool = Field(
        True,
        description="gguf: stop decoding a reply that repeats itself (the same text, numbers aside, five times).",
    )
    scripted_latency_ms: float = Field(
        0.0, ge=0, description="llm_backend=scripted: simulated model latency per call (benchmarks, tests)."
    )
    scripted_sql: str = Field(
        "SELECT 1",
        description="llm_backend=scripted: the SQL the scripted model answers every question with.",
    )

    # --- retrieval ------------------------------------------------------------------------------------
    embedding_model: str = Field("all-MiniLM-L6-v2", description="Sentence model name or path (offline).")
    embedding_cache_size: int = Field(
        10_000, ge=0, description="Recent texts whose embeddings are kept per process (repeated questions)."
    )
    vector_backend: Literal["pgvector", "weaviate"] = Field(
        "pgvector", description="Where example vectors live."
    )
    weaviate_url: str | None = Field(
        None, description="http://host:port of Weaviate when vector_backend=weaviate."
    )
    retrieval_top_k: int = Field(4, ge=0, description="Project examples per prompt.")
    fewshot_top_k: int = Field(2, ge=0, description="Domain-library examples per prompt.")
    retrieval_parts: int = Field(
        2,
        ge=0,
        le=2,
        description="When no example is the question with other values: examples for its parts (an inner "
        "phrase such as 'the state with the largest city' and the question around it) put first in the "
        "prompt, at most this many (0: off).",
    )
    retrieval_reserve: int = Field(
        0,
        ge=0,
        le=16,
        description="Further similar project examples sent beside the prompt's, for QUERYLIFT_DRAFT_RESELECT.",
    )
    retrieval_part_similarity: float = Field(
        0.85, ge=0, le=1, description="Cosine similarity both part examples need (QUERYLIFT_RETRIEVAL_PARTS)."
    )

    # --- customer databases ---------------------------------------------------------------------------
    sql_timeout_s: float = Field(10.0, gt=0, description="Statement timeout on customer databases.")
    sql_row_limit: int = Field(1000, ge=1, description="Rows fetched at most from a customer database.")
    sql_max_value_bytes: int = Field(
        1 << 20,
        ge=1024,
        description="Largest value a customer query may produce or return, in bytes (SQLite: larger values "
        "fail the statement; PostgreSQL: they are not sent, a placeholder says their size; MySQL: cut).",
    )
    sql_max_result_bytes: int = Field(
        8 << 20, ge=1024, description="Bytes of rows fetched at most for one customer query; the rest is cut."
    )
    preview_rows: int = Field(20, ge=0, description="Rows included in chat.answer.")
    repair_rounds: int = Field(1, ge=0, description="Repair rounds after a failed static check or execution.")
    repair_runaways: bool = Field(
        False,
        description="Also spend a repair round on a reply that was cut off (it looped or reached the token "
        "limit) or on SQL that ran into the time limit (off: such rounds are rarely right and cost most).",
    )
    vote_candidates: int = Field(
        1,
        ge=1,
        le=8,
        description="Candidates drawn per model-written answer for execution-consistency voting (1: off); the "
        "first is greedy, the others sampled from the same evaluated prompt; stops early when two agree.",
    )
    value_hints: bool = Field(
        True,
        description="Name in the prompt the database values a question mentions and the columns holding them.",
    )
    entity_value_hints: bool = Field(
        True,
        description="Read a value beside a word that names a table as that table's thing: the value hint names "
        "the table's name column alone ('the colorado river' is river.river_name, not a lowest point stored as "
        "'colorado river' nor the states a river crosses; 'mount mckinley' is mountain.mountain_name).",
    )
    column_hints: bool = Field(
        True,
        description="Name in the prompt the numeric column a question's words stand for where one table has a "
        "column of that name ('densities' is state.density); shared names, text columns, ids and names are left "
        "out.",
    )
    column_hints_named_table: bool = Field(
        False,
        description="Column hints also for a numeric column name several tables share, naming the one of them the "
        "question names ('the city with the largest population' is city.population); none beside a word with a "
        "hint of its own ('population density').",
    )
    plain_example_sql: bool = Field(
        False,
        description="Show the project's examples in the prompt without the table aliases their SQL does not need "
        "(FROM CITY AS CITYalias0 becomes FROM CITY): fewer prompt tokens, and a shorter answer, since the model "
        "copies the examples' style.",
    )
    example_aliases: Literal["as_written", "table_number", "initial_number"] = Field(
        "table_number",
        description="How the project's examples in the prompt name their table aliases: as written, or renamed "
        "short with the query's shape kept (table_number: FROM CITY AS CITYalias0 becomes FROM CITY AS CITY0; "
        "initial_number: FROM CITY AS C0): fewer prompt tokens and a shorter answer, since the model copies the "
        "examples' style. plain_example_sql, when on, goes first.",
    )
    prompt_examples: int | None = Field(
        None,
        ge=0,
        description="Project examples the model is shown, the most similar first (unset: all of the "
        "QUERYLIFT_RETRIEVAL_TOP_K retrieved). Answers from examples, compositions and decomposed questions still "
        "draw on every retrieved example; fewer shown cost fewer prompt tokens for a model-written answer.",
    )

    @field_validator("prompt_examples", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        # QUERYLIFT_PROMPT_EXAMPLES= (empty, as the settings table shows the default) means unset, not an error.
        return None if isinstance(value, str) and not value.strip() else value

    value_templates: bool = Field(
        True,
        description="Answer from a very similar verified example adapted through the values the question names "
        "for the same columns, when the strict template match fails (checked, run, kept only when it returns "
        "something).",
    )
    value_template_min_score: float = Field(
        0.70,
        ge=0.0,
        le=1.0,
        description="With QUERYLIFT_VALUE_TEMPLATES: how similar (retrieval's score, values masked) an example must "
        "be to be adapted through the question's values; the adaptation also needs the same words but for one.",
    )
    shape_templates: bool = Field(
        True,
        description="Answer from a verified example that asks the same in other words (the same content words "
        "in the same order once function words and plural endings are set aside, and a superlative read as its "
        "direction: 'largest' as 'highest'), with the question's values swapped in (checked, run, kept only "
        "when it returns something).",
    )
    entity_templates: bool = Field(
        True,
        description="With QUERYLIFT_SHAPE_TEMPLATES: where no verified example asks the question as worded, "
        "read a value next to a word naming its table as that table's thing ('the population of new york city' "
        "as the population of the city 'new york', not of the state) and answer from an example that compares "
        "it with that table's name column.",
    )
    prominent_readings: bool = Field(
        True,
        description="Among verified examples that match a question equally well but read its value as "
        "different things ('population of washington' after 'population of seattle' and 'population of "
        "maine'), try first the reading whose column the database refers to from more places (the state).",
    )
    learned_paraphrases: bool = Field(
        True,
        description="Learn from a project's verified examples which wordings its users put for one another "
        "(two examples with the same query but for values, whose questions differ in one place, at least twice "
        "and never contradicted) and count a question that is a verified one but for such a wording as the same "
        "question (templates and retrieval).",
    )
    composed_answers: bool = Field(
        True,
        description="Answer a question of a new shape from two verified examples, one nested in the other "
        "('area of the state with the smallest density' from 'area of texas' and 'state with the smallest "
        "density'), when no example answers it alone (checked, run, kept only when it returns something).",
    )
    draft_reselect: bool = Field(
        False,
        description="DAIL-SQL's second pass: take the model's first reply as a draft, choose the prompt's "
        "project examples again among them and QUERYLIFT_RETRIEVAL_RESERVE more by how much their queries look "
        "like the draft, and ask again when the choice changed (one more model call).",
    )
    decomposed_answers: bool = Field(
        True,
        description="Where a verified example fits around a new question's inner phrase ('how many states "
        "border <X>' around 'the state that borders the most states') but none answers the phrase, ask the "
        "model for the phrase alone and nest its query in the example's (one model call; the whole question "
        "goes to the model as usual when that does not give an answer).",
    )
    mechanical_fixes: bool = Field(
        True,
        description="Fix without a repair round what has one right fix (SQLite double-quoted strings, a "
        "literal's case against the database's values).",
    )
    literal_word_fixes: bool = Field(
        True,
        description="With QUERYLIFT_MECHANICAL_FIXES: a literal that must equal a value of its column and holds "
        "exactly one of the column's values among its words ('mount mckinley' where the column stores "
        "'mckinley') becomes that value instead of costing a repair round.",
    )
    template_answers: bool = Field(
        True,
        description="Answer a question that is a verified example's with other values by that example's SQL "
        "with the question's values, when it runs and returns rows (no model call).",
    )

    # --- learning -------------------------------------------------------------------------------------
    training_threshold: int = Field(
        100, ge=1, description="Default verified examples since last training that trigger one."
    )
    training_base_model: str = Field(
        "smollm2-135m-instruct", description="Base model LoRA adapters are trained on."
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    lora_target_modules: str = Field(
        "q_proj,k_proj,v_proj,o_proj", description="Comma-separated module names."
    )
    lora_epochs: float = Field(2.0, gt=0, description="Passes over the training split.")
    lora_learning_rate: float = Field(2e-4, gt=0, description="AdamW learning rate.")
    lora_batch_size: int = Field(4, ge=1, description="Examples per optimizer step.")
    lora_max_steps: int = Field(-1, description=">0 caps optimizer steps (CI, benchmarks).")
    lora_micro_batch_size: int = Field(
        0,
        ge=0,
        description="Examples run together within an optimizer step, gradients accumulated over the step "
        "(0: one at a time on a CPU, where long prompts' activations dominate memory; the whole step on a GPU).",
    )
    lora_time_budget_s: float = Field(
        3500.0,
        ge=0,
        description="0: no limit; >0: the training task's seconds, from its start (the base model's load "
        "included) to the saved adapter and its GGUF: training stops at the last step that leaves time, at the "
        "steps' recent pace, for the held-out loss and the export (at least one step, the held-out loss and the "
        "export always run; the adapter so far is kept and its metrics say it stopped on time). Building the "
        "dataset before it and the gate's two passes over the held-out examples after it are not counted.",
    )
    lora_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Training arithmetic: auto is bf16 autocast on a GPU that supports it and on a CPU with bf16 "
        "instructions (AVX512-BF16, AMX), fp32 elsewhere; the LoRA weights and optimizer stay fp32 either way.",
    )
    lora_shared_prefix: bool = Field(
        True,
        description="Run the prompt tokens every example of an optimizer step begins with (a project's "
        "instructions and schema) once per step, without gradients through them, instead of once per example.",
    )
    training_seed: int = Field(13, description="Seed of the split and of training.")
    validation_share: float = Field(0.2, gt=0, lt=1, description="Share of examples held out for the gate.")
    promote_margin: float = Field(
        0.0,
        ge=0,
        description="Execution-accuracy gain an adapter needs over the current model, on top of a strict gain.",
    )
    min_eval_examples: int = Field(
        5,
        ge=1,
        description="Held-out examples the gate needs before it promotes an adapter (fewer: the adapter is "
        "registered as a candidate for a person to promote).",
    )
    training_value_variants: int = Field(
        3,
        ge=0,
        description="Value variants made of each verified training example (the same SQL and question with "
        "another value of the same column, kept only when it returns rows; 0: none).",
    )
    training_max_variants: int = Field(
        400, ge=0, description="Value variants kept per training run, spread over the verified examples."
    )
    training_context_examples: int = Field(
        3,
        ge=0,
        description="Similar verified examples put in each training prompt, as serving retrieval does (0: the "
        "bare prompt).",
    )
    training_unseen_pattern_share: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Share of training prompts whose retrieved examples leave out every example of the answer's "
        "SQL shape, as serving sees a question of a pattern the project never had (0: all prompts get the "
        "most similar examples).",
    )
    training_serving_prompts: bool = Field(
        True,
        description="Training and gate prompts made with the serving prompt's options (column hints, the value "
        "hints' wording, the QUERYLIFT_* prompt switches), token budget and the project's description; still "
        "not as served: no library examples or conversation turns, and the similar examples are the training "
        "side's by wording (QUERYLIFT_TRAINING_CONTEXT_EXAMPLES). Off: the full prompt without them. On: `full` "
        "77 -> 79 % on the dev split (bench/README.md).",
    )
    canary_min_ratings: int = Field(
        20,
        ge=1,
        description="Rated answers each arm needs before the canary's live ratings decide between promotion and "
        "rollback.",
    )
    canary_share: float = Field(
        0.0, ge=0, le=1, description="Share of questions sent to a candidate adapter."
    )
    adapter_cache_size: int = Field(4, ge=1, description="Adapters kept in memory per base model (LRU).")

    # --- review console -------------------------------------------------------------------------------
    console_host: str = Field(
        "127.0.0.1",
        description="Address `querylift console` binds to; any other than a loopback address needs "
        "QUERYLIFT_CONSOLE_TOKEN.",
    )
    console_port: int = Field(8400, ge=0, le=65535, description="Port of `querylift console`.")
    console_token: SecretStr | None = Field(
        None,
        description="Token the console asks for before it shows anything (sign-in form, or "
        "`Authorization: Bearer`); required to serve it on a non-loopback address. Never logged.",
    )

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def model_cache_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def adapter_dir(self) -> Path:
        return self.data_dir / "adapters"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
