"""What a piece of feedback teaches: pure rules, tested table by table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["correct", "verify", "reject", "none"]


@dataclass(frozen=True)
class Decision:
    action: Action
    quality: float  # 0..1, stored with the example; corrections are the most trusted signal


def judge(*, rating: int | None, thumbs: str | None, corrected_sql: str | None, answer_ok: bool) -> Decision:
    """A correction wins; then a clear rating; thumbs only when there is no rating.

    Ratings of 3 are ambivalent and teach nothing. An answer that failed (no SQL ran) can only be learned from
    through a correction.
    """
    if corrected_sql and corrected_sql.strip():
        return Decision("correct", 1.0)
    if rating is not None:
        if rating <= 2:
            return Decision("reject", 0.0)
        if rating >= 4 and answer_ok:
            return Decision("verify", rating / 5)
        return Decision("none", 0.0)
    if thumbs == "down":
        return Decision("reject", 0.0)
    if thumbs == "up" and answer_ok:
        return Decision("verify", 0.8)
    return Decision("none", 0.0)
