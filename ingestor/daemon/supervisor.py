"""One supervisor per connector: connect → run → on error close → back off → retry.

The runtime, not the connector, owns reconnection (as Benthos does).  The supervisor tracks the connector's
state for metrics and ``/readyz``, logs the first failure as an error, repeats at debug level with a
"connector still failing" warning at most once a minute (how many attempts, the last error), and "recovered"
once a connection made after failures has stayed up for ``reconnect.healthy_after`` (as Home Assistant's
update coordinator does).  Only then do the failures and the back-off start again from zero: a peer that
accepts a connection and drops it at once (a Modbus device at its connection limit) is a failure that goes
on, retried ever more slowly, not a recovery every few hundred milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from enum import StrEnum
from typing import Any

from prometheus_client import Counter, Gauge

from ingestor.contract import (
    ConnectionLost,
    Connector,
    ProblemLog,
    ReadingSink,
    ReconnectConfig,
    backoff_delays,
    get_logger,
)
from ingestor.contract.logs import LOG_REPEAT_INTERVAL
from ingestor.contract.timeouts import wait_for

log = get_logger(__name__)

CONNECTOR_STATE = Gauge(
    "ingestor_connector_state", "1 for the connector's current state", ["connector", "state"])
CONNECTOR_CONNECTS = Counter("ingestor_connector_connects_total", "Successful connects", ["connector"])
CONNECTOR_STARTS = Counter(
    "ingestor_connector_starts_total", "Times the connector's supervisor was started (at startup, and when a "
    "reload started or restarted it)", ["connector"])
CONNECTOR_FAILURES = Counter(
    "ingestor_connector_failures_total", "Failed connects and lost links", ["connector"])


class ConnectorState(StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"


class ConnectorSupervisor:
    """Keeps one connector running until cancelled."""

    def __init__(self, connector: Connector, sink: ReadingSink, reconnect: ReconnectConfig,
                 close_timeout: float = 5.0, still_every: float = LOG_REPEAT_INTERVAL) -> None:
        self.connector = connector
        self.name = connector.name
        self._sink = sink
        self._reconnect = reconnect
        self._close_timeout = close_timeout
        self.state = ConnectorState.DISCONNECTED
        self.since = time.time()
        self.last_error: str | None = None
        self.failures = 0
        """Failed connects and lost links since the link was last healthy (up for ``healthy_after``)."""
        self._delays = backoff_delays(reconnect)
        self._problems = ProblemLog(log, still_every, repeats_at_debug=True)
        self._set(ConnectorState.DISCONNECTED)

    def status(self) -> dict[str, Any]:
        """For /readyz: the supervisor's view, plus the connector's own detail when it offers a ``status()``
        (a Modbus link reports each device behind it, for instance)."""
        state = {"state": str(self.state), "since": self.since, "consecutive_failures": self.failures,
                 "last_error": self.last_error}
        detail = getattr(self.connector, "status", None)
        if callable(detail):
            try:
                state.update(detail())
            except Exception as exc:  # a status report must never break the health endpoint
                state["status_error"] = repr(exc)
        return state

    def _set(self, state: ConnectorState) -> None:
        if state != self.state:
            self.since = time.time()
        self.state = state
        for each in ConnectorState:
            CONNECTOR_STATE.labels(self.name, str(each)).set(1 if each == state else 0)

    def forget(self) -> None:
        """The connector was removed by a reload: its state series leave /metrics (its counters stay)."""
        for each in ConnectorState:
            try:
                CONNECTOR_STATE.remove(self.name, str(each))
            except KeyError:
                pass

    def _healthy(self) -> None:
        """The link made after failures stayed up for ``healthy_after``: it has recovered."""
        self._problems.recovered("link", "connector recovered", connector=self.name, after_failures=self.failures)
        self.failures = 0
        self._delays = backoff_delays(self._reconnect)

    async def run(self) -> None:
        CONNECTOR_STARTS.labels(self.name).inc()
        self._delays = backoff_delays(self._reconnect)
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._set(ConnectorState.CONNECTING)
                healthy: asyncio.TimerHandle | None = None
                try:
                    await self.connector.connect()
                    self._set(ConnectorState.CONNECTED)
                    CONNECTOR_CONNECTS.labels(self.name).inc()
                    if self.failures:
                        log.debug("connector connected; recovered once the link stays up", connector=self.name,
                                  healthy_after_s=self._reconnect.healthy_after)
                        healthy = loop.call_later(self._reconnect.healthy_after, self._healthy)
                    else:
                        log.info("connector connected", connector=self.name)
                    await self.connector.run(self._sink)
                    raise ConnectionLost("the connector stopped reading")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    CONNECTOR_FAILURES.labels(self.name).inc()
                    delay = next(self._delays)
                    self._problems.failed(
                        "link", "connector failed; reconnecting", level="error", still="connector still failing",
                        connector=self.name, error=self.last_error, attempt=self.failures,
                        retry_in_s=round(delay, 2),
                        exc_info=not isinstance(exc, ConnectionLost | OSError | TimeoutError))
                finally:
                    if healthy is not None:
                        healthy.cancel()
                await self._close()
                self._set(ConnectorState.DISCONNECTED)
                await asyncio.sleep(delay)
        finally:
            await self._close()
            self._set(ConnectorState.DISCONNECTED)

    async def _close(self) -> None:
        # Our wait_for, not asyncio's: on Python 3.11 a cancel arriving as a close with nothing to await finishes
        # was swallowed, the supervisor went on to back off and reconnect, and the drain waited for ever.
        try:
            await wait_for(self.connector.close(), self._close_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("connector close failed", connector=self.name, error=str(exc))
