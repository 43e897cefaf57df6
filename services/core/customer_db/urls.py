"""Customer database URLs: which engine, where, and how to show one without its password.

``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (SQLAlchemy style) or a plain path ending in
.sqlite/.sqlite3/.db; ``postgresql://user:pass@host:5432/db?search_path=sales``; ``mysql://user:pass@host:3306/db``
or ``mariadb://...``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from services.core.customer_db.errors import BadDatabaseURL
from services.core.schema import Dialect

_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def dialect_of(url: str) -> Dialect:
    """'sqlite', 'postgres' or 'mysql' for a database URL (or a plain SQLite path)."""
    text = (url or "").strip()
    scheme = text.split("://", 1)[0].lower().split("+", 1)[0] if "://" in text else ""
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgres", "postgresql"):
        return "postgres"
    if scheme in ("mysql", "mariadb"):
        return "mysql"
    if not scheme and text.lower().endswith(_SQLITE_SUFFIXES):
        return "sqlite"
    shown = redact(text) if text else "(empty)"
    raise BadDatabaseURL(
        f"unsupported database URL {shown}: use sqlite:///path/to/file.db (or a path ending in .sqlite/.db), "
        "postgresql://user:password@host:5432/database or mysql://user:password@host:3306/database"
    )


def redact(url: str) -> str:
    """The URL with its password replaced by ***."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", url)


def scrub(message: str, url: str) -> str:
    """Remove the URL's password from a driver message, in case a driver echoes it."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in {password, unquote(password) if password else None} - {None, ""}:
        message = message.replace(str(secret), "***")
    return message


def sqlite_path(url: str) -> Path:
    text = url.strip()
    if "://" not in text:
        return Path(text)
    rest = text.split("://", 1)[1]
    rest = rest.split("?", 1)[0]
    if not rest.startswith("/"):
        raise BadDatabaseURL(
            f"SQLite URL {text} has a host part; write sqlite:///relative.db or sqlite:////abs.db"
        )
    path = Path(unquote(rest[1:]))
    if not path.is_absolute() and not path.exists() and Path("/", path).exists():
        path = Path("/", path)  # sqlite:///tmp/x.db usually means /tmp/x.db
    return path


@dataclass(frozen=True)
class ServerURL:
    host: str
    port: int
    user: str | None
    password: str | None
    database: str | None
    query: dict[str, str]


def server_url(url: str, default_port: int) -> ServerURL:
    try:
        parts = urlsplit(url.strip())
        port = parts.port or default_port
    except ValueError as error:
        raise BadDatabaseURL(f"malformed database URL {redact(url)}: {error}") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    database = unquote(parts.path.lstrip("/")) or None
    return ServerURL(
        host=parts.hostname or "localhost",
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        database=database,
        query=query,
    )


def describe_server(url: str, default_port: int) -> str:
    try:
        parts = server_url(url, default_port)
    except BadDatabaseURL:
        return redact(url)
    user = f"{parts.user}@" if parts.user else ""
    return f"{user}{parts.host}:{parts.port}/{parts.database or ''}"


def pg_dsn(url: str) -> str:
    """asyncpg wants postgresql:// (or postgres://); accept SQLAlchemy-style postgresql+driver:// too."""
    scheme, rest = url.strip().split("://", 1)
    return f"postgresql://{rest}" if "+" in scheme else url.strip()


def pg_schema(url: str) -> str:
    """The schema a PostgreSQL URL points at (``?search_path=`` or ``options=-c search_path=``), else public.
    Read once, at registration: what is registered is the project's schema from then on."""
    query = server_url(url, 5432).query
    if query.get("search_path"):
        return query["search_path"].split(",")[0].strip().strip('"')
    match = re.search(r"search_path\s*=\s*([^\s,]+)", query.get("options", ""))
    return match.group(1).strip('"') if match else "public"
