"""What ingress reads and writes in its one round trip, and the caches the answer path keeps: the project row
(generation) and idle read-only SQLite connections (customer databases)."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from pathlib import Path

import asyncpg

from services.core.customer_db import CustomerDatabases
from services.core.projects import ProjectCache, admit_question
from services.core.schema import Column, SchemaInfo, Table
from services.query.register import register_project
from tests.conftest import unique

SAMPLE_DB = Path(__file__).resolve().parents[1] / "samples" / "bikeshop" / "bikeshop.sqlite"


async def _project(pool: asyncpg.Pool, tmp_path: Path) -> str:
    database = tmp_path / "shop.sqlite"
    shutil.copy(SAMPLE_DB, database)
    project = unique("ingress")
    await register_project(pool, project_id=project, database_url=f"sqlite:///{database}")
    return project


async def _answer(pool: asyncpg.Pool, project: str, conversation: str, question: str, ok: bool) -> None:
    await pool.execute(
        "INSERT INTO answers (id, question_event_id, project_id, conversation_id, question, sql, answer_text, ok)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        uuid.uuid4(),
        uuid.uuid4(),
        project,
        conversation,
        question,
        f"SELECT '{question}'",
        f"answer to {question}",
        ok,
    )


async def test_admit_question_records_it_and_returns_the_last_good_turns_oldest_first(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    project = await _project(pool, tmp_path)
    for i, ok in enumerate([True, True, False, True, True]):
        await _answer(pool, project, "conv-1", f"q{i}", ok)
    await _answer(pool, project, "conv-2", "other conversation", True)
    event_id = uuid.uuid4()

    found, history = await admit_question(
        pool,
        event_id=event_id,
        project_id=project,
        conversation_id="conv-1",
        user_id="u1",
        question="how many orders?",
        history_turns=3,
    )

    assert found is not None and found.id == project and found.schema_version_id is not None
    assert [t.question for t in history] == ["q1", "q3", "q4"]  # failed q2 skipped, other conversation absent
    assert history[-1].sql == "SELECT 'q4'" and history[-1].answer_text == "answer to q4"
    row = await pool.fetchrow(
        "SELECT project_id, conversation_id, question FROM messages WHERE id = $1", event_id
    )
    assert row is not None and tuple(row) == (project, "conv-1", "how many orders?")
    assert (
        await pool.fetchval(
            "SELECT user_id FROM conversations WHERE project_id = $1 AND id = 'conv-1'", project
        )
        == "u1"
    )
    # A redelivered question records nothing twice.
    await admit_question(
        pool, event_id=event_id, project_id=project, conversation_id="conv-1", user_id="u1", question="x"
    )
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE id = $1", event_id) == 1


async def test_admit_question_for_an_unknown_project_records_nothing(pool: asyncpg.Pool) -> None:
    event_id = uuid.uuid4()
    found, history = await admit_question(
        pool,
        event_id=event_id,
        project_id=unique("nobody"),
        conversation_id="c",
        user_id="u",
        question="anything",
    )
    assert (found, history) == (None, [])
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE id = $1", event_id) == 0


async def test_project_cache_reuses_a_row_for_its_ttl_and_never_caches_a_miss(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    project = await _project(pool, tmp_path)
    cache = ProjectCache(pool, ttl_s=3600)
    first = await cache.get(project)
    assert first is not None
    await pool.execute("UPDATE projects SET description = 'changed' WHERE id = $1", project)
    assert await cache.get(project) is first  # within the TTL the row is not read again
    assert (await ProjectCache(pool, ttl_s=0).get(project)).description == "changed"  # type: ignore[union-attr]

    missing = unique("later")
    assert await cache.get(missing) is None
    await register_project(pool, project_id=missing, database_url=f"sqlite:///{tmp_path / 'shop.sqlite'}")
    assert await cache.get(missing) is not None  # registered a moment later: found at once


async def test_pooled_sqlite_connections_follow_a_replaced_database_file(tmp_path: Path) -> None:
    path = tmp_path / "customer.sqlite"

    def build(value: str) -> None:
        conn = sqlite3.connect(path)
        conn.execute("DROP TABLE IF EXISTS t")
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.execute("INSERT INTO t VALUES (?)", (value,))
        conn.commit()
        conn.close()

    build("first")
    dbs = CustomerDatabases(sqlite_workers=1)  # one worker: its idle connection is the one reused
    url = f"sqlite:///{path}"
    schema = SchemaInfo("sqlite", [Table("t", [Column("v", "TEXT")])])

    async def run(sql: str) -> list[tuple[object, ...]]:
        _, result = await dbs.check_and_run(url, sql, schema, timeout_s=5, row_limit=10)
        return result.rows

    try:
        assert await run("SELECT v FROM t") == [("first",)]
        assert await run("SELECT v FROM t") == [("first",)]  # from the idle pool
        path.rename(tmp_path / "old.sqlite")
        build("second")
        assert await run("SELECT v FROM t") == [("second",)]
        # A pooled connection holds no lock: the customer can still write to the file.
        writer = sqlite3.connect(path, timeout=0.5)
        writer.execute("INSERT INTO t VALUES ('third')")
        writer.commit()
        writer.close()
        assert sorted(await run("SELECT v FROM t")) == [("second",), ("third",)]
    finally:
        await dbs.close()
