"""Serving the application with uvicorn inside the caller's event loop: the daemon's, or ``ingestor api``'s.

The listening socket is bound here, before uvicorn starts, so a port already in use is one clear error
(:class:`ListenError`) instead of uvicorn's exit from inside the loop.  uvicorn's own signal handling is off:
the daemon owns SIGTERM and SIGINT and stops the server as one step of its drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Iterator

import uvicorn

from ingestor.api.app import create_app
from ingestor.api.state import ApiState
from ingestor.contract import get_logger
from ingestor.contract.timeouts import wait_for

log = get_logger(__name__)


class ListenError(Exception):
    """The HTTP listener cannot be opened (the port is taken, the address is not this machine's, …)."""


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the host process handles signals
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; :class:`ListenError` naming the address when that fails."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"http.listen {host}:{port}: cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(256)
    except OSError as exc:
        sock.close()
        hint = {errno.EADDRINUSE: "another process listens there (ss -ltnp shows which); choose another port",
                errno.EACCES: "ports below 1024 need privileges; choose a port above 1024",
                errno.EADDRNOTAVAIL: "the address is not one of this machine's"}.get(exc.errno or 0, "")
        raise ListenError(f"http.listen {host}:{port}: {exc.strerror}" + (f"; {hint}" if hint else "")) from None
    sock.setblocking(False)
    return sock


class ApiServer:
    """``async with ApiServer(state):`` serves the application until the block ends."""

    def __init__(self, state: ApiState) -> None:
        self.state = state
        self.app = create_app(state)
        self._socket: socket.socket | None = None
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when the configured port is 0)."""
        assert self._socket is not None
        return int(self._socket.getsockname()[1])

    async def __aenter__(self) -> ApiServer:
        config = self.state.config
        self._socket = bind(config.host, config.port)
        uv = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off", ws="websockets-sansio",
                            server_header=False, timeout_graceful_shutdown=3, proxy_headers=False)
        self._server = _EmbeddedServer(uv)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="http")
        while not self._server.started:  # uvicorn sets it once it accepts connections
            if self._task.done():
                await self._task
                raise ListenError(f"http.listen {config.listen}: the server did not start")
            await asyncio.sleep(0.01)
        log.info("http listening", address=f"{config.host}:{self.port}", tokens=self.state.tokens.required)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._server is not None and self._task is not None:
                self._server.should_exit = True
                try:
                    await wait_for(asyncio.shield(self._task), 6)
                except TimeoutError:
                    self._task.cancel()
                    await asyncio.gather(self._task, return_exceptions=True)
        finally:
            if self._socket is not None:
                self._socket.close()
            await self.state.close()
