"""Customer databases for tests: a fresh SQLite file, or a fresh database on the local PostgreSQL or MariaDB
server, created from DDL statements and filled with rows, its URL returned. The tests that need one differ only in their tables."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

from tests.conftest import with_database

Rows = dict[str, Sequence[tuple[Any, ...]]]


def fresh_sqlite(path: Path, ddl: Sequence[str], rows: Rows) -> str:
    """SQLite database file ``path`` with ``ddl`` run and ``rows`` inserted per table."""
    with sqlite3.connect(path) as db:
        for statement in ddl:
            db.execute(statement)
        for table, values in rows.items():
            if values:
                db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(values[0]))})", values)
    return f"sqlite:///{path}"


async def fresh_postgres(admin_dsn: str, name: str, ddl: Sequence[str], rows: Rows) -> str:
    """Database ``name`` (dropped first if it exists) with ``ddl`` run and ``rows`` inserted per table."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    url = with_database(admin_dsn, name)
    conn = await asyncpg.connect(url)
    try:
        for statement in ddl:
            await conn.execute(statement)
        for table, values in rows.items():
            if values:
                marks = ", ".join(f"${i + 1}" for i in range(len(values[0])))
                await conn.executemany(f"INSERT INTO {table} VALUES ({marks})", values)
    finally:
        await conn.close()
    return url


async def fresh_mysql(server: tuple[str, int, str], name: str, ddl: Sequence[str], rows: Rows) -> str:
    """The same on a MariaDB/MySQL server given as (host, port, administrator without a password)."""
    import aiomysql

    host, port, user = server
    conn = await aiomysql.connect(host=host, port=port, user=user, password="", autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS {name}")
            await cur.execute(f"CREATE DATABASE {name}")
            await cur.execute(f"USE {name}")
            for statement in ddl:
                await cur.execute(statement)
            for table, values in rows.items():
                if values:
                    marks = ", ".join(["%s"] * len(values[0]))
                    await cur.executemany(f"INSERT INTO {table} VALUES ({marks})", list(values))
    finally:
        conn.close()
    return f"mysql://{user}@{host}:{port}/{name}"
