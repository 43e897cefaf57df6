"""A simulated analyst for the demo: re-runs the answer's SQL on the sample database, compares the result
with what a careful analyst would have written, and gives feedback the way real users do."""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from events import ChatAnswer, ChatError, ChatFeedback
from services.core.exec_match import gold_is_ordered, results_match


@dataclass
class Verdict:
    correct: bool
    feedback: ChatFeedback | None


class SimulatedUser:
    def __init__(self, database: Path, *, correction_rate: float = 1.0, seed: int = 3) -> None:
        self._db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, check_same_thread=False)
        self.correction_rate = correction_rate
        self._rng = random.Random(seed)

    def _rows(self, sql: str) -> list[tuple[object, ...]] | None:
        try:
            return self._db.execute(sql).fetchall()
        except sqlite3.Error:
            return None

    def judge(self, outcome: ChatAnswer | ChatError, gold_sql: str) -> Verdict:
        gold = self._rows(gold_sql) or []
        if isinstance(outcome, ChatAnswer):
            predicted = self._rows(outcome.sql)
            correct = predicted is not None and results_match(gold, predicted, gold_is_ordered(gold_sql))
            if correct:
                return Verdict(
                    True,
                    ChatFeedback(
                        project_id=outcome.project_id,
                        answer_id=outcome.event_id,
                        user_id="analyst",
                        rating=5,
                        thumbs="up",
                        chart_relevant=True,
                    ),
                )
            answer_id = outcome.event_id
        else:
            correct = False
            answer_id = outcome.event_id
        # A wrong answer: the analyst rates it down and, often, writes the right SQL.
        corrected = gold_sql if self._rng.random() < self.correction_rate else None
        return Verdict(
            False,
            ChatFeedback(
                project_id=outcome.project_id,
                answer_id=answer_id,
                user_id="analyst",
                rating=1,
                thumbs="down",
                corrected_sql=corrected,
            ),
        )
