"""Every connector passes the same checks against its real peer: start/stop, readings arrive, reconnect
after the peer restarts (readings flow again within one capped backoff and a reconnect, see SETTLE)."""

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


SETTLE = 2.5
"""Seconds from a successful reconnection attempt to every expected parameter having arrived again: a loopback
connect (and for OPC UA a session and its subscriptions), then one poll or publishing interval (at most
500 ms in the harnesses).  It takes 0.4-0.6 s on an idle machine; the rest is room for a loaded 2-core one."""

FAILURES_BEFORE_RESTART = 7
"""The peer stays away until the connector has failed this often: by then its backoff (200 ms doubling in
every harness) has long reached ``reconnect.max`` (1 s), and a backoff that forgot its cap would be waiting
12.8 s ± 20 %, which the bound below refuses even when the peer itself takes seconds to start."""


async def test_reconnects_after_the_peer_restarts_within_one_capped_backoff(harness: Harness) -> None:
    """Readings resume within ``reconnect.max`` (+ jitter) + SETTLE of the peer coming back, however long it
    was away: the connector retries at a capped backoff, so the next attempt after the peer returns comes within
    one capped delay."""
    sink = Collector()
    config = harness.connector_config()
    supervisor, task = await run_supervised(harness, sink)
    try:
        await wait_for(lambda: harness.expected <= sink.seen(), 20, f"{harness.name}: first readings")
        await harness.stop()
        await wait_for(lambda: supervisor.failures >= FAILURES_BEFORE_RESTART, 30,
                       f"{harness.name}: {FAILURES_BEFORE_RESTART} failed attempts while the peer is gone")
        assert supervisor.state != ConnectorState.CONNECTED
        mark = len(sink.readings)
        await harness.start()
        bound = config.reconnect.max * (1 + config.reconnect.jitter) + SETTLE
        resumed = await wait_for(lambda: harness.expected <= sink.seen(mark), 10,
                                 f"{harness.name}: readings after the peer came back")
        assert supervisor.state == ConnectorState.CONNECTED
        assert resumed <= bound, (f"{harness.name}: readings resumed {resumed:.1f} s after the peer restarted; "
                                  f"one capped backoff and a reconnect take at most {bound:.1f} s")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
