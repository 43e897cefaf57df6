"""``querylift project add|list|refresh``: register customer databases and track their schema versions."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from services.core.projects import ProjectError, list_projects, load_project
from services.infra.runtime_db import open_pool
from services.infra.settings import get_settings
from services.query.register import register_project
from services.wiring import build_index

console = Console()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("project", help="register and inspect customer projects")
    psub = p.add_subparsers(dest="project_command", required=True)
    add = psub.add_parser(
        "add", help="register a customer database (SQLite file, PostgreSQL or MySQL/MariaDB URL)"
    )
    add.add_argument("name")
    add.add_argument("--database", required=True, help="sqlite:///path, postgresql://…, mysql://…")
    add.add_argument(
        "--domain", default=None, help="survey, ecommerce, crm, analytics, generic (detected if omitted)"
    )
    add.add_argument("--description", default=None)
    add.add_argument("--training-threshold", type=int, default=None)
    add.add_argument(
        "--allow-privileged-role",
        action="store_true",
        help="register even when the database account may do more than read the project's schema",
    )
    add.set_defaults(func=lambda a: asyncio.run(_add(a)))
    refresh = psub.add_parser("refresh", help="re-read a project's schema (a new version if it changed)")
    refresh.add_argument("name")
    refresh.add_argument("--allow-privileged-role", action="store_true")
    refresh.set_defaults(func=lambda a: asyncio.run(_refresh(a)))
    lst = psub.add_parser("list", help="list projects")
    lst.set_defaults(func=lambda a: asyncio.run(_list(a)))


async def _add(args: argparse.Namespace) -> int:
    pool = await open_pool(get_settings())
    try:
        schema, version, domain = await register_project(
            pool,
            project_id=args.name,
            database_url=args.database,
            domain=args.domain,
            description=args.description,
            training_threshold=args.training_threshold,
            index=build_index(get_settings(), pool),
            allow_privileged_role=args.allow_privileged_role,
        )
        project = await load_project(pool, args.name)
    except ProjectError as exc:
        console.print(f"[red]Could not register {args.name}:[/] {exc}")
        return 2
    finally:
        await pool.close()
    console.print(
        f"[green]✓[/] project [bold]{args.name}[/]: {len(schema.tables)} tables, schema version {version}, domain {domain}"
    )
    print_role_warnings(args.name, project.role_warnings if project else ())
    return 0


def print_role_warnings(name: str, warnings: Sequence[str]) -> None:
    for line in warnings:
        colour = "red" if line.startswith("too strong") else "yellow"
        console.print(f"[{colour}]{name}: database account {line}[/]")


async def _refresh(args: argparse.Namespace) -> int:
    pool = await open_pool(get_settings())
    try:
        project = await load_project(pool, args.name)
        if project is None:
            console.print(f"[red]No project {args.name!r}.[/] Register it with `querylift project add`.")
            return 2
        # An account registered with --allow-privileged-role stays allowed; one that was read-only and has
        # since gained privileges is refused until registered again with the flag.
        allowed = args.allow_privileged_role or any(w.startswith("too strong") for w in project.role_warnings)
        schema, version, _ = await register_project(
            pool, project_id=project.id, database_url=project.database_url, allow_privileged_role=allowed
        )
        project = await load_project(pool, args.name)
    except ProjectError as exc:
        console.print(f"[red]Could not refresh {args.name}:[/] {exc}")
        return 2
    finally:
        await pool.close()
    console.print(f"[green]✓[/] {args.name}: schema version {version} ({len(schema.tables)} tables)")
    print_role_warnings(args.name, project.role_warnings if project else ())
    return 0


async def _list(args: argparse.Namespace) -> int:
    pool = await open_pool(get_settings())
    try:
        projects = await list_projects(pool)
    finally:
        await pool.close()
    table = Table("project", "dialect", "domain", "schema version", "training threshold")
    for p in projects:
        table.add_row(
            p.id, p.dialect, p.domain or "", str(p.schema_version_id), str(p.training_threshold or "default")
        )
    console.print(table)
    return 0
