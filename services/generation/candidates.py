"""One candidate SQL from the model: checked, fixed where a fix is mechanical, and run through the guarded path.

A candidate ends in one of: refused as unsafe, invalid (with the check's message, for a repair round), failed
at the database (the engine's message), or run (its result). Before running, the literals it compares with
columns are checked against the project's indexed values: one that differs from a value only in case or
spacing, or that must equal a value and holds exactly one of the column's values among its words ('mount
mckinley' where the column stores 'mckinley'), is corrected on the spot; one that matches no value is reported,
naming the closest values, so a repair round can use it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import sqlglot

from services.core.customer_db import CustomerDatabases, QueryFailed, QueryResult, QueryTimeout
from services.core.schema import SchemaInfo
from services.core.sql import SqlCheck, check_sql
from services.core.sql.dialects import glot_dialect
from services.core.sql.mechanical import sqlite_strings_for_unknown_quoted_names
from services.core.values import LiteralProblem, ValueIndex, literal_problems, with_fixed_literals

Outcome = Literal["refused", "invalid", "failed", "ran"]


def says_nothing(result: QueryResult) -> bool:
    """No rows, or one row of zeros and NULLs (a COUNT or SUM over nothing): an adapted or composed query that
    gives this usually put a value where it does not belong, and the model does better there."""
    if not result.rows:
        return True
    return len(result.rows) == 1 and all(value is None or value == 0 for value in result.rows[0])


def one_answer(result: QueryResult) -> bool:
    """Whether the result's rows are all one answer (repeated rows count once)."""
    return len({tuple(row) for row in result.rows}) <= 1


@dataclass
class Candidate:
    sql: str
    outcome: Outcome
    message: str = ""
    check: SqlCheck | None = None
    result: QueryResult | None = None
    #: Mechanical fixes applied before it ran ("sqlite_strings", "literal_case", "literal_words").
    fixed: list[str] = field(default_factory=list)
    #: Literals compared with columns that hold no such value (for a repair round).
    value_problems: list[LiteralProblem] = field(default_factory=list)
    #: It ran into the statement time limit (outcome "failed").
    timed_out: bool = False

    @property
    def schema_valid(self) -> bool:
        return self.check is not None and self.check.ok


def checked(sql: str, schema: SchemaInfo, *, mechanical_fixes: bool) -> tuple[SqlCheck, list[str]]:
    """The check of ``sql``, or of its mechanically fixed form when only that passes."""
    check = check_sql(sql, schema)
    if check.ok or not mechanical_fixes or check.code != "unknown_column":
        return check, []
    try:
        tree = sqlglot.parse_one(sql, read=glot_dialect(schema.dialect))
    except Exception:  # unreadable: the check's own message stands
        return check, []
    fixed = sqlite_strings_for_unknown_quoted_names(tree, schema)
    if fixed is None:
        return check, []
    again = check_sql(fixed.sql(dialect=glot_dialect(schema.dialect), comments=False), schema)
    return (again, ["sqlite_strings"]) if again.ok else (check, [])


def with_values(
    check: SqlCheck,
    schema: SchemaInfo,
    values: ValueIndex | None,
    *,
    mechanical_fixes: bool,
    word_fixes: bool = True,
) -> tuple[SqlCheck, list[str], list[LiteralProblem]]:
    """Literals against the indexed values: the ones with one right value fixed (``word_fixes``: also a value
    found among the literal's words), the rest reported."""
    if values is None or check.tree is None:
        return check, [], []
    problems = literal_problems(check.tree, schema, values)
    wanted = [p for p in problems if p.fix is not None and (word_fixes or p.fix_kind == "case")]
    fixes = {p.literal: p.fix for p in wanted if p.fix is not None} if mechanical_fixes else {}
    if fixes:
        fixed_tree = with_fixed_literals(check.tree, fixes)
        again = check_sql(fixed_tree.sql(dialect=glot_dialect(schema.dialect), comments=False), schema)
        if again.ok:
            kinds = sorted({f"literal_{p.fix_kind}" for p in problems if p.literal in fixes})
            return again, kinds, [p for p in problems if p.literal not in fixes]
    return check, [], problems


async def run_candidate(
    sql: str,
    *,
    schema: SchemaInfo,
    databases: CustomerDatabases,
    database_url: str,
    values: ValueIndex | None,
    mechanical_fixes: bool,
    word_fixes: bool = True,
    timeout_s: float,
    row_limit: int,
    execute_invalid: bool = False,
    timings: dict[str, float] | None = None,
) -> Candidate:
    """Check ``sql`` (fixing it mechanically where allowed), compare its literals with the column values and run
    what was checked; ``timings`` collects the milliseconds of the check and of the execution apart."""
    started = time.perf_counter()
    check, fixed = checked(sql, schema, mechanical_fixes=mechanical_fixes)
    shown = check.sql or sql
    if check.unsafe:
        return Candidate(shown, "refused", check.message, check)
    if check.checked is None:
        return Candidate(shown, "invalid", check.message, check)
    check, value_fixes, problems = with_values(
        check, schema, values, mechanical_fixes=mechanical_fixes, word_fixes=word_fixes
    )
    assert check.checked is not None
    started = _spent(timings, "check", started)
    try:
        result = await databases.run(database_url, check.checked, timeout_s=timeout_s, row_limit=row_limit)
    except (QueryFailed, QueryTimeout) as exc:
        return Candidate(
            check.checked.text,
            "failed",
            str(exc),
            check,
            fixed=fixed + value_fixes,
            timed_out=isinstance(exc, QueryTimeout),
        )
    finally:
        _spent(timings, "execute", started)
    return Candidate(
        check.checked.text, "ran", "", check, result, fixed=fixed + value_fixes, value_problems=problems
    )


def _spent(timings: dict[str, float] | None, stage: str, started: float) -> float:
    now = time.perf_counter()
    if timings is not None:
        timings[stage] = timings.get(stage, 0.0) + (now - started) * 1000.0
    return now


__all__ = ["Candidate", "checked", "run_candidate", "with_values"]
