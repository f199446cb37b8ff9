"""Who may call the API: bearer tokens, a read token and a write token (the write token also reads).

Tokens come from the environment (``INGESTOR_API_READ_TOKEN``, ``INGESTOR_API_WRITE_TOKEN``) or from the
``http.credentials_file``; they are compared in constant time (both sides hashed first, so neither the content
nor the length of the token leaks through timing) and never logged.  With no token configured the API is open,
which the configuration allows only on a loopback listener (:func:`tokens_problem`).  Browsers cannot set
headers on a WebSocket, so the WebSocket endpoint also takes the token as ``access_token=``.

``/metrics``, ``/healthz`` and ``/readyz`` stay open: scrapers and probes carry no tokens, and those bodies
hold nothing secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from fastapi import WebSocket, WebSocketException
from pydantic import SecretStr
from starlette.requests import HTTPConnection

from ingestor.api.config import READ_TOKEN_ENV, WRITE_TOKEN_ENV, HttpConfig
from ingestor.api.problems import ApiProblem

Access = Literal["read", "write"]


class TokenError(ValueError):
    """The credentials file cannot be used; the message names the file, never a token."""


@dataclass(frozen=True)
class Tokens:
    """The configured tokens (either may be absent)."""

    read: SecretStr | None = None
    write: SecretStr | None = None

    @property
    def required(self) -> bool:
        return self.read is not None or self.write is not None

    def grants(self, presented: str | None, access: Access) -> bool:
        """True when ``presented`` gives ``access`` (always, when no token is configured at all)."""
        if not self.required:
            return True
        if presented is None:
            return False
        allowed = [self.write] if access == "write" else [self.read, self.write]
        # evaluate every comparison, so the time taken does not say which token matched
        results = [_same(presented, token.get_secret_value()) for token in allowed if token is not None]
        return any(results)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(hashlib.sha256(a.encode("utf-8", "surrogatepass")).digest(),
                               hashlib.sha256(b.encode("utf-8", "surrogatepass")).digest())


def load_tokens(config: HttpConfig, environ: Mapping[str, str] | None = None) -> Tokens:
    """The tokens from the environment, then the credentials file.  Raises :class:`TokenError`."""
    env = os.environ if environ is None else environ
    from_file: dict[str, str] = {}
    if config.credentials_file is not None:
        from_file = _read_credentials(config.credentials_file)
    read = env.get(READ_TOKEN_ENV) or from_file.get("read_token")
    write = env.get(WRITE_TOKEN_ENV) or from_file.get("write_token")
    for name, token in (("read", read), ("write", write)):
        if token is not None and len(token) < 16:
            raise TokenError(f"the {name} token is shorter than 16 characters; use a random one "
                             "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return Tokens(SecretStr(read) if read else None, SecretStr(write) if write else None)


def _read_credentials(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"{path}: cannot read the credentials file: {type(exc).__name__}: "
                         f"{getattr(exc, 'strerror', None) or 'not UTF-8'}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise TokenError(f"{path}: not a YAML mapping of read_token / write_token") from None
    if not isinstance(data, dict) or not set(data) <= {"read_token", "write_token"} or \
            not all(isinstance(v, str) for v in data.values()):
        raise TokenError(f"{path}: expected only read_token: and write_token: with string values")
    return {str(k): str(v) for k, v in data.items()}


def tokens_problem(config: HttpConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """Why this configuration must not start (for the loader), or None."""
    if not config.enabled:
        return None
    try:
        tokens = load_tokens(config, environ)
    except TokenError as exc:
        return str(exc)
    if not config.loopback_only and tokens.read is None:
        return (f"listening on {config.host} (not loopback) needs a read token: set {READ_TOKEN_ENV} or name "
                "a credentials_file")
    return None


def presented_token(request_headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str | None:
    """The bearer token of a request (``Authorization: Bearer …``, or ``access_token=`` where allowed)."""
    header = request_headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if query is not None:
        return query.get("access_token") or None
    return None


async def _check(request: HTTPConnection, access: Access) -> None:
    tokens: Tokens = request.app.state.api.tokens
    token = presented_token(request.headers, request.query_params if request.scope["type"] == "websocket" else None)
    if tokens.grants(token, access):
        return
    if isinstance(request, WebSocket):
        # Accepted, then closed with 1008 policy violation and the reason: a browser sees a handshake refused
        # with HTTP 403 only as 1006 "abnormal closure", and a page could not tell a wrong token from a
        # network drop.  Nothing is sent before the close frame.
        await request.accept()
        raise WebSocketException(code=1008, reason="authentication required" if token is None else "not allowed")
    if token is None:
        raise ApiProblem(401, "authentication required", f"send 'Authorization: Bearer <{access} token>'",
                         headers={"WWW-Authenticate": "Bearer"})
    raise ApiProblem(403, "not allowed", f"this needs the {access} token")


async def require_read(request: HTTPConnection) -> None:
    """Dependency of every read endpoint."""
    await _check(request, "read")


async def require_write(request: HTTPConnection) -> None:
    """Dependency of every endpoint that writes plant records."""
    await _check(request, "write")
