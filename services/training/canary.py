"""The canary's live ratings decide: once both arms of a project's A/B split have enough rated answers, the
candidate adapter is promoted when its answers are rated good at least as often as the serving model's,
and rolled back (its version retired) when they are rated good less often.

An answer counts by its latest feedback: good for thumbs up or a rating of 4-5, bad for thumbs down, a rating
of 1-2 or a correction; a rating of 3 (or only a chart remark) is rated but neither. Only answers since the
canary started count, on both arms, so the control arm is measured on the same questions' period.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import asyncpg

from services.core import model_registry as registry
from services.core.answers import arm_ratings

Arm = Literal["control", "candidate"]


@dataclass(frozen=True)
class ArmFigures:
    arm: Arm
    answers: int = 0
    rated: int = 0
    good: int = 0
    bad: int = 0

    @property
    def good_share(self) -> float | None:
        return self.good / self.rated if self.rated else None

    def as_dict(self) -> dict[str, int | float | None]:
        return {
            "answers": self.answers,
            "rated": self.rated,
            "good": self.good,
            "bad": self.bad,
            "good_share": None if self.good_share is None else round(self.good_share, 3),
        }


@dataclass(frozen=True)
class CanaryVerdict:
    action: Literal["wait", "promote", "rollback"]
    reason: str


@dataclass(frozen=True)
class CanaryReview:
    version: int
    control: ArmFigures
    candidate: ArmFigures
    verdict: CanaryVerdict
    #: The version's registry row after the decision was applied (None while waiting).
    applied: registry.ModelVersion | None = None


def verdict(control: ArmFigures, candidate: ArmFigures, min_ratings: int) -> CanaryVerdict:
    if control.rated < min_ratings or candidate.rated < min_ratings:
        return CanaryVerdict(
            "wait",
            f"{candidate.rated} rated canary answers and {control.rated} rated control answers; "
            f"{min_ratings} each are needed",
        )
    mine, theirs = candidate.good_share or 0.0, control.good_share or 0.0
    if mine + 1e-9 >= theirs:
        return CanaryVerdict("promote", f"rated good {mine:.0%} of the time against {theirs:.0%}")
    return CanaryVerdict("rollback", f"rated good {mine:.0%} of the time against {theirs:.0%}")


def _since(version: registry.ModelVersion) -> dt.datetime:
    raw = version.metrics.get("canary_since")
    if isinstance(raw, str):
        try:
            return dt.datetime.fromisoformat(raw)
        except ValueError:
            pass
    return version.updated_at or dt.datetime.now(dt.UTC)


async def figures(
    pool: asyncpg.Pool, project_id: str, version: registry.ModelVersion
) -> dict[Arm, ArmFigures]:
    rows = await arm_ratings(pool, project_id, since=_since(version), candidate_version=version.version)
    found: dict[Arm, ArmFigures] = {"control": ArmFigures("control"), "candidate": ArmFigures("candidate")}
    for row in rows:
        arm: Arm = row["arm"]
        found[arm] = ArmFigures(arm, row["answers"], row["rated"], row["good"], row["bad"])
    return found


async def review(
    pool: asyncpg.Pool, project_id: str, *, min_ratings: int, apply: bool = True
) -> CanaryReview | None:
    """The project's canary judged by its live ratings (None: no canary); with ``apply`` the decision is
    made in the registry: promoted, or retired with the serving model left as it is."""
    state = await registry.active_and_canary(pool, project_id)
    if state.canary is None:
        return None
    arms = await figures(pool, project_id, state.canary)
    decided = verdict(arms["control"], arms["candidate"], min_ratings)
    applied = None
    if apply and decided.action == "promote":
        applied = await registry.promote(pool, project_id, state.canary.version)
    elif apply and decided.action == "rollback":
        applied = await registry.clear_canary(pool, project_id)
    if applied is not None:
        await registry.update_metrics(
            pool,
            project_id,
            applied.version,
            {
                "canary_verdict": decided.action,
                "canary_reason": decided.reason,
                "canary_control": arms["control"].as_dict(),
                "canary_candidate": arms["candidate"].as_dict(),
            },
        )
    return CanaryReview(state.canary.version, arms["control"], arms["candidate"], decided, applied)


__all__ = ["ArmFigures", "CanaryReview", "CanaryVerdict", "figures", "review", "verdict"]
