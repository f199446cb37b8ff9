"""Opening a connection: errors name the database by its redacted URL, never with its password.

Also the set of exceptions that mean "the connection is gone" (as opposed to "the database refused this"), so
every long-lived connection of the daemon (the writer's, the refresher's, the derivation's) tells the two apart
the same way.
"""

from __future__ import annotations

import re
import ssl
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.CrashShutdownError,
)
"""Failures of the link itself: reconnect and retry, the data is not at fault."""


class DatabaseUnavailable(Exception):
    """The database cannot be reached or refused the connection."""


_SECRET_PARAMS = frozenset({"password", "sslpassword", "passfile"})
_KEYWORD_SECRET = re.compile(r"""\b(password|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)""", re.IGNORECASE)


def redact(url: str) -> str:
    """The database URL (or libpq ``key=value`` string) with every password replaced by ``***``: the
    ``user:password@`` form, a ``?password=`` or ``sslpassword=`` parameter, and ``password=`` keywords.
    For logs, summaries and error texts."""
    if "://" not in url:  # a libpq keyword string, or not a URL at all
        return _KEYWORD_SECRET.sub(lambda m: f"{m.group(1)}=***", url)
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            if ":" in userinfo:
                netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(key.lower() in _SECRET_PARAMS for key, _ in pairs):
                query = "&".join(f"{key}=***" if key.lower() in _SECRET_PARAMS else f"{key}={value}"
                                 for key, value in pairs)
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "<unparseable database URL>"


async def connect(url: str, timeout: float = 10.0) -> asyncpg.Connection:
    """Open one connection; errors name the redacted URL, never the password."""
    try:
        return await asyncpg.connect(url, timeout=timeout)
    except ssl.SSLCertVerificationError as exc:
        raise DatabaseUnavailable(f"cannot connect to {redact(url)}: {certificate_problem(exc)}") from exc
    except ssl.SSLError as exc:
        if "PEM" in str(exc) or "KEY_VALUES_MISMATCH" in str(exc):  # loading the client certificate or key
            raise DatabaseUnavailable(
                f"cannot connect to {redact(url)}: cannot load the client certificate or key (database.sslcert, "
                "database.sslkey): a wrong or missing passphrase (INGESTOR_DATABASE_SSLPASSWORD), a key that "
                f"does not match the certificate, or not PEM ({exc})") from exc
        raise DatabaseUnavailable(f"cannot connect to {redact(url)}: {exc}") from exc
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(f"cannot connect to {redact(url)}: {exc}") from exc


def certificate_problem(exc: ssl.SSLCertVerificationError) -> str:
    """What is wrong with the server's certificate, in words an operator can act on."""
    reason = exc.verify_message or str(exc)
    if "hostname" in reason.lower() or "ip address mismatch" in reason.lower():
        hint = "the certificate does not name the host in the URL (sslmode verify-full checks the name)"
    else:
        hint = "the certificate does not chain to database.sslrootcert (wrong CA, or the server's chain is incomplete)"
    return f"the server's TLS certificate was refused: {reason}; {hint}"
