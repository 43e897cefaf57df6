"""The accuracy benchmark on a tiny synthetic project in the shared format: real PostgreSQL, embedder and
retrieval; a scripted model where the expected score must be exact, the real SmolLM2 GGUF for one smoke run."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bench.accuracy.data import discover_projects
from bench.accuracy.report import markdown_table, predictions_path, results_table
from bench.accuracy.runner import AccuracyOptions, run_accuracy
from bench.accuracy.scoring import METRIC_KEYS
from services.infra.llm.scripted import ScriptedLLM
from services.infra.settings import Settings

HISTORY = [
    ("how many pets are there", "SELECT COUNT(*) FROM pet", 5),
    ("list the names of all owners", "SELECT name FROM owner", 5),
    ("how many dogs are there", "SELECT COUNT(*) FROM pet WHERE species = 'dog'", 5),
    ("what is the oldest pet", "SELECT name FROM pet ORDER BY age DESC LIMIT 1", 4),
    ("which owner lives in paris", "SELECT name FROM owner WHERE city = 'berlin'", 1),
    ("how many owners are there", "SELECT COUNT(*) FROM owner", 5),
]
TEST = [
    ("how many cats are there", "SELECT COUNT(*) FROM pet WHERE species = 'cat'", True),
    ("list pet names by age", "SELECT name FROM pet ORDER BY age", True),
    ("which owners live in berlin", "SELECT name FROM owner WHERE city = 'berlin'", True),
    (
        "who owns rex",
        "SELECT o.name FROM owner o JOIN pet p ON p.owner_id = o.id WHERE p.name = 'rex'",
        False,
    ),
]
# Wrong on purpose: another filter, the reverse order, another city, another pet.
WRONG = {
    TEST[0][0]: "SELECT COUNT(*) FROM pet WHERE age > 2",
    TEST[1][0]: "SELECT name FROM pet ORDER BY age DESC",
    TEST[2][0]: "SELECT name FROM owner WHERE city = 'paris'",
    TEST[3][0]: "SELECT o.name FROM owner o JOIN pet p ON p.owner_id = o.id WHERE p.name = 'tom'",
}


def make_project(root: Path) -> Path:
    folder = root / "projects" / "pets"
    folder.mkdir(parents=True)
    with sqlite3.connect(folder / "pets.sqlite") as conn:
        conn.executescript(
            """
            CREATE TABLE owner (id INTEGER PRIMARY KEY, name TEXT, city TEXT);
            CREATE TABLE pet (id INTEGER PRIMARY KEY, name TEXT, species TEXT, age INTEGER,
                              owner_id INTEGER REFERENCES owner(id));
            INSERT INTO owner VALUES (1, 'ana', 'berlin'), (2, 'ben', 'paris'), (3, 'cleo', 'berlin');
            INSERT INTO pet VALUES (1, 'rex', 'dog', 7, 1), (2, 'tom', 'cat', 3, 2), (3, 'kit', 'cat', 1, 3),
                                   (4, 'bo', 'dog', 12, 2);
            """
        )
    (folder / "project.json").write_text(
        json.dumps(
            {
                "name": "pets",
                "description": "pets and their owners",
                "dialect": "sqlite",
                "database": "pets.sqlite",
            }
        )
    )
    with (folder / "history.jsonl").open("w") as f:
        for i, (q, sql, rating) in enumerate(HISTORY):
            f.write(json.dumps({"id": f"h{i}", "question": q, "sql": sql, "rating": rating}) + "\n")
    with (folder / "test.jsonl").open("w") as f:
        for i, (q, sql, seen) in enumerate(TEST):
            f.write(json.dumps({"id": f"t{i}", "question": q, "sql": sql, "pattern_seen": seen}) + "\n")
    return root


def _question(prompt: str) -> str:
    """The test question in the last user message, whatever frame the prompt builder puts around it."""
    return next(q for q, _, _ in TEST if q in prompt)


def test_data_loader_reads_the_shared_format(tmp_path: Path) -> None:
    [project] = discover_projects(make_project(tmp_path))
    assert project.name == "pets" and len(project.history) == 6 and len(project.test) == 4
    assert project.history[4].rating == 1 and project.test[3].pattern_seen is False
    assert project.database_url.startswith("sqlite:///") and project.database_path.is_file()
    assert project.history_hash(3) != project.history_hash()


async def test_scripted_gold_scores_one_and_wrong_scores_zero(tmp_path: Path, pg_dsn: str) -> None:
    root = make_project(tmp_path)
    gold = {q: sql for q, sql, _ in TEST}
    settings = Settings(data_dir=tmp_path / "data", log_json=False)

    right = ScriptedLLM(
        default=lambda prompt: f"```sql\n{gold[_question(prompt)]}\n```", name="scripted-gold"
    )
    options = AccuracyOptions(
        data=root,
        out=tmp_path / "gold.json",
        strategies=["baseline", "rag"],
        database_url=pg_dsn,
        progress=False,
    )
    document = await run_accuracy(options, settings, llm=right)
    saved = json.loads((tmp_path / "gold.json").read_text())
    assert saved["meta"]["model"] == "scripted-gold"
    for key in ("model", "settings", "machine", "command", "date", "strategies"):
        assert key in saved["meta"]
    pets = saved["projects"]["pets"]
    # Five answers rated 4-5 are learnt, the one rated 1 is not.
    assert pets["history"]["verify"] == 5 and pets["history"]["reject"] == 1 and pets["usable_examples"] == 5
    for strategy in ("baseline", "rag"):
        entry = pets["strategies"][strategy]
        assert set(METRIC_KEYS) <= set(entry)
        assert entry["n"] == 4 and entry["accuracy"] == 1.0 and entry["executes"] == 1.0
        assert entry["accuracy_pattern_seen"] == 1.0 and entry["accuracy_pattern_new"] == 1.0
        assert entry["schema_valid"] == 1.0 and entry["prompt_tokens_mean"] > 0
    # rag put retrieved project examples into its prompts, never the rated-down answer; baseline none.
    predictions = [
        json.loads(line) for line in predictions_path(tmp_path / "gold.json").read_text().splitlines()
    ]
    assert len(predictions) == 8
    assert all(p["examples"] > 0 for p in predictions if p["strategy"] == "rag")
    assert all(p["examples"] == 0 and p["fewshot"] == 0 for p in predictions if p["strategy"] == "baseline")
    rated_down = HISTORY[4][1]
    assert not any(rated_down in m["content"] for c in right.calls for m in c.messages)
    assert document["projects"]["pets"]["strategies"]["rag"]["accuracy"] == 1.0
    assert "| pets | rag | 4 | 100.0 %" in markdown_table(document)

    wrong = ScriptedLLM(
        default=lambda prompt: f"```sql\n{WRONG[_question(prompt)]}\n```", name="scripted-wrong"
    )
    options = AccuracyOptions(
        data=root, out=tmp_path / "wrong.json", strategies=["baseline"], database_url=pg_dsn, progress=False
    )
    entry = (await run_accuracy(options, settings, llm=wrong))["projects"]["pets"]["strategies"]["baseline"]
    assert entry["accuracy"] == 0.0 and entry["executes"] == 1.0 and entry["schema_valid"] == 1.0
    assert len(entry["failures"]) == 4 and entry["failures"][0]["gold"] == TEST[0][1]


async def test_scripted_invalid_sql_and_learning_curve(tmp_path: Path, pg_dsn: str) -> None:
    root = make_project(tmp_path)
    gold = {q: sql for q, sql, _ in TEST}

    def answer(prompt: str) -> str:
        # Half right, half a column that does not exist (schema-invalid, fails to run).
        question = _question(prompt)
        return gold[question] if re.search(r"cats|berlin", question) else "SELECT colour FROM pet"

    settings = Settings(data_dir=tmp_path / "data", log_json=False)
    options = AccuracyOptions(
        data=root,
        out=tmp_path / "curve.json",
        strategies=["baseline", "rag"],
        database_url=pg_dsn,
        progress=False,
        learning_curve=True,
    )
    document = await run_accuracy(options, settings, llm=ScriptedLLM(default=answer, name="scripted-half"))
    entry = document["projects"]["pets"]["strategies"]["baseline"]
    assert entry["accuracy"] == 0.5 and entry["executes"] == 0.5 and entry["schema_valid"] == 0.5
    assert entry["accuracy_pattern_seen"] == round(2 / 3, 4) and entry["accuracy_pattern_new"] == 0.0
    curve = document["learning_curve"]["pets"]
    assert [p["history_items"] for p in curve["rag"]] == [0, 1, 2, 3, 6]
    assert [p["usable_examples"] for p in curve["rag"]] == [0, 1, 2, 3, 5]
    plot = document["meta"]["plot"]
    assert plot == str(tmp_path / "curve.learning_curve.png")
    assert (tmp_path / "curve.learning_curve.png").stat().st_size > 1000


@pytest.mark.real_model
@pytest.mark.slow
async def test_real_smollm2_smoke(tmp_path: Path, pg_dsn: str) -> None:
    root = make_project(tmp_path)
    settings = Settings(data_dir=tmp_path / "data", log_json=False)
    options = AccuracyOptions(
        data=root,
        out=tmp_path / "real.json",
        strategies=["rag"],
        limit=2,
        model="smollm2-135m-instruct",
        database_url=pg_dsn,
        progress=False,
    )
    document = await run_accuracy(options, settings)
    entry = document["projects"]["pets"]["strategies"]["rag"]
    assert document["meta"]["model"] == "smollm2-135m-instruct"
    assert entry["n"] == 2 and 0.0 <= entry["accuracy"] <= 1.0
    assert entry["prompt_tokens_mean"] > 50 and entry["latency_p50_s"] > 0
    predictions = [
        json.loads(line) for line in predictions_path(tmp_path / "real.json").read_text().splitlines()
    ]
    assert len(predictions) == 2 and all(p["strategy"] == "rag" for p in predictions)


@pytest.mark.slow
async def test_scripted_lora_adapter_is_trained_cached_and_routed(tmp_path: Path, pg_dsn: str) -> None:
    """One tiny real LoRA training run (SmolLM2, 1 step); answers come from a scripted model that records the
    adapter the generation router chose. A second run reuses the adapter from the disk cache."""
    root = make_project(tmp_path)
    gold = {q: sql for q, sql, _ in TEST}
    # Value grounding and the first-time answer paths off, so the product's wiring (full) is lora's
    # configuration and reuses its answers.
    settings = Settings(
        data_dir=tmp_path / "data",
        lora_max_steps=1,
        log_json=False,
        value_hints=False,
        entity_value_hints=False,
        column_hints=False,
        value_templates=False,
        mechanical_fixes=False,
        shape_templates=False,
        entity_templates=False,
        prominent_readings=False,
        example_aliases="as_written",
        retrieval_parts=0,
        composed_answers=False,
        decomposed_answers=False,
    )
    for run in range(2):
        llm = ScriptedLLM(default=lambda prompt: f"```sql\n{gold[_question(prompt)]}\n```", name="scripted")
        options = AccuracyOptions(
            data=root,
            out=tmp_path / f"lora{run}.json",
            strategies=["lora", "full"],
            database_url=pg_dsn,
            work_dir=tmp_path / "work",
            progress=False,
        )
        strategies = (await run_accuracy(options, settings, llm=llm))["projects"]["pets"]["strategies"]
        lora = strategies["lora"]
        assert lora["status"] == "ok" and lora["accuracy"] == 1.0
        assert lora["adapter"]["cached"] is (run == 1) and lora["adapter"]["train_examples"] >= 1
        assert strategies["full"]["answered_as"] == "lora"
        adapters = {c.adapter.path for c in llm.calls if c.adapter is not None}
        assert adapters == {lora["adapter"]["path"]} and len(llm.calls) == 4


def _run_document(strategies: dict[str, float], *, model: str = "m", used: int = 3) -> dict[str, Any]:
    return {
        "meta": {"model": model, "command": f"run {' '.join(strategies)}"},
        "projects": {
            "p": {
                "history": 5,
                "test_used": used,
                "strategies": {s: {"status": "ok", "n": used, "accuracy": a} for s, a in strategies.items()},
            }
        },
    }


def test_accuracy_merge_keeps_every_runs_strategies_and_meta(tmp_path: Path) -> None:
    from bench.accuracy.merge import merge_files

    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(_run_document({"baseline": 0.1, "rag": 0.5})))
    second.write_text(json.dumps(_run_document({"lora": 0.6, "rag": 0.55})))
    (tmp_path / "a.predictions.jsonl").write_text('{"q": 1}\n')
    (tmp_path / "b.predictions.jsonl").write_text('{"q": 2}\n')
    merged = merge_files([first, second], tmp_path / "out.json")
    strategies = merged["projects"]["p"]["strategies"]
    assert {s: e["accuracy"] for s, e in strategies.items()} == {"baseline": 0.1, "rag": 0.55, "lora": 0.6}
    assert [r["command"] for r in merged["meta"]["runs"]] == ["run baseline rag", "run lora rag"]
    assert (tmp_path / "out.predictions.jsonl").read_text().splitlines() == ['{"q": 1}', '{"q": 2}']


@pytest.mark.parametrize(
    "other",
    [_run_document({"lora": 0.6}, model="another"), _run_document({"lora": 0.6}, used=4)],
    ids=["different model", "different questions"],
)
def test_accuracy_merge_refuses_runs_that_do_not_compare(other: dict[str, Any]) -> None:
    from bench.accuracy.merge import MergeError, merge_documents

    with pytest.raises(MergeError):
        merge_documents([_run_document({"rag": 0.5}), other])


async def test_scripted_variant_changes_one_setting_and_interleaves_with_its_base(
    tmp_path: Path, pg_dsn: str
) -> None:
    """``--variant repair:repair_rounds=0 --interleave``: the scripted model's first reply names a column that
    does not exist and its repair reply is right, so the base strategy scores 1 and the variant without a
    repair round 0; each question is answered by both before the next question is asked."""
    root = make_project(tmp_path)
    gold = {q: sql for q, sql, _ in TEST}

    asked: list[str] = []

    def answer(prompt: str) -> str:
        # The model is shown the last user message: a repair round's names no question, so the one asked last.
        if "That query is wrong" in prompt:
            return f"```sql\n{gold[asked[-1]]}\n```"
        asked.append(_question(prompt))
        return "```sql\nSELECT colour FROM pet\n```"

    llm = ScriptedLLM(default=answer, name="scripted-repairable")
    options = AccuracyOptions(
        data=root,
        out=tmp_path / "variant.json",
        strategies=["repair"],
        variants=["repair:repair_rounds=0"],
        interleave=True,
        database_url=pg_dsn,
        progress=False,
    )
    settings = Settings(data_dir=tmp_path / "data", log_json=False)
    document = await run_accuracy(options, settings, llm=llm)
    strategies = document["projects"]["pets"]["strategies"]
    assert strategies["repair"]["accuracy"] == 1.0
    assert strategies["repair[repair_rounds=0]"]["accuracy"] == 0.0
    assert strategies["repair[repair_rounds=0]"]["executes"] == 0.0
    described = document["meta"]["strategies"]["repair[repair_rounds=0]"]
    assert described["repair_rounds"] == 0 and described["overrides"] == {"repair_rounds": "0"}
    assert document["meta"]["strategies"]["repair"]["repair_rounds"] == 1 and document["meta"]["interleaved"]
    # First attempts only (repair prompts repeat the question): both strategies ask question 1, then question 2.
    assert len(llm.calls) == 3 * len(TEST)  # the base's first reply and repair, the variant's first reply
    assert asked == [q for q, _, _ in TEST for _ in range(2)]


@pytest.mark.parametrize(
    "spec",
    [
        "repair",
        "nosuch:repair_rounds=0",
        "repair:no_such_setting=1",
        "repair:repair_rounds",
        "repair:repair_rounds=x",
        "lora:lora_r=16",
    ],
    ids=[
        "no settings",
        "unknown strategy",
        "unknown setting",
        "no value",
        "value of the wrong type",
        "a training setting",
    ],
)
def test_a_variant_that_cannot_be_built_is_refused_before_anything_runs(spec: str) -> None:
    from bench.accuracy.strategies import variant

    with pytest.raises(ValueError):
        variant(spec)


def test_the_table_names_a_variant_in_full() -> None:
    """A variant's name holds brackets, which the table must print as text rather than read as markup."""
    entry = {
        "status": "ok", "n": 1, "accuracy": 1.0, "accuracy_pattern_seen": 1.0, "accuracy_pattern_new": None,
        "executes": 1.0, "schema_valid": 1.0, "latency_p50_s": 0.1, "latency_p95_s": 0.1,
        "prompt_tokens_mean": 10.0, "from_example": 0.0,
    }  # fmt: skip
    document = {"projects": {"p": {"strategies": {"product[repair_rounds=0]": entry}}}}
    console = Console(record=True, width=300)
    console.print(results_table(document))
    assert "product[repair_rounds=0]" in console.export_text()
