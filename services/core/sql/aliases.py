"""Example SQL without the table aliases it does not need, for the prompt.

Projects whose history was written by tools or by habit alias every table (``FROM CITY AS CITYalias0``) and
qualify every column with the alias. A small model copies that style token for token: each alias reference
costs about four prompt tokens in every example shown and as many decoded ones in the answer. Where an alias
names the only source of its SELECT, no column needs qualifying; where it names one of several, the table's own
name qualifies just as well. An alias that another SELECT refers to (a correlated subquery) is what tells the
two scopes apart, and stays, as does any alias of a table that appears twice in one SELECT.

The query means the same before and after (the tests run both); anything that cannot be parsed or resolved
is returned as it was.
"""

from __future__ import annotations

import logging

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import Scope, traverse_scope

from services.core.sql.dialects import glot_dialect

log = logging.getLogger(__name__)


def _borrowed_qualifiers(scopes: list[Scope]) -> set[str]:
    """Qualifiers a SELECT's columns use that the SELECT itself does not define (an outer scope's aliases)."""
    return {c.table for scope in scopes for c in scope.columns if c.table and c.table not in scope.sources}


def _shorten_scope(scope: Scope, borrowed: set[str]) -> None:
    tables = {alias: src for alias, src in scope.sources.items() if isinstance(src, exp.Table)}
    names = [t.name.lower() for t in tables.values()]
    renamed: dict[str, str] = {}
    for alias, table in tables.items():
        if not table.alias or alias in borrowed or names.count(table.name.lower()) > 1:
            continue
        if any(other.lower() == table.name.lower() for other in scope.sources if other != alias):
            continue  # another source of this SELECT is already called by the table's name
        renamed[alias] = table.name
    if not renamed:
        return
    only_source = len(scope.sources) == 1
    for column in scope.columns:
        if column.table in renamed:
            if only_source:
                column.set("table", None)
            else:
                column.set("table", exp.to_identifier(renamed[column.table]))
    for alias in renamed:
        tables[alias].set("alias", None)


def drop_table_aliases(sql: str, dialect: str) -> str:
    """``sql`` with unneeded table aliases removed (see the module's note); ``sql`` itself when nothing changes
    or it cannot be read."""
    try:
        glot = glot_dialect(dialect)
        tree = sqlglot.parse_one(sql, read=glot)
        scopes = traverse_scope(tree)
    except (SqlglotError, ValueError, KeyError) as exc:
        log.debug("example sql kept as written: %s", type(exc).__name__)
        return sql
    if not any(isinstance(t.args.get("alias"), exp.TableAlias) for t in tree.find_all(exp.Table)):
        return sql
    borrowed = _borrowed_qualifiers(scopes)
    for scope in scopes:
        _shorten_scope(scope, borrowed)
    return tree.sql(dialect=glot)
