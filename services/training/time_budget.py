"""How many optimizer steps fit a LoRA job's time budget.

The budget is the training task's, from its start (the base model's load included) to the saved adapter and
its GGUF export, whatever the host's speed that day; at least one step, the held-out loss and the export
always run. What comes after training (the held-out loss, saving, the GGUF export) is estimated
from the training steps' own recent pace, so a host that slows down midway stops training earlier.

Plain arithmetic, no torch: the training loop asks it after every step.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

#: A held-out batch runs forward only, without gradients, yet took 0.63 of a training step on 2 CPU cores (the
#: 0.5B, 93 held-out prompts, 2026-12-06): the shared prompt prefix, which a step also runs without gradients,
#: is most of both. 0.7 keeps the job inside its budget there (0.5 overran it by 26 s).
EVAL_SHARE_OF_A_STEP = 0.7
#: Saving the adapter and converting it to a GGUF LoRA: a few seconds for a small adapter; kept generous.
EXPORT_SECONDS = 30.0
#: Steps whose pace predicts the next ones: recent enough to follow the host's speed, many enough to smooth
#: the step-to-step spread of prompt lengths.
RECENT_STEPS = 10


@dataclass
class StepBudget:
    """The steps a job may still train, given its budget and what the steps so far took."""

    budget_s: float
    planned_steps: int
    eval_batches: int
    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_STEPS))
    #: The step the job will stop at: the planned last step until the budget says otherwise.
    horizon: int = 0

    def __post_init__(self) -> None:
        self.horizon = self.horizon or self.planned_steps

    def record(self, step_seconds: float) -> None:
        self._recent.append(step_seconds)

    @property
    def step_seconds(self) -> float:
        return sum(self._recent) / len(self._recent) if self._recent else 0.0

    def reserve_s(self) -> float:
        """Seconds kept for what follows training: the held-out loss and the export."""
        return self.eval_batches * self.step_seconds * EVAL_SHARE_OF_A_STEP + EXPORT_SECONDS

    def steps_that_fit(self, steps_done: int, elapsed_s: float) -> int:
        """The last step the job should reach: the planned one, or fewer when the budget runs out first.

        Never fewer than the steps already done (the caller stops there) and never more than planned.
        """
        if self.budget_s <= 0 or self.step_seconds <= 0:
            return self.planned_steps  # no budget, or no pace to go by yet
        left = self.budget_s - elapsed_s - self.reserve_s()
        return min(self.planned_steps, steps_done + max(0, math.floor(left / self.step_seconds)))
