"""A customer database's schema as querylift sees it: tables, columns, keys and a few sample values.

Stored as JSON in ``schema_versions``; its content hash identifies the version, so a changed database yields a
new version and examples that reference dropped names can be marked stale.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")

Dialect = Literal["sqlite", "postgres", "mysql"]

#: sqlglot's name for each dialect querylift supports.
SQLGLOT_DIALECT: dict[str, str] = {"sqlite": "sqlite", "postgres": "postgres", "mysql": "mysql"}


@dataclass
class Column:
    name: str
    type: str
    primary_key: bool = False
    nullable: bool = True
    samples: list[Any] = field(default_factory=list)


@dataclass
class ForeignKey:
    column: str
    ref_table: str
    ref_column: str


@dataclass
class Table:
    name: str
    columns: list[Column]
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    row_count: int | None = None

    def column(self, name: str) -> Column | None:
        lowered = name.lower()
        return next((c for c in self.columns if c.name.lower() == lowered), None)


@dataclass
class SchemaInfo:
    dialect: Dialect
    tables: list[Table]
    #: The project's own schema (PostgreSQL) or database (MySQL/MariaDB) as registered; the only qualifier
    #: generated SQL may use, and PostgreSQL's search path when it runs. None for SQLite (and for versions
    #: stored before it was recorded: then no qualifier is accepted).
    namespace: str | None = None

    def table(self, name: str) -> Table | None:
        lowered = name.lower()
        return next((t for t in self.tables if t.name.lower() == lowered), None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SchemaInfo:
        tables = [
            Table(
                name=t["name"],
                columns=[Column(**c) for c in t["columns"]],
                foreign_keys=[ForeignKey(**fk) for fk in t.get("foreign_keys", [])],
                row_count=t.get("row_count"),
            )
            for t in data["tables"]
        ]
        return cls(dialect=data["dialect"], tables=tables, namespace=data.get("namespace"))

    def structure_hash(self) -> str:
        """Hash of names, types and keys only: sample values changing is not a new schema version."""
        shape = [
            [
                t.name,
                [[c.name, c.type, c.primary_key] for c in t.columns],
                [asdict(fk) for fk in t.foreign_keys],
            ]
            for t in sorted(self.tables, key=lambda t: t.name.lower())
        ]
        # The namespace counts only when known, so versions stored before it was recorded keep their hash.
        key: list[Any] = [self.dialect, shape] + ([self.namespace] if self.namespace else [])
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def names(self) -> tuple[set[str], set[tuple[str, str]]]:
        """Lower-cased table names and (table, column) pairs, for reference checks."""
        tables = {t.name.lower() for t in self.tables}
        columns = {(t.name.lower(), c.name.lower()) for t in self.tables for c in t.columns}
        return tables, columns


_DERIVED: dict[tuple[int, str], tuple[weakref.ref[Any], Any]] = {}
_DERIVED_MAX = 4096


def derived(owner: SchemaInfo | Table, what: str, build: Callable[[], T]) -> T:
    """What ``build`` makes from a schema or one of its tables (compiled patterns, rendered text), made once
    per object. Loaded schemas are cached per version and never changed afterwards, so their derived forms
    can be too; the weak reference makes a recycled ``id()`` a miss, never a wrong hit."""
    key = (id(owner), what)
    entry = _DERIVED.get(key)
    if entry is not None and entry[0]() is owner:
        value: T = entry[1]
        return value
    value = build()
    if len(_DERIVED) >= _DERIVED_MAX:
        _DERIVED.clear()
    _DERIVED[key] = (weakref.ref(owner), value)
    return value
