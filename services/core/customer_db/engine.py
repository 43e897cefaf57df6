"""What every engine (SQLite, PostgreSQL, MySQL/MariaDB) offers the customer-database layer.

``run_unchecked`` runs a statement as given: it is the engine's half of the one guarded path, and only
``CustomerDatabases.run`` calls it, with text that ``check_sql`` approved (a test fails if anything else does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from services.core.customer_db.values import QueryLimits
from services.core.schema import SchemaInfo
from services.core.values import ColumnValues


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool
    seconds: float
    #: Why the result is incomplete beyond the row limit (byte limits), for the answer's text.
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RoleFinding:
    """One thing the database account may do that querylift does not need. ``refuse`` findings stop
    registration unless the operator allows a privileged role; ``warn`` findings are only shown."""

    level: Literal["refuse", "warn"]
    what: str


@dataclass
class RoleReport:
    role: str
    findings: list[RoleFinding] = field(default_factory=list)

    @property
    def privileged(self) -> bool:
        return any(f.level == "refuse" for f in self.findings)

    def lines(self) -> list[str]:
        return [f"{'too strong' if f.level == 'refuse' else 'note'}: {f.what}" for f in self.findings]


class Engine(Protocol):
    dialect: str

    async def run_unchecked(
        self, url: str, text: str, limits: QueryLimits, namespace: str | None
    ) -> QueryResult: ...

    async def discover(self, url: str, sample_values: int, timeout_s: float) -> SchemaInfo: ...

    async def ping(self, url: str, timeout_s: float) -> bool: ...

    async def column_values(self, url: str, schema: SchemaInfo, timeout_s: float) -> list[ColumnValues]: ...

    async def inspect_role(self, url: str, namespace: str | None, timeout_s: float) -> RoleReport: ...

    async def close(self) -> None: ...
