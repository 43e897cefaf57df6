"""Fixes with exactly one right answer, made without asking the model again.

SQLite reads a double-quoted word that names no column as a string ("texas" in ``WHERE state = "texas"``);
querylift's check, stricter, refuses it as an unknown column. A model that learned the style from examples
would spend a repair round on it, so such a word, standing where a value is compared with a column, becomes the
single-quoted string SQLite itself reads; verified examples are stored in that canonical form too, so the
style is never taught. (Literals that differ from a database value only in case or spacing are fixed with
the value index: ``services.core.values.literal_problems``.)
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from services.core.schema import SchemaInfo
from services.core.sql.dialects import glot_dialect

_COMPARISONS = (exp.EQ, exp.NEQ, exp.Like, exp.ILike, exp.GT, exp.GTE, exp.LT, exp.LTE)


def _known_names(tree: exp.Expr, schema: SchemaInfo) -> set[str]:
    names = {c.name.lower() for t in schema.tables for c in t.columns}
    names |= {a.alias.lower() for a in tree.find_all(exp.Alias) if a.alias}
    names |= {c.alias.lower() for c in tree.find_all(exp.CTE) if c.alias}
    for table in tree.find_all(exp.Table):
        names.update(n.lower() for n in table.alias_column_names)
    return names


def _is_word_value(node: exp.Expr, known: set[str]) -> bool:
    if not isinstance(node, exp.Column) or node.table:
        return False
    ident = node.this
    return isinstance(ident, exp.Identifier) and ident.quoted and ident.name.lower() not in known


def sqlite_strings_for_unknown_quoted_names(tree: exp.Expr, schema: SchemaInfo) -> exp.Expr | None:
    """The query with double-quoted non-names compared with a column turned into strings; None when there
    is nothing to fix (or not SQLite)."""
    if schema.dialect != "sqlite":
        return None
    known = _known_names(tree, schema)
    copy = tree.copy()
    changed = False
    for node in list(copy.walk()):
        if isinstance(node, _COMPARISONS):
            sides = (node.this, node.expression)
            if isinstance(sides[0], exp.Column) and _is_word_value(sides[1], known):
                sides[1].replace(exp.Literal.string(sides[1].name))
                changed = True
            elif isinstance(sides[1], exp.Column) and _is_word_value(sides[0], known):
                sides[0].replace(exp.Literal.string(sides[0].name))
                changed = True
        elif isinstance(node, exp.In):
            for item in list(node.expressions):
                if _is_word_value(item, known):
                    item.replace(exp.Literal.string(item.name))
                    changed = True
    return copy if changed else None


def canonical_example_sql(sql: str, schema: SchemaInfo) -> str:
    """How a verified example is stored: its dialect's canonical form, SQLite strings single-quoted."""
    try:
        tree = sqlglot.parse_one(sql, read=glot_dialect(schema.dialect))
    except Exception:  # unreadable SQL is stored as given; the check refuses it where it matters
        return sql
    fixed = sqlite_strings_for_unknown_quoted_names(tree, schema)
    if fixed is None:
        return sql
    return fixed.sql(dialect=glot_dialect(schema.dialect), comments=False)
