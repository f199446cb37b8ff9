"""The operator's HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz`` (alive) and ``/readyz`` (ready).

A deliberately small HTTP/1.1 server on asyncio streams: three GET routes, no keep-alive, no request bodies.
``/healthz`` answers 200 while the event loop runs.  ``/readyz`` answers 200 when the database is reachable
with the schema applied, 503 otherwise; both return a JSON body with the state of the database and every
connector, so an operator's ``curl`` shows what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Info, generate_latest
from pydantic import Field, field_validator

from ingestor import __version__
from ingestor.contract import StrictModel, get_logger

log = get_logger(__name__)

BUILD = Info("ingestor_build", "Version of the ingestor")
BUILD.info({"version": __version__})


class HttpConfig(StrictModel):
    """``http:`` where metrics and health are served."""

    enabled: bool = True
    listen: str = Field(default="127.0.0.1:9108", description="host:port; use 0.0.0.0:9108 to expose it")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected host:port such as 127.0.0.1:9108, got {value!r}")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


StatusSource = Callable[[], tuple[bool, dict[str, Any]]]
"""Returns (ready, details) for /readyz and /healthz bodies."""


class HealthServer:
    """Serves /metrics, /healthz and /readyz until closed."""

    def __init__(self, config: HttpConfig, status: StatusSource) -> None:
        self._config = config
        self._status = status
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when the configured port is 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> HealthServer:
        self._server = await asyncio.start_server(self._handle, self._config.host, self._config.port)
        log.info("http listening", address=f"{self._config.host}:{self.port}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, target, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            status, content_type, body = self._route(method, target.split("?", 1)[0])
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode("latin-1") + (body if method != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _route(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"only GET\n"
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest()
        if path in ("/healthz", "/readyz"):
            ready, details = self._status()
            ok = ready or path == "/healthz"
            body = json.dumps({"status": "ok" if ok else "unavailable", "ready": ready, **details},
                              default=str).encode()
            return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body + b"\n"
        return "404 Not Found", "text/plain", b"try /metrics, /healthz or /readyz\n"
