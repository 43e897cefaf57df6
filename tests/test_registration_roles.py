"""Registration inspects the database account: a privileged one is refused unless the operator allows it
(the warning then stays in `querylift status`), a read-only one made by ``readonly_role_sql`` is accepted; and
the project's schema is the one registered, whatever a URL says later."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiomysql
import asyncpg
import pytest

from services.cli.cmd_status import project_warnings
from services.core.customer_db import CustomerDatabases, SqlRefused, readonly_role_sql
from services.core.projects import ProjectError, load_project
from services.query.register import register_project
from tests.conftest import REPO, unique, with_database

DB = "ql_test_roles"


def with_user(dsn: str, user: str, password: str) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="module")
async def pg_db(customer_pg_admin: str) -> AsyncIterator[str]:
    admin = await asyncpg.connect(customer_pg_admin)
    await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {DB}")
    await admin.close()
    url = with_database(customer_pg_admin, DB)
    conn = await asyncpg.connect(url)
    await conn.execute(
        "CREATE TABLE accounts (id int PRIMARY KEY, name text);"
        "INSERT INTO accounts VALUES (1, 'public-row');"
        "CREATE SCHEMA sales; CREATE TABLE sales.accounts (id int PRIMARY KEY, name text);"
        "INSERT INTO sales.accounts VALUES (1, 'sales-row');"
    )
    await conn.close()
    yield url


async def test_a_superuser_is_refused_with_the_statements_for_a_read_only_role(
    pool: asyncpg.Pool, pg_db: str
) -> None:
    project = unique("roles-su")
    with pytest.raises(ProjectError) as info:
        await register_project(pool, project_id=project, database_url=pg_db)
    message = str(info.value)
    assert "superuser" in message and "CREATE ROLE" in message and "--allow-privileged-role" in message
    assert await load_project(pool, project) is None  # nothing registered
    await register_project(pool, project_id=project, database_url=pg_db, allow_privileged_role=True)
    registered = await load_project(pool, project)
    assert registered is not None and any("superuser" in w for w in registered.role_warnings)


async def test_a_read_only_role_is_accepted(pool: asyncpg.Pool, pg_db: str) -> None:
    role = f"ql_ro_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_db)
    try:
        for statement in readonly_role_sql("postgres", role, DB, password="pw-Ro1"):
            await admin.execute(statement)
        project = unique("roles-ro")
        schema, _, _ = await register_project(
            pool, project_id=project, database_url=with_user(pg_db, role, "pw-Ro1")
        )
        registered = await load_project(pool, project)
        assert registered is not None
        assert not any(w.startswith("too strong") for w in registered.role_warnings), registered.role_warnings
        assert [t.name for t in schema.tables] == ["accounts"] and schema.namespace == "public"
        # Given write access later, the same account is refused at the next registration.
        await admin.execute(f'GRANT INSERT ON accounts TO "{role}"')
        with pytest.raises(ProjectError, match="may write tables"):
            await register_project(pool, project_id=project, database_url=with_user(pg_db, role, "pw-Ro1"))
    finally:
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_the_schema_is_the_one_registered_not_the_urls(pool: asyncpg.Pool, pg_db: str) -> None:
    """Registered with ?search_path=sales, the project's schema is sales: public.accounts (another schema) is
    refused, and unqualified names read sales even when a URL without the option is used later."""
    url = f"{pg_db}{'&' if '?' in pg_db else '?'}search_path=sales"
    schema, _, _ = await register_project(
        pool, project_id=unique("roles-scope"), database_url=url, allow_privileged_role=True
    )
    assert schema.namespace == "sales"
    databases = CustomerDatabases()
    try:
        with pytest.raises(SqlRefused, match="another schema"):
            await databases.check_and_run(
                url, "SELECT name FROM public.accounts", schema, timeout_s=5, row_limit=5
            )
        for sql in ("SELECT name FROM accounts", "SELECT name FROM sales.accounts"):
            _, result = await databases.check_and_run(url, sql, schema, timeout_s=5, row_limit=5)
            assert result.rows == [("sales-row",)], sql
        _, result = await databases.check_and_run(
            pg_db, "SELECT name FROM accounts", schema, timeout_s=5, row_limit=5
        )
        assert result.rows == [("sales-row",)]
    finally:
        await databases.close()


async def test_status_repeats_the_warning(pool: asyncpg.Pool, pg_db: str, pg_dsn: str) -> None:
    project = unique("roles-status")
    await register_project(pool, project_id=project, database_url=pg_db, allow_privileged_role=True)
    warnings = await project_warnings(pg_dsn, 5)
    assert any("superuser" in w for w in warnings[project])


@pytest.fixture(scope="module")
async def mysql_db(customer_mysql: tuple[str, int, str]) -> AsyncIterator[str]:
    host, port, user = customer_mysql
    conn = await aiomysql.connect(host=host, port=port, user=user, password="", autocommit=True)
    async with conn.cursor() as cur:
        await cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        await cur.execute(f"CREATE DATABASE {DB}")
        await cur.execute(f"CREATE TABLE {DB}.accounts (id int PRIMARY KEY, name text)")
        await cur.execute(f"INSERT INTO {DB}.accounts VALUES (1, 'x')")
    conn.close()
    yield f"mysql://{user}@{host}:{port}/{DB}"


async def test_mysql_root_is_refused_and_a_read_only_user_accepted(pool: asyncpg.Pool, mysql_db: str) -> None:
    with pytest.raises(ProjectError, match="global privileges"):
        await register_project(pool, project_id=unique("roles-my"), database_url=mysql_db)
    role = f"ql_ro_{uuid.uuid4().hex[:8]}"
    admin = await aiomysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    try:
        async with admin.cursor() as cur:
            for statement in readonly_role_sql("mysql", role, DB, password="pw-Ro1"):
                await cur.execute(statement)
        project = unique("roles-my-ro")
        await register_project(
            pool, project_id=project, database_url=f"mysql://{role}:pw-Ro1@127.0.0.1:3306/{DB}"
        )
        registered = await load_project(pool, project)
        assert registered is not None and registered.role_warnings == ()
    finally:
        async with admin.cursor() as cur:
            await cur.execute(f"DROP USER IF EXISTS '{role}'@'%'")
        admin.close()


def test_project_add_refuses_a_privileged_role_on_the_command_line(
    pg_db: str, pg_dsn: str, tmp_path: Path
) -> None:
    env = {**os.environ, "DATABASE_URL": pg_dsn, "QUERYLIFT_DATA_DIR": str(tmp_path)}
    querylift = [sys.executable, "-m", "services.cli.main"]
    name = unique("roles-cli")
    refused = subprocess.run(
        [*querylift, "project", "add", name, "--database", pg_db],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "superuser" in refused.stdout and "CREATE ROLE" in refused.stdout
    allowed = subprocess.run(
        [*querylift, "project", "add", name, "--database", pg_db, "--allow-privileged-role"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "too strong" in allowed.stdout
