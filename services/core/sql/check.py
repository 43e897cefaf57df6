"""The static check on generated SQL: exactly one read-only query over the project's own tables, calling only
allowlisted functions, and, what makes the check mean something, **the statement that runs is the one that
was checked**.

Generated SQL is untrusted: a model can be prompted (or simply be wrong) into writing statements that change
data, read files, sleep, or look at other databases. ``check_sql`` explains every rejection in words a model
can use to repair its SQL.

What runs. sqlglot parses the text, and the statement that runs is sqlglot's regeneration of that tree
without comments (a comment or executable comment the engine reads differently from sqlglot cannot survive).
Regeneration is itself a place where meaning can change: a quoted identifier used as a date unit or a type
name, for example, comes back unquoted, and text that was inside quotes becomes SQL. So the regenerated text
is parsed again, and the check is made on *that* tree, the tree of exactly the text that will run; when it is
not the same tree as the original (node for node, every name and literal equal), the statement is refused
unless the two differ only in spelling (same nodes, one more regeneration reaches a fixed point). Optimizer
hints and executable comments are refused outright. ``CheckedSql`` carries the approved text, and only this
module makes one: the customer-database layer runs nothing else (``services.core.customer_db``).

The other layers (read-only transaction, timeouts, size limits, a read-only role checked at registration) are
described in the README's safety section; this check holds on its own, even when the role is too strong.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from typing import Literal

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError
from sqlglot.optimizer.scope import Scope, ScopeType, find_all_in_scope, traverse_scope
from sqlglot.tokens import Token, TokenType

from services.core.schema import SchemaInfo, Table
from services.core.sql import functions
from services.core.sql.dialects import glot_dialect

CheckCode = Literal[
    "ok",
    "empty",
    "parse_error",
    "multiple_statements",
    "not_read_only",
    "forbidden",
    "unknown_table",
    "unknown_column",
]

#: Codes that mean the statement is unsafe: it is refused, never repaired into running.
UNSAFE_CODES: frozenset[str] = frozenset({"not_read_only", "forbidden", "multiple_statements"})

_TOKEN = object()


@dataclass(frozen=True)
class CheckedSql:
    """A statement ``check_sql`` approved: ``text`` is exactly what may run, on a database of ``dialect``
    whose own schema (PostgreSQL) or database (MySQL) is ``namespace``. Only this module makes them."""

    text: str
    dialect: str
    namespace: str | None
    tables: frozenset[str]
    _token: object = field(repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self._token is not _TOKEN:
            raise TypeError("CheckedSql is made by check_sql only; check the SQL instead of wrapping it")


@dataclass
class SqlCheck:
    ok: bool
    code: CheckCode
    message: str
    tables: set[str] = field(default_factory=set)
    columns: set[str] = field(default_factory=set)
    #: The statement as it would run (normalised), also for a rejected one when it parsed: shown to the model
    #: in a repair round and recorded with errors.
    sql: str = ""
    #: The approved statement; None unless ok.
    checked: CheckedSql | None = None
    #: The tree the check inspected: sqlglot's reading of exactly ``checked.text`` (for tests and audits).
    tree: exp.Expr | None = field(default=None, repr=False, compare=False)

    @property
    def unsafe(self) -> bool:
        return self.code in UNSAFE_CODES


# --- what is not allowed -----------------------------------------------------------------------------------

#: Schemas/databases that hold server metadata, users or other customers' data.
SYSTEM_SCHEMAS: frozenset[str] = frozenset(
    {"information_schema", "pg_catalog", "pg_toast", "mysql", "performance_schema", "sys", "temp", "pg_temp"}
)

#: Table-name prefixes that always mean a system table (PostgreSQL searches pg_catalog before the user's schema,
#: so an unqualified pg_* name reaches the catalog even when the project has a table of that name).
SYSTEM_TABLE_PREFIXES: dict[str, tuple[str, ...]] = {
    "sqlite": ("sqlite_", "pragma_"),
    "postgres": ("pg_",),
    "mysql": (),
}

#: Hidden columns every table has.
IMPLICIT_COLUMNS: dict[str, frozenset[str]] = {
    "sqlite": frozenset({"rowid", "oid", "_rowid_"}),
    "postgres": frozenset(),
    "mysql": frozenset(),
}

#: Statement types that write, change the session, or are not queries; found anywhere in the tree.
_WRITING_NODES: tuple[type[exp.Expr], ...] = (
    exp.DML,
    exp.DDL,
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.TruncateTable,
    exp.Copy,
    exp.Command,
    exp.Set,
    exp.Pragma,
    exp.Grant,
    exp.Attach,
    exp.Detach,
    exp.Use,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Analyze,
    exp.Comment,
    exp.Into,
    exp.Lock,
)

_QUERY_STARTS = {TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN}
#: Words that keyword-like arguments (date units, character sets, type names) are made of. Anything else there
#: came from quoted text and is regenerated unquoted: the classic carrier for smuggled SQL.
_PLAIN_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(?: [A-Za-z_][A-Za-z0-9_$]*)*$")

_SEVERITY: dict[str, int] = {
    "forbidden": 0,
    "not_read_only": 1,
    "unknown_table": 2,
    "unknown_column": 3,
}


class _Reject(Exception):
    def __init__(self, code: CheckCode, message: str) -> None:
        super().__init__(message)
        self.code: CheckCode = code
        self.message = message


# --- the check ----------------------------------------------------------------------------------------------


def _split_statements(tokens: list[Token]) -> list[list[Token]]:
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    return [s for s in statements if s]


def _lexical_checks(tokens: list[Token]) -> None:
    """Checks that need no syntax tree (and so also cover statements sqlglot cannot parse)."""
    first = tokens[0]
    if first.token_type not in _QUERY_STARTS:
        raise _Reject(
            "not_read_only",
            f"only a single read-only SELECT query is allowed, not {first.text.upper()} statements",
        )
    for i, token in enumerate(tokens):
        if token.token_type == TokenType.HINT:
            raise _Reject("forbidden", "optimizer hints (/*+ ... */) are not allowed")
        for comment in token.comments:
            if comment.lstrip().startswith(("+", "!")):
                raise _Reject(
                    "forbidden", "optimizer hints and executable comments (/*+ */, /*! */) are not allowed"
                )
        if token.token_type == TokenType.INTO:
            target = tokens[i + 1].text.upper() if i + 1 < len(tokens) else ""
            if target in ("OUTFILE", "DUMPFILE"):
                raise _Reject(
                    "forbidden", f"SELECT ... INTO {target} writes a file on the server; not allowed"
                )
            raise _Reject(
                "not_read_only",
                "SELECT ... INTO writes a table or variables; return the rows with a plain SELECT",
            )


def _quoted_text_kept(tokens: list[Token], tree: exp.Expr) -> None:
    """Every quoted identifier of the text stands in the tree as a name (or, where the dialect reads double
    quotes so, a string). A parser that turns a quoted identifier into a keyword, a type or nothing at all
    would regenerate something that was never checked as written: CAST(x AS "INT) ... (SELECT ...") becomes
    CAST(x AS INT) with the rest dropped. (String literals are legitimately rewritten, '10 years' into an
    interval, 'YYYY' into a format; where one becomes a keyword, the plain-word rule holds it.)"""
    kept = Counter(
        node.this
        for node in tree.walk()
        if isinstance(node, (exp.Identifier, exp.Literal)) and isinstance(node.this, str)
    )
    for token in tokens:
        if token.token_type == TokenType.IDENTIFIER:
            if kept[token.text] <= 0:
                raise _Reject(
                    "forbidden",
                    f"the quoted name {token.text[:60]!r} does not stand as a name here; "
                    "write keywords and type names without quotes",
                )
            kept[token.text] -= 1


def _function_label(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower()


def _in_from(node: exp.Func) -> bool:
    """A function used as a table (FROM f(...), JOIN f(...), LATERAL f(...))."""
    parent = node.parent
    return (isinstance(parent, (exp.Table, exp.Lateral)) and parent.this is node) or isinstance(
        parent, (exp.From, exp.Join)
    )


def _check_function(node: exp.Func, dialect: str) -> None:
    label = _function_label(node)
    if isinstance(node.parent, exp.Dot):
        raise _Reject("forbidden", f"schema-qualified functions ({node.parent.sql()}) are not allowed")
    if _in_from(node):
        if not functions.allowed_table_function(node, dialect):
            raise _Reject("forbidden", f"{label}() is not a table function querylift allows in FROM")
        return
    if isinstance(node, (exp.Anonymous, exp.AnonymousAggFunc)):
        if not functions.allowed_name(label, dialect):
            raise _Reject(
                "forbidden",
                f"function {label}() is not allowed (only ordinary aggregate, window, string, math, date "
                "and conditional functions may be called)",
            )
        return
    if not functions.allowed_node(node, dialect):
        raise _Reject("forbidden", f"function {label}() is not allowed")


def _safety_checks(tree: exp.Expr, schema: SchemaInfo, dialect: str) -> None:
    if not isinstance(tree, exp.Query) or isinstance(tree, exp.Values):
        raise _Reject("not_read_only", "only a single read-only SELECT query is allowed")
    for node in tree.walk():
        if isinstance(node, _WRITING_NODES):
            kind = type(node).__name__.upper()
            if isinstance(node, exp.Lock):
                raise _Reject(
                    "not_read_only", "row locking (FOR UPDATE / FOR SHARE) is not allowed in a query"
                )
            raise _Reject("not_read_only", f"{kind} is not allowed: only read-only SELECT queries may run")
        if isinstance(node, exp.Select) and node.args.get("locks"):
            raise _Reject("not_read_only", "row locking (FOR UPDATE / FOR SHARE) is not allowed in a query")
        if isinstance(node, exp.Hint):
            raise _Reject("forbidden", "optimizer hints (/*+ ... */) are not allowed")
        if isinstance(node, exp.Func):
            _check_function(node, dialect)
        if isinstance(node, exp.DataType):
            if node.this not in functions.CAST_TYPES:
                raise _Reject("forbidden", f"the type {node.sql(dialect=dialect)} is not allowed here")
        if isinstance(node, exp.Var) and not _PLAIN_WORD.match(str(node.this)):
            raise _Reject("forbidden", f"{node.this!r} is not a keyword that may stand here")
        if (
            dialect == "mysql"
            and isinstance(node, (exp.Rollup, exp.Cube, exp.GroupingSets))
            and node.expressions
        ):
            # MySQL has only GROUP BY ... WITH ROLLUP: it reads ROLLUP(x) and CUBE(x) as calls of stored
            # functions of those names.
            raise _Reject("forbidden", "MySQL groups with GROUP BY ... WITH ROLLUP only, not ROLLUP(...)")
        if dialect == "mysql" and isinstance(node, exp.Bracket):
            # MySQL has no subscripts; MariaDB in MSSQL mode reads [...] as a quoted name.
            raise _Reject("forbidden", "subscripts (x[...]) are not MySQL syntax")
        if isinstance(node, (exp.CharacterSet, exp.Introducer)):
            raise _Reject("forbidden", "character-set clauses and introducers are not allowed")
        if isinstance(node, exp.SessionParameter):
            raise _Reject("forbidden", f"server variable @@{node.name} is not allowed")
        if isinstance(node, (exp.Parameter, exp.Placeholder)):
            raise _Reject(
                "forbidden",
                f"parameters and variables ({node.sql(dialect=dialect)}) are not allowed; use literals",
            )
        if isinstance(node, exp.Column) and dialect == "postgres":
            ident = node.this
            if (
                isinstance(ident, exp.Identifier)
                and not ident.quoted
                and not node.table
                and ident.name.lower() in functions.PG_KEYWORD_FUNCTIONS
            ):
                raise _Reject(
                    "forbidden",
                    f'{ident.name} is PostgreSQL\'s keyword for a server function; write "{ident.name}" '
                    "(in double quotes) to mean a column of that name",
                )
        if (
            isinstance(node, exp.Dot)
            and dialect == "postgres"
            and isinstance(node.expression, exp.Identifier)
        ):
            # (value).name selects a field, or calls the function name(value) where there is no such field.
            raise _Reject("forbidden", f"field selection ({node.sql(dialect=dialect)}) is not allowed")
        if isinstance(node, exp.Dot):
            qualifier = node.this
            if isinstance(qualifier, (exp.Var, exp.Identifier, exp.Column)):
                if qualifier.name.lower() in SYSTEM_SCHEMAS:
                    raise _Reject("forbidden", f"{qualifier.name} objects are not allowed")
        if isinstance(node, exp.Table):
            _check_table_qualifier(node, schema, dialect)


def _own_qualifier(identifier: exp.Identifier | None, schema: SchemaInfo, dialect: str) -> bool:
    """Whether a schema/database qualifier names the project's own schema as registered."""
    if identifier is None:
        return True
    name = identifier.name
    if dialect == "sqlite":
        return name.lower() == "main"
    if schema.namespace is None:
        return False  # registered before namespaces were recorded: only unqualified names
    if dialect == "postgres" and not identifier.quoted:
        name = name.lower()  # PostgreSQL folds unquoted names
    return name == schema.namespace


def _check_table_qualifier(table: exp.Table, schema: SchemaInfo, dialect: str) -> None:
    if not isinstance(table.this, exp.Identifier):
        return  # a table-valued function; its name is checked with the other functions
    name = table.name.lower()
    db = table.text("db").lower()
    catalog = table.text("catalog").lower()
    if db in SYSTEM_SCHEMAS or catalog in SYSTEM_SCHEMAS:
        raise _Reject("forbidden", f"system catalog {table.sql(dialect=dialect)} is not allowed")
    if name.startswith(SYSTEM_TABLE_PREFIXES.get(dialect, ())) or (dialect == "sqlite" and name == "dbstat"):
        raise _Reject("forbidden", f"system table {table.name} is not allowed")
    db_ident = table.args.get("db")
    if table.args.get("catalog") is not None or not _own_qualifier(
        db_ident if isinstance(db_ident, exp.Identifier) else None, schema, dialect
    ):
        raise _Reject(
            "forbidden",
            f"{table.sql(dialect=dialect)} refers to another schema or database; "
            f"write the table name alone ({table.name})",
        )


# --- what runs is what was checked ----------------------------------------------------------------------------


def same_tree(a: object, b: object) -> bool:
    """Node for node the same: classes, arguments, every name and literal character for character (sqlglot's own
    ``==`` is looser). Function names alone compare case-blind, since the generator writes them in upper case
    and the engines read them so."""
    if type(a) is not type(b):
        return False
    if isinstance(a, exp.Expr):
        assert isinstance(b, exp.Expr)
        keys = {k for k, v in a.args.items() if v not in (None, [], False)}
        if keys != {k for k, v in b.args.items() if v not in (None, [], False)}:
            return False
        for key in keys:
            left, right = a.args[key], b.args[key]
            if isinstance(a, exp.Anonymous) and key == "this" and isinstance(left, str):
                if not isinstance(right, str) or left.lower() != right.lower():
                    return False
            elif not same_tree(left, right):
                return False
        return True
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same_tree(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _signature(tree: exp.Expr) -> list[tuple[str, str]]:
    """What a statement reads and calls: its queries, tables, columns and functions. Smuggled SQL always adds
    to it; a change of spelling on regeneration (TIMESTAMPADD written as DATE_ADD) does not."""
    out: list[tuple[str, str]] = []
    for node in tree.walk(bfs=False):
        if isinstance(node, (exp.Query, exp.Subquery)):
            out.append(("query", ""))
        elif isinstance(node, (exp.Table, exp.Column)):
            parts = [part.name.lower() for part in node.parts]
            out.append((type(node).__name__, ".".join(parts)))
        elif isinstance(node, exp.Anonymous):
            out.append(("call", str(node.name).lower()))
        elif isinstance(node, exp.Func):
            out.append(("call", ""))
    return sorted(out)


def _reparse(text: str, dialect: str) -> exp.Expr:
    try:
        parsed = [p for p in sqlglot.parse(text, read=glot_dialect(dialect)) if p is not None]
    except Exception as error:  # whatever fails to read back is refused
        raise _Reject(
            "forbidden",
            f"the statement does not read back as itself once normalised ({type(error).__name__})",
        ) from None
    if len(parsed) != 1:
        raise _Reject("forbidden", "the statement reads back as more than one statement once normalised")
    return parsed[0]


def _generate(tree: exp.Expr, dialect: str) -> str:
    try:
        return tree.sql(dialect=glot_dialect(dialect), comments=False)
    except Exception as error:  # a tree sqlglot cannot write back is not run
        raise _Reject("parse_error", f"could not normalise the query: {error}") from None


def _what_runs(tree: exp.Expr, dialect: str) -> tuple[str, exp.Expr]:
    """The text that will run and sqlglot's reading of exactly that text."""
    text = _generate(tree, dialect)
    again = _reparse(text, dialect)
    if not same_tree(tree, again):
        if _signature(tree) != _signature(again):
            raise _Reject(
                "forbidden",
                "the statement changes meaning once normalised (quoted text would run as SQL); "
                "write identifiers and keywords plainly",
            )
        text = _generate(again, dialect)
        final = _reparse(text, dialect)
        if not same_tree(again, final):
            raise _Reject("forbidden", "the statement does not reach a stable normal form")
        again = final
    for token in _tokenize(text, dialect):
        if token.comments or token.token_type == TokenType.HINT:
            raise _Reject("forbidden", "the normalised statement holds a comment")
    return text, again


class _Resolver:
    """Resolves every table and column reference of a query, scope by scope."""

    def __init__(self, tree: exp.Expr, schema: SchemaInfo | None, dialect: str) -> None:
        self.tree = tree
        self.schema = schema
        self.dialect = dialect
        self.tables: set[str] = set()
        self.columns: set[str] = set()
        self.errors: list[tuple[CheckCode, str]] = []
        self.cte_columns: dict[str, list[str]] = {}
        for cte in tree.find_all(exp.CTE):
            if cte.alias_column_names:
                self.cte_columns[cte.alias.lower()] = [c.lower() for c in cte.alias_column_names]

    # -- sources

    def _schema_table(self, table: exp.Table) -> Table | None:
        return self.schema.table(table.name) if self.schema else None

    def _source_columns(self, source: exp.Table | Scope, depth: int = 0) -> set[str] | None:
        """Lower-cased output columns of a source; None when unknown (anything is accepted)."""
        if depth > 20:
            return None
        if isinstance(source, exp.Table):
            if not isinstance(source.this, exp.Identifier):
                return None
            if source.alias_column_names:
                return {c.lower() for c in source.alias_column_names}
            if source.name.lower() in self.cte_columns and not source.db:
                return set(self.cte_columns[source.name.lower()])
            table = self._schema_table(source)
            if table is None:
                return None
            return {c.name.lower() for c in table.columns}
        if source.outer_columns:
            return {c.lower() for c in source.outer_columns}
        parent = source.expression.parent
        while isinstance(parent, (exp.SetOperation, exp.Subquery)):
            parent = parent.parent  # the base case of a recursive CTE sits inside its UNION
        if isinstance(parent, exp.CTE) and parent.alias_column_names:
            return {c.lower() for c in parent.alias_column_names}
        expression = (
            source.expression.unnest() if isinstance(source.expression, exp.Subquery) else source.expression
        )
        if isinstance(expression, exp.SetOperation):
            if source.set_operation_scopes:
                return self._source_columns(source.set_operation_scopes[0], depth + 1)
            return None
        if not isinstance(expression, exp.Select):
            return None
        names: set[str] = set()
        for projection in expression.expressions:
            if isinstance(projection, exp.Star):
                for inner in source.selected_sources.values():
                    cols = self._source_columns(inner[1], depth + 1)
                    if cols is None:
                        return None
                    names |= cols
            elif isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star):
                inner_source = _lookup(source.sources, projection.table)
                cols = self._source_columns(inner_source, depth + 1) if inner_source is not None else None
                if cols is None:
                    return None
                names |= cols
            elif isinstance(projection, (exp.Alias, exp.Column)):
                names.add(projection.alias_or_name.lower())
            else:
                return None  # engine-chosen names (e.g. "count", "?column?") are not predictable
        return names

    def _describe(self, qualifier: str, source: exp.Table | Scope) -> str:
        cols = self._source_columns(source)
        listing = ", ".join(sorted(cols)) if cols is not None else "(unknown)"
        if isinstance(source, exp.Table) and source.alias and source.alias.lower() != source.name.lower():
            return f"{qualifier} ({source.name}) has columns: {listing}"
        return f"{qualifier} has columns: {listing}"

    # -- checks

    def run(self) -> None:
        try:
            scopes = traverse_scope(self.tree)
        except SqlglotError as error:
            self.errors.append(("unknown_table", f"could not resolve the query's tables: {error}"))
            return
        for scope in scopes:
            self._check_tables(scope)
            self._check_columns(scope)

    def _check_tables(self, scope: Scope) -> None:
        for table in scope.tables:
            if not isinstance(table.this, exp.Identifier):
                continue
            name = table.name.lower()
            source = _lookup(scope.sources, table.alias_or_name)
            if isinstance(source, Scope) and not table.db:
                continue  # a CTE
            if not table.db and name in self.cte_columns:
                continue
            if self.dialect == "mysql" and name == "dual" and not table.db:
                continue
            if self.schema is None:
                self.tables.add(name)
                continue
            known = self.schema.table(name)
            if known is None:
                listing = ", ".join(sorted(t.name for t in self.schema.tables)[:40])
                self.errors.append(
                    ("unknown_table", f"table {table.name} does not exist; tables are: {listing}")
                )
            else:
                self.tables.add(known.name.lower())

    def _check_columns(self, scope: Scope) -> None:
        # Outer scopes are visible only from (correlated) subqueries, not from CTEs or derived tables.
        chain: list[Scope] = []
        current: Scope | None = scope
        while current is not None:
            chain.append(current)
            if current.scope_type not in (ScopeType.SUBQUERY, ScopeType.SET_OPERATION, ScopeType.UDTF):
                break
            current = current.parent
        expression = scope.expression
        aliases = (
            {e.alias.lower() for e in expression.expressions if isinstance(e, exp.Alias)}
            if isinstance(expression, exp.Select)
            else set()
        )
        is_set_operation = isinstance(expression, exp.SetOperation)
        for column in find_all_in_scope(expression, exp.Column):
            if isinstance(column.this, exp.Star):
                if column.table and not any(_lookup(s.sources, column.table) is not None for s in chain):
                    self._unknown_qualifier(column.table, chain)
                continue
            name = column.name.lower()
            if not name:
                continue
            if column.table:
                self._check_qualified(column, name, chain)
            elif not is_set_operation:
                self._check_unqualified(column, name, chain, aliases)

    def _check_qualified(self, column: exp.Column, name: str, chain: list[Scope]) -> None:
        qualifier = column.table
        source: exp.Table | Scope | None = None
        for scope in chain:
            source = _lookup(scope.sources, qualifier)
            if source is not None:
                break
        if source is None:
            self._unknown_qualifier(qualifier, chain)
            return
        cols = self._source_columns(source)
        if cols is not None and name not in cols and name not in IMPLICIT_COLUMNS[self.dialect]:
            self.errors.append(
                (
                    "unknown_column",
                    f"column {qualifier}.{column.name} does not exist; {self._describe(qualifier, source)}",
                )
            )
            return
        if self.dialect == "postgres" and self.schema is not None and not self._pg_is_column(column, chain):
            self.errors.append(
                (
                    "unknown_column",
                    f"{qualifier}.{column.name} is not a column the check can find in {qualifier} exactly as "
                    f"PostgreSQL names it, and PostgreSQL would read it as a call {column.name}({qualifier}); "
                    "name the columns of derived tables and table functions with AS (e.g. AS j(key, value)) "
                    "and refer to them by exactly those names",
                )
            )
            return
        self._record(source, name)

    # -- PostgreSQL: q.name is a column, or else a call of the function name(q)

    def _pg_is_column(self, column: exp.Column, chain: list[Scope]) -> bool:
        """Whether PostgreSQL reads the qualified reference as a column: the relation it binds the qualifier
        to (names compared as PostgreSQL folds them) has a column of exactly that name. Where it has none,
        PostgreSQL calls a function of that name on the whole row (attribute notation), so whatever the
        check cannot confirm is refused."""
        qualifier, db = column.args.get("table"), column.args.get("db")
        if not isinstance(qualifier, exp.Identifier) or column.args.get("catalog") is not None:
            return False
        if db is not None and (
            not isinstance(db, exp.Identifier) or self.schema is None or _pg_name(db) != self.schema.namespace
        ):
            return False
        wanted = _pg_name(qualifier)
        for scope in chain:
            for node, source in _selected(scope).values():
                alias = _pg_alias(node)
                if alias is None or _pg_name(alias) != wanted:
                    continue
                if db is not None and not (isinstance(source, exp.Table) and _table_alias(node) is None):
                    return False  # schema.t.c binds only to the unaliased table schema.t in FROM
                names = self._pg_columns(node, source)
                return names is not None and _pg_name(column.this) in names
        return False

    def _pg_columns(
        self, node: exp.Expr | None, source: exp.Table | Scope, depth: int = 0
    ) -> set[str] | None:
        """A source's output column names exactly as PostgreSQL names them; None when not known."""
        if depth > 20:
            return None
        alias = _table_alias(node) if node is not None else None
        if alias is not None and alias.columns:
            return {_pg_name(c) for c in alias.columns}
        if isinstance(source, exp.Table):
            known = self._schema_table(source) if isinstance(source.this, exp.Identifier) else None
            return {c.name for c in known.columns} if known is not None else None
        parent = source.expression.parent
        while isinstance(parent, (exp.SetOperation, exp.Subquery)):
            parent = parent.parent
        if isinstance(parent, exp.CTE) and parent.args.get("alias") and parent.args["alias"].columns:
            return {_pg_name(c) for c in parent.args["alias"].columns}
        expression = (
            source.expression.unnest() if isinstance(source.expression, exp.Subquery) else source.expression
        )
        if isinstance(expression, exp.SetOperation):
            scopes = source.set_operation_scopes
            return self._pg_columns(None, scopes[0], depth + 1) if scopes else None
        if not isinstance(expression, exp.Select):
            return None
        names: set[str] = set()
        for projection in expression.expressions:
            if isinstance(projection, exp.Alias) and isinstance(projection.args.get("alias"), exp.Identifier):
                names.add(_pg_name(projection.args["alias"]))
            elif isinstance(projection, exp.Column) and isinstance(projection.this, exp.Identifier):
                names.add(_pg_name(projection.this))
            elif isinstance(projection, exp.Star) or (
                isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star)
            ):
                star_of = projection.args.get("table") if isinstance(projection, exp.Column) else None
                for inner_node, inner in _selected(source).values():
                    inner_alias = _pg_alias(inner_node)
                    if star_of is not None and (
                        inner_alias is None or _pg_name(inner_alias) != _pg_name(star_of)
                    ):
                        continue
                    cols = self._pg_columns(inner_node, inner, depth + 1)
                    if cols is None:
                        return None
                    names |= cols
            else:
                return None
        return names

    def _check_unqualified(
        self, column: exp.Column, name: str, chain: list[Scope], aliases: set[str]
    ) -> None:
        matches: list[exp.Table | Scope] = []
        unknown = False
        for scope in chain:
            for _, source in _selected(scope).values():
                cols = self._source_columns(source)
                if cols is None:
                    unknown = True
                elif name in cols:
                    matches.append(source)
            if matches or unknown:
                break  # the innermost scope that may have the column is the one the engine uses
        if matches:
            for source in matches:
                self._record(source, name)
            return
        if name in aliases:
            return
        if self.schema is None:
            own = list(_selected(chain[0]).values())
            if len(own) == 1 and isinstance(own[0][1], exp.Table):
                self._record(own[0][1], name)
            elif not any(isinstance(src, Scope) for _, src in own):
                self.columns.add(name)
            return
        if unknown or name in IMPLICIT_COLUMNS[self.dialect]:
            return
        described = [self._describe(alias, src) for alias, (_, src) in _selected(chain[0]).items()]
        where = "; ".join(described) if described else "the query has no FROM clause"
        hint = ""
        if column.this.args.get("quoted") and self.dialect != "mysql":
            hint = " (double quotes name a column; write string values in single quotes)"
        self.errors.append(("unknown_column", f"column {column.name} does not exist{hint}; {where}"))

    def _unknown_qualifier(self, qualifier: str, chain: list[Scope]) -> None:
        in_scope = sorted({alias for s in chain for alias in s.sources})
        hint = (
            f"tables/aliases in scope: {', '.join(in_scope)}" if in_scope else "the query has no FROM clause"
        )
        self.errors.append(
            ("unknown_table", f"{qualifier} is not a table or alias in the FROM clause; {hint}")
        )

    def _record(self, source: exp.Table | Scope, name: str) -> None:
        if isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier):
            table_name = source.name.lower()
            if table_name in self.cte_columns and not source.db:
                return
            known = self._schema_table(source)
            if known is not None:
                column = known.column(name)
                self.columns.add(f"{known.name.lower()}.{(column.name if column else name).lower()}")
            elif self.schema is None:
                self.columns.add(f"{table_name}.{name}")


def _pg_name(identifier: exp.Expr) -> str:
    """A name as PostgreSQL reads it: unquoted names fold to lower case, quoted ones stay as written."""
    if isinstance(identifier, exp.Identifier) and identifier.quoted:
        return identifier.name
    return identifier.name.lower()


def _table_alias(node: exp.Expr) -> exp.TableAlias | None:
    alias = node.args.get("alias")
    if alias is None and isinstance(node.parent, exp.Subquery):
        alias = node.parent.args.get("alias")  # a derived table: the alias is on its parentheses
    return alias if isinstance(alias, exp.TableAlias) else None


def _pg_alias(node: exp.Expr) -> exp.Identifier | None:
    """The name a FROM item is known by: its alias, else (a table) its own name."""
    alias = _table_alias(node)
    if alias is not None and isinstance(alias.this, exp.Identifier):
        return alias.this
    if alias is None and isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
        return node.this
    return None


def _selected(scope: Scope) -> dict[str, tuple[exp.Expr, exp.Table | Scope]]:
    try:
        return dict(scope.selected_sources)
    except SqlglotError:  # the same alias used twice: fall back to every source
        return {name: (exp.Var(this=name), source) for name, source in scope.sources.items()}


def _lookup(sources: dict[str, exp.Table | Scope], name: str) -> exp.Table | Scope | None:
    if name in sources:
        return sources[name]
    lowered = name.lower()
    return next((v for k, v in sources.items() if k.lower() == lowered), None)


def _parse_message(error: Exception) -> str:
    if isinstance(error, ParseError) and error.errors:
        first = error.errors[0]
        near = first.get("highlight") or ""
        where = f" near '{near}'" if near else ""
        return f"syntax error{where} (line {first.get('line')}, column {first.get('col')}): {first.get('description')}"
    if not isinstance(error, SqlglotError):
        return "syntax error: the query could not be read"
    lines = str(error).splitlines()
    return f"syntax error: {lines[0] if lines else type(error).__name__}"


def _tokenize(sql: str, dialect: str) -> list[Token]:
    return list(glot_dialect(dialect).tokenize(sql))


_RECENT: OrderedDict[tuple[str, int], tuple[weakref.ref[SchemaInfo], SqlCheck]] = OrderedDict()
_RECENT_SIZE = 2048
_RECENT_LOCK = threading.Lock()


def _copy(check: SqlCheck) -> SqlCheck:
    return replace(check, tables=set(check.tables), columns=set(check.columns))


def check_sql(sql: str, schema: SchemaInfo) -> SqlCheck:
    """Accept exactly one read-only query over the schema's tables and columns, or say precisely why not.

    The verdict is a pure function of the text and the schema (schema objects are cached and never change),
    and the same SQL comes back often (repeated questions, examples), so recent verdicts are reused."""
    key = (sql, id(schema))
    with _RECENT_LOCK:
        entry = _RECENT.get(key)
        if entry is not None and entry[0]() is schema:
            _RECENT.move_to_end(key)
            return _copy(entry[1])
    result = _check_sql(sql, schema)
    with _RECENT_LOCK:
        _RECENT[key] = (weakref.ref(schema), _copy(result))
        while len(_RECENT) > _RECENT_SIZE:
            _RECENT.popitem(last=False)
    return result


def _check_sql(sql: str, schema: SchemaInfo) -> SqlCheck:
    dialect = schema.dialect
    text = (sql or "").strip()
    if not text.strip(" \t\r\n;"):
        return SqlCheck(False, "empty", "no SQL found; write one SELECT query")
    try:
        tokens = _tokenize(text, dialect)
    except Exception as error:  # sqlglot raises more than its own errors on hostile input (IndexError, ...)
        return SqlCheck(False, "parse_error", _parse_message(error))
    statements = _split_statements(tokens)
    if not statements:
        return SqlCheck(False, "empty", "no SQL found; write one SELECT query")
    if len(statements) > 1:
        return SqlCheck(
            False,
            "multiple_statements",
            f"found {len(statements)} statements; write exactly one SELECT query",
        )
    try:
        _lexical_checks(statements[0])
    except _Reject as reject:
        return SqlCheck(False, reject.code, reject.message)
    try:
        parsed = [p for p in sqlglot.parse(text, read=glot_dialect(dialect)) if p is not None]
    except Exception as error:  # as above: any failure to read the text is a syntax error, never a crash
        return SqlCheck(False, "parse_error", _parse_message(error))
    if len(parsed) != 1:
        return SqlCheck(False, "multiple_statements", "write exactly one SELECT query")
    original = parsed[0]
    try:
        _quoted_text_kept(statements[0], original)
        _safety_checks(original, schema, dialect)
        runs, tree = _what_runs(original, dialect)
        _safety_checks(tree, schema, dialect)  # the tree of exactly the text that will run
    except _Reject as reject:
        return SqlCheck(False, reject.code, reject.message)
    resolver = _Resolver(tree, schema, dialect)
    resolver.run()
    if resolver.errors:
        worst = min(_SEVERITY[code] for code, _ in resolver.errors)
        code = next(code for code, _ in resolver.errors if _SEVERITY[code] == worst)
        messages = list(dict.fromkeys(m for c, m in resolver.errors if c == code))
        return SqlCheck(False, code, "; ".join(messages[:5]), resolver.tables, resolver.columns, runs)
    checked = CheckedSql(
        text=runs,
        dialect=dialect,
        namespace=schema.namespace,
        tables=frozenset(resolver.tables),
        _token=_TOKEN,
    )
    return SqlCheck(True, "ok", "ok", resolver.tables, resolver.columns, runs, checked, tree)


def referenced_names(sql: str, dialect: str) -> tuple[set[str], set[str]]:
    """Lower-cased tables and columns a query refers to, without a schema (for stale-example detection).

    Columns come back as ``table.column`` when the reference can be tied to one base table (qualified, or
    the only table in scope) and as a bare ``column`` otherwise; CTE, derived-table and SELECT-alias names are
    left out. Unparseable SQL gives two empty sets.
    """
    try:
        tree = sqlglot.parse_one(sql, read=glot_dialect(dialect))
    except Exception:  # unreadable SQL references nothing
        return set(), set()
    if tree is None:
        return set(), set()
    resolver = _Resolver(tree, None, dialect)
    resolver.run()
    return resolver.tables, resolver.columns
