"""Errors of the customer-database layer; messages are meant for people and never contain passwords."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.core.sql import SqlCheck


class CustomerDatabaseError(Exception):
    """Base class."""

    retryable = False


class BadDatabaseURL(CustomerDatabaseError, ValueError):
    """The URL names no database kind querylift supports, or is malformed."""


class DatabaseUnavailable(CustomerDatabaseError):
    """The database could not be reached or refused the login; worth retrying later."""

    retryable = True


class QueryFailed(CustomerDatabaseError):
    """The engine rejected the statement; the message is the engine's, usable to repair the SQL."""


class QueryTimeout(CustomerDatabaseError):
    """The statement ran past its time limit and was cancelled."""


class SqlRefused(CustomerDatabaseError):
    """The static check refused the statement, so nothing ran; ``check`` says why."""

    def __init__(self, check: SqlCheck) -> None:
        super().__init__(check.message)
        self.check = check
