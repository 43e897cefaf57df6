"""The statements a DBA runs to give querylift a database account that can only read the project's schema."""

from __future__ import annotations

import re

from services.core.schema import Dialect

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def readonly_role_sql(
    dialect: Dialect, role: str, database: str, *, password: str = "change-me", schema: str = "public"
) -> list[str]:
    """For PostgreSQL a login role that reads ``schema`` of ``database`` and nothing else; for MySQL/MariaDB a
    user with SELECT on ``database`` alone (no FILE, PROCESS or SUPER). SQLite has no accounts: the list is
    empty; make the file read-only for querylift's OS user instead."""
    for label, value in (("role", role), ("database", database), ("schema", schema)):
        if not _IDENTIFIER.match(value):
            raise ValueError(f"{label} {value!r} must be a plain identifier (letters, digits, _ and $)")
    secret = password.replace("'", "''")
    if dialect == "postgres":
        quoted = f'"{role}"'
        return [
            f"CREATE ROLE {quoted} LOGIN PASSWORD '{secret}'",
            f"ALTER ROLE {quoted} SET default_transaction_read_only = on",
            f"ALTER ROLE {quoted} SET statement_timeout = '30s'",
            f'GRANT CONNECT ON DATABASE "{database}" TO {quoted}',
            f'GRANT USAGE ON SCHEMA "{schema}" TO {quoted}',
            f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO {quoted}',
            f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{schema}" GRANT SELECT ON TABLES TO {quoted}',
        ]
    if dialect == "mysql":
        secret = secret.replace("\\", "\\\\")
        return [
            f"CREATE USER '{role}'@'%' IDENTIFIED BY '{secret}'",
            f"GRANT SELECT, SHOW VIEW ON `{database}`.* TO '{role}'@'%'",
        ]
    if dialect == "sqlite":
        return []
    raise ValueError(f"unknown dialect {dialect!r}")
