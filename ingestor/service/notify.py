"""systemd's service notification protocol (``Type=notify``, ``WatchdogSec=``), in the few lines it takes.

systemd passes a datagram socket in ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace) and,
with ``WatchdogSec=``, the interval in ``$WATCHDOG_USEC`` (for the process ``$WATCHDOG_PID`` when set).  The
daemon sends newline-separated ``KEY=value`` assignments (sd_notify(3)):

* ``READY=1`` once the schema is ready and the connectors are started (systemd then counts the start done);
* ``STATUS=…`` every few seconds: readings per second and the spool depth (``systemctl status`` shows it);
* ``WATCHDOG=1`` every half interval, from the event loop itself, so a loop that is stuck (a blocking call, a
  busy coroutine) stops pinging and systemd restarts the service;
* ``RELOADING=1`` with ``MONOTONIC_USEC=`` when a reload (SIGHUP) begins and ``READY=1`` when it is done (the
  protocol of ``Type=notify-reload``; the daemon sends them, :mod:`ingestor.daemon.runtime`);
* ``STOPPING=1`` when the drain begins.

Without ``$NOTIFY_SOCKET`` (not under systemd, or ``Type=exec``) every call does nothing.  A send that fails
(systemd gone, its queue full) is ignored: notification must never stop the pipeline.  libsystemd is not
used: the protocol is one ``sendto``, and the daemon should not need a C library to say it is ready.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

from ingestor.contract import get_logger

log = get_logger(__name__)

STATUS_INTERVAL = 5.0
"""Seconds between ``STATUS=`` updates."""


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]   # the abstract namespace: a leading NUL byte, not a file
    if value.startswith("/"):
        return value
    return None                   # vsock and other forms are not used for services on a plant's edge box


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds of ``$WATCHDOG_USEC`` when it is meant for this process, else None."""
    usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        seconds = int(usec) / 1e6
    except ValueError:
        return None
    return seconds if seconds > 0 else None


class SystemdNotifier:
    """Sends notifications to the socket systemd gave, if any."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.address = _address(environ.get("NOTIFY_SOCKET", ""))
        self.watchdog = watchdog_interval(environ) if self.address else None
        self._socket: socket.socket | None = None
        if self.address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram; False when not under systemd or the send failed."""
        if self._socket is None or self.address is None:
            return False
        try:
            self._socket.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:
            log.debug("systemd notification not sent", error=str(exc), what=assignments[0].split("=")[0])
            return False
        return True

    async def run(self, status: Callable[[], str], status_every: float = STATUS_INTERVAL) -> None:
        """Until cancelled: ``WATCHDOG=1`` every half watchdog interval, ``STATUS=`` every ``status_every``."""
        if not self.enabled:
            return
        ping = self.watchdog / 2 if self.watchdog else None
        now = time.monotonic()
        next_status, next_ping = now, now
        while True:
            now = time.monotonic()
            if ping is not None and now >= next_ping:
                self.notify("WATCHDOG=1")
                next_ping = now + ping
            if now >= next_status:
                self.notify(f"STATUS={status()}")
                next_status = now + status_every
            wake = min(next_status, next_ping) if ping is not None else next_status
            await asyncio.sleep(max(0.0, wake - time.monotonic()))

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class ReadingRate:
    """Readings per second between two calls, from a running total."""

    def __init__(self, total: Callable[[], int]) -> None:
        self._total = total
        self._last = (time.monotonic(), total())

    def __call__(self) -> float:
        now, count = time.monotonic(), self._total()
        then, before = self._last
        self._last = (now, count)
        return (count - before) / (now - then) if now > then else 0.0
