"""The sqlglot dialect querylift reads and writes each customer dialect with.

MySQL's own dialect writes ``x REGEXP y`` as ``REGEXP_LIKE(x, y)``, which MariaDB does not have; querylift's
MySQL dialect writes the operator, which both servers read, and which sqlglot reads back as the same tree.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import ClassVar

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.dialects.mysql import MySQL
from sqlglot.dialects.postgres import Postgres
from sqlglot.dialects.sqlite import SQLite
from sqlglot.generator import Generator
from sqlglot.generators.mysql import MySQLGenerator


def _regexp(self: Generator, expression: exp.RegexpLike) -> str:
    if expression.args.get("flag"):
        return self.func("REGEXP_LIKE", expression.this, expression.expression, expression.args["flag"])
    return self.binary(expression, "REGEXP")


class QueryliftMySQL(MySQL):
    class Generator(MySQLGenerator):
        TRANSFORMS: ClassVar[dict[type[exp.Expr], Callable[..., str]]] = {
            **MySQLGenerator.TRANSFORMS,
            exp.RegexpLike: _regexp,
        }


_DIALECTS: dict[str, type[Dialect]] = {"sqlite": SQLite, "postgres": Postgres, "mysql": QueryliftMySQL}


@cache
def glot_dialect(name: str) -> Dialect:
    """The dialect instance for 'sqlite', 'postgres' or 'mysql'."""
    try:
        return _DIALECTS[name]()
    except KeyError:
        raise ValueError(f"unknown dialect {name!r}") from None
