"""The LoRA job's time budget: how many steps fit, from the steps' own pace (plain arithmetic, cases as data)."""

from __future__ import annotations

import pytest

from services.training.time_budget import EVAL_SHARE_OF_A_STEP, EXPORT_SECONDS, StepBudget

# (budget s, planned steps, held-out batches, step times so far, elapsed s, steps that fit)
CASES = [
    # no budget: the plan
    (0.0, 175, 24, [22.0], 30.0, 175),
    # no step yet: nothing to go by, the plan
    (3600.0, 175, 24, [], 30.0, 175),
    # an hour at 22 s a step, 24 held-out batches and the export kept back
    (
        3600.0,
        175,
        24,
        [22.0],
        52.0,
        1 + int((3600 - 52 - 24 * 22 * EVAL_SHARE_OF_A_STEP - EXPORT_SECONDS) // 22),
    ),
    # the plan fits well within the budget
    (3600.0, 40, 24, [22.0], 52.0, 40),
    # out of time: the steps done, never fewer
    (100.0, 175, 24, [22.0] * 3, 96.0, 3),
    # the host slows down: the recent pace, not the first steps', decides
    (3600.0, 175, 0, [10.0] * 5 + [40.0] * 10, 600.0, 15 + int((3600 - 600 - EXPORT_SECONDS) // 40)),
]


@pytest.mark.parametrize(("budget", "planned", "batches", "steps", "elapsed", "expected"), CASES)
def test_steps_that_fit_the_budget(
    budget: float, planned: int, batches: int, steps: list[float], elapsed: float, expected: int
) -> None:
    plan = StepBudget(budget_s=budget, planned_steps=planned, eval_batches=batches)
    for seconds in steps:
        plan.record(seconds)
    assert plan.steps_that_fit(len(steps), elapsed) == expected


def test_the_stop_starts_at_the_plan() -> None:
    assert StepBudget(budget_s=3600.0, planned_steps=175, eval_batches=24).horizon == 175
