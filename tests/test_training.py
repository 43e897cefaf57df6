"""LoRA learning end to end on real components: embedded PostgreSQL, Ray (local), SmolLM2-135M, SQLite.

One real training run (a few steps on ~30 examples) feeds the serving, evaluation, isolation and export
tests; the registry's promote/rollback semantics are tested on their own rows.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.core import model_registry as registry
from services.core.llm.base import AdapterRef, ChatMessage
from services.core.schema import Column, SchemaInfo, Table
from services.infra.llm.transformers_peft import AdapterMismatch, TransformersLLM
from services.infra.settings import Settings
from services.training.dataset import assistant_content, export_jsonl, load_dataset, split
from services.training.evaluate import extract_sql, gate
from services.training.job import TrainingOutcome, run_training_job
from services.training.lora_train import ADAPTER_WEIGHTS, encode_example, read_progress, sha256_file
from services.training.ray_runner import RayTrainingRunner

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

DEPTS = ["sales", "support", "research", "finance", "legal"]
CITIES = ["Lisbon", "Porto", "Braga", "Faro", "Evora"]
TRAIN_OVERRIDES = {"max_steps": 12, "batch_size": 4, "learning_rate": 1e-3, "lora_r": 8, "max_seq_len": 1024}


# --- a tiny customer project ---------------------------------------------------------------------------------


def _make_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE employees (id INTEGER PRIMARY KEY, name TEXT, dept TEXT, city TEXT, salary REAL)"
    )
    rows = [
        (i, f"person{i}", DEPTS[i % 5], CITIES[(i * 3) % 5], 1000.0 + (i * 137) % 900) for i in range(1, 41)
    ]
    conn.executemany("INSERT INTO employees VALUES (?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


SCHEMA = SchemaInfo(
    dialect="sqlite",
    tables=[
        Table(
            name="employees",
            columns=[
                Column("id", "INTEGER", primary_key=True),
                Column("name", "TEXT", samples=["person1", "person2"]),
                Column("dept", "TEXT", samples=DEPTS[:3]),
                Column("city", "TEXT", samples=CITIES[:3]),
                Column("salary", "REAL"),
            ],
            row_count=40,
        )
    ],
)


def _examples_a() -> list[tuple[str, str]]:
    out = []
    for d in DEPTS:
        out.append((f"how many employees work in {d}", f"SELECT COUNT(*) FROM employees WHERE dept = '{d}'"))
        out.append(
            (f"what is the total salary of {d}", f"SELECT SUM(salary) FROM employees WHERE dept = '{d}'")
        )
        out.append((f"average salary in {d}", f"SELECT AVG(salary) FROM employees WHERE dept = '{d}'"))
    for c in CITIES:
        out.append((f"list the names of employees in {c}", f"SELECT name FROM employees WHERE city = '{c}'"))
        out.append((f"how many employees live in {c}", f"SELECT COUNT(*) FROM employees WHERE city = '{c}'"))
        out.append(
            (
                f"who is the best paid employee in {c}",
                f"SELECT name FROM employees WHERE city = '{c}' ORDER BY salary DESC LIMIT 1",
            )
        )
    return out


async def _add_project(pool: asyncpg.Pool, project_id: str, db_path: Path) -> None:
    await pool.execute(
        "INSERT INTO projects (id, name, database_url, dialect) VALUES ($1, $1, $2, 'sqlite')",
        project_id,
        f"sqlite:///{db_path}",
    )
    sv = await pool.fetchval(
        "INSERT INTO schema_versions (project_id, hash, schema) VALUES ($1, $2, $3) RETURNING id",
        project_id,
        SCHEMA.structure_hash(),
        SCHEMA.to_json(),
    )
    await pool.execute("UPDATE projects SET current_schema_version_id = $2 WHERE id = $1", project_id, sv)


async def _add_example(
    pool: asyncpg.Pool, project_id: str, question: str, sql: str, *, verified: bool = True, **flags: bool
) -> uuid.UUID:
    example_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO examples (id, project_id, question, sql, source, verified, stale, rated_down)"
        " VALUES ($1, $2, $3, $4, 'import', $5, $6, $7)",
        example_id,
        project_id,
        question,
        sql,
        verified,
        flags.get("stale", False),
        flags.get("rated_down", False),
    )
    return example_id


class SqliteDatabases:
    """Read-only SQLite executor with CustomerDatabases' ``execute`` signature (used when that module is absent)."""

    @dataclass
    class Result:
        rows: list[tuple[Any, ...]]

    async def execute(self, database_url: str, sql: str, *, timeout_s: float, row_limit: int) -> Any:
        path = database_url.removeprefix("sqlite:///")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return self.Result(conn.execute(sql).fetchmany(row_limit))
        finally:
            conn.close()


def _databases() -> Any:
    try:
        from services.core.customer_db import CustomerDatabases
    except ImportError:
        return SqliteDatabases()
    return CustomerDatabases()


# --- fixtures -------------------------------------------------------------------------------------------------


@dataclass
class World:
    pool: asyncpg.Pool
    settings: Settings
    runner: RayTrainingRunner
    llm: TransformersLLM
    project_a: str
    project_b: str
    db_path: Path
    excluded_questions: list[str]
    b_questions: list[str]
    outcome: TrainingOutcome | None = None
    progress: list[dict[str, Any]] | None = None


@pytest.fixture(scope="module")
async def world(pool: asyncpg.Pool, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("training")
    # No retrieved examples in the training and evaluation prompts here: with them the 135M base model copies
    # a near-identical example's SQL and scores as well as any adapter, so the gain these tests look for
    # would not show what 12 steps taught (prompts with examples are covered in test_training_data.py).
    settings = Settings(
        data_dir=tmp,
        log_json=False,
        metrics_port=0,
        llm_threads=2,
        llm_max_tokens=48,
        training_context_examples=0,
    )
    db_path = tmp / "employees.sqlite"
    _make_sqlite(db_path)
    suffix = uuid.uuid4().hex[:6]
    a, b = f"acme-{suffix}", f"beta.{suffix}"
    for project in (a, b):
        await _add_project(pool, project, db_path)
    for question, sql in _examples_a():
        await _add_example(pool, a, question, sql)
    excluded = ["EXCLUDED stale question", "EXCLUDED rated down question", "EXCLUDED unverified question"]
    await _add_example(pool, a, excluded[0], "SELECT 1", stale=True)
    await _add_example(pool, a, excluded[1], "SELECT 2", rated_down=True)
    await _add_example(pool, a, excluded[2], "SELECT 3", verified=False)
    b_pairs = [
        ("which departments exist", "SELECT DISTINCT dept FROM employees"),
        ("how many employees are there", "SELECT COUNT(*) FROM employees"),
        ("what is the highest salary", "SELECT MAX(salary) FROM employees"),
        ("list every city", "SELECT DISTINCT city FROM employees"),
    ]
    for question, sql in b_pairs:
        await _add_example(pool, b, question, sql)
    b_questions = [q for q, _ in b_pairs]
    runner = RayTrainingRunner(settings, num_cpus=2, poll_s=0.2)
    runner.start()
    llm = TransformersLLM(settings)
    w = World(pool, settings, runner, llm, a, b, db_path, excluded, b_questions)
    yield w
    await llm.close()
    runner.shutdown()


@pytest.fixture(scope="module")
async def trained(world: World) -> World:
    progress: list[dict[str, Any]] = []

    async def on_progress(event: dict[str, Any]) -> None:
        progress.append(event)

    world.outcome = await run_training_job(
        world.pool,
        world.settings,
        world.runner,
        project_id=world.project_a,
        job_id=uuid.uuid4(),
        evaluator_llm=world.llm,
        databases=_databases(),
        on_progress=on_progress,
        train_overrides=TRAIN_OVERRIDES,
    )
    world.progress = progress
    return world


# --- dataset ----------------------------------------------------------------------------------------------------


async def test_dataset_uses_only_usable_examples_split_by_seed(world: World) -> None:
    ds = await load_dataset(world.pool, world.project_a, validation_share=0.2, seed=13)
    questions = {e.question for e in ds.train + ds.validation}
    assert questions == {q for q, _ in _examples_a()}
    assert not questions & set(world.excluded_questions)
    assert len(ds.validation) == 6 and len(ds.train) == 24
    again = await load_dataset(world.pool, world.project_a, validation_share=0.2, seed=13)
    assert [e.id for e in again.validation] == [e.id for e in ds.validation]
    other = split(ds.train + ds.validation, 0.2, seed=14)
    assert [e.id for e in other[1]] != [e.id for e in ds.validation]
    record = ds.train_records()[0]["messages"]
    assert [m["role"] for m in record] == ["system", "user", "assistant"]
    assert record[-1]["content"] == assistant_content(ds.train[0].sql)
    prompt_text = "\n".join(m["content"] for m in record[:-1])
    assert "employees(" in prompt_text and ds.train[0].question in record[1]["content"]


async def test_loss_is_masked_to_the_assistant_answer(world: World) -> None:
    from services.infra.llm.base_model import load_base_model

    _, tokenizer = load_base_model(
        "smollm2-135m-instruct", cache_dir=world.settings.model_cache_dir, device="cpu"
    )
    ds = await load_dataset(world.pool, world.project_a, validation_share=0.2, seed=13)
    messages = ds.train_records()[0]["messages"]
    encoded = encode_example(tokenizer, messages, 4096)
    assert encoded is not None
    ids, labels = encoded
    learned = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
    text = tokenizer.decode(learned)
    assert ds.train[0].sql in text and "<|im_end|>" in text
    assert ds.train[0].question not in text  # the prompt is context, not a target
    assert encode_example(tokenizer, messages, 10) is None  # too long for the context: skipped


async def test_export_jsonl_isolates_projects(world: World, tmp_path: Path) -> None:
    out_a, out_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert await export_jsonl(world.pool, world.project_a, out_a) == 30
    assert await export_jsonl(world.pool, world.project_b, out_b) == len(world.b_questions)
    b_text = out_b.read_text()
    for question, _ in _examples_a():
        assert question not in b_text
    records = [json.loads(line) for line in b_text.splitlines()]
    for record, question in zip(records, world.b_questions, strict=True):
        assert question in record["messages"][1]["content"]
        assert record["messages"][-1]["role"] == "assistant"


# --- training, evaluation, promotion ----------------------------------------------------------------------------


async def test_training_run_produces_a_checked_adapter(trained: World) -> None:
    outcome = trained.outcome
    print("training outcome metrics", json.dumps(outcome.metrics if outcome else None, default=str))
    assert outcome is not None and outcome.version is not None, outcome
    assert outcome.status in ("succeeded", "rejected"), outcome.error
    mv = outcome.version
    folder = Path(mv.adapter_path or "")
    assert (folder / ADAPTER_WEIGHTS).exists() and (folder / "adapter_config.json").exists()
    assert (folder / "tokenizer_config.json").exists()
    assert mv.checksum == sha256_file(folder / ADAPTER_WEIGHTS)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["steps"] == TRAIN_OVERRIDES["max_steps"]
    assert metrics["seconds_per_step"] > 0 and metrics["eval_loss"] is not None
    assert metrics["train_loss"] < metrics["first_loss"], "the adapter did not learn"
    assert not folder.with_name(folder.name + ".partial").exists()
    final = read_progress(trained.settings.adapter_dir, trained.project_a, mv.version)
    assert final is not None and final["stage"] == "done"
    steps = [e["step"] for e in trained.progress or [] if e.get("stage") == "training"]
    # Progress is polled, so intermediate steps may be skipped; it only moves forward and always ends.
    assert steps and steps == sorted(set(steps)) and (trained.progress or [{}])[-1]["stage"] == "done"
    job = await registry.get_job(trained.pool, outcome.job_id)
    assert job is not None and job.status == outcome.status and job.finished_at is not None
    assert job.metrics["version"] == mv.version
    trained_flags = await trained.pool.fetch(
        "SELECT trained_in_version FROM examples WHERE project_id = $1 AND verified AND NOT stale AND NOT rated_down",
        trained.project_a,
    )
    assert sum(r["trained_in_version"] == mv.version for r in trained_flags) == 24


async def test_gate_decides_promotion(trained: World) -> None:
    outcome = trained.outcome
    assert outcome is not None and outcome.version is not None
    m = outcome.metrics
    assert m["eval_examples"] == 6 and m["current_version"] is None
    verdict = gate(
        m["eval_accuracy"],
        m["current_accuracy"],
        trained.settings.promote_margin,
        examples=m["eval_examples"],
        min_examples=trained.settings.min_eval_examples,
    )
    passed = verdict.passed
    assert m["gate_passed"] is passed and m["gate_reason"] == verdict.reason
    assert m["dataset"]["verified"] == 24 and m["dataset"]["validation"] == 6
    state = await registry.active_and_canary(trained.pool, trained.project_a)
    if passed:
        assert outcome.promoted == "active" and state.active is not None
        assert state.active.version == outcome.version.version
    else:
        assert outcome.promoted == "rejected" and state.active is None
    # A few steps on 24 examples of six patterns are enough for the adapter to beat the bare base model.
    assert m["eval_accuracy"] > m["current_accuracy"], m


async def test_adapter_served_per_request_and_base_without(trained: World) -> None:
    outcome = trained.outcome
    assert outcome is not None and outcome.version is not None
    ref = outcome.version.adapter_ref()
    assert ref is not None
    ds = await load_dataset(trained.pool, trained.project_a, validation_share=0.2, seed=13)
    llm = TransformersLLM(trained.settings)
    try:
        messages = ds.validation_records()[0]["messages"][:-1]  # the prompt, without the expected answer
        base_before = await llm.complete(messages, max_tokens=40)
        adapted = await llm.complete(messages, max_tokens=40, adapter=ref)
        base_after = await llm.complete(messages, max_tokens=40)
        assert adapted.adapter_version == ref.version and base_after.adapter_version is None
        assert base_after.text == base_before.text  # an adapter loaded never leaks into base requests
        assert adapted.text != base_before.text
        assert extract_sql(adapted.text).upper().startswith("SELECT")
        assert llm.loaded_adapters() == [ref]
        # Hot reload: evicting the project's adapters unloads them; the next request loads again.
        assert await llm.evict(ref.project_id) == 1 and llm.loaded_adapters() == []
        again = await llm.complete(messages, max_tokens=40, adapter=ref)
        assert again.text == adapted.text
    finally:
        await llm.close()


async def test_lru_keeps_at_most_cache_size_adapters(trained: World) -> None:
    outcome = trained.outcome
    assert outcome is not None and outcome.version is not None and outcome.version.adapter_path
    settings = trained.settings.model_copy(update={"adapter_cache_size": 1})
    llm = TransformersLLM(settings)
    try:
        path = outcome.version.adapter_path
        first = AdapterRef(trained.project_a, outcome.version.version, path)
        second = AdapterRef(trained.project_a, outcome.version.version + 100, path)
        await llm.load_adapter(first)
        await llm.load_adapter(second)
        assert llm.loaded_adapters() == [second]
    finally:
        await llm.close()


async def test_project_b_never_gets_project_a_adapter(trained: World) -> None:
    outcome = trained.outcome
    assert outcome is not None and outcome.version is not None and outcome.version.adapter_path
    state_b = await registry.active_and_canary(trained.pool, trained.project_b)
    assert state_b.active is None and state_b.canary is None
    stolen = AdapterRef(trained.project_b, outcome.version.version, outcome.version.adapter_path)
    with pytest.raises(AdapterMismatch):
        await trained.llm.complete([{"role": "user", "content": "hi"}], max_tokens=4, adapter=stolen)
    assert stolen not in trained.llm.loaded_adapters()


async def test_merged_export_answers_like_the_adapter(trained: World, tmp_path: Path) -> None:
    from services.training.export import export_merged

    outcome = trained.outcome
    assert outcome is not None and outcome.version is not None and outcome.version.adapter_path
    out = tmp_path / "merged"
    result = export_merged(
        outcome.version.base_model,
        outcome.version.adapter_path,
        out,
        cache_dir=trained.settings.model_cache_dir,
    )
    assert {"model.safetensors", "config.json", "tokenizer_config.json", "Modelfile"} <= set(result.files)
    modelfile = (out / "Modelfile").read_text()
    assert (
        modelfile.startswith("FROM .")
        and "PARAMETER temperature 0" in modelfile
        and "<|im_start|>" in modelfile
    )
    served = TransformersLLM(trained.settings, model=str(out))
    try:
        messages = [ChatMessage(role="user", content="how many employees work in sales")]
        merged = await served.complete(messages, max_tokens=30)
        adapted = await trained.llm.complete(messages, max_tokens=30, adapter=outcome.version.adapter_ref())
        assert merged.text == adapted.text
    finally:
        await served.close()


# --- failures and cancellation ------------------------------------------------------------------------------


# Forced: the worker is killed and never runs its own cleanup, so the runner must remove the partial adapter.
@pytest.mark.parametrize("force", [False, True], ids=["interrupted", "killed"])
async def test_cancelled_job_is_recorded_and_leaves_no_adapter(world: World, force: bool) -> None:
    job_id = uuid.uuid4()
    seen_step = False

    async def on_progress(event: dict[str, Any]) -> None:
        nonlocal seen_step
        if event.get("step", 0) >= 1 and not seen_step:
            seen_step = True
            assert world.runner.cancel(str(job_id), force=force)

    outcome = await run_training_job(
        world.pool,
        world.settings,
        world.runner,
        project_id=world.project_b,
        job_id=job_id,
        on_progress=on_progress,
        train_overrides={**TRAIN_OVERRIDES, "max_steps": 10_000, "batch_size": 1},
    )
    assert seen_step and outcome.status == "cancelled", outcome
    job = await registry.get_job(world.pool, job_id)
    assert job is not None and job.status == "cancelled" and job.finished_at is not None
    assert await registry.list_versions(world.pool, world.project_b) == []
    leftovers = (
        list((world.settings.adapter_dir / world.project_b).glob("*"))
        if (world.settings.adapter_dir / world.project_b).exists()
        else []
    )
    assert leftovers == []


async def test_failed_job_surfaces_the_reason(world: World) -> None:
    job_id = uuid.uuid4()
    outcome = await run_training_job(
        world.pool,
        world.settings,
        world.runner,
        project_id=world.project_b,
        job_id=job_id,
        base_model="/nonexistent/model.gguf",
        train_overrides=TRAIN_OVERRIDES,
    )
    assert outcome.status == "failed" and outcome.error and "model" in outcome.error.lower()
    job = await registry.get_job(world.pool, job_id)
    assert job is not None and job.status == "failed" and job.error == outcome.error


# --- registry semantics (no training) -----------------------------------------------------------------------


async def _registry_project(pool: asyncpg.Pool, tmp_path: Path) -> str:
    project = f"reg-{uuid.uuid4().hex[:6]}"
    await _add_project(pool, project, tmp_path / "none.sqlite")
    return project


async def _actives(pool: asyncpg.Pool, project: str) -> list[int]:
    return [v.version for v in await registry.list_versions(pool, project) if v.status == "active"]


async def test_registry_promote_and_rollback(pool: asyncpg.Pool, tmp_path: Path) -> None:
    project = await _registry_project(pool, tmp_path)
    versions = [
        await registry.register_candidate(
            pool, project, base_model="m", adapter_path=f"/a/{i}", checksum=str(i)
        )
        for i in range(4)
    ]
    assert [v.version for v in versions] == [1, 2, 3, 4] and {v.status for v in versions} == {"candidate"}
    assert (await registry.active_and_canary(pool, project)).active is None

    await registry.promote(pool, project, 1)
    await registry.promote(pool, project, 2)
    assert await _actives(pool, project) == [2]
    assert (await registry.get_version(pool, project, 1)).status == "retired"  # type: ignore[union-attr]
    await registry.reject_candidate(pool, project, 3)  # never served: never a rollback target
    await registry.promote(pool, project, 4)
    assert await _actives(pool, project) == [4]
    assert (await registry.promote(pool, project, 4)).status == "active"  # idempotent

    back = await registry.rollback(pool, project)
    assert back is not None and back.version == 2 and await _actives(pool, project) == [2]
    back = await registry.rollback(pool, project)
    assert back is not None and back.version == 1
    assert await registry.rollback(pool, project) is None  # base model
    assert await _actives(pool, project) == []
    assert await registry.rollback(pool, project) is None

    with pytest.raises(registry.RegistryError):
        await registry.promote(pool, project, 99)


async def test_registry_canary(pool: asyncpg.Pool, tmp_path: Path) -> None:
    project = await _registry_project(pool, tmp_path)
    for i in range(3):
        await registry.register_candidate(
            pool, project, base_model="m", adapter_path=f"/a/{i}", checksum=None
        )
    await registry.promote(pool, project, 1)
    await registry.set_canary(pool, project, 2, 0.25)
    state = await registry.active_and_canary(pool, project)
    assert state.active and state.active.version == 1 and state.canary and state.canary.version == 2
    assert state.canary_share == pytest.approx(0.25)
    await registry.set_canary(pool, project, 3, 0.5)  # replaces the previous canary
    state = await registry.active_and_canary(pool, project)
    assert state.canary and state.canary.version == 3
    assert (await registry.get_version(pool, project, 2)).status == "retired"  # type: ignore[union-attr]
    with pytest.raises(registry.RegistryError):
        await registry.set_canary(pool, project, 1, 0.5)  # the active version
    await registry.promote(pool, project, 3)
    state = await registry.active_and_canary(pool, project)
    assert state.active and state.active.version == 3 and state.canary is None and state.canary_share == 0
    assert (await registry.rollback(pool, project)).version == 1  # type: ignore[union-attr]


async def test_training_jobs_bookkeeping(pool: asyncpg.Pool, tmp_path: Path) -> None:
    project = await _registry_project(pool, tmp_path)
    first, second = uuid.uuid4(), uuid.uuid4()
    job = await registry.start_job(pool, project, first, examples_count=30)
    assert job.status == "running" and job.started_at is not None
    again = await registry.start_job(pool, project, first, examples_count=30)  # redelivery: same row
    assert again.id == first
    with pytest.raises(registry.JobAlreadyOpen):
        await registry.start_job(pool, project, second)
    done = await registry.finish_job(pool, first, "failed", "out of memory", {"steps": 3})
    assert done.status == "failed" and done.error == "out of memory" and done.metrics == {"steps": 3}
    assert (await registry.start_job(pool, project, second)).status == "running"
    with pytest.raises(ValueError):
        await registry.finish_job(pool, second, "running")


# --- CLI --------------------------------------------------------------------------------------------------------


async def test_cli_examples_export_and_models(
    world: World, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from services.cli.main import main
    from services.infra.settings import get_settings

    project = await _registry_project(world.pool, tmp_path)
    await registry.register_candidate(world.pool, project, base_model="m", adapter_path="/a/1", checksum=None)
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    monkeypatch.setenv("QUERYLIFT_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("QUERYLIFT_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    get_settings.cache_clear()
    try:
        out = tmp_path / "b.jsonl"
        # The CLI runs its own event loop, as from a shell: keep it off this test's loop.
        assert await asyncio.to_thread(main, ["examples", "export", world.project_b, "--out", str(out)]) == 0
        assert len(out.read_text().splitlines()) == len(world.b_questions)
        assert await asyncio.to_thread(main, ["models", "promote", project]) == 0
        assert await _actives(world.pool, project) == [1]
        assert await asyncio.to_thread(main, ["models", "list", project]) == 0
        assert await asyncio.to_thread(main, ["models", "rollback", project]) == 0
        assert await _actives(world.pool, project) == []
    finally:
        get_settings.cache_clear()
