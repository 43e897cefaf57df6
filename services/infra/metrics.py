"""Prometheus metrics shared by every consumer. Labels are bounded: topic, consumer, stage, project id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

EVENTS_CONSUMED = Counter(
    "querylift_events_consumed_total", "Events read from a topic.", ["consumer", "topic"]
)
EVENTS_PRODUCED = Counter(
    "querylift_events_produced_total", "Events published to a topic.", ["consumer", "topic"]
)
EVENTS_FAILED = Counter(
    "querylift_events_failed_total",
    "Events that could not be handled (dead-lettered).",
    ["consumer", "topic", "reason"],
)
EVENTS_DUPLICATE = Counter(
    "querylift_events_duplicate_total", "Redelivered events skipped by idempotency.", ["consumer", "topic"]
)
DEAD_LETTERS = Counter(
    "querylift_dead_letters_total", "Events sent to the dead-letter topic.", ["consumer", "reason"]
)
HANDLER_SECONDS = Histogram(
    "querylift_handler_duration_seconds",
    "Time to handle one event.",
    ["consumer", "topic"],
    buckets=_LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "querylift_stage_duration_seconds",
    "Time spent in one pipeline stage.",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
ANSWER_SECONDS = Histogram(
    "querylift_answer_latency_seconds",
    "Question accepted to answer published (end to end).",
    ["project"],
    buckets=_LATENCY_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "querylift_consumer_lag", "Messages behind the partition end.", ["consumer", "topic", "partition"]
)
UP = Gauge("querylift_consumer_up", "1 while the consumer loop runs.", ["consumer"])

# --- answers and SQL ------------------------------------------------------------------------------------
# The project label is only ever set from a project the system of record knows (never from an unvalidated
# event), so its cardinality is the number of customer projects. Question text and SQL never become labels.
ANSWERS = Counter("querylift_answers_total", "Answers published, by A/B arm.", ["project", "arm"])
ERRORS = Counter(
    "querylift_errors_total",
    "chat.error events published, by error code and the stage that gave up.",
    # No project label: unknown_project errors carry whatever id the caller sent.
    ["code", "stage"],
)
SQL_EXECUTIONS = Counter(
    "querylift_sql_executions_total",
    "Generated SQL run against a customer database, by outcome (ok, error, timeout, refused).",
    ["project", "outcome"],
)
SQL_SCHEMA_VALID = Counter(
    "querylift_sql_schema_valid_total",
    "Generated SQL checked against the project's schema: valid=true when it referenced only real tables/columns.",
    ["project", "valid"],
)
SQL_OUTCOMES = ("ok", "error", "timeout", "refused")
SQL_REPAIRS = Counter("querylift_sql_repairs_total", "Repair rounds that changed the SQL.", ["project"])
ANSWERS_FROM_EXAMPLES = Counter(
    "querylift_answers_from_examples_total",
    "Answers whose SQL was a verified example's with the question's values (no model call).",
    ["project"],
)
ANSWER_CONFIDENCE = Histogram(
    "querylift_answer_confidence",
    "Confidence of answers, by what it rests on (verified_example, agreement, single_candidate).",
    ["project", "basis"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
REVIEW_QUEUE = Gauge(
    "querylift_review_queue",
    "Low-confidence answers that got no feedback yet: what an analyst should look at first.",
    ["project"],
)

# --- language model -------------------------------------------------------------------------------------
LLM_TOKENS = Counter(
    "querylift_llm_tokens_total",
    "Tokens sent to (in) and produced by (out) the language model.",
    ["direction", "model"],
)
LLM_SECONDS = Histogram(
    "querylift_llm_duration_seconds", "Time of one language-model call.", ["model"], buckets=_LATENCY_BUCKETS
)
MODEL_QUEUE_SECONDS = Histogram(
    "querylift_model_queue_seconds",
    "Time a model call waited for the local model (one answers at a time) before it started.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)

# --- retrieval ------------------------------------------------------------------------------------------
RETRIEVAL_EXAMPLES = Histogram(
    "querylift_retrieval_examples",
    "Examples retrieved for one prompt, by source (project, library).",
    ["source"],
    buckets=(0, 1, 2, 3, 4, 5, 6, 8, 10, 16),
)
RETRIEVAL_TOP_SCORE = Histogram(
    "querylift_retrieval_top_score",
    "Similarity of the best retrieved example (only observed when there is one).",
    ["source"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0),
)

# --- feedback -------------------------------------------------------------------------------------------
FEEDBACK_RATINGS = Counter(
    "querylift_feedback_ratings_total", "User ratings received, 1 to 5.", ["project", "rating"]
)
# Summing the rating values lets PromQL compute the mean rating as points / ratings without per-value terms.
FEEDBACK_RATING_POINTS = Counter(
    "querylift_feedback_rating_points_total", "Sum of all rating values received.", ["project"]
)
FEEDBACK_THUMBS = Counter(
    "querylift_feedback_thumbs_total", "Thumbs received (up, down).", ["project", "thumbs"]
)
FEEDBACK_BY_ARM = Counter(
    "querylift_feedback_by_arm_total",
    "Judged answers by A/B arm (good: rating >= 4 or thumbs up; bad: rating <= 2, thumbs down or a correction).",
    ["project", "arm", "verdict"],
)
FEEDBACK_CORRECTIONS = Counter(
    "querylift_feedback_corrections_total", "Feedback that carried a corrected SQL.", ["project"]
)
CHART_FEEDBACK = Counter(
    "querylift_chart_feedback_total",
    "Judgements of the suggested chart (relevant=true/false).",
    ["project", "relevant"],
)

# --- training and models --------------------------------------------------------------------------------
TRAINING_JOBS = Counter(
    "querylift_training_jobs_total",
    "Training job state transitions (submitted, running, succeeded, failed, cancelled, rejected).",
    ["state"],
)
TRAINING_RUNNING = Gauge("querylift_training_jobs_running", "Training jobs currently running.")
TRAINING_SECONDS = Histogram(
    "querylift_training_duration_seconds",
    "Wall time of a finished training job, by final state.",
    ["state"],
    buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800),
)
MODEL_VERSION = Gauge(
    "querylift_model_version",
    "Adapter version a project is served with (0: the base model).",
    ["project", "status"],
)


def record_answer(project: str, arm: str, *, schema_valid: bool, repaired: bool = False) -> None:
    """Count one published answer with the labels dashboards and alerts expect."""
    ANSWERS.labels(project, arm).inc()
    SQL_SCHEMA_VALID.labels(project, "true" if schema_valid else "false").inc()
    if repaired:
        SQL_REPAIRS.labels(project).inc()


def record_sql_execution(project: str, outcome: str) -> None:
    if outcome not in SQL_OUTCOMES:
        raise ValueError(f"unknown SQL outcome {outcome!r}; expected one of {SQL_OUTCOMES}")
    SQL_EXECUTIONS.labels(project, outcome).inc()


def record_feedback(
    project: str,
    *,
    rating: int | None = None,
    thumbs: str | None = None,
    chart_relevant: bool | None = None,
    corrected: bool = False,
) -> None:
    """Count the signals one chat.feedback carries."""
    if rating is not None:
        FEEDBACK_RATINGS.labels(project, str(rating)).inc()
        FEEDBACK_RATING_POINTS.labels(project).inc(rating)
    if thumbs is not None:
        FEEDBACK_THUMBS.labels(project, thumbs).inc()
    if chart_relevant is not None:
        CHART_FEEDBACK.labels(project, "true" if chart_relevant else "false").inc()
    if corrected:
        FEEDBACK_CORRECTIONS.labels(project).inc()


def record_llm_call(model: str, seconds: float, tokens_in: int, tokens_out: int) -> None:
    LLM_SECONDS.labels(model).observe(seconds)
    LLM_TOKENS.labels("in", model).inc(tokens_in)
    LLM_TOKENS.labels("out", model).inc(tokens_out)


def record_retrieval(source: str, scores: Sequence[float]) -> None:
    """One retrieval for one prompt: how many examples came back and how close the best one was."""
    RETRIEVAL_EXAMPLES.labels(source).observe(len(scores))
    if scores:
        RETRIEVAL_TOP_SCORE.labels(source).observe(max(scores))


def exposed_metrics() -> dict[str, frozenset[str]]:
    """Every sample name this module's metrics expose, with its label names (for dashboard/alert checks)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created", ""),
        "gauge": ("",),
    }
    names: dict[str, frozenset[str]] = {}
    for value in globals().values():
        if isinstance(value, MetricWrapperBase):
            base, kind = value._name, str(value._type)
            labels = frozenset(value._labelnames)
            for suffix in suffixes.get(kind, ("",)):
                names[base + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


class LabelledChildren:
    """A metric's children resolved once per label values: ``labels()`` takes a lock and builds the key on
    every call, which showed in per-message profiles."""

    def __init__(self, metric: MetricWrapperBase) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child
