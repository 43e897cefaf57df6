"""Running one statement on a SQLite file, read-only and within limits: the part of the SQLite engine that runs
inside its worker processes (see ``sqlite_workers``), and the schema discovery that runs in this process.

A statement runs on a connection opened read-only (``file:...?mode=ro``) with ``PRAGMA query_only``, no
attachable databases, an authorizer that allows reads and the allowlisted functions only, a length limit of
``max_value_bytes`` on every string, blob and row, a LIKE/GLOB pattern limit, and a deadline thread that
interrupts it (``sqlite3_interrupt`` is checked at every loop step of the VM). Rows are fetched under the
result's byte budget.
"""

from __future__ import annotations

import heapq
import itertools
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from services.core.customer_db.engine import QueryResult
from services.core.customer_db.errors import DatabaseUnavailable, QueryFailed, QueryTimeout
from services.core.customer_db.urls import sqlite_path
from services.core.customer_db.values import (
    VALUE_SCAN_ROWS,
    QueryLimits,
    ResultBudget,
    is_binary,
    is_textual,
    samples,
)
from services.core.schema import Column, ForeignKey, SchemaInfo, Table
from services.core.values import MAX_VALUE_CHARS, MAX_VALUES_PER_COLUMN, MAX_VALUES_PER_PROJECT, ColumnValues

#: Rows scanned per column to find distinct samples, so discovery stays fast on large tables.
SAMPLE_SCAN_ROWS = 1000
#: Longest LIKE/GLOB pattern (SQLite's default is 50,000; patterns this long only serve to burn CPU).
LIKE_PATTERN_MAX = 1000

_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
if hasattr(sqlite3, "SQLITE_RECURSIVE"):
    _ALLOWED_ACTIONS.add(sqlite3.SQLITE_RECURSIVE)
Authorizer = Callable[[int, str | None, str | None, str | None, str | None], int]


def _authorizer(allowed_functions: frozenset[str]) -> Authorizer:
    def authorize(
        action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None
    ) -> int:
        if action not in _ALLOWED_ACTIONS:
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() not in allowed_functions:
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    return authorize


# --- deadlines ----------------------------------------------------------------------------------------------


@dataclass(order=True)
class _Deadline:
    at: float
    seq: int
    conn: sqlite3.Connection = field(compare=False)
    fired: bool = field(default=False, compare=False)
    cancelled: bool = field(default=False, compare=False)


class _Interrupter:
    """One daemon thread that interrupts connections whose deadline has passed. The statement's own thread
    may be the event loop's, blocked in sqlite3_step with the GIL released, so this thread can always run."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[_Deadline] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, conn: sqlite3.Connection, seconds: float) -> _Deadline:
        deadline = _Deadline(time.monotonic() + seconds, next(self._seq), conn)
        with self._cond:
            heapq.heappush(self._heap, deadline)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sqlite-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()
        return deadline

    def disarm(self, deadline: _Deadline) -> None:
        with self._cond:
            deadline.cancelled = True

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0].cancelled:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0].at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                due = heapq.heappop(self._heap)
                due.fired = True
                due.conn.interrupt()  # harmless once the statement is done: SQLite clears it at the next start


_INTERRUPTER = _Interrupter()


# --- connections --------------------------------------------------------------------------------------------


def connect(url: str, timeout_s: float) -> sqlite3.Connection:
    path = sqlite_path(url)
    if not path.is_file():
        raise DatabaseUnavailable(f"SQLite database file {path} does not exist (or is not a file)")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout_s, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # fails here if it is not a database
    except sqlite3.DatabaseError as error:
        raise DatabaseUnavailable(f"cannot open SQLite database {path}: {error}") from None
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, LIKE_PATTERN_MAX)
    return conn


_Identity = tuple[str, int, int, int, int]


class _Idle:
    """Idle read-only connections per database file, keyed by the file's identity (device, inode, size,
    mtime), so a replaced or rewritten file is opened afresh. Opening one costs more than most queries."""

    MAX_PER_FILE = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[_Identity, list[sqlite3.Connection]] = {}

    @staticmethod
    def identity(url: str) -> _Identity | None:
        try:
            info = sqlite_path(url).stat()
        except OSError:
            return None
        return (url, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)

    def checkout(self, url: str, timeout_s: float) -> tuple[sqlite3.Connection, _Identity | None]:
        identity = self.identity(url)
        if identity is not None:
            with self._lock:
                idle = self._idle.get(identity)
                if idle:
                    return idle.pop(), identity
        return connect(url, timeout_s), identity

    def checkin(self, conn: sqlite3.Connection, identity: _Identity | None) -> None:
        if identity is not None and not conn.in_transaction:
            with self._lock:
                stale = [key for key in self._idle if key[0] == identity[0] and key != identity]
                for key in stale:
                    for old in self._idle.pop(key):
                        old.close()
                idle = self._idle.setdefault(identity, [])
                if len(idle) < self.MAX_PER_FILE:
                    idle.append(conn)
                    return
        conn.close()

    def close(self) -> None:
        with self._lock:
            pools, self._idle = list(self._idle.values()), {}
        for idle in pools:
            for conn in idle:
                conn.close()


_IDLE = _Idle()


def _too_big(error: BaseException) -> bool:
    return "too big" in str(error).lower()


def run_statement(url: str, text: str, limits: QueryLimits, allowed_functions: frozenset[str]) -> QueryResult:
    """Run one statement read-only under the limits, calling only ``allowed_functions``."""
    conn, identity = _IDLE.checkout(url, limits.timeout_s)
    seconds = limits.timeout_s
    deadline: _Deadline | None = None
    try:
        conn.set_authorizer(None)  # a pooled connection keeps its last authorizer and busy timeout
        conn.execute(f"PRAGMA busy_timeout = {max(1, int(seconds * 1000))}")
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.max_value_bytes)
        conn.set_authorizer(_authorizer(allowed_functions))
        budget = ResultBudget(limits)
        started = time.monotonic()
        deadline = _INTERRUPTER.arm(conn, seconds)
        try:
            cursor = conn.execute(text)
            size = budget.batch(len(cursor.description or ()))
            while True:
                batch = cursor.fetchmany(size)
                if not batch or not all(budget.add(row) for row in batch):
                    break
        except (sqlite3.DatabaseError, sqlite3.Warning, ValueError) as error:
            if deadline.fired:
                raise QueryTimeout(f"query exceeded the {seconds:g} s time limit") from None
            if _too_big(error):
                raise QueryFailed(
                    f"a value or row is larger than the {limits.max_value_bytes}-byte limit "
                    "(QUERYLIFT_SQL_MAX_VALUE_BYTES); select fewer or shorter values"
                ) from None
            raise QueryFailed(str(error)) from None
        finally:
            _INTERRUPTER.disarm(deadline)
        columns = [d[0] for d in cursor.description or []]
        cursor.close()  # an unfinished statement would hold the file's read lock while pooled
        return QueryResult(
            columns=columns,
            rows=budget.rows,
            truncated=budget.truncated,
            seconds=time.monotonic() - started,
            notes=budget.notes,
        )
    finally:
        conn.set_authorizer(None)
        _IDLE.checkin(conn, identity)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def discover(url: str, sample_values: int, timeout_s: float) -> SchemaInfo:
    conn = connect(url, timeout_s)
    deadline = _INTERRUPTER.arm(conn, max(timeout_s, 1.0) * 10)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name"
            )
        ]
        tables: list[Table] = []
        for name in names:
            quoted = _quote(name)
            info = conn.execute(f"PRAGMA table_info({quoted})").fetchall()
            columns = [
                Column(
                    name=r[1],
                    type=(r[2] or "").upper(),
                    primary_key=bool(r[5]),
                    nullable=not r[3] and not r[5],
                )
                for r in info
            ]
            fks = []
            for r in conn.execute(f"PRAGMA foreign_key_list({quoted})").fetchall():
                ref_column = r[4]
                if ref_column is None:  # references the parent's primary key
                    parent = conn.execute(f"PRAGMA table_info({_quote(r[2])})").fetchall()
                    parent_pk = [p[1] for p in sorted((p for p in parent if p[5]), key=lambda p: p[5])]
                    ref_column = parent_pk[r[1]] if r[1] < len(parent_pk) else (parent_pk or ["rowid"])[0]
                fks.append(ForeignKey(column=r[3], ref_table=r[2], ref_column=ref_column))
            row_count = conn.execute(f"SELECT COUNT(*) FROM {quoted}").fetchone()[0]
            if sample_values > 0:
                for column in columns:
                    if is_binary(column.type):
                        continue
                    col = _quote(column.name)
                    rows = conn.execute(
                        f"SELECT DISTINCT {col} FROM (SELECT {col} FROM {quoted} WHERE {col} IS NOT NULL "
                        f"LIMIT {SAMPLE_SCAN_ROWS}) LIMIT {sample_values * 3}"
                    ).fetchall()
                    column.samples = samples([r[0] for r in rows], sample_values)
            tables.append(Table(name=name, columns=columns, foreign_keys=fks, row_count=row_count))
        return SchemaInfo(dialect="sqlite", tables=tables)
    except sqlite3.DatabaseError as error:
        raise DatabaseUnavailable(
            f"cannot read the schema of SQLite database {sqlite_path(url)}: {error}"
        ) from None
    finally:
        _INTERRUPTER.disarm(deadline)
        conn.close()


def column_values(url: str, schema: SchemaInfo, timeout_s: float) -> list[ColumnValues]:
    """The most frequent distinct short text values of each text column (see services.core.values)."""
    conn = connect(url, timeout_s)
    out: list[ColumnValues] = []
    total = 0
    try:
        for table in schema.tables:
            for column in table.columns:
                if total >= MAX_VALUES_PER_PROJECT:
                    return out
                if not is_textual(column.type):
                    continue
                col, quoted = _quote(column.name), _quote(table.name)
                sql = (
                    f"SELECT v FROM (SELECT {col} AS v FROM {quoted} WHERE typeof({col}) = 'text' "
                    f"LIMIT {VALUE_SCAN_ROWS}) s WHERE length(v) BETWEEN 1 AND {MAX_VALUE_CHARS} "
                    f"GROUP BY v ORDER BY COUNT(*) DESC, v LIMIT {MAX_VALUES_PER_COLUMN + 1}"
                )
                deadline = _INTERRUPTER.arm(conn, timeout_s)
                try:
                    values = [r[0] for r in conn.execute(sql).fetchall()]
                except sqlite3.DatabaseError:
                    continue  # too slow or unreadable: this column is simply not indexed
                finally:
                    _INTERRUPTER.disarm(deadline)
                if values:
                    out.append(_column_values(table.name, column.name, values, table.row_count))
                    total += len(values)
        return out
    finally:
        conn.close()


def _column_values(table: str, column: str, values: list[str], row_count: int | None) -> ColumnValues:
    complete = len(values) <= MAX_VALUES_PER_COLUMN and (row_count or 0) <= VALUE_SCAN_ROWS
    return ColumnValues(table, column, tuple(values[:MAX_VALUES_PER_COLUMN]), complete)


def close_idle() -> None:
    """Close every pooled SQLite connection of this process."""
    _IDLE.close()
