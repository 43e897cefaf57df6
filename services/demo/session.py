"""The demo: a new project asks its questions through Kafka; a simulated analyst judges every answer; the
running accuracy shows the project learning (retrieval of verified examples first, then a LoRA adapter)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.table import Table

from events import ChatAnswer, ChatQuestion
from services.client import QueryliftClient
from services.core.projects import delete_project
from services.demo.simulated_user import SimulatedUser

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "bikeshop"


@dataclass
class DemoQuestion:
    id: str
    question: str
    sql: str
    pattern: int


@dataclass
class Tally:
    #: (round, correct, answered from a verified example without a model call)
    results: list[tuple[int, bool, bool]] = field(default_factory=list)

    def add(self, round_: int, correct: bool, from_example: bool = False) -> None:
        self.results.append((round_, correct, from_example))

    @property
    def accuracy(self) -> float:
        return sum(c for _, c, _ in self.results) / max(1, len(self.results))

    def by_round(self) -> dict[int, tuple[int, int, int]]:
        """round → (questions, correct, answered from an example)"""
        out: dict[int, tuple[int, int, int]] = {}
        for r, c, e in self.results:
            n, k, x = out.get(r, (0, 0, 0))
            out[r] = (n + 1, k + int(c), x + int(e))
        return out


def load_questions(path: Path = SAMPLE / "questions.jsonl") -> list[DemoQuestion]:
    return [
        DemoQuestion(
            **{k: v for k, v in json.loads(line).items() if k in ("id", "question", "sql", "pattern")}
        )
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def sample_database(data_dir: Path) -> Path:
    """A private copy, so the demo never touches the file in the repository."""
    target = data_dir / "samples" / "bikeshop.sqlite"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copy(SAMPLE / "bikeshop.sqlite", target)
    return target


async def reset_project(pool: asyncpg.Pool, project_id: str) -> None:
    """The demo starts the project from zero each time so the curve is visible again."""
    await delete_project(pool, project_id)


async def ask_stream(
    client: QueryliftClient,
    user: SimulatedUser,
    project_id: str,
    questions: list[DemoQuestion],
    console: Console,
    *,
    timeout_s: float = 600,
) -> tuple[Tally, ChatAnswer | None]:
    tally = Tally()
    seen: dict[int, int] = {}
    chart_answer: ChatAnswer | None = None
    for i, q in enumerate(questions, 1):
        round_ = seen.get(q.pattern, 0)
        seen[q.pattern] = round_ + 1
        started = time.perf_counter()
        question = ChatQuestion(
            project_id=project_id, conversation_id=f"demo-{q.id}", user_id="analyst", question=q.question
        )
        outcome = await asyncio.wait_for(await client.publish(question), timeout_s)
        verdict = user.judge(outcome, q.sql)
        if verdict.feedback is not None:
            await client.feedback(verdict.feedback)
        from_example = isinstance(outcome, ChatAnswer) and outcome.sql_source == "example"
        tally.add(round_, verdict.correct, from_example)
        if isinstance(outcome, ChatAnswer):
            used = sum(1 for e in outcome.examples_used if e.source == "project")
            source = "[cyan]from a verified example[/] " if from_example else ""
            detail = f"{source}{outcome.answer_text[:60]}  [dim]{outcome.sql[:90]}[/]"
            if (
                verdict.correct
                and outcome.chart
                and outcome.chart.type not in ("table", "number")
                and chart_answer is None
            ):
                chart_answer = outcome
        else:
            used = 0
            detail = f"[yellow]{outcome.code.value}[/]: {outcome.message[:90]}"
        mark = "[green]✓[/]" if verdict.correct else "[red]✗[/]"
        console.print(
            f"{i:>3} {mark} r{round_} {q.question[:52]:<52} {time.perf_counter() - started:5.1f}s "
            f"ex={used} acc={tally.accuracy:5.1%}  {detail}"
        )
    return tally, chart_answer


def summary_table(tally: Tally) -> Table:
    table = Table(title="Accuracy by how often the project had seen the question's pattern")
    table.add_column("pattern seen before")
    table.add_column("questions", justify="right")
    table.add_column("correct", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("from a verified example", justify="right")
    for round_, (n, k, x) in sorted(tally.by_round().items()):
        table.add_row(f"{round_}×", str(n), str(k), f"{k / n:.0%}", str(x))
    table.add_row(
        "all",
        str(len(tally.results)),
        str(sum(c for _, c, _ in tally.results)),
        f"{tally.accuracy:.0%}",
        str(sum(e for _, _, e in tally.results)),
    )
    return table
