"""The connector supervisor: reconnect with capped, jittered backoff; state tracking; log discipline."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import structlog
from structlog.testing import capture_logs

from ingestor.contract import ConnectionLost, Reading, ReadingSink, ReconnectConfig, backoff_delays, now_us
from ingestor.daemon.supervisor import ConnectorState, ConnectorSupervisor


class FlakyConnector:
    """Refuses the first connects, then streams a reading and loses its link, forever."""

    def __init__(self, refuse: int) -> None:
        self.name = "flaky"
        self.refuse = refuse
        self.connects = 0
        self.closes = 0

    async def connect(self) -> None:
        self.connects += 1
        if self.connects <= self.refuse:
            raise ConnectionRefusedError("connection refused")

    async def run(self, sink: ReadingSink) -> None:
        await sink.put([Reading("M1", "p", 1.0, now_us())])
        await asyncio.sleep(0.05)
        raise ConnectionLost("peer closed the connection")

    async def close(self) -> None:
        self.closes += 1


class CollectingSink:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def put(self, readings: Sequence[Reading], on_durable: object = None) -> None:
        self.readings.extend(readings)


def test_backoff_grows_to_the_cap_with_bounded_jitter() -> None:
    config = ReconnectConfig(initial=1.0, max=8.0, multiplier=2.0, jitter=0.25)
    delays = backoff_delays(config, random.Random(7))
    values = [next(delays) for _ in range(8)]
    for value, nominal in zip(values, [1, 2, 4, 8, 8, 8, 8, 8], strict=True):
        assert nominal * 0.75 <= value <= nominal * 1.25


async def test_supervisor_reconnects_tracks_state_and_logs_first_failure_as_error_then_recovered() -> None:
    structlog.reset_defaults()
    connector = FlakyConnector(refuse=3)
    sink = CollectingSink()
    # the link stays up 50 ms each time: longer than healthy_after, so each connect after failures recovers
    supervisor = ConnectorSupervisor(connector, sink, ReconnectConfig(initial=0.01, max=0.02, jitter=0.0,
                                                                      healthy_after=0.02))
    with capture_logs() as logs:
        task = asyncio.create_task(supervisor.run())
        while len(sink.readings) < 2:
            await asyncio.sleep(0.01)
        assert supervisor.state in (ConnectorState.CONNECTED, ConnectorState.CONNECTING,
                                    ConnectorState.DISCONNECTED)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert supervisor.state == ConnectorState.DISCONNECTED
    assert connector.connects >= 5
    assert connector.closes >= connector.connects  # closed after every failure and at the end
    failures = [e for e in logs if e["event"] == "connector failed; reconnecting"]
    assert [e["log_level"] for e in failures[:3]] == ["error", "debug", "debug"]
    recovered = [e for e in logs if e["event"] == "connector recovered"]
    assert recovered and recovered[0]["after_failures"] == 3


class CancelledWhileClosing(FlakyConnector):
    """Loses its link once; its close has nothing to await and the shutdown's cancel arrives during it."""

    def __init__(self) -> None:
        super().__init__(refuse=0)
        self.task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        self.closes += 1
        if self.closes == 1 and self.task is not None:
            self.task.cancel()


async def test_a_cancel_that_arrives_while_the_connector_closes_stops_the_supervisor() -> None:
    """Found by the RTU example's end-to-end test: SIGTERM as the serial line vanished left the drain waiting for
    a supervisor that had swallowed its cancel (Python 3.11's wait_for) and gone on to reconnect."""
    connector = CancelledWhileClosing()
    supervisor = ConnectorSupervisor(connector, CollectingSink(), ReconnectConfig(initial=0.01, max=0.02))
    task = asyncio.create_task(supervisor.run())
    connector.task = task
    done, _ = await asyncio.wait({task}, timeout=10)
    assert task in done and task.cancelled()
    assert connector.connects == 1
    assert supervisor.state == ConnectorState.DISCONNECTED
