"""Opening a connection: errors name the database by its redacted URL, never with its password.

Also the set of exceptions that mean "the connection is gone" (as opposed to "the database refused this"), so
every long-lived connection of the daemon (the writer's, the refresher's, the derivation's) tells the two apart
the same way.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.CrashShutdownError,
)
"""Failures of the link itself: reconnect and retry, the data is not at fault."""


class DatabaseUnavailable(Exception):
    """The database cannot be reached or refused the connection."""


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, for logs and summaries."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


async def connect(url: str, timeout: float = 10.0) -> asyncpg.Connection:
    """Open one connection; errors name the redacted URL, never the password."""
    try:
        return await asyncpg.connect(url, timeout=timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(f"cannot connect to {redact(url)}: {exc}") from exc
