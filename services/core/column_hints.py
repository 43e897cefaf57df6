"""Schema linking: the measure columns a question names by their own words.

A small model often reads a measure word as another column of a table it already chose ("the population
densities of each state" → ``population``). Where a question's words are the name of a numeric column ("densities"
for ``density``, "length" for ``length``) and only one table has a column of that name, the prompt says so next
to the question: "'densities' is state.density". A name several tables share ("population" in ``city`` and
``state``) is left to the model, like a value found in many columns: naming every holder only invites joins.
Text columns are not hinted: value hints already name the columns a question's values are in, and told that
"highest point" is a text column, the 0.5B model sorted by it (measured: bench/README.md, "Column hints").
Identifier-like names ("id", "name", a table's own name) say nothing about which attribute is asked.
"""

from __future__ import annotations

import re
from collections import defaultdict

from services.core.schema import SchemaInfo
from services.core.words import singular as _stem

#: Hints per question, most words first.
MAX_COLUMN_HINTS = 3
_WORD = re.compile(r"[a-z0-9]+")
#: First words of the SQL types of numbers, across SQLite, PostgreSQL and MySQL.
_NUMERIC = frozenset(
    """int integer tinyint smallint mediumint bigint int2 int4 int8 real float float4 float8 double numeric
    decimal number money""".split()
)
#: Column-name words that say which row, not which attribute.
_IDENTIFYING = frozenset({"id", "key", "name", "code", "no", "num", "uuid", "pk", "fk"})


def _words(text: str) -> list[str]:
    # Name parts: snake_case, camelCase and spaces all split into lower-case words.
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    return _WORD.findall(spaced.lower().replace("_", " "))


def _numeric(sql_type: str) -> bool:
    words = sql_type.lower().replace("(", " ").split()
    return bool(words) and words[0] in _NUMERIC


def column_hints(question: str, schema: SchemaInfo, *, named_table: bool = False) -> list[str]:
    """Prompt lines naming the one column each attribute word of ``question`` stands for.

    With ``named_table``, a name several tables share is resolved by the one of them the question names ("the
    city with the largest population" -> city.population); such a hint is left out next to a word that has a
    hint of its own ("population density" is the density). Only the column's own word counts: "populous" could
    as well be "popular"."""
    holders: dict[tuple[str, ...], list[str]] = defaultdict(list)
    table_names = {tuple(_stem(w) for w in _words(t.name)) for t in schema.tables}
    for table in schema.tables:
        for column in table.columns:
            key = tuple(_stem(w) for w in _words(column.name))
            if not key or set(key) & _IDENTIFYING or key in table_names or not _numeric(column.type):
                continue
            holders[key].append(f"{table.name}.{column.name}")
    words = _words(question)
    stems = [_stem(w) for w in words]
    named = {t.name for t in schema.tables if _words(t.name) and _stem(_words(t.name)[-1]) in stems}
    found: list[tuple[int, int, str]] = []
    shared: list[tuple[int, int, str]] = []
    for key, columns in holders.items():
        if len(columns) != 1:
            if not named_table:
                continue
            columns = [c for c in columns if c.split(".", 1)[0] in named]
            if len(columns) != 1:
                continue
        size = len(key)
        for start in range(len(stems) - size + 1):
            if tuple(stems[start : start + size]) == key:
                (found if len(holders[key]) == 1 else shared).append((start, start + size, columns[0]))
                break
    own = {i for start, end, _ in found for i in range(start, end)}
    found += [f for f in shared if f[0] - 1 not in own and f[1] not in own]
    found.sort(key=lambda f: (-(f[1] - f[0]), f[0]))
    out: list[str] = []
    taken: list[tuple[int, int]] = []
    for start, end, holder in found:
        if any(start < e and s < end for s, e in taken):
            continue
        taken.append((start, end))
        out.append(f"'{' '.join(words[start:end])}' is {holder}")
        if len(out) >= MAX_COLUMN_HINTS:
            break
    return out


__all__ = ["MAX_COLUMN_HINTS", "column_hints"]
