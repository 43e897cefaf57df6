"""Replies that run away: the GGUF decoder stops one that repeats itself, and the generation pipeline spends no
repair round on a cut-off reply or on SQL that ran into the time limit (a real SQLite database, a scripted model
whose long reply is cut at max_tokens as a real backend cuts it)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from events import ErrorCode
from services.core.customer_db import CustomerDatabases, discover_schema
from services.core.schema import SchemaInfo
from services.generation.pipeline import GenerationConfig, generate_answer
from services.infra.llm.llama_decode import _looping
from services.infra.llm.scripted import ScriptedLLM

LOOP = "SELECT COUNT(*) FROM state AS s0 " + " ".join(f"CROSS JOIN state AS s{i}" for i in range(1, 12))

LOOPING = [
    (LOOP, True),
    (
        "SELECT a FROM t WHERE x IN (SELECT x FROM t WHERE x IN (SELECT x FROM t WHERE x IN (SELECT x FROM t "
        "WHERE x IN (SELECT x FROM t WHERE x IN (SELECT x FROM t WHERE x IN (SELECT x FROM t",
        True,
    ),
    ("SELECT name FROM city WHERE population > 1000 ORDER BY population DESC LIMIT 5", False),
    (
        "SELECT SUM(CASE WHEN status = 'open' THEN 1 ELSE 0 END) AS open_count, "
        "SUM(CASE WHEN status = 'closed' THEN 1 ELSE 0 END) AS closed_count, "
        "SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS pending_count, "
        "SUM(CASE WHEN status = 'void' THEN 1 ELSE 0 END) AS void_count FROM orders",
        False,
    ),
    (
        "SELECT c.name, o.total, p.title, s.city FROM customers AS c JOIN orders AS o ON o.customer_id = c.id "
        "JOIN products AS p ON p.id = o.product_id JOIN stores AS s ON s.id = o.store_id "
        "WHERE o.total > 100 AND s.city = 'Lyon' AND p.category = 'kids' ORDER BY o.total DESC",
        False,
    ),
]


@pytest.mark.parametrize(("text", "loops"), LOOPING)
def test_a_reply_that_repeats_itself_is_seen_as_looping(text: str, loops: bool) -> None:
    assert _looping(text.encode()) is loops


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[tuple[str, SchemaInfo, CustomerDatabases]]:
    path = tmp_path / "r.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE state (name TEXT, population INTEGER)")
        conn.executemany("INSERT INTO state VALUES (?, ?)", [(f"s{i}", i * 1000) for i in range(3000)])
    url = f"sqlite:///{path}"
    databases = CustomerDatabases()
    yield url, await discover_schema(url), databases
    await databases.close()


RIGHT = "SELECT COUNT(*) FROM state"
SLOW = "SELECT COUNT(*) FROM state AS a CROSS JOIN state AS b CROSS JOIN state AS c"


def _model(first: str) -> ScriptedLLM:
    """``first`` for the question, the right SQL for a repair prompt."""
    return ScriptedLLM(
        [(r"That (query is wrong|answer contained no usable SQL)", f"```sql\n{RIGHT}\n```")],
        default=f"```sql\n{first}\n```",
    )


async def _answer(llm: ScriptedLLM, db, **config):  # type: ignore[no-untyped-def]
    url, schema, databases = db
    return await generate_answer(
        llm,
        databases,
        question="how many states are there",
        schema=schema,
        database_url=url,
        config=GenerationConfig(repair_rounds=1, max_tokens=40, timeout_s=0.5, **config),
    )


async def test_a_cut_off_reply_gets_no_repair_round_scripted_llm(db) -> None:  # type: ignore[no-untyped-def]
    llm = _model(LOOP)
    result = await _answer(llm, db)
    assert len(llm.calls) == 1 and not result.ok and result.error_code == ErrorCode.invalid_sql
    # The same with repair rounds for runaways: the round is spent (and here, scripted, it is right).
    llm = _model(LOOP)
    result = await _answer(llm, db, repair_runaways=True)
    assert len(llm.calls) == 2 and result.ok and result.sql == RIGHT


async def test_sql_that_ran_into_the_time_limit_gets_no_repair_round_scripted_llm(db) -> None:  # type: ignore[no-untyped-def]
    llm = _model(SLOW)
    result = await _answer(llm, db)
    assert len(llm.calls) == 1 and result.error_code == ErrorCode.execution_failed
    assert "time limit" in (result.error_message or "")
    llm = _model(SLOW)
    result = await _answer(llm, db, repair_runaways=True)
    assert len(llm.calls) == 2 and result.ok and result.sql == RIGHT


async def test_a_reply_within_max_tokens_is_not_cut_scripted_llm(db) -> None:  # type: ignore[no-untyped-def]
    llm = _model(RIGHT)
    result = await _answer(llm, db)
    assert result.ok and result.sql == RIGHT and len(llm.calls) == 1
