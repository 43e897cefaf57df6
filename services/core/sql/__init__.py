"""Generated SQL: extracting it from a model's reply, checking it, and the functions it may call."""

from services.core.sql.check import CheckedSql, SqlCheck, check_sql, referenced_names
from services.core.sql.extract import extract_sql

__all__ = ["CheckedSql", "SqlCheck", "check_sql", "extract_sql", "referenced_names"]
