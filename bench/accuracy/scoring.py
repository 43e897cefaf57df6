"""Execution accuracy and the figures reported next to it, per the shared benchmark README.

A prediction is right when its rows equal the gold rows as a multiset, in order only where the gold SQL
orders its output (``services.core.exec_match``). Schema validity is the product's static check
(``services.core.sql``): only existing tables and columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from services.core.exec_match import gold_is_ordered, results_match


@dataclass
class Outcome:
    item_id: str
    question: str
    gold_sql: str
    predicted_sql: str
    pattern_seen: bool
    correct: bool
    executed: bool
    schema_valid: bool
    latency_s: float
    prompt_tokens: int
    attempts: int = 0
    repaired: bool = False
    #: The SQL came from a verified example with the question's values (no model call).
    from_example: bool = False
    error: str | None = None
    examples: int = 0
    fewshot: int = 0
    #: Answered by an identical earlier prompt (same question, prompt messages, loop settings and adapter).
    reused: bool = False
    confidence: float = 0.0
    confidence_basis: str = ""
    candidates: int = 0
    agreeing: int = 0
    fixes: list[str] = field(default_factory=list)
    value_hints: int = 0
    #: Tokens per prompt part of the first prompt, and the model's own timings (prompt_s, decode_s, ...).
    part_tokens: dict[str, int] = field(default_factory=dict)
    model_timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_correct(
    gold_sql: str, gold_rows: Sequence[Any], predicted_rows: Sequence[Any] | None, dialect: str
) -> bool:
    if predicted_rows is None:
        return False
    return results_match(gold_rows, predicted_rows, gold_is_ordered(gold_sql, dialect))


def _share(values: Sequence[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values, dtype=float), q)), 3) if values else None


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def _basic(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    written = [o for o in outcomes if not o.from_example]
    return {
        "n": len(outcomes),
        "accuracy": _share([o.correct for o in outcomes]),
        "executes": _share([o.executed for o in outcomes]),
        "schema_valid": _share([o.schema_valid for o in outcomes]),
        "latency_p50_s": _percentile([o.latency_s for o in outcomes], 50),
        "latency_p95_s": _percentile([o.latency_s for o in outcomes], 95),
        "latency_mean_s": _mean([o.latency_s for o in outcomes]),
        "model_written_n": len(written),
        "model_written_accuracy": _share([o.correct for o in written]),
        "model_written_latency_p50_s": _percentile([o.latency_s for o in written], 50),
        "model_written_latency_mean_s": _mean([o.latency_s for o in written]),
        "prompt_tokens_mean": (
            round(sum(o.prompt_tokens for o in outcomes) / len(outcomes), 1) if outcomes else None
        ),
    }


#: Confidence buckets reported with their accuracy (calibration).
CONFIDENCE_BUCKETS: tuple[tuple[float, float], ...] = (
    (0.0, 0.3),
    (0.3, 0.5),
    (0.5, 0.7),
    (0.7, 0.9),
    (0.9, 1.01),
)


def confidence_buckets(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    out = []
    for low, high in CONFIDENCE_BUCKETS:
        members = [o for o in outcomes if low <= o.confidence < high]
        out.append(
            {
                "from": low,
                "to": min(high, 1.0),
                "n": len(members),
                "accuracy": _share([o.correct for o in members]),
            }
        )
    return out


def part_tokens_mean(outcomes: Sequence[Outcome]) -> dict[str, float]:
    written = [o for o in outcomes if o.part_tokens]
    keys = sorted({k for o in written for k in o.part_tokens})
    return (
        {k: round(sum(o.part_tokens.get(k, 0) for o in written) / len(written), 1) for k in keys}
        if written
        else {}
    )


def model_timings_mean(outcomes: Sequence[Outcome]) -> dict[str, float]:
    written = [o for o in outcomes if o.model_timings]
    keys = sorted({k for o in written for k in o.model_timings})
    return (
        {k: round(sum(o.model_timings.get(k, 0.0) for o in written) / len(written), 3) for k in keys}
        if written
        else {}
    )


def summarize(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The reported metrics, overall and split by whether the test question's SQL pattern was in history."""
    seen = [o for o in outcomes if o.pattern_seen]
    new = [o for o in outcomes if not o.pattern_seen]
    out = _basic(outcomes)
    out["accuracy_pattern_seen"] = _share([o.correct for o in seen])
    out["accuracy_pattern_new"] = _share([o.correct for o in new])
    out["pattern_seen"] = _basic(seen)
    out["pattern_new"] = _basic(new)
    out["repaired"] = _share([o.repaired for o in outcomes])
    out["from_example"] = _share([o.from_example for o in outcomes])
    out["from_example_accuracy"] = _share([o.correct for o in outcomes if o.from_example])
    out["confidence_buckets"] = confidence_buckets(outcomes)
    out["prompt_part_tokens_mean"] = part_tokens_mean(outcomes)
    out["model_timings_mean"] = model_timings_mean(outcomes)
    out["voted"] = _share([o.candidates > 1 for o in outcomes])
    out["fixed_mechanically"] = _share([bool(o.fixes) for o in outcomes])
    return out


METRIC_KEYS: tuple[str, ...] = (
    "n",
    "accuracy",
    "accuracy_pattern_seen",
    "accuracy_pattern_new",
    "executes",
    "schema_valid",
    "latency_p50_s",
    "latency_p95_s",
    "prompt_tokens_mean",
)
