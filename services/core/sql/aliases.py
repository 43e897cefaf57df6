"""Example SQL for the prompt without the table aliases it does not need, or with short ones.

Projects whose history was written by tools or by habit alias every table (``FROM CITY AS CITYalias0``) and
qualify every column with the alias. A small model copies that style token for token: each alias reference
costs about four prompt tokens in every example shown and as many decoded ones in the answer. Where an alias
names the only source of its SELECT, no column needs qualifying; where it names one of several, the table's own
name qualifies just as well. An alias that another SELECT refers to (a correlated subquery) is what tells the
two scopes apart, and stays, as does any alias of a table that appears twice in one SELECT.

Dropping aliases changes the query's look, which the model also copies. Renumbering keeps every alias where it
is and only shortens its name (``CITYalias0`` -> ``CITY0`` or ``C0``): one to two tokens less per mention.

The query means the same before and after (the tests run both); anything that cannot be parsed or resolved
is returned as it was.
"""

from __future__ import annotations

import logging
from typing import Literal

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import Scope, traverse_scope
from sqlglot.tokens import TokenType

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


#: How ``renumber_table_aliases`` names an alias: the table's name and a number (``CITY0``), or the table's
#: first letter and a number (``C0``).
AliasStyle = Literal["table_number", "initial_number"]


def _new_aliases(aliased: list[exp.Table], style: AliasStyle) -> list[str]:
    counts: dict[str, int] = {}
    names = []
    for table in aliased:
        stem = table.name if style == "table_number" else table.name[:1]
        count = counts.get(stem.lower(), 0)
        names.append(f"{stem}{count}")
        counts[stem.lower()] = count + 1
    return names


def renumber_table_aliases(sql: str, dialect: str, style: AliasStyle = "table_number") -> str:
    """``sql`` with every table alias renamed to a short one of ``style`` (``FROM CITY AS CITYalias0`` becomes
    ``FROM CITY AS CITY0``): the names are replaced where they stand and nothing else of the text changes, so
    the query keeps its shape and its writer's layout.

    Returned as it was when it cannot be read, has no aliases, defines an alias twice (scopes would need
    telling apart), names a table or column like an alias, or a new name would clash with a name already there.
    """
    try:
        glot = glot_dialect(dialect)
        tree = sqlglot.parse_one(sql, read=glot)
        tokens = Dialect.get_or_raise(glot).tokenize(sql)
    except (SqlglotError, ValueError, KeyError) as exc:
        log.debug("example sql kept as written: %s", type(exc).__name__)
        return sql
    aliased = [t for t in tree.find_all(exp.Table) if t.alias]
    old = [t.alias.lower() for t in aliased]
    if not aliased or len(set(old)) != len(old):
        return sql
    renamed = dict(zip(old, _new_aliases(aliased, style), strict=True))
    names = {t.name.lower() for t in tree.find_all(exp.Table)} | {
        c.name.lower() for c in tree.find_all(exp.Column)
    }
    if names & set(old) or names & {n.lower() for n in renamed.values()}:
        return sql
    if all(len(new) >= len(o) for o, new in renamed.items()):
        return sql
    out, at = [], 0
    for token in tokens:
        new = renamed.get(token.text.lower())
        if new is None or token.token_type not in (TokenType.VAR, TokenType.IDENTIFIER):
            continue
        # A quoted name's token covers its quotes; the name sits between them.
        start = token.end + 1 - len(token.text) - (1 if token.token_type == TokenType.IDENTIFIER else 0)
        out += [sql[at:start], new]
        at = start + len(token.text)
    written = "".join(out) + sql[at:]
    try:  # the names are where the parse put them (an escaped quote inside a name would move them)
        check = sqlglot.parse_one(written, read=glot)
    except SqlglotError:
        return sql
    return (
        written
        if sorted(t.alias for t in check.find_all(exp.Table) if t.alias) == sorted(renamed.values())
        else sql
    )
