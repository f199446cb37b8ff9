"""Every connector passes the same checks against its real peer: start/stop, readings arrive, reconnect
after the peer restarts (readings flow again within 10 s of the peer coming back)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from ingestor.contract import Reading
from ingestor.daemon.supervisor import ConnectorState, ConnectorSupervisor
from tests.helpers import build_connector

from .conformance import HARNESSES, Harness, load

pytestmark = pytest.mark.skipif(not HARNESSES, reason="no connector harness registered yet")


class Collector:
    """A sink that keeps what it is given and acknowledges at once."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def put(self, readings: Sequence[Reading], on_durable: object = None) -> None:
        self.readings.extend(readings)
        if callable(on_durable):
            on_durable()

    def seen(self, since: int = 0) -> set[tuple[str, str]]:
        return {(r.equipment, r.parameter) for r in self.readings[since:]}


async def wait_for(condition: object, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture(params=HARNESSES or ["none"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    instance = load(request.param)()
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


async def run_supervised(harness: Harness, sink: Collector) -> tuple[ConnectorSupervisor, asyncio.Task[None]]:
    config = harness.connector_config()
    supervisor = ConnectorSupervisor(build_connector(config), sink, config.reconnect)
    return supervisor, asyncio.create_task(supervisor.run())


async def test_starts_delivers_every_expected_parameter_and_stops_cleanly(harness: Harness) -> None:
    sink = Collector()
    supervisor, task = await run_supervised(harness, sink)
    await wait_for(lambda: harness.expected <= sink.seen(), 20, f"{harness.name}: every expected parameter")
    assert supervisor.state == ConnectorState.CONNECTED
    assert all(r.timestamp_us > 0 for r in sink.readings)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert supervisor.state == ConnectorState.DISCONNECTED
    count = len(sink.readings)
    await asyncio.sleep(0.5)
    assert len(sink.readings) == count, "readings kept arriving after the connector was stopped"


async def test_reconnects_after_the_peer_restarts(harness: Harness) -> None:
    sink = Collector()
    supervisor, task = await run_supervised(harness, sink)
    try:
        await wait_for(lambda: harness.expected <= sink.seen(), 20, f"{harness.name}: first readings")
        await harness.stop()
        await wait_for(lambda: supervisor.state != ConnectorState.CONNECTED, 30,
                       f"{harness.name}: the connector noticing the peer is gone")
        await asyncio.sleep(1.0)
        mark = len(sink.readings)
        await harness.start()
        resumed = await wait_for(lambda: harness.expected <= sink.seen(mark), 10,
                                 f"{harness.name}: readings after the peer came back")
        assert supervisor.state == ConnectorState.CONNECTED
        print(f"{harness.name}: readings resumed {resumed:.1f} s after the peer restarted")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
