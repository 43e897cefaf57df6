"""One guarded function runs customer SQL: ``CustomerDatabases.run`` (and ``check_and_run`` on top of it), which
takes only a ``CheckedSql``, which only ``check_sql`` makes. These tests read the source tree and fail when a
second path appears: an engine called directly, a ``CheckedSql`` made by hand, or a customer-database driver
opened outside the customer-database package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from services.core.customer_db import CustomerDatabases, QueryFailed, SqlRefused
from services.core.schema import Column, SchemaInfo, Table
from services.core.sql import CheckedSql, check_sql

REPO = Path(__file__).resolve().parent.parent
PRODUCT = [p for d in ("services", "bench", "samples") for p in (REPO / d).rglob("*.py")]
CUSTOMER_DB = REPO / "services" / "core" / "customer_db"

#: Modules that open database drivers themselves, and why that is no path for customer SQL.
DRIVER_USERS: dict[str, str] = {
    "services/infra/db.py": "the system of record (querylift's own PostgreSQL)",
    "services/cli/cmd_status.py": "reads project warnings from the system of record",
    "services/demo/simulated_user.py": "the demo's simulated analyst, an upstream user judging answers on its own copy",
    "bench/hostile_report.py": "creates and fingerprints the hostile-SQL test databases",
    "samples/bikeshop/build.py": "builds the sample project's database",
}
_DRIVER_CALLS = {
    ("sqlite3", "connect"),
    ("asyncpg", "connect"),
    ("asyncpg", "create_pool"),
    ("aiomysql", "connect"),
    ("aiomysql", "Connection"),
    ("aiomysql", "create_pool"),
    ("pymysql", "connect"),
}


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _calls(path: Path) -> list[tuple[str, str, int]]:
    """(receiver name, attribute, line) of every ``x.attr(...)`` call, and ("", name, line) of ``name(...)``."""
    out: list[tuple[str, str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                receiver = func.value.id if isinstance(func.value, ast.Name) else ""
                out.append((receiver, func.attr, node.lineno))
            elif isinstance(func, ast.Name):
                out.append(("", func.id, node.lineno))
    return out


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def test_engines_are_run_only_by_the_guarded_function() -> None:
    offenders = [
        f"{_rel(p)}:{line}"
        for p in PRODUCT
        for _, attr, line in _calls(p)
        if attr == "run_unchecked" and _rel(p) != "services/core/customer_db/databases.py"
    ]
    assert offenders == [], "customer SQL must run through CustomerDatabases.run: " + ", ".join(offenders)


def test_only_the_check_makes_checked_sql() -> None:
    offenders = [
        f"{_rel(p)}:{line}"
        for p in PRODUCT
        for _, name, line in _calls(p)
        if name == "CheckedSql" and _rel(p) != "services/core/sql/check.py"
    ]
    assert offenders == []


def test_engine_modules_are_imported_only_inside_their_package() -> None:
    engines = {
        f"services.core.customer_db.{m}"
        for m in ("sqlite", "sqlite_statement", "sqlite_workers", "postgres", "mysql")
    }
    offenders = [
        f"{_rel(p)}: {name}"
        for p in PRODUCT
        if not p.is_relative_to(CUSTOMER_DB)
        for name in _imports(p)
        if any(name == e or name.startswith(e + ".") for e in engines)
    ]
    assert offenders == []


def test_database_drivers_are_opened_only_by_the_customer_database_layer_or_named_modules() -> None:
    offenders = sorted(
        f"{_rel(p)}:{line} {receiver}.{attr}"
        for p in PRODUCT
        if not p.is_relative_to(CUSTOMER_DB) and _rel(p) not in DRIVER_USERS
        for receiver, attr, line in _calls(p)
        if (receiver, attr) in _DRIVER_CALLS
    )
    assert offenders == [], "open customer databases through services.core.customer_db: " + ", ".join(
        offenders
    )
    assert all((REPO / m).is_file() for m in DRIVER_USERS)  # the list names modules that exist


def test_the_scan_sees_a_violation(tmp_path: Path) -> None:
    """The scans above would catch a new path: shown on a module written for the purpose."""
    rogue = tmp_path / "rogue.py"
    rogue.write_text(
        "import sqlite3\nfrom services.core.customer_db.sqlite import run_statement\n"
        "async def f(engine, url, text, limits):\n"
        "    sqlite3.connect(url)\n    return await engine.run_unchecked(url, text, limits, None)\n",
        encoding="utf-8",
    )
    assert ("engine", "run_unchecked", 5) in _calls(rogue)
    assert ("sqlite3", "connect", 4) in _calls(rogue)
    assert "services.core.customer_db.sqlite" in _imports(rogue)


def test_checked_sql_cannot_be_made_by_hand() -> None:
    with pytest.raises(TypeError, match="check_sql"):
        CheckedSql(
            text="SELECT secret FROM other.secrets", dialect="sqlite", namespace=None, tables=frozenset()
        )


_SCHEMA = SchemaInfo("sqlite", [Table("t", [Column("a", "integer")])])


async def test_run_takes_only_checked_sql_of_its_dialect(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "t.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (a INTEGER)")
        db.execute("INSERT INTO t VALUES (7)")
    url = f"sqlite:///{path}"
    databases = CustomerDatabases()
    try:
        with pytest.raises(TypeError, match="CheckedSql"):
            await databases.run(url, "SELECT a FROM t", timeout_s=1, row_limit=1)  # type: ignore[arg-type]
        postgres = SchemaInfo("postgres", [Table("t", [Column("a", "integer")])], namespace="public")
        other = check_sql("SELECT a FROM t", postgres).checked
        assert other is not None
        with pytest.raises(QueryFailed, match="checked for postgres"):
            await databases.run(url, other, timeout_s=1, row_limit=1)
        with pytest.raises(SqlRefused) as refused:
            await databases.check_and_run(url, "SELECT sqlite_version()", _SCHEMA, timeout_s=1, row_limit=1)
        assert refused.value.check.unsafe
        check, result = await databases.check_and_run(
            url, "SELECT a FROM t", _SCHEMA, timeout_s=1, row_limit=1
        )
        assert check.checked is not None and result.rows == [(7,)]
    finally:
        await databases.close()
