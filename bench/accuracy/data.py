"""Benchmark projects in the shared format: ``project.json``, the SQLite database, ``history.jsonl`` and
``test.jsonl`` in one folder per project. Nothing here knows any project by name."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class BenchDataError(Exception):
    """A project folder does not follow the shared format; the message says what is wrong."""


@dataclass(frozen=True)
class HistoryItem:
    id: str
    question: str
    sql: str
    rating: int


@dataclass(frozen=True)
class TestItem:
    id: str
    question: str
    sql: str
    pattern_seen: bool


@dataclass(frozen=True)
class BenchProject:
    name: str
    description: str | None
    dialect: str
    database_path: Path
    history: tuple[HistoryItem, ...]
    test: tuple[TestItem, ...]
    folder: Path

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database_path.resolve()}"

    @property
    def project_id(self) -> str:
        """The querylift project id the benchmark registers it under (a valid id whatever the name)."""
        slug = re.sub(r"[^A-Za-z0-9_.\-]+", "-", self.name).strip("-.") or "project"
        return f"bench-{slug}"[:100]

    def history_hash(self, count: int | None = None) -> str:
        """Content hash of the first ``count`` history items (all by default): caches key on it."""
        digest = hashlib.sha256()
        for item in self.history[: len(self.history) if count is None else count]:
            digest.update(json.dumps([item.id, item.question, item.sql, item.rating]).encode())
        return digest.hexdigest()


def spread_sample(items: tuple[TestItem, ...], limit: int | None) -> list[TestItem]:
    """``limit`` items evenly spaced over the test file (all of them without a limit).

    Test files are often grouped by question pattern, so the first N would measure a few patterns only; an even
    spread keeps the mix (and the pattern-seen share) of the whole file, deterministically.
    """
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        return []
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise BenchDataError(f"{path} is missing")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise BenchDataError(f"{path}:{number} is not JSON: {exc}") from None
    return rows


def _field(row: dict[str, Any], name: str, path: Path) -> Any:
    if name not in row:
        raise BenchDataError(f"{path}: an item has no {name!r} ({row.get('id', '?')})")
    return row[name]


def load_project(folder: Path) -> BenchProject:
    folder = Path(folder)
    meta_path = folder / "project.json"
    if not meta_path.is_file():
        raise BenchDataError(f"{folder} has no project.json")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    dialect = meta.get("dialect", "sqlite")
    if dialect != "sqlite":
        raise BenchDataError(f"{meta_path}: dialect {dialect!r} is not supported (sqlite only)")
    database = folder / str(meta.get("database") or f"{meta.get('name', folder.name)}.sqlite")
    if not database.is_file():
        raise BenchDataError(f"{meta_path}: database file {database.name} is missing")
    history_path, test_path = folder / "history.jsonl", folder / "test.jsonl"
    history = tuple(
        HistoryItem(
            id=str(_field(r, "id", history_path)),
            question=str(_field(r, "question", history_path)),
            sql=str(_field(r, "sql", history_path)),
            rating=int(_field(r, "rating", history_path)),
        )
        for r in _read_jsonl(history_path)
    )
    test = tuple(
        TestItem(
            id=str(_field(r, "id", test_path)),
            question=str(_field(r, "question", test_path)),
            sql=str(_field(r, "sql", test_path)),
            pattern_seen=bool(r.get("pattern_seen", False)),
        )
        for r in _read_jsonl(test_path)
    )
    return BenchProject(
        name=str(meta.get("name") or folder.name),
        description=meta.get("description") or None,
        dialect=dialect,
        database_path=database,
        history=history,
        test=test,
        folder=folder,
    )


def discover_projects(data_dir: Path, names: list[str] | None = None) -> list[BenchProject]:
    """Every project folder under ``data_dir`` (or ``data_dir`` itself when it is one), sorted by name.

    ``data_dir`` may be the benchmark root (with a ``projects/`` folder), the ``projects/`` folder, or one
    project folder. ``names`` keeps only those projects (by folder or project name).
    """
    data_dir = Path(data_dir)
    if (data_dir / "project.json").is_file():
        folders = [data_dir]
    else:
        root = data_dir / "projects" if (data_dir / "projects").is_dir() else data_dir
        if not root.is_dir():
            raise BenchDataError(f"{data_dir} is not a folder")
        folders = sorted(p for p in root.iterdir() if (p / "project.json").is_file())
    projects = [load_project(f) for f in folders]
    if names:
        wanted = set(names)
        projects = [p for p in projects if p.name in wanted or p.folder.name in wanted]
        found = {p.name for p in projects} | {p.folder.name for p in projects}
        missing = sorted(wanted - found)
        if missing:
            raise BenchDataError(f"no project named {', '.join(missing)} under {data_dir}")
    if not projects:
        raise BenchDataError(f"no project folder (with project.json) under {data_dir}")
    return projects
