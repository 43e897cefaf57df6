"""What one accuracy benchmark run is asked to do (the command line's options as one value)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CURVE_POINTS: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)


@dataclass
class AccuracyOptions:
    data: Path
    out: Path
    projects: list[str] | None = None
    strategies: list[str] | None = None
    #: ``BASE:SETTING=VALUE[,...]``: strategies measured with settings changed (bench.accuracy.strategies.variant).
    variants: list[str] | None = None
    #: Answer each question with every strategy in turn rather than one strategy after another.
    interleave: bool = False
    limit: int | None = None
    #: GGUF model name or path; None: the configured ``llm_model``.
    model: str | None = None
    learning_curve: bool = False
    curve_points: tuple[float, ...] = CURVE_POINTS
    plot: Path | None = None
    #: Embedded PostgreSQL data and adapter cache; None: ``<data_dir>/bench``.
    work_dir: Path | None = None
    #: System of record to use instead of the embedded PostgreSQL.
    database_url: str | None = None
    lora_base_model: str | None = None
    lora_max_steps: int | None = None
    failures_kept: int = 8
    progress: bool = True
    command: str | None = None
