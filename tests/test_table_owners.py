"""Each table of the system of record has one module whose statements read and write it; the few statements
elsewhere that name a table (a join that scopes rows by project, the ingress round trip, the console's read
models) are listed here with their reason, so a new one fails until it is moved to the owner or explained."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "services" / "infra" / "migrations"

OWNERS: dict[str, str] = {
    "projects": "services/core/projects.py",
    "schema_versions": "services/core/projects.py",
    "conversations": "services/core/projects.py",
    "messages": "services/core/answers.py",
    "answers": "services/core/answers.py",
    "answer_details": "services/core/answers.py",
    "feedback": "services/core/answers.py",
    "examples": "services/core/examples/store.py",
    "column_values": "services/core/column_values_store.py",
    "model_versions": "services/core/model_registry.py",
    "training_jobs": "services/core/model_registry.py",
    "processed_events": "services/infra/processed_events.py",
    "dead_letters": "services/infra/dead_letters.py",
    "schema_migrations": "services/infra/db.py",
}

#: (table, module) → why that module's SQL names a table it does not own.
ALSO: dict[tuple[str, str], str] = {
    ("projects", "services/core/answers.py"): "inserts only for a known project (EXISTS on projects)",
    (
        "messages",
        "services/core/projects.py",
    ): "ingress: project, question recorded and history in one round trip",
    (
        "answers",
        "services/core/projects.py",
    ): "ingress: the conversation's last answers in the same round trip",
    ("training_jobs", "services/core/examples/store.py"): "examples since the last training request (a join)",
    (
        "examples",
        "services/core/examples/index_pgvector.py",
    ): "the pgvector index is the examples' embedding column",
    (
        "messages",
        "services/console/queries.py",
    ): "the console's read model (pages, review queue, learning chart)",
    ("answers", "services/console/queries.py"): "the console's read model",
    ("answer_details", "services/console/queries.py"): "the console's read model",
    ("feedback", "services/console/queries.py"): "the console's read model",
    ("examples", "services/console/queries.py"): "the console's read model",
}


def _tables() -> set[str]:
    found = set()
    for sql in MIGRATIONS.glob("*.sql"):
        found |= set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql.read_text()))
    return found


def _naming(table: str) -> set[str]:
    pattern = re.compile(rf"\b(?:FROM|JOIN|INTO|UPDATE|TABLE)\s+{table}\b")
    return {
        str(path.relative_to(ROOT))
        for folder in ("services", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if pattern.search(path.read_text())
    }


def test_every_table_has_an_owner() -> None:
    assert _tables() | {"schema_migrations"} == set(OWNERS)  # the migration runner creates its own table


@pytest.mark.parametrize("table", sorted(OWNERS))
def test_only_the_owner_names_the_table(table: str) -> None:
    naming = _naming(table)
    assert OWNERS[table] in naming  # the scan sees the owner's own statements
    assert {m for m in naming - {OWNERS[table]} if (table, m) not in ALSO} == set()


def test_no_stale_exception() -> None:
    assert [(t, m) for t, m in ALSO if m not in _naming(t)] == []
