"""Logging for connectors and the daemon: one structlog logger per module, and :class:`ProblemLog`.

A device that is down fails on every poll, a broker that sends garbage does so for every message: logging each
occurrence buries everything else.  :class:`ProblemLog` is the one way this code base logs a problem that
repeats: once when it starts, then at most once per interval while it lasts (saying how often it happened
meanwhile), and once when it ends (as Home Assistant's update coordinator does).  How the lines are rendered
(JSON or console) is the daemon's business (``ingestor.service.logs``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

import structlog

LOG_REPEAT_INTERVAL = 60.0
"""While a problem lasts, it is logged again at most this often (seconds)."""


def get_logger(name: str) -> Any:
    """A structlog logger for a module (``get_logger(__name__)``)."""
    return structlog.stdlib.get_logger(name)


class ProblemLog:
    """Logs each problem (by key) once when it starts, then at most every ``interval`` seconds while it lasts,
    and once when it is over.

    ``failed(key, event, **fields)`` logs ``event`` at ``level`` the first time; further calls within
    ``interval`` are only counted (and logged at debug level when ``repeats_at_debug``); the first call after
    ``interval`` logs ``"<event> (still)"`` (or ``still``, when given) at warning level with ``repeats`` (calls
    since the last line) and ``over_s``.  ``recovered(key, event, **fields)`` logs ``event`` at info level if the
    key was failing, and forgets it.  A key that only ever fails (a malformed message, say) is simply
    rate-limited.
    """

    MAX_KEYS = 10_000
    """Problems remembered at once; beyond this the oldest are forgotten (keys may carry payload detail)."""

    def __init__(self, logger: Any, interval: float = LOG_REPEAT_INTERVAL, *, repeats_at_debug: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval = interval
        self._repeats_at_debug = repeats_at_debug
        self._clock = clock
        self._active: dict[Hashable, list[float]] = {}   # key → [last logged at, calls since]

    def failed(self, key: Hashable, event: str, *, level: str = "warning", still: str | None = None,
               **fields: Any) -> None:
        now = self._clock()
        state = self._active.get(key)
        if state is None:
            if len(self._active) >= self.MAX_KEYS:
                del self._active[next(iter(self._active))]
            self._active[key] = [now, 0]
            getattr(self._log, level)(event, **fields)
        elif now - state[0] >= self._interval:
            self._log.warning(still or f"{event} (still)", repeats=int(state[1]) + 1, over_s=round(now - state[0]),
                              **fields)
            state[0], state[1] = now, 0
        else:
            state[1] += 1
            if self._repeats_at_debug:
                self._log.debug(event, **fields)

    def recovered(self, key: Hashable, event: str, **fields: Any) -> bool:
        """Log ``event`` if ``key`` was failing; True when it was."""
        if self._active.pop(key, None) is None:
            return False
        self._log.info(event, **fields)
        return True

    def is_active(self, key: Hashable) -> bool:
        return key in self._active
