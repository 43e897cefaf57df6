"""Shared fixtures: the real embedded broker and PostgreSQL, started once per test session."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from services.infra.db import create_pool, migrate
from services.infra.embedded import EmbeddedBroker, EmbeddedPostgres
from services.infra.settings import Settings

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DB = REPO / "samples" / "bikeshop" / "bikeshop.sqlite"


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", delete_on_stop=True).start()
    yield server.dsn
    server.stop()


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker().start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(pg_dsn, max_size=10)
    await migrate(p)
    yield p
    await p.close()


@pytest.fixture
def settings(pg_dsn: str, broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    """Settings for one test: its own topic prefix, so tests on the shared broker never see each other."""
    return Settings(
        database_url=pg_dsn,  # type: ignore[arg-type]
        kafka_bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        topic_partitions=2,
        data_dir=tmp_path,
        metrics_port=0,
        log_json=False,
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def wait_until(predicate, timeout_s: float = 30.0, interval_s: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


# --- customer databases ------------------------------------------------------------------------------------
#: Where tests find customer servers: the machine's own PostgreSQL and MariaDB/MySQL when they run, else the
#: embedded PostgreSQL the suite starts anyway (MariaDB tests are then skipped, saying what to install).
LOCAL_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_MYSQL = ("127.0.0.1", 3306, "root")


@pytest.fixture(scope="session")
async def customer_pg_admin(pg_dsn: str) -> str:
    """An administrator DSN of a PostgreSQL server that may hold customer test databases."""
    try:
        conn = await asyncpg.connect(LOCAL_PG_ADMIN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return pg_dsn
    await conn.close()
    return LOCAL_PG_ADMIN


@pytest.fixture(scope="session")
async def customer_mysql() -> tuple[str, int, str]:
    """Host, port and administrator of a MariaDB/MySQL server for customer test databases, or a skip."""
    import aiomysql

    host, port, user = LOCAL_MYSQL
    try:
        conn = await asyncio.wait_for(aiomysql.connect(host=host, port=port, user=user, password=""), 5)
    except (OSError, TimeoutError, aiomysql.Error):
        pytest.skip(f"no MariaDB/MySQL at {host}:{port} (user {user}, no password): install mariadb-server")
    conn.close()
    return LOCAL_MYSQL


def with_database(dsn: str, database: str) -> str:
    """The DSN of another database on the same PostgreSQL server."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))
