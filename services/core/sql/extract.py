"""The SQL in a model's reply: inside a code fence if there is one, after leading prose or an 'SQL:' label,
before any trailing explanation. What it returns is only a candidate; ``check`` decides whether it may run."""

from __future__ import annotations

import re

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.S)
_LABEL = re.compile(r"^\s*(?:sql(?:\s+query)?|query|answer)\s*:\s*", re.I)
_INLINE_START = re.compile(
    r"\bSELECT\b|\bWITH\s+(?:RECURSIVE\s+)?[\w\"`\[\]]+\s*(?:\([^()]*\)\s*)?AS\s*(?:NOT\s+)?(?:MATERIALIZED\s+)?\(",
    re.I,
)
_STATEMENT_WORDS = (
    "SELECT|WITH|INSERT|UPDATE|DELETE|MERGE|CREATE|DROP|ALTER|TRUNCATE|GRANT|REVOKE|REPLACE|PRAGMA|ATTACH|"
    "DETACH|COPY|CALL|EXEC|EXECUTE|LOAD|LOCK|UNLOCK|VACUUM|SET|VALUES|EXPLAIN|SHOW|DESCRIBE|HANDLER|DO|"
    "PREPARE|BEGIN|START|COMMIT|ROLLBACK|USE|TABLE|UPSERT|RENAME|KILL|SHUTDOWN"
)
_LINE_START = re.compile(rf"^[ \t]*(?:{_STATEMENT_WORDS})\b", re.I | re.M)
_NEXT_STATEMENT = re.compile(rf"^\s*(?:{_STATEMENT_WORDS})\b", re.I)
_PROSE_LINE = re.compile(
    r"^(?:(?:explanation|note|notes|this|these|the|here|it|that|output|result|results|answer|assuming)\b"
    r"|[A-Z][a-z]+\s+[a-z]+\s+[a-z]+)",
    re.I,
)
_SQL_LINE_WORDS = frozenset(
    "SELECT FROM WHERE GROUP ORDER HAVING LIMIT OFFSET JOIN INNER LEFT RIGHT FULL CROSS OUTER NATURAL ON AND OR "
    "NOT UNION INTERSECT EXCEPT WITH AS CASE WHEN THEN ELSE END IN IS BETWEEN LIKE EXISTS WINDOW PARTITION OVER "
    "FETCH DISTINCT USING QUALIFY ALL ANY VALUES ASC DESC NULLS".split()
)


def _looks_like_prose(line: str) -> bool:
    stripped = line.strip()
    if not stripped or line[:1].isspace():
        return False
    first = re.split(r"[\s(,]", stripped, maxsplit=1)[0].upper()
    if first in _SQL_LINE_WORDS:
        return False
    return bool(_PROSE_LINE.match(stripped))


def _statement_end(text: str) -> int:
    """Index where the SQL ends: a semicolon followed by prose, a fence, or a paragraph of explanation."""
    quote: str | None = None
    i = 0
    line_start = True
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch == "-" and text.startswith("--", i):
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline
            continue
        elif ch == ";":
            rest = text[i + 1 :]
            if not _NEXT_STATEMENT.match(rest):
                return i
        elif line_start and i > 0:
            line_end = text.find("\n", i)
            line = text[i : len(text) if line_end < 0 else line_end]
            if line.lstrip().startswith("```") or _looks_like_prose(line):
                return i
        line_start = ch == "\n"
        i += 1
    return len(text)


def extract_sql(text: str) -> str:
    """The SQL in a model's reply: inside a code fence if there is one, after leading prose or an 'SQL:' label,
    before any trailing explanation, without trailing semicolons. '' when there is none.

    A second statement after the first is kept (so the check can reject it) unless what follows the semicolon
    is prose.
    """
    if not text or not text.strip():
        return ""
    candidate = text
    fences = [m.group(2) for m in _FENCE.finditer(text)]
    if fences:
        sql_fences = [f for f in fences if _INLINE_START.search(f) or _LINE_START.search(f)]
        candidate = sql_fences[0] if sql_fences else fences[0]
    candidate = _LABEL.sub("", candidate, count=1)
    starts = [m.start() for m in (_INLINE_START.search(candidate), _LINE_START.search(candidate)) if m]
    if not starts:
        return ""
    body = candidate[min(starts) :]
    body = body[: _statement_end(body)]
    return body.strip().rstrip(";").strip()
