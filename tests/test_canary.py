"""A canary's live ratings decide: the training consumer, on chat.feedback, promotes the candidate adapter when
its answers are rated good at least as often as the serving model's, rolls it back when less often, and waits
while either arm has too few ratings. Real PostgreSQL (the system of record), rows as the consumers write them."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from events import ChatFeedback, ModelUpdated
from services.core import model_registry as registry
from services.infra.settings import Settings
from services.training import canary
from services.training.handler import TrainingHandler


async def _project(pool: asyncpg.Pool) -> str:
    project = f"canary-{uuid.uuid4().hex[:6]}"
    await pool.execute(
        "INSERT INTO projects (id, name, database_url, dialect) VALUES ($1, $1, 'sqlite:///none', 'sqlite')",
        project,
    )
    for i in range(2):
        await registry.register_candidate(
            pool, project, base_model="m", adapter_path=f"/a/{i}", checksum=None
        )
    await registry.promote(pool, project, 1)
    await registry.set_canary(pool, project, 2, 0.5)
    return project


async def _answers(
    pool: asyncpg.Pool, project: str, arm: str, version: int, ratings: list[int | None]
) -> None:
    """One answer per entry, rated 1-5 (None: not rated)."""
    for rating in ratings:
        answer = uuid.uuid4()
        await pool.execute(
            "INSERT INTO answers (id, question_event_id, project_id, question, ok, adapter_version, arm)"
            " VALUES ($1, $2, $3, 'q', true, $4, $5)",
            answer,
            uuid.uuid4(),
            project,
            version,
            arm,
        )
        if rating is not None:
            await pool.execute(
                "INSERT INTO feedback (id, answer_id, project_id, rating) VALUES ($1, $2, $3, $4)",
                uuid.uuid4(),
                answer,
                project,
                rating,
            )


def _feedback(project: str) -> ChatFeedback:
    return ChatFeedback(project_id=project, answer_id=uuid.uuid4(), rating=5)


CASES = [
    # (control ratings, candidate ratings, what the ratings decide)
    ([5, 5, 1, 1, None], [5, 5, 5, 1], "promote"),  # 50 % against 75 %
    ([5, 5, 5, 1], [5, 5, 1, 1, None, None], "rollback"),  # 75 % against 50 %
    ([5, 5, 5], [5, 5, 5, 5], "wait"),  # the control arm has 3 ratings, 4 are needed
    ([5, 3, 3, 1], [4, 3, 3, 2], "promote"),  # a 3 is rated but neither good nor bad: 25 % each
]


@pytest.mark.parametrize(("control", "candidate", "action"), CASES)
async def test_the_canarys_ratings_decide(
    pool: asyncpg.Pool, control: list[int | None], candidate: list[int | None], action: str
) -> None:
    project = await _project(pool)
    await _answers(pool, project, "control", 1, control)
    await _answers(pool, project, "candidate", 2, candidate)
    # An older canary's answers and another version's never count for this one.
    await _answers(pool, project, "candidate", 7, [1, 1, 1, 1])
    handler = TrainingHandler(pool, Settings(canary_min_ratings=4))
    out = await handler.handle(_feedback(project))
    state = await registry.active_and_canary(pool, project)
    version = await registry.get_version(pool, project, 2)
    assert version is not None
    if action == "wait":
        assert out == () and state.canary is not None and state.canary.version == 2
        return
    assert len(out) == 1 and isinstance(out[0], ModelUpdated) and out[0].status == "active"
    assert state.canary is None and state.canary_share == 0
    if action == "promote":
        assert state.active is not None and state.active.version == 2 and out[0].version == 2
    else:
        assert version.status == "retired" and state.active is not None and state.active.version == 1
        assert out[0].version == 1  # what serves now
    assert version.metrics["canary_verdict"] == action
    assert version.metrics["canary_candidate"]["rated"] == sum(r is not None for r in candidate)
    # Decided once: the next rating finds no canary and changes nothing.
    assert await handler.handle(_feedback(project)) == ()


async def test_figures_count_each_answer_by_its_latest_feedback(pool: asyncpg.Pool) -> None:
    project = await _project(pool)
    await _answers(pool, project, "candidate", 2, [1])
    answer = await pool.fetchval("SELECT id FROM answers WHERE project_id = $1", project)
    await pool.execute(
        "INSERT INTO feedback (id, answer_id, project_id, thumbs, created_at)"
        " VALUES ($1, $2, $3, 'up', now() + interval '1 second')",
        uuid.uuid4(),
        answer,
        project,
    )
    version = await registry.get_version(pool, project, 2)
    assert version is not None
    arms = await canary.figures(pool, project, version)
    assert (arms["candidate"].rated, arms["candidate"].good, arms["candidate"].bad) == (1, 1, 0)
    assert arms["control"].rated == 0 and arms["control"].good_share is None


async def test_a_project_without_a_canary_is_left_alone(pool: asyncpg.Pool) -> None:
    project = await _project(pool)
    await registry.clear_canary(pool, project)
    assert await canary.review(pool, project, min_ratings=1) is None
    handler = TrainingHandler(pool, Settings())
    assert await handler.handle(_feedback(project)) == ()


async def test_models_list_shows_both_arms_and_decides_nothing(
    pool: asyncpg.Pool,
    pg_dsn: str,
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    from services.cli.main import main
    from services.infra.settings import get_settings

    project = await _project(pool)
    await _answers(pool, project, "control", 1, [5, 1, None])
    await _answers(pool, project, "candidate", 2, [5, 5])
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    monkeypatch.setenv("QUERYLIFT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("QUERYLIFT_CANARY_MIN_RATINGS", "2")
    get_settings.cache_clear()
    try:
        assert await asyncio.to_thread(main, ["models", "list", project]) == 0
    finally:
        get_settings.cache_clear()
    shown = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "control 3 2 1 1 50%" in shown and "candidate 2 2 2 0 100%" in shown
    assert "canary: promote" in shown
    state = await registry.active_and_canary(pool, project)
    assert state.canary is not None and state.canary.version == 2  # listing shows, it never applies
