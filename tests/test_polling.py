"""The shared poller's timing: fixed schedules, skipped ticks on overrun, errors isolated per group."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Sequence

import pytest

from connectors.polling import Poller, PollSchedule
from ingestor.contract import ConnectionLost, Reading, now_us

from .helpers import async_wait_until


class Sink:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def put(self, readings: Sequence[Reading], on_durable: object = None) -> None:
        self.readings.extend(readings)


async def test_groups_poll_on_their_own_intervals_and_a_failing_group_does_not_stop_the_others() -> None:
    calls: dict[str, int] = {"fast": 0, "slow": 0, "broken": 0}
    errors: list[str] = []

    async def poll(group: str) -> list[Reading]:
        calls[group] += 1
        if group == "broken":
            raise ValueError("illegal data address")
        return [Reading("M1", group, 1.0, now_us())]

    sink = Sink()
    poller = Poller("dev", [PollSchedule("fast", 0.02), PollSchedule("slow", 0.1), PollSchedule("broken", 0.02)],
                    poll, sink, on_error=lambda group, exc: errors.append(group), rng=random.Random(1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(poller.run())
    await async_wait_until(lambda: calls["slow"] >= 5 and calls["broken"] >= 5, 30, "five polls of the slow group",
                           interval=0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    elapsed = loop.time() - started
    # A busy machine can only delay polls, never add any: at most one per interval (plus the first), and the
    # fast group polls more often than the slow one, however slow the machine is.
    assert calls["fast"] <= elapsed / 0.02 + 2 and calls["broken"] <= elapsed / 0.02 + 2
    assert calls["slow"] <= elapsed / 0.1 + 2
    assert calls["fast"] > calls["slow"]
    assert len(errors) == calls["broken"]  # the failing group kept being polled, each error reported
    assert len(sink.readings) == calls["fast"] + calls["slow"]


async def test_an_overrunning_poll_skips_ticks_instead_of_bursting() -> None:
    starts: list[float] = []

    async def slow_poll(group: str) -> list[Reading]:
        starts.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.05)
        return []

    poller = Poller("dev", [PollSchedule("g", 0.02, timeout=1.0)], slow_poll, Sink(), rng=random.Random(1))
    task = asyncio.create_task(poller.run())
    await async_wait_until(lambda: len(starts) >= 6, 30, "six polls", interval=0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps and min(gaps) >= 0.05  # never two polls back to back to catch up


async def test_connection_lost_ends_the_run_for_the_supervisor() -> None:
    async def poll(group: str) -> list[Reading]:
        raise ConnectionLost("device closed the connection")

    with pytest.raises(ConnectionLost, match="device closed"):
        await asyncio.wait_for(Poller("dev", [PollSchedule("g", 0.01)], poll, Sink()).run(), 2)


async def test_a_cancel_arriving_with_a_lost_link_stops_the_supervisor() -> None:
    """A shutdown that coincides with a lost link must stop the connector, not make it reconnect."""
    from ingestor.contract import ReconnectConfig
    from ingestor.daemon.supervisor import ConnectorSupervisor

    class PolledDevice:
        name = "dev"

        def __init__(self) -> None:
            self.lost = asyncio.Event()

        async def connect(self) -> None:
            return None

        async def run(self, sink: Sink) -> None:
            await Poller("dev", [PollSchedule("a", 0.001), PollSchedule("b", 0.001)], self.poll, sink,
                         rng=random.Random(3)).run()

        async def poll(self, group: str) -> list[Reading]:
            self.lost.set()
            raise ConnectionLost("gone")

        async def close(self) -> None:
            return None

    for _ in range(40):
        device = PolledDevice()
        supervisor = ConnectorSupervisor(device, Sink(), ReconnectConfig(initial=0.001, max=0.001, jitter=0))
        task = asyncio.create_task(supervisor.run())
        await device.lost.wait()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        assert done, "the supervisor kept running after it was cancelled"
